"""Builds the `logitcache` package: schemas from ../Schemas and, when Swift is on PATH, the native
library (`swift build -c release --product LogitCacheABI` in the repository root, parent of this
directory).

Both are copied into the package directory itself (`logitcache/schemas/`, `logitcache/_native/`,
git-ignored), so regular and editable (`pip install -e`) installs see them alike.

Environment:
  LOGITCACHE_SKIP_NATIVE=1      do not build the library (pure-numpy fallback)
  LOGITCACHE_SWIFT_BUILD_FLAGS  extra `swift build` arguments, e.g. "-Xswiftc -enable-testing" to
                                share the build products of `tools/test`
  LOGITCACHE_SWIFT              the swift executable (default: `swift` on PATH)

A failing Swift build fails the install (set LOGITCACHE_SKIP_NATIVE=1 to install without it).
Without Swift the install succeeds with the pure fallback, and the wheel is pure Python.
"""

import glob
import os
import shlex
import shutil
import subprocess
import sys

from setuptools import Distribution, find_packages, setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PACKAGE = os.path.join(HERE, "logitcache")
LIBRARY = "libLogitCacheABI.dylib" if sys.platform == "darwin" else "libLogitCacheABI.so"


def swift_executable():
    if os.environ.get("LOGITCACHE_SKIP_NATIVE", "") not in ("", "0"):
        return None
    if not os.path.exists(os.path.join(ROOT, "Package.swift")):
        return None  # not inside a LogitCache checkout (e.g. an sdist): nothing to build
    return os.environ.get("LOGITCACHE_SWIFT") or shutil.which("swift")


SWIFT = swift_executable()


def copy_schemas():
    """../Schemas/*.json, FORMAT.md and logitcache.h -> logitcache/schemas/ (kept as they are
    when ../Schemas is absent, as in an unpacked sdist)."""
    source = os.path.join(ROOT, "Schemas")
    files = sorted(glob.glob(os.path.join(source, "*.json"))) + \
        [os.path.join(source, f) for f in ("FORMAT.md", "logitcache.h")]
    if not os.path.isdir(source):
        if not glob.glob(os.path.join(PACKAGE, "schemas", "*.json")):
            raise SystemExit(f"setup.py: no {source} and no logitcache/schemas: build from a LogitCache checkout")
        return
    target = os.path.join(PACKAGE, "schemas")
    os.makedirs(target, exist_ok=True)
    for f in files:
        if not os.path.exists(f):
            raise SystemExit(f"setup.py: {f} is missing")
        shutil.copyfile(f, os.path.join(target, os.path.basename(f)))


def build_native():
    """Builds the Swift library and copies it to logitcache/_native/ (when the build is skipped,
    a copy left there by an earlier build is not packaged: see BuildPy)."""
    target = os.path.join(PACKAGE, "_native")
    if SWIFT is None:
        print("setup.py: no Swift build (swift not on PATH or LOGITCACHE_SKIP_NATIVE set): pure-numpy fallback",
              file=sys.stderr)
        return
    flags = shlex.split(os.environ.get("LOGITCACHE_SWIFT_BUILD_FLAGS", ""))
    command = [SWIFT, "build", "-c", "release", "--product", "LogitCacheABI", *flags]
    print("setup.py: " + " ".join(command), file=sys.stderr)
    done = subprocess.run(command, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"setup.py: `{' '.join(command)}` failed ({done.returncode}); fix the build, or install "
                         "without the native library: LOGITCACHE_SKIP_NATIVE=1 pip install ./python")
    bin_path = subprocess.run([SWIFT, "build", "-c", "release", "--show-bin-path", *flags], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    built = os.path.join(bin_path, LIBRARY)
    if not os.path.exists(built):
        raise SystemExit(f"setup.py: the Swift build left no {built}")
    os.makedirs(target, exist_ok=True)
    # A new file renamed over the old one: a process that has the old library mapped keeps it
    # (overwriting it in place would change code under a running interpreter).
    temporary = os.path.join(target, f".{LIBRARY}.{os.getpid()}.tmp")
    shutil.copyfile(built, temporary)
    os.replace(temporary, os.path.join(target, LIBRARY))


class BuildPy(build_py):
    """Copies the schemas and builds the native library before collecting package files."""

    def finalize_options(self):
        super().finalize_options()
        if SWIFT is None:  # a pure wheel: leave out any library an earlier build left in the tree
            self.package_data = {**self.package_data,
                                 "logitcache": [p for p in self.package_data.get("logitcache", []) if not p.startswith("_native")]}

    def run(self):
        copy_schemas()
        build_native()
        super().run()


class NativeDistribution(Distribution):
    def has_ext_modules(self):
        return SWIFT is not None  # the wheel then carries a platform library


class BdistWheel(bdist_wheel):
    """A wheel with the library is tagged for this platform but any Python 3 (ctypes, no
    extension module); without it, it is pure."""

    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = SWIFT is None

    def get_tag(self):
        python, abi, plat = super().get_tag()
        return ("py3", "none", plat) if SWIFT is not None else (python, abi, plat)


setup(
    packages=find_packages(where=HERE, include=["logitcache", "logitcache.*"]),
    package_dir={"": "."},
    package_data={"logitcache": ["schemas/*", "_native/*", "py.typed"]},
    include_package_data=False,
    zip_safe=False,
    distclass=NativeDistribution,
    cmdclass={"build_py": BuildPy, "bdist_wheel": BdistWheel},
)
