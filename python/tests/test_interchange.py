"""Parquet export / import (`logitcache.parquet`) and the vLLM `prompt_logprobs` import
(`logitcache.vllm`): round trips decode to identical values, the files are plain Parquet that
pyarrow and `datasets` read, and malformed input is a CacheError naming the file and row."""

import json
import os

import numpy as np
import pytest

import logitcache as lc
from logitcache import parquet as lcp
from logitcache import vllm as lcv
from lc_testing import FINGERPRINTS, logitcache_bin, synth, write_cache

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROW_FIELDS = ("input_ids", "next_token_logprobs", "logsumexps", "entry_counts", "entry_ids", "entry_logprobs")


def same_caches(a: str, b: str):
    with lc.Cache(a) as x, lc.Cache(b) as y:
        assert (x.tokens, x.sequences, x.max_entries, x.max_samples) == (y.tokens, y.sequences, y.max_entries, y.max_samples)
        for s in range(x.sequences):
            assert x.sequence(s).length == y.sequence(s).length
            assert x.sequence(s).document_key == y.sequence(s).document_key
            assert x.sequence(s).document_offset == y.sequence(s).document_offset
        rx, ry = x.read(), y.read()
        for f in ROW_FIELDS:
            assert np.array_equal(getattr(rx, f), getattr(ry, f)), f
        sx, sy = x.read_samples(), y.read_samples()
        for u, v in zip(sx, sy):
            assert np.array_equal(u, v)
        return x.manifest, y.manifest


@pytest.mark.parametrize("kind", ["synth-sampled", "written-quantized", "written-float32"])
def test_parquet_round_trip_is_identical(tmp_path, kind):
    src = str(tmp_path / "src")
    if kind == "synth-sampled":
        synth(logitcache_bin(), src, "--tokens", 5000, "--seq-len", 700, "--k", 12, "--vocab", 3000, "--sampled",
              "--draws", 16, "--block-tokens", 512)
    else:
        write_cache(src, lengths=(300, 250, 40, 1, 200), log_probs=None if kind == "written-quantized" else "float32")
    out = str(tmp_path / "cache.parquet")
    seen = []
    info = lcp.export_parquet(src, out, progress=lambda done, total: seen.append((done, total)))
    with lc.Cache(src) as c:
        assert info["rows"] == c.tokens and info["sequences"] == c.sequences
        assert seen[-1] == (c.tokens, c.tokens)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    back = str(tmp_path / "back")
    m = lcp.import_parquet(out, back)
    assert m["origin"]["tool"] == "logitcache import-parquet"
    a, b = same_caches(src, back)
    assert a["fingerprints"] == b["fingerprints"] and a["capture"] == b["capture"]
    assert lc.verify(back)["sound"]


def test_parquet_is_plain_parquet_for_pyarrow_and_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    src = str(tmp_path / "src")
    written = write_cache(src, lengths=(30, 20), k=6)
    out = str(tmp_path / "c.parquet")
    lcp.export_parquet(src, out, k=4)
    t = pq.read_table(out)
    assert t.schema.equals(lcp.schema(False), check_metadata=False)
    assert t.num_rows == 50
    key, rows = written[1]
    row = t.slice(30, 1).to_pylist()[0]
    assert row["sequence"] == 1 and row["position"] == 0 and row["document_offset"] == 10
    assert row["document_key"] == f"{key:032x}"
    c = int((rows["entry_ids"][0] >= 0).sum())
    assert row["topk_ids"] == rows["entry_ids"][0, :min(c, 4)].tolist()
    np.testing.assert_allclose(row["topk_logprobs"], rows["entry_logprobs"][0, :min(c, 4)], atol=0.02)
    assert row["input_id"] == rows["input_ids"][0]
    ds = datasets.load_dataset("parquet", data_files=out, split="train")
    assert len(ds) == 50 and ds[30]["topk_ids"] == row["topk_ids"] and ds[30]["document_key"] == row["document_key"]
    # A k = 4 export imports as a K = 4 cache when the capture is given (the manifest says K = 6).
    back = str(tmp_path / "back")
    lcp.import_parquet(out, back, capture={"policy": "top-k", "k": 4, "temperature": 1.0})
    with lc.Cache(src) as x, lc.Cache(back) as y:
        assert y.max_entries == 4
        assert np.array_equal(x.read(k=4).entry_ids, y.read().entry_ids)


def test_parquet_from_another_tool_needs_settings_and_checks_order(tmp_path):
    rows = {"sequence": [0, 0, 0, 1, 1], "position": [0, 1, 2, 0, 1], "document_key": ["0" * 31 + "1"] * 3 + ["0" * 31 + "2"] * 2,
            "document_offset": [0] * 5, "input_id": [5, 6, 7, 8, 9],
            "topk_ids": [[3, 4], [4], [], [1, 2, 3], [9]],
            "topk_logprobs": [[-0.5, -1.5], [-0.1], [], [-1.0, -1.2, -2.0], [-0.7]],
            "logsumexp": [1.0] * 5, "next_token_logprob": [-2.0, -0.1, -3.0, -1.2, -0.7]}
    path = str(tmp_path / "foreign.parquet")
    pq.write_table(pa.table(rows, schema=lcp.schema(False)), path)
    with pytest.raises(lc.CacheError, match="pass vocabulary_size and fingerprints"):
        lcp.import_parquet(path, str(tmp_path / "a"))
    m = lcp.import_parquet(path, str(tmp_path / "b"), vocabulary_size=300, fingerprints=FINGERPRINTS)
    assert m["capture"]["k"] == 3 and m["totals"]["tokens"] == 5
    with lc.Cache(str(tmp_path / "b")) as c:
        r = c.read()
        assert r.entry_counts.tolist() == [2, 1, 0, 3, 1] and r.entry_ids[3].tolist() == [1, 2, 3]
    bad = dict(rows, position=[0, 2, 1, 0, 1])
    pq.write_table(pa.table(bad, schema=lcp.schema(False)), path)
    with pytest.raises(lc.CacheError, match=r"foreign.parquet: row 1: sequence 0 position 2, expected 1"):
        lcp.import_parquet(path, str(tmp_path / "c"), vocabulary_size=300, fingerprints=FINGERPRINTS)
    bad = dict(rows, sequence=[0, 0, 0, 1, 0], position=[0, 1, 2, 0, 3])
    pq.write_table(pa.table(bad, schema=lcp.schema(False)), path)
    with pytest.raises(lc.CacheError, match="sequence 0 appears again"):
        lcp.import_parquet(path, str(tmp_path / "d"), vocabulary_size=300, fingerprints=FINGERPRINTS)
    bad = dict(rows, topk_ids=[[3, 4], [4], [], [1, 2, 3], [400]])
    pq.write_table(pa.table(bad, schema=lcp.schema(False)), path)
    with pytest.raises(lc.CacheError, match="sequence 1"):
        lcp.import_parquet(path, str(tmp_path / "e"), vocabulary_size=300, fingerprints=FINGERPRINTS)
    pq.write_table(pa.table({"sequence": [0]}), path)
    with pytest.raises(lc.CacheError, match="missing columns"):
        lcp.import_parquet(path, str(tmp_path / "f"))
    with open(path, "wb") as f:
        f.write(b"not parquet")
    with pytest.raises(lc.CacheError, match="not a readable Parquet file"):
        lcp.import_parquet(path, str(tmp_path / "g"))


# -- vLLM


def vllm_record(rng, n: int, vocab: int, top_n: int, ranks: bool = True, sixth_at=()) -> dict:
    """A prompt of n tokens scored as vLLM's prompt_logprobs returns it: position 0 null, then the
    top N of a random distribution (ranks 1..N) plus the prompt token when it is outside them.
    At positions `sixth_at` the prompt token is the (N+1)-th most probable."""
    ids = rng.integers(0, vocab, n).tolist()
    out = [None]
    for t in range(1, n):
        logits = rng.normal(0, 3, vocab)
        lp = logits - np.logaddexp.reduce(logits)
        order = np.argsort(-lp, kind="stable")
        rank = {int(tok): r + 1 for r, tok in enumerate(order)}
        if t in sixth_at:
            ids[t] = int(order[top_n])
        chosen = [int(x) for x in order[:top_n]]
        if ids[t] not in chosen:
            chosen.append(ids[t])
        out.append({str(tok): ({"logprob": float(lp[tok]), "rank": rank[tok], "decoded_token": f"<{tok}>"} if ranks
                               else float(lp[tok])) for tok in chosen})
    return {"prompt": "...", "prompt_token_ids": ids, "prompt_logprobs": out}


def test_vllm_import_matches_the_records(tmp_path):
    rng = np.random.default_rng(3)
    # Position 7 of the first prompt: the prompt token is the sixth most probable.
    records = [vllm_record(rng, n, 400, 5, sixth_at=(7,) if n == 30 else ()) for n in (30, 12, 1, 20)]
    path = str(tmp_path / "vllm.jsonl")
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    out = str(tmp_path / "cache")
    m = lcv.import_vllm(path, out, vocabulary_size=400, tokenizer_fingerprint="xxh3:0123456789abcdef", teacher="tiny")
    assert m["capture"]["k"] == 6  # the top five, and the prompt token where its rank 6 continues the run
    assert m["origin"]["tool"] == "logitcache import-vllm" and "logsumexp" in m["origin"]["note"]
    assert m["fingerprints"]["teacher"] == "vllm:tiny"
    assert lc.verify(out)["sound"]
    with lc.Cache(out) as c:
        assert c.sequences == 3 and c.tokens == 29 + 11 + 19
        s = 0
        for rec in records:
            ids = rec["prompt_token_ids"]
            if len(ids) < 2:
                continue
            q = c.sequence(s)
            r = c.read(q.start, q.start + q.length)
            assert r.input_ids.tolist() == ids[:-1]
            for t in range(1, len(ids)):
                d = rec["prompt_logprobs"][t]
                ranked = sorted(d.items(), key=lambda kv: kv[1]["rank"])
                top = [int(tok) for tok, v in ranked if v["rank"] <= 5 or (v["rank"] == 6 and len(d) == 6)]
                got = r.entry_ids[t - 1, :r.entry_counts[t - 1]].tolist()
                assert got == top
                np.testing.assert_allclose(r.entry_logprobs[t - 1, :len(top)], [d[str(x)]["logprob"] for x in top],
                                           atol=0.02)
                assert abs(r.next_token_logprobs[t - 1] - d[str(ids[t])]["logprob"]) < 1e-6
                assert r.logsumexps[t - 1] == 0
            key = f"{__import__('xxhash').xxh3_128_intdigest(np.asarray(ids, '<u4').tobytes()):032x}"
            assert q.document_key == key
            s += 1
    # Plain numbers carry no rank: top_n says N; the same file as a JSON array.
    plain = [vllm_record(np.random.default_rng(4), 15, 400, 4, ranks=False)]
    with open(path, "w") as f:
        json.dump(plain, f)
    with pytest.raises(lc.CacheError, match="pass top_n"):
        lcv.import_vllm(path, str(tmp_path / "p0"), vocabulary_size=400, tokenizer_fingerprint="t")
    m = lcv.import_vllm(path, str(tmp_path / "p1"), vocabulary_size=400, tokenizer_fingerprint="t", top_n=4)
    assert m["capture"]["k"] == 4


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(prompt_logprobs=r["prompt_logprobs"][:-1]), "prompt_logprobs has 9 entries for 10 prompt tokens"),
    (lambda r: r["prompt_logprobs"][3].clear(), "position 3: expected a non-empty object"),
    (lambda r: r["prompt_logprobs"][2].pop(str(r["prompt_token_ids"][2])), "position 2: the prompt token"),
    (lambda r: next(iter(r["prompt_logprobs"][4].values())).update(logprob=float("nan")), "position 4: token .* log-prob nan"),
    (lambda r: next(iter(r["prompt_logprobs"][4].values())).update(logprob=0.5), "is not a number <= 0"),
    (lambda r: r.update(prompt_token_ids=[-1] * 10), "non-negative integers"),
    (lambda r: r["prompt_logprobs"][5].update({"x": {"logprob": -1.0, "rank": 9}}), "token id 'x' is not an integer"),
])
def test_vllm_import_names_what_is_wrong(tmp_path, edit, message):
    rec = vllm_record(np.random.default_rng(5), 10, 300, 3)
    edit(rec)
    path = str(tmp_path / "bad.jsonl")
    with open(path, "w") as f:
        f.write(json.dumps(vllm_record(np.random.default_rng(6), 8, 300, 3)) + "\n\n" + json.dumps(rec) + "\n")
    with pytest.raises(lc.CacheError, match=r"bad.jsonl:3: .*" + message):
        lcv.import_vllm(path, str(tmp_path / "out"), vocabulary_size=300, tokenizer_fingerprint="t")
    assert not os.path.exists(os.path.join(tmp_path, "out", "manifest.json"))


def test_origin_is_recorded_and_merged_across_programs(tmp_path):
    """Partitions written by different programs merge; the merged origin lists both, and both
    readers accept it."""
    out = str(tmp_path / "cache")
    for p, origin in enumerate([{"tool": "logitcache teacher", "device": "cpu"},
                                {"tool": "logitcache capture", "teacher": "tiny", "device": "cuda:0"}]):
        write_cache(out, lengths=(20, 30), seed=p, partition=p, partition_count=2, origin=origin)
        with open(os.path.join(out, f"manifest.part-{p:05d}.json")) as f:
            assert json.load(f)["origin"] == origin
    merged = lc.merge(out)
    assert merged["origin"] == {"tool": "logitcache teacher + logitcache capture", "teacher": "tiny",
                                "device": "cpu + cuda:0"}
    for backend in ("native", "pure"):
        with lc.Cache(out, backend=backend) as c:
            assert c.manifest["origin"] == merged["origin"] and c.tokens == 100


def test_command_line(tmp_path):
    """`python -m logitcache`: export, import back, and a one-line error for a bad file."""
    import subprocess
    import sys
    src = str(tmp_path / "src")
    write_cache(src, lengths=(40, 7))
    out, back = str(tmp_path / "x.parquet"), str(tmp_path / "back")
    run = lambda *a: subprocess.run([sys.executable, "-m", "logitcache", *a], capture_output=True, text=True)  # noqa: E731
    r = run("export-parquet", src, out)
    assert r.returncode == 0 and json.loads(r.stdout)["rows"] == 47 and "rows: 47/47" in r.stderr
    r = run("import-parquet", out, back)
    assert r.returncode == 0 and json.loads(r.stdout)["tokens"] == 47
    same_caches(src, back)
    r = run("import-vllm", out, str(tmp_path / "v"), "--vocabulary-size", "500", "--tokenizer-fingerprint", "t")
    assert r.returncode == 1 and r.stderr.startswith("logitcache import-vllm: ") and "x.parquet" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
