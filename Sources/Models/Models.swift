// Models
//
// Transformer families (Llama-style, GPT-2) built on Kernels: inference and training graphs, AdamW.
