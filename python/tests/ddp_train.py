"""A tiny DDP distillation run from a cache, launched by test_ddp.py under torchrun (gloo, CPU).

Each rank logs, per step, the windows it trained on and its loss to OUT/PHASE-rank<r>.jsonl and
its loader state at the end to OUT/PHASE-state-rank<r>.json; rank 0 alone saves the checkpoint
(model, optimizer and loader state: every rank's loader state is the same). With --resume the
run loads that checkpoint, on any world size or worker count, and continues the epoch.

    python -m torch.distributed.run --nproc_per_node 2 ddp_train.py --cache C --out O --phase a --steps 3 --save ck.pt
    python -m torch.distributed.run --nproc_per_node 1 ddp_train.py --cache C --out O --phase b --resume ck.pt
"""

from __future__ import annotations

import argparse
import json
import math
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from logitcache.torch import LogitCacheDataLoader, LogitCacheDataset
from logitcache.torch.losses import loss_from_batch


class TinyStudent(nn.Module):
    """Embedding -> MLP -> vocabulary logits, per token (no attention: a test model)."""

    def __init__(self, vocab: int, width: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, vocab))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # ids [B, T] -> logits [B, T, V]
        return self.mlp(self.embed(ids))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--phase", required=True)
    ap.add_argument("--steps", type=int, default=0, help="steps to train; 0: to the end of the epoch")
    ap.add_argument("--save", help="checkpoint written by rank 0 at the end")
    ap.add_argument("--resume", help="checkpoint to continue from")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--context", type=int, default=32)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--mode", default="tail")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    ds = LogitCacheDataset(args.cache, batch_size=args.batch_size, context=args.context, k=args.k, mode=args.mode,
                           seed=args.seed, shuffle_buffer=16)
    assert (ds.rank, ds.world_size) == (rank, world), "rank and world size come from torch.distributed"
    loader = LogitCacheDataLoader(ds, num_workers=args.workers)
    model = TinyStudent(ds.vocabulary_size)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    step = 0
    if args.resume:
        ck = torch.load(args.resume, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        loader.load_state_dict(ck["data"])
        step = ck["step"]
    ddp = DistributedDataParallel(model)

    with open(os.path.join(args.out, f"{args.phase}-rank{rank}.jsonl"), "w") as log:
        for batch in loader:  # the rest of the current epoch
            logits = ddp(batch["input_ids"].long())
            loss = loss_from_batch(logits, batch, mode=args.mode, lam=0.5).total
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            log.write(json.dumps({"step": step, "epoch": batch["epoch"],
                                  "windows": [int(w) for w in batch["windows"] if w >= 0],
                                  "loss": loss.item()}) + "\n")
            log.flush()
            if not math.isfinite(loss.item()):
                raise SystemExit(f"rank {rank}: loss {loss.item()} at step {step}")
            if args.steps and step >= args.steps:
                break

    state = loader.state_dict()
    with open(os.path.join(args.out, f"{args.phase}-state-rank{rank}.json"), "w") as f:
        json.dump(state, f)
    if args.save and rank == 0:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "data": state, "step": step},
                   args.save)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
