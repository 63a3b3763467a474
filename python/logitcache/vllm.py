"""A cache from vLLM's `prompt_logprobs`: the top-N log-probs vLLM returns for every prompt position.

vLLM scores prompts with `LLM.generate(prompts, SamplingParams(max_tokens=1, prompt_logprobs=N))`
(or the OpenAI-compatible server's `prompt_logprobs` parameter). Save one JSON object per prompt,
one per line (JSON Lines; a JSON array of such objects is read too):

    {"prompt_token_ids": [1, 450, 4996, ...],
     "prompt_logprobs": [null,
                         {"450": {"logprob": -2.31, "rank": 1, "decoded_token": " The"},
                          "319": {"logprob": -2.95, "rank": 2, "decoded_token": " A"}, ...},
                         ...]}

    # from vLLM's Python API:
    for out in llm.generate(prompts, SamplingParams(max_tokens=1, prompt_logprobs=20)):
        f.write(json.dumps({"prompt_token_ids": out.prompt_token_ids,
                            "prompt_logprobs": [None if d is None else
                                                {str(t): {"logprob": l.logprob, "rank": l.rank} for t, l in d.items()}
                                                for d in out.prompt_logprobs]}) + "\\n")

`prompt_logprobs[t]` is the distribution of token t given tokens before it (entry 0 is null). A
dict holds the top N and, when the prompt's own token t is not among them, that token as well
(with its rank). Cache position t - 1 (input id `prompt_token_ids[t - 1]`) then stores:
- the entries whose ranks run 1, 2, 3, ... without a gap, most probable first (the extra prompt
  token is kept only when its rank continues the run);
- the next-token log-prob: the prompt token's own log-prob, exact whether or not it is in the top N;
- logsumexp 0: vLLM returns normalised log-probs, so the logits' logsumexp is unknown. The
  log-probs themselves are exact, the captured mass is the sum of exp over the entries, and a
  student's tail mode gets the right uncovered mass. The manifest's `origin` says so.
Values with a "logprob" member or plain numbers are accepted; plain numbers carry no rank, so
`top_n` must then say N (the top N by log-prob are kept).

Each prompt becomes one cache sequence of len(prompt) - 1 positions; its document key is the
XXH3-128 of its token ids (as little-endian uint32, as for pre-tokenised corpora).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import xxhash

from ._cache import PathLike
from ._writer import CacheWriter
from .reader import CacheError

NOTE = ("imported from vLLM prompt_logprobs: log-probs are normalised, so logsumexp is stored as 0 (unknown); "
        "captured mass is the sum of exp over the stored entries")


def _records(path: str) -> Iterator[Tuple[str, Mapping[str, Any]]]:
    """(where, object) of each prompt in a JSON Lines file or a JSON array file."""
    with open(path, "rb") as f:
        head = f.read(1 << 16).lstrip()
    if head.startswith(b"["):
        with open(path, "rb") as f:
            try:
                items = json.load(f)
            except ValueError as e:
                raise CacheError(f"{path}: not valid JSON ({e})") from None
        for i, obj in enumerate(items):
            yield f"{path}: item {i}", obj
        return
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except ValueError as e:  # UnicodeDecodeError is a ValueError too
                raise CacheError(f"{path}:{n}: not valid JSON Lines ({e})") from None
            yield f"{path}:{n}", obj


def _entry(where: str, token: str, value: Any) -> Tuple[int, float, Optional[int]]:
    try:
        tid = int(token)
    except ValueError:
        raise CacheError(f"{where}: token id {token!r} is not an integer") from None
    if isinstance(value, Mapping):
        lp, rank = value.get("logprob"), value.get("rank")
    else:
        lp, rank = value, None
    if isinstance(lp, bool) or not isinstance(lp, (int, float)) or math.isnan(lp) or lp > 1e-3:
        raise CacheError(f"{where}: token {tid}: log-prob {lp!r} is not a number <= 0")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise CacheError(f"{where}: token {tid}: rank {rank!r} is not an integer >= 1")
    return tid, float(lp), rank


def _position(where: str, dist: Mapping[str, Any], actual: int, top_n: Optional[int]) -> Tuple[List[int], List[float], float]:
    """(top ids, their log-probs, the actual token's log-prob) of one prompt position."""
    if not isinstance(dist, Mapping) or not dist:
        raise CacheError(f"{where}: expected a non-empty object of token id -> log-prob")
    entries = [_entry(where, t, v) for t, v in dist.items()]
    ranked = all(r is not None for _, _, r in entries)
    entries.sort(key=lambda e: (e[2], -e[1]) if ranked else (-e[1], e[0]))
    if ranked:
        top = []
        for tid, lp, rank in entries:
            if rank != len(top) + 1:
                break
            top.append((tid, lp))
    elif top_n is not None:
        top = [(tid, lp) for tid, lp, _ in entries[:top_n]]
    else:
        raise CacheError(f"{where}: log-probs without ranks: pass top_n (the prompt_logprobs N vLLM ran with)")
    found = [lp for tid, lp, _ in entries if tid == actual]
    if not found:
        raise CacheError(f"{where}: the prompt token {actual} is missing (vLLM always returns it)")
    if any(math.isinf(lp) for _, lp in top):
        top = [(t, lp) for t, lp in top if not math.isinf(lp)]  # probability 0: not an entry
    if math.isinf(found[0]):
        raise CacheError(f"{where}: the prompt token {actual} has log-prob -inf")
    return [t for t, _ in top], [lp for _, lp in top], found[0]


def _prompt(where: str, obj: Any, top_n: Optional[int]) -> Tuple[List[int], List[List[int]], List[List[float]], List[float]]:
    if not isinstance(obj, Mapping) or "prompt_token_ids" not in obj or "prompt_logprobs" not in obj:
        raise CacheError(f"{where}: expected an object with prompt_token_ids and prompt_logprobs")
    ids, lps = obj["prompt_token_ids"], obj["prompt_logprobs"]
    if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids):
        raise CacheError(f"{where}: prompt_token_ids must be a list of non-negative integers")
    if not isinstance(lps, list) or len(lps) != len(ids):
        raise CacheError(f"{where}: prompt_logprobs has {len(lps) if isinstance(lps, list) else 'no'} entries "
                         f"for {len(ids)} prompt tokens")
    top_ids, top_lps, nexts = [], [], []
    for t in range(1, len(ids)):
        a, b, c = _position(f"{where}: position {t}", lps[t], ids[t], top_n)
        top_ids.append(a)
        top_lps.append(b)
        nexts.append(c)
    return ids, top_ids, top_lps, nexts


def _fingerprint(*hashes: int) -> str:
    data = b"".join(h.to_bytes(8, "little") for h in hashes)
    return f"xxh3:{xxhash.xxh3_64_intdigest(data):016x}"


def import_vllm(path: PathLike, directory: PathLike, *, vocabulary_size: int, tokenizer_fingerprint: str,
                teacher: str = "unknown", top_n: Optional[int] = None, max_entries: Optional[int] = None,
                progress: Optional[Any] = None, **writer_options: Any) -> dict:
    """Writes the cache `directory` from a saved vLLM `prompt_logprobs` file (see the module
    docstring) and returns its manifest.

    `vocabulary_size` is the teacher's V; `tokenizer_fingerprint` the one students will check
    (`"xxh3:" + XXH3-64 of tokenizer.json` as the Swift pass records it, see
    `tokenizer_file_fingerprint`); `teacher` names the model (recorded as fingerprint
    `vllm:<teacher>` and in `origin`). K is `max_entries`, else the longest top list in the file
    (every record is read and checked once before writing). Resumable as `CacheWriter`. Raises
    CacheError naming the file, line and position of anything malformed."""
    path, directory = os.fspath(path), os.fspath(directory)
    # One pass before writing: every record checked, K found, the corpus fingerprinted.
    longest = 0
    corpus = xxhash.xxh3_64()
    keys = xxhash.xxh3_64()
    prompts = []
    for where, obj in _records(path):
        ids, top_ids, _, _ = _prompt(where, obj, top_n)
        longest = max([longest] + [len(r) for r in top_ids])
        if len(ids) >= 2:
            data = np.asarray(ids, dtype="<u4").tobytes()
            corpus.update(data)
            key = xxhash.xxh3_128_intdigest(data)
            keys.update(key.to_bytes(16, "big"))
            prompts.append(key)
    K = int(longest if max_entries is None else max_entries)
    if K < 1:
        raise CacheError(f"{path}: no position has a top entry")
    fingerprints = {"teacher": f"vllm:{teacher}", "tokenizer": tokenizer_fingerprint,
                    "corpus": _fingerprint(corpus.intdigest(), keys.intdigest())}
    capture = {"policy": "top-k", "k": K, "temperature": 1.0}
    origin = {"tool": "logitcache import-vllm", "teacher": teacher, "note": NOTE}
    with CacheWriter(directory, vocabulary_size=vocabulary_size, fingerprints=fingerprints, capture=capture,
                     origin=origin, **writer_options) as w:
        written = 0
        for where, obj in _records(path):
            ids, top_ids, top_lps, nexts = _prompt(where, obj, top_n)
            if len(ids) < 2:
                continue  # one token predicts nothing
            written += 1
            if written <= w.resumed_sequences:
                continue
            n = len(ids) - 1
            e_ids = np.full((n, K), -1, np.int32)
            e_lps = np.zeros((n, K), np.float32)
            for i, (a, b) in enumerate(zip(top_ids, top_lps)):
                if len(a) > K:
                    raise CacheError(f"{where}: position {i + 1} has {len(a)} entries, more than K = {K}")
                e_ids[i, :len(a)] = a
                e_lps[i, :len(b)] = b
            try:
                w.begin_sequence(prompts[written - 1], 0)
                w.append(ids[:-1], nexts, np.zeros(n, np.float32), e_ids, e_lps)
                w.end_sequence()
            except (CacheError, ValueError) as e:
                raise CacheError(f"{where}: {e}") from None
            if progress is not None:
                progress(written, len(prompts))
        return w.finish()


def tokenizer_file_fingerprint(path: PathLike) -> str:
    """The tokenizer fingerprint the Swift teacher pass records: `xxh3:` + XXH3-64 of the file."""
    with open(os.fspath(path), "rb") as f:
        return f"xxh3:{xxhash.xxh3_64_intdigest(f.read()):016x}"
