#!/usr/bin/env python3
"""Writes the PyTorch reference that Tests/ModelsTests/TrainingParityTests.swift compares the
Swift training engine against: losses, every parameter's gradient and 20-step AdamW runs.

Run by hand (needs torch + transformers; CI only reads the committed output):

    /work/venv/bin/python tools/make_training_fixtures.py [OUT_DIR]

Two tiny LlamaForCausalLM models (untied and tied head, grouped-query attention) are built
with transformers, seeded, and saved with `save_pretrained` into OUT_DIR/llama_untied and
OUT_DIR/llama_tied. One fixed batch (B=2, T=8, some labels -1) and teacher targets in every
form the trainer reads (renormalised top-k, top-k with a tail bucket, sampled draws, dense)
go to batch.json. For each case (model, loss form, mixing) the reference is computed in
float64 with eager attention, the loss re-implemented here from the formula documented in
Sources/Kernels/Losses.swift (Eq. 7 of the paper):

    L = mean over rows with label != -1 of  (1-λ)·CE + λ·τ²·KD_τ + c_z·lse(z)²

(for the hard-label-only case, CE + c_z·lse²). reference.json holds, per case, the loss
parts, a summary of each parameter's gradient (L2 norm, max |g|, four ±1 projections over
the whole tensor, values at eight fixed indices) and a 20-step run of torch.optim.AdamW
(weight decay on 2-D tensors only, clip_grad_norm_ 1.0, linear warmup + cosine schedule):
loss and pre-clip gradient norm at every step and a summary of the final parameters.
gradients.safetensors holds one case's gradients in full. Seeded: reruns give the same bytes.

The script also repeats every run in float32 and records, per case, how far float32 PyTorch
lands from the float64 reference ("float32"): the floor below which no float32 engine can be
asked to match. A run that nearly memorises the batch (untied_ce) lets Adam amplify rounding
in its small late gradients, so its floor for gradient norms and final weights is ~1e-4.
"""
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "ModelsTests", "Fixtures", "training")

B, T, K = 2, 8, 8
STEPS = 20
OPTIMIZER = dict(lr=1e-2, min_lr=1e-3, warmup=3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, clip=1.0)
MODELS = {
    "llama_untied": dict(tie_word_embeddings=False),
    "llama_tied": dict(tie_word_embeddings=True),
}
# name: model, target form, λ, τ, c_z. The teacher targets of a form are made at that case's τ.
CASES = [
    ("untied_ce", "llama_untied", "none", 1.0, 1.0, 0.0),
    ("untied_topk", "llama_untied", "topk", 1.0, 1.0, 0.0),
    ("untied_tail", "llama_untied", "tail", 0.7, 1.0, 1e-3),
    ("untied_sampled", "llama_untied", "sampled", 0.5, 2.0, 0.0),
    ("untied_dense", "llama_untied", "dense", 0.9, 1.5, 1e-3),
    ("tied_ce", "llama_tied", "none", 1.0, 1.0, 1e-3),
    ("tied_tail", "llama_tied", "tail", 0.7, 1.0, 1e-3),
]
FULL_GRADIENTS = "untied_tail"  # the one case whose gradients are stored in full
SAMPLES = 8
PROJECTIONS = 4


def config(tie_word_embeddings):
    return LlamaConfig(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64,
                       rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=tie_word_embeddings,
                       attn_implementation="eager")


def randomize(model, generator):
    """O(1) logits and non-trivial norm scales, so every parameter's gradient matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                # Embeddings at 0.3 keep a tied head's logits O(1) as well.
                std = 0.3 if "embed" in name else 1.0 / math.sqrt(p.shape[1])
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64) * std)
            else:
                p.copy_(1.0 + torch.randn(p.shape, generator=generator, dtype=torch.float64) * 0.1)


def f32(x):
    """Values rounded to float32, the precision the Swift test reads them in."""
    return torch.as_tensor(np.asarray(x, dtype=np.float64)).to(torch.float32).reshape(-1)


def make_targets(generator, vocab, tau):
    """Teacher targets for R = B·T rows at temperature tau, in every form: ids, weights (R, K)
    with −1 in unused slots (rows keep K, K−1, K−2, K−3 entries in turn, sampled rows as many
    distinct ids as 6 to 50 draws give), tail (R); dense weights (R, V)."""
    R = B * T
    teacher = torch.randn((R, vocab), generator=generator, dtype=torch.float64) * 2.5
    q = torch.softmax(teacher / tau, dim=-1)
    top_p, top_i = torch.topk(q, K, dim=-1)
    kept = torch.arange(K)[None, :] < (K - torch.arange(R) % 4)[:, None]
    top_p, top_i = top_p * kept, torch.where(kept, top_i, -1)
    rest = (q.sum(-1) - top_p.sum(-1)).clamp_min(0)
    out = {
        "topk": dict(ids=top_i.reshape(-1), weights=f32(top_p / top_p.sum(-1, keepdim=True))),
        "tail": dict(ids=top_i.reshape(-1), weights=f32(top_p), tail=f32(rest)),
        "dense": dict(weights=f32(q)),
    }
    ids, weights = [], []
    for r in range(R):
        draws = torch.multinomial(q[r], 6 + 11 * (r % 5), replacement=True, generator=generator)
        unique, counts = torch.unique(draws, return_counts=True)
        order = torch.argsort(counts, descending=True, stable=True)[:K]  # ≤ K distinct ids kept
        ids += unique[order].tolist() + [-1] * (K - len(order))
        weights += (counts[order].double() / counts[order].sum()).tolist() + [0.0] * (K - len(order))
    out["sampled"] = dict(ids=torch.tensor(ids), weights=f32(weights))
    return out


def loss_fn(logits, labels, form, targets, lam, tau, z_loss, dtype):
    """Mean over labelled rows of Eq. 7, as documented in Losses.swift; returns (total, ce, kd)."""
    V = logits.shape[-1]
    z = logits.reshape(-1, V)
    y = labels.reshape(-1)
    rows = (y >= 0).nonzero().reshape(-1)
    z, yy = z[rows], y[rows]
    lse = torch.logsumexp(z, -1)
    ce = lse - z.gather(1, yy[:, None])[:, 0]
    zeros = torch.zeros_like(ce)
    if form == "none":
        kd, total = zeros, ce + z_loss * lse ** 2
    else:
        log_s = torch.log_softmax(z / tau, -1)
        if form == "dense":
            qd = targets["weights"].to(dtype).reshape(-1, V)[rows]
            kd = -(qd * log_s).sum(-1)
        else:
            ids = targets["ids"].reshape(-1, K)[rows]
            w = targets["weights"].to(dtype).reshape(-1, K)[rows]
            valid = ids >= 0
            picked = log_s.gather(1, ids.clamp_min(0))
            kd = -(torch.where(valid, w * picked, torch.zeros_like(picked))).sum(-1)
            if form == "tail":
                t = targets["tail"].to(dtype)[rows]
                # Unused slots scatter into an extra column, so they cannot unmark a real id 0.
                slots = torch.where(valid, ids, V)
                covered = torch.zeros((len(rows), V + 1), dtype=torch.bool).scatter(1, slots, True)[:, :V]
                log_tail = torch.logsumexp(log_s.masked_fill(covered, -math.inf), -1)
                kd = kd - t * log_tail
        total = (1 - lam) * ce + lam * tau * tau * kd + z_loss * lse ** 2
    n = len(rows)
    return total.sum() / n, ce.sum() / n, kd.sum() / n


def sign(i, p):
    """±1 pattern of projection p at flat index i (integer hash, identical in the Swift test)."""
    return 1 - 2 * (((i * 2654435761 + (p + 1) * 40503) >> 13) & 1)


def sample_indices(n):
    """Fixed indices spread over a tensor of n values (identical in the Swift test)."""
    return [(s * 7919 + s * s * 131) % n for s in range(SAMPLES)]


def rounded(x):
    """10 significant digits: far below every tolerance, half the bytes of a full repr."""
    return float(f"{x:.10g}")


def summary(x, full=True):
    """Norm, and for gradients max |x|, ±1 projections and sampled values; for parameters
    the first values."""
    x = x.detach().to(torch.float64).reshape(-1).numpy()
    n = len(x)
    out = dict(norm=rounded(np.sqrt((x * x).sum())))
    if not full:
        return dict(out, first=[rounded(v) for v in x[:4]])
    idx = np.arange(n, dtype=np.int64)
    return dict(out, max=rounded(np.abs(x).max()),
                projections=[rounded((sign(idx, p) * x).sum()) for p in range(PROJECTIONS)],
                values=[rounded(x[i]) for i in sample_indices(n)])


def load(directory, dtype):
    model = LlamaForCausalLM.from_pretrained(directory, dtype=dtype, attn_implementation="eager")
    return model.train()  # no dropout in Llama; train() only for autograd


def named(model):
    """HF parameter names as the safetensors file lists them (tied head appears once)."""
    return list(model.named_parameters())


def schedule(t):
    o = OPTIMIZER
    if t < o["warmup"]:
        return o["lr"] * (t + 1) / o["warmup"]
    progress = (t - o["warmup"]) / max(1, STEPS - o["warmup"])
    return o["min_lr"] + 0.5 * (1 + math.cos(math.pi * progress)) * (o["lr"] - o["min_lr"])


def run_case(directory, form, targets, lam, tau, z_loss, tokens, labels, dtype):
    model = load(directory, dtype)
    out = model(input_ids=tokens).logits
    total, ce, kd = loss_fn(out, labels, form, targets, lam, tau, z_loss, dtype)
    total.backward()
    result = dict(loss=float(total.detach()), crossEntropy=float(ce.detach()), distillation=float(kd.detach()),
                  gradients={n: p.grad.detach().clone() for n, p in named(model)})
    # Training from the same initial weights.
    model = load(directory, dtype)
    o = OPTIMIZER
    params = named(model)
    groups = [dict(params=[p for _, p in params if p.ndim == 2], weight_decay=o["weight_decay"]),
              dict(params=[p for _, p in params if p.ndim != 2], weight_decay=0.0)]
    opt = torch.optim.AdamW(groups, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"], foreach=False)
    losses, norms = [], []
    for t in range(STEPS):
        opt.zero_grad(set_to_none=True)
        total, _, _ = loss_fn(model(input_ids=tokens).logits, labels, form, targets, lam, tau, z_loss, dtype)
        total.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), o["clip"])
        for g in opt.param_groups:
            g["lr"] = schedule(t)
        opt.step()
        losses.append(float(total.detach()))
        norms.append(float(norm))
    result.update(steps=losses, gradientNorms=norms, final={n: p.detach().clone() for n, p in named(model)})
    return result


def main():
    torch.use_deterministic_algorithms(True)
    transformers.utils.logging.disable_progress_bar()
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    for seed, (name, kwargs) in enumerate(MODELS.items()):
        generator = torch.Generator().manual_seed(2000 + seed)
        model = LlamaForCausalLM(config(**kwargs)).to(torch.float32)
        randomize(model, generator)
        directory = os.path.join(OUT, name)
        model.save_pretrained(directory, safe_serialization=True)
        extra = os.path.join(directory, "generation_config.json")
        if os.path.exists(extra):
            os.remove(extra)

    generator = torch.Generator().manual_seed(2100)
    vocab = config(False).vocab_size
    tokens = torch.randint(0, vocab, (B, T), generator=generator)
    labels = torch.cat([tokens[:, 1:], torch.randint(0, vocab, (B, 1), generator=generator)], 1)
    labels[0, 3] = -1   # padding inside a window
    labels[1, T - 1] = -1  # and at its end
    batch = dict(batch=B, length=T, k=K, tokens=tokens.reshape(-1).tolist(), labels=labels.reshape(-1).tolist(),
                 cases=[], optimizer=dict(OPTIMIZER, steps=STEPS), samples=SAMPLES, projections=PROJECTIONS,
                 torch=torch.__version__, transformers=transformers.__version__)
    reference, full, stored = {}, {}, {}
    worst = {}
    for index, (name, model_name, form, lam, tau, z_loss) in enumerate(CASES):
        targets = make_targets(torch.Generator().manual_seed(3000 + index), vocab, tau)[form] if form != "none" else None
        batch["cases"].append({"name": name, "model": model_name, "form": form, "lambda": lam, "tau": tau,
                               "zLoss": z_loss})
        for part, values in (targets or {}).items():
            stored[f"{name}.{part}"] = values.to(torch.float32).contiguous()  # ids exact in float32
        directory = os.path.join(OUT, model_name)
        ref = run_case(directory, form, targets, lam, tau, z_loss, tokens, labels, torch.float64)
        single = run_case(directory, form, targets, lam, tau, z_loss, tokens, labels, torch.float32)
        floor = dict(loss=abs(single["loss"] - ref["loss"]) / abs(ref["loss"]),
                     gradient=max(float(((single["gradients"][n].double() - g) ** 2).sum() / (g * g).sum())
                                  for n, g in ref["gradients"].items()),
                     step=max(abs(a - b) / abs(b) for a, b in zip(single["steps"], ref["steps"])),
                     gradientNorm=max(abs(a - b) / b for a, b in zip(single["gradientNorms"], ref["gradientNorms"])),
                     final=max(float((single["final"][n].double() - p).abs().max()) for n, p in ref["final"].items()))
        for key, value in floor.items():
            worst[key] = max(worst.get(key, 0.0), value)
        reference[name] = dict(float32=floor, loss=ref["loss"], crossEntropy=ref["crossEntropy"], distillation=ref["distillation"],
                               gradients={n: summary(g) for n, g in ref["gradients"].items()},
                               steps=ref["steps"], gradientNorms=[rounded(x) for x in ref["gradientNorms"]],
                               final={n: summary(p, full=False) for n, p in ref["final"].items()})
        if name == FULL_GRADIENTS:
            full = {n: g.to(torch.float32).contiguous() for n, g in ref["gradients"].items()}
        print(f"{name}: loss {ref['loss']:.6f} -> {ref['steps'][-1]:.6f} after {STEPS} steps, "
              f"pre-clip norms {min(ref['gradientNorms']):.3f}..{max(ref['gradientNorms']):.3f}, float32 floors "
              + ", ".join(f"{k} {v:.1e}" for k, v in floor.items()))
    with open(os.path.join(OUT, "batch.json"), "w") as f:
        json.dump(batch, f, separators=(",", ":"))
    save_file(stored, os.path.join(OUT, "targets.safetensors"))
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(dict(cases=reference, fullGradients=FULL_GRADIENTS), f, separators=(",", ":"))
    save_file(full, os.path.join(OUT, "gradients.safetensors"), metadata={"case": FULL_GRADIENTS})
    size = sum(os.path.getsize(os.path.join(root, x)) for root, _, files in os.walk(OUT) for x in files)
    print(f"float32 PyTorch vs float64, worst case: loss rel {worst['loss']:.2e}, gradient NSE {worst['gradient']:.2e}, "
          f"step loss rel {worst['step']:.2e}, pre-clip norm rel {worst['gradientNorm']:.2e}, "
          f"final weights max abs {worst['final']:.2e}")
    print(f"{OUT}: {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
