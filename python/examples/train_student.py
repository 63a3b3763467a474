"""Train a small `transformers` student from a LogitCache cache: a plain PyTorch loop.

The teacher ran once and its next-token distributions sit in the cache; this loop reads them
as batches (`LogitCacheDataset`) and minimises the paper's Eq. 7 loss
`(1 − λ)·CE + λ·τ²·KD` (`logitcache.torch.losses`). The student is a tiny Llama whose
vocabulary is the cache's. It runs on CPU in seconds:

    logitcache synth /tmp/cache --tokens 65536 --vocab 512 --k 16
    python examples/train_student.py --cache /tmp/cache --steps 50

Under torchrun the same script trains with DDP (gloo on CPU, nccl on GPUs); the dataset takes
its rank from torch.distributed. `--save` writes a checkpoint (model, optimizer, loader state)
from rank 0; `--resume` continues from one on any number of ranks or workers, handing out each
window of the interrupted epoch exactly once.

Prints one line per step: `step N loss L ce C kd D tokens K epoch E`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch
import torch.distributed as dist
from transformers import LlamaConfig, LlamaForCausalLM

from logitcache.torch import LogitCacheDataLoader, LogitCacheDataset
from logitcache.torch.losses import loss_from_batch


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True, help="cache directory")
    ap.add_argument("--steps", type=int, required=True, help="optimizer steps")
    ap.add_argument("--batch-size", type=int, default=8, help="windows per batch (per rank)")
    ap.add_argument("--context", type=int, default=64, help="T: tokens per window")
    ap.add_argument("--k", type=int, default=16, help="teacher entries read per token")
    ap.add_argument("--mode", default="renormalized", choices=["renormalized", "tail", "sampled"])
    ap.add_argument("--lambda", dest="lam", type=float, default=1.0,
                    help="λ: weight of the distillation term; 1 − λ weighs hard-label CE")
    ap.add_argument("--temperature", type=float, default=1.0, help="τ of targets and student")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0, help="order of the data and the model's init")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (per rank)")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--save", help="checkpoint path written at the end (rank 0)")
    ap.add_argument("--resume", help="checkpoint to continue from")
    return ap.parse_args(argv)


def student(vocab: int, args: argparse.Namespace) -> LlamaForCausalLM:
    """A tiny Llama with the cache's vocabulary."""
    config = LlamaConfig(vocab_size=vocab, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.heads, max_position_embeddings=args.context,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def main(argv=None) -> int:
    args = parse_args(argv)
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)

    # One loader stream per (rank, worker), opened inside the worker; B windows per batch.
    data = LogitCacheDataset(args.cache, batch_size=args.batch_size, context=args.context, k=args.k,
                             mode=args.mode, temperature=args.temperature, seed=args.seed)
    loader = LogitCacheDataLoader(data, num_workers=args.workers, pin_memory=device.type == "cuda")
    model = student(data.vocabulary_size, args).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    step = 0
    if args.resume:
        ck = torch.load(args.resume, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        loader.load_state_dict(ck["data"])  # same epoch, rest of its windows, whatever the layout
        step = ck["step"]
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

    start = time.time()
    while step < args.steps:
        for batch in loader:  # the rest of the current epoch
            # labels[b, t] is the next token of input_ids[b, t] (-1: none), already shifted:
            # logits of position t are scored against it directly, no shift here.
            logits = net(input_ids=batch["input_ids"].to(device, torch.long)).logits
            parts = loss_from_batch(logits, batch, mode=args.mode, lam=args.lam, temperature=args.temperature)
            opt.zero_grad(set_to_none=True)
            parts.total.backward()
            opt.step()
            step += 1
            if rank == 0:
                print(f"step {step} loss {parts.total.item():.4f} ce {parts.cross_entropy.item():.4f} "
                      f"kd {parts.distillation.item():.4f} tokens {parts.tokens} epoch {batch['epoch']}", flush=True)
            if not math.isfinite(parts.total.item()):
                print(f"non-finite loss at step {step}", file=sys.stderr)
                return 1
            if step >= args.steps:
                break
    if rank == 0:
        print(f"done: {step} steps in {time.time() - start:.1f} s", flush=True)
        if args.save:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "data": loader.state_dict(), "step": step}, args.save)
    if distributed:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
