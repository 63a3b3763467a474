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
