"""Adversarial regression suite (issue #20): damaged and forged caches, hostile manifests, killed
and starved writers, bad teacher inputs and absurd loader arguments.

Every case must end in a clear error (naming the file, and the block or chunk where the damage
is inside one) or in correct output, from BOTH readers of the package (the native library and
the pure-numpy reader, each in its own worker process, so that a crash is seen as a crash and a
hang as a timeout), never in a crash, a hang or NaN values that verification let through. The
readers must also agree: both refuse, or both accept with the same decoded values.

Categories and their outcome counts are printed as a table at the end (run pytest with -s to
see it) and written as JSON to $LOGITCACHE_ADVERSARIAL_REPORT (a path; "1" means
/tmp/logitcache-adversarial.json) when that is set. Outcomes: "clear error", "correct output",
"crash" (a signal, a non-zero exit other than the command's error status, or an exception other
than the package's CacheError / LoaderError), "hang" (no answer within the time limit), "NaN"
(NaN in decoded values of a cache its reader's verify called sound), "unclear error" (an error
that does not name what it should), "wrong output" (readers disagree, or a resumed writer's
files differ from an uninterrupted run's).

The full-disk case mounts a 200 kB tmpfs (root, as in CI's container); if mounting is not
possible the test fails rather than skips.
"""

import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import pytest
import xxhash

import logitcache.reader as lr
from cache_edit import write_manifest
from lc_testing import REPO, logitcache_bin

CASE_TIMEOUT = 30          # seconds for one case in a worker (a ~30 kB cache reads in milliseconds)
OUTCOMES = ("clear error", "correct output", "crash", "hang", "NaN", "unclear error", "wrong output")
BAD = ("crash", "hang", "NaN", "unclear error", "wrong output")
TABLE = {}                 # category -> {"cases": n, "runs": n, outcome: count}
FAILURES = {}              # category -> [description of each bad outcome]
SEED = 20


def record(category, outcome, what, runs=1):
    row = TABLE.setdefault(category, dict({"cases": 0, "runs": 0}, **dict.fromkeys(OUTCOMES, 0)))
    row["runs"] += runs
    row[outcome] += 1
    if outcome in BAD:
        FAILURES.setdefault(category, []).append(what)


def count_case(category):
    TABLE.setdefault(category, dict({"cases": 0, "runs": 0}, **dict.fromkeys(OUTCOMES, 0)))["cases"] += 1


def assert_no_bad(category):
    bad = FAILURES.get(category, [])
    assert not bad, f"{category}: {len(bad)} bad outcomes, e.g.:\n" + "\n".join(bad[:8])


# ----------------------------------------------------------------------------------------------
# Reader workers: one process per backend reads cases from stdin and answers one JSON line each.

WORKER = r"""
import json, sys, time, traceback
import numpy as np, xxhash
import logitcache as lc
backend = sys.argv[1]

def nan_in(rows):
    return bool(np.isnan(rows.next_token_logprobs).any() or np.isnan(rows.logsumexps).any()
                or np.isnan(rows.entry_logprobs).any())

def digest(rows, samples):
    h = xxhash.xxh3_64()
    for a in (rows.input_ids, rows.next_token_logprobs, rows.logsumexps, rows.entry_counts, rows.entry_ids,
              rows.entry_logprobs, samples.offsets, samples.ids, samples.draws):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()

def cache_case(case):
    out = {}
    try:
        with lc.Cache(case["path"], backend=backend) as c:
            rows, samples = c.read(k=case.get("k")), c.read_samples()
            out["read"] = {"ok": True, "nan": nan_in(rows), "digest": digest(rows, samples)}
    except lc.CacheError as e:
        out["read"] = {"ok": False, "error": str(e)}
    report = lc.verify(case["path"], backend=backend)
    out["verify"] = {"sound": report["sound"], "problems": report["problems"][:4]}
    return out

def loader_case(case):
    t = time.time()
    try:
        loader = lc.StudentLoader(case["path"], backend=backend, **case["args"])
        loader.next() if hasattr(loader, "next") else None
        return {"loader": {"ok": True, "seconds": time.time() - t}}
    except (lc.LoaderError, lc.CacheError) as e:
        return {"loader": {"ok": False, "error": f"{type(e).__name__}: {e}", "seconds": time.time() - t}}

for line in sys.stdin:
    case = json.loads(line)
    try:
        out = cache_case(case) if case["kind"] == "cache" else loader_case(case)
    except Exception as e:  # anything but the package's errors is a crash of the reader
        out = {"exception": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-1500:]}
    print(json.dumps(out), flush=True)
"""


class Worker:
    """A reader process for one backend; restarted after a crash or a hang."""

    def __init__(self, backend):
        self.backend = backend
        self.proc = None
        self.err = None

    def _start(self):
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, self.backend], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, text=True, bufsize=1, cwd=REPO,
                                     start_new_session=True)

    def stop(self):
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None

    def run(self, case: dict, timeout: float = CASE_TIMEOUT) -> dict:
        """The worker's answer, or {"crash": ...} / {"hang": ...}."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        try:
            self.proc.stdin.write(json.dumps(case) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else None
        if line:
            return json.loads(line)
        if line is None:
            self.stop()
            return {"hang": f"no answer within {timeout} s"}
        status = self.proc.wait()
        self.err.seek(0)
        tail = self.err.read()[-1500:].decode(errors="replace")
        self.proc = None
        return {"crash": f"worker died with status {status}: {tail}"}


@pytest.fixture(scope="module")
def workers():
    import logitcache
    if not logitcache.native_available():
        pytest.fail("the native library is not installed (pip install ./python with swift on PATH)")
    w = {b: Worker(b) for b in ("native", "pure")}
    yield w
    for x in w.values():
        x.stop()


def names_it(message: str, names) -> bool:
    return any(n in message for n in names)


def judge(answer: dict, names, chunk: bool) -> tuple:
    """(outcome, detail) of one reader's answer on a cache case. `names`: file names the error
    must mention (one of); `chunk`: the damage is inside a chunk, so a decode error names its block."""
    if "crash" in answer or "exception" in answer:
        return "crash", answer.get("crash") or answer["exception"] + "\n" + answer.get("trace", "")
    if "hang" in answer:
        return "hang", answer["hang"]
    read, verify = answer["read"], answer["verify"]
    messages = ([] if read["ok"] else [read["error"]]) + verify["problems"]
    if not read["ok"] or not verify["sound"]:
        if verify["sound"]:
            return "unclear error", f"read refused but verify called the cache sound: {read['error']}"
        for m in messages:
            if not names_it(m, names):
                return "unclear error", f"does not name {names}: {m}"
            if chunk and "block" not in m and "footer" not in m:
                return "unclear error", f"does not name the block (or the footer): {m}"
        return "clear error", messages[0]
    if read["nan"]:
        return "NaN", "NaN in decoded values, verify says sound"
    return "correct output", read["digest"]


def run_cache_case(workers, category, path, what, names, chunk=False, k=None):
    count_case(category)
    answers = {b: w.run({"kind": "cache", "path": path, "k": k}) for b, w in workers.items()}
    judged = {b: judge(a, names, chunk) for b, a in answers.items()}
    for b, (outcome, detail) in judged.items():
        record(category, outcome, f"{what} [{b}]: {detail}")
    (on, dn), (op, dp) = judged["native"], judged["pure"]
    ok = {"clear error", "correct output"}
    if on in ok and op in ok and (on != op or (on == "correct output" and dn != dp)):
        record(category, "wrong output", f"{what}: the readers disagree: native {on} ({dn[:300]}), pure {op} ({dp[:300]})",
               runs=0)
    return judged


# ----------------------------------------------------------------------------------------------
# Base caches of every format version

BASES = {
    "v0-zstd": ["--k", "8", "--format-minor", "0"],
    "v1-none": ["--k", "8", "--codec", "none", "--format-minor", "1"],
    "v2-lz4-lossless": ["--k", "6", "--codec", "lz4", "--lossless", "--format-minor", "2"],
    "v3-zstd-sampled": ["--k", "8", "--sampled", "--draws", "5"],
    "v3-none-topp-lossless": ["--k", "8", "--codec", "none", "--top-p", "0.9", "--lossless"],
    "v3-lz4-sampled-only": ["--k", "0", "--sampled", "--draws", "7", "--codec", "lz4"],
}
COMMON = ["--vocab", "300", "--tokens", "600", "--seq-len", "100", "--block-tokens", "128", "--shard-bytes", "5000"]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    binary = logitcache_bin()
    if not os.access(binary, os.X_OK):
        pytest.fail(f"no logitcache binary at {binary}: set LOGITCACHE_BIN (tools/test does)")
    root = tmp_path_factory.mktemp("adversarial-bases")
    out = {}
    for name, args in BASES.items():
        path = str(root / name)
        subprocess.run([binary, "synth", path, *COMMON, *args], check=True, capture_output=True, timeout=120)
        out[name] = path
    return out


def read_shard(path):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    F, L = struct.unpack("<QQ", data[-40:-24])
    return data, F, json.loads(data[F:F + L])


def with_footer(data, F, footer) -> bytes:
    fb = json.dumps(footer, sort_keys=True, separators=(",", ":")).encode()
    return bytes(data[:F]) + fb + struct.pack("<QQQII", F, len(fb), xxhash.xxh3_64_intdigest(fb), 1, 0) + lr.MAGIC


def publish(directory, shard, data: bytes, update_manifest: bool):
    """Writes the shard and (update_manifest) its size and hash in every manifest, so the readers
    judge the content, not the manifest's record of it."""
    with open(os.path.join(directory, shard), "wb") as f:
        f.write(data)
    if not update_manifest:
        return
    for name in os.listdir(directory):
        if name.startswith("manifest") and name.endswith(".json"):
            path = os.path.join(directory, name)
            m = lr.read_manifest(path, validate_schema=False)
            for e in m["shards"]:
                if e["file"] == shard:
                    e.update(bytes=len(data), xxh3=lr.hex64(xxhash.xxh3_64_intdigest(data)))
            m["totals"]["bytes"] = sum(e["bytes"] for e in m["shards"])
            write_manifest(path, m)


def chunks_of(footer):
    return [(b, c) for b, blk in enumerate(footer["blocks"]) for c in blk["chunks"]]


def shard_corruptions(rng, data, F, footer):
    """Scripted corruptions of one shard: (category, description, new bytes, update manifest, in a chunk)."""
    size = len(data)
    spans = [(b, c) for b, c in chunks_of(footer) if c["size"] > 0]
    out = []

    def flipped(at, bits=1):
        d = bytearray(data)
        for bit in rng.sample(range(8), bits):  # distinct bits: the byte always changes
            d[at] ^= 1 << bit
        return bytes(d)

    regions = {"header": (0, 16), "footer": (F, size - 40), "trailer": (size - 40, size)}
    for name, (a, z) in regions.items():
        for _ in range(3):
            at = rng.randrange(a, z)
            out.append(("shard bytes: bit flips", f"{name} byte {at} flipped", flipped(at), True, False))
    for _ in range(5):
        b, c = rng.choice(spans)
        at = c["offset"] + rng.randrange(c["size"])
        out.append(("shard bytes: bit flips", f"block {b} {c['column']} byte {at} flipped", flipped(at, 2), True, True))
    for _ in range(5):
        cut = rng.choice([0, 1, 8, 16, 55, 56, rng.randrange(size), F, F + 1, size - 41, size - 1])
        out.append(("shard bytes: truncations", f"cut to {cut} bytes", bytes(data[:cut]), rng.random() < 0.7, False))
    for _ in range(4):
        a = rng.randrange(size)
        z = min(size, a + rng.choice([1, 8, 64, 4096]))
        d = bytearray(data)
        d[a:z] = bytes(z - a)
        out.append(("shard bytes: zeroed ranges", f"bytes [{a}, {z}) zeroed", bytes(d), True, a >= 16 and z <= F))
    for _ in range(3):
        extra = bytes(rng.randrange(256) for _ in range(rng.choice([1, 40, 1000])))
        out.append(("shard bytes: extensions", f"{len(extra)} bytes appended", bytes(data) + extra, rng.random() < 0.7, False))
    # Chunk contents replaced or flipped, chunk checksums recomputed: the decoders see it.
    for _ in range(10):
        b, c = rng.choice(spans)
        d = bytearray(data)
        o, s = c["offset"], c["size"]
        if rng.random() < 0.5:
            d[o:o + s] = bytes(rng.randrange(256) for _ in range(s))
            how = "random bytes"
        else:
            for at in rng.sample(range(s), min(s, rng.choice([1, 2, 8]))):
                d[o + at] ^= 1 << rng.randrange(8)
            how = "flipped bits"
        ft = json.loads(json.dumps(footer))
        cc = [x for x in ft["blocks"][b]["chunks"] if x["column"] == c["column"]][0]
        cc["xxh3"] = lr.hex64(xxhash.xxh3_64_intdigest(bytes(d[o:o + s])))
        out.append(("chunk contents forged (checksums recomputed)", f"block {b} {c['column']}: {how}",
                    with_footer(d, F, ft), True, True))
    # Chunk descriptors moved or resized, checksums of the new ranges recomputed.
    for _ in range(8):
        b, c = rng.choice(chunks_of(footer))
        key = rng.choice(["offset", "size", "count", "width", "filter", "codec"])
        ft = json.loads(json.dumps(footer))
        cc = [x for x in ft["blocks"][b]["chunks"] if x["column"] == c["column"]][0]
        if key in ("offset", "size"):
            cc[key] = max(0, cc[key] + rng.choice([-16, -1, 1, 7, 100, 10 ** 6, -cc[key]]))
        elif key == "count":
            cc[key] = max(0, cc[key] + rng.choice([-1, 1, 1000, 2 ** 40, -cc[key]]))
        elif key == "width":
            cc[key] = rng.choice([1, 2, 3, 4, 0, 5])
        elif key == "filter":
            cc[key] = rng.choice(["raw", "planes", "buckets", "delta-buckets"])
        else:
            cc[key] = rng.choice(["none", "lz4", "zstd"])
        cc["xxh3"] = lr.hex64(xxhash.xxh3_64_intdigest(bytes(data[cc["offset"]:cc["offset"] + cc["size"]])))
        out.append(("chunk descriptors edited (checksums recomputed)", f"block {b} {c['column']}.{key} = {cc[key]}",
                    with_footer(data, F, ft), True, True))
    return out


def test_shard_corruptions(workers, bases, tmp_path):
    rng = random.Random(SEED)
    n = 0
    for base, path in sorted(bases.items()):
        shards = sorted(f for f in os.listdir(path) if f.endswith(".lcs"))
        for shard in shards[:2]:
            data, F, footer = read_shard(os.path.join(path, shard))
            for category, what, new, update, chunk in shard_corruptions(rng, data, F, footer):
                n += 1
                d = str(tmp_path / f"c{n}")
                shutil.copytree(path, d)
                publish(d, shard, new, update)
                run_cache_case(workers, category, d, f"{base}/{shard}: {what}", [shard], chunk)
                shutil.rmtree(d)
    assert n >= 500, n
    for category in list(TABLE):
        if category.startswith(("shard bytes", "chunk")):
            assert_no_bad(category)


def test_huge_sparse_block(workers, tmp_path):
    """A forged but valid shard: one block of 2^20 positions, K = 65535, no entries. Dense [n, K]
    decoding would need terabytes; both readers verify it (sound) and read it at small k."""
    import cache_edit
    import numpy as np
    category = "huge sparse block (2^20 positions, K = 65535, no entries)"
    n, K = 1 << 20, 65535
    path = str(tmp_path / "huge")
    subprocess.run([logitcache_bin(), "synth", path, "--vocab", "300", "--tokens", "100", "--seq-len", "100", "--k", "8",
                    "--block-tokens", "128", "--codec", "none", "--format-minor", "0"], check=True, capture_output=True)
    shard = cache_edit.shard_files(path)[0]
    per_token = ("input_ids", "next_logprob", "logsumexp", "entry_count")

    def footer(ft):
        ft.update(blockTokens=n, tokens=n, entries=0, maxEntries=K, entryBands=[0, K])
        ft["blocks"][0].update(tokens=n, entries=0)
        ft["sequenceTable"]["lengths"] = [n]
    cache_edit.rebuild_shard(shard, values=lambda b, c, v: np.zeros(n if c in per_token else 0, np.uint32),
                             encoding=lambda b, c, chunk: (4 if c in ("next_logprob", "logsumexp") else 1, "planes", "zstd"),
                             footer=footer)
    cache_edit.refresh_manifest(path)
    for name in os.listdir(path):
        if name.startswith("manifest") and name.endswith(".json"):
            m = lr.read_manifest(os.path.join(path, name), validate_schema=False)
            m["capture"]["k"] = K
            m["encoding"].update(entryBands=[0, K], blockTokens=n)
            write_manifest(os.path.join(path, name), m)
    swift = subprocess.run([logitcache_bin(), "verify", path], capture_output=True, text=True, timeout=300)
    assert swift.returncode == 0, swift.stdout + swift.stderr
    for k in (0, 8):
        judged = run_cache_case(workers, category, path, f"read at k = {k}", [os.path.basename(shard)], k=k)
        assert all(o == "correct output" for o, _ in judged.values()), judged
    assert_no_bad(category)


# ----------------------------------------------------------------------------------------------
# Manifest attacks


def manifest_attacks(path, tmp):
    """(description, edit(directory), names the error must mention). `edit` works on a copy."""
    m0 = lr.read_manifest(os.path.join(path, "manifest.json"), validate_schema=False)
    shard = m0["shards"][0]["file"]
    attacks = []

    def set_manifest(fn):
        def edit(d):
            for n in os.listdir(d):
                if n.startswith("manifest.part-"):
                    os.remove(os.path.join(d, n))
            m = json.loads(json.dumps(m0))
            fn(m)
            write_manifest(os.path.join(d, "manifest.json"), m)
        return edit

    def raw_manifest(text_fn):
        def edit(d):
            p = os.path.join(d, "manifest.json")
            with open(p, "rb") as f:
                body = f.read()
            body = text_fn(body[:body.rfind(b'"checksum": "')])
            with open(p, "wb") as f:
                f.write(body + b'"checksum": "' + lr.hex64(xxhash.xxh3_64_intdigest(body)).encode() + b'"\n}\n')
        return edit

    def replace_shard(make):
        def edit(d):
            p = os.path.join(d, shard)
            os.remove(p)
            make(p)
        return edit

    def rename(name):
        return set_manifest(lambda m: m["shards"][0].update(file=name))

    outside = os.path.join(tmp, "outside.lcs")
    shutil.copy(os.path.join(path, shard), outside)
    attacks += [
        ("shard name ..", rename(".."), ["manifest.json", ".."]),
        ("shard name ../outside.lcs", rename("../outside.lcs"), ["manifest.json", "outside"]),
        ("shard name absolute", rename(outside), ["manifest.json", "outside"]),
        ("shard name with /", rename("a/b.lcs"), ["manifest.json", "a/b.lcs"]),
        ("shard name empty", rename(""), ["manifest.json"]),
        ("shard name 201 characters", rename("x" * 201), ["manifest.json"]),
        ("shard link outside", lambda d: (set_manifest(lambda m: m["shards"][0].update(file="link.lcs"))(d),
                                          os.symlink(outside, os.path.join(d, "link.lcs"))), ["link.lcs"]),
        ("shard link to /dev/zero", lambda d: (set_manifest(lambda m: m["shards"][0].update(file="z.lcs"))(d),
                                               os.symlink("/dev/zero", os.path.join(d, "z.lcs"))), ["z.lcs"]),
        ("shard link loop", lambda d: (set_manifest(lambda m: m["shards"][0].update(file="loop.lcs"))(d),
                                       os.symlink("loop.lcs", os.path.join(d, "loop.lcs"))), ["loop.lcs"]),
        ("shard missing", replace_shard(lambda p: None), [shard]),
        ("shard is a directory", replace_shard(os.mkdir), [shard]),
        ("shard is a FIFO", replace_shard(os.mkfifo), [shard]),
        ("shard is a socket", replace_shard(lambda p: socket.socket(socket.AF_UNIX).bind(p)), [shard]),
        ("shard is empty", replace_shard(lambda p: open(p, "wb").close()), [shard]),
        ("shard unreadable (mode 000)", lambda d: os.chmod(os.path.join(d, shard), 0), [shard]),
        ("shard listed twice", set_manifest(lambda m: (m["shards"].append(dict(m["shards"][0])),
                                                       [m["totals"].__setitem__(k, sum(e[k] for e in m["shards"]))
                                                        for k in m["totals"]])), ["manifest.json", shard]),
        ("shards: [] with zero totals", set_manifest(lambda m: (m["shards"].clear(),
                                                                [m["totals"].__setitem__(k, 0) for k in m["totals"]])),
         ["manifest.json"]),
        ("manifest missing", lambda d: os.remove(os.path.join(d, "manifest.json")), ["manifest.json"]),
        ("manifest is a directory", lambda d: (os.remove(os.path.join(d, "manifest.json")),
                                               os.mkdir(os.path.join(d, "manifest.json"))), ["manifest.json"]),
        ("manifest is a FIFO", lambda d: (os.remove(os.path.join(d, "manifest.json")),
                                          os.mkfifo(os.path.join(d, "manifest.json"))), ["manifest.json"]),
        ("manifest empty", lambda d: open(os.path.join(d, "manifest.json"), "wb").close(), ["manifest.json"]),
        ("manifest byte-order mark", raw_manifest(lambda b: b"\xef\xbb\xbf" + b), ["manifest.json"]),
        ("manifest nested 100000 levels", raw_manifest(lambda b: b.replace(b'"format"', b'"deep": ' + b"[" * 100000 +
                                                                           b"]" * 100000 + b', "format"', 1)),
         ["manifest.json"]),
        ("manifest nested 33 levels", raw_manifest(lambda b: b.replace(b'"format"', b'"deep": ' + b"[" * 33 + b"1" +
                                                                       b"]" * 33 + b', "format"', 1)), ["manifest.json"]),
        ("manifest member twice", raw_manifest(lambda b: b.replace(b'"format"', b'"format" : "logitcache", "format"', 1)),
         ["manifest.json"]),
        ("manifest tokens as a real (300.0)", raw_manifest(lambda b: re.sub(rb'"tokens" : (\d+)', rb'"tokens" : \1.0', b,
                                                                            count=1)), ["manifest.json"]),
        ("manifest integer above 2^64", set_manifest(lambda m: m["capture"].update(seed=2 ** 64 + 5)), ["manifest.json"]),
        ("manifest count above 2^50", set_manifest(lambda m: m["teacherCost"].update(tokens=2 ** 50 + 1)), ["manifest.json"]),
        ("manifest 2^24+1 blockTokens", set_manifest(lambda m: m["encoding"].update(blockTokens=2 ** 24 + 1)),
         ["manifest.json"]),
        ("manifest blockTokens 0", set_manifest(lambda m: m["encoding"].update(blockTokens=0)), ["manifest.json"]),
        ("manifest k 0 for top-k", set_manifest(lambda m: m["capture"].update(k=0)), ["manifest.json"]),
        ("manifest temperature 0", set_manifest(lambda m: m["capture"].update(temperature=0)), ["manifest.json"]),
        ("manifest partition 5 of 5", set_manifest(lambda m: m.update(partition={"index": 5, "count": 5})),
         ["manifest.json"]),
        ("manifest vocabulary 2^24+1", set_manifest(lambda m: m.update(vocabularySize=2 ** 24 + 1)), ["manifest.json"]),
        ("manifest totals off by one", set_manifest(lambda m: m["totals"].update(tokens=m["totals"]["tokens"] + 1)),
         ["manifest.json"]),
        ("manifest shard bytes 55", set_manifest(lambda m: m["shards"][0].update(bytes=55)), ["manifest.json"]),
        ("manifest checksum wrong", lambda d: _flip_checksum(os.path.join(d, "manifest.json")), ["manifest.json"]),
        ("manifest truncated", lambda d: _truncate(os.path.join(d, "manifest.json"), 100), ["manifest.json"]),
    ]
    return attacks


def _flip_checksum(path):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[-6] = ord("0") if data[-6] != ord("0") else ord("1")
    with open(path, "wb") as f:
        f.write(data)


def _truncate(path, n):
    with open(path, "r+b") as f:
        f.truncate(n)


def test_manifest_attacks(workers, bases, tmp_path):
    category = "manifest attacks"
    path = bases["v3-zstd-sampled"]
    attacks = manifest_attacks(path, str(tmp_path))
    for i, (what, edit, names) in enumerate(attacks):
        d = str(tmp_path / f"m{i}")
        shutil.copytree(path, d)
        edit(d)
        judged = run_cache_case(workers, category, d, what, names)
        if what == "shards: [] with zero totals":  # a valid empty cache
            assert all(o == "correct output" for o, _ in judged.values()), judged
    assert_no_bad(category)


# ----------------------------------------------------------------------------------------------
# Killed and starved writers


SYNTH_ARGS = ["--vocab", "2000", "--tokens", "100000", "--seq-len", "500", "--k", "16", "--block-tokens", "2048",
              "--shard-bytes", "300000", "--seed", "7"]


def tree_bytes(directory):
    """{name: bytes} of the published files (shards and manifests; not locks or temporaries)."""
    out = {}
    for n in sorted(os.listdir(directory)):
        if n.endswith(".lcs") or (n.startswith("manifest") and n.endswith(".json")):
            with open(os.path.join(directory, n), "rb") as f:
                out[n] = f.read()
    return out


def only_complete_shards(directory):
    """Every published shard of a killed writer is whole: it opens and its footer checks pass."""
    for n in os.listdir(directory):
        if n.endswith(".lcs"):
            lr.Shard(os.path.join(directory, n), n).close()


def test_kill_resume_synth(tmp_path):
    category = "writer killed (SIGKILL) and rerun: synth"
    binary = logitcache_bin()
    ref = str(tmp_path / "reference")
    t0 = time.time()
    subprocess.run([binary, "synth", ref, *SYNTH_ARGS], check=True, capture_output=True, timeout=300)
    duration = time.time() - t0
    want = tree_bytes(ref)
    assert sum(n.endswith(".lcs") for n in want) >= 4, list(want)
    rng = random.Random(SEED)
    for trial in range(8):
        count_case(category)
        out = str(tmp_path / f"killed{trial}")
        kills = []
        for _ in range(1 + trial % 3):  # killed once, twice or three times before a full run
            delay = rng.uniform(0.0, duration)
            p = subprocess.Popen([binary, "synth", out, *SYNTH_ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(delay)
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=60)
            kills.append(f"{delay:.2f}s")
            if os.path.isdir(out):
                only_complete_shards(out)
        what = f"killed at {', '.join(kills)} of {duration:.2f}s, then rerun"
        try:
            done = subprocess.run([binary, "synth", out, *SYNTH_ARGS], capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            record(category, "hang", what)
            continue
        if done.returncode != 0:
            record(category, "crash" if done.returncode < 0 else "unclear error", f"{what}: {done.stderr[-500:]}")
            continue
        got = tree_bytes(out)
        if got != want:
            differ = sorted(n for n in set(got) | set(want) if got.get(n) != want.get(n))
            record(category, "wrong output", f"{what}: files differ from the uninterrupted run: {differ}")
        else:
            record(category, "correct output", what)
    assert_no_bad(category)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 200 kB tmpfs (full disk after ~200 kB); the test fails if it cannot be mounted."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the full-disk test (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk(small_tmpfs, tmp_path):
    """synth and the package's CacheWriter into a full 200 kB tmpfs: a clear error (ENOSPC, the
    file named), a non-zero exit (not a signal), only complete shards left; after the partial
    output is moved to a disk with room, a rerun resumes to the uninterrupted run's bytes."""
    category = "full disk (200 kB tmpfs): synth"
    binary = logitcache_bin()
    args = ["--vocab", "2000", "--tokens", "60000", "--seq-len", "500", "--k", "16", "--block-tokens", "2048",
            "--shard-bytes", "60000", "--seed", "3"]
    ref = str(tmp_path / "reference")
    subprocess.run([binary, "synth", ref, *args], check=True, capture_output=True, timeout=300)
    assert sum(os.path.getsize(os.path.join(ref, n)) for n in os.listdir(ref)) > 400_000  # does not fit
    count_case(category)
    out = os.path.join(small_tmpfs, "cache")
    proc = subprocess.run([binary, "synth", out, *args], capture_output=True, text=True, timeout=300)
    what = f"synth into 200 kB: exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
    if proc.returncode < 0:
        record(category, "crash", what)
    elif proc.returncode == 0 or "No space left on device" not in proc.stderr or ".lcs" not in proc.stderr:
        record(category, "unclear error", what)
    else:
        only_complete_shards(out)
        assert not [n for n in os.listdir(out) if n.endswith(".tmp")], os.listdir(out)  # no stale temporary
        moved = str(tmp_path / "moved")
        shutil.copytree(out, moved)
        subprocess.run([binary, "synth", moved, *args], check=True, capture_output=True, timeout=300)
        record(category, "clear error" if tree_bytes(moved) == tree_bytes(ref) else "wrong output", what)
    shutil.rmtree(out, ignore_errors=True)

    category = "full disk (200 kB tmpfs): CacheWriter (native, through the package)"
    count_case(category)
    code = r"""
import sys, numpy as np, logitcache as lc
sys.path.insert(0, sys.argv[2])
from lc_testing import write_cache
try:
    write_cache(sys.argv[1], vocab=2000, k=32, lengths=[3000] * 30, block_tokens=1024, codec="none",
                target_shard_bytes=100000)
    print("no error")
except lc.CacheError as e:
    print("CacheError:", e)
"""
    proc = subprocess.run([sys.executable, "-c", code, os.path.join(small_tmpfs, "w"), os.path.dirname(__file__)],
                          capture_output=True, text=True, timeout=300)
    what = f"CacheWriter into 200 kB: exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-400:]}"
    if proc.returncode != 0:
        record(category, "crash", what)
    elif proc.stdout.startswith("CacheError:") and "No space left on device" in proc.stdout:
        record(category, "clear error", what)
    else:
        record(category, "unclear error", what)
    assert_no_bad("full disk (200 kB tmpfs): synth")
    assert_no_bad(category)


# ----------------------------------------------------------------------------------------------
# Bad teacher inputs


def teacher_inputs(tmp):
    """(description, --model, --tokenizer, --corpus, pattern naming what is wrong)."""
    data = os.path.join(REPO, "Data")
    model, tokenizer = os.path.join(data, "teacher"), os.path.join(data, "tokenizer.json")
    with open(os.path.join(model, "model.safetensors"), "rb") as f:
        weights = f.read()
    with open(os.path.join(model, "config.json")) as f:
        config = json.load(f)

    def model_dir(name, weights_bytes=weights, config_text=None):
        d = os.path.join(tmp, name)
        os.makedirs(d)
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(weights_bytes)
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write(config_text if config_text is not None else json.dumps(config))
        return d

    def text_file(name, content: bytes):
        p = os.path.join(tmp, name)
        with open(p, "wb") as f:
            f.write(content)
        return p

    n = struct.unpack("<Q", weights[:8])[0]
    header = json.loads(weights[8:8 + n])
    first = next(k for k in header if k != "__metadata__")

    def forged_header(edit):
        h = json.loads(json.dumps(header))
        edit(h)
        hb = json.dumps(h).encode()
        hb += b" " * (-len(hb) % 8)
        return struct.pack("<Q", len(hb)) + hb + weights[8 + n:]

    good = text_file("good.txt", b"Hello world, a small corpus for the teacher.\nAnother line.\n")
    os.mkdir(os.path.join(tmp, "empty-dir"))
    wordpiece = dict(json.load(open(tokenizer)), model={"type": "WordPiece", "vocab": {"a": 0}, "unk_token": "a"})
    cases = [
        ("safetensors truncated", model_dir("m-trunc", weights[:1_000_000]), tokenizer, good, r"model\.safetensors.*truncated"),
        ("safetensors empty", model_dir("m-empty", b""), tokenizer, good, r"model\.safetensors"),
        ("safetensors header length 2^63", model_dir("m-hlen", struct.pack("<Q", 2 ** 63) + weights[8:]), tokenizer, good,
         r"model\.safetensors.*header length"),
        ("safetensors offsets past the data", model_dir("m-off", forged_header(
            lambda h: h[first].update(data_offsets=[0, 10 ** 15]))), tokenizer, good, r"model\.safetensors.*" + first),
        ("safetensors shape overflowing", model_dir("m-shape", forged_header(
            lambda h: h[first].update(shape=[2 ** 40, 2 ** 40]))), tokenizer, good, r"model\.safetensors.*" + first),
        ("safetensors dtype unknown", model_dir("m-dtype", forged_header(lambda h: h[first].update(dtype="Q7"))),
         tokenizer, good, r"model\.safetensors.*Q7"),
        ("config.json rms_norm_eps -1", model_dir("m-eps", config_text=json.dumps(dict(config, rms_norm_eps=-1))),
         tokenizer, good, r"config\.json.*rms_norm_eps"),
        ("config.json hidden_size 0", model_dir("m-hid", config_text=json.dumps(dict(config, hidden_size=0))),
         tokenizer, good, r"config\.json.*hidden_size"),
        ("config.json not JSON", model_dir("m-json", config_text='{"architectures": ['), tokenizer, good, r"config\.json"),
        ("config.json vocab_size 10^12", model_dir("m-vocab", config_text=json.dumps(dict(config, vocab_size=10 ** 12))),
         tokenizer, good, r"vocab"),
        ("model directory missing", os.path.join(tmp, "no-model"), tokenizer, good, r"no-model"),
        ("tokenizer of another type (WordPiece)", model, text_file("wordpiece.json", json.dumps(wordpiece).encode()), good,
         r"WordPiece"),
        ("tokenizer truncated", model, text_file("trunc-tokenizer.json", open(tokenizer, "rb").read()[:5000]), good,
         r"tokenizer"),
        ("tokenizer is a directory", model, os.path.join(tmp, "empty-dir"), good, r"empty-dir"),
        ("corpus with invalid UTF-8", model, tokenizer, text_file("bad-utf8.txt", b"abc\xff\xfe def\n"),
         r"bad-utf8\.txt.*UTF-8"),
        ("corpus empty file", model, tokenizer, text_file("empty.txt", b""), r"empty\.txt"),
        ("corpus empty directory", model, tokenizer, os.path.join(tmp, "empty-dir"), r"empty-dir"),
        ("corpus missing", model, tokenizer, os.path.join(tmp, "missing.txt"), r"missing\.txt"),
        ("corpus jsonl with a broken line", model, tokenizer, text_file("broken.jsonl", b'{"text": "ok"}\n{"text": \n'),
         r"broken\.jsonl:2"),
        ("corpus jsonl without text", model, tokenizer, text_file("notext.jsonl", b'{"body": "x"}\n'), r"notext\.jsonl"),
        ("corpus zstd not a frame", model, tokenizer, text_file("bad.jsonl.zst", b"garbage"), r"bad\.jsonl\.zst"),
        ("corpus .u16 of odd size", model, tokenizer, text_file("odd.u16", bytes(3)), r"odd\.u16"),
        ("corpus .u32 id above the vocabulary", model, tokenizer,
         text_file("big.u32", struct.pack("<4I", 1, 2, 99999999, 3)), r"big\.u32.*99999999"),
    ]
    fifo = os.path.join(tmp, "fifo.txt")
    os.mkfifo(fifo)
    cases.append(("corpus is a FIFO", model, tokenizer, fifo, r"fifo\.txt"))
    return cases


def test_bad_teacher_inputs(tmp_path):
    category = "bad teacher inputs: logitcache teacher"
    binary = logitcache_bin()
    for i, (what, model, tokenizer, corpus, pattern) in enumerate(teacher_inputs(str(tmp_path))):
        count_case(category)
        cmd = [binary, "teacher", "--model", model, "--tokenizer", tokenizer, "--corpus", corpus,
               "--out", str(tmp_path / f"out{i}"), "--context", "32", "--top-k", "8", "--threads", "1"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            record(category, "hang", what)
            continue
        error = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
        detail = f"{what}: exit {proc.returncode}: {error[-1] if error else proc.stderr.strip()[-300:]}"
        if proc.returncode < 0 or proc.returncode > 1:
            record(category, "crash", detail)
        elif proc.returncode == 0:
            record(category, "unclear error", detail + " (accepted)")
        elif not error or not re.search(pattern, error[-1]):
            record(category, "unclear error", detail + f" (does not match {pattern!r})")
        else:
            record(category, "clear error", detail)
    assert_no_bad(category)


# ----------------------------------------------------------------------------------------------
# Absurd loader arguments through both Python backends

ABSURD = [
    dict(batch_size=10 ** 9), dict(batch_size=0), dict(batch_size=-1), dict(context=10 ** 9), dict(context=0),
    dict(k=10 ** 6), dict(k=-1), dict(world_size=10 ** 9), dict(world_size=0), dict(rank=-1), dict(rank=5, world_size=5),
    dict(shuffle_buffer=10 ** 9), dict(shuffle_buffer=0), dict(temperature=1e-39), dict(temperature=1e-4),
    dict(temperature=1e4), dict(temperature=float("inf")), dict(temperature=float("nan")), dict(temperature=-1.0),
    dict(decode_threads=0), dict(decode_threads=10 ** 6), dict(prefetch_blocks=0), dict(prefetch_blocks=10 ** 6),
    dict(batch_size=2 ** 20, context=2 ** 24, k=65535), dict(batch_size=2 ** 20, context=4096, k=4096),
    dict(shuffle_buffer=2 ** 24, context=2 ** 20, k=1000), dict(seed=-1), dict(seed=2 ** 64), dict(mode="top"),
    dict(remainder="cut"), dict(k=9), dict(mode="sampled", k=4),
]


def test_absurd_loader_arguments(workers, bases):
    category = "absurd loader arguments (native and pure backends)"
    path = bases["v3-zstd-sampled"]
    for args in ABSURD:
        count_case(category)
        full = dict(dict(batch_size=2, context=64, k=2), **args)
        answers = {}
        for b, w in workers.items():
            a = w.run({"kind": "loader", "path": path, "args": full}, timeout=CASE_TIMEOUT)
            what = f"{args} [{b}]"
            if "crash" in a or "exception" in a:
                record(category, "crash", f"{what}: {a.get('crash') or a['exception']}")
            elif "hang" in a:
                record(category, "hang", what)
            elif a["loader"]["ok"]:
                record(category, "unclear error", f"{what}: accepted")
            elif a["loader"]["seconds"] > 2:
                record(category, "hang", f"{what}: refused only after {a['loader']['seconds']:.1f} s")
            else:
                record(category, "clear error", f"{what}: {a['loader']['error']}")
                answers[b] = a["loader"]["error"]
        if len(answers) == 2 and answers["native"] != answers["pure"]:
            record(category, "wrong output", f"{args}: messages differ: native {answers['native']!r}, "
                                             f"pure {answers['pure']!r}", runs=0)
    assert_no_bad(category)


# ----------------------------------------------------------------------------------------------
# The table


def test_report_table():
    """Prints the outcome table of the tests above (and writes it as JSON when asked)."""
    assert TABLE, "no adversarial test ran before the report"
    head = ["category", "cases", "runs"] + list(OUTCOMES)
    rows = [[c, str(r["cases"]), str(r["runs"])] + [str(r[o]) for o in OUTCOMES] for c, r in TABLE.items()]
    total = ["total"] + [str(sum(r[k] for r in TABLE.values())) for k in ["cases", "runs", *OUTCOMES]]
    widths = [max(len(x[i]) for x in [head, *rows, total]) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    print("\n" + "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                            *map(line, rows), line(total)]))
    target = os.environ.get("LOGITCACHE_ADVERSARIAL_REPORT")
    if target:
        target = "/tmp/logitcache-adversarial.json" if target == "1" else target
        with open(target, "w") as f:
            json.dump({"outcomes": list(OUTCOMES), "categories": TABLE, "bad": FAILURES}, f, indent=1)
