"""Shared fixtures for the Python reader's cross-checks: the Swift binary, synth and dump."""

import json
import os
import subprocess
import sys

import pytest

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOOLS)


def logitcache_bin() -> str:
    path = os.environ.get("LOGITCACHE_BIN")
    if not path:
        path = os.path.join(TOOLS, os.pardir, ".build", "release", "logitcache")
    return path


@pytest.fixture(scope="session")
def lc_bin():
    path = logitcache_bin()
    if not os.access(path, os.X_OK):
        pytest.fail(f"no logitcache binary at {path}: set LOGITCACHE_BIN (tools/test does)")
    return path


def run(binary, *args, check=True):
    proc = subprocess.run([binary, *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"logitcache {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def synth(binary, out, *args):
    run(binary, "synth", out, *args)
    return str(out)


def swift_dump(binary, cache):
    """`logitcache dump --json`: one JSON object per sequence."""
    out = run(binary, "dump", cache, "--json").stdout
    # "-0" (a quantised log-prob of exactly 0 is -0.0) must stay a negative zero, not int 0.
    parse_int = lambda text: -0.0 if text == "-0" else int(text)
    return [json.loads(line, parse_int=parse_int) for line in out.splitlines() if line.strip()]
