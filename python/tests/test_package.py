"""The installed package: what `pip install ./python` put where, the ctypes binding against
Schemas/logitcache.h, and the pure fallback when the native library is absent or hidden."""

import ctypes
import ctypes.util
import importlib.metadata
import importlib.resources
import json
import os
import re
import subprocess
import sys

import pytest

import logitcache as lc
from logitcache import _native
from lc_testing import REPO

SCHEMAS = os.path.join(REPO, "Schemas")
PACKAGED = ("manifest.schema.json", "footer.schema.json", "report.schema.json", "FORMAT.md", "logitcache.h")


def python(code: str, **env):
    """Runs `code` in a fresh interpreter (env added to this one's); returns the process."""
    full = dict(os.environ)
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, cwd=REPO, timeout=300)


def test_the_installed_package_is_imported_not_the_source_tree():
    dist = importlib.metadata.distribution("logitcache")
    here = os.path.realpath(os.path.dirname(lc.__file__))
    source = os.path.realpath(os.path.join(REPO, "python", "logitcache"))
    if here == source:  # only an editable install may import the source tree
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        assert direct.get("dir_info", {}).get("editable"), f"{here} is the source tree, but logitcache is not installed editable"
    else:
        assert os.path.realpath(str(dist.locate_file("logitcache"))) == here


def test_schemas_are_packaged_and_current():
    root = importlib.resources.files("logitcache") / "schemas"
    for name in PACKAGED:
        with open(os.path.join(SCHEMAS, name), "rb") as f:
            assert (root / name).read_bytes() == f.read(), f"packaged {name} differs from Schemas/{name}: reinstall (pip install ./python)"


HEADER_FUNCTION = re.compile(r"^[a-z_][\w \t*]*?\b(lc_\w+)\s*\(([^)]*)\)\s*;", re.M)
HEADER_STRUCT = re.compile(r"typedef struct (lc_\w+) \{(.*?)\} \1;", re.S)


def header_text() -> str:
    with open(os.path.join(SCHEMAS, "logitcache.h")) as f:
        return re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)


def test_every_header_function_is_bound_with_its_arity():
    declared = {name: args for name, args in HEADER_FUNCTION.findall(header_text())}
    assert len(declared) >= 27 and "lc_loader_next" in declared
    assert set(declared) == set(_native.SIGNATURES)
    for name, args in declared.items():
        arity = 0 if args.strip() in ("", "void") else args.count(",") + 1
        assert len(_native.SIGNATURES[name][1]) == arity, name


def struct_fields(body: str) -> list:
    """Field names of a struct body: `type name;` or a function pointer `ret (*name)(args);`."""
    return [m.group(1) or m.group(2) for m in re.finditer(r"\(\*(\w+)\)\s*\([^)]*\)\s*;|(\w+)\s*;", body)]


def test_structs_match_the_header():
    structs = {name: struct_fields(body) for name, body in HEADER_STRUCT.findall(header_text())}
    assert set(structs) == {"lc_cache_info", "lc_sequence_info", "lc_rows", "lc_batch", "lc_shard_source"}
    assert structs["lc_shard_source"] == ["context", "tail", "fetch", "release"]
    for name, fields in structs.items():
        cls = getattr(_native, name)
        assert [f[0] for f in cls._fields_] == fields, name
        assert ctypes.sizeof(cls) == 8 * len(fields), name  # pointers and 64-bit integers only


def test_the_native_library_is_installed_in_the_package(native):
    path = _native.library_path()
    if not os.environ.get("LOGITCACHE_NATIVE_LIB"):
        assert os.path.dirname(path) == os.path.join(os.path.dirname(lc.__file__), "_native")
    assert _native.library().lc_abi_version() == _native.ABI_VERSION == 1
    wheel = importlib.metadata.distribution("logitcache").read_text("WHEEL") or ""
    assert "Root-Is-Purelib: false" in wheel and re.search(r"Tag: py3-none-\w+", wheel), wheel


def test_a_broken_library_is_an_error_not_a_silent_fallback():
    missing = python("import logitcache; logitcache.native_available()", LOGITCACHE_NATIVE_LIB="/nonexistent/libLogitCacheABI.so")
    assert missing.returncode != 0 and "NativeLibraryError" in missing.stderr and "does not exist" in missing.stderr
    libm = ctypes.util.find_library("m")
    assert libm
    foreign = python(f"import ctypes.util, logitcache; logitcache.native_available()", LOGITCACHE_NATIVE_LIB=libm)
    assert foreign.returncode != 0 and "missing symbol lc_" in foreign.stderr, foreign.stderr


def test_without_the_library_the_pure_backend_serves_and_native_calls_say_what_to_install(lc_bin, tmp_path):
    from lc_testing import synth
    cache = synth(lc_bin, tmp_path / "c", "--tokens", 600, "--seq-len", 200, "--k", 4, "--vocab", 500)
    code = f"""
import json, logitcache as lc
out = {{"available": lc.native_available()}}
with lc.Cache({cache!r}) as c:
    out["backend"] = c.backend
    out["tokens"] = int(len(c.read(0, 100, 4)))
out["loader"] = lc.StudentLoader({cache!r}, batch_size=2, context=64, k=4).backend
out["verify"] = lc.verify({cache!r})["sound"]
for what, call in [("writer", lambda: lc.CacheWriter({str(tmp_path / 'w')!r}, vocabulary_size=10, fingerprints={{}}, capture={{}})),
                   ("cache", lambda: lc.Cache({cache!r}, backend="native")),
                   ("merge", lambda: lc.merge({cache!r}))]:
    try:
        call()
        out[what] = "no error"
    except RuntimeError as e:
        out[what] = str(e)
print(json.dumps(out))
"""
    proc = python(code, LOGITCACHE_NATIVE="0", LOGITCACHE_NATIVE_LIB=None)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["available"] is False and out["backend"] == "pure" and out["loader"] == "pure"
    assert out["tokens"] == 100 and out["verify"] is True
    for what in ("writer", "cache", "merge"):
        assert "native LogitCache library is not installed" in out[what] and "pip install ./python" in out[what], what
    assert not os.path.exists(tmp_path / "w")


def test_a_wheel_built_without_swift_is_pure_and_works(lc_bin, tmp_path):
    """`pip install` on a machine without Swift: the build succeeds, the wheel is pure Python
    with the schemas and no library, and the installed package reads caches."""
    env = dict(os.environ, PATH=os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                                 if not os.path.exists(os.path.join(p, "swift"))))
    env.pop("LOGITCACHE_SWIFT", None)
    env.pop("LOGITCACHE_NATIVE_LIB", None)
    wheels = tmp_path / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), os.path.join(REPO, "python")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [wheel] = os.listdir(wheels)
    assert wheel.endswith("-py3-none-any.whl"), wheel
    import zipfile
    names = zipfile.ZipFile(wheels / wheel).namelist()
    assert "logitcache/schemas/manifest.schema.json" in names and "logitcache/schemas/logitcache.h" in names
    assert not [n for n in names if n.endswith((".so", ".dylib"))]
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheels / wheel)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    from lc_testing import synth
    cache = synth(lc_bin, tmp_path / "c", "--tokens", 300, "--seq-len", 100, "--k", 4, "--vocab", 300)
    code = f"""
import logitcache as lc, logitcache.reader as lr
assert lc.__file__.startswith({str(target)!r}), lc.__file__
assert not lc.native_available()
with lc.Cache({cache!r}) as c:
    assert c.backend == "pure" and c.read(0, 10, 2).entry_ids.shape == (10, 2)
    assert lr.schema_validate(c.manifest, "manifest.schema.json", "manifest")
print("ok")
"""
    proc = python(code, PYTHONPATH=str(target), LOGITCACHE_NATIVE_LIB=None)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
