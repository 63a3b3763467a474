"""Helpers of the package's tests: the Swift `logitcache` binary's path and commands.

Imported as `lc_testing` (not `conftest`: tools/tests has a conftest of its own, and pytest keeps
only one module named `conftest`)."""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def logitcache_bin() -> str:
    """`$LOGITCACHE_BIN`, else `<repo>/.build/release/logitcache`."""
    return os.environ.get("LOGITCACHE_BIN") or os.path.join(REPO, ".build", "release", "logitcache")


def bench_bin() -> str:
    """`logitcache-bench` beside the `logitcache` binary (the same build makes both)."""
    return os.path.join(os.path.dirname(logitcache_bin()), "logitcache-bench")


def _executable(path, what):
    import pytest
    if not os.access(path, os.X_OK):
        pytest.fail(f"no {what} binary at {path}: set LOGITCACHE_BIN (tools/test does)")
    return path


def _session_fixture(function):
    import pytest
    return pytest.fixture(scope="session")(function)


@_session_fixture
def lc_bin():
    """The Swift `logitcache` binary (a fixture; conftest files import it)."""
    return _executable(logitcache_bin(), "logitcache")


@_session_fixture
def bench():
    """The `logitcache-bench` binary built beside it (a fixture; conftest files import it)."""
    return _executable(bench_bin(), "logitcache-bench")


def run(binary, *args, check=True):
    proc = subprocess.run([binary, *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"logitcache {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def synth(binary, out, *args):
    run(binary, "synth", out, *args)
    return str(out)


def parse_dump(text):
    """The output of `logitcache dump --json` (JSON Lines): one JSON object per sequence."""
    # "-0" (a quantised log-prob of exactly 0 is -0.0) must stay a negative zero, not int 0.
    parse_int = lambda text: -0.0 if text == "-0" else int(text)
    return [json.loads(line, parse_int=parse_int) for line in text.splitlines() if line.strip()]


def swift_dump(binary, cache):
    """`logitcache dump --json`: one JSON object per sequence."""
    return parse_dump(run(binary, "dump", cache, "--json").stdout)


def flatten_dump(lines):
    """A dump (`parse_dump`) as flat arrays in global token order (plus per-sequence metadata)."""
    import numpy as np
    meta, inp, nxt, lse = [], [], [], []
    ecount, eids, elps, scount, sids, sdraws = [], [], [], [], [], []
    for i, seq in enumerate(lines):
        assert seq["sequence"] == i
        assert len(seq["tokens"]) == seq["length"]
        meta.append((seq["document_key"], seq["document_offset"], seq["length"]))
        for tok in seq["tokens"]:
            inp.append(tok["input"])
            nxt.append(tok["next"])
            lse.append(tok["lse"])
            ecount.append(len(tok["ids"]))
            assert len(tok["ids"]) == len(tok["logprobs"])
            eids += tok["ids"]
            elps += tok["logprobs"]
            scount.append(len(tok.get("sample_ids", [])))
            sids += tok.get("sample_ids", [])
            sdraws += tok.get("sample_draws", [])
    # JSON doubles are widened float32s; non-finite values come as the strings "inf", "-inf", "nan".
    f32 = lambda xs: np.array([float(x) for x in xs], dtype=np.float64).astype(np.float32)
    return meta, dict(input_ids=np.array(inp, np.int64), next_logprob=f32(nxt), logsumexp=f32(lse),
                      entry_counts=np.array(ecount, np.int64), entry_ids=np.array(eids, np.int64),
                      entry_logprobs=f32(elps), sample_counts=np.array(scount, np.int64),
                      sample_ids=np.array(sids, np.int64), sample_draws=np.array(sdraws, np.int64))


def assert_same_floats(ours, theirs, what):
    import numpy as np
    assert ours.dtype == np.float32 and ours.shape == theirs.shape, what
    same = ours.view(np.uint32) == theirs.view(np.uint32)  # bit-exact, down to the sign of zero
    assert same.all(), f"{what}: first difference at {int(np.argmin(same))}: {ours[~same][:5]} vs {theirs[~same][:5]}"


def assert_matches_dump(cache, lines):
    """Every value the pure reader `cache` (a `logitcache.reader.Cache`) decodes equals the dump
    `lines`; returns its rows."""
    import numpy as np
    meta, want = flatten_dump(lines)
    assert cache.sequences == len(meta)
    for i, (key, offset, length) in enumerate(meta):
        info = cache.sequence_info(i)
        assert (info.document_key, info.document_offset, info.length) == (key, offset, length), f"sequence {i}"
    rows = cache.read()
    assert rows.tokens == cache.tokens == len(want["input_ids"])
    assert np.array_equal(rows.input_ids, want["input_ids"])
    assert_same_floats(rows.next_logprob, want["next_logprob"], "next_logprob")
    assert_same_floats(rows.logsumexp, want["logsumexp"], "logsumexp")
    assert np.array_equal(rows.entry_counts, want["entry_counts"])
    assert np.array_equal(rows.entry_ids, want["entry_ids"])
    assert_same_floats(rows.entry_logprobs, want["entry_logprobs"], "entry log-probs")
    assert np.array_equal(rows.sample_counts, want["sample_counts"])
    assert np.array_equal(rows.sample_ids, want["sample_ids"])
    assert np.array_equal(rows.sample_draws, want["sample_draws"])
    return rows


FINGERPRINTS = {"teacher": "test-teacher", "tokenizer": "test-tokenizer", "corpus": "test-corpus"}


def random_rows(rng, n: int, vocab: int, k: int, samples: int = 0, head_tail: bool = False, variable: bool = True):
    """n positions of teacher-like rows for `CacheWriter.append`, as a dict of its arguments.

    Entries: k distinct ids per position (fewer at random when `variable`), log-probs of a
    random distribution in descending order, -1 / 0 past the count. With `samples` draws,
    sampled ids and draw counts (from the whole distribution, or only from ids outside the
    head when `head_tail`), -1 past each position's distinct count."""
    import numpy as np
    counts = rng.integers(0, k + 1, n) if variable else np.full(n, k)
    if variable and n:
        counts[rng.random(n) < 0.5] = k
    ids = np.full((n, k), -1, np.int32)
    lps = np.zeros((n, k), np.float32)
    width = max(1, samples)
    sids = np.full((n, width), -1, np.int32)
    sdraws = np.zeros((n, width), np.uint32)
    for i in range(n):
        c = int(counts[i])
        chosen = rng.choice(vocab, size=c + 8, replace=False)
        p = np.sort(rng.dirichlet(np.full(c + 1, 0.3)))[::-1] * rng.uniform(0.5, 1.0)
        ids[i, :c] = chosen[:c]
        lps[i, :c] = np.log(np.maximum(p[:c], 1e-30))
        if samples:
            pool = chosen[c:] if head_tail else chosen
            w = rng.dirichlet(np.ones(len(pool)))
            u, d = np.unique(rng.choice(pool, size=samples, p=w), return_counts=True)
            sids[i, :len(u)], sdraws[i, :len(u)] = u, d
    out = {"input_ids": rng.integers(0, vocab, n).astype(np.int32),
           "next_token_logprobs": -rng.exponential(2.0, n).astype(np.float32),
           "logsumexps": rng.normal(5.0, 2.0, n).astype(np.float32),
           "entry_ids": ids, "entry_logprobs": lps}
    if samples:
        out.update(sample_ids=sids, sample_draws=sdraws)
    return out


def write_cache(path, *, vocab=500, k=8, policy="top-k", temperature=1.0, samples=0, lengths=(300, 250, 40, 1, 200),
                seed=0, capture_seed=0, block_tokens=64, partition=0, partition_count=1, finish=True, **options):
    """Writes random rows (drawn with `seed`) with `logitcache.CacheWriter` (needs the native
    library); returns the list of (document key, rows dict) written, in order. Sequence i gets
    document key i + 1 and document offset 10 i."""
    import numpy as np
    import logitcache
    rng = np.random.default_rng(seed)
    capture = {"policy": policy, "k": k, "samples": samples, "temperature": temperature, "seed": capture_seed}
    if policy == "top-p":
        capture["topP"] = 0.9
    written = []
    w = logitcache.CacheWriter(path, vocabulary_size=vocab, fingerprints=FINGERPRINTS, capture=capture,
                               partition=partition, partition_count=partition_count, block_tokens=block_tokens, **options)
    for i, n in enumerate(lengths):
        rows = random_rows(rng, n, vocab, k, samples, head_tail=policy == "head-tail")
        if i < w.resumed_sequences:
            continue
        w.begin_sequence(i + 1, 10 * i)
        w.append(**rows)
        w.end_sequence()
        written.append((i + 1, rows))
    if finish:
        w.finish()
    else:
        w.close()
    return written


# Reads a whole cache and a loader epoch through one backend and verifies it, in a fresh
# interpreter; prints what happened as JSON (a crash shows as the process's exit status).
PROBE = r"""
import json, sys, logitcache as lc
path, backend = sys.argv[1], sys.argv[2]
out = {}
def attempt(what, fn):
    try:
        fn()
        out[what] = "ok"
    except (lc.CacheError, lc.LoaderError) as e:
        out[what] = f"{type(e).__name__}: {e}"
def read():
    with lc.Cache(path, backend=backend) as c:
        c.read()
        c.read_samples()
def load():
    l = lc.StudentLoader(path, backend=backend, batch_size=2, context=64, k=min(2, lc.Cache(path, backend=backend).max_entries))
    l.take(l.batches_in_epoch)
attempt("read", read)
attempt("loader", load)
out["verify"] = lc.verify(path, backend=backend)
print(json.dumps(out))
"""


def probe(path, backend):
    """`PROBE` on `path`: {"read": "ok" | "CacheError: ...", "loader": ..., "verify": report}."""
    proc = subprocess.run([sys.executable, "-c", PROBE, str(path), backend], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, f"the interpreter died ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)
