"""DataLoader scaling: `LogitCacheDataLoader(LogitCacheDataset(...), num_workers=W)` with 1 and
2 workers over one epoch of the same cache and settings (native backend, one decode thread per
worker), tokens per wall second and per CPU-second of the workers, and the ratio W=2 / W=1.

    python python/benchmarks/bench_dataloader.py --synth /tmp/bc --logitcache .build/release/logitcache --json out.json
    python python/benchmarks/bench_dataloader.py CACHE [--k 64 8] [--workers 1 2] [--repeats 5]

Each run is a fresh process that makes the dataset and the DataLoader and takes one pass (one
epoch: W streams, each decoding only its own blocks) in its main thread, reading only each
batch's `tokens` and `windows`. Measured per run:

* wall: from `iter(loader)` (workers forked, loaders opened) to the epoch's last batch;
* worker CPU: the CPU of the worker processes from fork to exit (all their threads: decode
  thread, the StudentLoader consumer, the tensor pickling into shared memory), read as
  RUSAGE_CHILDREN of the run process after the DataLoader joined them; each worker also clocks
  itself up to its stream's end, which gives the per-worker split (tokens, CPU);
* main CPU: the run process's own CPU over the pass (receiving batches), reported apart.

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


# -- one run (child process) -------------------------------------------------------------------

def dataloader_run(cache, workers, k, batch, context, seed, threads, record_dir):
    import torch  # noqa: F401
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
    return {"workers": workers, "k": k, "batches": batches, "tokens": tokens, "seconds": wall,
            "first_batch_seconds": first, "main_cpu_seconds": main_cpu, "worker_cpu_seconds": worker_cpu,
            "windows": len(seen), "duplicate_windows": duplicates, "per_worker": records, "settle_seconds": settled}


def child_run(args, workers, k):
    record_dir = tempfile.mkdtemp(prefix="bench-dataloader-")
    try:
        cmd = [sys.executable, os.path.abspath(__file__), args.cache, "--run", str(workers), "--k", str(k),
               "--batch", str(args.batch), "--context", str(args.context), "--seed", str(args.seed),
               "--threads", str(args.threads), "--record-dir", record_dir]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    finally:
        shutil.rmtree(record_dir, ignore_errors=True)
    return json.loads(out)


# -- summary -----------------------------------------------------------------------------------

def rates(r):
    """Tokens per wall second, per worker-CPU-second, and the CPU-normalised throughput of the
    workers (sum over workers of tokens_w / CPU_w; each worker's CPU is its share, by its own
    clock, of the workers' total CPU from rusage)."""
    if r["workers"] == 0:  # everything in the main process: its CPU is the "worker" CPU
        x = r["tokens"] / r["main_cpu_seconds"]
        return {"tokens_per_s": r["tokens"] / r["seconds"], "tokens_per_worker_cpu_s": x,
                "main_cpu_s_per_m_tokens": r["main_cpu_seconds"] / (r["tokens"] / 1e6),
                "workers_cpu_normalised_tokens_per_s": x}
    out = {"tokens_per_s": r["tokens"] / r["seconds"], "tokens_per_worker_cpu_s": r["tokens"] / r["worker_cpu_seconds"],
           "main_cpu_s_per_m_tokens": r["main_cpu_seconds"] / (r["tokens"] / 1e6)}
    per = r["per_worker"]
    clocked = sum(w["process_cpu_seconds"] for w in per)
    if per and clocked > 0:
        scale = r["worker_cpu_seconds"] / clocked
        out["workers_cpu_normalised_tokens_per_s"] = sum(w["tokens"] / (w["process_cpu_seconds"] * scale) for w in per)
    else:
        out["workers_cpu_normalised_tokens_per_s"] = len(per) * out["tokens_per_worker_cpu_s"]
    return out


def summarize(runs, ks, workers, repeats):
    summary, ratios = {}, {}
    keys = ("tokens_per_s", "tokens_per_worker_cpu_s", "workers_cpu_normalised_tokens_per_s")
    for k in ks:
        summary[k] = {}
        for w in workers:
            rs = [r for r in runs if r["k"] == k and r["workers"] == w]
            if not rs:
                continue
            xs = [rates(r) for r in rs]
            s = {"runs": len(rs), "tokens": rs[0]["tokens"], "batches": rs[0]["batches"],
                 "main_cpu_s_per_m_tokens": min(x["main_cpu_s_per_m_tokens"] for x in xs),
                 "first_batch_seconds": min(r["first_batch_seconds"] for r in rs),
                 "duplicate_windows": max(r["duplicate_windows"] for r in rs)}
            for key in keys:
                s[key] = max(x[key] for x in xs)
                s[key + "_median"] = statistics.median(x[key] for x in xs)
            summary[k][w] = s
        if 1 in summary[k] and 2 in summary[k]:
            a, b = summary[k][1], summary[k][2]
            paired = {key: [] for key in keys}
            for rep in range(repeats):
                ra = [r for r in runs if r["k"] == k and r["repeat"] == rep and r["workers"] == 1]
                rb = [r for r in runs if r["k"] == k and r["repeat"] == rep and r["workers"] == 2]
                if ra and rb:
                    for key in keys:
                        paired[key].append(rates(rb[0])[key] / rates(ra[0])[key])
            ratios[k] = {"wall": b["tokens_per_s"] / a["tokens_per_s"],
                         "per_worker_cpu_s": b["tokens_per_worker_cpu_s"] / a["tokens_per_worker_cpu_s"],
                         "cpu_normalised": (b["workers_cpu_normalised_tokens_per_s"]
                                            / a["workers_cpu_normalised_tokens_per_s"]),
                         "paired_medians": {key: statistics.median(v) for key, v in paired.items()},
                         "target": TARGET_SCALING}
            ratios[k]["met_cpu_normalised"] = ratios[k]["cpu_normalised"] >= TARGET_SCALING
            ratios[k]["met_wall"] = ratios[k]["wall"] >= TARGET_SCALING
    return summary, ratios


def print_table(result):
    st, ci = result["settings"], result["cache"]
    print(f"LogitCacheDataLoader, one epoch per run, on {ci['path']} ({ci['tokens']} tokens, K={ci['K']}, "
          f"V={ci['vocabulary']}): B={st['batch']} T={st['context']} mode=renormalized seed={st['seed']}, native, "
          f"{st['decode_threads']} decode thread(s) per worker; best of {st['repeats']} interleaved runs")
    print("  " + describe_machine(result["machine"]))
    print(f"  {'k':>3} {'W':>2}{'M tok/s':>9}{'M tok/':>9}{'workers M tok/s':>17}{'main':>9}{'1st batch':>10}{'dup':>5}")
    print(f"  {'':>3} {'':>2}{'wall':>9}{'wkr-CPU-s':>9}{'CPU-normalised':>17}{'CPU-s/M':>9}{'s':>10}{'wins':>5}")
    for k, rows in result["summary"].items():
        for w, s in rows.items():
            print(f"  {k:>3} {w:>2}{s['tokens_per_s'] / 1e6:>9.3f}{s['tokens_per_worker_cpu_s'] / 1e6:>9.3f}"
                  f"{s['workers_cpu_normalised_tokens_per_s'] / 1e6:>17.3f}{s['main_cpu_s_per_m_tokens']:>9.3f}"
                  f"{s['first_batch_seconds']:>10.3f}{s['duplicate_windows']:>5d}")
    if any(0 in rows for rows in result["summary"].values()):
        print("  (W=0: no workers, the dataset in the main process; its CPU is counted as the workers')")
    for k, r in result["ratios"].items():
        pm = r["paired_medians"]
        print(f"  k={k}: W=2 / W=1: wall {r['wall']:.2f}x (paired median {pm['tokens_per_s']:.2f}x), per worker-CPU-second "
              f"{r['per_worker_cpu_s']:.2f}x ({pm['tokens_per_worker_cpu_s']:.2f}x; 1.0 = no duplicated work), "
              f"CPU-normalised {r['cpu_normalised']:.2f}x ({pm['workers_cpu_normalised_tokens_per_s']:.2f}x); "
              f"target >= {r['target']}x: CPU-normalised {'met' if r['met_cpu_normalised'] else 'NOT met'}, "
              f"wall {'met' if r['met_wall'] else 'NOT met'}")


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
                                        args.threads, args.record_dir)))
        return 0

    _, lib, builds = snapshot_builds(args.logitcache, args.native_lib)
    os.environ["LOGITCACHE_NATIVE_LIB"] = lib
    try:
        watch = MachineWatch()
        runs = []
        for rep in range(args.repeats):
            for i, k in enumerate(args.k):
                shift = (rep + i) % len(args.workers)
                for w in args.workers[shift:] + args.workers[:shift]:
                    r = child_run(args, w, k)
                    r["repeat"], r["load_average_1min"] = rep, os.getloadavg()[0]
                    runs.append(r)
        machine = watch.finish()
    finally:
        shutil.rmtree(builds["dir"], ignore_errors=True)
    summary, ratios = summarize(runs, args.k, args.workers, args.repeats)
    result = {"benchmark": "dataloader", "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cache": cache_info(args.cache),
              "settings": {"batch": args.batch, "context": args.context, "mode": "renormalized", "seed": args.seed,
                           "decode_threads": args.threads, "backend": "native", "repeats": args.repeats},
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
