"""Helpers of the tools scripts' tests: paths and the Swift `logitcache` binary's commands.

Imported as `tools_testing` (not `conftest`: python/tests has a conftest of its own, and pytest
keeps only one module named `conftest`)."""

import os
import subprocess
import sys

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)  # the scripts under test (format_floor, cache_vs_parquet, ...)


def logitcache_bin() -> str:
    """`$LOGITCACHE_BIN`, else `<repo>/.build/release/logitcache`."""
    return os.environ.get("LOGITCACHE_BIN") or os.path.join(TOOLS, os.pardir, ".build", "release", "logitcache")


def bench_bin() -> str:
    """`logitcache-bench` beside the `logitcache` binary (the same build makes both)."""
    return os.path.join(os.path.dirname(logitcache_bin()), "logitcache-bench")


def run(binary, *args, check=True):
    proc = subprocess.run([binary, *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"logitcache {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def synth(binary, out, *args):
    run(binary, "synth", out, *args)
    return str(out)
