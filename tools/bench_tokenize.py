#!/usr/bin/env python3
"""Baseline for `logitcache-bench tokenize`: encodes the same documents with the Hugging Face
`tokenizers` library and prints JSON rows {name, threads, seconds, tokens, tokensPerSecond,
megabytesPerSecond, idsFNV1a}. 1 thread: `encode` per document; 2 threads: `encode_batch`
with RAYON_NUM_THREADS=2 (set before the library loads)."""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "2")
os.environ["TOKENIZERS_PARALLELISM"] = "true"
from tokenizers import Tokenizer  # noqa: E402


def fnv1a(docs):
    h = 0xCBF29CE484222325
    for ids in docs:
        for i in ids:
            for _ in range(4):
                h = ((h ^ (i & 0xFF)) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
                i >>= 8
    return format(h, "x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--text-file", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    raw = open(a.text_file, "rb").read()
    docs = raw.decode("utf-8").split("\n\n")
    tok = Tokenizer.from_file(a.tokenizer)
    tok.no_truncation()
    tok.no_padding()
    rows = []
    for threads, run in ((1, lambda: [tok.encode(d, add_special_tokens=False).ids for d in docs]),
                         (2, lambda: [e.ids for e in tok.encode_batch(docs, add_special_tokens=False)])):
        best, ids = float("inf"), None
        for _ in range(max(1, a.repeats)):
            t0 = time.perf_counter()
            ids = run()
            best = min(best, time.perf_counter() - t0)
        n = sum(len(x) for x in ids)
        rows.append({"name": "hf tokenizers (python)", "threads": threads, "seconds": best, "tokens": n,
                     "tokensPerSecond": n / best, "megabytesPerSecond": len(raw) / 1e6 / best,
                     "idsFNV1a": fnv1a(ids)})
    json.dump({"results": rows}, sys.stdout)


if __name__ == "__main__":
    main()
