"""Student-loader throughput of the package's two backends on one cache: tokens/s of
`StudentLoader.next()` (native: the Swift loader through the C ABI; pure: numpy), per wall
second and per process CPU second (all threads; meaningful when other processes hold the
cores), and the native `next()` against writing every batch into one reused set of arrays.

    python python/benchmarks/bench_loader.py CACHE [--k 64 8] [--batch 8] [--context 1024] [--batches 40]
    python python/benchmarks/bench_loader.py --synth DIR --logitcache .build/release/logitcache   # makes a cache first

Reports one line per (backend, k), or JSON with --json. Timings are the best of --repeats runs
of --batches batches each, after one warm-up batch (the first decode and page faults).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import logitcache as lc


def run_batches(n, next_batch):
    """(tokens, wall seconds, process CPU seconds: every thread, the native decoders too)."""
    t0, c0 = time.perf_counter(), time.process_time()
    tokens = 0
    for _ in range(n):
        tokens += next_batch()["tokens"]
    return tokens, time.perf_counter() - t0, time.process_time() - c0


def measure(cache, backend, k, args, reuse=False):
    loader = lc.StudentLoader(cache, backend=backend, batch_size=args.batch, context=args.context, k=k, mode=args.mode,
                              seed=1, decode_threads=args.threads)
    if reuse:
        buffers = loader._empty_batch()
        step = lambda: loader._next_native(buffers)
    else:
        step = loader.next
    step()  # warm-up
    wall, cpu = 0.0, 0.0
    for _ in range(args.repeats):
        tokens, seconds, cpu_seconds = run_batches(args.batches, step)
        wall, cpu = max(wall, tokens / seconds), max(cpu, tokens / cpu_seconds)
    loader.close()
    return wall, cpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache", nargs="?", help="cache directory (or use --synth)")
    ap.add_argument("--synth", help="write a synthetic cache here first (logitcache synth, K = 64)")
    ap.add_argument("--logitcache", default="logitcache", help="the logitcache binary for --synth")
    ap.add_argument("--tokens", type=int, default=1 << 19, help="tokens of the --synth cache")
    ap.add_argument("--k", type=int, nargs="+", default=[64, 8])
    ap.add_argument("--mode", default="renormalized")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="native decode threads")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cache = args.cache
    if args.synth:
        if not os.path.exists(os.path.join(args.synth, "manifest.json")):
            subprocess.run([args.logitcache, "synth", args.synth, "--tokens", str(args.tokens), "--k", "64",
                            "--seq-len", "2048"], check=True, stdout=subprocess.DEVNULL)
        cache = args.synth
    if not cache:
        ap.error("give a cache directory or --synth DIR")
    results = []
    for k in args.k:
        row = {"k": k}
        row["pure"], row["pureCPU"] = measure(cache, "pure", k, args)
        if lc.native_available():
            row["native"], row["nativeCPU"] = measure(cache, "native", k, args)
            row["nativeReusedBuffers"], row["nativeReusedBuffersCPU"] = measure(cache, "native", k, args, reuse=True)
            row["nativeVsPure"] = row["native"] / row["pure"]
            row["nextVsReusedCPU"] = row["nativeCPU"] / row["nativeReusedBuffersCPU"]
        results.append(row)
    if args.json:
        print(json.dumps({"cache": cache, "batch": args.batch, "context": args.context, "mode": args.mode,
                          "threads": args.threads, "results": results}, indent=1))
        return 0
    print(f"{cache}: B={args.batch} T={args.context} mode={args.mode}, {args.batches} batches, best of {args.repeats}, "
          f"native decode threads {args.threads}; M tokens per wall second (per process CPU second), load {os.getloadavg()[0]:.2f}")
    for r in results:
        line = f"  k={r['k']:3d}  pure {r['pure'] / 1e6:6.3f} ({r['pureCPU'] / 1e6:6.3f})"
        if "native" in r:
            line += (f"  native {r['native'] / 1e6:6.3f} ({r['nativeCPU'] / 1e6:6.3f}) = {r['nativeVsPure']:.1f}x pure"
                     f"  native into one reused set of arrays {r['nativeReusedBuffers'] / 1e6:6.3f}"
                     f" ({r['nativeReusedBuffersCPU'] / 1e6:6.3f})")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
