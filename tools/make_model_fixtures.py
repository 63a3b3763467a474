#!/usr/bin/env python3
"""Writes the tiny reference models and their logits that Tests/ModelsTests compares against.

Run by hand (needs torch + transformers; CI only reads the committed output):

    /work/venv/bin/python tools/make_model_fixtures.py [OUT_DIR]

For each variant it builds a random-weight model with transformers, saves it with
`save_pretrained` (so `config.json` and the safetensors are exactly what transformers writes),
reloads the saved directory in float64 and runs it on two fixed token sequences. Output per
variant directory: the model files, `inputs.json` ({"tokens": [[...], [...]]}) and
`logits.npy` (float32, shape [2, T, vocab]). Seeded: reruns give the same bytes.
"""
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "ModelsTests", "Fixtures")
T = 33  # tokens per sequence; odd on purpose (no block size divides it)


def llama_like(**overrides):
    base = dict(vocab_size=320, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=96, max_position_embeddings=128,
                rms_norm_eps=1e-5, tie_word_embeddings=False)
    base.update(overrides)
    return base


VARIANTS = [
    # name, model class, config class, config kwargs, save dtype, save kwargs
    ("llama_gqa", LlamaForCausalLM, LlamaConfig, llama_like(), torch.float32, {}),
    ("llama_tied_mha", LlamaForCausalLM, LlamaConfig,
     llama_like(num_key_value_heads=4, tie_word_embeddings=True, rope_theta=500000.0), torch.float32, {}),
    ("llama_head_dim_bias", LlamaForCausalLM, LlamaConfig,
     llama_like(head_dim=24, attention_bias=True, mlp_bias=True, vocab_size=288), torch.float32, {}),
    ("llama3_rope_scaling", LlamaForCausalLM, LlamaConfig,
     llama_like(rope_theta=10000.0, rope_scaling=dict(rope_type="llama3", factor=4.0, low_freq_factor=1.0,
                                                      high_freq_factor=4.0, original_max_position_embeddings=16)),
     torch.float32, {}),
    ("llama_sharded", LlamaForCausalLM, LlamaConfig, llama_like(vocab_size=256), torch.float32,
     dict(max_shard_size="150KB")),
    ("llama_bf16", LlamaForCausalLM, LlamaConfig, llama_like(), torch.bfloat16, {}),
    ("llama_f16", LlamaForCausalLM, LlamaConfig, llama_like(vocab_size=272), torch.float16, {}),
    ("qwen2_bias", Qwen2ForCausalLM, Qwen2Config,
     llama_like(tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6), torch.float32, {}),
    ("mistral", MistralForCausalLM, MistralConfig, llama_like(sliding_window=None, vocab_size=300), torch.float32, {}),
    ("gpt2", GPT2LMHeadModel, GPT2Config,
     dict(vocab_size=300, n_embd=64, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0),
     torch.float32, {}),
]


def randomize(model, generator):
    """Weights with O(1) logits and non-trivial norms/biases, so every parameter matters."""
    conv1d = getattr(transformers.pytorch_utils, "Conv1D", ())
    fan_in_first = set()
    for module_name, module in model.named_modules():
        if isinstance(module, conv1d):
            fan_in_first.add(module_name + ".weight")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                fan_in = p.shape[0] if name in fan_in_first else p.shape[1]
                std = 1.0 if ("embed" in name or "wte" in name or "wpe" in name) else 1.0 / math.sqrt(fan_in)
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64) * std)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64) * 0.1)
            else:  # norm scales
                p.copy_(1.0 + torch.randn(p.shape, generator=generator, dtype=torch.float64) * 0.1)


def main():
    os.makedirs(OUT, exist_ok=True)
    for seed, (name, model_cls, config_cls, kwargs, dtype, save_kwargs) in enumerate(VARIANTS):
        generator = torch.Generator().manual_seed(1000 + seed)
        config = config_cls(**kwargs)
        model = model_cls(config).to(torch.float32).eval()
        randomize(model, generator)
        directory = os.path.join(OUT, name)
        shutil.rmtree(directory, ignore_errors=True)
        model.to(dtype).save_pretrained(directory, **save_kwargs)
        for extra in ("generation_config.json",):
            path = os.path.join(directory, extra)
            if os.path.exists(path):
                os.remove(path)
        reference = model_cls.from_pretrained(directory, dtype=torch.float64).eval()
        tokens = torch.randint(0, config.vocab_size, (2, T), generator=generator)
        with torch.no_grad():
            logits = reference(input_ids=tokens).logits.to(torch.float32).numpy()
        np.save(os.path.join(directory, "logits.npy"), np.ascontiguousarray(logits))
        with open(os.path.join(directory, "inputs.json"), "w") as f:
            json.dump({"tokens": tokens.tolist(), "torch": torch.__version__,
                       "transformers": transformers.__version__}, f)
        size = sum(os.path.getsize(os.path.join(directory, x)) for x in os.listdir(directory))
        print(f"{name}: {size / 1024:.0f} KiB, logits range [{logits.min():.3f}, {logits.max():.3f}]")


if __name__ == "__main__":
    main()
