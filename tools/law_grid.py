#!/usr/bin/env python3
"""Supervised students on a grid of sizes and token budgets, for `logitcache law fit`.

Trains one student per (size, tokens) with `logitcache train` (hard labels, the same batch,
context and learning rate as the sweep's supervised baseline), evaluates it on the held-out
split, and writes RUNS.jsonl lines {"name", "N", "D", "loss"} with N the non-embedding
parameters (read from the checkpoint: every tensor except the token embedding and an untied
output head), D the training tokens and loss the eval cross-entropy. Then fits Eq. 1 with
`logitcache law fit --json` into OUT/law.json, a file `logitcache sweep --law` takes.

Resumable: a finished run (its log ends with an "end" event) is read back, not retrained.
Standard library only.

    tools/law_grid.py --out runs/law-grid [--bin .build/release/logitcache] [--data Data]
"""

import argparse
import json
import os
import struct
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))

# Llama-style students with the built-in tokenizer's vocabulary; d_model / n_layers varies
# less than the sizes do. "sweep" is Data/student.json, the sweep's student.
SIZES = {
    "1x64": {"layers": 1, "hidden": 64, "heads": 2, "kv_heads": 1, "ffn": 192},
    "2x96": {"layers": 2, "hidden": 96, "heads": 4, "kv_heads": 2, "ffn": 288},
    "sweep": None,
    "3x192": {"layers": 3, "hidden": 192, "heads": 6, "kv_heads": 3, "ffn": 576},
}
TOKENS = [51_200, 204_800, 409_600]


def non_embedding_parameters(safetensors_path):
    """Parameters of every tensor but the token embedding and the output head."""
    with open(safetensors_path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    total = 0
    for name, info in header.items():
        if name == "__metadata__" or name in ("model.embed_tokens.weight", "lm_head.weight"):
            continue
        count = 1
        for d in info["shape"]:
            count *= d
        total += count
    return total


def end_event(log_path):
    if not os.path.exists(log_path):
        return None
    last = None
    with open(log_path) as f:
        for line in f:
            line = line.strip()
            if line:
                e = json.loads(line)
                if e.get("event") == "end":
                    last = e
    return last


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--bin", default=os.environ.get("LOGITCACHE_BIN", os.path.join(ROOT, ".build/release/logitcache")))
    ap.add_argument("--data", default=os.path.join(ROOT, "Data"))
    ap.add_argument("--lr", default="4e-3")
    ap.add_argument("--batch", default="8")
    ap.add_argument("--context", default="256")
    ap.add_argument("--eval-windows", default="32")
    ap.add_argument("--threads", default="1")
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.data, "student.json")) as f:
        sweep_student = json.load(f)
    runs = []
    for size, arch in SIZES.items():
        config = dict(sweep_student if arch is None else {**sweep_student, **arch})
        config_path = os.path.join(args.out, f"{size}.json")
        with open(config_path, "w") as f:
            json.dump(config, f)
        for tokens in TOKENS:
            name = f"{size}-d{tokens}"
            run_dir = os.path.join(args.out, name)
            end = end_event(os.path.join(run_dir, "log.jsonl"))
            if end is None or "eval_ce" not in end:
                print(f"law grid: training {name}", file=sys.stderr, flush=True)
                subprocess.run([args.bin, "train", "--config", config_path,
                                "--corpus", os.path.join(args.data, "corpus/student-train.jsonl.zst"),
                                "--tokenizer", os.path.join(args.data, "tokenizer.json"),
                                "--eval", os.path.join(args.data, "corpus/eval.jsonl.zst"),
                                "--eval-windows", args.eval_windows, "--out", run_dir, "--tokens", str(tokens),
                                "--batch", args.batch, "--context", args.context, "--lr", args.lr,
                                "--threads", args.threads, "--seed", "1"], check=True, stdout=subprocess.DEVNULL)
                end = end_event(os.path.join(run_dir, "log.jsonl"))
            if end is None or "eval_ce" not in end:
                sys.exit(f"law grid: {run_dir}/log.jsonl has no end event with eval_ce")
            n = non_embedding_parameters(os.path.join(run_dir, "model.safetensors"))
            runs.append({"name": name, "N": n, "D": end["tokens"], "loss": end["eval_ce"]})
            print(f"{name:>16}  N {n:>9,}  D {end['tokens']:>8,}  eval CE {end['eval_ce']:.4f}", flush=True)
    runs_path = os.path.join(args.out, "runs.jsonl")
    with open(runs_path, "w") as f:
        for r in runs:
            f.write(json.dumps(r) + "\n")
    fit = subprocess.run([args.bin, "law", "fit", runs_path, "--json"], check=True, capture_output=True, text=True)
    with open(os.path.join(args.out, "law.json"), "w") as f:
        f.write(fit.stdout)
    print(subprocess.run([args.bin, "law", "fit", runs_path], check=True, capture_output=True, text=True).stdout)
    print(f"wrote {runs_path} and {os.path.join(args.out, 'law.json')} (for `logitcache sweep --law`)")


if __name__ == "__main__":
    main()
