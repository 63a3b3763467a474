"""The Python student loader beside the Swift one, on one cache with the same settings:
tokens per process CPU-second and per wall second of one epoch, Swift loader vs the Python
loader's native backend (the same Swift loader through the C ABI, batches into numpy arrays)
vs its pure-numpy backend.

    python python/benchmarks/bench_loader.py --synth /tmp/bc --logitcache .build/release/logitcache --json out.json
    python python/benchmarks/bench_loader.py CACHE --logitcache .build/release/logitcache [--k 64 8] [--repeats 5]

Every measured run is a fresh process doing the same thing on the same cache and settings
(B, T, k, mode renormalized, seed, one decode thread, shuffle buffer 64, prefetch 4):

* swift: `logitcache-bench loader --worker CACHE --worker-k k --batch B --context T --seed S`
  (the `logitcache-bench` beside --logitcache),
  which opens a `StudentLoader` on CACHE, takes one epoch with `next(into: Batch)` (one reused
  batch) and prints JSON. Its CPU is the process CPU clock from before the loader opens to
  the epoch's last batch (decode threads + consumer thread), its wall time starts after open.
* native: this script in a child process, `logitcache.StudentLoader(..., backend="native")`,
  `next()` (pooled arrays the caller owns) for one epoch, clocked exactly like the Swift worker
  (time.process_time from before the loader opens; the import is not counted, and the run
  waits until the import's helper threads are idle: see `settle`).
* native-1set: the same, but every batch written into one reused set of arrays
  (`_next_native`): the floor of the native path, to tell Python-side cost from the loader's.
* pure: the numpy loader, the first --pure-batches batches of the epoch (it is ~10x slower).

Both sides run the same build: the Python children load the libLogitCacheABI beside
--logitcache (--native-lib: 'installed' or a path instead), and the CLI and library are copied to
a private directory first, so a rebuild during the benchmark changes neither; their hashes and
times are recorded.

Runs are interleaved (repeat r runs every (k, loader) in a rotated order) and the best of
--repeats is reported per loader and k; the ratio native/swift is given both as the ratio of
the bests and as the median of the per-repeat ratios (each pair ran back to back). The machine
is shared: the load average and the CPU other processes used during the benchmark (from
/proc/stat) are printed and recorded beside the numbers; trust the CPU-second figures and
ratios over the wall ones.

The Swift worker runs with one decode thread and mode renormalized only (it has no flag for
either), so --mode and --threads are not options here; `bench loader --worker` with
`--worker-threads N --worker-mode M` (and a --batches N cap) would let both sides sweep them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

LOADERS = ("swift", "native", "native-1set", "pure")
TARGET_NATIVE_VS_SWIFT = 0.9  # issue #17: tokens per CPU-second, at k = 64 and k = 8


# -- machine state -----------------------------------------------------------------------------

def load_average():
    """(1, 5, 15)-minute load averages."""
    return list(os.getloadavg())


def cpu_jiffies():
    """(busy, total) jiffies of the whole machine from /proc/stat (None where unavailable)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


def own_cpu_seconds():
    """CPU seconds of this process and its waited-for children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class MachineWatch:
    """CPU the rest of the machine used while the benchmark ran: /proc/stat busy time minus
    this process tree's own, in cores on average (the benchmark's children must be waited for)."""

    def __init__(self):
        self.load_before = load_average()
        self.j0, self.own0, self.t0 = cpu_jiffies(), own_cpu_seconds(), time.perf_counter()

    def finish(self):
        j1, own1, wall = cpu_jiffies(), own_cpu_seconds(), time.perf_counter() - self.t0
        out = {"load_average_before": self.load_before, "load_average_after": load_average(),
               "cores": os.cpu_count(), "wall_seconds": wall, "own_cores": (own1 - self.own0) / wall}
        if self.j0 and j1:
            hz = os.sysconf("SC_CLK_TCK")
            busy = (j1[0] - self.j0[0]) / hz
            out["busy_cores"] = busy / wall
            out["other_cores"] = max(0.0, busy - (own1 - self.own0)) / wall
        return out


def describe_machine(m):
    la0, la1 = m["load_average_before"], m["load_average_after"]
    s = (f"load average {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f} before, {la1[0]:.2f} {la1[1]:.2f} {la1[2]:.2f} after"
         f" (1/5/15 min), {m['cores']} cores")
    if "other_cores" in m:
        s += f"; other processes used {m['other_cores']:.2f} cores on average during the {m['wall_seconds']:.0f} s run"
    return s


def file_info(path):
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    return {"path": path, "sha256": digest, "mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(os.path.getmtime(path)))}


def snapshot_builds(binary, native_lib):
    """Copies of the Swift CLI and the native library in a private directory, so both sides run
    the builds they started with even when the build directory is rebuilt meanwhile.

    `native_lib` None: the libLogitCacheABI beside the CLI (the same build, same sources and
    flags), else the package's installed copy; "installed": the package's copy; else a path."""
    from logitcache import _native  # only to find the installed library
    binary = shutil.which(binary) or binary
    if native_lib in (None, "beside"):
        sibling = os.path.join(os.path.dirname(os.path.abspath(binary)), _native.LIBRARY_NAME)
        native_lib = sibling if os.path.exists(sibling) else "installed"
    if native_lib == "installed":
        os.environ.pop("LOGITCACHE_NATIVE_LIB", None)
        native_lib = _native.library_path()
    where = tempfile.mkdtemp(prefix="bench-loader-builds-")
    out = {"dir": where, "logitcache": file_info(binary), "native_lib": file_info(native_lib)}
    shutil.copy2(binary, os.path.join(where, "logitcache"))
    shutil.copy2(native_lib, os.path.join(where, _native.LIBRARY_NAME))
    return os.path.join(where, "logitcache"), os.path.join(where, _native.LIBRARY_NAME), out


def cache_info(cache):
    with open(os.path.join(cache, "manifest.json")) as f:
        m = json.load(f)
    return {"path": cache, "tokens": m["totals"]["tokens"], "sequences": m["totals"]["sequences"],
            "K": m["capture"].get("k"), "vocabulary": m["vocabularySize"], "codec": m["encoding"].get("codec"),
            "blockTokens": m["encoding"].get("blockTokens"), "bytes": m["totals"]["bytes"], "checksum": m["checksum"]}


def synth(binary, directory, tokens, k=64, vocab=32000):
    """`logitcache synth DIR --tokens N --k 64 --vocab 32000` unless DIR already holds a cache."""
    if not os.path.exists(os.path.join(directory, "manifest.json")):
        subprocess.run([binary, "synth", directory, "--tokens", str(tokens), "--k", str(k), "--vocab", str(vocab)],
                       check=True, stdout=subprocess.DEVNULL)
    return directory


# -- one run (child process) -------------------------------------------------------------------

def other_threads_cpu():
    """CPU seconds of this process's threads other than the calling one (/proc schedstat)."""
    me, total = threading.get_native_id(), 0.0
    for t in os.listdir("/proc/self/task"):
        if int(t) != me:
            try:
                with open(f"/proc/self/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                pass
    return total


def settle(limit=3.0):
    """Waits until the process's other threads are idle (at most `limit` seconds) and returns
    the seconds waited. After `import numpy` the OpenBLAS thread server spins for ~0.1 s of
    wall time (on a free core it burns that much CPU, on a busy machine it yields); measuring
    at once would charge that to the loader, which a long-running training process never sees."""
    if not os.path.isdir("/proc/self/task"):
        return 0.0
    t0 = time.perf_counter()
    last = other_threads_cpu()
    while time.perf_counter() - t0 < limit:
        time.sleep(0.05)
        now = other_threads_cpu()
        if now - last < 1e-3:
            break
        last = now
    return time.perf_counter() - t0


def python_run(cache, loader, k, batch, context, seed, batches):
    """One epoch (or `batches` batches) of the Python loader, clocked like the Swift worker:
    process and consumer-thread CPU from before the loader opens, wall time from after."""
    import logitcache as lc

    backend = "pure" if loader == "pure" else "native"
    settled = settle()
    p0, c0 = time.process_time(), time.thread_time()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    ld = lc.StudentLoader(cache, backend=backend, batch_size=batch, context=context, k=k, mode="renormalized",
                          seed=seed, decode_threads=1)
    n = ld.batches_in_epoch if batches is None else min(batches, ld.batches_in_epoch)
    if loader == "native-1set":
        arrays = ld._empty_batch()
        step = lambda: ld._next_native(arrays)  # noqa: E731
    else:
        step = ld.next
    tokens = 0
    t0 = time.perf_counter()
    for _ in range(n):
        tokens += step()["tokens"]
    wall = time.perf_counter() - t0
    consumer, process = time.thread_time() - c0, time.process_time() - p0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    ld.close()
    return {"loader": loader, "k": k, "batches": n, "tokens": tokens, "seconds": wall, "cpu_seconds": process,
            "consumer_cpu_seconds": consumer, "decode_cpu_seconds": process - consumer,
            "minor_faults": r1.ru_minflt - r0.ru_minflt, "settle_seconds": settled}


def swift_run(binary, cache, k, batch, context, seed):
    """One epoch of the Swift loader in `logitcache-bench loader --worker` (the benchmark binary
    beside the `logitcache` one)."""
    bench = os.path.join(os.path.dirname(os.path.abspath(shutil.which(binary) or binary)), "logitcache-bench")
    cmd = [bench, "loader", "--worker", cache, "--worker-k", str(k), "--batch", str(batch),
           "--context", str(context), "--seed", str(seed)]
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = json.loads(out)
    return {"loader": "swift", "k": k, "batches": None, "tokens": r["tokens"], "seconds": r["seconds"],
            "cpu_seconds": r["decode_cpu_seconds"] + r["consumer_cpu_seconds"],
            "consumer_cpu_seconds": r["consumer_cpu_seconds"], "decode_cpu_seconds": r["decode_cpu_seconds"],
            "whole_process_cpu_seconds": (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime),
            "minor_faults": c1.ru_minflt - c0.ru_minflt}


def child_run(args, loader, k):
    """A Python run in a fresh interpreter (this script with --run), like the Swift worker."""
    cmd = [sys.executable, os.path.abspath(__file__), args.cache, "--run", loader, "--k", str(k), "--batch",
           str(args.batch), "--context", str(args.context), "--seed", str(args.seed)]
    if loader == "pure":
        cmd += ["--pure-batches", str(args.pure_batches)]
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = json.loads(out)
    r["whole_process_cpu_seconds"] = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    return r


# -- summary -----------------------------------------------------------------------------------

def rates(r):
    m = r["tokens"] / 1e6
    return {"tokens_per_cpu_s": r["tokens"] / r["cpu_seconds"], "tokens_per_s": r["tokens"] / r["seconds"],
            "consumer_cpu_s_per_m_tokens": r["consumer_cpu_seconds"] / m,
            "decode_cpu_s_per_m_tokens": r["decode_cpu_seconds"] / m}


def best(runs):
    """Best of the runs: highest rates, lowest costs (each figure on its own), plus medians."""
    rs = [rates(r) for r in runs]
    out = {"runs": len(rs), "tokens": runs[0]["tokens"]}
    for key in ("tokens_per_cpu_s", "tokens_per_s"):
        out[key] = max(x[key] for x in rs)
        out[key + "_median"] = statistics.median(x[key] for x in rs)
    for key in ("consumer_cpu_s_per_m_tokens", "decode_cpu_s_per_m_tokens"):
        out[key] = min(x[key] for x in rs)
    return out


def summarize(runs, ks, repeats):
    summary, ratios = {}, {}
    for k in ks:
        summary[k] = {}
        for loader in LOADERS:
            rs = [r for r in runs if r["k"] == k and r["loader"] == loader]
            if rs:
                summary[k][loader] = best(rs)
        s = summary[k]
        if "swift" in s and "native" in s:
            paired_cpu, paired_wall = [], []
            for rep in range(repeats):
                a = [r for r in runs if r["k"] == k and r["repeat"] == rep and r["loader"] == "swift"]
                b = [r for r in runs if r["k"] == k and r["repeat"] == rep and r["loader"] == "native"]
                if a and b:
                    paired_cpu.append(rates(b[0])["tokens_per_cpu_s"] / rates(a[0])["tokens_per_cpu_s"])
                    paired_wall.append(rates(b[0])["tokens_per_s"] / rates(a[0])["tokens_per_s"])
            cpu = s["native"]["tokens_per_cpu_s"] / s["swift"]["tokens_per_cpu_s"]
            ratios[k] = {"native_vs_swift_cpu": cpu,
                         "native_vs_swift_wall": s["native"]["tokens_per_s"] / s["swift"]["tokens_per_s"],
                         "native_vs_swift_cpu_paired_median": statistics.median(paired_cpu),
                         "native_vs_swift_wall_paired_median": statistics.median(paired_wall),
                         "native_vs_swift_cpu_paired": paired_cpu,
                         "target": TARGET_NATIVE_VS_SWIFT, "met": cpu >= TARGET_NATIVE_VS_SWIFT}
            if "native-1set" in s:
                ratios[k]["native_1set_vs_swift_cpu"] = s["native-1set"]["tokens_per_cpu_s"] / s["swift"]["tokens_per_cpu_s"]
            if "pure" in s:
                ratios[k]["pure_vs_swift_cpu"] = s["pure"]["tokens_per_cpu_s"] / s["swift"]["tokens_per_cpu_s"]
    return summary, ratios


def print_table(result):
    st, ci = result["settings"], result["cache"]
    print(f"student loader, one epoch per run, on {ci['path']} ({ci['tokens']} tokens, K={ci['K']}, V={ci['vocabulary']}, "
          f"{ci['codec']}): B={st['batch']} T={st['context']} mode=renormalized seed={st['seed']} decode threads 1; "
          f"best of {st['repeats']} interleaved runs (pure: first {st['pure_batches']} batches)")
    print("  " + describe_machine(result["machine"]))
    names = {"swift": "Swift (bench loader --worker)", "native": "Python native next()",
             "native-1set": "Python native, 1 array set", "pure": "Python pure (numpy)"}
    head = (f"  {'k':>3}  {'loader':<30}{'M tok/CPU-s':>12}{'M tok/s':>9}{'consumer':>10}{'decode':>8}"
            f"{'vs Swift':>10}{'vs Swift':>10}")
    print(head)
    print(f"  {'':>3}  {'':<30}{'':>12}{'wall':>9}{'CPU-s/M':>10}{'CPU-s/M':>8}{'(CPU)':>10}{'(wall)':>10}")
    for k, rows in result["summary"].items():
        sw = rows.get("swift")
        for loader, b in rows.items():
            vs = ""
            if sw:
                vs = (f"{b['tokens_per_cpu_s'] / sw['tokens_per_cpu_s']:>9.2f}x"
                      f"{b['tokens_per_s'] / sw['tokens_per_s']:>9.2f}x")
            print(f"  {k:>3}  {names[loader]:<30}{b['tokens_per_cpu_s'] / 1e6:>12.3f}{b['tokens_per_s'] / 1e6:>9.3f}"
                  f"{b['consumer_cpu_s_per_m_tokens']:>10.3f}{b['decode_cpu_s_per_m_tokens']:>8.3f}{vs}")
    for k, r in result["ratios"].items():
        print(f"  k={k}: native/Swift tokens per CPU-second {r['native_vs_swift_cpu']:.2f}x (best vs best; median of "
              f"back-to-back pairs {r['native_vs_swift_cpu_paired_median']:.2f}x), target >= {r['target']}: "
              f"{'met' if r['met'] else 'NOT met'}")


# -- main --------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache", nargs="?", help="cache directory (or use --synth)")
    ap.add_argument("--synth", help="write a synthetic cache here first unless one is there "
                                    "(logitcache synth --tokens N --k 64 --vocab 32000)")
    ap.add_argument("--logitcache", default="logitcache", help="the logitcache binary (Swift loader, --synth)")
    ap.add_argument("--native-lib", help="libLogitCacheABI for the native Python loader: default the one beside "
                                         "--logitcache (the same build), 'installed' for the package's copy, or a path")
    ap.add_argument("--tokens", type=int, default=1 << 20, help="tokens of the --synth cache")
    ap.add_argument("--k", type=int, nargs="+", default=[64, 8])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pure-batches", type=int, default=32, help="batches per run of the (slow) numpy loader")
    ap.add_argument("--loaders", nargs="+", default=list(LOADERS), choices=LOADERS)
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON here ('-': stdout)")
    ap.add_argument("--run", choices=LOADERS[1:], help=argparse.SUPPRESS)  # internal: one Python run
    args = ap.parse_args(argv)
    if args.synth:
        args.cache = synth(args.logitcache, args.synth, args.tokens)
    if not args.cache:
        ap.error("give a cache directory or --synth DIR")
    if args.run:
        r = python_run(args.cache, args.run, args.k[0], args.batch, args.context, args.seed,
                       args.pure_batches if args.run == "pure" else None)
        print(json.dumps(r))
        return 0

    binary, lib, builds = snapshot_builds(args.logitcache, args.native_lib)
    os.environ["LOGITCACHE_NATIVE_LIB"] = lib  # for the Python children
    args.logitcache = binary
    try:
        result = measure_all(args)
    finally:
        shutil.rmtree(builds["dir"], ignore_errors=True)
    result["builds"] = builds
    print_table(result)
    if args.json:
        text = json.dumps(result, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0


def measure_all(args):
    watch = MachineWatch()
    runs = []
    loaders = [x for x in LOADERS if x in args.loaders]
    for rep in range(args.repeats):
        for i, k in enumerate(args.k):
            shift = (rep + i) % len(loaders)
            for loader in loaders[shift:] + loaders[:shift]:  # rotated: no loader always runs first
                if loader == "swift":
                    r = swift_run(args.logitcache, args.cache, k, args.batch, args.context, args.seed)
                else:
                    r = child_run(args, loader, k)
                r["repeat"], r["load_average_1min"] = rep, os.getloadavg()[0]
                runs.append(r)
    machine = watch.finish()
    swift_tokens = {r["tokens"] for r in runs if r["loader"] == "swift"}
    native_tokens = {r["tokens"] for r in runs if r["loader"] in ("native", "native-1set")}
    if swift_tokens and native_tokens and swift_tokens != native_tokens:
        print(f"warning: the Swift and native epochs hold different token counts: {swift_tokens} vs {native_tokens}",
              file=sys.stderr)
    summary, ratios = summarize(runs, args.k, args.repeats)
    result = {"benchmark": "loader", "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cache": cache_info(args.cache),
              "settings": {"batch": args.batch, "context": args.context, "mode": "renormalized", "seed": args.seed,
                           "decode_threads": 1, "shuffle_buffer": 64, "prefetch_blocks": 4, "repeats": args.repeats,
                           "pure_batches": args.pure_batches, "python": sys.version.split()[0]},
              "machine": machine, "summary": summary, "ratios": ratios, "runs": runs}
    return result


if __name__ == "__main__":
    sys.exit(main())
