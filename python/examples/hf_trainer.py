"""Distil into a small student with the Hugging Face `Trainer`, targets from a LogitCache cache.

What changes against a plain `Trainer`:

* the train dataset is a `LogitCacheDataset`, which yields whole batches; `get_train_dataloader`
  returns a `LogitCacheDataLoader` (batch_size=None, no collator, no sampler), so the Trainer
  neither batches, collates, shuffles nor shards the data again (the dataset already holds
  this rank's part, its rank taken from torch.distributed);
* `compute_loss` is the distillation loss of `logitcache.torch.losses` (labels are already the
  next tokens: no shift), and `model_accepts_loss_kwargs = False` tells the Trainer the loss
  is a per-token mean it should not rescale;
* a callback stores the loader's state in every checkpoint (`logitcache_loader.json`), and
  `--resume` loads it with `ignore_data_skip=True`: the run continues with the very next batch
  (on any number of ranks or workers) instead of replaying and skipping batches.

    logitcache synth /tmp/cache --tokens 65536 --vocab 512 --k 16
    python examples/hf_trainer.py --cache /tmp/cache --steps 50 --out /tmp/run

Prints one line per step: `step N loss L`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Dict, Optional

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

from logitcache.torch import LogitCacheDataLoader, LogitCacheDataset
from logitcache.torch.losses import loss_from_batch

LOADER_STATE = "logitcache_loader.json"


class DistillationTrainer(Trainer):
    """A `Trainer` whose train data are LogitCache batches and whose loss is Eq. 7
    `(1 − λ)·CE + λ·τ²·KD` against the cached teacher targets."""

    def __init__(self, *args: Any, mode: str, lam: float, temperature: float, num_workers: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.mode, self.lam, self.temperature = mode, lam, temperature
        self.model_accepts_loss_kwargs = False  # our loss is already a mean over labelled tokens
        self._loader: Optional[LogitCacheDataLoader] = None
        self._num_workers = num_workers

    def get_train_dataloader(self) -> LogitCacheDataLoader:
        if self._loader is None:
            self._loader = LogitCacheDataLoader(self.train_dataset, num_workers=self._num_workers,
                                                pin_memory=torch.cuda.is_available())
        return self._loader

    def compute_loss(self, model, inputs: Dict[str, Any], return_outputs: bool = False, num_items_in_batch=None):
        outputs = model(input_ids=inputs["input_ids"].long())
        parts = loss_from_batch(outputs.logits, inputs, mode=self.mode, lam=self.lam, temperature=self.temperature)
        return (parts.total, outputs) if return_outputs else parts.total


class LoaderStateCallback(TrainerCallback):
    """Writes the loader's state into each checkpoint directory (the main process only: every
    rank's state is the same) and prints the logged loss of every step."""

    def __init__(self, trainer: DistillationTrainer):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.trainer._loader is not None:
            path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", LOADER_STATE)
            with open(path, "w") as f:
                json.dump(self.trainer._loader.state_dict(), f)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "loss" in logs:
            print(f"step {state.global_step} loss {logs['loss']:.4f}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True, help="cache directory")
    ap.add_argument("--steps", type=int, required=True, help="optimizer steps (max_steps)")
    ap.add_argument("--out", default="hf-trainer-run", help="Trainer output directory (checkpoints)")
    ap.add_argument("--batch-size", type=int, default=8, help="windows per batch (per rank)")
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--mode", default="renormalized", choices=["renormalized", "tail", "sampled"])
    ap.add_argument("--lambda", dest="lam", type=float, default=1.0)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--save-steps", type=int, default=0, help="checkpoint every N steps (0: never)")
    ap.add_argument("--resume", help="checkpoint directory to continue from")
    args = ap.parse_args(argv)

    data = LogitCacheDataset(args.cache, batch_size=args.batch_size, context=args.context, k=args.k,
                             mode=args.mode, temperature=args.temperature, seed=args.seed)
    config = LlamaConfig(vocab_size=data.vocabulary_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=args.context,
                         tie_word_embeddings=True)
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config)
    training = TrainingArguments(
        output_dir=args.out, max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="constant",
        weight_decay=0.0, logging_steps=1, save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500, report_to="none", disable_tqdm=True, seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
        ignore_data_skip=True,            # the loader state resumes the data; do not replay batches
        average_tokens_across_devices=False,
        dataloader_num_workers=args.workers)
    trainer = DistillationTrainer(model=model, args=training, train_dataset=data, mode=args.mode, lam=args.lam,
                                  temperature=args.temperature, num_workers=args.workers)
    trainer.add_callback(LoaderStateCallback(trainer))
    if args.resume:
        with open(os.path.join(args.resume, LOADER_STATE)) as f:
            trainer.get_train_dataloader().load_state_dict(json.load(f))
    result = trainer.train(resume_from_checkpoint=args.resume)
    if not math.isfinite(result.training_loss):
        print(f"non-finite training loss {result.training_loss}", file=sys.stderr)
        return 1
    if trainer.is_world_process_zero():
        print(f"done: {trainer.state.global_step} steps, mean loss {result.training_loss:.4f}, "
              f"loader in epoch {trainer.get_train_dataloader().epoch}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
