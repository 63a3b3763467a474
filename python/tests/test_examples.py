"""The worked examples run end to end on CPU: a plain training loop and a Hugging Face
`Trainer`, each training a tiny Llama student from a synthetic cache for a few steps."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from typing import Dict, List

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import logitcache  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")
# Children import the logitcache this test imports (the installed one, or a source tree on the path).
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(logitcache.__file__)))
TIMEOUT = 300


@pytest.fixture(scope="module")
def cache(lc_bin, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("examples") / "cache"
    proc = subprocess.run([lc_bin, "synth", str(out), "--tokens", "32768", "--seq-len", "512",
                           "--vocab", "256", "--k", "16", "--block-tokens", "1024", "--seed", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return str(out)


def run_example(name: str, *args: str) -> Dict[int, float]:
    """Runs examples/<name> and returns its `step N loss L` lines as {N: L}."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (PACKAGE, os.environ.get("PYTHONPATH")) if p))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], capture_output=True, text=True,
                          timeout=TIMEOUT, env=env)
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    losses = {int(m.group(1)): float(m.group(2))
              for m in re.finditer(r"^step (\d+) loss (\S+)", proc.stdout, re.MULTILINE)}
    assert "done:" in proc.stdout
    return losses


def check_learning(losses: Dict[int, float], steps: List[int]) -> None:
    assert sorted(losses) == steps
    values = [losses[s] for s in steps]
    assert all(math.isfinite(v) for v in values), values
    assert sum(values[-3:]) / 3 < values[0], f"the loss does not decrease: {values}"


def test_train_student_plain_loop(cache):
    losses = run_example("train_student.py", "--cache", cache, "--steps", "8", "--batch-size", "4", "--context", "64")
    check_learning(losses, list(range(1, 9)))


def test_hf_trainer_trains_and_resumes_from_its_checkpoint(cache, tmp_path):
    out = str(tmp_path / "run")
    common = ["--cache", cache, "--steps", "8", "--batch-size", "4", "--context", "64", "--out", out]
    whole = run_example("hf_trainer.py", *common, "--save-steps", "4")
    check_learning(whole, list(range(1, 9)))
    ckpt = os.path.join(out, "checkpoint-4")
    assert os.path.exists(os.path.join(ckpt, "logitcache_loader.json"))
    resumed = run_example("hf_trainer.py", *common, "--resume", ckpt)
    assert sorted(resumed) == [5, 6, 7, 8]
    # the loader continues with the very batches the uninterrupted run saw next
    for s in resumed:
        assert resumed[s] == pytest.approx(whole[s], abs=2e-4), (s, resumed, whole)
