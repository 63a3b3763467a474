"""Tests of logitcache.torch.losses against the Swift trainer's loss (Sources/Kernels/Losses.swift).

Three kinds of evidence:
* hand-computed rows and an independent per-row reference written from the definitions in
  plain Python floats, whose gradient is the Swift kernel's closed form (s − q at τ);
* properties: padding rows, unused slots, τ², tail mass 0, gradcheck, dtypes, bad arguments;
* parity with the training fixtures of Tests/ModelsTests/Fixtures/training (the float64
  PyTorch reference the Swift TrainingParityTests compare the Swift trainer against), run
  through transformers' LlamaForCausalLM and this module's loss.
"""

import json
import math
import pathlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from logitcache.torch.losses import (  # noqa: E402
    MODES,
    LossParts,
    distillation_loss,
    full_distillation_loss,
    kind_of,
    loss_from_batch,
)

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "Tests" / "ModelsTests" / "Fixtures" / "training"
LOG2 = math.log(2.0)


# -- an independent reference, one row at a time, in Python floats -----------------------------


def _softmax(x):
    m = max(x)
    e = [math.exp(v - m) for v in x]
    total = sum(e)
    return [v / total for v in e], m + math.log(total)


def reference_row(z, label, kind, ids, w, tail, dense, lam, tau, zl):
    """Value and gradient (w.r.t. z) of one labelled row, the value from the definitions of
    Eq. 7 and the gradient as the Swift kernel writes it: (1 − λ)(s − e_y) + 2 c_z lse s +
    λτ(s_τ − q), with q the row's target (for the tail: s_τ,j (1 − t/S_tail) outside the ids).
    ids/w: the valid slots only (distinct ids)."""
    V = len(z)
    s, lse = _softmax(z)
    ce = lse - z[label]
    lam_ce, lam_kd = (1.0, 0.0) if kind == "none" else (1.0 - lam, lam)
    a = lam_ce + 2 * zl * lse
    grad = [a * p for p in s]
    grad[label] -= lam_ce
    kd = 0.0
    if kind != "none":
        st, lse_t = _softmax([v / tau for v in z])
        log_st = [v / tau - lse_t for v in z]
        g = lam_kd * tau
        if kind == "dense":
            kd = -sum(q * l for q, l in zip(dense, log_st) if q > 0)
            for j in range(V):
                grad[j] += g * (st[j] - dense[j])
        else:
            kd = -sum(wi * log_st[i] for i, wi in zip(ids, w))
            f = 1.0
            if kind == "sparse_with_tail":
                uncovered = max(sum(st[j] for j in range(V) if j not in ids), sys.float_info.min)
                if tail > 0:
                    kd -= tail * math.log(uncovered)
                f = 1.0 - tail / uncovered
            for j in range(V):
                grad[j] += g * st[j] * (1.0 if j in ids else f)
            for i, wi in zip(ids, w):
                grad[i] -= g * wi
    value = lam_ce * ce + lam_kd * tau * tau * kd + zl * lse * lse
    return value, ce, kd, grad


def reference_loss(logits, labels, kind, ids=None, w=None, tail=None, dense=None, lam=1.0, tau=1.0, zl=0.0):
    """Mean over labelled rows of `reference_row`; returns (total, ce, kd, grad [..., V])."""
    V = logits.shape[-1]
    z_all = logits.detach().double().reshape(-1, V).tolist()
    y_all = labels.reshape(-1).tolist()
    grad = torch.zeros(len(y_all), V, dtype=torch.float64)
    rows = [r for r, y in enumerate(y_all) if y >= 0]
    total = ce = kd = 0.0
    for r in rows:
        if kind in ("sparse", "sparse_with_tail"):
            k = ids.shape[-1]
            rid = ids.reshape(-1, k)[r].tolist()
            rw = w.reshape(-1, k)[r].double().tolist()
            row_ids = [i for i in rid if i >= 0]
            row_w = [x for i, x in zip(rid, rw) if i >= 0]
        else:
            row_ids, row_w = [], []
        t = float(tail.reshape(-1)[r]) if tail is not None else 0.0
        q = dense.reshape(-1, V)[r].double().tolist() if dense is not None else None
        v, c, d, g = reference_row(z_all[r], y_all[r], kind, row_ids, row_w, t, q, lam, tau, zl)
        total, ce, kd = total + v, ce + c, kd + d
        grad[r] = torch.tensor(g, dtype=torch.float64)
    n = max(len(rows), 1)
    return total / n, ce / n, kd / n, (grad / n).reshape(logits.shape)


# -- random rows in the loader's layout ---------------------------------------------------------


def make_batch(seed, B=2, T=5, V=13, k=4, normalised=True, dtype=torch.float64):
    """Logits [B, T, V] (O(1)), labels with padding, and targets in every form: sparse ids
    (distinct, some rows with unused slots), renormalised / exact / sampled weights, tails,
    dense probabilities. `normalised=False` scales the weights off one (as rounding does)."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2).to(dtype)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, 1] = -1
    labels[B - 1, T - 1] = -1
    teacher = torch.softmax(torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2, -1)
    top_p, top_i = torch.topk(teacher, k, dim=-1)
    keep = torch.arange(k) < (k - torch.arange(B * T).reshape(B, T) % 3)[..., None]  # k, k-1, k-2 slots
    exact = torch.where(keep, top_p, 0.0)
    ids = torch.where(keep, top_i, -1)
    tail = 1.0 - exact.sum(-1)
    renorm = exact / exact.sum(-1, keepdim=True)
    counts = torch.randint(1, 9, (B, T, k), generator=g).double() * keep
    sampled = counts / counts.sum(-1, keepdim=True)
    if not normalised:
        wobble = 1.0 + 0.2 * torch.rand(B, T, 1, generator=g, dtype=torch.float64)
        renorm, exact, sampled, teacher = renorm * wobble, exact * wobble, sampled * wobble, teacher * wobble
    return dict(logits=logits, labels=labels, ids=ids, renorm=renorm, exact=exact, tail=tail,
                sampled=sampled, dense=teacher)


def run(d, mode, logits=None, **kw):
    """This module's loss for mode None / renormalized / tail / sampled / "full" on batch `d`."""
    z = d["logits"] if logits is None else logits
    if mode is None:
        return distillation_loss(z, d["labels"], **kw)
    if mode == "full":
        return full_distillation_loss(z, d["labels"], d["dense"], **kw)
    w = {"renormalized": d["renorm"], "tail": d["exact"], "sampled": d["sampled"]}[mode]
    return distillation_loss(z, d["labels"], d["ids"], w, d["tail"] if mode == "tail" else None, mode=mode, **kw)


def reference(d, mode, **kw):
    kind = "dense" if mode == "full" else kind_of(mode)
    w = {"renormalized": d["renorm"], "tail": d["exact"], "sampled": d["sampled"]}.get(mode)
    return reference_loss(d["logits"], d["labels"], kind, d["ids"], w, d["tail"] if mode == "tail" else None,
                          d["dense"] if mode == "full" else None, **kw)


ALL_MODES = [None, "renormalized", "tail", "sampled", "full"]


def grad_of(parts, x):
    (g,) = torch.autograd.grad(parts.total, x)
    return g


# -- hand-computed cases ------------------------------------------------------------------------


def test_two_class_example_by_hand():
    """V = 2, equal logits, label 0: CE = log 2; one-hot target on id 1 with λ = 1: KD = log 2,
    d/dz = s − q = (0.5, −0.5) (the Swift LossesTests example)."""
    z = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    parts = distillation_loss(z, torch.tensor([0]), torch.tensor([[1]]), torch.tensor([[1.0]]), mode="renormalized")
    assert parts.cross_entropy.item() == pytest.approx(LOG2, abs=1e-12)
    assert parts.distillation.item() == pytest.approx(LOG2, abs=1e-12)
    assert parts.total.item() == pytest.approx(LOG2, abs=1e-12)
    assert parts.tokens == 1
    assert grad_of(parts, z)[0].tolist() == pytest.approx([0.5, -0.5], abs=1e-12)


def test_tail_example_by_hand():
    """z = (0, log 2, 0): s = (1/4, 1/2, 1/4). Head {1} with w = 0.6, tail t = 0.4, label 0,
    λ = 0.5: KD = −0.6 log ½ − 0.4 log(¼ + ¼) = log 2, CE = log 4, total = ½ log 4 + ½ log 2.
    Gradient: ½(s − e_0) + ½·(s_1 − w, s_j (1 − t/S) elsewhere) = (−0.35, 0.2, 0.15)."""
    z = torch.tensor([[0.0, LOG2, 0.0]], dtype=torch.float64, requires_grad=True)
    parts = distillation_loss(z, torch.tensor([0]), torch.tensor([[1, -1]]), torch.tensor([[0.6, 7.0]], dtype=torch.float64),
                              torch.tensor([0.4], dtype=torch.float64), mode="tail", lam=0.5)
    assert parts.distillation.item() == pytest.approx(LOG2, abs=1e-12)
    assert parts.cross_entropy.item() == pytest.approx(2 * LOG2, abs=1e-12)
    assert parts.total.item() == pytest.approx(0.5 * 2 * LOG2 + 0.5 * LOG2, abs=1e-12)
    assert grad_of(parts, z)[0].tolist() == pytest.approx([-0.35, 0.2, 0.15], abs=1e-12)


def test_z_loss_by_hand_and_hard_labels_ignore_lambda():
    """V = 4, zero logits: lse = CE = log 4; with c_z = 0.1 the loss is log 4 + 0.1 log² 4 and
    the gradient (1 + 0.2 log 4)·¼ − e_y, whatever λ (hard labels only take λ = 0 of KD)."""
    L4 = math.log(4.0)
    for lam in (1.0, 0.3):
        z = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
        parts = distillation_loss(z, torch.tensor([2]), lam=lam, z_loss=0.1)
        assert parts.total.item() == pytest.approx(L4 + 0.1 * L4 * L4, abs=1e-12)
        assert parts.distillation.item() == 0.0
        expected = [(1 + 0.2 * L4) / 4] * 4
        expected[2] -= 1
        assert grad_of(parts, z)[0].tolist() == pytest.approx(expected, abs=1e-12)


# -- against the independent reference ----------------------------------------------------------


SETTINGS = [dict(lam=1.0, tau=1.0, zl=0.0), dict(lam=0.7, tau=2.0, zl=1e-3), dict(lam=0.4, tau=0.5, zl=1e-2)]


@pytest.mark.parametrize("normalised", [True, False], ids=["normalised", "weights-off-one"])
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"lam{s['lam']}-tau{s['tau']}-z{s['zl']}")
@pytest.mark.parametrize("mode", ALL_MODES, ids=str)
def test_value_and_gradient_match_the_row_reference(mode, setting, normalised):
    """Every part and the gradient equal the reference in float64, including weights that do
    not sum to one, where the gradient is the kernel's λτ(s − q), not that of the value."""
    d = make_batch(11, normalised=normalised)
    z = d["logits"].clone().requires_grad_(True)
    parts = run(d, mode, logits=z, lam=setting["lam"], temperature=setting["tau"], z_loss=setting["zl"])
    total, ce, kd, grad = reference(d, mode, **setting)
    assert parts.tokens == int((d["labels"] >= 0).sum())
    assert parts.total.item() == pytest.approx(total, rel=1e-12, abs=1e-12)
    assert parts.cross_entropy.item() == pytest.approx(ce, rel=1e-12)
    assert parts.distillation.item() == pytest.approx(kd, rel=1e-12, abs=1e-12)
    torch.testing.assert_close(grad_of(parts, z), grad, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("mode", ALL_MODES, ids=str)
def test_float32_logits_match_the_reference_to_float32_precision(mode):
    d = make_batch(12)
    z = d["logits"].float().requires_grad_(True)
    parts = run(d, mode, logits=z, lam=0.7, temperature=1.5, z_loss=1e-3)
    total, ce, kd, grad = reference(dict(d, logits=z.detach().double()), mode, lam=0.7, tau=1.5, zl=1e-3)
    assert parts.total.dtype == torch.float32
    assert parts.total.item() == pytest.approx(total, rel=2e-6)
    assert parts.distillation.item() == pytest.approx(kd, rel=2e-6, abs=1e-7)
    torch.testing.assert_close(grad_of(parts, z).double(), grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ALL_MODES, ids=str)
def test_gradcheck_float64(mode):
    """With normalised targets the kernel's gradient is the value's: finite differences agree."""
    d = make_batch(13, B=2, T=3, V=7, k=3)
    z = d["logits"].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: run(d, mode, logits=x, lam=0.6, temperature=1.7, z_loss=0.01).total,
                                    (z,), eps=1e-6, atol=1e-7, rtol=1e-5)


# -- properties ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES, ids=str)
def test_padding_rows_contribute_nothing(mode):
    """Rows with label −1 (even with NaN/inf logits and junk targets) change neither the loss
    nor other rows' gradients, get exactly zero gradient, and are not counted in the mean."""
    d = make_batch(14, B=1, T=6)
    base = run(d, mode, lam=0.6, temperature=1.3, z_loss=1e-3)
    padded = {key: torch.cat([v, v[:, :2]], 1) for key, v in d.items()}   # two more rows ...
    padded["labels"][0, 6:] = -1                                         # ... without labels
    padded["labels"][0, 7] = -100                                        # any negative label pads
    padded["logits"][0, 6, 0] = float("nan")
    padded["logits"][0, 7] = float("inf")
    padded["ids"][0, 6:] = 2
    padded["tail"][0, 6:] = 5.0
    z = padded["logits"].clone().requires_grad_(True)
    parts = run(padded, mode, logits=z, lam=0.6, temperature=1.3, z_loss=1e-3)
    assert parts.tokens == base.tokens == int((d["labels"] >= 0).sum())
    assert parts.total.item() == pytest.approx(base.total.item(), rel=1e-14)
    assert parts.distillation.item() == pytest.approx(base.distillation.item(), rel=1e-14, abs=1e-15)
    g = grad_of(parts, z)
    assert torch.equal(g[0, 6:], torch.zeros_like(g[0, 6:]))
    z0 = d["logits"].clone().requires_grad_(True)
    torch.testing.assert_close(g[:, :6], grad_of(run(d, mode, logits=z0, lam=0.6, temperature=1.3, z_loss=1e-3), z0),
                               rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("mode", ALL_MODES, ids=str)
def test_a_masked_logit_without_target_costs_nothing(mode):
    """A −inf logit (a token the student masks) where the teacher puts no weight, with unused
    slots pointing nowhere: finite loss and gradient, equal to the reference on the rest."""
    d = make_batch(24, V=9, k=3)
    d["labels"][d["labels"] == 0] = 1
    for key in ("renorm", "exact", "sampled"):
        d[key] = torch.where(d["ids"] == 0, 0.0, d[key])
    d["ids"] = torch.where(d["ids"] == 0, -1, d["ids"])
    d["dense"][..., 0] = 0.0
    d["logits"][..., 0] = float("-inf")
    z = d["logits"].clone().requires_grad_(True)
    parts = run(d, mode, logits=z, lam=0.6, temperature=1.5, z_loss=1e-3)
    g = grad_of(parts, z)
    assert torch.isfinite(parts.total) and torch.isfinite(g).all()
    finite = dict(d, logits=d["logits"][..., 1:], ids=d["ids"] - 1, dense=d["dense"][..., 1:],
                  labels=torch.where(d["labels"] >= 0, d["labels"] - 1, -1))
    finite["ids"][d["ids"] < 0] = -1
    assert parts.total.item() == pytest.approx(run(finite, mode, lam=0.6, temperature=1.5, z_loss=1e-3).total.item(),
                                               rel=1e-13)


@pytest.mark.parametrize("mode", ["renormalized", "tail", "sampled"])
def test_unused_slots_are_ignored(mode):
    """A slot with id −1 is never read, whatever its weight: same value and gradient as the row
    without that slot. In tail mode it does not cover id 0 either (id 0 gets a large logit so
    that covering it would change the tail a lot)."""
    d = make_batch(15)
    d["logits"][..., 0] += 4.0
    d["ids"][d["ids"] == 0] = 1  # keep id 0 uncovered (ids stay distinct enough for this check)
    key = {"renormalized": "renorm", "tail": "exact", "sampled": "sampled"}[mode]
    wide = dict(d, ids=torch.cat([d["ids"], torch.full_like(d["ids"][..., :1], -1)], -1),
                **{key: torch.cat([d[key], torch.full_like(d[key][..., :1], 3.0)], -1)})
    z1 = d["logits"].clone().requires_grad_(True)
    z2 = d["logits"].clone().requires_grad_(True)
    narrow, extra = run(d, mode, logits=z1, lam=0.8), run(wide, mode, logits=z2, lam=0.8)
    assert extra.total.item() == pytest.approx(narrow.total.item(), rel=1e-14)
    torch.testing.assert_close(grad_of(extra, z2), grad_of(narrow, z1), rtol=1e-13, atol=1e-15)
    if mode == "tail":   # sanity: covering id 0 does change the loss
        covered = dict(wide, ids=torch.where(wide["ids"] < 0, 0, wide["ids"]))
        assert abs(run(covered, mode, lam=0.8).total.item() - narrow.total.item()) > 1e-3


@pytest.mark.parametrize("tau", [0.5, 2.0, 3.0])
def test_temperature_scales_distillation_by_tau_squared(tau):
    """λ = 1: total = τ²·KD_τ with KD_τ = −Σ w log softmax(z/τ), and d total/dz = τ(s_τ − w)/N."""
    d = make_batch(16)
    z = d["logits"].clone().requires_grad_(True)
    parts = run(d, "renormalized", logits=z, temperature=tau)
    assert parts.total.item() == pytest.approx(tau * tau * parts.distillation.item(), rel=1e-14)
    valid = d["labels"] >= 0
    log_s = torch.log_softmax(d["logits"] / tau, -1)
    picked = log_s.gather(-1, d["ids"].clamp_min(0)) * (d["ids"] >= 0)
    kd = -(d["renorm"] * picked).sum(-1)[valid].mean()
    assert parts.distillation.item() == pytest.approx(kd.item(), rel=1e-12)
    q = torch.zeros_like(d["logits"]).scatter_add_(-1, d["ids"].clamp_min(0), d["renorm"] * (d["ids"] >= 0))
    expected = tau * (log_s.exp() - q) * valid[..., None] / valid.sum()
    torch.testing.assert_close(grad_of(parts, z), expected, rtol=1e-12, atol=1e-14)


def test_tail_mass_zero_is_exact_distillation():
    """A teacher whose mass lies on the k ids (tail 0): tail mode = renormalised mode = full
    distillation with the dense teacher, value and gradient; also with k = V ids (nothing
    uncovered, where the tail term must not produce NaN)."""
    d = make_batch(17, V=11, k=4)
    for k in (4, 11):
        top_p, top_i = torch.topk(d["dense"], k, dim=-1)
        p = top_p / top_p.sum(-1, keepdim=True)
        dense = torch.zeros_like(d["dense"]).scatter_(-1, top_i, p)
        case = dict(d, ids=top_i, exact=p, renorm=p, tail=torch.zeros_like(d["tail"]), dense=dense)
        results = []
        for mode in ("tail", "renormalized", "full"):
            z = d["logits"].clone().requires_grad_(True)
            parts = run(case, mode, logits=z, lam=0.7, temperature=1.4)
            results.append((parts.total.item(), parts.distillation.item(), grad_of(parts, z)))
        for total, kd, g in results[1:]:
            assert total == pytest.approx(results[0][0], rel=1e-13)
            assert kd == pytest.approx(results[0][1], rel=1e-13)
            torch.testing.assert_close(g, results[0][2], rtol=1e-12, atol=1e-14)
        assert torch.isfinite(results[0][2]).all()


def test_tail_floor_when_every_id_is_covered():
    """All V ids covered but a tail mass t > 0 left (rounding): the student's uncovered mass is
    floored at the smallest normal double as in Swift, KD gains −t·log(DBL_MIN), and the
    gradient stays finite (the term is constant there)."""
    V = 5
    z = torch.randn(1, V, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    ids = torch.arange(V)[None]
    w = torch.full((1, V), 0.199, dtype=torch.float64)
    t = torch.tensor([0.005], dtype=torch.float64)
    parts = distillation_loss(z, torch.tensor([0]), ids, w, t, mode="tail")
    head = -(w * torch.log_softmax(z.detach(), -1)).sum().item()
    assert parts.distillation.item() == pytest.approx(head - 0.005 * math.log(sys.float_info.min), rel=1e-12)
    g = grad_of(parts, z)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g, torch.softmax(z.detach(), -1) - w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", ALL_MODES, ids=str)
def test_bfloat16_logits_are_computed_in_float32(mode):
    d = make_batch(18, V=50, k=8)
    zb = (d["logits"] * 3).to(torch.bfloat16).requires_grad_(True)
    zf = zb.detach().float().requires_grad_(True)
    pb = run(d, mode, logits=zb, lam=0.7, temperature=2.0, z_loss=1e-3)
    pf = run(d, mode, logits=zf, lam=0.7, temperature=2.0, z_loss=1e-3)
    assert pb.total.dtype == torch.float32 and torch.isfinite(pb.total)
    assert pb.total.item() == pytest.approx(pf.total.item(), rel=1e-6)
    assert pb.distillation.item() == pytest.approx(pf.distillation.item(), rel=1e-6, abs=1e-7)
    gb, gf = grad_of(pb, zb), grad_of(pf, zf)
    assert gb.dtype == torch.bfloat16 and torch.isfinite(gb).all()
    torch.testing.assert_close(gb.float(), gf, rtol=1e-2, atol=1e-4)


def test_lambda_zero_optimises_hard_labels_and_still_reports_kd():
    d = make_batch(19)
    z = d["logits"].clone().requires_grad_(True)
    parts = run(d, "tail", logits=z, lam=0.0, z_loss=1e-3)
    hard = run(d, None, lam=0.0, z_loss=1e-3)
    assert parts.total.item() == pytest.approx(hard.total.item(), rel=1e-14)
    assert parts.distillation.item() == pytest.approx(reference(d, "tail")[2], rel=1e-12)
    z2 = d["logits"].clone().requires_grad_(True)
    torch.testing.assert_close(grad_of(parts, z), grad_of(run(d, None, logits=z2, z_loss=1e-3), z2))


def test_sum_reduction_and_a_batch_without_labels():
    d = make_batch(20)
    mean = run(d, "sampled", lam=0.5)
    total = run(d, "sampled", lam=0.5, reduction="sum")
    assert total.total.item() == pytest.approx(mean.total.item() * mean.tokens, rel=1e-13)
    assert total.cross_entropy.item() == pytest.approx(mean.cross_entropy.item() * mean.tokens, rel=1e-13)
    empty = dict(d, labels=torch.full_like(d["labels"], -1))
    z = d["logits"].clone().requires_grad_(True)
    parts = run(empty, "tail", logits=z, lam=0.5, z_loss=0.1)
    assert parts.tokens == 0
    assert parts.total.item() == 0.0 and parts.distillation.item() == 0.0
    assert torch.equal(grad_of(parts, z), torch.zeros_like(z))


def test_loss_from_batch_reads_the_loader_layout():
    """Loader batches as numpy (the numpy loader's `tail`, `counts` keys) or as tensors
    (`tail_mass`, `entry_counts`) give the same parts as distillation_loss."""
    d = make_batch(21, dtype=torch.float32)
    counts = (d["ids"] >= 0).sum(-1)
    numpy_batch = {"input_ids": np.zeros(d["labels"].shape, np.int32), "labels": d["labels"].numpy().astype(np.int32),
                   "target_ids": d["ids"].numpy().astype(np.int32), "target_weights": d["exact"].float().numpy(),
                   "tail": d["tail"].float().numpy(), "counts": counts.numpy().astype(np.int32)}
    torch_batch = {"input_ids": torch.zeros_like(d["labels"]), "labels": d["labels"], "target_ids": d["ids"],
                   "target_weights": d["exact"].float(), "tail_mass": d["tail"].float(), "entry_counts": counts}
    expected = distillation_loss(d["logits"], d["labels"], d["ids"], d["exact"].float(), d["tail"].float(),
                                 mode="tail", lam=0.7, temperature=1.2, z_loss=1e-3)
    for batch in (numpy_batch, torch_batch):
        parts = loss_from_batch(d["logits"], batch, mode="tail", lam=0.7, temperature=1.2, z_loss=1e-3)
        assert isinstance(parts, LossParts)
        assert parts.total.item() == pytest.approx(expected.total.item(), rel=1e-6)
        assert parts.distillation.item() == pytest.approx(expected.distillation.item(), rel=1e-6)
    renorm = loss_from_batch(d["logits"], dict(torch_batch, target_weights=d["renorm"].float()), mode="renormalized")
    assert renorm.total.item() == pytest.approx(run(d, "renormalized", logits=d["logits"]).total.item(), rel=1e-6)
    hard = loss_from_batch(d["logits"], {"labels": d["labels"]}, mode=None)
    assert hard.total.item() == pytest.approx(hard.cross_entropy.item())
    no_tail = {key: v for key, v in torch_batch.items() if key != "tail_mass"}
    with pytest.raises(ValueError, match="tail_mass"):
        loss_from_batch(d["logits"], no_tail, mode="tail")
    with pytest.raises(ValueError, match="target_ids"):
        loss_from_batch(d["logits"], {"labels": d["labels"]}, mode="sampled")


def _bad(**changes):
    d = make_batch(22)
    args = dict(logits=d["logits"], labels=d["labels"], target_ids=d["ids"], target_weights=d["renorm"],
                tail_mass=None, mode="renormalized")
    args.update(changes)
    return args


BAD_ARGUMENTS = [
    (dict(mode="topk"), "mode"),
    (dict(mode="tail"), "tail_mass"),
    (dict(mode=None), "target_ids"),
    (dict(target_ids=None), "target_ids"),
    (dict(target_weights=None), "target_weights"),
    (dict(tail_mass=torch.zeros(2, 5)), "tail_mass"),
    (dict(labels=torch.zeros(2, 4, dtype=torch.long)), "labels"),
    (dict(labels=torch.zeros(2, 5)), "labels"),
    (dict(target_ids=torch.zeros(2, 5, dtype=torch.long)), "target_ids"),
    (dict(target_ids=torch.zeros(2, 4, 4, dtype=torch.long)), "target_ids"),
    (dict(target_ids=torch.zeros(2, 5, 4)), "target_ids"),
    (dict(target_weights=torch.zeros(2, 5, 3, dtype=torch.float64)), "target_weights"),
    (dict(mode="tail", tail_mass=torch.zeros(2, 4)), "tail_mass"),
    (dict(target_ids=torch.full((2, 5, 4), 13)), "target_ids"),
    (dict(labels=torch.full((2, 5), 13)), "labels"),
    (dict(logits=torch.zeros(2, 5, 13, dtype=torch.long)), "logits"),
    (dict(lam=1.5), "lam"),
    (dict(lam=-0.1), "lam"),
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=float("inf")), "temperature"),
    (dict(z_loss=-1.0), "z_loss"),
    (dict(reduction="none"), "reduction"),
]


@pytest.mark.parametrize("changes,name", BAD_ARGUMENTS, ids=[f"{n}-{i}" for i, (_, n) in enumerate(BAD_ARGUMENTS)])
def test_bad_arguments_raise_value_error_naming_them(changes, name):
    args = _bad(**changes)
    with pytest.raises(ValueError, match=name):
        distillation_loss(args.pop("logits"), args.pop("labels"), args.pop("target_ids"), args.pop("target_weights"),
                          args.pop("tail_mass"), **args)


def test_full_loss_checks_teacher_probs_and_modes_map_to_kinds():
    d = make_batch(23)
    with pytest.raises(ValueError, match="teacher_probs"):
        full_distillation_loss(d["logits"], d["labels"], d["dense"][..., :-1])
    assert [kind_of(m) for m in (None, *MODES)] == ["none", "sparse", "sparse_with_tail", "sparse"]
    with pytest.raises(ValueError, match="mode"):
        kind_of("dense")


# -- parity with the Swift trainer's training fixtures ------------------------------------------

# Tolerances. Swift's TrainingParityTests allow: loss parts 1e-5 relative; per tensor, norm and
# ±1 projections within 3e-4·‖g‖, sampled values within 1e-4·max|g|; the stored case NSE <= 1e-7
# and max diff <= 1e-4·max|g|. This float32 run is held ~10x above what it measures (loss 1.5e-7,
# projections 2.3e-6·‖g‖, values 8.4e-7·max, NSE 5e-13, max 1e-6), well inside Swift's. The
# float64 run reproduces the reference's formula: the loss to 1e-12; its gradients differ by
# ~1e-7 because the fixture's targets are rounded to float32, so Σw + t misses 1 by ~1e-7 and
# the kernel's gradient (s − q) is not exactly the reference's autograd one (mass·s − q).
TOLERANCES = {
    torch.float32: dict(loss=1e-6, norm=2e-5, value=1e-5, nse=1e-10, worst=1e-5),
    torch.float64: dict(loss=1e-12, norm=2e-6, value=1e-6, nse=1e-12, worst=1e-6),
}
FORM_MODES = {"none": None, "topk": "renormalized", "tail": "tail", "sampled": "sampled", "dense": "full"}


def _fixture_cases():
    try:
        return [c["name"] for c in json.loads((FIXTURES / "batch.json").read_text())["cases"]]
    except OSError:
        return ["missing batch.json"]


def _sign(idx, p):
    """The ±1 pattern of make_training_fixtures.py's `sign`, over an index tensor."""
    return 1 - 2 * (((idx * 2654435761 + (p + 1) * 40503) >> 13) & 1)


def _fixture_run(name, dtype):
    transformers = pytest.importorskip("transformers")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    batch = json.loads((FIXTURES / "batch.json").read_text())
    case = next(c for c in batch["cases"] if c["name"] == name)
    B, T, K = batch["batch"], batch["length"], batch["k"]
    tokens = torch.tensor(batch["tokens"]).reshape(B, T)
    labels = torch.tensor(batch["labels"]).reshape(B, T)
    model = transformers.LlamaForCausalLM.from_pretrained(str(FIXTURES / case["model"]), dtype=dtype,
                                                          attn_implementation="eager").train()
    logits = model(input_ids=tokens).logits                         # [B, T, V]
    V = logits.shape[-1]
    stored = safetensors_torch.load_file(str(FIXTURES / "targets.safetensors"))
    mode = FORM_MODES[case["form"]]
    kw = dict(lam=case["lambda"], temperature=case["tau"], z_loss=case["zLoss"])
    if mode is None:
        parts = distillation_loss(logits, labels, **kw)
    elif mode == "full":
        parts = full_distillation_loss(logits, labels, stored[f"{name}.weights"].reshape(B, T, V), **kw)
    else:
        # The fixture stores ids as float32 (exact); the loader's layout is integer ids.
        ids = stored[f"{name}.ids"].reshape(B, T, K).to(torch.int32)
        weights = stored[f"{name}.weights"].reshape(B, T, K)
        tail = stored[f"{name}.tail"].reshape(B, T) if mode == "tail" else None
        parts = distillation_loss(logits, labels, ids, weights, tail, mode=mode, **kw)
    parts.total.backward()
    return parts, dict(model.named_parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", _fixture_cases())
def test_loss_and_every_gradient_match_the_training_fixture(name, dtype):
    reference = json.loads((FIXTURES / "reference.json").read_text())["cases"][name]
    samples = json.loads((FIXTURES / "batch.json").read_text())["samples"]
    tol = TOLERANCES[dtype]
    parts, params = _fixture_run(name, dtype)
    assert parts.tokens == sum(1 for y in json.loads((FIXTURES / "batch.json").read_text())["labels"] if y >= 0)
    assert parts.total.item() == pytest.approx(reference["loss"], rel=tol["loss"])
    assert parts.cross_entropy.item() == pytest.approx(reference["crossEntropy"], rel=tol["loss"])
    assert parts.distillation.item() == pytest.approx(reference["distillation"], rel=tol["loss"], abs=1e-30)
    assert set(params) == set(reference["gradients"])
    for pname, p in params.items():
        s = reference["gradients"][pname]
        g = p.grad.detach().double().reshape(-1)
        assert s["norm"] > 1e-6, f"{pname}: the reference gradient vanishes"
        assert abs(g.norm().item() - s["norm"]) <= tol["norm"] * s["norm"], pname
        idx = torch.arange(g.numel(), dtype=torch.int64)
        for p_index, expected in enumerate(s["projections"]):
            mine = (_sign(idx, p_index).double() * g).sum().item()
            assert abs(mine - expected) <= tol["norm"] * s["norm"], f"{pname} projection {p_index}"
        picks = [(i * 7919 + i * i * 131) % g.numel() for i in range(samples)]
        for i, expected in zip(picks, s["values"]):
            assert abs(g[i].item() - expected) <= tol["value"] * s["max"], f"{pname}[{i}]"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_stored_case_gradients_match_in_full(dtype):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    name = json.loads((FIXTURES / "reference.json").read_text())["fullGradients"]
    full = safetensors_torch.load_file(str(FIXTURES / "gradients.safetensors"))
    tol = TOLERANCES[dtype]
    _, params = _fixture_run(name, dtype)
    assert set(full) == set(params)
    for pname, p in params.items():
        g, ref = p.grad.detach().double(), full[pname].double()
        nse = ((g - ref) ** 2).sum() / (ref * ref).sum()
        assert nse.item() <= tol["nse"], f"{pname}: NSE {nse.item():.2e}"
        # The stored gradients are float32: half an ulp of the largest entry is 6e-8 of it.
        assert (g - ref).abs().max().item() <= tol["worst"] * ref.abs().max().item(), pname
