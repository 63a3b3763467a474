"""`logitcache.capture`: a transformers teacher captured tile by tile into a cache.

- parity with the Swift pass on the built-in teacher (CPU, float32): same windows, same top-K ids
  wherever neighbours differ by more than 1e-4, log-probs within one quantisation step,
  logsumexp within 1e-4; partitions of both sides merge;
- tiny random Gemma-2, Phi-3 and Mixtral models (architectures the Swift engine does not load) with a
  SentencePiece-style byte-fallback tokenizer: the stored entries equal torch.topk / log_softmax
  of the model's own logits;
- the sampling policies' rules, draws independent of the batch layout, and kill-and-rerun giving
  byte-identical shards.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import logitcache as lc  # noqa: E402
from logitcache import capture as lcc  # noqa: E402
from lc_testing import REPO, logitcache_bin, run  # noqa: E402

DATA = os.path.join(REPO, "Data")


def corpus_file(tmp_path, lines: int = 12) -> str:
    """A few documents of the built-in corpus as JSON Lines."""
    import zstandard
    with open(os.path.join(DATA, "corpus", "student-train.jsonl.zst"), "rb") as f:
        text = zstandard.ZstdDecompressor().stream_reader(f).read(1 << 20).decode("utf-8", "ignore")
    docs = [line for line in text.splitlines() if line.strip().startswith("{")][:lines]
    path = str(tmp_path / "docs.jsonl")
    with open(path, "w") as f:
        f.write("\n".join(docs) + "\n")
    return path


def builtin_model(tmp_path) -> str:
    """Data/teacher with Data/tokenizer.json beside it (a transformers model directory)."""
    d = str(tmp_path / "teacher")
    shutil.copytree(os.path.join(DATA, "teacher"), d)
    shutil.copy(os.path.join(DATA, "tokenizer.json"), d)
    return d


def gaps_ok(lps: np.ndarray, j: int, count: int) -> bool:
    """Entry j's order is determined: its neighbours' log-probs differ from it by > 1e-4."""
    left = j == 0 or lps[j - 1] - lps[j] > 1e-4
    right = j + 1 >= count or lps[j] - lps[j + 1] > 1e-4
    return left and right


def test_capture_matches_the_swift_pass_and_merges_with_it(tmp_path):
    model = builtin_model(tmp_path)
    docs = corpus_file(tmp_path)
    swift, py = str(tmp_path / "swift"), str(tmp_path / "py")
    run(logitcache_bin(), "teacher", "--model", model, "--tokenizer", os.path.join(model, "tokenizer.json"),
        "--corpus", docs, "--out", swift, "--context", 64, "--top-k", 16, "--threads", 2)
    r = lcc.capture(model, [docs], py, context=64, policy=lcc.Policy("top-k", 16), windows_per_batch=3, vocab_tile=3000)
    assert r.tokens > 500 and 0 < r.mean_captured_mass <= 1
    assert lc.verify(swift)["sound"] and lc.verify(py)["sound"]
    with lc.Cache(swift) as a, lc.Cache(py) as b:
        assert a.manifest["fingerprints"] == b.manifest["fingerprints"]
        assert a.manifest["capture"] == b.manifest["capture"]
        assert b.manifest["origin"]["tool"] == "logitcache capture" and b.manifest["origin"]["device"] == "cpu"
        assert (a.sequences, a.tokens) == (b.sequences, b.tokens)
        for s in range(a.sequences):
            qa, qb = a.sequence(s), b.sequence(s)
            assert (qa.document_key, qa.document_offset, qa.length) == (qb.document_key, qb.document_offset, qb.length)
        x, y = a.read(), b.read()
        assert np.array_equal(x.input_ids, y.input_ids)
        assert np.abs(x.logsumexps - y.logsumexps).max() < 1e-4
        step = 5 * 2.0 ** -8  # the default quantisation step
        assert np.abs(x.next_token_logprobs - y.next_token_logprobs).max() <= step + 1e-4
        checked = 0
        for t in range(a.tokens):
            c = int(x.entry_counts[t])
            assert c == y.entry_counts[t] == 16
            exact = x.entry_logprobs[t, :c]
            assert np.abs(exact - y.entry_logprobs[t, :c]).max() <= step + 1e-4
            for j in range(c):
                if gaps_ok(exact, j, c):
                    assert x.entry_ids[t, j] == y.entry_ids[t, j], (t, j)
                    checked += 1
        assert checked > 0.5 * a.tokens * 16
    # Partitions from either side merge into one cache equal to a single run's windows.
    mixed = str(tmp_path / "mixed")
    run(logitcache_bin(), "teacher", "--model", model, "--tokenizer", os.path.join(model, "tokenizer.json"),
        "--corpus", docs, "--out", mixed, "--context", 64, "--top-k", 16, "--partition", "0/2")
    lcc.capture(model, [docs], mixed, context=64, policy=lcc.Policy("top-k", 16), partition="1/2")
    merged = lc.merge(mixed)
    assert merged["origin"]["tool"] == "logitcache teacher + logitcache capture"
    with lc.Cache(mixed) as m, lc.Cache(swift) as a:
        assert m.tokens == a.tokens and np.array_equal(m.read().input_ids, a.read().input_ids)
    # A rerun with other settings is refused before anything is written.
    with pytest.raises(lc.CacheError, match="capture settings"):
        lcc.capture(model, [docs], py, context=64, policy=lcc.Policy("top-k", 8))


def byte_fallback_tokenizer(directory: str, text: str) -> int:
    """A SentencePiece-style tokenizer (BPE with byte fallback and a metaspace pre-tokenizer, as
    Llama's and Gemma's tokenizer.json are) trained on `text`, saved as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"] + bytes_)
    tok.train_from_iterator([text], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(directory)
    return len(fast)


def tiny_model(tmp_path, kind: str, text: str) -> str:
    d = str(tmp_path / kind)
    os.makedirs(d)
    vocab = byte_fallback_tokenizer(d, text)
    torch.manual_seed(0)
    common = dict(vocab_size=vocab + 5, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if kind == "gemma2":
        cfg = transformers.Gemma2Config(head_dim=16, final_logit_softcapping=5.0, query_pre_attn_scalar=16,
                                        sliding_window=32, **common)
    elif kind == "mixtral":  # a mixture of experts
        cfg = transformers.MixtralConfig(num_local_experts=4, num_experts_per_tok=2, **common)
    else:
        cfg = transformers.Phi3Config(**common)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():  # logits spread enough to have distinct top entries
        model.get_output_embeddings().weight.mul_(8.0)
    model.save_pretrained(d)
    return d


@pytest.mark.parametrize("kind", ["gemma2", "phi3", "mixtral"])
def test_architectures_the_swift_engine_does_not_load(tmp_path, kind):
    text = open(corpus_file(tmp_path, 30)).read()
    model = tiny_model(tmp_path, kind, text)
    docs = corpus_file(tmp_path, 6)
    out = str(tmp_path / "cache")
    lcc.capture(model, [docs], out, context=48, policy=lcc.Policy("top-k", 8), vocab_tile=100,
                writer_options={"log_probs": "float32"})
    net = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    with lc.Cache(out) as c, torch.no_grad():
        assert lc.verify(out)["sound"] and c.vocabulary_size == net.config.vocab_size
        rows = c.read()
        assert c.tokens > 100
        for s in range(c.sequences):
            q = c.sequence(s)
            ids = rows.input_ids[q.start:q.start + q.length]
            logits = net(input_ids=torch.from_numpy(ids.astype(np.int64))[None]).logits[0].float()
            lp = torch.log_softmax(logits, dim=-1)
            top_lp, top_ids = torch.topk(lp, 8, dim=-1)
            got_lp = rows.entry_logprobs[q.start:q.start + q.length]
            got_ids = rows.entry_ids[q.start:q.start + q.length]
            np.testing.assert_allclose(got_lp, top_lp.numpy(), atol=2e-5)
            np.testing.assert_allclose(rows.logsumexps[q.start:q.start + q.length],
                                       torch.logsumexp(logits, -1).numpy(), atol=2e-5)
            for t in range(q.length):
                for j in range(8):
                    if gaps_ok(top_lp[t].numpy(), j, 8):
                        assert got_ids[t, j] == top_ids[t, j]
                if t + 1 < q.length:
                    assert abs(rows.next_token_logprobs[q.start + t] - lp[t, ids[t + 1]]) < 2e-5


def test_policies_follow_the_swift_rules(tmp_path):
    text = open(corpus_file(tmp_path, 30)).read()
    model = tiny_model(tmp_path, "phi3", text)
    docs = corpus_file(tmp_path, 3)
    caches = {}
    for name, policy in {"top-p": lcc.Policy("top-p", 12, top_p=0.5), "sampled": lcc.Policy("sampled", 0, draws=20),
                         "head-tail": lcc.Policy("head-tail", 4, draws=10),
                         "top-k+sampled": lcc.Policy("top-k+sampled", 4, draws=10)}.items():
        out = str(tmp_path / name)
        lcc.capture(model, [docs], out, context=32, policy=policy, seed=7, vocab_tile=64,
                    writer_options={"log_probs": "float32"})
        caches[name] = out
    with lc.Cache(caches["top-p"]) as c:
        r = c.read()
        for t in range(c.tokens):
            n = int(r.entry_counts[t])
            mass = np.cumsum(np.exp(r.entry_logprobs[t, :n].astype(np.float64)))
            assert n == 12 or (mass[-1] >= 0.5 and (n == 1 or mass[-2] < 0.5))
    for name, draws in (("sampled", 20), ("head-tail", 10), ("top-k+sampled", 10)):
        with lc.Cache(caches[name]) as c:
            r, s = c.read(), c.read_samples()
            for t in range(c.tokens):
                ids, counts = s.ids[s.offsets[t]:s.offsets[t + 1]], s.draws[s.offsets[t]:s.offsets[t + 1]]
                assert counts.sum() == draws and len(set(ids.tolist())) == len(ids)
                assert list(counts) == sorted(counts, reverse=True)
                head = set(r.entry_ids[t, :r.entry_counts[t]].tolist())
                if name == "head-tail":
                    assert not head & set(ids.tolist())
    # Draws depend on (seed, stream position) only: another batch layout and vocabulary tile give
    # the same draws (the float sums of another layout may differ in their last bits).
    again = str(tmp_path / "again")
    lcc.capture(model, [docs], again, context=32, policy=lcc.Policy("head-tail", 4, draws=10), seed=7,
                vocab_tile=37, windows_per_batch=1, writer_options={"log_probs": "float32"})
    with lc.Cache(again) as a, lc.Cache(caches["head-tail"]) as b:
        x, y = a.read_samples(), b.read_samples()
        same = sum(np.array_equal(x.ids[x.offsets[t]:x.offsets[t + 1]], y.ids[y.offsets[t]:y.offsets[t + 1]]) and
                   np.array_equal(x.draws[x.offsets[t]:x.offsets[t + 1]], y.draws[y.offsets[t]:y.offsets[t + 1]])
                   for t in range(a.tokens))
        assert same >= 0.999 * a.tokens  # a draw within rounding of a cumulative boundary may move
        assert np.array_equal(a.read().entry_ids, b.read().entry_ids)
        assert np.abs(a.read().entry_logprobs - b.read().entry_logprobs).max() < 1e-5


def test_counter_uniforms_are_the_swift_stream():
    """SplitMix64 over (seed, position) as Sources/Capture/CounterRandom.swift, checked against
    an independent pure-Python evaluation."""
    M = (1 << 64) - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        return z ^ (z >> 31)

    for seed, pos in ((0, 0), (7, 12345), (M, 2 ** 40 + 3)):
        state = mix(((seed ^ 0x6A09E667F3BCC909) + pos * 0x9E3779B97F4A7C15) & M)
        want = []
        for _ in range(5):
            state = (state + 0x9E3779B97F4A7C15) & M
            want.append((mix(state) >> 11) * 2.0 ** -53)
        got = lcc.counter_uniforms(seed, np.array([pos], np.uint64), 5)[0]
        assert got.tolist() == want


def test_a_head_the_capture_does_not_know_is_refused(tmp_path):
    text = open(corpus_file(tmp_path, 30)).read()
    model = tiny_model(tmp_path, "phi3", text)
    net = transformers.AutoModelForCausalLM.from_pretrained(model).eval()
    parts = lcc.model_head(net)
    wrong = lcc.TiledHead(parts["weight"], parts["bias"], scale=2.0)
    inputs = torch.arange(10)[None]
    with torch.no_grad():
        hidden = lcc._decoder(net)(input_ids=inputs).last_hidden_state[0]
        with pytest.raises(lc.CacheError, match="differs from the model's own logits"):
            lcc._check_head(net, wrong, inputs, hidden)
        lcc._check_head(net, lcc.TiledHead(parts["weight"], parts["bias"]), inputs, hidden)


KILLED = r"""
import sys
from logitcache import capture as lcc
lcc.capture(sys.argv[1], [sys.argv[2]], sys.argv[3], context=32, policy=lcc.Policy("top-k+sampled", 6, draws=8),
            seed=3, windows_per_batch=1, vocab_tile=64,
            writer_options={"block_tokens": 64, "target_shard_bytes": 3000})
"""


def test_kill_and_rerun_gives_identical_shards(tmp_path):
    text = open(corpus_file(tmp_path, 30)).read()
    model = tiny_model(tmp_path, "phi3", text)
    docs = corpus_file(tmp_path, 8)
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    subprocess.run([sys.executable, "-c", KILLED, model, docs, whole], check=True, capture_output=True, timeout=600)
    rng = np.random.default_rng(11)
    for attempt in range(3):
        p = subprocess.Popen([sys.executable, "-c", KILLED, model, docs, killed], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(4.0, 9.0)))
        p.send_signal(signal.SIGKILL)
        p.wait()
    subprocess.run([sys.executable, "-c", KILLED, model, docs, killed], check=True, capture_output=True, timeout=600)
    a = sorted(f for f in os.listdir(whole) if f.endswith(".lcs"))
    b = sorted(f for f in os.listdir(killed) if f.endswith(".lcs"))
    assert a == b and len(a) >= 3
    for f in a:
        assert open(os.path.join(whole, f), "rb").read() == open(os.path.join(killed, f), "rb").read(), f
    with open(os.path.join(whole, "manifest.json")) as f, open(os.path.join(killed, "manifest.json")) as g:
        assert json.load(f)["shards"] == json.load(g)["shards"]


def test_command_line_capture_and_benchmark(tmp_path):
    """`python -m logitcache capture`: a cache, a JSON report, a progress line; --benchmark
    reports tokens/s and the share of time outside the model's forward."""
    model = builtin_model(tmp_path)
    docs = corpus_file(tmp_path, 4)
    out = str(tmp_path / "cli")
    cmd = [sys.executable, "-m", "logitcache", "capture", "--model", model, "--corpus", docs, "--out", out,
           "--context", "64", "--top-k", "8", "--head-tail", "5", "--vocab-tile", "4096"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["totals"]["tokens"] == report["tokens"] > 0 and 0 < report["mean_captured_mass"] <= 1
    assert "tokens/s, captured mass" in r.stderr
    with lc.Cache(out) as c:
        assert c.manifest["capture"]["policy"] == "head-tail" and c.max_samples > 0
    bench = subprocess.run(cmd[:-8] + ["--out", str(tmp_path / "bench"), "--context", "64", "--benchmark", "3"],
                           capture_output=True, text=True, timeout=600)
    assert bench.returncode == 0, bench.stderr
    b = json.loads(bench.stdout)
    assert b["tokens"] == 3 * 64 and b["tokens_per_second"] > 0 and 0 <= b["outside_forward_share"] < 1
    bad = subprocess.run(cmd[:8] + ["--out", out, "--top-p", "0.5", "--sampled", "3"], capture_output=True, text=True)
    assert bad.returncode == 1 and "choose one policy" in bad.stderr


def test_partition_from_the_scheduler_environment(tmp_path, monkeypatch):
    """Without --partition, a Slurm job array or a Kubernetes Indexed Job picks the part."""
    model = builtin_model(tmp_path)
    docs = corpus_file(tmp_path, 3)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    r = lcc.capture(model, [docs], str(tmp_path / "slurm"), context=64, policy=lcc.Policy("top-k", 4))
    assert r.manifest["partition"] == {"index": 1, "count": 3}
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    with pytest.raises(ValueError, match="JOB_COMPLETION_INDEX"):
        lcc.capture(model, [docs], str(tmp_path / "k8s"), context=64, policy=lcc.Policy("top-k", 4))
    r = lcc.capture(model, [docs], str(tmp_path / "k8s"), context=64, policy=lcc.Policy("top-k", 4), partition_count=3)
    assert r.manifest["partition"] == {"index": 2, "count": 3}
