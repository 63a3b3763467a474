"""Distillation losses of the Swift trainer, in PyTorch, over the loader's batch tensors.

The loss is the paper's Eq. 7 as `Sources/Kernels/Losses.swift` computes it, per token row
whose label is not negative:

    L_row = (1 − λ)·CE + λ·τ²·KD_τ + c_z·lse(z)²

and `total` is the mean of L_row over those rows (the Swift trainer divides the summed rows
by their count). CE = lse(z) − z_y is the hard-label cross-entropy at τ = 1, lse(z) is the
log-partition of the raw logits (also at τ = 1, for the z-loss), and KD_τ is a cross-entropy
against the teacher targets of the student's softmax at temperature τ, s = softmax(z / τ):

    sparse ("renormalized", "sampled"):  KD = −Σ_i w_i log s_{id_i}
    sparse with tail ("tail"):           KD = −Σ_i w_i log s_{id_i} − t · log(Σ_{j ∉ ids} s_j)
    dense (`full_distillation_loss`):    KD = −Σ_{j: q_j > 0} q_j log s_j

Slots whose id is −1 are unused (their weights are never read). Without targets
(`mode=None`) the loss is CE + c_z·lse² and λ is ignored, as in the Swift kernel.

Semantics carried over from the Swift kernel, on purpose:

* The tail term is skipped where t = 0, and the student's uncovered mass is floored at the
  smallest normal double (`log ≥ −708.4`), so a row whose ids cover the whole vocabulary gives
  a finite loss. (The log of the uncovered mass is computed here by a masked logsumexp, which
  does not underflow where Swift's float32 sum of probabilities would.)
* The gradient with respect to z/τ is the kernel's `s − q`: the targets are taken to be a
  distribution (Σ w + t = 1, or Σ q = 1). Targets that miss one by rounding (float32 weights,
  quantised log-probs) change the reported value but not the gradient, exactly as in Swift;
  for normalised targets this is the gradient of the value.

One deliberate difference: at λ = 0 with targets, KD is not part of the loss (as in Swift),
but `distillation` still reports its value, where the Swift trainer logs 0.

All arithmetic is in float32 (float64 for float64 logits), whatever the logits' dtype; the
parts returned are float32 (float64) scalars and `total` is differentiable.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Literal, Mapping, NamedTuple, Optional

import torch
from torch import Tensor

__all__ = [
    "MODES",
    "LossParts",
    "Mode",
    "distillation_loss",
    "full_distillation_loss",
    "kind_of",
    "loss_from_batch",
]

Mode = Literal["renormalized", "tail", "sampled"]
Reduction = Literal["mean", "sum"]

#: The loader's target modes (`TargetMode` in Sources/StudentLoader/LoaderConfiguration.swift).
MODES = ("renormalized", "tail", "sampled")

# The Swift kernel floors the student's uncovered mass at Double.leastNormalMagnitude.
_LOG_TAIL_FLOOR = math.log(sys.float_info.min)  # −708.396… nats


class LossParts(NamedTuple):
    """A loss and its parts, reduced over the labelled rows (nats per token for "mean").

    total: scalar, the optimised loss (1 − λ)·CE + λ·τ²·KD + c_z·lse²; differentiable.
    cross_entropy: scalar, hard-label cross-entropy at τ = 1.
    distillation: scalar, KD against the targets at τ, without τ² (0 without targets).
    tokens: number of labelled rows the reduction ran over.
    """

    total: Tensor
    cross_entropy: Tensor
    distillation: Tensor
    tokens: int


def kind_of(mode: Optional[str]) -> str:
    """The loss kind a loader mode produces (`CacheSource.kind(of:)` in Swift).

    None -> "none" (hard labels only); "renormalized" and "sampled" -> "sparse" (weights sum
    to one over the row); "tail" -> "sparse_with_tail".

    Raises ValueError for any other mode.
    """
    if mode is None:
        return "none"
    if mode in ("renormalized", "sampled"):
        return "sparse"
    if mode == "tail":
        return "sparse_with_tail"
    raise ValueError(f"mode {mode!r} is not one of {MODES} or None")


def distillation_loss(
    logits: Tensor,
    labels: Tensor,
    target_ids: Optional[Tensor] = None,
    target_weights: Optional[Tensor] = None,
    tail_mass: Optional[Tensor] = None,
    *,
    mode: Optional[Mode] = None,
    lam: float = 1.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    reduction: Reduction = "mean",
) -> LossParts:
    """Eq. 7 against sparse teacher targets in the loader's layout (see the module docstring).

    Args:
        logits: [..., V] student logits (e.g. [B, T, V]); float32, bfloat16, float16 or float64.
        labels: [...] next-token ids in 0..<V; a negative label (the loader's −1, or −100)
            marks a row without a label: it contributes nothing and gets zero gradient.
        target_ids: [..., k] teacher token ids, −1 in unused slots. Required with a mode.
        target_weights: [..., k] target weights: renormalised probabilities ("renormalized"),
            exact teacher probabilities ("tail") or draw fractions count/N ("sampled").
        tail_mass: [...] teacher mass outside the row's ids, in [0, 1] ("tail" only).
        mode: the loader mode the targets come from, or None for hard labels only.
        lam: λ in [0, 1], weight of the distillation term (ignored when mode is None).
        temperature: τ > 0 applied to the student's logits in the distillation term; the
            targets are expected at τ already (the loader applies τ to them).
        z_loss: c_z >= 0, coefficient of lse(z)².
        reduction: "mean" over labelled rows (the Swift trainer's loss) or "sum".

    Returns:
        LossParts; each part is a scalar in nats (per labelled token for "mean"). With no
        labelled row every part is 0 and the gradient is zero.

    Raises:
        ValueError naming the argument: a shape that does not match `logits`, an unknown
        mode, targets missing for the mode (or given without one), an id or label >= V, or
        λ, τ, c_z out of range.

    Memory: a few [N, V] float32 temporaries for the N labelled rows (one logits copy; one
    more for τ != 1; one more in tail mode), never [N, k, V].
    """
    kind = kind_of(mode)
    if kind == "none":
        for name, value in (("target_ids", target_ids), ("target_weights", target_weights), ("tail_mass", tail_mass)):
            if value is not None:
                raise ValueError(f"{name} was given but mode is None (hard labels only); pass mode= one of {MODES}")
    else:
        if target_ids is None or target_weights is None:
            missing = "target_ids" if target_ids is None else "target_weights"
            raise ValueError(f"{missing} is required in mode {mode!r}")
        if kind == "sparse_with_tail" and tail_mass is None:
            raise ValueError("tail_mass is required in mode 'tail'")
        if kind == "sparse" and tail_mass is not None:
            raise ValueError(f"tail_mass is only read in mode 'tail', not {mode!r}")
    return _loss(logits, labels, kind, target_ids, target_weights, tail_mass, None,
                 lam, temperature, z_loss, reduction)


def full_distillation_loss(
    logits: Tensor,
    labels: Tensor,
    teacher_probs: Tensor,
    *,
    lam: float = 1.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    reduction: Reduction = "mean",
) -> LossParts:
    """Eq. 7 against a dense teacher distribution (the Swift `.dense` kind, online teacher).

    Args:
        logits: [..., V] student logits.
        labels: [...] next-token ids, negative for rows without a label.
        teacher_probs: [..., V] teacher probabilities at τ (summing to one over V); entries
            <= 0 contribute nothing to the value.
        lam, temperature, z_loss, reduction: as in `distillation_loss`.

    Returns and raises as `distillation_loss`.
    """
    return _loss(logits, labels, "dense", None, None, None, teacher_probs, lam, temperature, z_loss, reduction)


def loss_from_batch(
    logits: Tensor,
    batch: Mapping[str, Any],
    *,
    mode: Optional[Mode],
    lam: float = 1.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    reduction: Reduction = "mean",
) -> LossParts:
    """`distillation_loss` on one loader batch.

    `batch` maps `labels` [B, T], `target_ids` [B, T, k], `target_weights` [B, T, k] and, for
    mode "tail", `tail_mass` [B, T] (the numpy loader's key `tail` is accepted too) to tensors
    or numpy arrays; they are moved to `logits`' device. Other keys (`input_ids`,
    `entry_counts`, ...) are not read: unused slots are the ids −1. `mode` must be the mode
    the loader was built with (a batch does not record it); None uses the labels only.

    Raises ValueError naming a missing key, and whatever `distillation_loss` raises.
    """
    def get(key: str, *aliases: str) -> Tensor:
        for name in (key, *aliases):
            if name in batch:
                return torch.as_tensor(batch[name], device=logits.device)
        raise ValueError(f"batch has no {key!r} (needed by mode {mode!r}); it holds {sorted(batch)}")

    labels = get("labels")
    kind = kind_of(mode)
    if kind == "none":
        return distillation_loss(logits, labels, mode=None, lam=lam, temperature=temperature,
                                 z_loss=z_loss, reduction=reduction)
    tail = get("tail_mass", "tail") if kind == "sparse_with_tail" else None
    return distillation_loss(logits, labels, get("target_ids"), get("target_weights"), tail, mode=mode,
                             lam=lam, temperature=temperature, z_loss=z_loss, reduction=reduction)


# -- implementation ---------------------------------------------------------------------------


def _check_tensor(name: str, x: Any, shape: tuple, device: torch.device, integer: bool) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, not {type(x).__name__}")
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {shape}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device}, logits on {device}")
    if integer and (x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool):
        raise ValueError(f"{name} must hold integer ids, not {x.dtype}")
    if not integer and x.dtype.is_complex:
        raise ValueError(f"{name} must be real, not {x.dtype}")
    return x


def _check_settings(lam: float, temperature: float, z_loss: float, reduction: str) -> None:
    if not (isinstance(lam, (int, float)) and 0.0 <= lam <= 1.0):
        raise ValueError(f"lam {lam!r} must be a number in [0, 1]")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature {temperature!r} must be a finite number > 0")
    if not (isinstance(z_loss, (int, float)) and math.isfinite(z_loss) and z_loss >= 0):
        raise ValueError(f"z_loss {z_loss!r} must be a finite number >= 0")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction {reduction!r} must be 'mean' or 'sum'")


def _loss(logits, labels, kind, target_ids, target_weights, tail_mass, teacher_probs,
          lam, temperature, z_loss, reduction) -> LossParts:
    _check_settings(lam, temperature, z_loss, reduction)
    if not isinstance(logits, Tensor) or not logits.dtype.is_floating_point or logits.dim() < 1:
        raise ValueError("logits must be a floating-point torch.Tensor of shape [..., V]")
    V = logits.shape[-1]
    if V < 1:
        raise ValueError("logits has an empty vocabulary dimension")
    lead = tuple(logits.shape[:-1])
    device = logits.device
    _check_tensor("labels", labels, lead, device, integer=True)
    if kind in ("sparse", "sparse_with_tail"):
        if not isinstance(target_ids, Tensor) or target_ids.dim() != len(lead) + 1:
            shape = tuple(target_ids.shape) if isinstance(target_ids, Tensor) else type(target_ids).__name__
            raise ValueError(f"target_ids must be a tensor of shape {lead} + (k,), not {shape}")
        k = target_ids.shape[-1]
        _check_tensor("target_ids", target_ids, lead + (k,), device, integer=True)
        _check_tensor("target_weights", target_weights, lead + (k,), device, integer=False)
        if kind == "sparse_with_tail":
            _check_tensor("tail_mass", tail_mass, lead, device, integer=False)
    if kind == "dense":
        _check_tensor("teacher_probs", teacher_probs, lead + (V,), device, integer=False)

    # Compute in float32 at least (float64 stays float64).
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    y_all = labels.reshape(-1)
    rows = (y_all >= 0).nonzero().reshape(-1)                  # [N] labelled rows
    n = int(rows.numel())
    y = y_all.index_select(0, rows).long()                      # [N]
    if n and int(y.max()) >= V:
        raise ValueError(f"labels hold id {int(y.max())}, outside the vocabulary of {V}")
    # Padding rows are never read, so even non-finite logits there give zero gradient.
    z = logits.reshape(-1, V).index_select(0, rows).to(dtype)  # z [N, V]

    lse = torch.logsumexp(z, dim=-1)                            # [N] nats
    ce = lse - z.gather(1, y[:, None]).squeeze(1)               # [N] nats
    total = ce * (1.0 if kind == "none" else 1.0 - lam)
    if z_loss:
        total = total + z_loss * lse * lse
    if kind == "none":
        kd = torch.zeros_like(ce)
    elif lam == 0:
        # Reported for logging only; it does not enter the loss (the Swift kernel skips it and
        # logs 0).
        with torch.no_grad():
            kd, _ = _distillation(z.detach(), lse.detach(), rows, kind, target_ids, target_weights,
                                  tail_mass, teacher_probs, temperature, dtype)
    else:
        kd, kd_grad = _distillation(z, lse, rows, kind, target_ids, target_weights, tail_mass,
                                    teacher_probs, temperature, dtype)
        total = total + (lam * temperature * temperature) * kd_grad

    scale = 1.0 / max(n, 1) if reduction == "mean" else 1.0
    return LossParts(total.sum() * scale, ce.sum() * scale, kd.sum() * scale, n)


def _distillation(z, lse, rows, kind, target_ids, target_weights, tail_mass, teacher_probs, tau, dtype):
    """KD_τ per row, twice: its value, and the same value whose gradient w.r.t. z/τ is the
    Swift kernel's s − q (see the module docstring).

    z [N, V] logits of the labelled rows, lse [N] their log-partition at τ = 1 -> ([N], [N]).
    """
    N, V = z.shape
    u = z if tau == 1 else z / tau                              # u [N, V] = z / τ
    lse_t = lse if tau == 1 else torch.logsumexp(u, dim=-1)     # [N]
    if kind == "dense":
        q = teacher_probs.reshape(-1, V).index_select(0, rows).to(dtype)  # q [N, V]
        positive = q > 0
        log_s = u - lse_t[:, None]
        # Entries with q <= 0 are left out, so a −inf logit where q = 0 costs nothing.
        kd = -torch.where(positive, q * log_s, torch.zeros((), dtype=dtype, device=z.device)).sum(-1)
        mass = torch.where(positive, q, 0).sum(-1)
    else:
        k = target_ids.shape[-1]
        ids = target_ids.reshape(-1, k).index_select(0, rows).long()      # [N, k], −1 unused
        if ids.numel() and int(ids.max()) >= V:
            raise ValueError(f"target_ids hold id {int(ids.max())}, outside the vocabulary of {V}")
        valid = ids >= 0
        w = target_weights.reshape(-1, k).index_select(0, rows).to(dtype)  # [N, k]
        w = torch.where(valid, w, 0)
        picked = u.gather(1, ids.clamp_min(0)) - lse_t[:, None]           # log s at the ids [N, k]
        kd = -torch.where(valid, w * picked, 0).sum(-1)
        mass = w.sum(-1)
        if kind == "sparse_with_tail":
            t = tail_mass.reshape(-1).index_select(0, rows).to(dtype)      # [N]
            # Covered ids; unused slots go to an extra column, so they cannot cover id 0.
            slots = torch.where(valid, ids, V)
            covered = torch.zeros((N, V + 1), dtype=torch.bool, device=z.device).scatter_(1, slots, True)[:, :V]
            # log Σ_{j ∉ ids} s_j. Covered entries are filled with the lowest finite value rather
            # than −inf, so a fully covered row has a finite logsumexp and gradient.
            lowest = torch.finfo(dtype).min
            log_tail = torch.logsumexp(u.masked_fill(covered, lowest), dim=-1) - lse_t
            active = (t > 0) & (log_tail > _LOG_TAIL_FLOOR)
            floored = torch.full_like(log_tail, _LOG_TAIL_FLOOR)
            kd = kd - torch.where(t > 0, t * torch.where(active, log_tail, floored), 0)
            # Where the floor holds, the term is a constant (the Swift kernel's gradient is
            # non-finite there); elsewhere t is part of the target's mass.
            mass = mass + torch.where(active, t, 0)
    # kd's gradient w.r.t. u is mass·s − q; the kernel's is s − q. Adding (1 − mass)·lse_τ with
    # its value cancelled changes the gradient only.
    kd_grad = kd + (1 - mass.detach()) * (lse_t - lse_t.detach())
    return kd, kd_grad
