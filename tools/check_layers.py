#!/usr/bin/env python3
"""Checks that Package.swift's targets import only what ARCHITECTURE.md allows.

Reads the "may import" column of ARCHITECTURE.md's module table (which must list only modules above
each one), the `import`s of every Sources/TARGET file, and every `.target(...)` /
`.executableTarget(...)` in Package.swift; prints each dependency that is not allowed (one
that points up or sideways) and exits 1 if there is any. Test targets (and targets under
Tests/) are not checked.

    python3 tools/check_layers.py [REPO]
"""

import re
import sys
from pathlib import Path


def allowed(architecture: str) -> dict:
    """module -> set of modules it may import, from the markdown table."""
    rules = {}
    for line in architecture.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Za-z0-9_-]+)`", cells[0])
        deps = set() if cells[2] in ("—", "-", "") else {d.strip() for d in re.split(r",", cells[2])}
        deps = {d.split()[0] for d in deps if d}
        if "every module above" in cells[2]:
            deps = {"*"}
        for n in names:
            rules[n] = deps
    return rules


def targets(package: str) -> dict:
    """target name -> its dependencies (names, products included), for non-test targets."""
    out = {}
    for m in re.finditer(r"\.(target|executableTarget)\(\s*name:\s*\"([^\"]+)\"(.*?)\)\s*,\s*(?=\.|//|\])", package, re.S):
        body = m.group(3)
        if re.search(r'path:\s*"Tests/', body):
            continue  # test support, checked with the tests
        deps = re.search(r"dependencies:\s*\[(.*?)\]", body, re.S)
        names = re.findall(r"\"([^\"]+)\"", deps.group(1)) if deps else []
        products = set(re.findall(r"\.product\(name:\s*\"([^\"]+)\"", body))
        out[m.group(2)] = [n for n in names if n not in products and not n.startswith("swift-")]
    return out


SYSTEM = {"Foundation", "Glibc", "Musl", "Darwin", "Dispatch", "Synchronization", "ArgumentParser", "os"}


def source_imports(repo: Path, name: str) -> set:
    """Modules the Swift files of Sources/NAME import (system modules left out): SwiftPM lets a
    target import any module built before it, so the sources are checked, not only Package.swift."""
    found = set()
    for f in (repo / "Sources" / name).rglob("*.swift"):
        for m in re.finditer(r"^\s*(?:@testable\s+|@_implementationOnly\s+)?import\s+(?:struct\s+|class\s+|enum\s+)?([A-Za-z0-9_]+)",
                             f.read_text(), re.M):
            if m.group(1) not in SYSTEM:
                found.add(m.group(1))
    return found


def order_problems(architecture: str, rules: dict) -> list:
    """Allowed imports that are not above the module in the table (the table is lowest first)."""
    order = []
    for line in architecture.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            order += re.findall(r"`([A-Za-z0-9_-]+)`", cells[0])
    rank = {n: i for i, n in enumerate(order)}
    return [f"{n} may import {d}, which is not above it in ARCHITECTURE.md's table"
            for n in order for d in sorted(rules.get(n, ())) if d in rank and rank[d] >= rank[n]]


def main() -> int:
    repo = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    rules = allowed((repo / "ARCHITECTURE.md").read_text())
    found = targets((repo / "Package.swift").read_text())
    problems = []
    problems += order_problems((repo / "ARCHITECTURE.md").read_text(), rules)
    for name, deps in sorted(found.items()):
        deps = sorted(set(deps) | (source_imports(repo, name) - {name}))
        if name not in rules:
            problems.append(f"{name}: not in ARCHITECTURE.md's module table")
            continue
        if "*" in rules[name]:
            continue
        for d in deps:
            if d not in rules[name]:
                problems.append(f"{name} imports {d}, which ARCHITECTURE.md does not allow (may import: "
                                f"{', '.join(sorted(rules[name])) or 'nothing'})")
    for p in problems:
        print(f"check_layers: {p}")
    print(f"check_layers: {len(found)} targets, {len(problems)} problems")
    return 1 if problems or not found else 0


if __name__ == "__main__":
    sys.exit(main())
