"""Real DDP runs under torchrun (gloo on CPU, loopback only): train on 2 ranks, checkpoint
the model and the loader state, resume on 1 rank and finish the epoch. Every window of the
epoch is trained on exactly once across the two runs, and every loss is finite."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from typing import Dict, List

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import logitcache  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "ddp_train.py")
# Children import the logitcache this test imports (the installed one, or a source tree on the path).
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(logitcache.__file__)))
TIMEOUT = 120
B, T, K, SEED = 4, 32, 8, 7


@pytest.fixture(scope="module")
def cache(lc_bin, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("ddp") / "cache"
    proc = subprocess.run([lc_bin, "synth", str(out), "--tokens", "9000", "--seq-len", "300",
                           "--vocab", "256", "--k", "16", "--block-tokens", "256", "--seed", "2"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return str(out)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, *args: str) -> None:
    """Runs ddp_train.py on `nproc` local ranks; kills the whole process group on timeout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "--max_restarts", "0",
           SCRIPT, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
               PYTHONPATH=os.pathsep.join(p for p in (PACKAGE, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail(f"torchrun timed out after {TIMEOUT} s:\n{out[-4000:]}")
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{out[-6000:]}"


def read_log(out, phase: str, rank: int) -> List[dict]:
    with open(os.path.join(out, f"{phase}-rank{rank}.jsonl")) as f:
        return [json.loads(line) for line in f]


def read_state(out, phase: str, rank: int) -> Dict:
    with open(os.path.join(out, f"{phase}-state-rank{rank}.json")) as f:
        return json.load(f)


def epoch_windows(cache: str) -> List[int]:
    """Every window index of the cache at context T (one stream's epoch holds each once)."""
    with logitcache.StudentLoader(cache, batch_size=B, context=T, k=K, seed=SEED, backend="pure") as l:
        ws = sorted(int(w) for b in l.take(l.batches_in_epoch) for w in b["windows"] if w >= 0)
    assert ws == list(range(len(ws)))
    return ws


@pytest.mark.parametrize("workers_a,workers_b", [(0, 2), (2, 0)])
def test_ddp_two_ranks_then_resume_on_one(cache, tmp_path, workers_a, workers_b):
    """2 ranks (with `workers_a` DataLoader workers each) train 3 steps and checkpoint; 1 rank
    (with `workers_b`) resumes from rank 0's checkpoint and finishes the epoch."""
    out = str(tmp_path)
    ck = os.path.join(out, "ck.pt")
    steps = 3
    common = ["--cache", cache, "--out", out, "--batch-size", str(B), "--context", str(T), "--k", str(K),
              "--seed", str(SEED)]
    torchrun(2, *common, "--workers", str(workers_a), "--phase", "a", "--steps", str(steps), "--save", ck)
    a = [read_log(out, "a", r) for r in range(2)]
    assert [len(x) for x in a] == [steps, steps]
    sa = [read_state(out, "a", r) for r in range(2)]
    assert sa[0] == sa[1], "every rank computes the same loader state"
    assert sa[0]["epoch"] == 0 and sa[0]["segments"][0]["worldSize"] == 2 * max(1, workers_a)

    torchrun(1, *common, "--workers", str(workers_b), "--phase", "b", "--resume", ck)
    b = read_log(out, "b", 0)
    assert b and [x["step"] for x in b] == list(range(steps + 1, steps + 1 + len(b)))
    assert read_state(out, "b", 0)["epoch"] == 1 and read_state(out, "b", 0)["segments"] == []

    seen = [w for log in (*a, b) for x in log for w in x["windows"]]
    assert all(x["epoch"] == 0 for log in (*a, b) for x in log)
    assert sorted(seen) == epoch_windows(cache), "no window repeated or skipped across the two runs"
    losses = [x["loss"] for log in (*a, b) for x in log]
    assert all(math.isfinite(v) for v in losses)
