"""ctypes binding of the C ABI in `Schemas/logitcache.h` (the `LogitCacheABI` Swift library).

Every function of the header is declared here with its argument and result types; the four
structs are `ctypes.Structure`s with the header's fields. Array pointers are declared as
`c_void_p` (the address of a C-contiguous numpy array, `a.ctypes.data`), which has the same
representation as the header's typed pointers.

The library is found at `$LOGITCACHE_NATIVE_LIB`, else at `logitcache/_native/libLogitCacheABI.so`
(`.dylib` on macOS) inside the installed package, where `pip install` puts it when Swift is on
PATH. `library()` loads it once and checks `lc_abi_version() == ABI_VERSION`; it returns None when
no library is present (the pure-numpy fallback) and raises `NativeLibraryError` when one is present
but unusable (wrong ABI version, missing symbol, unloadable file), so a broken install is never
silently replaced by the fallback. `LOGITCACHE_NATIVE=0` hides the library (pure fallback).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from ctypes import POINTER, Structure, byref, c_char_p, c_double, c_int32, c_int64, c_uint32, c_uint64, c_void_p
from typing import Optional, Type

from .loader import LoaderError
from .reader import CacheError

ABI_VERSION = 1

# lc_status values (Schemas/logitcache.h).
OK = 0
ERR_INVALID_ARGUMENT = 1
ERR_IO = 2
ERR_MALFORMED = 3
ERR_CHECKSUM = 4
ERR_MISMATCH = 5
ERR_UNSUPPORTED = 6
ERR_STATE = 7
ERR_UNSAFE_PATH = 8
ERR_LOCKED = 9
STATUS_NAMES = {
    OK: "LC_OK", ERR_INVALID_ARGUMENT: "LC_ERR_INVALID_ARGUMENT", ERR_IO: "LC_ERR_IO", ERR_MALFORMED: "LC_ERR_MALFORMED",
    ERR_CHECKSUM: "LC_ERR_CHECKSUM", ERR_MISMATCH: "LC_ERR_MISMATCH", ERR_UNSUPPORTED: "LC_ERR_UNSUPPORTED",
    ERR_STATE: "LC_ERR_STATE", ERR_UNSAFE_PATH: "LC_ERR_UNSAFE_PATH", ERR_LOCKED: "LC_ERR_LOCKED",
}
# Statuses that mean the cache itself is damaged or unreadable: a loader reports these as
# CacheError (as the numpy loader does, whose reader raises CacheError), everything else as LoaderError.
CACHE_STATUSES = frozenset({ERR_IO, ERR_MALFORMED, ERR_CHECKSUM, ERR_UNSAFE_PATH})

LIBRARY_NAME = "libLogitCacheABI.dylib" if sys.platform == "darwin" else "libLogitCacheABI.so"


class NativeLibraryError(RuntimeError):
    """The native library exists but cannot be used (not loadable, wrong ABI version)."""


class lc_cache_info(Structure):
    _fields_ = [("tokens", c_int64), ("sequences", c_int64), ("vocabulary_size", c_int64),
                ("max_entries", c_int64), ("max_samples", c_int64)]


class lc_sequence_info(Structure):
    _fields_ = [("first_token", c_int64), ("length", c_int64), ("document_offset", c_int64),
                ("document_high", c_uint64), ("document_low", c_uint64)]


class lc_rows(Structure):
    """Destinations of `lc_cache_read` (each may be NULL): [n] or [n, k] arrays."""
    _fields_ = [("input_ids", c_void_p), ("next_token_logprobs", c_void_p), ("logsumexps", c_void_p),
                ("entry_counts", c_void_p), ("entry_ids", c_void_p), ("entry_logprobs", c_void_p)]


class lc_batch(Structure):
    """Destinations of `lc_loader_next` (all required) and the batch's epoch, index and tokens."""
    _fields_ = [("windows", c_void_p), ("input_ids", c_void_p), ("labels", c_void_p), ("target_ids", c_void_p),
                ("target_weights", c_void_p), ("tail_mass", c_void_p), ("entry_counts", c_void_p),
                ("epoch", c_int64), ("index", c_int64), ("tokens", c_int64)]


# lc_shard_source's callbacks (tail, fetch, release) and the struct that carries them.
TAIL_CALLBACK = ctypes.CFUNCTYPE(c_int32, c_void_p, c_int64, c_char_p, c_int64, c_void_p, c_int64, POINTER(c_int64),
                                 c_void_p, c_int64)
FETCH_CALLBACK = ctypes.CFUNCTYPE(c_int32, c_void_p, c_int64, c_char_p, c_void_p, c_int64, c_void_p, c_int64)
RELEASE_CALLBACK = ctypes.CFUNCTYPE(None, c_void_p, c_int64, c_char_p)


class lc_shard_source(Structure):
    """Where `lc_cache_open_source` gets shards: a context and three callbacks (see the header)."""
    _fields_ = [("context", c_void_p), ("tail", TAIL_CALLBACK), ("fetch", FETCH_CALLBACK), ("release", RELEASE_CALLBACK)]


_handle = c_void_p          # lc_cache *, lc_loader *, lc_writer *
_status = c_int32           # lc_status (a C enum: int)
_out_string = POINTER(c_char_p)

# name -> (restype, argtypes), in the header's order.
SIGNATURES = {
    "lc_abi_version": (c_uint32, []),
    "lc_last_error": (c_char_p, []),
    "lc_string_free": (None, [c_void_p]),
    "lc_cache_open": (_status, [c_char_p, c_char_p, POINTER(_handle)]),
    "lc_cache_open_source": (_status, [c_char_p, c_char_p, POINTER(lc_shard_source), c_int64, POINTER(_handle)]),
    "lc_cache_close": (None, [_handle]),
    "lc_cache_manifest": (_status, [_handle, POINTER(c_void_p)]),
    "lc_cache_info_get": (_status, [_handle, POINTER(lc_cache_info)]),
    "lc_cache_sequence": (_status, [_handle, c_int64, POINTER(lc_sequence_info)]),
    "lc_cache_read": (_status, [_handle, c_int64, c_int64, c_int64, POINTER(lc_rows)]),
    "lc_cache_read_samples": (_status, [_handle, c_int64, c_int64, c_void_p, c_void_p, c_void_p, c_int64,
                                        POINTER(c_int64)]),
    "lc_verify": (_status, [c_char_p, POINTER(c_void_p)]),
    "lc_loader_open": (_status, [c_char_p, c_char_p, POINTER(_handle)]),
    "lc_loader_open_cache": (_status, [_handle, c_char_p, POINTER(_handle)]),
    "lc_loader_close": (None, [_handle]),
    "lc_loader_position": (_status, [_handle, POINTER(c_int64), POINTER(c_int64), POINTER(c_int64)]),
    "lc_loader_next": (_status, [_handle, POINTER(lc_batch)]),
    "lc_loader_seek": (_status, [_handle, c_int64, c_int64]),
    "lc_loader_state": (_status, [_handle, POINTER(c_void_p)]),
    "lc_loader_resume": (_status, [_handle, c_char_p]),
    "lc_writer_open": (_status, [c_char_p, c_char_p, POINTER(_handle)]),
    "lc_writer_resumed_sequences": (c_int64, [_handle]),
    "lc_writer_begin_sequence": (_status, [_handle, c_uint64, c_uint64, c_int64]),
    "lc_writer_append": (_status, [_handle, c_int64, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p,
                                   c_int64, c_void_p, c_void_p, c_void_p, c_int64]),
    "lc_writer_end_sequence": (_status, [_handle]),
    "lc_writer_add_cost": (_status, [_handle, c_int64, c_double, c_double]),
    "lc_writer_finish": (_status, [_handle, POINTER(c_void_p)]),
    "lc_writer_close": (None, [_handle]),
    "lc_merge": (_status, [c_char_p, POINTER(c_void_p)]),
}

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_loaded = False


def library_path() -> Optional[str]:
    """The library file to load: `$LOGITCACHE_NATIVE_LIB`, else the package's `_native/` copy
    (None when neither exists, or when `LOGITCACHE_NATIVE=0`)."""
    if os.environ.get("LOGITCACHE_NATIVE", "") == "0":
        return None
    explicit = os.environ.get("LOGITCACHE_NATIVE_LIB")
    if explicit:
        return explicit
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_native", LIBRARY_NAME)
    return path if os.path.exists(path) else None


def _declare(lib: ctypes.CDLL, where: str) -> None:
    for name, (restype, argtypes) in SIGNATURES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise NativeLibraryError(f"{where}: missing symbol {name} (library older than Schemas/logitcache.h?)") from None
        fn.restype, fn.argtypes = restype, argtypes


def library() -> Optional[ctypes.CDLL]:
    """The loaded, checked library, or None when there is none (see the module docstring)."""
    global _lib, _loaded
    with _lock:
        if _loaded:
            return _lib
        path = library_path()
        if path is None:
            _loaded = True
            return None
        if os.sep in path and not os.path.exists(path):  # a bare name is looked up by the loader
            raise NativeLibraryError(f"LOGITCACHE_NATIVE_LIB names {path}, which does not exist")
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise NativeLibraryError(f"{path}: cannot load the native library ({e})") from None
        _declare(lib, path)
        version = lib.lc_abi_version()
        if version != ABI_VERSION:
            raise NativeLibraryError(f"{path}: lc_abi_version() = {version}, this package binds ABI {ABI_VERSION}; "
                                     "reinstall the package (pip install ./python) to rebuild it")
        _lib, _loaded = lib, True
        return lib


def require() -> ctypes.CDLL:
    """The library, or a RuntimeError saying how to get it."""
    lib = library()
    if lib is None:
        raise RuntimeError("the native LogitCache library is not installed: install Swift 6 and reinstall the package "
                           "with `pip install ./python` from a LogitCache checkout (unset LOGITCACHE_SKIP_NATIVE), "
                           "or point LOGITCACHE_NATIVE_LIB at libLogitCacheABI.so "
                           "(`swift build -c release --product LogitCacheABI`)")
    return lib


def error_class(status: int, loader: bool) -> Type[Exception]:
    """CacheError, or for loader calls LoaderError unless the cache itself is at fault."""
    if loader and status not in CACHE_STATUSES:
        return LoaderError
    return CacheError


def check(status: int, call: str, loader: bool = False) -> None:
    """Raises CacheError / LoaderError with `lc_last_error()` for a non-zero status.

    The exception carries `.status` (the lc_status value) and `.call` (the C function)."""
    if status == OK:
        return
    message = _lib.lc_last_error() if _lib is not None else None
    text = message.decode("utf-8", "replace") if message else f"{call} failed"
    e = error_class(status, loader)(text)
    e.status, e.call = status, call
    raise e


def take_string(pointer: c_void_p) -> Optional[str]:
    """The text of a `char *` the library handed over, released with lc_string_free."""
    if not pointer.value:
        return None
    try:
        return ctypes.string_at(pointer.value).decode("utf-8")
    finally:
        _lib.lc_string_free(pointer.value)


def call_string(fn, call: str, *args, loader: bool = False) -> Optional[str]:
    """Calls `fn(*args, char **out)` and returns the string it gave (freed here)."""
    out = c_void_p()
    status = fn(*args, byref(out))
    text = take_string(out)  # freed even on failure (should the library have set it)
    check(status, call, loader)
    return text


def encode_path(path) -> bytes:
    return os.fsencode(os.fspath(path))


class Resource:
    """Base of the objects that own a native handle (`Cache`, `StudentLoader`, `CacheWriter`):
    `with` closes them, and so does garbage collection; `close()` is idempotent."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
