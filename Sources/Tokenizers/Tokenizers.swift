// Tokenizers
//
// Hugging Face tokenizer.json (byte-level BPE) encoding and decoding, with ids identical to the tokenizers library.
