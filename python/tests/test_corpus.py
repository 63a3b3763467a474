"""`logitcache.corpus` against the Swift teacher pass: the same documents, token stream, windows,
partitions, fingerprints and error messages as `logitcache teacher` on the same corpus.

Every expected value comes from running the Swift CLI (`$LOGITCACHE_BIN`) on files written here;
the caches it writes are read back with `logitcache.Cache`. Edge-case runs use `--context 1`, so
every token of the stream is a cached window and every document's key is seen.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lc_testing import REPO


def _corpus_module():
    """The installed `logitcache.corpus`, or the source tree's when the installed package lacks it
    or holds another version of it (the module has no native part, so the tree's is the one to
    test)."""
    source = os.path.join(REPO, "python", "logitcache", "corpus.py")
    try:
        from logitcache import corpus as installed
    except ImportError:
        installed = None
    if not os.path.exists(source):
        return installed
    if installed is not None:
        with open(installed.__file__, "rb") as a, open(source, "rb") as b:
            if a.read() == b.read():
                return installed
    spec = importlib.util.spec_from_file_location("_logitcache_corpus_source", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


lcc = _corpus_module()

import logitcache as lc

tokenizers = pytest.importorskip("tokenizers")
zstandard = pytest.importorskip("zstandard")

DATA = os.path.join(REPO, "Data")
MODEL = os.path.join(DATA, "teacher")
TOKENIZER = os.path.join(DATA, "tokenizer.json")
SCHEDULER_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX")


# MARK: - Helpers

@pytest.fixture(scope="module")
def tok():
    return tokenizers.Tokenizer.from_file(TOKENIZER)


@pytest.fixture(scope="module")
def vocab():
    with open(os.path.join(MODEL, "config.json")) as f:
        return int(json.load(f)["vocab_size"])


def encoder(tok):
    return lambda text: tok.encode(text, add_special_tokens=False).ids


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in SCHEDULER_VARS}
    env.update(extra)
    return env


def run_teacher(lc_bin, out, corpus, context, *extra, env=None):
    """`logitcache teacher` on `corpus`; the CompletedProcess (not checked)."""
    if os.path.exists(out):
        shutil.rmtree(out)
    args = [lc_bin, "teacher", "--model", MODEL, "--tokenizer", TOKENIZER, *sum((["--corpus", c] for c in corpus), []),
            "--out", str(out), "--context", str(context), "--top-k", "1", "--threads", "2", *map(str, extra)]
    return subprocess.run(args, capture_output=True, text=True, env=env or clean_env())


def swift_error(proc):
    assert proc.returncode != 0, f"the Swift pass succeeded:\n{proc.stdout}"
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert lines, proc.stderr
    return lines[-1][len("Error: "):]


def swift_sequences(lc_bin, out, corpus, context, *extra):
    """Runs the Swift pass and reads its cache: (fingerprints, [(key hex, offset, input ids)])."""
    proc = run_teacher(lc_bin, out, corpus, context, *extra)
    assert proc.returncode == 0, proc.stderr
    return read_cache(out)


def read_cache(out):
    with lc.Cache(out) as cache:
        ids = cache.read(0, cache.tokens, k=0).input_ids
        seqs = []
        for i in range(cache.sequences):
            s = cache.sequence(i)
            seqs.append((s.document_key, s.document_offset, ids[s.start:s.start + s.length].tolist()))
        return cache.manifest["fingerprints"], seqs


def python_sequences(stream, context, partition=None):
    out = []
    for win in stream.windows(context, partition):
        inputs, targets = stream.window_tokens(win.index, context)
        assert np.array_equal(targets[:-1], inputs[1:])
        out.append((win.key_hex, win.document_offset, inputs.tolist()))
    return out


def python_error(fn, *args, **kwargs):
    with pytest.raises(lcc.CorpusError) as e:
        fn(*args, **kwargs)
    return str(e.value)


def python_pass(tok, vocab, corpus, blank_line=False, text_field="text"):
    stream = lcc.tokenize_corpus(corpus, encoder(tok), lcc.end_of_text_id(tok), vocab, text_field=text_field,
                                 blank_line_documents=blank_line)
    return stream


def assert_same_pass(lc_bin, tmp_path, tok, vocab, corpus, context, blank_line=False, text_field="text", name="out"):
    """The Swift pass and the Python stream agree on every window and on all three fingerprints."""
    extra = (["--blank-line-docs"] if blank_line else []) + (["--text-field", text_field] if text_field != "text" else [])
    fp, swift = swift_sequences(lc_bin, tmp_path / name, corpus, context, *extra)
    stream = python_pass(tok, vocab, corpus, blank_line, text_field)
    mine = python_sequences(stream, context)
    if [s[0] for s in swift] != [m[0] for m in mine]:  # name the first differing window
        first = next(i for i, (a, b) in enumerate(zip(swift, mine)) if a[0] != b[0]) if len(swift) == len(mine) else -1
        pytest.fail(f"document keys differ (windows {len(swift)} vs {len(mine)}), first at window {first}")
    assert swift == mine
    assert fp["corpus"] == lcc.corpus_fingerprint(stream, context)
    assert fp["tokenizer"] == lcc.tokenizer_fingerprint(TOKENIZER)
    assert fp["teacher"] == lcc.teacher_fingerprint(MODEL)
    return stream, swift


def chapters(n, start=0):
    """n lines of the student-train corpus (JSON Lines bytes, one chapter per line)."""
    with open(os.path.join(DATA, "corpus", "student-train.jsonl.zst"), "rb") as f:
        data = zstandard.ZstdDecompressor().decompressobj().decompress(f.read())
    return data.split(b"\n")[start:start + n]


def llmc_bin(path, ids, wide=False):
    """An llm.c token file: 256 int32 header (magic, version, count), then u16 or u32 ids."""
    header = np.zeros(256, "<i4")
    header[:3] = (20240801, 7, len(ids)) if wide else (20240520, 1, len(ids))
    write(path, header.tobytes() + np.asarray(ids, "<u4" if wide else "<u2").tobytes())


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


# MARK: - 1. Parity with the Swift pass on a mixed corpus

@pytest.fixture(scope="module")
def mixed_corpus(tmp_path_factory, tok):
    """Every kind of corpus file, in a directory (walked), a glob and an explicit duplicate."""
    root = tmp_path_factory.mktemp("mixed")
    enc = encoder(tok)
    eot = lcc.end_of_text_id(tok)
    lines = chapters(6)
    zc = zstandard.ZstdCompressor(level=3, write_checksum=True)
    # Two frames: the reader must continue after the first.
    write(root / "c" / "kjv.jsonl.zst", zc.compress(b"\n".join(lines[:3]) + b"\n") + zc.compress(b"\n".join(lines[3:5])))
    text = json.loads(lines[5])["text"]
    paras = text.split("\n")
    write(root / "c" / "notes.txt", "\n".join(paras[:4]) + "\n\n  \n" + "\r\n".join(paras[4:8]) + "\n\n\n" + paras[8])
    write(root / "c" / "sub" / "deeper" / "more.md", "A markdown file.\n\nWith two paragraphs.\n")
    write(root / "c" / "sub" / "Upper.TXT", "Upper-case extension.")
    write(root / "c" / ".hidden.txt", "A hidden file is a corpus file too.")
    write(root / "c" / "skip.rst", "not a corpus file")
    write(root / "c" / "body.ndjson", '{"text": "ndjson line"}\n')
    docs = [enc(p) for p in paras[8:14]]
    # llm.c style: the end-of-text id before every document.
    llmc_bin(root / "c" / "tokens" / "llmc.bin", sum(([eot] + d for d in docs[:3]), []))
    llmc_bin(root / "c" / "tokens" / "llama.bin", sum(([eot] + d for d in docs[3:5]), []), wide=True)
    # raw: the end-of-text id after every document, the last one without.
    write(root / "c" / "tokens" / "raw.u16", np.asarray(docs[0] + [eot] + docs[5], "<u2").tobytes())
    write(root / "c" / "tokens" / "raw.u32", np.asarray(docs[1] + [eot, eot] + docs[2] + [eot], "<u4").tobytes())
    write(root / "c" / "tokens" / "nanogpt.bin", np.asarray(docs[4], "<u2").tobytes())  # no header: raw u16
    write(root / "g" / "b.txt", "Globbed b.")
    write(root / "g" / "B.txt", "Globbed B sorts before a in byte order.")
    write(root / "g" / "a.txt", "Globbed a.")
    write(root / "g" / "a.jsonl", '{"text": "not matched by the glob"}\n')
    return [str(root / "c"), str(root / "g" / "*.txt"), str(root / "c" / "notes.txt"), str(root / "c") + "/"]


def test_mixed_corpus_matches_swift_blank_line_documents(lc_bin, tmp_path, tok, vocab, mixed_corpus):
    stream, swift = assert_same_pass(lc_bin, tmp_path, tok, vocab, mixed_corpus, 64, blank_line=True)
    assert 50 < len(swift) < 400
    assert stream.documents > 20


def test_mixed_corpus_matches_swift_file_documents(lc_bin, tmp_path, tok, vocab, mixed_corpus):
    assert_same_pass(lc_bin, tmp_path, tok, vocab, mixed_corpus, 50)


def test_partitions_match_swift(lc_bin, tmp_path, tok, vocab, mixed_corpus):
    """Part 1/3 from --partition, 0/3 from Slurm variables, 2/3 from a Kubernetes index; each
    part's windows as Python assigns them, and the merge equals the whole pass."""
    context = 64
    stream = python_pass(tok, vocab, mixed_corpus, blank_line=True)
    total = stream.window_count(context)
    out = tmp_path / "parts"
    runs = [((), clean_env(SLURM_ARRAY_TASK_ID="7", SLURM_ARRAY_TASK_MIN="7", SLURM_ARRAY_TASK_COUNT="3")),
            (("--partition", "1/3"), clean_env()),
            (("--partition-count", "3"), clean_env(JOB_COMPLETION_INDEX="2"))]
    os.makedirs(out)
    for n, (extra, env) in enumerate(runs):
        args = [lc_bin, "teacher", "--model", MODEL, "--tokenizer", TOKENIZER, *sum((["--corpus", c] for c in mixed_corpus), []),
                "--out", str(out), "--context", str(context), "--top-k", "1", "--blank-line-docs", *extra]
        proc = subprocess.run(args, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        if extra[:1] == ("--partition",):
            part = lcc.Partition.parse(extra[1])
        else:
            part = lcc.Partition.from_environment(env, kubernetes_count=3 if "--partition-count" in extra else None)
        assert (part.index, part.count) == (n, 3)
        with open(out / f"manifest.part-{n:05d}.json") as f:
            m = json.load(f)
        assert m["partition"] == {"index": n, "count": 3}
        owned = part.window_range(total)
        assert m["totals"]["sequences"] == len(owned)
        assert m["totals"]["tokens"] == sum(stream.window(w, context).length for w in owned)
        assert m["fingerprints"]["corpus"] == lcc.corpus_fingerprint(stream, context)
        assert [tuple(s) for s in python_sequences(stream, context, part)] == \
               python_sequences(stream, context)[owned.start:owned.stop]
    subprocess.run([lc_bin, "merge", str(out)], check=True, capture_output=True)
    _, merged = read_cache(out)
    assert merged == python_sequences(stream, context)


def test_whole_data_corpus_fingerprint_matches_swift(lc_bin, tmp_path, vocab):
    """All of Data/corpus (about a million tokens), tokenised by transformers as a Python capture
    does: one small Swift partition records the corpus fingerprint of the whole stream."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=TOKENIZER)
    corpus = [os.path.join(DATA, "corpus")]
    proc = run_teacher(lc_bin, tmp_path / "o", corpus, 256, "--partition", "0/500")
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "o" / "manifest.part-00000.json") as f:
        m = json.load(f)
    stream = lcc.tokenize_corpus(corpus, lambda t: hf(t, add_special_tokens=False)["input_ids"],
                                 lcc.end_of_text_id(hf), vocab)
    assert m["fingerprints"]["corpus"] == lcc.corpus_fingerprint(stream, 256)
    assert m["totals"]["sequences"] == len(lcc.Partition(0, 500).window_range(stream.window_count(256)))
    assert lcc.end_of_text_id(TOKENIZER) == lcc.end_of_text_id(hf)


# MARK: - 2. Edge cases against Swift

EDGE_TEXTS = {
    "crlf.txt": "line one\r\nline two\r\n\r\nafter a CRLF blank\r\r\nCR then CRLF\n\rLF then CR",
    "seps.txt": "u2028\u2028still\u2028\u2028paragraph two\u2029u2029\x0bvt\x0b\x0bff\x0c\x0cnel\x85\x85end",
    "fs.txt": "file\x1cgroup\x1d record\x1eunit\x1f\n\x1c\n\nafter x1c line",
    "spaces.txt": "para one   \n   \n\t \n \u00a0\u3000\u2003 \npara two \u0301 mark\n \u0301\n\npara three\n\t\u0301\npara four",
    "marks.txt": "x\n\u00a0\u0301\u0308\n\u2003\u093f\ny\n \u200d\nz\n \u1f3fb\nw",
    "bom_mid.txt": "a\ufeffb\n\n\ufeff\n\nc",
    "blank_only.txt": "  \n\t\n\u3000\r\n",
    "empty.txt": "",
    "trailing.txt": "ends with newlines\n\n\n",
}


def test_text_edge_cases_match_swift(lc_bin, tmp_path, tok, vocab):
    corpus = [write(tmp_path / "e" / name, text) for name, text in EDGE_TEXTS.items()]
    for blank_line in (True, False):
        stream, swift = assert_same_pass(lc_bin, tmp_path, tok, vocab, corpus, 1, blank_line=blank_line,
                                         name=f"out-{blank_line}")
        # The cuts themselves, whatever the tokenizer: with --context 1 every document starts a
        # window at offset 0, so Swift's documents are the keys of those windows, in order.
        docs = [d for p in lcc.expand_corpus_paths(corpus) for d in lcc.read_documents(p, blank_line_documents=blank_line)]
        assert [d.key_hex for d in docs] == [key for key, offset, _ in swift if offset == 0]
        assert all(d.key == lcc.document_key(d.text) for d in docs)
        assert stream.documents == len(docs) > (15 if blank_line else 6)
    assert lcc.read_documents(corpus[0], blank_line_documents=True)[0].source == corpus[0] + "#0"


def test_jsonl_edge_cases_match_swift(lc_bin, tmp_path, tok, vocab):
    nested_ok = "[" * 511 + "]" * 511
    lines = [
        b'{"text": "plain"}',
        b'  ',
        b' \xcc\x81',  # a space with a combining accent: one whitespace cluster, skipped
        b'\xe3\x80\x80',  # ideographic space line, skipped
        b'\xef\xbb\xbf{"text": "after a byte-order mark"}',
        b'{"text": "trailing comma", "list": [1, 2,],}',
        b'{"text": "first", "text": "duplicate key, last wins"}',
        b'{"\xef\xbb\xbftext": "a BOM at the start of a key is dropped"}',
        b'{"text": "\xef\xbb\xbfBOM at the start of a string run\\n\xef\xbb\xbfand after an escape, not inside\xef\xbb\xbf"}',
        b'{"text": "escaped \\u2028 separator and \\u0085 and \\ud83d\\ude00 pair"}',
        b'{"text": "numbers", "a": 1e-400, "b": 123456789012345678901234567890, "c": -0.0e+5}',
        b'{"text": "", "why": "empty text is skipped"}',
        b'{"text": "deep", "n": ' + nested_ok.encode() + b'}',
        b'{"body": "other field", "text": "crlf line"}',
        '{"text": "utf-16 line"}'.encode("utf-16-le"),
        b'{"text": "cr line"}',
        b'{"text": "last line without newline"}',
    ]
    data = b"\n".join(lines[:13]) + b"\r\n" + lines[13] + b"\n" + lines[14] + b"\n" + lines[15] + b"\r" + lines[16]
    corpus = [write(tmp_path / "j" / "edge.jsonl", data)]
    stream, _ = assert_same_pass(lc_bin, tmp_path, tok, vocab, corpus, 1)
    texts = [d.text for d in lcc.read_documents(corpus[0])]
    assert texts[0] == "plain" and "duplicate key, last wins" in texts and "utf-16 line" in texts
    assert "BOM at the start of a string run\nand after an escape, not inside\ufeff" in texts
    # --text-field, and keys matched up to canonical equivalence (the last equivalent key wins).
    field = [write(tmp_path / "j" / "body.jsonl", b'{"body": "x", "text": 1}\n{"body": "y"}\n')]
    assert_same_pass(lc_bin, tmp_path, tok, vocab, field, 1, text_field="body", name="body")
    accents = [write(tmp_path / "j" / "accents.jsonl", '{"\u00e9": "precomposed key"}\n'
                     '{"e\u0301": "decomposed key", "\u00e9": "later precomposed key"}\n')]
    for name in ("\u00e9", "e\u0301"):
        assert_same_pass(lc_bin, tmp_path, tok, vocab, accents, 1, text_field=name, name=f"accents-{len(name)}")


def test_paths_and_directories_match_swift(lc_bin, tmp_path, tok, vocab):
    root = tmp_path / "p"
    write(root / "d" / "a.txt", "alpha")
    write(root / "d" / "x" / "b.text", "beta")
    write(root / "d" / "x" / "c.TXT", "gamma")
    write(root / "d" / "y.txt" / "inside.md", "a directory named like a text file is walked")
    write(root / "d" / "noext", "not read")
    write(root / "d" / ".txt", "a hidden name without an extension")
    write(root / "other" / "o.txt", "outside, reached through a link")
    write(root / "other" / "deep" / "p.txt", "outside, reached only through a followed directory link")
    os.symlink(root / "other" / "o.txt", root / "d" / "link.txt")     # a link to a file is read
    os.symlink(root / "other" / "deep", root / "d" / "linkdir")       # a link to a directory is not walked
    os.symlink(root / "other", root / "linked")                      # nor is a linked directory argument
    # Canonically equivalent names are one path to Swift (String equality): only the first is read.
    write(root / "u" / "\u00e9.txt", "precomposed name")
    write(root / "u" / "e\u0301.txt", "decomposed name")
    corpus = [str(root / "d"), str(root / "d" / "a.txt"), str(root / "d") + "//", str(root / "d" / "x" / "*"),
              str(root / "linked"), str(root / "[d]"), str(root / "u")]
    stream, _ = assert_same_pass(lc_bin, tmp_path, tok, vocab, corpus, 1)
    files = lcc.expand_corpus_paths(corpus)
    assert files == sorted(files, key=lambda p: p.encode()) and len(set(files)) == len(files)
    assert str(root / "d" / "link.txt") in files and not any("linked" in f or "linkdir" in f for f in files)


def test_error_messages_match_swift(lc_bin, tmp_path, tok, vocab):
    e = tmp_path / "err"
    zc = zstandard.ZstdCompressor()
    cases = {
        "utf8.txt": "h\u00e9llo".encode() + b"\xff rest",
        "cut.txt": b"ab\xe2\x82",
        "overlong.txt": b"ok\xc0\xaf",
        "surrogate.jsonl": b'{"text": "a"}\n\xed\xa0\x80',
        "bom.txt": b"\xef\xbb\xbfbyte-order mark",
        "bad.jsonl": b'{"text": "ok"}\r\n\n{"text": "x"} trailing\n',
        "array.jsonl": b'\n[{"text": "in an array"}]\n',
        "fragment.jsonl": b'"just a string"\n',
        "nan.jsonl": b'{"text": "x", "n": NaN}\n',
        "inf.jsonl": b'{"text": "x", "n": 1e400}\n',
        "lone.jsonl": b'{"text": "x\\ud800"}\n',
        "control.jsonl": b'{"text": "tab\there"}\n',
        "ls.jsonl": '{"text": "raw \u2028 separator cuts the line"}\n'.encode(),
        "vt.jsonl": b'{"text": "raw \x0b cuts too"}\n',
        "fs.jsonl": b'\x1c\n',
        "deep.jsonl": b'{"text": "x", "n": ' + b"[" * 512 + b"]" * 512 + b"}\n",
        "missing.jsonl": b'{"text": "fine"}\n{"title": "no text"}\n',
        "number.jsonl": b'{"text": 42}\n',
        "empty.txt.zst": b"",
        "cut.txt.zst": zc.compress(b"some text to cut short")[:-4],
        "junk.txt.zst": zc.compress(b"ok") + b"garbage after the frame",
        "comp.bin.zst": zc.compress(b"abcde"),
        "comp.u32.zst": zc.compress(b"abcd"),
        "odd.u16": b"\x01\x00\x02",
        "odd.u32": b"\x01\x00\x00\x00\x02\x00",
        "high.u32": np.asarray([5, 6, 1 << 31], "<u4").tobytes(),
        "oov.u16": np.asarray([5, 6, 1, 7, vocab + 5, 1], "<u2").tobytes(),
        "notes.rst": b"unknown extension",
    }
    header = np.zeros(256, "<i4")
    header[:3] = (20240520, 1, 10)
    cases["count.bin"] = header.tobytes() + np.arange(4, dtype="<u2").tobytes()
    header[:3] = (20240801, 3, 2)
    cases["version.bin"] = header.tobytes() + np.arange(2, dtype="<u4").tobytes()
    compared = 0
    for name, data in cases.items():
        path = write(e / name, data)
        expected = swift_error(run_teacher(lc_bin, tmp_path / "o", [path], 8))
        if expected.startswith("corpus is empty"):
            stream = python_pass(tok, vocab, [path])
            assert stream.window_count(8) == 0
            got = str(lcc.CorpusError.empty_corpus([path]))
        else:
            got = python_error(python_pass, tok, vocab, [path])
        assert got == expected, name
        compared += 1
    # Arguments that match nothing.
    for arg in [str(e / "absent.txt"), str(e / "none*.txt"), str(e / "absent") + "/"]:
        assert python_error(lcc.expand_corpus_paths, [arg]) == swift_error(run_teacher(lc_bin, tmp_path / "o", [arg], 8))
    # A blank-line text file of blank lines only, and a named end-of-text token that does not exist.
    blank = write(e / "blank.txt", " \n\u3000\n")
    assert str(lcc.CorpusError.empty_corpus([blank])) == swift_error(
        run_teacher(lc_bin, tmp_path / "o", [blank], 8, "--blank-line-docs"))
    assert python_pass(tok, vocab, [blank], blank_line=True).tokens == 0
    text = write(e / "ok.txt", "fine")
    assert python_error(lcc.end_of_text_id, tok, "<nope>", where=TOKENIZER) == swift_error(
        run_teacher(lc_bin, tmp_path / "o", [text], 8, "--eot-token", "<nope>"))
    assert compared == len(cases)


def test_named_end_of_text_token_matches_swift(lc_bin, tmp_path, tok, vocab):
    corpus = [write(tmp_path / "n" / "a.txt", "one document"), write(tmp_path / "n" / "b.txt", "another")]
    fp, swift = swift_sequences(lc_bin, tmp_path / "o", corpus, 1, "--eot-token", "<|pad|>")
    pad = lcc.end_of_text_id(tok, "<|pad|>")
    stream = lcc.tokenize_corpus(corpus, encoder(tok), pad, vocab)
    assert python_sequences(stream, 1) == swift
    assert fp["corpus"] == lcc.corpus_fingerprint(stream, 1)
    assert pad != lcc.end_of_text_id(tok)


# MARK: - 3. Partitions

PARTITION_TEXTS = ["1/3", "/1/3", "1//3/", "+1/3", "0/1", "3/3", "-1/3", "a/3", " 1/3", "1/3/4", "0/0", "1_0/20"]
PARTITION_ENVS = [
    dict(SLURM_ARRAY_TASK_ID="12", SLURM_ARRAY_TASK_MIN="10", SLURM_ARRAY_TASK_COUNT="4"),
    dict(SLURM_ARRAY_TASK_ID="2", SLURM_ARRAY_TASK_COUNT="3"),
    dict(SLURM_ARRAY_TASK_ID="2", SLURM_ARRAY_TASK_MIN="x", SLURM_ARRAY_TASK_COUNT="3"),
    dict(SLURM_ARRAY_TASK_ID="2"),
    dict(SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_COUNT="3"),
    dict(SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="2", JOB_COMPLETION_INDEX="0"),
    dict(JOB_COMPLETION_INDEX="1"),
    dict(JOB_COMPLETION_INDEX="one"),
    dict(JOB_COMPLETION_INDEX="+1"),
]


def swift_partition(lc_bin, tmp_path, corpus, extra=(), env=None):
    """(index, count) of the Swift pass's manifest, or its error text."""
    out = tmp_path / "part"
    proc = run_teacher(lc_bin, out, corpus, 4, *extra, env=env)
    if proc.returncode != 0:
        return swift_error(proc)
    names = [n for n in os.listdir(out) if n.startswith("manifest")]
    with open(out / names[0]) as f:
        p = json.load(f).get("partition") or {"index": 0, "count": 1}
    return p["index"], p["count"]


def python_partition(fn):
    try:
        p = fn()
    except lcc.CorpusError as e:
        return str(e)
    return (0, 1) if p is None else (p.index, p.count)


def test_partition_parsing_and_environment_match_swift(lc_bin, tmp_path):
    corpus = [write(tmp_path / "c.txt", "a few words for a few windows of four tokens each, at least three")]
    for text in PARTITION_TEXTS:
        assert python_partition(lambda: lcc.Partition.parse(text)) == \
               swift_partition(lc_bin, tmp_path, corpus, [f"--partition={text}"]), text
    for env in PARTITION_ENVS:
        for count in (None, 2):
            extra = ["--partition-count", str(count)] if count else []
            assert python_partition(lambda: lcc.Partition.from_environment(env, kubernetes_count=count)) == \
                   swift_partition(lc_bin, tmp_path, corpus, extra, env=clean_env(**env)), (env, count)
    assert lcc.Partition.from_environment({}) is None


@pytest.mark.parametrize("total", [0, 1, 2, 5, 7, 100, 1001])
@pytest.mark.parametrize("count", [1, 2, 3, 8, 13])
def test_window_ranges_cover_every_window_once(total, count):
    parts = [lcc.Partition(i, count).window_range(total) for i in range(count)]
    owned = [w for r in parts for w in r]
    assert owned == list(range(total))
    sizes = [len(r) for r in parts]
    assert max(sizes) - min(sizes) <= 1


def test_stream_windows_against_a_direct_cut(tok):
    """window(w) against slicing the ids by hand, and document lookup by scanning."""
    s = lcc.TokenStream()
    rng = np.random.default_rng(0)
    recorded = 0
    for d in range(40):
        n = int(rng.integers(0, 9))
        s.append(rng.integers(2, 100, n), key=d + 1, end_of_text=1 if d % 3 else None)
        recorded += bool(n or d % 3)
    assert s.documents == recorded  # a document without ids or end-of-text id is not recorded
    ids, starts, keys = s.ids, s.document_starts, s.document_keys
    for context in (1, 3, 8, 1000):
        total = s.window_count(context)
        assert total == (0 if len(ids) < 2 else -(-(len(ids) - 1) // context))
        for w in range(total):
            win = s.window(w, context)
            assert win.start == w * context and win.length == min(context, len(ids) - 1 - win.start)
            d = max(i for i in range(len(starts)) if starts[i] <= win.start)
            assert (win.document_key, win.document_offset) == (keys[d], win.start - starts[d])
        with pytest.raises(IndexError):
            s.window(total, context)


# MARK: - 4. Fingerprints beyond the Swift rules

def xxh3_combine(paths):
    """The documented combine: XXH3-64 of the files' XXH3-64 values as little-endian uint64."""
    import xxhash
    hashes = []
    for p in paths:
        with open(p, "rb") as f:
            hashes.append(xxhash.xxh3_64_intdigest(f.read()))
    return "xxh3:%016x" % xxhash.xxh3_64_intdigest(np.asarray(hashes, "<u8").tobytes())


def test_fingerprint_rules(lc_bin, tmp_path):
    swift, _ = swift_sequences(lc_bin, tmp_path / "o", [write(tmp_path / "a.txt", "a few words")], 4)
    # The Swift rules: a copied (renamed) model directory and a directory holding tokenizer.json.
    model = tmp_path / "renamed-teacher"
    os.makedirs(model)
    for name in ("config.json", "model.safetensors"):
        os.symlink(os.path.join(MODEL, name), model / name)
    write(model / "pytorch_model.bin", b"ignored when safetensors exist")
    assert lcc.teacher_fingerprint(model) == swift["teacher"]
    tdir = tmp_path / "tok"
    os.makedirs(tdir)
    shutil.copy(TOKENIZER, tdir / "tokenizer.json")
    write(tdir / "tokenizer.model", b"ignored when tokenizer.json exists")
    assert lcc.tokenizer_fingerprint(tdir) == lcc.tokenizer_fingerprint(tdir / "tokenizer.json") == swift["tokenizer"]
    # PyTorch checkpoints: config.json, then the pytorch_model*.bin files in name order.
    pt = tmp_path / "pt"
    os.makedirs(pt)
    shutil.copy(os.path.join(MODEL, "config.json"), pt / "config.json")
    assert lcc.teacher_fingerprint(pt) == xxh3_combine([pt / "config.json"])  # as Swift: config alone
    shards = [write(pt / f"pytorch_model-0000{i}-of-00002.bin", f"shard {i}") for i in (2, 1)]
    write(pt / "optimizer.bin", b"not weights")
    assert lcc.teacher_fingerprint(pt) == xxh3_combine([pt / "config.json", *sorted(shards)])
    before = lcc.teacher_fingerprint(pt)
    write(shards[0], "changed")
    assert lcc.teacher_fingerprint(pt) != before
    with pytest.raises(lcc.CorpusError, match="config.json"):
        lcc.teacher_fingerprint(tmp_path / "absent")
    # SentencePiece: the defining files present, in name order.
    sp = tmp_path / "sp"
    write(sp / "tokenizer.model", bytes(range(256)))
    write(sp / "tokenizer_config.json", '{"add_bos_token": true}')
    write(sp / "special_tokens_map.json", '{"eos_token": "</s>"}')
    write(sp / "README.md", "not part of the tokenizer")
    expected = xxh3_combine([sp / "special_tokens_map.json", sp / "tokenizer.model", sp / "tokenizer_config.json"])
    assert lcc.tokenizer_fingerprint(sp) == lcc.tokenizer_fingerprint(sp / "tokenizer.model") == expected
    write(sp / "added_tokens.json", '{"<extra>": 32000}')
    assert lcc.tokenizer_fingerprint(sp) == xxh3_combine(
        [sp / "added_tokens.json", sp / "special_tokens_map.json", sp / "tokenizer.model", sp / "tokenizer_config.json"])
    assert lcc.tokenizer_fingerprint(sp) != expected
    os.makedirs(tmp_path / "empty")
    with pytest.raises(lcc.CorpusError):
        lcc.tokenizer_fingerprint(tmp_path / "empty")
