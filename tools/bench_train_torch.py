#!/usr/bin/env python3
"""PyTorch CPU baseline for `logitcache-bench train`.

Loads the Hugging Face model directory the bench wrote (the Swift trainer's initial weights,
float32) and trains it the way `logitcache-bench train` trains it in Swift: eager (no
torch.compile), sdpa attention, hard-label cross-entropy averaged over the batch's tokens,
torch.optim.AdamW (betas 0.9/0.95, eps 1e-8, weight decay on matrices only, constant
learning rate), clip_grad_norm_ before every update. The batch is the one window set the
Swift side trains on: --tokens holds B·T + 1 little-endian int32 ids; window b is ids
[b·T, b·T + T) with labels one position later.

Prints one JSON object: per-step wall seconds, process CPU seconds divided by the thread
count ("cpu_seconds") and losses (warm-up steps included; "warmup" says how many), the median
wall seconds of the timed steps, tokens/s, the parameter count and versions.
Needs torch and transformers; the bench reports the baseline as unavailable when they are not.
"""
import argparse
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModelForCausalLM


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model directory (config.json + model.safetensors)")
    p.add_argument("--tokens", required=True, help="B*T+1 int32 token ids (little-endian)")
    p.add_argument("--batch", type=int, required=True, help="windows per step (B)")
    p.add_argument("--length", type=int, required=True, help="tokens per window (T)")
    p.add_argument("--threads", type=int, required=True, help="torch.set_num_threads")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip (0: none)")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    B, T = args.batch, args.length
    ids = np.fromfile(args.tokens, dtype="<i4")
    if ids.size != B * T + 1:
        raise SystemExit(f"{args.tokens}: {ids.size} ids, expected B*T+1 = {B * T + 1}")
    ids = torch.from_numpy(ids.astype(np.int64))
    inputs, labels = ids[:-1].view(B, T), ids[1:].view(B, T)

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="sdpa")
    model.train()
    params = list(model.parameters())  # a tied head is one parameter
    groups = [{"params": [q for q in params if q.ndim == 2], "weight_decay": args.weight_decay},
              {"params": [q for q in params if q.ndim != 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    seconds, cpu_seconds, losses = [], [], []
    for _ in range(args.warmup + args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        logits = model(input_ids=inputs, use_cache=False).logits
        loss = F.cross_entropy(logits.view(B * T, -1), labels.reshape(-1))
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.clip)
        optimizer.step()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append((time.process_time() - cpu_start) / args.threads)
        losses.append(loss.item())
    timed = seconds[args.warmup:]
    median = statistics.median(timed) if timed else float("nan")
    print(json.dumps({
        "seconds": seconds, "cpu_seconds": cpu_seconds, "losses": losses, "warmup": args.warmup, "median_seconds": median,
        "tokens_per_second": B * T / median, "parameters": sum(q.numel() for q in params),
        "threads": args.threads, "attention": "sdpa", "torch": torch.__version__,
        "transformers": transformers.__version__,
    }))


if __name__ == "__main__":
    main()
