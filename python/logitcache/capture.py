"""Teacher capture from PyTorch / transformers, on any device, into a cache.

`capture(model_dir, corpus, out, ...)` (and `python -m logitcache capture`) runs any
`transformers` causal LM over a corpus and writes its next-token distributions through the
native writer, with the Swift pass's corpus rules (`logitcache.corpus`: the same documents,
windows and partitions as `logitcache teacher`), policies and manifest.

The LM head never materialises [T, V] logits beyond one vocabulary tile: the model's last hidden
states [N, C] meet the output embedding [V, C] tile by tile (`vocab_tile` rows at a time), and
each tile updates a running top-K, a running logsumexp and the real next token's logit
(`TiledHead`). Sampled policies walk the tiles a second time for their inverse-CDF draws. The head
replicates what the model's own forward does after the decoder (bias, Gemma's final logit
soft-capping, Cohere's and Granite's logit scales); the first batch is checked against the
model's own logits and a head it does not reproduce is refused.

Policies (the Swift `Capturer`'s semantics): top-k; top-p (the shortest descending prefix whose
mass reaches p, at most K); sampled (draws with replacement from the whole distribution, kept as
distinct ids with counts, most drawn first); head-tail (an exact top-K head and draws from the
rest, renormalised); top-k+sampled (the head and draws from the whole distribution). Draws use
the Swift pass's counter-based stream: a position's draws depend on (seed, its position in the
corpus stream) only, so they do not change with batch size, device or a resumed run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from . import corpus as _corpus
from ._splitmix import INCREMENT, mix_array
from ._writer import CacheWriter
from .reader import CacheError

POLICIES = ("top-k", "top-p", "sampled", "head-tail", "top-k+sampled")


# -- the counter-based random stream of Sources/Capture/CounterRandom.swift

def counter_uniforms(seed: int, positions: np.ndarray, draws: int) -> np.ndarray:
    """[N, draws] uniforms in [0, 1) of `CounterRandom(seed, position)` for each position: the
    same doubles the Swift pass draws. positions: [N] corpus-stream positions."""
    with np.errstate(over="ignore"):
        s = np.uint64(seed) ^ np.uint64(0x6A09E667F3BCC909)
        state = mix_array(s + positions.astype(np.uint64) * np.uint64(INCREMENT))
        out = np.empty((len(positions), draws), np.float64)
        for j in range(draws):
            state = state + np.uint64(INCREMENT)
            out[:, j] = (mix_array(state) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return out


# -- policy

@dataclasses.dataclass(frozen=True)
class Policy:
    """What to capture: `name` of POLICIES, `k` head entries, `top_p`, `draws`."""

    name: str = "top-k"
    k: int = 64
    top_p: Optional[float] = None
    draws: int = 0

    def __post_init__(self):
        if self.name not in POLICIES:
            raise ValueError(f"policy {self.name!r} is not one of {', '.join(POLICIES)}")
        sampled = self.name in ("sampled", "head-tail", "top-k+sampled")
        if sampled != (self.draws > 0):
            raise ValueError(f"policy {self.name}: draws must be {'>= 1' if sampled else '0'}, got {self.draws}")
        if (self.name == "top-p") != (self.top_p is not None):
            raise ValueError("top_p is given exactly for the top-p policy")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p {self.top_p} must be in (0, 1]")
        if self.name != "sampled" and self.k < 1:
            raise ValueError(f"policy {self.name}: k {self.k} must be >= 1")
        if self.draws > 1 << 20:
            raise ValueError(f"draws {self.draws} must be <= 1048576")

    @property
    def head(self) -> int:
        return 0 if self.name == "sampled" else self.k

    def manifest(self, temperature: float, seed: int) -> Dict[str, Any]:
        """The manifest's capture member."""
        out: Dict[str, Any] = {"policy": self.name, "k": self.head, "samples": self.draws,
                               "temperature": float(temperature), "seed": int(seed)}
        if self.top_p is not None:
            out["topP"] = float(self.top_p)
        return out


# -- the tiled head

class TiledHead:
    """The model's LM head over hidden states, one vocabulary tile at a time.

    weight [V, C] (the output embedding), bias [V] or None; logits = (h·Wᵀ + b)·scale, soft-capped
    as `cap·tanh(logits / cap)` when `softcap`, then divided by the temperature τ. Every
    reduction runs in float32 on the weight's device."""

    def __init__(self, weight, bias=None, scale: float = 1.0, softcap: Optional[float] = None,
                 temperature: float = 1.0, tile: int = 8192):
        self.weight, self.bias = weight, bias
        self.scale, self.softcap, self.temperature = float(scale), softcap, float(temperature)
        self.V = int(weight.shape[0])
        self.tile = max(1, int(tile))

    def logits(self, h, v0: int, v1: int):
        """[N, v1 - v0] float32 logits / τ of vocabulary rows [v0, v1)."""
        import torch
        z = torch.matmul(h, self.weight[v0:v1].t()).float()
        if self.bias is not None:
            z = z + self.bias[v0:v1].float()
        if self.scale != 1.0:
            z = z * self.scale
        if self.softcap:
            z = torch.tanh(z / self.softcap) * self.softcap
        return z / self.temperature if self.temperature != 1.0 else z

    def logits_at(self, h, rows, ids):
        """[M] float32 logits / τ of (row, id) pairs: rows, ids [M] int64 tensors."""
        import torch
        z = (h[rows].float() * self.weight[ids].float()).sum(dim=1)
        if self.bias is not None:
            z = z + self.bias[ids].float()
        if self.scale != 1.0:
            z = z * self.scale
        if self.softcap:
            z = torch.tanh(z / self.softcap) * self.softcap
        return z / self.temperature

    def top_k(self, h, k: int, targets):
        """Running top-k and logsumexp over the tiles. h [N, C], targets [N] (next ids).
        Returns ids [N, k] int64, z [N, k] float32 (descending), lse [N], target_z [N]."""
        import torch
        N = h.shape[0]
        dev = h.device
        best_z = torch.full((N, 0), -math.inf, device=dev)
        best_i = torch.zeros((N, 0), dtype=torch.long, device=dev)
        lse = torch.full((N,), -math.inf, device=dev)
        target_z = torch.zeros(N, device=dev)
        for v0 in range(0, self.V, self.tile):
            v1 = min(self.V, v0 + self.tile)
            z = self.logits(h, v0, v1)
            lse = torch.logaddexp(lse, torch.logsumexp(z, dim=1))
            inside = (targets >= v0) & (targets < v1)
            if bool(inside.any()):
                rows = inside.nonzero(as_tuple=True)[0]
                target_z[rows] = z[rows, targets[rows] - v0]
            if k:
                # The tile's own top-k first, then a merge of two [N, k] lists: no [N, k + tile] copy.
                tz_, ti_ = torch.topk(z, min(k, z.shape[1]), dim=1)
                ti_ = ti_ + v0
                if best_z.shape[1] == 0:
                    best_z, best_i = tz_, ti_
                else:
                    cz, ci = torch.cat([best_z, tz_], dim=1), torch.cat([best_i, ti_], dim=1)
                    best_z, j = torch.topk(cz, min(k, cz.shape[1]), dim=1)
                    best_i = torch.gather(ci, 1, j)
        return best_i, best_z, lse, target_z

    def sample(self, h, lse, uniforms: np.ndarray, excluded: Optional[Any], total: np.ndarray):
        """Inverse-CDF draws over the tiles in id order, as the Swift walk does. uniforms [N, D]
        sorted per row; excluded [N, E] ids not to draw (head-tail's head) or None; total [N] the
        allowed mass. Returns per row a list of (id, count)."""
        import torch
        N, D = uniforms.shape
        dev = h.device
        targets = torch.from_numpy(uniforms * total[:, None]).to(dev)             # [N, D] float64
        assigned = torch.full((N, D), -1, dtype=torch.long, device=dev)
        cum = torch.zeros(N, dtype=torch.float64, device=dev)
        last = torch.full((N,), -1, dtype=torch.long, device=dev)
        lse64 = lse.double()
        for v0 in range(0, self.V, self.tile):
            v1 = min(self.V, v0 + self.tile)
            p = torch.exp(self.logits(h, v0, v1).double() - lse64[:, None])      # [N, Vt]
            if excluded is not None:
                # Excluded ids of this tile get probability 0; the others land in a spare column.
                local = excluded - v0
                local = torch.where((local >= 0) & (local < v1 - v0), local, v1 - v0)
                p = torch.cat([p, torch.zeros(N, 1, dtype=p.dtype, device=dev)], dim=1)
                p = p.scatter(1, local, 0.0)[:, :-1]
            c = cum[:, None] + torch.cumsum(p, dim=1)                              # [N, Vt]
            idx = torch.searchsorted(c, targets, right=True)                       # first cumulative > target
            hit = (idx < v1 - v0) & (assigned < 0)
            assigned = torch.where(hit, idx + v0, assigned)
            nz = (p > 0).any(dim=1)
            last = torch.where(nz, (v0 + (p.shape[1] - 1 - torch.argmax((p > 0).flip(1).int(), dim=1))), last)
            cum = c[:, -1]
        # Rounding can leave the last draws past the final sum: the last id with mass takes them.
        assigned = torch.where(assigned < 0, last[:, None], assigned).cpu().numpy()
        out = []
        for r in range(N):
            ids, counts = np.unique(assigned[r], return_counts=True)
            out.append(list(zip(ids.tolist(), counts.tolist())))
        return out


def model_head(model) -> Dict[str, Any]:
    """The output embedding and what the model's forward applies after it."""
    emb = model.get_output_embeddings()
    if emb is None or not hasattr(emb, "weight"):
        raise CacheError(f"{type(model).__name__}: no output embedding (get_output_embeddings) to tile")
    cfg = model.config
    text = getattr(cfg, "text_config", None) or cfg
    scale = 1.0
    if getattr(text, "logit_scale", None):            # Cohere: logits * logit_scale
        scale = float(text.logit_scale)
    if getattr(text, "logits_scaling", None):         # Granite: logits / logits_scaling
        scale = 1.0 / float(text.logits_scaling)
    return {"weight": emb.weight, "bias": getattr(emb, "bias", None), "scale": scale,
            "softcap": getattr(text, "final_logit_softcapping", None)}


def _decoder(model):
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    if base is None or base is model:
        base = model.get_decoder() if hasattr(model, "get_decoder") else None
    if base is None:
        raise CacheError(f"{type(model).__name__}: cannot find the decoder below the LM head")
    return base


# -- one batch

@dataclasses.dataclass
class Captured:
    """The targets of N positions, ready for `CacheWriter.append`."""

    entry_ids: np.ndarray      # int32 [N, K], -1 past the count
    entry_logprobs: np.ndarray  # float32 [N, K]
    next_logprobs: np.ndarray   # float32 [N]
    logsumexps: np.ndarray      # float32 [N]
    sample_ids: Optional[np.ndarray]    # int32 [N, S], -1 past the count
    sample_draws: Optional[np.ndarray]  # uint32 [N, S]
    mass: np.ndarray            # float64 [N] captured probability mass


def capture_rows(head: TiledHead, h, nexts, positions: np.ndarray, policy: Policy, seed: int) -> Captured:
    """Targets of N positions from hidden states h [N, C], next ids [N] (tensor) and stream
    positions [N] (seeds of the draws), under `policy`."""
    import torch
    N = h.shape[0]
    K = policy.head
    ids, z, lse, tz = head.top_k(h, K, nexts)
    lp = (z - lse[:, None]).cpu().numpy().astype(np.float32)                     # [N, K]
    ids_np = ids.cpu().numpy().astype(np.int32)
    counts = np.full(N, K, np.int64)
    if policy.top_p is not None:
        cum = np.cumsum(np.exp(lp.astype(np.float64)), axis=1)
        reach = cum >= policy.top_p
        counts = np.where(reach.any(axis=1), reach.argmax(axis=1) + 1, K)
    keep = np.arange(K)[None, :] < counts[:, None]
    entry_ids = np.where(keep, ids_np, -1).astype(np.int32)
    entry_lps = np.where(keep, lp, 0.0).astype(np.float32)
    head_p = np.where(keep, np.exp(lp.astype(np.float64)), 0.0)
    mass = head_p.sum(axis=1)
    sample_ids = sample_draws = None
    if policy.draws:
        u = np.sort(counter_uniforms(seed, positions, policy.draws), axis=1)
        tail = policy.name == "head-tail"
        total = np.maximum(1.0 - mass, 0.0) if tail else np.ones(N)
        excluded = ids[:, :K] if tail else None
        found = head.sample(h, lse, u, excluded, total)
        width = max((len(f) for f in found), default=0)
        sample_ids = np.full((N, max(width, 1)), -1, np.int32)
        sample_draws = np.zeros((N, max(width, 1)), np.uint32)
        lse_np = lse.cpu().numpy()
        pairs = [(r, i) for r, f in enumerate(found) for i, _ in f]
        rows_t = torch.tensor([r for r, _ in pairs], dtype=torch.long, device=h.device)
        ids_t = torch.tensor([i for _, i in pairs], dtype=torch.long, device=h.device)
        z_pairs = head.logits_at(h, rows_t, ids_t).cpu().numpy() if pairs else np.zeros(0, np.float32)
        at = 0
        for r, f in enumerate(found):
            lps = z_pairs[at:at + len(f)] - lse_np[r]
            at += len(f)
            # Most drawn first, then most probable, then lowest id (the Swift order).
            ranked = sorted(((c, float(l), -i) for (i, c), l in zip(f, lps)), reverse=True)
            head_ids = set(entry_ids[r][entry_ids[r] >= 0].tolist())
            for j, (c, l, neg) in enumerate(ranked):
                sample_ids[r, j], sample_draws[r, j] = -neg, c
                if tail or -neg not in head_ids:
                    mass[r] += math.exp(l)
    return Captured(entry_ids, entry_lps, (tz - lse).cpu().numpy().astype(np.float32),
                    lse.cpu().numpy().astype(np.float32), sample_ids, sample_draws, np.minimum(mass, 1.0))


# -- the pass

def _torch_dtype(name: str):
    import torch
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise ValueError(f"dtype {name!r} is not one of {', '.join(table)}")
    return table[name]


def device_name(device) -> str:
    """`cpu`, or `cuda:N (<GPU name>)`."""
    import torch
    d = torch.device(device)
    if d.type == "cuda":
        index = d.index if d.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return d.type


def forward_flops(model) -> Callable[[int, int], float]:
    """`flops(tokens, T)` of the model's forward over windows of T: 2 FLOPs per parameter per
    token (the head included) plus causal attention's 2·layers·T·width per token, the accounting
    of the Swift pass's `forwardFLOPs`. The parameters are counted once, here."""
    cfg = getattr(model.config, "text_config", None) or model.config
    params = model.num_parameters(exclude_embeddings=True) + model.get_output_embeddings().weight.numel()
    heads = getattr(cfg, "num_attention_heads", 0)
    width = heads * (getattr(cfg, "head_dim", None) or cfg.hidden_size // max(1, heads))
    attention = 2.0 * getattr(cfg, "num_hidden_layers", 0) * width
    return lambda tokens, T: (2.0 * params + attention * T) * tokens


def _refuse_different_cache(out: str, vocabulary_size: int, fingerprints: Dict[str, str], capture: Dict[str, Any],
                            partition_count: int) -> None:
    """As the Swift pass: a cache already in `out` must have the same teacher, tokenizer, corpus,
    context and capture settings."""
    if not os.path.isdir(out):
        return
    for name in sorted(os.listdir(out)):
        if not (name.startswith("manifest") and name.endswith(".json")):
            continue
        with open(os.path.join(out, name)) as f:
            m = json.load(f)
        where = os.path.join(out, name)
        checks = [("vocabulary size", m.get("vocabularySize"), vocabulary_size)]
        checks += [(f"{k} fingerprint", m.get("fingerprints", {}).get(k), v) for k, v in fingerprints.items()]
        old = dict(m.get("capture", {}))
        checks.append(("capture settings", old, {k: capture.get(k, old.get(k)) for k in old}))
        if "partition" in m:
            checks.append(("partition count", m["partition"]["count"], partition_count))
        for field, existing, requested in checks:
            if existing != requested:
                raise CacheError(f"{where}: a cache with another {field} is here ({existing} vs {requested} now); "
                                 "use another --out or remove it")


@dataclasses.dataclass
class CaptureResult:
    manifest: Dict[str, Any]
    tokens: int              # tokens captured in this run
    seconds: float
    forward_seconds: float   # inside the decoder (the model's forward without its LM head)
    mean_captured_mass: float
    #: With `benchmark`: the model's own forward (decoder and full-logits LM head, what any
    #: capture must compute) over the same batches, timed apart from `seconds`.
    model_forward_seconds: Optional[float] = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    @property
    def outside_forward_share(self) -> float:
        """Share of the capture's time spent outside the model's forward: against the model's
        own forward with `benchmark`, else against the decoder alone (the head counted outside)."""
        inside = self.model_forward_seconds if self.model_forward_seconds is not None else self.forward_seconds
        return max(0.0, 1.0 - inside / max(self.seconds, 1e-9))


def capture(model: str, corpus: Sequence[str], out: str, *, context: int = 512, policy: Policy = Policy(),
            temperature: float = 1.0, seed: int = 0, device: str = "cpu", dtype: str = "float32",
            device_map: Optional[str] = None, partition: Optional[str] = None,
            partition_count: Optional[int] = None, windows_per_batch: int = 4,
            vocab_tile: int = 8192, tokenizer: Optional[str] = None, eot_token: Optional[str] = None,
            text_field: str = "text", blank_line_documents: bool = False, window_limit: Optional[int] = None,
            benchmark: bool = False,
            writer_options: Optional[Dict[str, Any]] = None,
            progress: Optional[Callable[[str], None]] = None) -> CaptureResult:
    """Runs the `transformers` causal LM in `model` (a directory) over `corpus` (files,
    directories, globs) and writes partition `partition` ("i/N"; else from the Slurm job-array
    or Kubernetes Indexed Job environment, the latter of `partition_count` parts; else the whole
    corpus) of the cache `out`. A cache already there with the same
    settings is resumed after its published windows; one with other settings is refused.

    `policy`, `temperature` τ (0.001...1000) and `seed` as the Swift pass; `device` "cpu",
    "cuda", "cuda:N"; `dtype` of the weights (float32, bfloat16, float16; the head's reductions run
    in float32); `device_map` for transformers' multi-GPU placement (then `device` is where the
    head runs). `vocab_tile` vocabulary rows per head tile. `window_limit`: at most that many
    windows. `benchmark`: also time the model's own forward (full logits) on every batch, apart
    from the capture, for `CaptureResult.outside_forward_share`. `progress(line)` receives a
    progress line about once a second.
    Raises CacheError / CorpusError / ValueError naming what is wrong."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not 0.001 <= temperature <= 1000 or not math.isfinite(temperature):
        raise ValueError(f"temperature {temperature} must be in 0.001...1000")
    if context < 1 or windows_per_batch < 1:
        raise ValueError(f"context {context} and windows_per_batch {windows_per_batch} must be >= 1")
    tok_path = tokenizer or model
    try:
        tok = AutoTokenizer.from_pretrained(tok_path)
        net = AutoModelForCausalLM.from_pretrained(model, dtype=_torch_dtype(dtype), device_map=device_map)
    except (OSError, ValueError, KeyError) as e:
        raise CacheError(f"{model}: cannot load the model or tokenizer with transformers ({e})") from None
    if device_map is None:
        net = net.to(device)
    net.eval()
    head_parts = model_head(net)
    V = int(head_parts["weight"].shape[0])
    if len(tok) > V:
        raise CacheError(f"{tok_path}: tokenizer has {len(tok)} ids, more than the model's vocabulary {V}")
    cfg = getattr(net.config, "text_config", None) or net.config
    limit = getattr(cfg, "max_position_embeddings", None)
    if limit is not None and context > limit:
        raise ValueError(f"context {context} exceeds the model's max_position_embeddings {limit}")
    if policy.head > V:
        raise ValueError(f"policy {policy.name}: k {policy.head} exceeds the vocabulary {V}")

    eot = _corpus.end_of_text_id(tok, eot_token)
    stream = _corpus.tokenize_corpus(list(corpus), lambda text: tok(text, add_special_tokens=False)["input_ids"],
                                     eot, V, text_field=text_field, blank_line_documents=blank_line_documents)
    total = stream.window_count(context)
    if total == 0:
        raise CacheError(f"corpus {list(corpus)}: no window (fewer than two tokens)")
    part = _corpus.Partition.parse(partition) if partition else (
        _corpus.Partition.from_environment(os.environ, kubernetes_count=partition_count) or _corpus.Partition(0, 1))
    owned = part.window_range(total)
    fingerprints = {"teacher": _corpus.teacher_fingerprint(model), "tokenizer": _corpus.tokenizer_fingerprint(tok_path),
                    "corpus": _corpus.corpus_fingerprint(stream, context)}
    cap = policy.manifest(temperature, seed)
    _refuse_different_cache(out, V, fingerprints, cap, part.count)

    head_device = torch.device(device)
    head = TiledHead(head_parts["weight"].to(head_device), None if head_parts["bias"] is None
                     else head_parts["bias"].to(head_device), head_parts["scale"], head_parts["softcap"],
                     temperature, vocab_tile)
    decoder = _decoder(net)
    origin = {"tool": "logitcache capture", "teacher": os.path.basename(os.path.normpath(model)),
              "device": device_name(head_device)}
    writer = CacheWriter(out, vocabulary_size=V, fingerprints=fingerprints, capture=cap, partition=part.index,
                         partition_count=part.count, origin=origin, **(writer_options or {}))
    try:
        first = owned.start + writer.resumed_sequences
        stop = owned.stop if window_limit is None else min(owned.stop, first + window_limit)
        result = _run(net, decoder, head, stream, context, policy, seed, writer, range(first, stop), windows_per_batch,
                      head_device, progress, total=len(owned), reference=benchmark)
    except BaseException:
        writer.close()  # published shards stay; a rerun resumes after them
        raise
    manifest = writer.finish()
    result.manifest = manifest
    return result


def _check_head(net, head: TiledHead, inputs, hidden) -> None:
    """The tiled head must give the model's own logits (first positions of the first window)."""
    import torch
    n = min(16, inputs.shape[1])
    own = net(input_ids=inputs[:1, :n]).logits[0].float().to(hidden.device) / head.temperature   # [n, V]
    mine = torch.cat([head.logits(hidden[:n], v0, min(head.V, v0 + head.tile))
                      for v0 in range(0, head.V, head.tile)], dim=1)
    fp32 = hidden.dtype == torch.float32
    scale = max(1.0, float(own.abs().max()))
    err = float((own - mine).abs().max())
    if err > (1e-3 if fp32 else 3e-2) * scale:
        raise CacheError(f"{type(net).__name__}: the tiled head differs from the model's own logits by {err:.3g} "
                         "(an output transform this capture does not know); not captured")


def _run(net, decoder, head: TiledHead, stream, context: int, policy: Policy, seed: int, writer: CacheWriter,
         windows: range, per_batch: int, head_device, progress, total: int, reference: bool) -> CaptureResult:
    import torch
    start = time.monotonic()
    forward = 0.0
    model_forward = 0.0   # the reference forward of `reference` runs, left out of the capture's time
    checked = False
    tokens = 0
    mass_sum = 0.0
    last_line = 0.0
    cuda = head_device.type == "cuda"
    flops = forward_flops(net)
    rows_per_chunk = max(1, (1 << 26) // head.tile)   # bounds a chunk's [rows, tile] float32 logits
    w = windows.start
    with torch.inference_mode():
        while w < windows.stop:
            batch = [stream.window(w, context)]
            while len(batch) < per_batch and w + len(batch) < windows.stop:
                nxt = stream.window(w + len(batch), context)
                if nxt.length != batch[0].length:
                    break
                batch.append(nxt)
            T = batch[0].length
            ids = np.stack([stream.ids[x.start:x.start + T + 1] for x in batch]).astype(np.int64)   # [B, T+1]
            inputs = torch.from_numpy(ids[:, :-1]).to(net.device)
            if reference:
                r0 = time.monotonic()
                net(input_ids=inputs).logits.float()
                if cuda:
                    torch.cuda.synchronize()
                model_forward += time.monotonic() - r0
            t0 = time.monotonic()
            hidden = decoder(input_ids=inputs).last_hidden_state                                  # [B, T, C]
            if cuda:
                torch.cuda.synchronize()
            forward += time.monotonic() - t0
            hidden = hidden.reshape(len(batch) * T, -1).to(head_device)                            # [B·T, C]
            if not checked:
                _check_head(net, head, inputs, hidden)
                checked = True
            nexts = torch.from_numpy(ids[:, 1:].reshape(-1)).to(head_device)
            positions = np.concatenate([np.arange(x.start, x.start + T, dtype=np.uint64) for x in batch])
            parts = [capture_rows(head, hidden[r:r + rows_per_chunk], nexts[r:r + rows_per_chunk],
                                  positions[r:r + rows_per_chunk], policy, seed)
                     for r in range(0, hidden.shape[0], rows_per_chunk)]
            got = _concat(parts)
            for b, x in enumerate(batch):
                rows = slice(b * T, (b + 1) * T)
                writer.begin_sequence(x.document_key, x.document_offset)
                extra = {}
                if got.sample_ids is not None:
                    extra = {"sample_ids": got.sample_ids[rows], "sample_draws": got.sample_draws[rows]}
                writer.append(ids[b, :-1], got.next_logprobs[rows], got.logsumexps[rows], got.entry_ids[rows],
                              got.entry_logprobs[rows], **extra)
                writer.end_sequence()
            seconds = time.monotonic() - t0
            writer.add_cost(len(batch) * T, flops(len(batch) * T, T), seconds)
            tokens += len(batch) * T
            mass_sum += float(got.mass.sum())
            w += len(batch)
            now = time.monotonic()
            if progress is not None and (now - last_line >= 1.0 or w == windows.stop):
                last_line = now
                rate = tokens / max(now - start - model_forward, 1e-9)
                progress(f"windows {w - windows.start}/{len(windows)} ({total} in this partition), "
                         f"{rate:,.0f} tokens/s, captured mass {mass_sum / max(tokens, 1):.4f}")
    return CaptureResult({}, tokens, time.monotonic() - start - model_forward, forward, mass_sum / max(tokens, 1),
                         model_forward if reference else None)


def _concat(parts: List[Captured]) -> Captured:
    if len(parts) == 1:
        return parts[0]

    def ragged(arrays, fill, dtype):
        width = max(a.shape[1] for a in arrays)
        return np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill) for a in arrays]).astype(dtype)

    sampled = parts[0].sample_ids is not None
    return Captured(np.concatenate([p.entry_ids for p in parts]), np.concatenate([p.entry_logprobs for p in parts]),
                    np.concatenate([p.next_logprobs for p in parts]), np.concatenate([p.logsumexps for p in parts]),
                    ragged([p.sample_ids for p in parts], -1, np.int32) if sampled else None,
                    ragged([p.sample_draws for p in parts], 0, np.uint32) if sampled else None,
                    np.concatenate([p.mass for p in parts]))
