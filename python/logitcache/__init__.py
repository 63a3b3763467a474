"""LogitCache in Python: read, stream and write caches of teacher next-token distributions.

The package binds the Swift core (the `LogitCacheABI` library, built by `pip install` when Swift
is on PATH) and falls back to a pure-numpy implementation of reading and loading when it is not
installed. Both give the same values (`backend=` chooses; "auto" prefers native).

    import logitcache as lc
    with lc.Cache("cache/") as cache:                         # manifest + shard footers checked
        rows = cache.read(0, 4096, k=8)                       # Rows: [n] / [n, k] numpy arrays
    loader = lc.StudentLoader("cache/", batch_size=8, context=1024, k=16, mode="tail", seed=1)
    batch = loader.next()                                     # dict: input_ids [B, T], target_ids [B, T, k], ...
    saved = loader.state()                                    # later: loader.resume(saved)

    with lc.CacheWriter("new-cache/", vocabulary_size=V, fingerprints=fp,
                        capture={"policy": "top-k", "k": 64, "temperature": 1.0}) as w:
        w.begin_sequence(key, 0); w.append(ids, next_lp, lse, entry_ids, entry_lps); w.end_sequence()
    lc.verify("new-cache/")["sound"]

Submodules: `reader` (the independent numpy reader of Schemas/FORMAT.md), `loader` (the numpy
student loader), `remote` (caches behind fsspec URLs), `torch` (losses and datasets; needs torch).
"""

from ._cache import Cache, Rows, Samples, SequenceInfo, merge, native_available, verify
from ._native import NativeLibraryError
from ._student import StudentLoader
from ._writer import CacheWriter
from .loader import LoaderError
from .reader import CacheError

__all__ = [
    "Cache", "CacheError", "CacheWriter", "LoaderError", "NativeLibraryError", "Rows", "Samples", "SequenceInfo",
    "StudentLoader", "merge", "native_available", "verify",
]
__version__ = "0.1.0"
