"""`logitcache law predict` with the built-in Table 6 coefficients and with a supervised-only file."""

import json
from decimal import Decimal as D, getcontext

from tools_testing import run


def paper_laws(ns, ds, lt):
    """Eq. 1 and Eq. 8 of Busbridge et al. (2025) with their Table 6 coefficients, in 40-digit decimals."""
    getcontext().prec = 40
    ns, ds, lt = D(ns), D(ds), D(lt)
    sup = D("1.220") + (D(3355) / ns ** D("0.408") + D(18186) / ds ** D("0.431")) ** D("0.452")
    gap = (1 + (lt / (sup * D("1.315"))) ** (1 / D("0.090"))) ** (-D("522.6") * D("0.090"))
    learn = (D(2243) / ns ** D("0.321") + D(24181) / ds ** D("0.637")) ** D("0.764")
    return float(sup), float(lt + lt ** -D("2.549") * gap * learn)


def test_builtin_coefficients_predict_both_laws(lc_bin):
    out = json.loads(run(lc_bin, "law", "predict", "--ns", "125M", "--ds", "2.5B", "--lt", 2.4, "--json").stdout)
    sup, dist = paper_laws(125_000_000, 2_500_000_000, "2.4")
    assert out["coefficientsSource"] == "Busbridge et al. 2025, Table 6"
    assert abs(out["supervisedStudentLoss"] - sup) < 1e-9
    assert abs(out["distilledStudentLoss"] - dist) < 1e-9
    assert out["coefficients"]["distillation"]["c1"] == 522.6


def test_a_supervised_only_file_predicts_no_distilled_loss(lc_bin, tmp_path):
    f = tmp_path / "law.json"
    f.write_text(json.dumps({"supervised": {"E": 1.5, "A": 400, "B": 900, "alpha": 0.3, "beta": 0.3, "gamma": 1.0}}))
    out = json.loads(run(lc_bin, "law", "predict", "--ns", "1M", "--ds", "20M", "--lt", 3, "--coefficients", f, "--json").stdout)
    assert out["distilledStudentLoss"] is None and out["coefficientsSource"] == str(f)
    assert abs(out["supervisedStudentLoss"] - (1.5 + 400 / 1e6 ** 0.3 + 900 / 2e7 ** 0.3)) < 1e-9
    text = run(lc_bin, "law", "predict", "--ns", "1M", "--ds", "20M", "--lt", 3, "--coefficients", f).stdout
    assert f'unavailable — {f} has no "distillation" coefficients' in text


def test_fit_distillation_recovers_the_papers_law_from_runs_made_outside_swift(lc_bin, tmp_path):
    """`law fit --distillation`: runs generated here by paper_laws (decimal arithmetic, not the
    Swift law) with Table 6's coefficients; the fit must reproduce every run, recover the
    coefficients the runs determine, and its JSON must feed `law predict --coefficients`."""
    lines = []
    for ns in (1e8, 1e9, 1e10, 1e11):
        for ds in (1e7, 1e8, 1e9, 1e10, 1e11, 1e12):
            sup, _ = paper_laws(ns, ds, "1")
            for x in ("0.5", "0.6", "0.7", "0.75", "0.8", "0.85", "0.9", "1.0", "1.2"):
                lt = D(x) * D("1.315") * D(repr(sup))
                lines.append(json.dumps({"N": ns, "D": ds, "teacher_loss": float(lt), "loss": paper_laws(ns, ds, lt)[1]}))
    runs = tmp_path / "distillation.jsonl"
    runs.write_text("\n".join(lines) + "\n")
    fitted = run(lc_bin, "law", "fit", "--distillation", runs, "--bootstrap", 0, "--json").stdout
    out = json.loads(fitted)
    assert len(out["runs"]) == 216 and out["maxRelativeError"] < 1e-5
    c = out["distillation"]
    for name, want in (("c0", 2.549), ("alpha", 0.321), ("beta", 0.637), ("gamma", 0.764), ("A", 2243), ("B", 24181)):
        assert abs(c[name] - want) <= 0.005 * want, (name, c[name])
    assert abs(c["f1"] - 0.090) <= 0.03 * 0.090
    assert out["heldOut"]["heldOutFromN"] == 1e11 and out["heldOut"]["maxRelativeError"] < 1e-4
    f = tmp_path / "fit.json"
    f.write_text(fitted)
    pred = json.loads(run(lc_bin, "law", "predict", "--ns", "3e9", "--ds", "3e10", "--lt", 2.3, "--coefficients", f, "--json").stdout)
    assert abs(pred["distilledStudentLoss"] - paper_laws(3e9, 3e10, "2.3")[1]) < 1e-4
    # Bad input is named: a line without teacher_loss, too few runs, nothing to fit.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"N": 1e8, "D": 1e9, "loss": 3}\n')
    p = run(lc_bin, "law", "fit", "--distillation", bad, check=False)
    assert p.returncode != 0 and 'line 1: missing "teacher_loss"' in p.stderr
    bad.write_text(lines[0] + "\n")
    p = run(lc_bin, "law", "fit", "--distillation", bad, check=False)
    assert p.returncode != 0 and "need at least 10 runs" in p.stderr
    p = run(lc_bin, "law", "fit", check=False)
    assert p.returncode != 0 and "--distillation" in p.stderr


def test_plan_is_no_worse_than_a_brute_force_search_done_here(lc_bin):
    """`law plan`: Eq. 1 and Eq. 8 written again here in numpy (not the Swift law), searched on a
    dense grid for the teacher-pretraining+inference scenario; the plan must spend the budget,
    its loss must be what this code computes at its point, and no grid point may beat it."""
    import numpy as np
    E, A, B, a, b, g = 1.220, 3355, 18186, 0.408, 0.431, 0.452
    c0, c1, d1, f1, A2, B2, a2, b2, g2 = 2.549, 522.6, 1.315, 0.090, 2243, 24181, 0.321, 0.637, 0.764

    def sup(n, d):
        return E + (A / n ** a + B / d ** b) ** g

    def dist(ns, ds, lt):
        gap = (1 + (lt / (sup(ns, ds) * d1)) ** (1 / f1)) ** (-c1 * f1)
        return lt + lt ** -c0 * gap * (A2 / ns ** a2 + B2 / ds ** b2) ** g2

    budget = 1e21
    out = json.loads(run(lc_bin, "law", "plan", "--budget", budget, "--scenario", "teacher-pretraining+inference", "--json").stdout)
    p = out["plan"]
    spent = p["studentFLOPs"] + p["teacherLogitFLOPs"] + p["teacherPretrainingFLOPs"] + p["cacheFLOPs"]
    assert abs(spent - budget) <= 1e-9 * budget
    assert abs(3 * 2 * p["NS"] * p["DS"] + 2 * p["NT"] * p["DS"] + 3 * 2 * p["NT"] * p["DT"] - budget) <= 1e-9 * budget
    assert abs(dist(p["NS"], p["DS"], sup(p["NT"], p["DT"])) - p["predictedLoss"]) < 1e-9
    ns = np.logspace(7, 12, 121)[:, None, None]
    nt = np.logspace(7, 12, 121)[None, :, None]
    share = np.linspace(0.01, 0.99, 99)[None, None, :]
    dt = share * budget / (3 * 2 * nt)
    ds = (1 - share) * budget / (3 * 2 * ns + 2 * nt)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        loss = dist(ns, ds, sup(nt, dt))
    loss = np.where(ds >= ns, loss, np.inf)
    assert p["predictedLoss"] <= np.nanmin(loss) + 1e-6
    # The supervised alternative: Eq. 1's best N on the same budget.
    n = np.logspace(7, 12, 5001)
    assert abs(p["supervisedLoss"] - sup(n, budget / (6 * n)).min()) < 1e-6
    assert out["distillationWins"] is (p["predictedLoss"] < p["supervisedLoss"])
