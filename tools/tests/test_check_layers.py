"""tools/check_layers.py: the repository passes; an import that points up fails, whether it is
in Package.swift, only in a source file, or allowed by a table that lists a module below."""

import os
import subprocess
import sys

from tools_testing import TOOLS

SCRIPT = os.path.join(TOOLS, "check_layers.py")

TABLE = """| module | owns | may import |
|---|---|---|
| `Low` | the bottom | — |
| `High` | the top | Low |
"""


def check(repo):
    return subprocess.run([sys.executable, SCRIPT, str(repo)], capture_output=True, text=True)


def make(tmp_path, table=TABLE, low_deps="", low_source="import Foundation\n"):
    (tmp_path / "ARCHITECTURE.md").write_text(table)
    (tmp_path / "Package.swift").write_text(
        f'let p = Package(targets: [\n    .target(name: "Low"{low_deps}),\n'
        '    .target(name: "High", dependencies: ["Low"]),\n])\n')
    for name, text in (("Low", low_source), ("High", "import Low\n")):
        (tmp_path / "Sources" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "Sources" / name / f"{name}.swift").write_text(text)
    return tmp_path


def test_the_repository_passes():
    p = check(os.path.dirname(TOOLS))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 problems" in p.stdout


def test_a_layered_package_passes(tmp_path):
    p = check(make(tmp_path))
    assert p.returncode == 0, p.stdout


def test_a_dependency_that_points_up_fails(tmp_path):
    p = check(make(tmp_path, low_deps=', dependencies: ["High"]'))
    assert p.returncode == 1 and "Low imports High" in p.stdout


def test_an_import_only_in_the_sources_fails(tmp_path):
    p = check(make(tmp_path, low_source="import Foundation\nimport High\n"))
    assert p.returncode == 1 and "Low imports High" in p.stdout


def test_a_table_that_allows_an_upward_import_fails(tmp_path):
    table = TABLE.replace("| `Low` | the bottom | — |", "| `Low` | the bottom | High |")
    p = check(make(tmp_path, table=table))
    assert p.returncode == 1 and "Low may import High" in p.stdout
