"""DataLoader scaling: `LogitCacheDataLoader(LogitCacheDataset(...), num_workers=W)` with 1 and
2 workers over one epoch of the same cache and settings (native backend, one decode thread per
worker), tokens per wall second and per CPU-second of the workers, and the ratio W=2 / W=1.

    python python/benchmarks/bench_dataloader.py --synth /tmp/bc --logitcache .build/release/logitcache --json out.json
    python python/benchmarks/bench_dataloader.py CACHE [--k 64 8] [--workers 1 2] [--repeats 5] [--transport slots tensors]

Transports (`--transport`, default slots): "slots" is `LogitCacheDataLoader`, whose workers
decode into shared-memory batch slots allocated once per pass and send only slot numbers, the
main process copying each batch out of its slot; "tensors" is a plain `DataLoader(ds,
batch_size=None, num_workers=W)` over the same dataset, whose workers yield fresh tensors that
torch moves into new shared memory per batch (the transport `LogitCacheDataLoader` used before
the slots). Giving both interleaves them in one run, so they meet the same machine load.

Each run is a fresh process that makes the dataset and the DataLoader and takes one pass (one
epoch: W streams, each decoding only its own blocks) in its main thread, reading only each
batch's `tokens` and `windows`. Measured per run:

* wall: from `iter(loader)` (workers forked, loaders opened) to the epoch's last batch;
* worker CPU: the CPU of the worker processes from fork to exit (all their threads: decode
  thread, the StudentLoader consumer, the transport's side in the worker: filling a slot and
  sending its number, or moving tensors into new shared memory), read as RUSAGE_CHILDREN of the
  run process after the DataLoader joined them; each worker also clocks itself up to its
  stream's end, which gives the per-worker split (tokens, CPU);
* main CPU: the run process's own CPU over the pass (receiving batches; with slots, the copy of
  each batch out of its slot), reported apart and in the total (workers + main) per M tokens.

W=0 (the dataset in the main process, no workers) is the reference without transport: there
the main process's CPU stands for the workers' CPU.

From those: tokens per wall second; tokens per worker-CPU-second (the CPU cost of a token, which
must not grow with W: workers decode disjoint blocks, no duplicated decoding); and the
CPU-normalised throughput of the workers, the sum over workers of tokens_w / CPU_w (what the W
workers deliver when each has a core of its own; on a shared 2-core machine wall time cannot
show it). The issue's target (W=2 >= 1.7x W=1) is checked on the CPU-normalised throughput and
reported on wall throughput too. Every run checks that the epoch's windows arrive exactly once.

Runs are interleaved (W order rotated per repeat), best of --repeats reported; load average and
the CPU other processes used (/proc/stat) are recorded beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_loader import MachineWatch, cache_info, describe_machine, settle, snapshot_builds, synth  # noqa: E402

TARGET_SCALING = 1.7  # issue #17: 2 workers >= 1.7x one worker
TRANSPORTS = ("slots", "tensors")


# -- one run (child process) -------------------------------------------------------------------

def dataloader_run(cache, workers, k, batch, context, seed, threads, record_dir, transport):
    from torch.utils.data import DataLoader

    from logitcache.torch import LogitCacheDataLoader, LogitCacheDataset

    class ClockedDataset(LogitCacheDataset):
        """Each stream writes its worker's tokens and CPU (to the stream's end) to record_dir."""

        def __iter__(self):
            c0, tokens = time.process_time(), 0
            for b in super().__iter__():
                tokens += b["tokens"]
                yield b
            with open(os.path.join(record_dir, f"worker-{os.getpid()}.json"), "w") as f:
                json.dump({"pid": os.getpid(), "tokens": tokens, "stream_cpu_seconds": time.process_time() - c0,
                           "process_cpu_seconds": time.process_time()}, f)

    ds = ClockedDataset(cache, batch_size=batch, context=context, k=k, mode="renormalized", seed=seed,
                        decode_threads=threads, backend="native", rank=0, world_size=1)
    if transport == "tensors":
        loader = DataLoader(ds, batch_size=None, num_workers=workers)
    else:
        loader = LogitCacheDataLoader(ds, num_workers=workers)
    settled = settle()  # the imports' helper threads (OpenBLAS) idle first, as in a long-running process
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p0, t0 = time.process_time(), time.perf_counter()
    tokens = batches = 0
    first = None
    seen = set()
    duplicates = 0
    for b in loader:
        if first is None:
            first = time.perf_counter() - t0
        tokens += b["tokens"]
        batches += 1
        for w in b["windows"].tolist():
            if w >= 0:
                duplicates += w in seen
                seen.add(w)
    wall = time.perf_counter() - t0
    main_cpu = time.process_time() - p0
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, joined by the DataLoader
    worker_cpu = (ch1.ru_utime + ch1.ru_stime) - (ch0.ru_utime + ch0.ru_stime)
    records = []
    for name in sorted(os.listdir(record_dir)):
        with open(os.path.join(record_dir, name)) as f:
            records.append(json.load(f))
    return {"transport": transport, "workers": workers, "k": k, "batches": batches, "tokens": tokens, "seconds": wall,
            "first_batch_seconds": first, "main_cpu_seconds": main_cpu, "worker_cpu_seconds": worker_cpu,
            "windows": len(seen), "duplicate_windows": duplicates, "per_worker": records, "settle_seconds": settled}


def child_run(args, transport, workers, k):
    record_dir = tempfile.mkdtemp(prefix="bench-dataloader-")
    try:
        cmd = [sys.executable, os.path.abspath(__file__), args.cache, "--run", str(workers), "--k", str(k),
               "--batch", str(args.batch), "--context", str(args.context), "--seed", str(args.seed),
               "--threads", str(args.threads), "--record-dir", record_dir, "--transport", transport]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    finally:
        shutil.rmtree(record_dir, ignore_errors=True)
    return json.loads(out)


# -- summary -----------------------------------------------------------------------------------

def rates(r):
    """Tokens per wall second, per worker-CPU-second, and the CPU-normalised throughput of the
    workers (sum over workers of tokens_w / CPU_w; each worker's CPU is its share, by its own
    clock, of the workers' total CPU from rusage)."""
    m = r["tokens"] / 1e6
    if r["workers"] == 0:  # everything in the main process: its CPU is the "worker" CPU
        x = r["tokens"] / r["main_cpu_seconds"]
        return {"tokens_per_s": r["tokens"] / r["seconds"], "tokens_per_worker_cpu_s": x,
                "worker_cpu_s_per_m_tokens": r["main_cpu_seconds"] / m,
                "main_cpu_s_per_m_tokens": r["main_cpu_seconds"] / m, "total_cpu_s_per_m_tokens": r["main_cpu_seconds"] / m,
                "workers_cpu_normalised_tokens_per_s": x}
    out = {"tokens_per_s": r["tokens"] / r["seconds"], "tokens_per_worker_cpu_s": r["tokens"] / r["worker_cpu_seconds"],
           "worker_cpu_s_per_m_tokens": r["worker_cpu_seconds"] / m, "main_cpu_s_per_m_tokens": r["main_cpu_seconds"] / m,
           "total_cpu_s_per_m_tokens": (r["worker_cpu_seconds"] + r["main_cpu_seconds"]) / m}
    per = r["per_worker"]
    clocked = sum(w["process_cpu_seconds"] for w in per)
    if per and clocked > 0:
        scale = r["worker_cpu_seconds"] / clocked
        out["workers_cpu_normalised_tokens_per_s"] = sum(w["tokens"] / (w["process_cpu_seconds"] * scale) for w in per)
    else:
        out["workers_cpu_normalised_tokens_per_s"] = len(per) * out["tokens_per_worker_cpu_s"]
    return out


def summarize(runs, ks, workers, repeats):
    """Per transport ("none" for W=0), k and W: the best run of each rate (the least CPU per M
    tokens) and medians; per transport and k: the ratios W=2 / W=1."""
    summary, ratios = {}, {}
    keys = ("tokens_per_s", "tokens_per_worker_cpu_s", "workers_cpu_normalised_tokens_per_s")
    cpu_keys = ("worker_cpu_s_per_m_tokens", "main_cpu_s_per_m_tokens", "total_cpu_s_per_m_tokens")
    for transport in dict.fromkeys(r["transport"] for r in runs):
        summary[transport], ratios[transport] = {}, {}
        for k in ks:
            rows = summary[transport][k] = {}
            for w in workers:
                rs = [r for r in runs if r["transport"] == transport and r["k"] == k and r["workers"] == w]
                if not rs:
                    continue
                xs = [rates(r) for r in rs]
                row = {"runs": len(rs), "tokens": rs[0]["tokens"], "batches": rs[0]["batches"],
                       "first_batch_seconds": min(r["first_batch_seconds"] for r in rs),
                       "duplicate_windows": max(r["duplicate_windows"] for r in rs)}
                for key in cpu_keys:
                    row[key] = min(x[key] for x in xs)
                    row[key + "_median"] = statistics.median(x[key] for x in xs)
                for key in keys:
                    row[key] = max(x[key] for x in xs)
                    row[key + "_median"] = statistics.median(x[key] for x in xs)
                rows[w] = row
            if 1 not in rows or 2 not in rows:
                continue
            a, b = rows[1], rows[2]
            paired = {key: [] for key in keys}
            for rep in range(repeats):
                same = [r for r in runs if r["transport"] == transport and r["k"] == k and r["repeat"] == rep]
                ra = [r for r in same if r["workers"] == 1]
                rb = [r for r in same if r["workers"] == 2]
                if ra and rb:
                    for key in keys:
                        paired[key].append(rates(rb[0])[key] / rates(ra[0])[key])
            r = ratios[transport][k] = {
                "wall": b["tokens_per_s"] / a["tokens_per_s"],
                "per_worker_cpu_s": b["tokens_per_worker_cpu_s"] / a["tokens_per_worker_cpu_s"],
                "cpu_normalised": b["workers_cpu_normalised_tokens_per_s"] / a["workers_cpu_normalised_tokens_per_s"],
                "paired_medians": {key: statistics.median(v) for key, v in paired.items()},
                "target": TARGET_SCALING}
            r["met_cpu_normalised"] = r["cpu_normalised"] >= TARGET_SCALING
            r["met_wall"] = r["wall"] >= TARGET_SCALING
    return summary, ratios


def print_table(result):
    st, ci = result["settings"], result["cache"]
    print(f"DataLoader, one epoch per run, on {ci['path']} ({ci['tokens']} tokens, K={ci['K']}, "
          f"V={ci['vocabulary']}): B={st['batch']} T={st['context']} mode=renormalized seed={st['seed']}, native, "
          f"{st['decode_threads']} decode thread(s) per worker; best of {st['repeats']} interleaved runs")
    print("  " + describe_machine(result["machine"]))
    print(f"  {'transport':<9}{'k':>4}{'W':>3}{'M tok/s':>9}{'M tok/':>10}{'workers M tok/s':>17}"
          f"{'worker':>9}{'main':>9}{'total':>9}{'1st batch':>10}{'dup':>5}")
    print(f"  {'':<9}{'':>4}{'':>3}{'wall':>9}{'wkr-CPU-s':>10}{'CPU-normalised':>17}"
          f"{'CPU-s/M':>9}{'CPU-s/M':>9}{'CPU-s/M':>9}{'s':>10}{'wins':>5}")
    for transport, by_k in result["summary"].items():
        for k, rows in by_k.items():
            for w, s in rows.items():
                print(f"  {transport:<9}{k:>4}{w:>3}{s['tokens_per_s'] / 1e6:>9.3f}{s['tokens_per_worker_cpu_s'] / 1e6:>10.3f}"
                      f"{s['workers_cpu_normalised_tokens_per_s'] / 1e6:>17.3f}{s['worker_cpu_s_per_m_tokens']:>9.3f}"
                      f"{s['main_cpu_s_per_m_tokens']:>9.3f}{s['total_cpu_s_per_m_tokens']:>9.3f}"
                      f"{s['first_batch_seconds']:>10.3f}{s['duplicate_windows']:>5d}")
    if "none" in result["summary"]:
        print("  (none: W=0, the dataset in the main process, no transport; its CPU is counted as the workers')")
    for transport, by_k in result["ratios"].items():
        for k, r in by_k.items():
            pm = r["paired_medians"]
            print(f"  {transport} k={k}: W=2 / W=1: wall {r['wall']:.2f}x (paired median {pm['tokens_per_s']:.2f}x), "
                  f"per worker-CPU-second {r['per_worker_cpu_s']:.2f}x ({pm['tokens_per_worker_cpu_s']:.2f}x; "
                  f"1.0 = no duplicated work), CPU-normalised {r['cpu_normalised']:.2f}x "
                  f"({pm['workers_cpu_normalised_tokens_per_s']:.2f}x); target >= {r['target']}x: CPU-normalised "
                  f"{'met' if r['met_cpu_normalised'] else 'NOT met'}, wall {'met' if r['met_wall'] else 'NOT met'}")


# -- main --------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache", nargs="?", help="cache directory (or use --synth)")
    ap.add_argument("--synth", help="write a synthetic cache here first unless one is there")
    ap.add_argument("--logitcache", default="logitcache", help="the logitcache binary (for --synth and the native "
                                                               "library beside it)")
    ap.add_argument("--native-lib", help="libLogitCacheABI to load: default the one beside --logitcache if there, "
                                         "'installed' for the package's copy, or a path")
    ap.add_argument("--tokens", type=int, default=1 << 20, help="tokens of the --synth cache")
    ap.add_argument("--k", type=int, nargs="+", default=[64, 8])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2],
                    help="worker counts (0: the dataset in the main process, the cost without transport)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="decode threads per worker")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--transport", nargs="+", choices=TRANSPORTS, default=["slots"],
                    help="slots: LogitCacheDataLoader; tensors: a plain DataLoader over the same dataset "
                         "(fresh shared memory per batch); both: interleaved in one run")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON here ('-': stdout)")
    ap.add_argument("--run", type=int, help=argparse.SUPPRESS)  # internal: one run with this many workers
    ap.add_argument("--record-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.synth:
        args.cache = synth(args.logitcache, args.synth, args.tokens)
    if not args.cache:
        ap.error("give a cache directory or --synth DIR")
    if args.run is not None:
        print(json.dumps(dataloader_run(args.cache, args.run, args.k[0], args.batch, args.context, args.seed,
                                        args.threads, args.record_dir, args.transport[0])))
        return 0

    _, lib, builds = snapshot_builds(args.logitcache, args.native_lib)
    os.environ["LOGITCACHE_NATIVE_LIB"] = lib
    try:
        watch = MachineWatch()
        runs = []
        # W=0 has no transport: run once per k and repeat, whatever --transport says.
        shapes = [("none", 0)] if 0 in args.workers else []
        shapes += [(t, w) for w in args.workers if w > 0 for t in args.transport]
        for rep in range(args.repeats):
            for i, k in enumerate(args.k):
                shift = (rep + i) % len(shapes)
                for transport, w in shapes[shift:] + shapes[:shift]:
                    r = child_run(args, "slots" if transport == "none" else transport, w, k)
                    r["transport"], r["repeat"], r["load_average_1min"] = transport, rep, os.getloadavg()[0]
                    runs.append(r)
        machine = watch.finish()
    finally:
        shutil.rmtree(builds["dir"], ignore_errors=True)
    summary, ratios = summarize(runs, args.k, args.workers, args.repeats)
    result = {"benchmark": "dataloader", "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cache": cache_info(args.cache),
              "settings": {"batch": args.batch, "context": args.context, "mode": "renormalized", "seed": args.seed,
                           "decode_threads": args.threads, "backend": "native", "repeats": args.repeats,
                           "transports": args.transport},
              "builds": {"native_lib": builds["native_lib"]}, "machine": machine, "summary": summary,
              "ratios": ratios, "runs": runs}
    print_table(result)
    if args.json:
        text = json.dumps(result, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
