#!/usr/bin/env python3
"""Parquet+zstd baseline for `logitcache-bench format`.

Reads the plain arrays written by `logitcache-bench format --dump DIR` (see dumpRows in
Sources/logitcache/Format/BenchFormatCommand.swift), writes them as one Parquet file with zstd
(columns: input_id int32, next_logprob float32, logsumexp float32, ids list<int32>,
logprobs list<float16>), and prints JSON: {"bytes", "write_seconds", "read_seconds"} where
reading decodes the lists into numpy arrays. Needs numpy and pyarrow.
"""
import json, os, sys, tempfile, time
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def parquet_baseline(inp, nxt, lse, off, ids, lps):
    """Writes the rows as the baseline Parquet file (zstd) and reads the lists back into numpy.

    inp int32 [T], nxt float32 [T], lse float32 [T], off int64 [T+1], ids int32 [E],
    lps float32 [E] (stored as float16, as a user of Parquet would). Returns
    {"bytes", "write_seconds", "read_seconds"}.
    """
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
    return {"bytes": size, "write_seconds": write_s, "read_seconds": read_s}


def main(d):
    load = lambda n, t: np.fromfile(os.path.join(d, n), dtype=t)
    print(json.dumps(parquet_baseline(
        load("input_ids.i32", "<i4"), load("next_logprob.f32", "<f4"), load("logsumexp.f32", "<f4"),
        load("entry_offsets.i64", "<i8"), load("entry_ids.i32", "<i4"), load("entry_logprobs.f32", "<f4"))))


if __name__ == "__main__":
    main(sys.argv[1])
