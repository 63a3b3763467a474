#!/usr/bin/env python3
"""numpy/OpenBLAS sgemm baseline for `logitcache-bench gemm`.

Reads a JSON list of cases on stdin, each {"name", "form", "m", "n", "k"} with form one of
  forward         y  = x · Wᵀ   x (m,k), W (n,k)
  backward_input  dX = dY · W   dY (m,k), W (k,n)
  backward_weight dW = dYᵀ · X  dY (k,m), X (k,n)
and prints JSON {"threads", "openblas", "results": [{"name", "form", "seconds", "gflops"}]}
(best of repeated float32 products, timed the same way as the Swift side, with --clock wall
or cpu).

Thread count: --threads N sets OPENBLAS_NUM_THREADS/OMP_NUM_THREADS before numpy loads and,
if threadpoolctl is installed, limits the BLAS pool with it too. OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE are removed from this process's environment so OpenBLAS picks its own
kernel for the CPU; the kernel it chose is reported.
"""
import argparse
import ctypes
import json
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, required=True)
parser.add_argument("--min-seconds", type=float, default=0.3)
parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: elapsed; cpu: process CPU time / threads (as the Swift side)")
args = parser.parse_args()

for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(var, None)
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402  (after the environment is set)

limiter = None
info = {}
try:
    from threadpoolctl import threadpool_limits, threadpool_info

    limiter = threadpool_limits(limits=args.threads, user_api="blas")
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if blas:
        info = {"library": blas[0].get("internal_api"), "version": blas[0].get("version"),
                "kernel": blas[0].get("architecture"), "threads": blas[0].get("num_threads")}
except ImportError:
    pass


def corename():
    """The OpenBLAS kernel name, asked of the loaded library through ctypes."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower() and line.strip().endswith(".so") or ".so." in line and "openblas" in line.lower()}
    except OSError:
        return None
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename64_", "openblas_get_corename"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode()
    return None


if not info.get("kernel"):
    info["kernel"] = corename()

rng = np.random.default_rng(0)
results = []
for case in json.load(sys.stdin):
    m, n, k, form = case["m"], case["n"], case["k"], case["form"]
    if form == "forward":
        a = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        run = lambda: a @ w.T  # noqa: E731
    elif form == "backward_input":
        a = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((k, n), dtype=np.float32)
        run = lambda: a @ w  # noqa: E731
    elif form == "backward_weight":
        a = rng.standard_normal((k, m), dtype=np.float32)
        w = rng.standard_normal((k, n), dtype=np.float32)
        run = lambda: a.T @ w  # noqa: E731
    else:
        raise SystemExit(f"unknown form {form!r} in case {case.get('name')!r}")
    run()
    best, total, reps = float("inf"), 0.0, 0
    while reps < 3 or total < args.min_seconds:
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        wall = time.perf_counter() - t0
        dt = wall if args.clock == "wall" else (time.process_time() - c0) / args.threads
        best, total, reps = min(best, dt), total + wall, reps + 1
    results.append({"name": case["name"], "form": form, "seconds": best, "gflops": 2.0 * m * n * k / best / 1e9})

json.dump({"threads": args.threads, "clock": args.clock, "numpy": np.__version__, "openblas": info, "results": results}, sys.stdout)
print()
