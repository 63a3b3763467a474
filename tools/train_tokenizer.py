#!/usr/bin/env python3
"""Trains LogitCache's built-in tokenizer, Data/tokenizer.json: a Llama 3 style byte-level BPE
(the Llama 3 split regex, ByteLevel, ignore_merges, <|begin_of_text|> prepended by the
post-processor) with 8,000 entries, trained with the Hugging Face `tokenizers` library on the
teacher-train part of the built-in corpus (Data/corpus, made by tools/make_corpus.py).

Also writes Tests/TokenizersTests/Fixtures/data-tokenizer.cases.json: the library's ids for
a few eval chapters and the varied fixture texts, so the Swift tests check that our encoder
agrees with the library on the shipped tokenizer. Run by hand:

    /work/venv/bin/python tools/train_tokenizer.py
"""
import json
import os
import sys

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, HERE)
import make_corpus  # noqa: E402
import make_tokenizer_fixtures as fixtures  # noqa: E402

VOCAB_SIZE = 8000
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>", "<|unk|>"]


def read_part(name):
    raw = open(os.path.join(ROOT, "Data", "corpus", f"{name}.jsonl.zst"), "rb").read()
    return [json.loads(line)["text"] for line in make_corpus.decompress(raw).decode("utf-8").splitlines()]


def train(docs, vocab_size=VOCAB_SIZE):
    """The Llama 3 style byte-level BPE trained on `docs` (also used by tools/heldout_pair.py)."""
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(fixtures.LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    tok.no_truncation()
    tok.no_padding()
    return tok


def save(tok, path):
    """Writes `tok` as compact JSON (the layout of Data/tokenizer.json) and reads it back."""
    data = json.loads(tok.to_str())
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    return Tokenizer.from_file(path)


def main():
    docs = read_part("teacher-train")
    tok = save(train(docs), os.path.join(ROOT, "Data", "tokenizer.json"))
    n_tokens = sum(len(e.ids) for e in tok.encode_batch(docs, add_special_tokens=False))
    n_bytes = sum(len(d.encode()) for d in docs)
    print(f"Data/tokenizer.json: {tok.get_vocab_size()} entries; teacher-train {n_bytes} bytes -> "
          f"{n_tokens} tokens ({n_bytes / n_tokens:.2f} bytes/token)")

    eval_docs = read_part("eval")
    texts = eval_docs[:4] + fixtures.test_texts()[:90]
    cases = [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids,
              "ids_with_special": tok.encode(t, add_special_tokens=True).ids,
              "decoded": tok.decode(tok.encode(t, add_special_tokens=False).ids, skip_special_tokens=False),
              "decoded_skip_special": tok.decode(tok.encode(t, add_special_tokens=True).ids, skip_special_tokens=True)}
             for t in texts]
    out = os.path.join(fixtures.OUT, "data-tokenizer.cases.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"tokenizer": "../../../Data/tokenizer.json", "cases": cases,
                   "decode_cases": fixtures.decode_cases(tok, 60, 9)}, f, ensure_ascii=False,
                  separators=(",", ":"))
    print(f"{out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
