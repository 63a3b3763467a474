#!/usr/bin/env python3
"""How far a cache's bytes are from what its rows could be coded in: per column group, the bytes
stored against what coders of simple models of the same values would pay.

    tools/format_floor.py CACHE [--tokens N] [--parquet BYTES_PER_TOKEN] [--json]

Models (bits summed over the rows, shown as bytes/token):
- entry ids: the empirical order-0 entropy of the ids per block and band, i.e. what an ideal
  static coder of the dictionary ranks would pay (its tables counted as free); structure it
  does not see, such as the input-token dependence entry references exploit, can beat it;
- log-probs: the empirical entropy of the quantised gaps given their rank (0..K-1) and the
  row's fall-off so far, over the whole cache (finer contexts than the format's bands, again
  with free tables, so optimistic);
- ties: bits a coder could save by not storing the order of ids whose quantised log-probs are
  equal (sum of log2(g!) over runs of g equal values), an upper bound on that saving;
- for caches written by `logitcache synth` (teacher fingerprint `synthetic-SEED`): an oracle
  that knows the generator's hidden state (its unigram permutation, each sequence's 256 topic
  ids, the source mixture; docs/format-design.md appendix A) and codes each position's ids in rank
  order by their mixture probability, renormalised after each id. No coder that has to learn
  that state from the data can do better on average, up to the order information the oracle
  ignores (which the per-rank contexts above capture).
With --parquet, the ratio to Parquet+zstd of the stored bytes and of the sum of the smallest
models (for a `synth` cache, a floor: its ids are coded by the oracle).
"""
import argparse
import json
import math
import os
import re

import numpy as np

import logitcache.reader as lr  # the installed package (tools/setup: pip install ./python)
from logitcache._splitmix import INCREMENT, SplitMix64

class GeneratorState:
    """The hidden state of TeacherLikeGenerator(vocabularySize: V, seed: seed)."""

    def __init__(self, V: int, seed: int):
        rng = SplitMix64(seed ^ 0x5EED0FCAC4E)
        perm = list(range(V))
        for i in range(V - 1, 0, -1):
            j = rng.next() % (i + 1)
            perm[i], perm[j] = perm[j], perm[i]
        self.V, self.seed, self.rank_to_id = V, seed, np.array(perm, dtype=np.int64)
        w = np.power(np.arange(1, V + 1, dtype=np.float64), -1.0)
        self.zipf_cdf = np.cumsum(w) / w.sum()
        self.p_unigram = np.zeros(V)
        self.p_unigram[self.rank_to_id] = w / w.sum()
        t = np.power(np.arange(1, V + 1, dtype=np.float64), -0.6)
        self.topic_cdf = np.cumsum(t) / t.sum()

    def draw(self, rng: SplitMix64, cdf: np.ndarray) -> int:
        return int(self.rank_to_id[int(np.searchsorted(cdf, rng.unit(), side="left"))])

    def sequence_start(self, index: int):
        """Sequence `index`'s 256 topic ids and its first input id (the next draw)."""
        rng = SplitMix64(self.seed + index * INCREMENT)
        topic = [self.draw(rng, self.topic_cdf) for _ in range(256)]
        return np.array(topic, dtype=np.int64), self.draw(rng, self.zipf_cdf)


def entropy_bits(values: np.ndarray) -> float:
    _, counts = np.unique(values, return_counts=True)
    return float(-(counts * np.log2(counts / counts.sum())).sum())


def stored_bytes(cache) -> dict:
    groups = {}
    for shard in cache.shards:
        for blk in shard.blocks:
            for name, c in blk["columns"].items():
                g = name.split(".")[0]
                groups[g] = groups.get(g, 0) + c["size"]
    return groups


def oracle_id_bits(cache, state: GeneratorState, tokens: int):
    """Oracle code length of the entry ids of the first sequences covering `tokens` tokens, and
    the tokens covered; checks each sequence's first input id against the replayed generator."""
    total, pos = 0.0, 0
    for i, seq in enumerate(cache.sequence_table()):
        if pos >= tokens:
            break
        rows = cache.read(seq.start, seq.start + seq.length)
        topic, first = state.sequence_start(i)
        if seq.length and int(rows.input_ids[0]) != first:
            raise SystemExit(f"sequence {i}: first input id {int(rows.input_ids[0])}, the generator (V={state.V}, "
                             f"seed {state.seed}) draws {first}: not a `logitcache synth` cache of that seed")
        p_topic = np.zeros(state.V)
        np.add.at(p_topic, topic, 1 / 256)
        for t in range(seq.length):
            recent = rows.input_ids[max(0, t - 63):t + 1].astype(np.int64)
            p = 0.4 * state.p_unigram + 0.3 * p_topic + 0.2 * np.bincount(recent, minlength=state.V) / len(recent) \
                + 0.1 / state.V
            ids = rows.entry_ids[rows.entry_offsets[t]:rows.entry_offsets[t + 1]].astype(np.int64)
            q = p[ids]
            used = np.concatenate([[0.0], np.cumsum(q)[:-1]])
            total += float(-np.log2(q / (1 - used)).sum())
        pos += seq.length
    return total, pos


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cache")
    ap.add_argument("--tokens", type=int, default=16384, help="tokens the oracle codes (it is slow); default 16384")
    ap.add_argument("--parquet", type=float, help="Parquet+zstd bytes/token of the same rows")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    cache = lr.Cache(a.cache)
    T = cache.tokens
    stored = {g: b / T for g, b in stored_bytes(cache).items()}
    shard0 = cache.shards[0]
    if shard0.step_log2 is None:
        raise SystemExit("a lossless cache: the log-prob bounds are for quantised caches")
    h = shard0.step_multiplier * 2.0 ** -shard0.step_log2

    id_bits = 0.0
    for shard in cache.shards:
        for b in range(len(shard.blocks)):
            blk = shard.block_padded(b)
            live = np.arange(blk.entry_ids.shape[1])[None, :] < blk.entry_counts[:, None]
            for lo, hi in zip(shard.bands, shard.bands[1:]):
                id_bits += entropy_bits(blk.entry_ids[:, lo:hi][live[:, lo:hi]])
    rows = cache.read_padded()
    counts = rows.entry_counts
    K = rows.entry_logprobs.shape[1]
    q = np.rint(-rows.entry_logprobs.astype(np.float64) / h).astype(np.int64)
    valid = np.arange(K)[None, :] < counts[:, None]
    gaps = np.diff(np.concatenate([np.zeros((T, 1), np.int64), q], axis=1), axis=1)
    rank = np.broadcast_to(np.arange(K), gaps.shape)
    key = rank[valid] * (1 << 40) + np.minimum(gaps[valid], (1 << 40) - 1)
    gap_bits = entropy_bits(key) - entropy_bits(rank[valid])   # H(gap | rank) summed over entries
    # A richer context: the rank and the row's slope so far, (Q_{r-1} - Q_0) / ln r in 32 bins,
    # which tracks how fast this position's distribution falls off (the generator's beta).
    drop = np.concatenate([np.zeros((T, 1)), (q[:, :-1] - q[:, :1]).astype(np.float64)], axis=1)
    slope = np.where(rank >= 2, drop / np.log(np.maximum(rank, 2)), -1.0)
    sbin = np.where(slope < 0, 0, 1 + np.minimum(31, (slope / 12.5).astype(np.int64)))
    ctx = rank * 64 + sbin
    key2 = ctx[valid] * (1 << 40) + np.minimum(gaps[valid], (1 << 40) - 1)
    gap_bits = min(gap_bits, entropy_bits(key2) - entropy_bits(ctx[valid]))
    tie_bits = 0.0
    for t in range(T):
        _, g = np.unique(q[t, :counts[t]], return_counts=True)
        tie_bits += sum(math.lgamma(x + 1) for x in g if x > 1) / math.log(2)

    out = {"tokens": T, "stored_bytes_per_token": stored,
           "ids_order0_bytes_per_token": id_bits / 8 / T, "logprob_gaps_given_rank_bytes_per_token": gap_bits / 8 / T,
           "tie_order_bytes_per_token": tie_bits / 8 / T}
    m = re.fullmatch(r"synthetic-(\d+)", cache.manifest["fingerprints"]["teacher"])
    if m:
        state = GeneratorState(cache.vocabulary_size, int(m.group(1)))
        bits, covered = oracle_id_bits(cache, state, a.tokens)
        out.update(oracle_ids_bytes_per_token=bits / 8 / covered, oracle_tokens=covered)
    ids = min(out["ids_order0_bytes_per_token"], out.get("oracle_ids_bytes_per_token", math.inf))
    others = sum(v for g, v in stored.items() if g not in ("entry_ids", "entry_logprobs", "entry_id_dict", "entry_refs"))
    floor = ids - out["tie_order_bytes_per_token"] + out["logprob_gaps_given_rank_bytes_per_token"] + others
    out.update(floor_bytes_per_token=floor, stored_total_bytes_per_token=sum(stored.values()))
    if a.parquet:
        out.update(parquet_bytes_per_token=a.parquet, floor_vs_parquet=floor / a.parquet,
                   stored_vs_parquet=out["stored_total_bytes_per_token"] / a.parquet)
    if a.json:
        print(json.dumps(out, indent=1))
        return
    print(f"{a.cache}: {T} tokens, step {h:g} nat")
    print("bytes/token        stored   model")
    ids_stored = sum(v for g, v in stored.items() if g in ("entry_ids", "entry_id_dict", "entry_refs"))
    print(f"entry ids        {ids_stored:8.2f}"
          f"  {out['ids_order0_bytes_per_token']:6.2f} static order-0 per block and band (dictionary free)")
    if "oracle_ids_bytes_per_token" in out:
        print(f"                           {out['oracle_ids_bytes_per_token']:6.2f} generator oracle "
              f"(first {out['oracle_tokens']} tokens)")
    print(f"  tie order                -{out['tie_order_bytes_per_token']:5.2f} at most, if ids of equal log-probs were a set")
    print(f"entry log-probs  {stored.get('entry_logprobs', 0):8.2f}  {out['logprob_gaps_given_rank_bytes_per_token']:6.2f} "
          "gaps given rank and fall-off")
    print(f"other columns    {others:8.2f}  {others:6.2f} (taken as stored)")
    print(f"total            {out['stored_total_bytes_per_token']:8.2f}  {floor:6.2f}")
    if a.parquet:
        print(f"vs parquet+zstd ({a.parquet:.1f} B/token): stored {out['stored_vs_parquet']:.3f}x, "
              f"models {out['floor_vs_parquet']:.3f}x")


if __name__ == "__main__":
    main()
