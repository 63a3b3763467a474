"""Remote caches: a cache behind an fsspec URL, read through a verified, bounded local copy.

A cache published at `s3://`, `gs://`, `http(s)://` or `file://` (any fsspec protocol whose
filesystem is installed) is read shard by shard: each shard is downloaded into a local
directory, checked against the manifest's `bytes` and whole-file `xxh3` (Schemas/FORMAT.md
section 7) and only then renamed to its final name and used. Nothing unverified is ever read.

    cache = open_cache("https://host/caches/run1", max_bytes=8 << 30)   # a reader `Cache`
    rows = cache.read(0, 4096, k=8)      # fetches the shards holding these tokens, then reads

    store = ShardStore("s3://bucket/run1", storage_options={"anon": True})
    store.manifest                       # fetched, checksum and schema checked, shard names safe
    path = store.path("part-00000-shard-000000.lcs")   # local, verified; fetched when missing
    directory = store.materialize()      # every shard local: any local reader (the Swift one) opens it

Local layout: `ROOT/<manifest checksum>/` holds `manifest.json` and the verified shards, where
ROOT is `local_dir`, or `$LOGITCACHE_CACHE_DIR/<url hash>`, or `~/.cache/logitcache/<url hash>`.
Keying by the manifest checksum keeps a republished cache from mixing with a stale local copy.
Downloads go to `.NAME.tmp` (fsync, rename, fsync of the directory), so a killed process leaves
no half shard under a final name; the next fetch resumes a temporary from where it stopped
(range reads of `chunk_bytes`), and the whole-file checksum still decides whether it is kept.

Bounded size: with `max_bytes`, shards are evicted least recently used first; pinned shards
(open in a lazy `Cache`, or all of them after `materialize`) never are. A shard larger than
`max_bytes`, or one that cannot fit beside the pinned ones, is a `CacheError`. Eviction is
per `ShardStore`: two stores (or processes) sharing one directory never read a partial shard
(downloads of one shard are serialised by a lock file) but do not see each other's pins. Copies
of earlier versions of a URL's cache stay until `remove_other_versions()`.

Errors are `reader.CacheError` naming the URL and the shard: unreachable server or timeout (after
`retries` retries), not found (HTTP 404, no retry), checksum or size mismatch after `retries`
retries, size over the limit.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import ctypes
import fcntl
import os
import re
import shutil
import struct
import threading
import time
from typing import Any, Callable, Iterable, Optional

import xxhash

from .reader import (CHECKSUM_KEY, FORMAT_VERSION, MAGIC, SHARD_NAME, TRAILER_SIZE, HEADER_SIZE, Cache,
                     CacheError, Shard, hex64, read_manifest, safe_shard_path)

DEFAULT_CHUNK_BYTES = 8 << 20
TAIL_GUESS = 64 << 10  # first footer read: the file's last 64 KiB (most footers fit)

__all__ = ["ShardStore", "RemoteCache", "NativeShardSource", "open_cache", "is_url", "default_root"]


def is_url(path: Any) -> bool:
    """True for `scheme://...` (fsspec URLs, `file://` included); plain paths are local."""
    return isinstance(path, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


def default_root(url: str) -> str:
    """`$LOGITCACHE_CACHE_DIR/<url hash>`, else `~/.cache/logitcache/<url hash>`."""
    base = os.environ.get("LOGITCACHE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "logitcache")
    return os.path.join(base, hex64(xxhash.xxh3_64_intdigest(url.rstrip("/").encode("utf-8"))))


class _NotFound(Exception):
    pass


class _Transient(Exception):
    """A failed transfer worth retrying. reason: "unreachable" (no connection, or it broke),
    "timeout" (no answer in time), "server" (an HTTP 5xx or throttling answer), "data" (short,
    long or corrupt bytes)."""

    def __init__(self, message: str, reason: str = "data"):
        super().__init__(message)
        self.reason = reason


_GAVE_UP = {
    "unreachable": "server unreachable or connection lost",
    "timeout": "server timed out",
    "server": "server kept answering with an error",
    "data": "wrong bytes received",
}


def _classify(e: BaseException) -> BaseException:
    """fsspec/aiohttp/botocore errors -> _NotFound, _Transient (retried), or a permanent error."""
    if isinstance(e, (_NotFound, _Transient)):
        return e
    if isinstance(e, FileNotFoundError):
        return _NotFound(str(e) or "not found")
    text = f"{type(e).__name__}: {e}".rstrip(": ")
    status = getattr(e, "status", None) or getattr(e, "code", None)
    if status == 416:
        return _Transient(f"HTTP 416, range not satisfiable (the file on the server is shorter than the "
                          f"manifest says?): {e}", "data")
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 425, 429):
        return PermissionError(f"HTTP {status}: {e}")
    if isinstance(status, int) and status >= 400:
        return _Transient(f"HTTP {status}: {e}", "server")
    if isinstance(e, PermissionError):
        return e
    names = {c.__name__ for c in type(e).__mro__}
    if names & {"TimeoutError", "FSTimeoutError", "ServerTimeoutError", "ReadTimeoutError", "ConnectTimeoutError",
                "timeout"}:
        return _Transient(text, "timeout")
    return _Transient(text, "unreachable")  # connection refused, reset, closed mid-body, DNS, ...


def _fsync_dir(directory: str):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_xxh3(path: str) -> tuple:
    """(size, XXH3-64) of a local file, read in 8 MiB pieces."""
    h, size = xxhash.xxh3_64(), 0
    with open(path, "rb") as f:
        while True:
            piece = f.read(8 << 20)
            if not piece:
                break
            h.update(piece)
            size += len(piece)
    return size, h.intdigest()


def _atomic_write(path: str, data: bytes):
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(os.path.dirname(path))


class ShardStore:
    """The shards of one remote cache, fetched on demand into a verified, bounded local directory.

    url: a cache directory URL (`manifest.json` inside it) or the manifest's URL (ending `.json`);
    fsspec protocols (`s3://`, `gs://`, `http(s)://`, `file://`, ...).
    local_dir: ROOT of the local copy (module doc); default from `$LOGITCACHE_CACHE_DIR` or `~/.cache`.
    max_bytes: most bytes of shards kept locally (None: no limit). Shards are whole-file units.
    prefetch: shards fetched ahead in the background by a lazy `Cache` (0: none).
    retries: retries after a failed attempt (transfer error, timeout, short or corrupt file);
    a missing file (404) is not retried.
    timeout: seconds to connect and between bytes received (HTTP and S3 defaults only; an explicit
    `storage_options` wins).
    storage_options: keyword arguments for the fsspec filesystem (credentials, endpoint, ...).
    chunk_bytes: bytes per range request; a broken download resumes at a multiple of it.
    backoff: seconds before the first retry, doubled each time (at most 10 s).
    on_retry: `on_retry(what, attempt, error)` before each retry (logging; tests use it).

    Thread safe: `path`, `prefetch`, `pin`/`unpin` may be called from several threads.
    """

    def __init__(self, url: str, local_dir: Optional[str] = None, max_bytes: Optional[int] = None,
                 prefetch: int = 2, retries: int = 3, timeout: float = 60.0,
                 storage_options: Optional[dict] = None, validate_schema: bool = True,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, backoff: float = 0.5,
                 on_retry: Optional[Callable[[str, int, BaseException], None]] = None):
        if not isinstance(url, str) or not url:
            raise CacheError(f"remote cache: URL must be a non-empty string, got {url!r}")
        if max_bytes is not None and max_bytes < 0:
            raise CacheError(f"{url}: max_bytes {max_bytes} must be >= 0")
        if retries < 0 or prefetch < 0 or chunk_bytes < 1 or timeout <= 0:
            raise CacheError(f"{url}: retries, prefetch >= 0, chunk_bytes >= 1, timeout > 0 expected")
        self.url = url.rstrip("/")
        if self.url.endswith(".json"):
            self.base_url, self.manifest_url = self.url.rsplit("/", 1)[0], self.url
        else:
            self.base_url, self.manifest_url = self.url, self.url + "/manifest.json"
        self.max_bytes, self.prefetch_count, self.retries = max_bytes, int(prefetch), int(retries)
        self.timeout, self.chunk_bytes, self.backoff, self.on_retry = float(timeout), int(chunk_bytes), backoff, on_retry
        self.validate_schema = validate_schema
        self.fs, self._manifest_path = self._filesystem(storage_options or {})
        self._base_path = self._manifest_path.rsplit("/", 1)[0] if "/" in self._manifest_path else ""
        self.root = os.path.abspath(local_dir) if local_dir else default_root(self.url)

        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)
        self._name_locks: dict = {}
        self._present: "collections.OrderedDict[str, int]" = collections.OrderedDict()  # LRU: oldest first
        self._verified: set = set()
        self._partial: dict = {}       # name -> bytes of a resumable temporary not being written
        self._reserved: dict = {}      # name -> bytes of a download in flight
        self._pins: collections.Counter = collections.Counter()
        self._prefetched_unused: set = set()
        self._queued: set = set()
        self._footers: dict = {}
        self._materialized: set = set()
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._pid = os.getpid()
        self.prefetch_errors: list = []  # (name, CacheError) of background fetches that failed
        self.closed = False

        self.manifest = self._fetch_manifest()
        self.names = [e["file"] for e in self.manifest["shards"]]
        self.entries = {e["file"]: e for e in self.manifest["shards"]}
        self._name_locks = {n: threading.Lock() for n in self.names}
        self._scan()

    # -- URLs and the filesystem

    def _filesystem(self, options: dict):
        options = dict(options)
        protocol = self.url.split("://", 1)[0].lower() if is_url(self.url) else "file"
        try:
            from fsspec.core import url_to_fs
            if protocol in ("http", "https") and "client_kwargs" not in options:
                import aiohttp
                options["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout, sock_read=self.timeout)}
            if protocol in ("s3", "s3a") and "config_kwargs" not in options:
                options["config_kwargs"] = {"connect_timeout": self.timeout, "read_timeout": self.timeout,
                                            "retries": {"max_attempts": 1}}
            return url_to_fs(self.manifest_url, **options)
        except (ImportError, ValueError) as e:
            raise CacheError(f"{self.url}: no fsspec filesystem for this URL ({e}); install fsspec and the "
                             "protocol's package (aiohttp for http(s), s3fs, gcsfs, ...)") from None

    def shard_url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def _remote_path(self, name: str) -> str:
        return f"{self._base_path}/{name}" if self._base_path else name

    # -- retries

    def _attempts(self, what: str, action: Callable[[], Any]) -> Any:
        """action() with retries on _Transient; CacheError naming `what` when it gives up."""
        last: Optional[BaseException] = None
        for attempt in range(self.retries + 1):
            if attempt:
                if self.on_retry is not None:
                    self.on_retry(what, attempt, last)
                time.sleep(min(10.0, self.backoff * (2 ** (attempt - 1))))
            try:
                return action()
            except CacheError:
                raise
            except Exception as e:  # noqa: BLE001 - every transport error is classified here
                kind = _classify(e)
                if isinstance(kind, _NotFound):
                    raise CacheError(f"{what}: not found on the server (HTTP 404 or no such file)") from None
                if not isinstance(kind, _Transient):
                    raise CacheError(f"{what}: refused by the server ({kind})") from None
                last = kind
        reason = _GAVE_UP[getattr(last, "reason", "data")]
        raise CacheError(f"{what}: {reason}; failed after {self.retries + 1} attempts, the last with: {last}") from None

    def _cat(self, path: str, start: Optional[int] = None, end: Optional[int] = None) -> bytes:
        if start is None:
            data = self.fs.cat_file(path)
        else:
            data = self.fs.cat_file(path, start=start, end=end)
        return bytes(data)

    # -- the manifest

    def _fetch_manifest(self) -> dict:
        what = self.manifest_url

        def fetch():
            data = self._cat(self._manifest_path)
            i = data.rfind(CHECKSUM_KEY)
            tail = data[i + len(CHECKSUM_KEY):] if i >= 0 else b""
            if i < 0 or not re.fullmatch(rb'[0-9a-f]{16}"\n}\n', tail):
                raise _Transient(f"manifest ({len(data)} bytes) does not end with its checksum key (truncated?)")
            if xxhash.xxh3_64_intdigest(data[:i]) != int(tail[:16], 16):
                raise _Transient("manifest checksum mismatch (damaged in transfer?)")
            return data

        data = self._attempts(what, fetch)
        manifest = self._check_manifest(data)  # intact as published: a bad one is refused, not refetched
        self.checksum = manifest["checksum"]
        self.directory = os.path.join(self.root, self.checksum)
        try:
            os.makedirs(os.path.join(self.directory, ".locks"), exist_ok=True)
            local = os.path.join(self.directory, "manifest.json")
            try:
                with open(local, "rb") as f:
                    same = f.read() == data
            except OSError:
                same = False
            if not same:
                _atomic_write(local, data)
        except OSError as e:
            raise CacheError(f"{self.url}: cannot write the local copy in {self.directory} ({e.strerror})") from None
        return manifest

    def _check_manifest(self, data: bytes) -> dict:
        """The reader's manifest rules (checksum tail, schema) plus safe, distinct shard names."""
        import tempfile
        os.makedirs(self.root, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".manifest-") as tmp:
            path = os.path.join(tmp, "manifest.json")
            with open(path, "wb") as f:
                f.write(data)
            try:
                m = read_manifest(path, self.validate_schema)
            except CacheError as e:
                raise CacheError(f"{self.manifest_url}: {e}") from None
        w = self.manifest_url
        checksum = data[data.rfind(CHECKSUM_KEY) + len(CHECKSUM_KEY):][:16].decode("ascii")
        if m.get("checksum") != checksum:
            raise CacheError(f"{w}: checksum key {m.get('checksum')!r} differs from the file's tail")
        shards = m.get("shards")
        if not isinstance(shards, list):
            raise CacheError(f"{w}: shards must be a list")
        seen = set()
        for i, e in enumerate(shards):
            we = f"{w}: shards[{i}]"
            if not isinstance(e, dict):
                raise CacheError(f"{we}: expected an object")
            name = e.get("file")
            if not isinstance(name, str) or not SHARD_NAME.fullmatch(name) or name in (".", "..") \
                    or name == "manifest.json" or (name.startswith(".") and name.endswith(".tmp")):
                raise CacheError(f"{we}: shard name {name!r} is not a plain file name")
            if name in seen:
                raise CacheError(f"{we}: shard {name!r} listed twice")
            seen.add(name)
            size = e.get("bytes")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise CacheError(f"{we}: bytes must be a non-negative integer, got {size!r}")
            if not isinstance(e.get("xxh3"), str) or not re.fullmatch(r"[0-9a-f]{16}", e["xxh3"]):
                raise CacheError(f"{we}: xxh3 must be 16 lowercase hex digits, got {e.get('xxh3')!r}")
        return m

    # -- local state

    def _local(self, name: str) -> str:
        return safe_shard_path(self.directory, name, f"{self.url}: local copy")

    def _tmp(self, name: str) -> str:
        return os.path.join(self.directory, f".{name}.tmp")

    def _scan(self):
        """Shards already here (verified on first use) in mtime order; resumable temporaries."""
        found = []
        for name in self.names:
            try:
                st = os.stat(self._local(name))
                found.append((st.st_mtime, name, st.st_size))
            except OSError:
                pass
            try:
                self._partial[name] = os.stat(self._tmp(name)).st_size
            except OSError:
                pass
        for _, name, size in sorted(found):
            self._present[name] = size

    def local_bytes(self) -> int:
        """Bytes of shards (and resumable temporaries, and downloads in flight) held locally."""
        with self._lock:
            return sum(self._present.values()) + sum(self._partial.values()) + sum(self._reserved.values())

    def pinned_bytes(self) -> int:
        with self._lock:
            return sum(self.entries[n]["bytes"] for n, c in self._pins.items() if c > 0)

    def pin(self, name: str):
        """Keeps shard `name` from eviction (whether it is local yet or not) until `unpin`."""
        with self._lock:
            self._entry(name)
            self._pins[name] += 1

    def unpin(self, name: str):
        """Drops one pin; a shard just unpinned counts as the most recently used."""
        with self._room:
            if self._pins[name] > 0:
                self._pins[name] -= 1
                if self._pins[name] == 0:
                    del self._pins[name]
                    if name in self._present:
                        self._present.move_to_end(name)
                self._room.notify_all()

    @contextlib.contextmanager
    def pinned(self, name: str):
        """`with store.pinned(name) as path:` the shard stays local inside the block."""
        path = self.path(name, pin=True)
        try:
            yield path
        finally:
            self.unpin(name)

    def _entry(self, name: str) -> dict:
        e = self.entries.get(name)
        if e is None:
            raise CacheError(f"{self.url}: shard {name!r} is not in the manifest")
        return e

    def _evict(self, name: str):
        """Caller holds the lock; the shard is neither pinned nor being written."""
        size = self._present.pop(name, 0)
        self._verified.discard(name)
        self._prefetched_unused.discard(name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._local(name))
        return size

    def _make_room(self, name: str, need: int, background: bool, wait: float) -> bool:
        """Reserves `need` bytes for downloading `name`, evicting least recently used shards.

        A background (prefetch) call never evicts a pinned or prefetched-but-unread shard and gives
        up (False) rather than wait; a foreground call may evict prefetched shards and waits up to
        `wait` seconds for downloads in flight (other threads') to finish and free their room."""
        limit = self.max_bytes
        what = f"{self.shard_url(name)}"
        if limit is not None and need > limit:
            raise CacheError(f"{what}: {need} bytes, more than the local cache limit max_bytes = {limit}")
        deadline = time.monotonic() + wait
        with self._room:
            while True:
                self._partial.pop(name, None)
                if limit is None:
                    break
                used = sum(self._present.values()) + sum(self._partial.values()) + sum(self._reserved.values())
                for victim in list(self._partial):  # stale temporaries go first
                    if used + need <= limit:
                        break
                    if victim in self._reserved:
                        continue
                    used -= self._partial.pop(victim)
                    with contextlib.suppress(OSError):
                        os.unlink(self._tmp(victim))
                for victim in list(self._present):
                    if used + need <= limit:
                        break
                    if victim == name or self._pins.get(victim) or victim in self._reserved:
                        continue
                    if background and victim in self._prefetched_unused:
                        continue
                    used -= self._evict(victim)
                if used + need <= limit:
                    break
                if background:
                    return False
                left = deadline - time.monotonic()
                if left <= 0 or not self._reserved:
                    raise CacheError(f"{what}: {need} bytes do not fit the local cache limit max_bytes = {limit} "
                                     f"beside {self.pinned_bytes()} pinned bytes and "
                                     f"{sum(self._reserved.values())} bytes being downloaded")
                self._room.wait(min(left, 0.5))
            self._reserved[name] = need
        return True

    def _trim(self, keep: str):
        """Caller holds the lock: evicts unpinned shards (least recently used first, never `keep`)
        while over max_bytes, after a shard found on disk (put there by another process) joined."""
        if self.max_bytes is None:
            return
        used = sum(self._present.values()) + sum(self._partial.values()) + sum(self._reserved.values())
        for victim in list(self._present):
            if used <= self.max_bytes:
                break
            if victim != keep and not self._pins.get(victim) and victim not in self._reserved:
                used -= self._evict(victim)

    def _release_failed(self, name: str):
        """A download gave up: its reservation becomes the size of the resumable temporary."""
        with self._room:
            self._reserved.pop(name, None)
            try:
                self._partial[name] = os.stat(self._tmp(name)).st_size
            except OSError:
                pass
            self._room.notify_all()

    @contextlib.contextmanager
    def _name_lock(self, name: str):
        """One writer per shard: a thread lock, then a lock file for other processes."""
        with self._name_locks[name]:
            path = os.path.join(self.directory, ".locks", name + ".lock")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    # -- fetching shards

    def path(self, name: str, pin: bool = False) -> str:
        """The local path of a verified copy of shard `name`, fetched first when missing.

        With pin=True the shard is also pinned (never evicted until `unpin`). Without a pin the
        path stays valid until an eviction needs the room (the file itself, once opened or mapped,
        stays readable after an eviction unlinks it)."""
        return self._get(name, pin=pin, background=False)

    def _get(self, name: str, pin: bool, background: bool) -> Optional[str]:
        if self.closed:
            raise CacheError(f"{self.url}: store is closed")
        entry = self._entry(name)
        local = self._local(name)
        with self._lock:
            if name in self._verified and name in self._present and os.path.exists(local):
                self._touch(name, pin, background)
                return local
        with self._name_lock(name):
            with self._lock:
                if name in self._verified and name in self._present and os.path.exists(local):
                    self._touch(name, pin, background)
                    return local
            if self._verify_local(name, entry):
                with self._lock:
                    self._touch(name, pin, background)
                    self._trim(keep=name)
                return local
            if not self._make_room(name, entry["bytes"], background, wait=max(30.0, self.timeout)):
                return None
            try:
                self._download(name, entry)
            except BaseException:
                self._release_failed(name)
                raise
            with self._room:
                self._reserved.pop(name, None)
                self._present[name] = entry["bytes"]
                self._verified.add(name)
                if background:
                    self._prefetched_unused.add(name)
                self._touch(name, pin, background)
                self._room.notify_all()
            return local

    def _touch(self, name: str, pin: bool, background: bool):
        if name in self._present:
            self._present.move_to_end(name)
        if not background:
            self._prefetched_unused.discard(name)
        if pin:
            self._pins[name] += 1

    def _verify_local(self, name: str, entry: dict) -> bool:
        """A local file already under the final name (another process, an earlier run): kept
        when its size and checksum match, removed otherwise. Caller holds the name lock."""
        local = self._local(name)
        try:
            size = os.stat(local).st_size
        except OSError:
            with self._lock:
                self._present.pop(name, None)
                self._verified.discard(name)
            return False
        if size == entry["bytes"] and _file_xxh3(local)[1] == int(entry["xxh3"], 16):
            with self._lock:
                self._present[name] = size
                self._verified.add(name)
            return True
        with self._lock:
            self._present.pop(name, None)
            self._verified.discard(name)
            with contextlib.suppress(OSError):
                os.unlink(local)
        return False

    def _download(self, name: str, entry: dict):
        """Fetches `name` to `.NAME.tmp` in range requests (resuming a temporary left by a broken
        attempt), checks size and XXH3 of the whole file, then renames it. Caller holds the name lock."""
        size, want = entry["bytes"], int(entry["xxh3"], 16)
        tmp, local, rpath = self._tmp(name), self._local(name), self._remote_path(name)
        what = self.shard_url(name)

        def attempt():
            try:
                have = os.stat(tmp).st_size
            except FileNotFoundError:
                have = 0
            if have > size:
                have = 0
            with open(tmp, "r+b" if have else "wb") as f:
                f.truncate(have)
                f.seek(have)
                while have < size:
                    end = min(size, have + self.chunk_bytes)
                    data = self._cat(rpath, have, end)
                    if len(data) != end - have and len(data) == size:  # the server ignored the range
                        f.seek(0)
                        f.truncate(0)
                        have, end = 0, size
                    if len(data) > end - have:
                        raise _Transient(f"asked for bytes [{have}, {end}), got {len(data)} bytes")
                    f.write(data)  # a short answer is kept: the next attempt resumes after it
                    have += len(data)
                    if have < end:
                        f.flush()
                        raise _Transient(f"short read: bytes [{have - len(data)}, {end}) gave {len(data)} bytes "
                                         f"(file on the server shorter than the manifest's {size}?)")
                f.flush()
                os.fsync(f.fileno())
            got_size, got = _file_xxh3(tmp)
            if got_size != size or got != want:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise _Transient(f"checksum mismatch (manifest {entry['xxh3']} for {size} bytes, "
                                 f"downloaded {hex64(got)} for {got_size} bytes)")
            os.replace(tmp, local)
            _fsync_dir(self.directory)

        self._attempts(what, attempt)

    # -- footers (lazy caches read a shard's metadata without fetching it)

    def footer_shard(self, name: str) -> Shard:
        """A `Shard` holding only the footer's metadata (totals, sequence table, blocks), read with
        two range requests at most; its data methods are not usable. The footer checksum is checked
        here, the whole file when the shard is fetched."""
        with self._lock:
            meta = self._footers.get(name)
        if meta is not None:
            return meta
        entry = self._entry(name)
        size = entry["bytes"]
        what = self.shard_url(name)
        local = self._local(name)

        def read(start: int, end: int) -> bytes:
            with self._lock:
                here = name in self._verified and name in self._present
            if here:
                try:
                    with open(local, "rb") as f:
                        f.seek(start)
                        return f.read(end - start)
                except OSError:
                    pass
            data = self._cat(self._remote_path(name), start, end)
            if len(data) != end - start:
                raise _Transient(f"asked for bytes [{start}, {end}), got {len(data)} bytes")
            return data

        def fetch():
            if size < HEADER_SIZE + TRAILER_SIZE:
                raise CacheError(f"{what}: manifest says {size} bytes, shorter than the 56-byte minimum")
            n = min(size, TAIL_GUESS)
            tail = read(size - n, size)
            F, L, footer_hash, version, flags = struct.unpack("<QQQII", tail[-TRAILER_SIZE:-8])
            if tail[-8:] != MAGIC or version != FORMAT_VERSION or flags != 0:
                raise _Transient("bad trailer (magic, version or flags): not this shard?")
            if F < HEADER_SIZE or F + L != size - TRAILER_SIZE:
                raise _Transient(f"footer offset {F} and length {L} do not fit the manifest's {size} bytes")
            footer = tail[n - TRAILER_SIZE - L:n - TRAILER_SIZE] if L + TRAILER_SIZE <= n else read(F, F + L)
            if xxhash.xxh3_64_intdigest(footer) != footer_hash:
                raise _Transient("footer checksum mismatch")
            return F, footer

        F, footer = self._attempts(what, fetch)
        meta = Shard.__new__(Shard)  # metadata only: no mapping (Shard.close copes)
        meta.path, meta.name, meta.size, meta._map, meta.buffer = local, name, size, None, None
        meta.footer_offset, meta.footer_bytes = F, footer
        meta._parse_footer(self.validate_schema)  # the reader's own footer rules
        with self._lock:
            self._footers.setdefault(name, meta)
            return self._footers[name]

    def footer_shards(self, names: Optional[Iterable[str]] = None, workers: int = 8) -> list:
        """`footer_shard` of many shards, fetched in parallel."""
        names = list(self.names if names is None else names)
        if len(names) <= 1:
            return [self.footer_shard(n) for n in names]
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, len(names))) as ex:
            return list(ex.map(self.footer_shard, names))

    # -- background prefetch, materialize, close

    def prefetch(self, names: Iterable[str]) -> Optional[concurrent.futures.Future]:
        """Fetches `names` in order on a background thread, skipping those already local and
        stopping at the first that does not fit beside pinned and unread prefetched shards.
        Failures are kept in `prefetch_errors` (a later `path` retries and raises)."""
        if self.closed:
            return None
        names = [n for n in names if n in self.entries]
        with self._lock:
            names = [n for n in names if n not in self._queued and
                     not (n in self._verified and n in self._present)]
            if not names:
                return None
            self._queued.update(names)
            if self._executor is None or self._pid != os.getpid():
                self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="logitcache-prefetch")
                self._pid = os.getpid()
            executor = self._executor

        def run():
            try:
                for n in names:
                    if self.closed:
                        return
                    try:
                        if self._get(n, pin=False, background=True) is None:
                            return
                    except CacheError as e:
                        self.prefetch_errors = (self.prefetch_errors + [(n, e)])[-100:]
                        return
            finally:
                with self._lock:
                    self._queued.difference_update(names)

        try:
            return executor.submit(run)
        except RuntimeError:  # shut down meanwhile
            with self._lock:
                self._queued.difference_update(names)
            return None

    def materialize(self) -> str:
        """Fetches (or verifies) every shard, pins them all, and returns the local directory:
        `manifest.json` and the shards, which any local reader (the Swift one too) can open."""
        total = sum(e["bytes"] for e in self.manifest["shards"])
        if self.max_bytes is not None and total > self.max_bytes:
            raise CacheError(f"{self.url}: materializing needs {total} bytes, more than max_bytes = {self.max_bytes}")
        for name in self.names:
            if name not in self._materialized:
                self.path(name, pin=True)
                self._materialized.add(name)
        return self.directory

    def remove_other_versions(self) -> list:
        """Deletes the local copies of other versions of this URL's cache (sibling directories of
        `directory` named by another manifest checksum); returns their paths. Not while another
        process still reads one of them."""
        removed = []
        for entry in os.listdir(self.root):
            path = os.path.join(self.root, entry)
            if re.fullmatch(r"[0-9a-f]{16}", entry) and entry != self.checksum and os.path.isdir(path) \
                    and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def open(self, lazy: bool = True) -> "RemoteCacheReader":
        """A reader `Cache` over this store: lazy (shards fetched when first read, the next
        `prefetch` shards fetched ahead) or materialized (every shard fetched now)."""
        if lazy:
            return RemoteCacheReader(self, lazy=True)
        self.materialize()
        return RemoteCacheReader(self, lazy=False)

    def close(self):
        """Stops background fetches (a download in flight finishes or fails on its own)."""
        self.closed = True
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"ShardStore({self.url!r}, directory={self.directory!r}, max_bytes={self.max_bytes})"


RemoteCache = ShardStore

_META = frozenset({
    "footer", "footer_offset", "footer_bytes", "vocabulary_size", "max_entries", "max_samples", "block_tokens",
    "bands", "step_log2", "step_multiplier", "tokens", "sequences", "entries", "samples", "document_keys",
    "document_offsets", "lengths", "sequence_starts", "blocks",
})


class _LazyShard:
    """Stands in for a reader `Shard`: metadata from the footer alone, data from the verified
    local file, fetched (and pinned) when first read and released when the owner needs room."""

    def __init__(self, owner: "_LazyShards", path: str, name: str, validate_schema: bool):
        self._owner, self.path, self.name, self._validate = owner, path, name, validate_schema
        self._meta = owner.store.footer_shard(name)
        self.size = owner.store.entries[name]["bytes"]
        self.index = owner.store.names.index(name)
        self._shard: Optional[Shard] = None

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if attr in _META:
            return getattr(self._meta, attr)
        return getattr(self._owner.real(self), attr)

    @property
    def is_open(self) -> bool:
        return self._shard is not None

    def close(self):
        self._owner.release(self)


class _LazyShards:
    """The open shards of one lazy cache: pins what is mapped, closes the least recently read
    when a new shard would not fit `max_bytes` beside them, prefetches the next shards."""

    def __init__(self, store: ShardStore):
        self.store = store
        self.lock = threading.RLock()
        self.open: "collections.OrderedDict[str, _LazyShard]" = collections.OrderedDict()

    def make(self, path: str, name: str, validate_schema: bool) -> _LazyShard:
        return _LazyShard(self, path, name, validate_schema)

    def real(self, proxy: _LazyShard) -> Shard:
        with self.lock:
            if proxy._shard is not None:
                self.open.move_to_end(proxy.name)
                return proxy._shard
            store = self.store
            if store.max_bytes is not None:
                for old in list(self.open.values()):
                    if store.pinned_bytes() + proxy.size <= store.max_bytes:
                        break
                    self.release(old)
            path = store.path(proxy.name, pin=True)
            try:
                shard = Shard(path, proxy.name, proxy._validate)
                if shard.footer_bytes != proxy._meta.footer_bytes:
                    shard.close()
                    raise CacheError(f"{store.shard_url(proxy.name)}: footer differs from the one read before "
                                     "(the remote cache changed while open?)")
            except BaseException:
                store.unpin(proxy.name)
                raise
            proxy._shard = shard
            self.open[proxy.name] = proxy
            i = proxy.index
            if store.prefetch_count:
                store.prefetch(store.names[i + 1:i + 1 + store.prefetch_count])
            return shard

    def release(self, proxy: _LazyShard):
        with self.lock:
            shard, proxy._shard = proxy._shard, None
            self.open.pop(proxy.name, None)
            if shard is not None:
                shard.close()  # arrays already returned keep their mapping alive
                self.store.unpin(proxy.name)


class RemoteCacheReader(Cache):
    """A reader `Cache` over a `ShardStore` (see `open_cache`); `close()` also closes the store."""

    def __init__(self, store: ShardStore, lazy: bool = True):
        self.store = store
        self.lazy = lazy
        manifest = os.path.join(store.directory, "manifest.json")
        if lazy:
            store.footer_shards()  # in parallel, before the reader asks one by one
            self._lazy = _LazyShards(store)
            super().__init__(manifest, store.validate_schema, open_shard=self._lazy.make)
        else:
            super().__init__(manifest, store.validate_schema)

    def close(self):
        super().close()
        self.store.close()


def open_cache(url_or_path: str, lazy: bool = True, validate_schema: bool = True, **store_options) -> Cache:
    """A reader `Cache` for a local cache directory (or manifest path), or for a cache at an
    fsspec URL (`s3://`, `gs://`, `http(s)://`, `file://`, ...).

    For a URL, `store_options` go to `ShardStore` (local_dir, max_bytes, prefetch, retries,
    timeout, storage_options, ...). lazy=True: shards are fetched when a read first touches
    them (their footers, read up front with range requests, give the sequence table and totals),
    and the next `prefetch` shards follow in the background. lazy=False: every shard is fetched
    and verified first (`ShardStore.materialize`). `cache.store` is the `ShardStore`;
    `cache.store.directory` the local directory."""
    if not is_url(url_or_path):
        if store_options:
            raise TypeError(f"store options {sorted(store_options)} apply to URLs only, not to local path "
                            f"{url_or_path!r}")
        return Cache(os.fspath(url_or_path), validate_schema)
    store = ShardStore(url_or_path, validate_schema=validate_schema, **store_options)
    try:
        return store.open(lazy=lazy)
    except BaseException:
        store.close()
        raise


class NativeShardSource:
    """A `ShardStore` as the native reader's `lc_shard_source`: the Swift reader reads each shard's
    footer from `ShardStore.footer_shard` when it opens, and fetches (and pins) a shard through
    `ShardStore.path` when a read first needs it, prefetching the next `prefetch` shards; it
    unpins a shard when it unmaps it.

    The ctypes callbacks live as long as this object; every `Cache` and `StudentLoader` that
    uses it holds a `retain()` and gives it back with `drop()`, and the last `drop()` closes the
    store. Errors never leave a callback: they become a status and a message for the library."""

    def __init__(self, store: ShardStore):
        from . import _native
        self.store = store
        self._users = 0
        self._lock = threading.Lock()
        self.struct = _native.lc_shard_source(None, _native.TAIL_CALLBACK(self._tail),
                                               _native.FETCH_CALLBACK(self._fetch),
                                               _native.RELEASE_CALLBACK(self._release))

    def open_shards(self) -> int:
        """Shards the reader may keep mapped: all of them, or as many of the largest as fit
        `max_bytes` (at least one)."""
        sizes = [e["bytes"] for e in self.store.manifest["shards"]]
        if self.store.max_bytes is None or not sizes:
            return max(1, len(sizes))
        return max(1, min(len(sizes), self.store.max_bytes // max(1, max(sizes))))

    def retain(self) -> "NativeShardSource":
        with self._lock:
            self._users += 1
        return self

    def drop(self) -> None:
        with self._lock:
            self._users -= 1
            last = self._users == 0
        if last:
            self.store.close()

    @staticmethod
    def _fail(message_buffer: int, capacity: int, error: BaseException) -> int:
        from . import _native
        text = (str(error) or type(error).__name__).encode("utf-8", "replace")[:max(0, capacity)]
        ctypes.memmove(message_buffer, text + b"\0", len(text) + 1)
        return getattr(error, "status", _native.ERR_IO)  # a native CacheError keeps its lc_status

    def _tail(self, _context, index, name, size, buffer, capacity, length, message, message_capacity) -> int:
        try:
            meta = self.store.footer_shard(name.decode())
            F, footer = meta.footer_offset, meta.footer_bytes
            tail = footer + struct.pack("<QQQII", F, len(footer), xxhash.xxh3_64_intdigest(footer),
                                        FORMAT_VERSION, 0) + MAGIC
            length[0] = len(tail)
            if len(tail) <= capacity:
                ctypes.memmove(buffer, tail, len(tail))
            return 0
        except BaseException as e:  # noqa: BLE001 - nothing may escape into the library's thread
            return self._fail(message, message_capacity, e)

    def _fetch(self, _context, index, name, path, capacity, message, message_capacity) -> int:
        try:
            store = self.store
            local = os.fsencode(store.path(name.decode(), pin=True))
            if len(local) > capacity:
                store.unpin(name.decode())
                raise CacheError(f"{local!r}: local path longer than {capacity} bytes")
            ctypes.memmove(path, local + b"\0", len(local) + 1)
            if store.prefetch_count:
                store.prefetch(store.names[index + 1:index + 1 + store.prefetch_count])
            return 0
        except BaseException as e:  # noqa: BLE001
            return self._fail(message, message_capacity, e)

    def _release(self, _context, index, name) -> None:
        try:
            self.store.unpin(name.decode())
        except BaseException:  # noqa: BLE001 - a release cannot fail the reader
            pass
