#!/usr/bin/env python3
"""Checks that a checkpoint written by `logitcache train` loads in transformers and gives the
same logits as `logitcache logits` (issue: "a checkpoint written by train loads in
transformers and gives the same logits").

Trains nothing itself. Given the --out directory of a `logitcache train` run (config.json +
model.safetensors; the resume state beside them is ignored), it

1. loads the directory with transformers `AutoModelForCausalLM.from_pretrained` (eager
   attention) and computes, in float64, the logits of a fixed batch of token windows
   (B=2 windows of T=8 ids from a seeded generator, within the model's vocabulary);
2. runs `logitcache logits --model DIR --tokens ... --json` on each window and compares:
   max |Swift − transformers| must be <= 1e-4 × the range of the reference logits;
3. with --write-fixture OUT, copies config.json and model.safetensors to OUT and writes
   inputs.json ({"tokens": [[...], [...]]}) and logits.npy (float64 logits rounded to
   float32, shape (B·T, V)) — the layout Tests/ModelsTests/FixtureSupport.swift reads.

Run by hand (needs torch + transformers; CI only reads the committed fixture). The fixture in
Tests/ModelsTests/Fixtures/trained_export was made with:

    /work/venv/bin/python tools/check_train_export.py --make-corpus corpus.u16 --make-config student.json
    logitcache train --config student.json --corpus corpus.u16 --tokenizer Data/tokenizer.json \\
        --out run --steps 30 --batch 4 --context 16 --lr 1e-2 --seed 3 --threads 1
    /work/venv/bin/python tools/check_train_export.py --model run \\
        --logitcache .build/release/logitcache --write-fixture Tests/ModelsTests/Fixtures/trained_export

(`--make-corpus` writes 4096 ids in [4, 96) — a repeating pattern with 10% seeded noise, so
the run learns something — and `--make-config` the 2-layer untied GQA student.)
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

B, T = 2, 8
SEED = 11
STUDENT = {"layers": 2, "hidden": 32, "heads": 4, "kv_heads": 2, "ffn": 64, "vocab": 96, "context": 32,
           "rope_theta": 10000, "tied": False}


def make_corpus(path):
    """A learnable stream of ids in [4, 96): a repeating pattern with seeded noise, as uint16."""
    rng = np.random.default_rng(SEED)
    pattern = rng.integers(4, STUDENT["vocab"], size=37)
    ids = np.tile(pattern, 4096 // len(pattern) + 1)[:4096]
    noise = rng.random(ids.size) < 0.1
    ids[noise] = rng.integers(4, STUDENT["vocab"], size=int(noise.sum()))
    ids.astype("<u2").tofile(path)


def reference_logits(model_dir, tokens):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens, dtype=torch.long), use_cache=False).logits
    return out.reshape(len(tokens) * len(tokens[0]), -1).numpy()


def swift_logits(binary, model_dir, tokens):
    rows = []
    for window in tokens:
        result = subprocess.run([binary, "logits", "--model", model_dir, "--tokens", ",".join(map(str, window)),
                                 "--json", "--threads", "1"], check=True, capture_output=True, text=True)
        rows.extend(json.loads(result.stdout)["logits"])
    return np.array(rows, dtype=np.float64)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="directory written by `logitcache train --out`")
    p.add_argument("--logitcache", default=".build/release/logitcache", help="logitcache binary")
    p.add_argument("--write-fixture", metavar="OUT", help="write the test fixture here")
    p.add_argument("--make-corpus", metavar="PATH", help="write the fixture's training corpus (.u16) and exit")
    p.add_argument("--make-config", metavar="PATH", help="write the fixture's student.json and exit")
    args = p.parse_args()
    if args.make_corpus or args.make_config:
        if args.make_corpus:
            make_corpus(args.make_corpus)
        if args.make_config:
            with open(args.make_config, "w") as f:
                json.dump(STUDENT, f)
        return
    if not args.model:
        p.error("--model is required")

    with open(os.path.join(args.model, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    rng = np.random.default_rng(SEED)
    tokens = rng.integers(0, vocab, size=(B, T)).tolist()
    reference = reference_logits(args.model, tokens)
    ours = swift_logits(args.logitcache, args.model, tokens)
    if ours.shape != reference.shape:
        sys.exit(f"shape mismatch: logitcache {ours.shape}, transformers {reference.shape}")
    worst = float(np.abs(ours - reference).max())
    span = float(reference.max() - reference.min())
    ok = worst <= 1e-4 * span
    print(json.dumps({"max_abs_diff": worst, "reference_range": span, "tolerance": 1e-4 * span, "ok": ok,
                      "tokens": tokens}))
    if args.write_fixture:
        os.makedirs(args.write_fixture, exist_ok=True)
        for name in ("config.json", "model.safetensors"):
            shutil.copyfile(os.path.join(args.model, name), os.path.join(args.write_fixture, name))
        with open(os.path.join(args.write_fixture, "inputs.json"), "w") as f:
            json.dump({"tokens": tokens}, f)
        np.save(os.path.join(args.write_fixture, "logits.npy"), reference.astype("<f4"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
