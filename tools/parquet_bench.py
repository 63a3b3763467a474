#!/usr/bin/env python3
"""Parquet+zstd baseline for `logitcache bench format`.

Reads the plain arrays written by `logitcache bench format --dump DIR` (see dumpRows in
Sources/logitcache/Format/BenchFormatCommand.swift), writes them as one Parquet file with zstd
(columns: input_id int32, next_logprob float32, logsumexp float32, ids list<int32>,
logprobs list<float16>), and prints JSON: {"bytes", "write_seconds", "read_seconds"} where
reading decodes the lists into numpy arrays. Needs numpy and pyarrow.
"""
import json, os, sys, tempfile, time
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def main(d):
    load = lambda n, t: np.fromfile(os.path.join(d, n), dtype=t)
    inp, nxt, lse = load("input_ids.i32", "<i4"), load("next_logprob.f32", "<f4"), load("logsumexp.f32", "<f4")
    off, ids, lps = load("entry_offsets.i64", "<i8"), load("entry_ids.i32", "<i4"), load("entry_logprobs.f32", "<f4")
    offsets = pa.array(off.astype(np.int32))
    table = pa.table({
        "input_id": pa.array(inp), "next_logprob": pa.array(nxt), "logsumexp": pa.array(lse),
        "ids": pa.ListArray.from_arrays(offsets, pa.array(ids)),
        "logprobs": pa.ListArray.from_arrays(offsets, pa.array(lps.astype(np.float16))),
    })
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rows.parquet")
        t0 = time.perf_counter()
        pq.write_table(table, path, compression="zstd")
        write_s = time.perf_counter() - t0
        size = os.path.getsize(path)
        t0 = time.perf_counter()
        t = pq.read_table(path)
        _ = t.column("ids").combine_chunks().values.to_numpy()
        _ = t.column("logprobs").combine_chunks().values.to_numpy().astype(np.float32)
        read_s = time.perf_counter() - t0
    print(json.dumps({"bytes": size, "write_seconds": write_s, "read_seconds": read_s}))


if __name__ == "__main__":
    main(sys.argv[1])
