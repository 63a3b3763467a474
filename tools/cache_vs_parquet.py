#!/usr/bin/env python3
"""Bytes/token of real teacher caches against Parquet+zstd on the same rows.

`logitcache-bench format` compares on generated rows; this compares on a real teacher pass.
Run the pass twice over the same corpus, once `--lossless` (the exact rows, from which the
Parquet baseline is written exactly as tools/parquet_bench.py writes it: list<int32> ids,
list<float16> log-probs, zstd) and once or more with the encodings to compare, then:

    tools/cache_vs_parquet.py EXACT_CACHE ENCODED_CACHE... [--json]

Counts entries only (a cache with samples is refused: Parquet would hold no samples). Every
cache must hold the same tokens (same input ids). Needs numpy and pyarrow.
"""
import argparse, json, os

import numpy as np

import logitcache.reader as lr  # the installed package (tools/setup: pip install ./python)


def rows(cache: lr.Cache, where: str) -> lr.Tokens:
    t = cache.read()
    if len(t.sample_ids):
        raise SystemExit(f"{where}: holds sampled ids; compare top-k caches only")
    return t


def compare(exact_path: str, encoded_paths: list) -> dict:
    from parquet_bench import parquet_baseline
    with lr.Cache(exact_path) as exact:
        if exact.manifest["encoding"]["logProbs"] != "float32":
            raise SystemExit(f"{exact_path}: log-probs are quantised; write the exact cache with --lossless")
        t = rows(exact, exact_path)
        T = t.tokens
        pq = parquet_baseline(t.input_ids.astype(np.int32), t.next_logprob, t.logsumexp, t.entry_offsets,
                              t.entry_ids.astype(np.int32), t.entry_logprobs)
        out = {"tokens": T, "vocabularySize": exact.vocabulary_size, "k": exact.manifest["capture"]["k"],
               "entriesPerToken": len(t.entry_ids) / max(T, 1),
               "parquetZstdBytesPerToken": pq["bytes"] / T,
               "rawInt32Float16BytesPerToken": (4 + 4 + 4 + 6 * len(t.entry_ids) / max(T, 1)),
               "caches": []}
        for path in [exact_path] + encoded_paths:
            with lr.Cache(path) as c:
                if c.tokens != T or not np.array_equal(c.read(0, T).input_ids, t.input_ids):
                    raise SystemExit(f"{path}: holds other tokens than {exact_path}")
                b = c.manifest["totals"]["bytes"] / T
                out["caches"].append({"path": path, "encoding": c.manifest["encoding"], "bytesPerToken": b,
                                      "vsParquet": b / out["parquetZstdBytesPerToken"]})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("exact", help="the --lossless cache (exact rows)")
    ap.add_argument("encoded", nargs="*", help="caches of the same pass in other encodings")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = compare(a.exact, a.encoded)
    if a.json:
        print(json.dumps(r, indent=2))
        return
    print(f"{r['tokens']} tokens, vocabulary {r['vocabularySize']}, K={r['k']} ({r['entriesPerToken']:.1f} entries/token)")
    print(f"  parquet+zstd        {r['parquetZstdBytesPerToken']:7.1f} B/token")
    print(f"  raw int32+f16       {r['rawInt32Float16BytesPerToken']:7.1f} B/token")
    for c in r["caches"]:
        e = c["encoding"]
        lp = "lossless" if e["logProbs"] == "float32" else f"step {e.get('stepMultiplier', 1)}*2^-{e['stepLog2']}"
        print(f"  {os.path.basename(os.path.normpath(c['path'])):18s}  {c['bytesPerToken']:7.1f} B/token  "
              f"{c['vsParquet']:.2f}x parquet  ({e['codec']}, {lp})")


if __name__ == "__main__":
    main()
