"""Remote caches (`logitcache.remote`) against real local servers: nginx for http://, moto's S3
server for s3://, and file:// URLs. Every read is compared with the pure reader's read of the
same cache on disk; damaged, short, missing and hostile remote files must give a refetch or a
clear `CacheError` naming the URL and shard, never wrong values. Servers listen on 127.0.0.1
only, every wait is bounded, and each server is stopped by the test that started it."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import xxhash

from logitcache.reader import CHECKSUM_KEY, Cache, CacheError
from logitcache import remote
from logitcache.remote import ShardStore, open_cache

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, os.pardir, os.pardir))

# Three test caches: zstd with samples (8 shards of ~139 KB), uncompressed (zero-copy reads,
# 5 shards), and another seed (to republish a changed cache at the same URL).
SYNTH = {
    "zstd": ["--seed", 1, "--tokens", 20000, "--seq-len", 500, "--k", 16, "--vocab", 4000,
             "--block-tokens", 1024, "--shard-bytes", 60000, "--sampled", "--draws", 20],
    "none": ["--seed", 3, "--tokens", 6000, "--seq-len", 300, "--k", 8, "--vocab", 1000, "--codec", "none",
             "--block-tokens", 512, "--shard-bytes", 50000],
    "other": ["--seed", 2, "--tokens", 20000, "--seq-len", 500, "--k", 16, "--vocab", 4000,
              "--block-tokens", 1024, "--shard-bytes", 60000],
}
FIELDS = ("input_ids", "next_logprob", "logsumexp", "entry_offsets", "entry_ids", "entry_logprobs",
          "sample_offsets", "sample_ids", "sample_draws")
FAST = dict(backoff=0.05, timeout=5.0)  # retries spaced 50, 100, 200 ms; no wait over 5 s


# ----------------------------------------------------------------------------------------------
# helpers and fixtures


def lc_bin() -> str:
    path = os.environ.get("LOGITCACHE_BIN") or os.path.join(REPO, ".build", "release", "logitcache")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no logitcache binary at {path}: build it (swift build -c release) or set LOGITCACHE_BIN")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, seconds: float, what: str, log: str = ""):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}: {read_text(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on 127.0.0.1:{port} within {seconds} s: {read_text(log)}")


def read_text(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-4000:]
    except OSError:
        return ""


def same_rows(a, b):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and x.shape == y.shape, f
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f"{f} differs"


def same_cache(local: Cache, other: Cache):
    """Every value, read whole, sequence by sequence, and as padded matrices."""
    assert (other.tokens, other.sequences, other.entries, other.samples, other.max_entries) == \
        (local.tokens, local.sequences, local.entries, local.samples, local.max_entries)
    assert other.sequence_table() == local.sequence_table()
    same_rows(local.read(), other.read())
    for i in range(local.sequences):
        same_rows(local.sequence(i)[1], other.sequence(i)[1])
    p, q = local.read_padded(0, local.tokens, k=4), other.read_padded(0, other.tokens, k=4)
    for f in ("input_ids", "next_logprob", "logsumexp", "entry_counts", "entry_ids", "entry_logprobs"):
        x, y = getattr(p, f), getattr(q, f)
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f


def shard_files(directory: str) -> dict:
    """name -> size of the final-named shard files (not temporaries) in a local copy."""
    return {n: os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory) if n.endswith(".lcs")}


def republish_manifest(path: str, edit):
    """Rewrites a manifest's text with `edit` and recomputes its checksum (a hostile but
    well-formed manifest)."""
    with open(path, "rb") as f:
        data = f.read()
    data = edit(data)
    i = data.rfind(CHECKSUM_KEY)
    data = data[:i + len(CHECKSUM_KEY)] + b"%016x" % xxhash.xxh3_64_intdigest(data[:i]) + data[i + len(CHECKSUM_KEY) + 16:]
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    binary = lc_bin()
    root = tmp_path_factory.mktemp("caches")
    out = {}
    for name, args in SYNTH.items():
        proc = subprocess.run([binary, "synth", str(root / name), *map(str, args)], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        out[name] = str(root / name)
    return out


@pytest.fixture(scope="module")
def local(caches):
    opened = {name: Cache(path) for name, path in caches.items()}
    yield opened
    for c in opened.values():
        c.close()


class Nginx:
    """A real nginx on 127.0.0.1 serving `www`: `/` plainly, `/slow/` at 8 KB/s. One process
    (master_process off), so killing it stops the server at once; its access log records the
    method, URI, status, Range header and bytes sent of every request."""

    def __init__(self, work: str, www: str):
        exe = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                              if os.access(p, os.X_OK)), None)
        if exe is None:
            pytest.fail("nginx is not installed (Debian package nginx; tools/setup installs it)")
        self.exe, self.work, self.www = exe, work, www
        self.port = free_port()
        self.proc = None
        self.access_log = os.path.join(work, "access.log")
        self.error_log = os.path.join(work, "error.log")
        for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(work, d), exist_ok=True)
        self.conf = os.path.join(work, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(f"""
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {self.error_log} info;
events {{ worker_connections 64; }}
http {{
    log_format lc '$request_method $uri $status "$http_range" $body_bytes_sent';
    access_log {self.access_log} lc;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    default_type application/octet-stream;
    keepalive_timeout 5;
    server {{
        listen 127.0.0.1:{self.port};
        root {www};
        location /slow/ {{
            alias {www}/;
            limit_rate 8k;
        }}
    }}
}}
""")

    def start(self):
        log = open(os.path.join(self.work, "stderr.log"), "ab")
        self.proc = subprocess.Popen([self.exe, "-p", self.work, "-c", self.conf, "-e", self.error_log],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        wait_port(self.port, self.proc, 15, "nginx", self.error_log)
        return self

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=15)
        self.proc = None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def requests(self, prefix: str) -> list:
        """(status, range header, bytes sent) of logged requests whose URI starts with `prefix`."""
        out = []
        for line in read_text_all(self.access_log).splitlines():
            m = re.fullmatch(r'(\S+) (\S+) (\d+) "([^"]*)" (\d+)', line.strip())
            if m and m.group(2).startswith(prefix):
                out.append((int(m.group(3)), m.group(4), int(m.group(5))))
        return out


def read_text_all(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    return str(tmp_path_factory.mktemp("www"))


@pytest.fixture(scope="module")
def server(www, tmp_path_factory):
    ng = Nginx(str(tmp_path_factory.mktemp("nginx")), www).start()
    yield ng
    ng.stop()


@pytest.fixture
def publish(www, caches, request):
    """publish(cache) -> URL path of a fresh copy of a test cache under the served root."""
    counter = [0]

    def make(which: str = "zstd") -> str:
        counter[0] += 1
        name = re.sub(r"[^A-Za-z0-9]", "-", request.node.name)[:60] + f"-{counter[0]}"
        shutil.copytree(caches[which], os.path.join(www, name))
        return name
    return make


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """Local copies go under the test's own temp dir (and never into ~/.cache)."""
    d = str(tmp_path / "local")
    monkeypatch.setenv("LOGITCACHE_CACHE_DIR", d)
    return d


def manifest_entries(path: str) -> list:
    with open(os.path.join(path, "manifest.json")) as f:
        return json.load(f)["shards"]


def same_batch(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert np.array_equal(a[key], b[key], equal_nan=True), key
        else:
            assert a[key] == b[key], key


def epoch_across_a_kill(want, got, server, name: str) -> int:
    """Takes a third of `got`'s epoch beside `want`'s, kills `server`, then goes on until the
    first CacheError (which must name the URL as unreachable). Every batch taken must equal
    `want`'s. Returns the number of errors (0 or 1)."""
    n = got.batches_in_epoch
    assert n >= 6
    for _ in range(n // 3):
        same_batch(next(want), next(got))
    server.kill()
    for _ in range(n - n // 3):
        expected = next(want)
        try:
            batch = next(got)
        except CacheError as e:
            assert server.url(name) in str(e) and "unreachable" in str(e)
            return 1
        same_batch(expected, batch)
    return 0


# ----------------------------------------------------------------------------------------------
# reading over http


def test_http_lazy_read_equals_local(server, publish, local, cache_dir):
    name = publish("zstd")
    with open_cache(server.url(name), prefetch=2, chunk_bytes=50000, **FAST) as cache:
        store = cache.store
        assert store.directory.startswith(cache_dir) and os.path.basename(store.directory) == cache.manifest["checksum"]
        # Lazy: opening read the footers (sequence table, totals) but fetched no shard.
        assert shard_files(store.directory) == {}
        assert all(s == 200 or s == 206 for s, _, _ in server.requests(f"/{name}/"))
        first = store.names[0]
        same_rows(local["zstd"].read(0, 100), cache.read(0, 100))
        assert set(shard_files(store.directory)) >= {first}
        # The next two shards follow in the background.
        deadline = time.monotonic() + 20
        while len(shard_files(store.directory)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert set(shard_files(store.directory)) == set(store.names[:3])
        same_cache(local["zstd"], cache)
        assert cache.verify()["tokens"] == local["zstd"].tokens
    # Range requests only for shards, in chunk_bytes pieces; every shard fetched once.
    for entry in manifest_entries(local["zstd"].directory):
        got = [r for r in server.requests(f"/{name}/{entry['file']}") if r[0] == 206]
        assert sum(r[2] for r in got) >= entry["bytes"]
        assert sum(r[2] for r in got) <= entry["bytes"] + (64 << 10)  # + the footer reads


def test_http_uncompressed_zero_copy_and_materialized(server, publish, local, cache_dir):
    name = publish("none")
    with open_cache(server.url(name), lazy=False, **FAST) as cache:
        assert set(shard_files(cache.directory)) == set(cache.store.names)
        same_cache(local["none"], cache)
    # Lazy, bounded to ~2 shards: zero-copy rows read before an eviction stay correct.
    size = max(e["bytes"] for e in manifest_entries(local["none"].directory))
    with open_cache(server.url(name), local_dir=os.path.join(cache_dir, "small"), max_bytes=2 * size + 100,
                    **FAST) as cache:
        rows = [cache.read(a, a + 1000) for a in range(0, cache.tokens - 1000, 1000)]
        assert len(shard_files(cache.store.directory)) <= 2
        for i, a in enumerate(range(0, cache.tokens - 1000, 1000)):
            same_rows(local["none"].read(a, a + 1000), rows[i])


def test_materialize_serves_local_readers(server, publish, local, cache_dir):
    name = publish("zstd")
    with ShardStore(server.url(name), **FAST) as store:
        directory = store.materialize()
        assert directory == store.directory
        assert set(shard_files(directory)) == set(store.names)
        with open(os.path.join(directory, "manifest.json"), "rb") as f, \
                open(os.path.join(local["zstd"].directory, "manifest.json"), "rb") as g:
            assert f.read() == g.read()
        with Cache(directory) as c:
            same_cache(local["zstd"], c)
        # The Swift reader (what the native Python binding opens) reads it too.
        proc = subprocess.run([lc_bin(), "verify", directory], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        # A second store on the same URL reuses the verified copies: no shard is downloaded again.
        before = len(server.requests(f"/{name}/"))
        with ShardStore(server.url(name), **FAST) as again:
            assert again.materialize() == directory
        after = server.requests(f"/{name}/")[before:]
        assert [r for r in after if r[0] == 206] == [] and len(after) == 1  # the manifest only


# ----------------------------------------------------------------------------------------------
# damaged, short, missing and hostile remote files


def test_corrupt_shard_refetched_then_clear_error(server, publish, www, local, cache_dir):
    name = publish("zstd")
    entries = manifest_entries(os.path.join(www, name))
    victim = entries[1]["file"]
    path = os.path.join(www, name, victim)
    with open(path, "rb") as f:
        good = f.read()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x40  # one flipped bit inside a chunk; the size is unchanged
    with open(path, "wb") as f:
        f.write(bad)

    with open_cache(server.url(name), retries=2, prefetch=0, **FAST) as cache:
        store = cache.store
        start = int(cache.shard_token_starts[1])
        same_rows(local["zstd"].read(0, 100), cache.read(0, 100))  # shard 0 is sound
        with pytest.raises(CacheError) as e:
            cache.read(start, start + 10)
        msg = str(e.value)
        assert server.url(name) in msg and victim in msg and "checksum mismatch" in msg and "3 attempts" in msg
        assert "wrong bytes" in msg
        assert len([r for r in server.requests(f"/{name}/{victim}") if r[0] == 206 and r[1].startswith("bytes=0-")]) == 3
        assert victim not in shard_files(store.directory)
        assert not os.path.exists(os.path.join(store.directory, f".{victim}.tmp"))
        # The shard is never used, however often it is asked for.
        with pytest.raises(CacheError):
            cache.sequence(cache.shards[1].sequences and int(cache.shard_sequence_starts[1]))

    # Damaged in one transfer only: the retry gets a good copy and the read is right.
    with open(path, "wb") as f:
        f.write(bad)

    def repair(what, attempt, error):
        assert victim in what and "checksum mismatch" in str(error)
        with open(path, "wb") as f:
            f.write(good)

    with open_cache(server.url(name), retries=2, prefetch=0, on_retry=repair, **FAST) as cache:
        same_cache(local["zstd"], cache)
        with open(os.path.join(cache.store.directory, victim), "rb") as f:
            assert f.read() == good


def test_truncated_download_resumes_with_a_range_request(server, publish, www, local, cache_dir):
    name = publish("zstd")
    victim = manifest_entries(os.path.join(www, name))[2]["file"]
    path = os.path.join(www, name, victim)
    with open(path, "rb") as f:
        good = f.read()
    cut = 50000
    # The shard's footer is read from the whole file before it is cut short on the server.
    with ShardStore(server.url(name), chunk_bytes=16384, retries=2, **FAST) as store:
        store.footer_shards()
        with open(path, "wb") as f:
            f.write(good[:cut])
        with pytest.raises(CacheError) as e:
            store.path(victim)
        assert victim in str(e.value) and server.url(name) in str(e.value)
        assert "shorter" in str(e.value)
        assert victim not in shard_files(store.directory)
        # What arrived is kept as a temporary, never under the final name.
        assert os.path.getsize(os.path.join(store.directory, f".{victim}.tmp")) == cut

        repaired = []

        def repair(what, attempt, error):
            repaired.append(str(error))
            with open(path, "wb") as f:
                f.write(good)

        store.on_retry = repair
        with open(path, "wb") as f:
            f.write(good[:cut])
        n_before = len(server.requests(f"/{name}/{victim}"))
        local_path = store.path(victim)
        with open(local_path, "rb") as f:
            assert f.read() == good
        after = server.requests(f"/{name}/{victim}")[n_before:]
        # The first request of this call resumed at the temporary's end (416: nothing more on the
        # short file), and after the repair the download went on from byte 50000, not from 0.
        assert after[0][1] == f"bytes={cut}-{cut + 16383}" and after[0][0] == 416
        assert any(r[1] == f"bytes={cut}-{cut + 16383}" and r[0] == 206 for r in after[1:])
        assert not any(r[1].startswith("bytes=0-") for r in after)
        assert repaired


def test_size_limit_evicts_and_reads_correctly(server, publish, local, cache_dir):
    name = publish("zstd")
    sizes = [e["bytes"] for e in manifest_entries(local["zstd"].directory)]
    limit = int(2.5 * max(sizes))
    order = np.random.default_rng(5).permutation(local["zstd"].sequences)
    with open_cache(server.url(name), max_bytes=limit, prefetch=1, **FAST) as cache:
        store = cache.store
        for i in order:
            same_rows(local["zstd"].sequence(int(i))[1], cache.sequence(int(i))[1])
            assert sum(shard_files(store.directory).values()) <= limit
            assert store.local_bytes() <= limit
        same_rows(local["zstd"].read(), cache.read())  # the whole cache through a 2-shard window
        assert sum(shard_files(store.directory).values()) <= limit
    fetched = [r for e in manifest_entries(local["zstd"].directory) for r in server.requests(f"/{name}/{e['file']}")
               if r[0] == 206 and r[1].startswith("bytes=0-")]
    assert len(fetched) > len(sizes)  # shards were evicted and fetched again

    with ShardStore(server.url(name), max_bytes=max(sizes) - 1, **FAST) as store:
        big = store.names[sizes.index(max(sizes))]
        with pytest.raises(CacheError, match=re.escape(big) + ".*more than the local cache limit"):
            store.path(big)
        with pytest.raises(CacheError, match="materializing needs"):
            store.materialize()
    # Pinned shards are never evicted: a second pin that cannot fit is refused, not squeezed in.
    with ShardStore(server.url(name), local_dir=os.path.join(cache_dir, "pins"), max_bytes=limit, **FAST) as store:
        a, b, c = store.names[:3]
        store.path(a, pin=True)
        store.path(b, pin=True)
        with pytest.raises(CacheError, match="do not fit"):
            store.path(c)
        store.unpin(a)
        store.path(c)
        assert set(shard_files(store.directory)) == {b, c}


def test_native_reader_fetches_shards_on_demand(server, publish, local, cache_dir):
    """The native reader at a URL reads only footers when it opens, fetches a shard when a read
    first needs it (through the Swift reader's shard source), and under max_bytes keeps at most
    the shards that fit mapped: every read equals the local native read."""
    import logitcache as lc
    name = publish("zstd")
    here = local["zstd"].directory
    sizes = [e["bytes"] for e in manifest_entries(here)]
    with lc.Cache(here, backend="native") as want, \
            lc.Cache(server.url(name), backend="native", remote=dict(prefetch=0, **FAST)) as c:
        store = c._source.store
        assert shard_files(store.directory) == {}
        same = lambda a, b: all(np.array_equal(getattr(a, f), getattr(b, f))  # noqa: E731
                                for f in ("input_ids", "next_token_logprobs", "logsumexps", "entry_counts",
                                          "entry_ids", "entry_logprobs"))
        assert same(want.read(0, 100, k=16), c.read(0, 100, k=16))
        assert set(shard_files(store.directory)) == {store.names[0]}
        last = want.tokens
        assert same(want.read(last - 50, last, k=4), c.read(last - 50, last, k=4))
        assert set(shard_files(store.directory)) == {store.names[0], store.names[-1]}
        assert c.verify()["sound"] and set(shard_files(store.directory)) == set(store.names)

    limit = int(2.5 * max(sizes))
    order = np.random.default_rng(7).permutation(local["zstd"].sequences)
    with lc.Cache(here, backend="native") as want, \
            lc.Cache(server.url(name), backend="native",
                     remote=dict(local_dir=os.path.join(cache_dir, "bounded"), max_bytes=limit, prefetch=1, **FAST)) as c:
        store = c._source.store
        assert c._source.open_shards() == 2
        for i in order[:40]:
            a, b = want.sequence(int(i)), c.sequence(int(i))
            assert a == b
            assert same(want.read(a.start, a.start + a.length, k=16), c.read(b.start, b.start + b.length, k=16))
            assert sum(shard_files(store.directory).values()) <= limit
        samples_want, samples_got = want.read_samples(0, want.tokens), c.read_samples(0, c.tokens)
        assert all(np.array_equal(x, y) for x, y in zip(samples_want, samples_got))
        assert sum(shard_files(store.directory).values()) <= limit
    fetched = [r for e in manifest_entries(here) for r in server.requests(f"/{name}/{e['file']}")
               if r[0] == 206 and r[1].startswith("bytes=0-")]
    assert len(fetched) > 2 * len(sizes)  # both caches fetched every shard; the bounded one again


def test_native_loader_over_a_remote_cache_mid_epoch_kill(publish, www, caches, cache_dir, tmp_path):
    """The native StudentLoader at a URL, two decode threads fetching shards through the Python
    store from the library's threads, two shards of room: batches equal the local loader's; after
    the server is killed each batch is equal still or a CacheError naming the URL, never another
    batch, and the loader then closes cleanly."""
    import logitcache as lc
    ng = Nginx(str(tmp_path / "nginx"), www).start()
    try:
        name = publish("zstd")
        size = max(e["bytes"] for e in manifest_entries(caches["zstd"]))
        args = dict(batch_size=4, context=256, k=8, mode="tail", seed=3, shuffle_buffer=8, decode_threads=2,
                    backend="native")
        want = lc.StudentLoader(caches["zstd"], **args)
        got = lc.StudentLoader(ng.url(name), remote=dict(max_bytes=2 * size + 1000, prefetch=1, retries=1, **FAST),
                               **args)
        assert got._source is not None and got._owned is not None
        errors = epoch_across_a_kill(want, got, ng, name)
        assert errors == 1  # 8 shards through 2 shards of room: a refetch was needed
        got.close()
        want.close()
    finally:
        ng.stop()


def test_missing_shard_and_manifest_are_not_found(server, publish, www, cache_dir):
    name = publish("zstd")
    victim = manifest_entries(os.path.join(www, name))[0]["file"]
    with ShardStore(server.url(name), retries=3, **FAST) as store:
        os.unlink(os.path.join(www, name, victim))
        n = len(server.requests(f"/{name}/{victim}"))
        with pytest.raises(CacheError) as e:
            store.path(victim)
        assert "not found" in str(e.value) and store.shard_url(victim) in str(e.value)
        assert len(server.requests(f"/{name}/{victim}")) == n + 1  # a 404 is not retried
    with pytest.raises(CacheError, match=re.escape(server.url("no-such-cache/manifest.json")) + ".*not found"):
        open_cache(server.url("no-such-cache"), **FAST)


def test_hostile_manifest_names_refused(server, publish, www, tmp_path, cache_dir):
    first = manifest_entries(os.path.join(www, publish("zstd")))[0]["file"].encode()
    for bad in (b"../x", b"/etc/passwd", b"a/b", b"..", b".part.tmp", b"manifest.json"):
        for validate in (True, False):
            name = publish("zstd")
            republish_manifest(os.path.join(www, name, "manifest.json"),
                               lambda data: data.replace(b'"' + first + b'"', b'"' + bad + b'"', 1))
            with pytest.raises(CacheError, match="shard|does not match") as e:
                open_cache(server.url(name), validate_schema=validate, **FAST)
            assert server.url(name) in str(e.value)
    # Nothing was written outside the local cache directory.
    assert not os.path.exists(os.path.join(cache_dir, os.pardir, "x"))
    # A manifest damaged in transfer (checksum) is refetched, then refused.
    name = publish("zstd")
    with open(os.path.join(www, name, "manifest.json"), "r+b") as f:
        f.seek(20)
        f.write(b"#")
    with pytest.raises(CacheError, match="checksum mismatch.*|.*3 attempts"):
        open_cache(server.url(name), retries=2, **FAST)
    assert len(server.requests(f"/{name}/manifest.json")) == 3


def test_changed_remote_is_not_mixed_with_stale_copy(server, publish, www, local, cache_dir):
    name = publish("zstd")
    with ShardStore(server.url(name), **FAST) as store:
        old_dir = store.materialize()
    # Republished at the same URL: a new local directory, keyed by the new manifest checksum.
    shutil.rmtree(os.path.join(www, name))
    shutil.copytree(local["other"].directory, os.path.join(www, name))
    with open_cache(server.url(name), **FAST) as cache:
        assert cache.store.directory != old_dir and os.path.dirname(cache.store.directory) == os.path.dirname(old_dir)
        same_cache(local["other"], cache)
    # A damaged local copy under a final name (a disk error, a meddler) is refetched, not used.
    with ShardStore(server.url(name), **FAST) as store:
        victim = store.names[0]
        directory = store.directory
    with open(os.path.join(directory, victim), "r+b") as f:
        f.seek(1000)
        f.write(b"\xff\xff")
    with open_cache(server.url(name), **FAST) as cache:
        same_rows(local["other"].read(0, 500), cache.read(0, 500))
    with open(os.path.join(directory, victim), "rb") as f, open(os.path.join(local["other"].directory, victim), "rb") as g:
        assert f.read() == g.read()
    # The old version's copy stays until asked to go.
    assert os.path.isdir(old_dir)
    with ShardStore(server.url(name), **FAST) as store:
        assert store.remove_other_versions() == [old_dir]
        assert not os.path.exists(old_dir) and os.path.isdir(store.directory)


# ----------------------------------------------------------------------------------------------
# servers that die or hang


def test_server_killed_mid_download_then_resumed(publish, www, local, cache_dir, tmp_path):
    ng = Nginx(str(tmp_path / "nginx"), www).start()
    try:
        name = publish("zstd")
        shared = str(tmp_path / "shared")
        # Through /slow/ (8 KB/s after a burst) a 16 KiB range takes about a second.
        with ShardStore(ng.url("slow/" + name), local_dir=shared, chunk_bytes=16384, retries=2, timeout=3.0,
                        backoff=0.1, prefetch=0) as store:
            victim = store.names[0]
            killer = threading.Timer(2.5, ng.kill)
            killer.start()
            t0 = time.monotonic()
            with pytest.raises(CacheError) as e:
                store.path(victim)
            killer.join()
            assert time.monotonic() - t0 < 30
            assert store.shard_url(victim) in str(e.value) and "3 attempts" in str(e.value)
            assert "unreachable" in str(e.value)
            assert victim not in shard_files(store.directory)
            have = os.path.getsize(os.path.join(store.directory, f".{victim}.tmp"))
            assert 0 < have < store.entries[victim]["bytes"] and have % 16384 == 0
            directory = store.directory
        # The server comes back; a new reader of the same cache (same manifest, same local
        # directory) resumes the download where it broke, and every value is right.
        ng.start()
        with open_cache(ng.url(name), local_dir=shared, chunk_bytes=16384, prefetch=0, **FAST) as cache:
            assert cache.store.directory == directory
            same_rows(local["zstd"].read(0, 2000), cache.read(0, 2000))
        size = local["zstd"].shards[0].size
        footer_read = f"bytes={size - min(size, remote.TAIL_GUESS)}-{size - 1}"
        ranges = [r[1] for r in ng.requests(f"/{name}/{victim}") if r[1] != footer_read]
        assert ranges[0] == f"bytes={have}-{have + 16383}", ranges
    finally:
        ng.stop()


def test_server_stopped_gives_clear_errors(publish, www, local, cache_dir, tmp_path):
    ng = Nginx(str(tmp_path / "nginx"), www).start()
    name = publish("zstd")
    url = ng.url(name)
    try:
        cache = open_cache(url, retries=1, prefetch=0, **FAST)
        try:
            same_rows(local["zstd"].read(0, 100), cache.read(0, 100))
            ng.kill()
            # Shard 0 is local and verified: its reads go on. Shard 3 is not: a clear error.
            same_rows(local["zstd"].read(100, 2000), cache.read(100, 2000))
            start = int(cache.shard_token_starts[3])
            t0 = time.monotonic()
            with pytest.raises(CacheError) as e:
                cache.read(start, start + 10)
            assert time.monotonic() - t0 < 20
            assert cache.store.shard_url(cache.store.names[3]) in str(e.value)
            assert "unreachable" in str(e.value)
        finally:
            cache.close()
        with pytest.raises(CacheError, match=re.escape(url) + ".*unreachable"):
            open_cache(url, retries=1, local_dir=str(tmp_path / "other"), **FAST)
    finally:
        ng.stop()


def test_student_loader_over_a_remote_cache_mid_epoch_kill(publish, www, local, caches, cache_dir, tmp_path):
    """The numpy student loader over a lazy http cache bounded to two shards: its batches equal
    the local loader's; after the server is killed, each batch is either equal still (its shards
    are local) or a CacheError, never a different batch."""
    from logitcache.loader import StudentLoader
    ng = Nginx(str(tmp_path / "nginx"), www).start()
    try:
        name = publish("zstd")
        size = max(e["bytes"] for e in manifest_entries(caches["zstd"]))
        args = dict(batch_size=4, context=256, k=8, mode="tail", seed=3, shuffle_buffer=8)
        want = StudentLoader(Cache(caches["zstd"]), **args)
        with open_cache(ng.url(name), max_bytes=2 * size + 1000, prefetch=1, retries=1, **FAST) as cache:
            got = StudentLoader(cache, **args)
            assert shard_files(cache.store.directory) == {}  # the window table came from footers
            errors = epoch_across_a_kill(want, got, ng, name)
            assert errors == 1  # 8 shards through a 2-shard cache: a refetch was needed
    finally:
        ng.stop()


def test_unresponsive_server_times_out():
    """A server that accepts connections and never answers: a timeout, not a hang."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(CacheError, match="timed out"):
            open_cache(f"http://127.0.0.1:{port}/c", retries=1, timeout=1.0, backoff=0.05)
        assert time.monotonic() - t0 < 15
    finally:
        stop.set()
        t.join(timeout=5)
        for s in held:
            s.close()
        listener.close()


# ----------------------------------------------------------------------------------------------
# file:// and s3://


def test_file_url(caches, local, tmp_path, cache_dir):
    served = str(tmp_path / "served")
    shutil.copytree(caches["zstd"], served)
    url = "file://" + served
    with open_cache(url, max_bytes=300000, chunk_bytes=40000, **FAST) as cache:
        assert cache.store.directory.startswith(cache_dir)
        same_cache(local["zstd"], cache)
        assert sum(shard_files(cache.store.directory).values()) <= 300000
    # A plain path is the local reader itself (no copy).
    with open_cache(served) as c:
        assert type(c) is Cache and c.directory == served
    # A corrupt file behind a file:// URL is refused like any remote one.
    victim = manifest_entries(served)[4]["file"]
    with open(os.path.join(served, victim), "r+b") as f:
        f.seek(5000)
        f.write(b"\x00\x01\x02")
    with open_cache(url, local_dir=str(tmp_path / "fresh"), retries=1, **FAST) as cache:
        start = int(cache.shard_token_starts[4])
        with pytest.raises(CacheError, match=re.escape(victim) + ".*checksum mismatch"):
            cache.read(start, start + 1)
        same_rows(local["zstd"].read(0, 5), cache.read(0, 5))


def test_s3_through_a_local_moto_server(caches, local, tmp_path, cache_dir, monkeypatch):
    s3fs = pytest.importorskip("s3fs", reason="s3fs (PyPI) is needed for s3:// URLs")
    moto_server = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    if not os.access(moto_server, os.X_OK):
        pytest.fail("moto_server not found: pip install 'moto[server]' (tools/setup)")
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    port = free_port()
    log_path = str(tmp_path / "moto.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([moto_server, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)
    try:
        wait_port(port, proc, 30, "moto_server", log_path)
        endpoint = f"http://127.0.0.1:{port}"
        options = {"key": "testing", "secret": "testing",
                   "client_kwargs": {"endpoint_url": endpoint, "region_name": "eu-west-1"}}
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
        fs.mkdir("lc-test")
        for f in sorted(os.listdir(caches["zstd"])):
            fs.put_file(os.path.join(caches["zstd"], f), f"lc-test/run1/{f}")
        with open_cache("s3://lc-test/run1", storage_options=options, max_bytes=400000,
                        chunk_bytes=50000, **FAST) as cache:
            same_cache(local["zstd"], cache)
        with pytest.raises(CacheError, match="not found"):
            open_cache("s3://lc-test/absent", storage_options=options, local_dir=str(tmp_path / "x"), **FAST)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_package_entry_points_take_urls(server, publish, local, cache_dir):
    """`logitcache.Cache`, `StudentLoader` and the torch dataset accept a URL: the pure backend
    reads lazily, the native one from the fetched directory; both equal the local cache."""
    import logitcache as lc
    name = publish("zstd")
    url = server.url(name)
    here = local["zstd"].directory
    want = lc.Cache(here, backend="pure").read(0, 3000, k=8)
    for backend in ("pure", "native"):
        with lc.Cache(url, backend=backend, remote=dict(FAST)) as c:
            assert c.url == url and c.path.startswith(cache_dir)
            got = c.read(0, 3000, k=8)
            for field in ("input_ids", "entry_counts", "entry_ids", "entry_logprobs", "logsumexps"):
                assert np.array_equal(getattr(want, field), getattr(got, field)), (backend, field)
            args = dict(batch_size=2, context=128, k=8, seed=3, backend=backend)
            a = lc.StudentLoader(c, **args).take(3)
            b = lc.StudentLoader(here, **args).take(3)
            for x, y in zip(a, b):
                assert np.array_equal(x["windows"], y["windows"]) and np.array_equal(x["target_ids"], y["target_ids"])
    torch_dataset = pytest.importorskip("logitcache.torch")
    import torch
    fresh = os.path.join(cache_dir, "dataset")
    ds = torch_dataset.LogitCacheDataset(url, batch_size=2, context=128, k=8, seed=3, rank=0, world_size=1,
                                         remote=dict(FAST, local_dir=fresh))
    assert ds.cache_directory.startswith(fresh) and ds.url == url
    assert shard_files(ds.cache_directory) == {}  # the manifest only: streams fetch what they read
    first = next(iter(ds))
    ref = lc.StudentLoader(here, batch_size=2, context=128, k=8, seed=3).next()
    assert np.array_equal(first["windows"].numpy(), ref["windows"])
    # Two DataLoader workers, each fetching shards on demand: the epoch equals the local one's.
    local_ds = torch_dataset.LogitCacheDataset(here, batch_size=2, context=128, k=8, seed=3, rank=0, world_size=1)
    got = [b["target_ids"] for b in torch_dataset.LogitCacheDataLoader(ds, num_workers=2)]
    want = [b["target_ids"] for b in torch_dataset.LogitCacheDataLoader(local_ds, num_workers=2)]
    assert len(got) == len(want) > 10 and all(torch.equal(x, y) for x, y in zip(got, want))
    # Options for a local path are a mistake, not silently ignored.
    with pytest.raises(TypeError):
        lc.Cache(here, remote=dict(FAST))
