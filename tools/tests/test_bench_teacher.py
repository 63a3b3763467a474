"""`logitcache-bench teacher`: both sides over the same windows, JSON results, argument errors."""

import json
import os

from tools_testing import TOOLS, run

REPO = os.path.dirname(TOOLS)


def test_json_reports_both_sides_on_the_same_tokens(bench):
    out = run(bench, "teacher", "--tokenizer", os.path.join(REPO, "Data/tokenizer.json"),
              "--corpus", os.path.join(REPO, "Data/corpus/eval.jsonl.zst"),
              "--windows", 3, "--batch", 2, "--context", 32, "--threads", 1, 2, "--repeats", 1, "--json").stdout
    r = json.loads(out)
    assert r["teacher"] == "random tiny" and r["context"] == 32 and r["k"] == 64
    assert [row["threads"] for row in r["results"]] == [1, 2]
    for row in r["results"]:
        assert row["tokens"] == 3 * 32  # every window is whole: the eval split is far longer
        assert row["bytesPerToken"] > 0
        for side in ("forward", "pass"):
            assert row[f"{side}Seconds"] > 0 and len(row[f"{side}Runs"]) == 1
            assert row[f"{side}TokensPerSecond"] == row["tokens"] / row[f"{side}Seconds"]
        assert abs(row["overhead"] - (row["passSeconds"] / row["forwardSeconds"] - 1)) < 1e-12


def test_a_random_shape_and_a_model_directory_are_refused_together(bench, tmp_path):
    p = run(bench, "teacher", "--model", tmp_path, "--shape", "smollm-135m", check=False)
    assert p.returncode != 0
    assert "--shape" in p.stderr and "--model" in p.stderr
    p = run(bench, "teacher", "--shape", "huge", check=False)
    assert p.returncode != 0 and "huge" in p.stderr
