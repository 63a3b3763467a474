"""Differential test: the Swift verifier and the pure-Python reader give the same verdict on
mutated manifests and footers of real caches (issue #20).

Caches of every format minor version come from `logitcache synth`. Each example copies one,
mutates its manifest (merged or partition) or one shard footer as a JSON tree or as text —
integers at their bounds and beyond, real-valued literals, other types, missing, extra and
repeated members, strings (policies, codecs, shard names with '..', '/', absolute), a byte-order
mark, deep nesting, shard list edits, chunks moved — and recomputes every checksum the mutation
touched (manifest checksum, footer checksum and trailer, chunk checksums, the manifest's
`bytes`/`xxh3` of the shard, optionally its counts and totals), so the readers judge the content,
not a checksum. Then `logitcache verify DIR` (exit 0 sound, 1 refused, anything else a crash)
and `logitcache.verify(DIR, backend="pure")` must agree: both accept or both refuse.

Any disagreement fails with the (shrunk) example. `EXPLICIT` keeps one example of each
disagreement this test found before the Swift side adopted the grammar of FORMAT.md section 7.
"""

import copy
import json
import os
import shutil
import struct
import subprocess
import tempfile

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import xxhash  # noqa: E402

import logitcache  # noqa: E402
import logitcache.reader as lr  # noqa: E402
from cache_edit import write_manifest  # noqa: E402
from lc_testing import logitcache_bin  # noqa: E402

# CI runs a fixed set of examples (derandomized); a hunt for new disagreements sets a seed and a count.
EXAMPLES = int(os.environ.get("LOGITCACHE_DIFFERENTIAL_EXAMPLES", "300"))
SEED = os.environ.get("LOGITCACHE_DIFFERENTIAL_SEED")
TALLY = {}  # (swift verdict, python verdict) -> examples, printed by test_report_pending
SWIFT_TIMEOUT = 20  # seconds for one `logitcache verify` of a ~30 kB cache (it takes ~20 ms)

# name -> synth arguments (small caches: 600 tokens, blocks of 128, shards of ~4 kB, 2-3 shards)
BASES = {
    "v3-zstd-sampled": ["--k", "8", "--sampled", "--draws", "5"],
    "v2-lz4-lossless": ["--k", "6", "--codec", "lz4", "--lossless", "--format-minor", "2"],
    "v1-none": ["--k", "8", "--codec", "none", "--format-minor", "1"],
    "v0-zstd-topp": ["--k", "8", "--top-p", "0.9", "--format-minor", "0"],
    "v3-sampled-only": ["--k", "0", "--sampled", "--draws", "7", "--codec", "lz4"],
    "v3-two-partitions": None,  # two partitions, merged
}
COMMON = ["--vocab", "300", "--tokens", "600", "--seq-len", "100", "--block-tokens", "128", "--shard-bytes", "4000"]


def synth_bases(binary, root):
    out = {}
    for name, args in BASES.items():
        path = os.path.join(root, name)
        if args is None:
            for p in (0, 1):
                subprocess.run([binary, "synth", path, *COMMON, "--k", "8", "--partitions", "2", "--partition", str(p)],
                               check=True, capture_output=True)
            subprocess.run([binary, "merge", path], check=True, capture_output=True)
        else:
            subprocess.run([binary, "synth", path, *COMMON, *args], check=True, capture_output=True)
        assert swift_verdict(binary, path)[0] == "accept", name
        assert python_verdict(path)[0] == "accept", name
        out[name] = path
    return out


# ----------------------------------------------------------------------------------------------
# JSON as an editable tree: objects as lists of (name, value) pairs (so a member may repeat),
# numbers as their literal text, and Raw(text) for anything written verbatim.


class Raw:
    def __init__(self, text: str):
        self.text = text

    def __repr__(self):
        return f"Raw({self.text!r})"

    def __eq__(self, other):
        return isinstance(other, Raw) and other.text == self.text


class Obj:
    def __init__(self, pairs):
        self.pairs = list(pairs)

    def __repr__(self):
        return f"Obj({self.pairs!r})"

    def get(self, key):
        for k, v in self.pairs:
            if k == key:
                return v
        return None

    def set(self, key, value):
        for i, (k, _) in enumerate(self.pairs):
            if k == key:
                self.pairs[i] = (k, value)
                return
        self.pairs.append((key, value))


def tree(text: str):
    return json.loads(text, object_pairs_hook=Obj, parse_int=Raw, parse_float=Raw)


def render(node, compact: bool) -> str:
    sep, colon = (",", ":") if compact else (",\n", ": ")
    if isinstance(node, Obj):
        return "{" + sep.join((k.text if isinstance(k, Raw) else json.dumps(k)) + colon + render(v, compact)
                              for k, v in node.pairs) + "}"
    if isinstance(node, list):
        return "[" + sep.join(render(v, compact) for v in node) + "]"
    if isinstance(node, Raw):
        return node.text
    return json.dumps(node)  # str, bool, None


def paths(node, here=()):
    """Every (path, node) of the tree, the root first; a path is a tuple of keys and indices."""
    out = [(here, node)]
    if isinstance(node, Obj):
        for i, (k, v) in enumerate(node.pairs):
            out += paths(v, here + ((i, k),))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, here + (i,))
    return out


def dotted(path) -> str:
    """A path as FORMAT.md names members: capture.k, shards[0].file."""
    s = ""
    for step in path:
        if isinstance(step, tuple):
            k = step[1].text if isinstance(step[1], Raw) else step[1]
            s += ("." if s else "") + str(k)
        else:
            s += f"[{step}]"
    return s


def parent_and_slot(root, path):
    node = root
    for step in path[:-1]:
        node = node.pairs[step[0]][1] if isinstance(step, tuple) else node[step]
    return node, path[-1]


def replace(root, path, value):
    if not path:
        return value
    parent, slot = parent_and_slot(root, path)
    if isinstance(slot, tuple):
        parent.pairs[slot[0]] = (parent.pairs[slot[0]][0], value)
    else:
        parent[slot] = value
    return root


def remove(root, path):
    parent, slot = parent_and_slot(root, path)
    if isinstance(slot, tuple):
        del parent.pairs[slot[0]]
    else:
        del parent[slot]


# ----------------------------------------------------------------------------------------------
# Values and mutations

INT_BOUNDS = [0, 1, -1, 2, 3, 4, 15, 16, 20, 21, 55, 56, 57, 255, 256, 65535, 65536, 99998, 99999, 100000,
              (1 << 20), (1 << 20) + 1, (1 << 24), (1 << 24) + 1, (1 << 40), (1 << 40) + 1, (1 << 50), (1 << 50) + 1,
              (1 << 62), (1 << 63) - 1, 1 << 63, -(1 << 63), -(1 << 63) - 1, 10 ** 30]
REAL_LITERALS = ["1.0", "1.5", "0.5", "1e2", "1E0", "0.0", "-0.0", "-0", "0e5", "0e10", "1e400", "-1e400", "1e-400",
                 "5e-324", "2e-324", "1e308", "0.9", "1.0000001", "100000000000000000000", "-1", "1e-3", "1000"]
STRINGS = ["", "x", "top-k", "top-p", "sampled", "head-tail", "top-k+sampled", "topk", "none", "lz4", "zstd", "gzip",
           "quantized", "float32", "raw", "planes", "buckets", "delta-buckets", "..", ".", "../x.lcs", "/etc/passwd",
           "a/b.lcs", "x" * 201, "x" * 200, "manifest.json", "logitcache", "LOGITCACHE", "0123456789abcdef",
           "0123456789ABCDEF", "0" * 32, "f" * 33, "input_ids", "entry_ids.0", "entry_refs.9", "sample_ids",
           "caf\u00e9", "\u0000", "tab\there"]
ESCAPED_STRINGS = ['"\\u0070art-00000-shard-000000.lcs"', '"\\ud800"', '"\\udc00\\ud800"', '"\\ud83d\\ude00"', '"\\q"',
                   '"\\u00e9"', '"\\/"']
KEYS = ["x", "format", "k", "tokens", "checksum", "partition", "topP", "stepMultiplier", "formatMinorVersion",
        "capture.temperature", "teacherCost.flops", "stepLog2", "column", "offset"]


def a_value(data, near=None):
    """Any JSON value (as a tree node): integers at bounds, reals, strings, literals, containers."""
    kind = data.draw(st.sampled_from(["int", "near", "real", "string", "escaped", "literal", "container"]), label="value kind")
    if kind == "int" or (kind == "near" and near is None):
        return Raw(str(data.draw(st.sampled_from(INT_BOUNDS), label="integer")))
    if kind == "near":
        return Raw(str(near + data.draw(st.sampled_from([-2, -1, 1, 2, near, -2 * near - 1]), label="delta")))
    if kind == "real":
        return Raw(data.draw(st.sampled_from(REAL_LITERALS), label="real literal"))
    if kind == "string":
        return data.draw(st.sampled_from(STRINGS), label="string")
    if kind == "escaped":
        return Raw(data.draw(st.sampled_from(ESCAPED_STRINGS), label="escaped string"))
    if kind == "literal":
        return data.draw(st.sampled_from([True, False, None]), label="literal")
    return data.draw(st.sampled_from([[], Obj([]), [Raw("1")], Obj([("a", Raw("1"))]), [None]]), label="container")


def nested(value, depth):
    """`value` inside `depth` arrays, as literal text (the tree helpers recurse)."""
    return Raw("[" * depth + render(value, True) + "]" * depth)


def recompute_totals(root):
    """Sets manifest totals to the sums over its shard entries (when those are plain integers)."""
    shards, totals = root.get("shards"), root.get("totals")
    if not isinstance(shards, list) or not isinstance(totals, Obj):
        return
    for key in ("tokens", "sequences", "entries", "samples", "bytes"):
        try:
            total = sum(int(e.get(key).text) for e in shards)
        except (AttributeError, ValueError, TypeError):
            return
        totals.set(key, Raw(str(total)))


def mutate_tree(data, root, what: str, is_manifest: bool):
    """One structural mutation of a parsed manifest or footer; returns (root, description)."""
    kind = data.draw(st.sampled_from(["set", "set", "set", "delete", "extra", "duplicate", "escaped-duplicate", "nest",
                                      "shards" if is_manifest else "chunk", "policy" if is_manifest else "set"]),
                     label="mutation")
    every = paths(root)
    if kind == "shards":
        shards = root.get("shards")
        op = data.draw(st.sampled_from(["clear", "drop", "repeat", "swap", "bogus", "rename"]), label="shard edit")
        n = len(shards)
        i = data.draw(st.integers(0, max(0, n - 1)), label="shard")
        if op == "clear":
            shards.clear()
        elif op == "drop" and n:
            del shards[i]
        elif op == "repeat" and n:
            shards.append(copy.deepcopy(shards[i]))
        elif op == "swap" and n > 1:
            shards[0], shards[-1] = shards[-1], shards[0]
        elif op == "bogus":
            shards.append(Obj([("bytes", Raw("56")), ("entries", Raw("0")), ("file", "nothing.lcs"),
                               ("partition", Raw("0")), ("samples", Raw("0")), ("sequences", Raw("0")),
                               ("tokens", Raw("0")), ("xxh3", "0000000000000000")]))
        elif op == "rename" and n:
            shards[i].set("file", data.draw(st.sampled_from(STRINGS), label="shard name"))
        if data.draw(st.booleans(), label="recompute totals"):
            recompute_totals(root)
        return root, f"{what}: shards {op} {i}"
    if kind == "policy":
        capture = root.get("capture")
        policy = data.draw(st.sampled_from(["top-k", "top-p", "sampled", "head-tail", "top-k+sampled"]), label="policy")
        capture.set("policy", policy)
        k, samples = (data.draw(st.sampled_from([0, 1, 8, 65535, 65536, -1]), label="k"),
                      data.draw(st.sampled_from([0, 1, 5, 7, 1 << 20, (1 << 20) + 1, -1]), label="samples"))
        capture.set("k", Raw(str(k)))
        capture.set("samples", Raw(str(samples)))
        top_p = data.draw(st.sampled_from([None, "0.9", "1", "1.0", "0", "1.5", "-0.5", '"0.9"']), label="topP")
        capture.pairs = [(a, b) for a, b in capture.pairs if a != "topP"]
        if top_p is not None:
            capture.set("topP", Raw(top_p))
        return root, f"{what}: capture {policy} k={k} samples={samples} topP={top_p}"
    if kind == "chunk":
        chunks = [(p, n) for p, n in every if isinstance(n, Obj) and n.get("column") is not None]
        p, c = chunks[data.draw(st.integers(0, len(chunks) - 1), label="chunk")]
        key = data.draw(st.sampled_from(["offset", "size", "count", "width"]), label="chunk member")
        old = int(c.get(key).text)
        c.set(key, Raw(str(max(0, old + data.draw(st.sampled_from([-8, -1, 1, 4, 16, 1000, -old]), label="shift")))))
        c.set("rehash", True)  # marks the chunk for a recomputed xxh3 (removed before writing)
        return root, f"{what}: {dotted(p)}.{key} moved, checksum recomputed"
    if kind == "extra":
        objects = [(p, n) for p, n in every if isinstance(n, Obj)]
        p, o = objects[data.draw(st.integers(0, len(objects) - 1), label="object")]
        key = data.draw(st.sampled_from(KEYS + ["\\u0066ormat"]), label="key")
        value = a_value(data)
        o.pairs.append((Raw(json.dumps(key).replace("\\\\u", "\\u")) if "\\u" in key else key, value))
        return root, f"{what}: extra member {key!r} = {render(value, True)} in {dotted(p) or 'top level'}"
    members = [(p, n) for p, n in every if p and isinstance(p[-1], tuple)]
    p, node = members[data.draw(st.integers(0, len(members) - 1), label="member")]
    where = dotted(p)
    if kind == "delete":
        remove(root, p)
        return root, f"{what}: {where} deleted"
    if kind in ("duplicate", "escaped-duplicate"):
        parent, slot = parent_and_slot(root, p)
        name = slot[1]
        value = node if data.draw(st.booleans(), label="same value") else a_value(data)
        if kind == "escaped-duplicate" and isinstance(name, str) and name:
            name = Raw('"\\u%04x' % ord(name[0]) + json.dumps(name)[2:])
        parent.pairs.insert(slot[0] + 1, (name, value))
        shown = name.text if isinstance(name, Raw) else json.dumps(name)
        return root, f"{what}: {where} repeated as {shown}: {render(value, True)}"
    if kind == "nest":
        depth = data.draw(st.sampled_from([1, 30, 31, 32, 33, 40, 3000]), label="depth")
        replace(root, p, nested(node, depth))
        return root, f"{what}: {where} wrapped in {depth} arrays"
    near = int(node.text) if isinstance(node, Raw) and node.text.lstrip("-").isdigit() else None
    value = a_value(data, near)
    replace(root, p, value)
    return root, f"{what}: {where} = {render(value, True)}"


def mutate_text(data, text: str, what: str):
    kind = data.draw(st.sampled_from(["bom", "whitespace", "trailing", "truncate"]), label="text mutation")
    if kind == "bom":
        return "\ufeff" + text, f"{what}: byte-order mark"
    if kind == "whitespace":
        ws = data.draw(st.sampled_from(["\f", "\v", "\u00a0", " \t\r\n"]), label="whitespace")
        i = text.index(":") + 1
        return text[:i] + ws + text[i:], f"{what}: whitespace {ws!r} after the first ':'"
    if kind == "trailing":
        return text + data.draw(st.sampled_from(["x", "{}", " ", "\n\n", "\x00"]), label="tail"), f"{what}: text after the value"
    cut = data.draw(st.integers(1, len(text) - 1), label="cut")
    return text[:cut], f"{what}: cut at {cut}"


# ----------------------------------------------------------------------------------------------
# Writing a mutated cache with every checksum recomputed


def read_footer(path):
    with open(path, "rb") as f:
        data = f.read()
    F, L = struct.unpack("<QQ", data[-40:-24])
    return data, F, data[F:F + L].decode()


def write_footer(path, data, F, footer_text):
    fb = footer_text.encode("utf-8", "surrogatepass")
    out = data[:F] + fb + struct.pack("<QQQII", F, len(fb), xxhash.xxh3_64_intdigest(fb), 1, 0) + lr.MAGIC
    with open(path, "wb") as f:
        f.write(out)
    return out


def manifest_names(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith("manifest") and n.endswith(".json"))


def write_manifest_text(path, body: str):
    """`body` is the manifest text up to the checksum member (exclusive): appends that member."""
    raw = body.encode("utf-8", "surrogatepass")
    with open(path, "wb") as f:
        f.write(raw + b'"checksum": "' + lr.hex64(xxhash.xxh3_64_intdigest(raw)).encode() + b'"\n}\n')


def manifest_body(root) -> str:
    """The tree rendered as Swift writes a manifest, without its checksum member (it is appended)."""
    root.pairs = [(k, v) for k, v in root.pairs if k != "checksum"]
    text = render(root, compact=False)
    if text.endswith("}") and len(text) > 2:
        return text[:-1] + ",\n  "
    return text  # not an object any more: no checksum member fits; the tail check refuses it


def sync_shard_entry(directory, shard_file, data, footer_text, counts: bool):
    """The shard's entry in every manifest: bytes and xxh3 of the new file, and (counts) the
    footer's totals when they are integers; totals recomputed."""
    try:
        ft = json.loads(footer_text)
    except (ValueError, RecursionError):
        ft = None
    for name in manifest_names(directory):
        path = os.path.join(directory, name)
        m = lr.read_manifest(path, validate_schema=False)
        for e in m["shards"]:
            if e["file"] != shard_file:
                continue
            e.update(bytes=len(data), xxh3=lr.hex64(xxhash.xxh3_64_intdigest(data)))
            if counts and isinstance(ft, dict):
                for key in ("tokens", "sequences", "entries", "samples"):
                    if type(ft.get(key)) is int and 0 <= ft[key] <= 1 << 50:
                        e[key] = ft[key]
        for key in ("tokens", "sequences", "entries", "samples", "bytes"):
            m["totals"][key] = sum(e[key] for e in m["shards"])
        write_manifest(path, m)


def rehash_chunks(root, data):
    """Recomputes xxh3 of chunks marked by a "chunk" mutation, over their new byte range."""
    for _, node in paths(root):
        if isinstance(node, Obj) and node.get("rehash") is True:
            node.pairs = [(k, v) for k, v in node.pairs if k != "rehash"]
            try:
                o, s = int(node.get("offset").text), int(node.get("size").text)
            except (AttributeError, ValueError):
                continue
            node.set("xxh3", lr.hex64(xxhash.xxh3_64_intdigest(data[o:o + s])))


def mutated_cache(data, bases, directory):
    """Copies a base cache to `directory` and applies one drawn mutation; returns its description."""
    base = data.draw(st.sampled_from(sorted(bases)), label="base")
    shutil.copytree(bases[base], directory)
    target = data.draw(st.sampled_from(["manifest", "manifest", "partition manifest", "footer", "footer"]), label="target")
    textual = data.draw(st.integers(0, 9), label="textual") == 0
    if target.endswith("manifest"):
        names = manifest_names(directory)
        name = "manifest.json" if target == "manifest" else \
            data.draw(st.sampled_from([n for n in names if n != "manifest.json"]), label="partition manifest")
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
            text = f.read().decode()
        root = tree(text)
        if textual:
            body, how = mutate_text(data, manifest_body(root), f"{base} {name}")
        else:
            root, how = mutate_tree(data, root, f"{base} {name}", is_manifest=True)
            body = manifest_body(root) if isinstance(root, Obj) else render(root, False)
        write_manifest_text(path, body)
        return how
    shards = lr.read_manifest(os.path.join(directory, "manifest.json"), validate_schema=False)["shards"]
    shard = shards[data.draw(st.integers(0, len(shards) - 1), label="shard")]["file"]
    path = os.path.join(directory, shard)
    raw, F, footer_text = read_footer(path)
    if textual:
        footer_text, how = mutate_text(data, footer_text, f"{base} {shard} footer")
    else:
        root, how = mutate_tree(data, tree(footer_text), f"{base} {shard} footer", is_manifest=False)
        rehash_chunks(root, raw)
        footer_text = render(root, compact=True)
    new = write_footer(path, raw, F, footer_text)
    sync_shard_entry(directory, shard, new, footer_text, counts=data.draw(st.booleans(), label="sync counts"))
    return how


# ----------------------------------------------------------------------------------------------
# Verdicts


def swift_verdict(binary, path):
    """"accept" / "refuse" from `logitcache verify` (a signal or another status is a crash)."""
    try:
        proc = subprocess.run([binary, "verify", path], capture_output=True, text=True, timeout=SWIFT_TIMEOUT)
    except subprocess.TimeoutExpired:
        return "hang", f"no answer within {SWIFT_TIMEOUT} s"
    detail = (proc.stdout + proc.stderr).strip()[-600:]
    if proc.returncode == 0:
        return "accept", detail
    if proc.returncode == 1:
        return "refuse", detail
    return "crash", f"exit status {proc.returncode}: {detail}"


def python_verdict(path):
    """"accept" / "refuse" from the pure reader's verify (an exception other than CacheError
    fails the test); the schema-free reader must give the same verdict."""
    report = logitcache.verify(path, backend="pure")
    try:
        with lr.Cache(path, validate_schema=False) as c:
            c.verify()
        plain = "accept"
    except lr.CacheError:
        plain = "refuse"
    verdict = "accept" if report["sound"] else "refuse"
    assert plain == verdict, f"the JSON Schemas and the reader's own checks disagree: {report['problems']}"
    return verdict, "; ".join(report["problems"])[:600]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    binary = logitcache_bin()
    if not os.access(binary, os.X_OK):
        pytest.fail(f"no logitcache binary at {binary}: set LOGITCACHE_BIN (tools/test does)")
    return synth_bases(binary, str(tmp_path_factory.mktemp("bases")))


@settings(max_examples=EXAMPLES, derandomize=SEED is None, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@hypothesis.seed(int(SEED or 0))
@given(data=st.data())
def test_swift_and_python_verdicts_agree(bases, data):
    binary = logitcache_bin()
    with tempfile.TemporaryDirectory(prefix="lc-diff-") as tmp:
        directory = os.path.join(tmp, "cache")
        how = mutated_cache(data, bases, directory)
        swift = swift_verdict(binary, directory)
        python = python_verdict(directory)
        TALLY[swift[0], python[0]] = TALLY.get((swift[0], python[0]), 0) + 1
        if swift[0] != python[0]:
                pytest.fail(f"verdicts differ on {how}:\n  swift:  {swift[0]}: {swift[1]}\n  python: {python[0]}: {python[1]}")


def test_report_tally(bases):
    """Runs after the property test: prints how many examples each pair of verdicts had (-s)."""
    print("verdicts (swift, python):", dict(sorted(TALLY.items())))


# Explicit examples of the disagreements this test found before the Swift side adopted the
# grammar of FORMAT.md section 7 (null, escaped member names, strings in unknown members, the
# encoding members, shard partitions, the footer grammar and counts, maxSamples in verify, the
# real literals 0e1...0e9): name -> (base, target, edit, the verdict both must give).
def _set(path, value):
    def edit(root):
        node = root
        for step in path[:-1]:
            node = node.get(step) if isinstance(node, Obj) else node[step]
        if isinstance(node, Obj):
            node.set(path[-1], value)
        else:
            node[path[-1]] = value
        return root
    return edit


def _dup_escaped(root):
    root.pairs.append((Raw('"\\u0066ormat"'), "other"))
    return root


def _extra(value):
    def edit(root):
        root.pairs.append(("x", value))
        return root
    return edit


def _count(column, value):
    """Sets the count of `column` in block 0 (other members and checksums as they are)."""
    def edit(root):
        for c in root.get("blocks")[0].get("chunks"):
            if c.get("column") == column:
                c.set("count", Raw(str(value)))
        return root
    return edit


EXPLICIT = {
    "null in an unknown member": ("v3-zstd-sampled", "manifest", _extra(None), "refuse"),
    "null for an optional member": ("v3-zstd-sampled", "manifest", _set(("partition",), None), "refuse"),
    "member name repeated with an escape": ("v3-zstd-sampled", "manifest", _dup_escaped, "refuse"),
    "unpaired surrogate in an unknown member": ("v3-zstd-sampled", "manifest", _extra(Raw('"\\ud800"')), "refuse"),
    "undefined escape in an unknown member": ("v3-zstd-sampled", "manifest", _extra(Raw('"\\q"')), "refuse"),
    "encoding.codec gzip": ("v3-zstd-sampled", "manifest", _set(("encoding", "codec"), "gzip"), "refuse"),
    "encoding.stepLog2 99": ("v3-zstd-sampled", "manifest", _set(("encoding", "stepLog2"), Raw("99")), "refuse"),
    "encoding.entryBands falling": ("v3-zstd-sampled", "manifest", _set(("encoding", "entryBands"), [Raw("0"), Raw("9"),
                                                                                                 Raw("8")]), "refuse"),
    "shards[0].partition -1": ("v3-zstd-sampled", "manifest", _set(("shards", 0, "partition"), Raw("-1")), "refuse"),
    "teacherCost.flops 0e5": ("v3-zstd-sampled", "manifest", _set(("teacherCost", "flops"), Raw("0e5")), "accept"),
    "teacherCost.flops 1e-400 (reads as 0)": ("v3-zstd-sampled", "manifest",
                                              _set(("teacherCost", "flops"), Raw("1e-400")), "accept"),
    "teacherCost.flops 0.(400 zeros)1 (reads as 0)": ("v3-zstd-sampled", "manifest",
                                                     _set(("teacherCost", "flops"), Raw("0." + "0" * 400 + "1")), "accept"),
    "footer blockTokens 128.0": ("v3-zstd-sampled", "footer", _set(("blockTokens",), Raw("128.0")), "refuse"),
    "footer member twice": ("v3-zstd-sampled", "footer", lambda root: _repeat(root, "blockTokens"), "refuse"),
    "footer null minor version": ("v3-zstd-sampled", "footer", _set(("formatMinorVersion",), None), "refuse"),
    "footer tokens 2^63 - 1": ("v3-zstd-sampled", "footer", lambda root: _huge_tokens(root), "refuse"),
    "footer block decoding into more than 4 GiB": ("v3-zstd-sampled", "footer", _count("entry_ids.0", (1 << 30) + 1),
                                                    "refuse"),
    "footer maxSamples differs from the first shard's": ("v3-zstd-sampled", "footer", _set(("maxSamples",), Raw("6")),
                                                         "refuse"),
}


def _repeat(root, key):
    root.pairs.append((key, root.get(key)))
    return root


def _huge_tokens(root):
    big = (1 << 63) - 1
    root.set("tokens", Raw(str(big)))
    root.set("sequences", Raw("1"))
    table = root.get("sequenceTable")
    table.set("lengths", [Raw(str(big))])
    table.set("documentKeys", table.get("documentKeys")[:1])
    table.set("documentOffsets", [Raw("0")])
    return root


@pytest.mark.parametrize("name", sorted(EXPLICIT))
def test_explicit_examples_agree(bases, name, tmp_path):
    base, target, edit, want = EXPLICIT[name]
    directory = str(tmp_path / "cache")
    shutil.copytree(bases[base], directory)
    if target == "manifest":
        for n in manifest_names(directory):  # the partition manifests would disagree with any edit
            if n != "manifest.json":
                os.remove(os.path.join(directory, n))
        path = os.path.join(directory, "manifest.json")
        with open(path) as f:
            write_manifest_text(path, manifest_body(edit(tree(f.read()))))
    else:
        shard = sorted(n for n in os.listdir(directory) if n.endswith(".lcs"))[-1]
        raw, F, text = read_footer(os.path.join(directory, shard))
        text = render(edit(tree(text)), compact=True)
        new = write_footer(os.path.join(directory, shard), raw, F, text)
        sync_shard_entry(directory, shard, new, text, counts=False)
    swift, python = swift_verdict(logitcache_bin(), directory), python_verdict(directory)
    assert (swift[0], python[0]) == (want, want), f"{name}: swift {swift}, python {python}"
    if "4 GiB" in name:  # refused by the bound, before anything is decoded
        assert "more than 4 GiB" in python[1] and "more than 4 GiB" in swift[1], (swift, python)
