#!/usr/bin/env python3
"""PyTorch CPU baseline for `logitcache-bench forward`.

Loads the Hugging Face model directory the bench wrote (same random weights, float32) and
times eager forwards (no torch.compile) over one batch of windows at a given thread count.
Prints one JSON object: {"seconds": [...], "median_seconds": s, "threads": n, ...}.
Needs torch and transformers; the bench reports the baseline as unavailable when they are not.
"""
import argparse
import json
import statistics
import time

import torch
import transformers
from transformers import AutoModelForCausalLM


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="model directory (config.json + model.safetensors)")
    p.add_argument("--length", type=int, required=True, help="tokens per window")
    p.add_argument("--batch", type=int, default=1, help="windows per forward")
    p.add_argument("--threads", type=int, required=True, help="torch.set_num_threads")
    p.add_argument("--repeats", type=int, default=3, help="timed forwards after one warm-up")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="sdpa").eval()
    generator = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(0, model.config.vocab_size, (args.batch, args.length), generator=generator)
    seconds = []
    with torch.inference_mode():
        model(input_ids=tokens, use_cache=False)
        for _ in range(args.repeats):
            start = time.perf_counter()
            model(input_ids=tokens, use_cache=False)
            seconds.append(time.perf_counter() - start)
    print(json.dumps({"seconds": seconds, "median_seconds": statistics.median(seconds), "threads": args.threads,
                      "attention": "sdpa", "torch": torch.__version__, "transformers": transformers.__version__}))


if __name__ == "__main__":
    main()
