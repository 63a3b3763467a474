"""End to end: `logitcache demo --quick` on the built-in data writes a report that matches
Schemas/report.schema.json, a rerun reuses the teacher pass and every student, and a rerun
with other settings is refused."""

import json
import os

import jsonschema

from tools_testing import TOOLS, run

SCHEMA = os.path.join(TOOLS, os.pardir, "Schemas", "report.schema.json")
ROOT = os.path.abspath(os.path.join(TOOLS, os.pardir))


def test_quick_demo_writes_a_valid_report_and_resumes(lc_bin, tmp_path):
    out = tmp_path / "demo"
    first = run(lc_bin, "demo", "--quick", "--out", out, "--data", os.path.join(ROOT, "Data"))
    report = json.loads((out / "report.json").read_text())
    with open(SCHEMA) as f:
        jsonschema.validate(report, json.load(f))
    for name in ["report.md", "ce_vs_k.svg", "ce_vs_bytes.svg", "compute_vs_students.svg"]:
        assert (out / name).stat().st_size > 200, name
    policies = sorted({r["setting"]["policy"] for r in report["results"]})
    assert policies == ["ce", "topk"]
    # Every student trained the same number of tokens; the teacher beats every student.
    tokens = {r["tokens"] for r in report["results"]}
    assert len(tokens) == 1 and tokens.pop() > 0
    teacher_ce = report["teacherPass"]["teacherEval"]["crossEntropy"]
    assert all(r["evaluation"]["crossEntropy"] > teacher_ce for r in report["results"])
    # k=16 reads a bigger cache than k=1.
    by_k = {r["setting"]["k"]: r["cacheBytesPerToken"] for r in report["results"] if r["setting"]["policy"] == "topk"}
    assert by_k[16] > by_k[1] > 0
    assert "eval CE" in first.stdout and "report:" in first.stdout
    # Predicted vs observed: the baseline against Eq. 1 (built-in coefficients), students against Eq. 8.
    rows = {r["name"]: r for r in report["law"]["rows"]}
    assert rows["ce"]["law"] == "Eq. 1" and rows["ce"]["predicted"] > 0
    assert rows["ce"]["observed"] == report["groups"][0]["evalCrossEntropy"]
    # The paper's Eq. 8 (Table 6) predicts one loss for every distilled student: it has no truncation term.
    distilled = [r for n, r in rows.items() if n != "ce"]
    assert all(r["law"] == "Eq. 8" for r in distilled)
    assert len({r["predicted"] for r in distilled}) == 1 and distilled[0]["predicted"] > report["law"]["teacherLoss"]
    # Measured compute: the teacher pass plus each cache student, cumulative.
    measured = [m["cachedFLOPs"] for m in report["measuredCompute"] if "cachedFLOPs" in m]
    assert measured[0] > report["teacherPass"]["flops"] and measured == sorted(measured)
    assert "Scaling law: predicted vs observed" in (out / "report.md").read_text()

    again = run(lc_bin, "demo", "--quick", "--out", out, "--data", os.path.join(ROOT, "Data"))
    assert "reusing" in again.stderr and again.stderr.count("finished earlier") == len(report["results"])
    assert json.loads((out / "report.json").read_text())["results"] == report["results"]

    # The full demo into the quick demo's directory wants another teacher pass (K=64 and
    # samples): refused before anything is touched, naming what differs.
    before = (out / "report.json").read_bytes()
    other = run(lc_bin, "demo", "--out", out, "--data", os.path.join(ROOT, "Data"), check=False)
    assert other.returncode != 0 and "capture settings" in other.stderr
    assert (out / "report.json").read_bytes() == before
