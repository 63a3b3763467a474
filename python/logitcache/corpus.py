"""The teacher pass's corpus rules in Python: the same documents, token stream, windows,
partitions and fingerprints as `logitcache teacher` (Sources/TeacherPass), so that a Python
teacher capture writes exactly the sequences the Swift pass would.

    import tokenizers
    from logitcache import corpus as lc_corpus

    tok = tokenizers.Tokenizer.from_file("tokenizer.json")
    eot = lc_corpus.end_of_text_id(tok)
    paths = lc_corpus.expand_corpus_paths(["data/*.jsonl.zst", "more/"])
    stream = lc_corpus.tokenize_corpus(paths, lambda t: tok.encode(t, add_special_tokens=False).ids,
                                       eot, vocabulary_size=V)
    total = stream.window_count(context=512)               # windows of the whole corpus
    part = lc_corpus.Partition.from_environment() or lc_corpus.Partition(0, 1)
    for w in part.window_range(total):
        win = stream.window(w, 512)                        # Window(index, start, length, key, offset)
        inputs, targets = stream.window_tokens(w, 512)      # int32 [length] each
    fp = {"teacher": lc_corpus.teacher_fingerprint("model/"),
          "tokenizer": lc_corpus.tokenizer_fingerprint("tokenizer.json"),
          "corpus": lc_corpus.corpus_fingerprint(stream, 512)}

Rules (each as the Swift source named):

- Files (CorpusFiles.swift). The kind comes from the extension, case-insensitively: `.txt`,
  `.text`, `.md` text; `.jsonl`, `.ndjson` JSON Lines; `.bin`, `.u16`, `.u32` token ids. Text and
  JSON Lines may be zstd-compressed (`.txt.zst`, `.jsonl.zst`). As in Swift, `.bin.zst` and
  `.u16.zst` count as token files (read as raw, still compressed, bytes) while `.u32.zst` is
  refused. Arguments are files, directories (walked recursively without following symbolic
  links; only files of a known kind are kept; an argument that is itself a symbolic link to a
  directory yields nothing) or glob(3) patterns (any of `*?[`); the result is sorted by UTF-8
  bytes and de-duplicated (canonically equivalent paths count as one, as Swift `String`s do).
- Documents (Corpus.swift). Text: the whole file is one document, or with
  `blank_line_documents` the runs of lines between blank lines, joined with "\\n". JSON Lines:
  the string field `text_field` of every object line; whitespace-only lines are skipped. Empty
  documents are skipped. Token files: the ids as they are, cut after every end-of-text id (the
  separator stays with the document it ends). Lines are cut as Swift's
  `split(whereSeparator: \\.isNewline)` cuts: at LF, VT, FF, CR, CR LF (one break), NEL, U+2028
  and U+2029 — not at U+001C...U+001E, which Python's `str.splitlines` also breaks at. A line is
  blank when every grapheme cluster starts with a Unicode White_Space scalar (Swift's
  `Character.isWhitespace`), so " \\u0301" (a space with a combining accent) is blank, "\\x1c" is
  not. JSON is parsed as Foundation's `JSONSerialization` parses (trailing commas accepted,
  at most 512 nested containers, numbers that overflow a Double refused, lone surrogates refused,
  a UTF-8 byte-order mark skipped at the start of the line and at the start of every run of
  string characters, UTF-16/32 detected from NUL bytes). A text file that starts with a UTF-8
  byte-order mark is refused as Swift refuses it: "not valid UTF-8 at byte <file size>".
- Keys (Corpus.swift): XXH3-128 of a document's UTF-8 text, or of its ids as little-endian
  uint32; a Python `int` (high 64 bits first), `key_hex` is the 32 hex digits a cache stores.
- Stream and windows (Windows.swift): text documents' ids followed by the end-of-text id, token
  documents as they are; `n` tokens give ceil((n - 1) / context) windows; window w has inputs
  `ids[w*context : w*context + L]`, targets shifted by one, `L = min(context, n - 1 - w*context)`,
  and names the document it starts in and its offset there.
- Partitions (Partition.swift): part i of N owns windows `[i*W//N, (i+1)*W//N)`; `i/N` text, or
  Slurm (`SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN` of `SLURM_ARRAY_TASK_COUNT`) and Kubernetes
  Indexed Jobs (`JOB_COMPLETION_INDEX` of the given completion count).
- Fingerprints (Fingerprint.swift), `"xxh3:"` and 16 hex digits, `combine(h...)` being XXH3-64
  of the 64-bit values as little-endian bytes:
  teacher = combine(xxh3(config.json), xxh3(f) for every `*.safetensors` f in name order);
  tokenizer = xxh3(tokenizer.json bytes);
  corpus = combine(xxh3(ids as int32 LE), combine(high, low of every document key), context).

Extensions of the Swift rules (Swift cannot load these, so nothing to match; defined here so that
Python captures of such checkpoints still get stable fingerprints):

- A checkpoint without `*.safetensors` (PyTorch `pytorch_model*.bin`, sharded or not):
  teacher = combine(xxh3(config.json), xxh3(f) for every `pytorch_model*.bin` f in name order).
  Without either kind of weight file it is combine(xxh3(config.json)), as Swift computes it.
- A tokenizer without `tokenizer.json` (SentencePiece `tokenizer.model`): given its directory (or
  the `tokenizer.model` file), tokenizer = combine(xxh3(f) for f in `added_tokens.json`,
  `special_tokens_map.json`, `tokenizer.model`, `tokenizer_config.json` that exist, in that
  (name) order). A directory with a `tokenizer.json` uses that file (the Swift rule); any other
  file given directly is hashed alone.

Errors are `CorpusError` (a `ValueError`) whose message is the Swift error's description,
naming the file and line or byte: "f.jsonl:3: not a JSON object (invalid JSON)",
"f.txt: not valid UTF-8 at byte 17", "f.bin: bad token file (...)". The teacher pass's own
errors met here (no end-of-text token, a token id outside the vocabulary) are `CorpusError`s too,
with the Swift `TeacherPassError` text.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import glob as _glob
import math
import os
import re
import stat
import struct
import sys
import unicodedata
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import xxhash

__all__ = [
    "CorpusError", "Document", "TokenStream", "Window", "Partition",
    "corpus_file_kind", "expand_corpus_paths", "read_documents", "split_at_blank_lines", "document_key",
    "tokenize_corpus", "end_of_text_id", "END_OF_TEXT_CANDIDATES",
    "teacher_fingerprint", "tokenizer_fingerprint", "corpus_fingerprint",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Tokens tried, in order, for the end-of-text id when none is named (TeacherPassJob.swift).
END_OF_TEXT_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>")

_GPT2_MAGIC = 20240520
_LLAMA3_MAGIC = 20240801
_HEADER_INTS = 256
_MASK64 = (1 << 64) - 1


# MARK: - Errors

class CorpusError(ValueError):
    """A corpus problem, with the Swift `CorpusError` (or `TeacherPassError`) description as its
    message. `kind` names the case ("notFound", "invalidUTF8", "badJSONLine", ...); `path`,
    `line` and `byte_offset` are set when the case has them."""

    def __init__(self, message: str, kind: str = "failed", path: Optional[str] = None,
                 line: Optional[int] = None, byte_offset: Optional[int] = None):
        super().__init__(message)
        self.kind = kind
        self.path = path
        self.line = line
        self.byte_offset = byte_offset

    @classmethod
    def not_found(cls, path: str) -> "CorpusError":
        return cls(f"{path}: no such file or directory", "notFound", path)

    @classmethod
    def unreadable(cls, path: str, reason: str) -> "CorpusError":
        return cls(f"{path}: cannot read ({reason})", "unreadable", path)

    @classmethod
    def invalid_utf8(cls, path: str, byte_offset: int) -> "CorpusError":
        return cls(f"{path}: not valid UTF-8 at byte {byte_offset}", "invalidUTF8", path, byte_offset=byte_offset)

    @classmethod
    def bad_json_line(cls, path: str, line: int, reason: str) -> "CorpusError":
        return cls(f"{path}:{line}: not a JSON object ({reason})", "badJSONLine", path, line)

    @classmethod
    def missing_text_field(cls, path: str, line: int, field: str) -> "CorpusError":
        return cls(f'{path}:{line}: no string field "{field}"', "missingTextField", path, line)

    @classmethod
    def bad_token_file(cls, path: str, reason: str) -> "CorpusError":
        return cls(f"{path}: bad token file ({reason})", "badTokenFile", path)

    @classmethod
    def unsupported_file(cls, path: str) -> "CorpusError":
        return cls(f"{path}: unsupported corpus file type (expected .txt, .jsonl, .bin, .u16 or .u32)",
                   "unsupportedFile", path)

    @classmethod
    def empty_corpus(cls, paths: Sequence[str]) -> "CorpusError":
        return cls(f"corpus is empty: no documents in {', '.join(paths)}", "emptyCorpus")

    @classmethod
    def bad_partition(cls, message: str) -> "CorpusError":
        return cls(f"bad partition: {message}", "badPartition")

    @classmethod
    def token_out_of_vocabulary(cls, token: int, vocabulary: int, source: str) -> "CorpusError":
        return cls(f"{source}: token id {token} is outside the model's vocabulary of {vocabulary}",
                   "tokenOutOfVocabulary", source)

    @classmethod
    def no_end_of_text_token(cls, tokenizer_path: str) -> "CorpusError":
        # Swift's message lists four of the five candidates (<|eot_id|> is tried but not named).
        return cls(f"{tokenizer_path}: no end-of-text token found (looked for <|endoftext|>, <|end_of_text|>, "
                   "</s>, <eos>); name one with --eot-token", "noEndOfTextToken", tokenizer_path)


# MARK: - Hashes

def _xxh3(data) -> int:
    return xxhash.xxh3_64_intdigest(data)


def _combine(hashes: Sequence[int]) -> int:
    """XXH3-64 of the 64-bit values as little-endian bytes."""
    return _xxh3(np.asarray([h & _MASK64 for h in hashes], dtype="<u8").tobytes())


def _render(h: int) -> str:
    return f"xxh3:{h & _MASK64:016x}"


def document_key(content: Union[str, np.ndarray, Sequence[int]]) -> int:
    """The 128-bit key of a document (high 64 bits first): XXH3-128 of the UTF-8 text, or of the
    ids as little-endian uint32 (ids: shape [n], each in [0, 2^32))."""
    if isinstance(content, str):
        return xxhash.xxh3_128_intdigest(content.encode("utf-8"))
    ids = np.asarray(content)
    return xxhash.xxh3_128_intdigest(ids.astype("<u4", casting="unsafe").tobytes())


def _key_hex(key: int) -> str:
    return f"{key:032x}"


def _key_int(key: Union[int, str, Tuple[int, int]]) -> int:
    if isinstance(key, str):
        if not re.fullmatch(r"[0-9a-fA-F]{32}", key):
            raise ValueError(f"document key {key!r} is not 32 hex digits")
        return int(key, 16)
    if isinstance(key, tuple):
        high, low = key
        return (int(high) & _MASK64) << 64 | (int(low) & _MASK64)
    key = int(key)
    if not 0 <= key < 1 << 128:
        raise ValueError(f"document key {key} is not a 128-bit unsigned value")
    return key


# MARK: - Paths and file kinds

def _fixed_path(path: str) -> str:
    """NSString's `_stringByFixingSlashes`: runs of '/' as one, one trailing '/' dropped."""
    if path == "/":
        return path
    p = re.sub("/{2,}", "/", path)
    if p.endswith("/"):
        p = p[:-1]
    return p


def _extension_start(fixed: str) -> Optional[int]:
    """Index just after the extension's dot in a fixed path, or None (NSString rules: no dot in
    the last component, or only a leading one, means no extension)."""
    if len(fixed.encode("utf-16-le", "surrogatepass")) // 2 <= 1:
        return None
    start = fixed.rfind("/") + 1
    dot = fixed.rfind(".", start)
    if dot <= start:
        return None
    return dot + 1


def _path_extension(path: str) -> str:
    """NSString.pathExtension: "txt" of "a/b.txt", "" of "a/.txt", "a." or "a"."""
    fixed = _fixed_path(path)
    at = _extension_start(fixed)
    return "" if at is None else fixed[at:]


def _deleting_path_extension(path: str) -> str:
    fixed = _fixed_path(path)
    at = _extension_start(fixed)
    return fixed if at is None else fixed[:at - 1]


def corpus_file_kind(path: PathLike) -> Optional[str]:
    """"text", "jsonl" or "tokens" by extension (case-insensitive), or None when the path is not
    a corpus file. As Swift's `CorpusFileKind(path:)`, including its quirk: `.bin.zst` and
    `.u16.zst` are "tokens" (the Swift `where` clause guards only the `u32` pattern)."""
    path = os.fspath(path)
    p = path
    if _path_extension(p).lower() == "zst":
        p = _deleting_path_extension(p)
    ext = _path_extension(p).lower()
    if ext in ("txt", "text", "md"):
        return "text"
    if ext in ("jsonl", "ndjson"):
        return "jsonl"
    if ext in ("bin", "u16"):
        return "tokens"
    if ext == "u32" and not path.lower().endswith(".zst"):
        return "tokens"
    return None


def _libc_glob(pattern: str) -> Optional[List[str]]:
    """glob(3) with flags 0 through ctypes (the call Swift makes), or None when unavailable."""
    if sys.platform.startswith("linux"):
        pathv_offset = ctypes.sizeof(ctypes.c_size_t)  # glibc and musl: gl_pathc, gl_pathv, ...
    elif sys.platform == "darwin":
        pathv_offset = 32  # gl_pathc, gl_matchc, gl_offs, gl_flags, gl_pathv
    else:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        glob_fn, globfree = libc.glob, libc.globfree
    except (OSError, AttributeError):
        return None
    glob_fn.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    glob_fn.restype = ctypes.c_int
    globfree.argtypes = [ctypes.c_void_p]
    globfree.restype = None
    buf = ctypes.create_string_buffer(512)  # larger than any glob_t
    status = glob_fn(os.fsencode(pattern), 0, None, buf)
    try:
        if status != 0:
            return []
        count = ctypes.c_size_t.from_buffer(buf, 0).value
        pathv = ctypes.c_void_p.from_buffer(buf, pathv_offset).value
        if count == 0 or not pathv:
            return []
        entries = (ctypes.c_char_p * count).from_address(pathv)
        # Swift's String(cString:) repairs invalid UTF-8 with U+FFFD.
        return [entries[i].decode("utf-8", "replace") for i in range(count) if entries[i] is not None]
    finally:
        globfree(buf)


def _glob_paths(pattern: str) -> List[str]:
    found = _libc_glob(pattern)
    if found is None:
        found = sorted(_glob.glob(pattern))
    return found


def _walk_files(root: str) -> List[str]:
    """FileManager.enumerator(atPath:) as swift-corelibs-foundation runs it (fts, physical, one
    device): every entry below `root`, symbolic links not followed, the root itself not followed
    either when it is a link."""
    if os.path.islink(root.rstrip("/") or "/"):
        return []
    try:
        device = os.lstat(root).st_dev
    except OSError:
        return []
    out = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        kept = []
        for d in dirnames:
            full = os.path.join(directory, d)
            try:
                if os.lstat(full).st_dev == device:
                    kept.append(d)
            except OSError:
                pass
        for name in dirnames + filenames:
            out.append(os.path.join(directory, name))
        dirnames[:] = kept
    return out


def _utf8_key(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def expand_corpus_paths(arguments: Sequence[PathLike]) -> List[str]:
    """Corpus arguments (files, directories, glob patterns) as a sorted, de-duplicated file list.

    Directories are walked recursively and keep only files of a known kind (see
    `corpus_file_kind`); patterns containing `*`, `?` or `[` are expanded by glob(3). The result
    is in UTF-8 byte order, so the same arguments give the same order on every machine.

    - Returns: the files, shape [files].
    - Raises: `CorpusError` "no such file or directory" for an argument (or glob match) that does
      not exist and for a pattern matching nothing, "unsupported corpus file type" for an
      explicit file of unknown kind.
    """
    out: List[str] = []
    for arg in map(os.fspath, arguments):
        if any(c in arg for c in "*?["):
            matches = _glob_paths(arg)
            if not matches:
                raise CorpusError.not_found(arg)
        else:
            matches = [arg]
        for path in matches:
            if not os.path.exists(path):
                raise CorpusError.not_found(path)
            if os.path.isdir(path):
                for full in _walk_files(path):
                    if os.path.exists(full) and not os.path.isdir(full) and corpus_file_kind(full) is not None:
                        out.append(full)
            else:
                if corpus_file_kind(path) is None:
                    raise CorpusError.unsupported_file(path)
                out.append(path)
    out.sort(key=_utf8_key)
    seen = set()
    result = []
    for p in out:
        canonical = unicodedata.normalize("NFD", p)  # Swift String equality: canonical equivalence
        if canonical not in seen:
            seen.add(canonical)
            result.append(p)
    return result


# MARK: - Reading files

def _regular_file_problem(path: str) -> Optional[str]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISREG(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        return "it is a directory, not a file"
    return "it is not a regular file (a FIFO, socket or device)"


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CorpusError.unreadable(path, e.strerror or str(e)) from None


def _read_zstd(path: str) -> bytes:
    """Every frame of a .zst file, decompressed (Zstd+Corpus.swift); an empty or cut file is a
    "truncated zstd frame"."""
    import zstandard

    data = _read_bytes(path)
    if not data:
        raise CorpusError.unreadable(path, "truncated zstd frame")
    dctx = zstandard.ZstdDecompressor()
    parts = []
    while data:
        dobj = dctx.decompressobj()
        try:
            parts.append(dobj.decompress(data))
        except zstandard.ZstdError as e:
            reason = re.sub(r"^zstd decompress(or)? error: ", "", str(e))
            raise CorpusError.unreadable(path, "ZSTD_decompressStream: " + reason) from None
        if not dobj.eof:
            raise CorpusError.unreadable(path, "truncated zstd frame")
        data = dobj.unused_data
    return b"".join(parts)


def _read_utf8(path: str) -> str:
    """A whole file as UTF-8 text (readUTF8 in Corpus.swift)."""
    if path.lower().endswith(".zst"):
        data = _read_zstd(path)
    else:
        problem = _regular_file_problem(path)
        if problem is not None:
            raise CorpusError.unreadable(path, problem)
        data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError.invalid_utf8(path, e.start) from None
    if text.startswith("\ufeff"):
        # Foundation's String(data:encoding:.utf8) drops a leading byte-order mark, and Swift then
        # refuses the file because the text is shorter than the data: the offset is the size.
        raise CorpusError.invalid_utf8(path, len(data))
    return text


def _read_token_file(path: str) -> np.ndarray:
    """Every id of a token file (TokenFile.swift), as uint32. Shape [n]."""
    data = _read_bytes(path)
    ext = _path_extension(path).lower()
    header_bytes = _HEADER_INTS * 4
    if ext == "bin" and len(data) >= header_bytes:
        magic, version, count = struct.unpack_from("<iii", data, 0)
        width = {(_GPT2_MAGIC, 1): 2, (_LLAMA3_MAGIC, 7): 4}.get((magic, version))
        if width is None and magic in (_GPT2_MAGIC, _LLAMA3_MAGIC):
            raise CorpusError.bad_token_file(path, f"llm.c magic {magic} with unknown version {version}")
        if width is not None:
            if count < 0 or header_bytes + count * width != len(data):
                raise CorpusError.bad_token_file(
                    path, f"header says {count} tokens of {width} bytes but the file has "
                          f"{len(data) - header_bytes} data bytes")
            dtype = "<u2" if width == 2 else "<u4"
            return np.frombuffer(data, dtype=dtype, count=count, offset=header_bytes).astype(np.uint32)
    width = 4 if ext == "u32" else 2
    if len(data) % width:
        raise CorpusError.bad_token_file(path, f"size {len(data)} is not a multiple of {width} bytes")
    return np.frombuffer(data, dtype="<u2" if width == 2 else "<u4").astype(np.uint32)


# MARK: - Swift String semantics

# Character.isNewline: a grapheme cluster whose first scalar is one of these; "\r\n" is one.
_NEWLINE = re.compile("\r\n|[\n\x0b\x0c\r\x85\u2028\u2029]")
# Unicode White_Space (Character.isWhitespace looks at a cluster's first scalar).
_WHITE_SPACE = frozenset([0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                          0x2028, 0x2029, 0x202F, 0x205F, 0x3000])
# White_Space scalars that are grapheme Control / CR / LF: nothing joins their cluster.
_CONTROL_WHITE_SPACE = frozenset([0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0x2028, 0x2029])
# Spacing marks that are Grapheme_Cluster_Break=Other (UAX #29), so they start a new cluster.
_MC_NOT_SPACING_MARK = frozenset([0x102B, 0x102C, 0x1038, *range(0x1062, 0x1065), *range(0x1067, 0x106E), 0x1083,
                                  *range(0x1087, 0x108D), 0x108F, *range(0x109A, 0x109D), 0x1A61, 0x1A63, 0x1A64,
                                  0xAA7B, 0xAA7D, 0x11720, 0x11721])


def _extends_cluster(ch: str) -> bool:
    """Whether a scalar joins the grapheme cluster before it (Grapheme_Cluster_Break Extend, ZWJ
    or SpacingMark: rules GB9 and GB9a)."""
    c = ord(ch)
    cat = unicodedata.category(ch)
    if cat in ("Mn", "Me"):
        return True
    if cat == "Mc":
        return c not in _MC_NOT_SPACING_MARK
    return (c in (0x200C, 0x200D, 0x0E33, 0x0EB3) or 0xFF9E <= c <= 0xFF9F or 0x1F3FB <= c <= 0x1F3FF
            or 0xE0020 <= c <= 0xE007F)


def _is_blank(line: str) -> bool:
    """Swift's `line.allSatisfy { $0.isWhitespace }`: every grapheme cluster starts with a
    White_Space scalar (marks after a non-control space belong to its cluster)."""
    if not line or line.isascii():
        return all(ord(ch) in _WHITE_SPACE for ch in line)
    joinable = False
    for ch in line:
        c = ord(ch)
        if c in _WHITE_SPACE:
            joinable = c not in _CONTROL_WHITE_SPACE
        elif not (joinable and _extends_cluster(ch)):
            return False
    return True


def _swift_lines(text: str) -> List[str]:
    """`text.split(omittingEmptySubsequences: false, whereSeparator: \\.isNewline)`."""
    return _NEWLINE.split(text)


def split_at_blank_lines(text: str) -> List[str]:
    """Paragraph documents: runs of non-blank lines, joined with "\\n" (splitAtBlankLines)."""
    docs: List[str] = []
    current: List[str] = []
    for line in _swift_lines(text):
        if _is_blank(line):
            if current:
                docs.append("\n".join(current))
                current = []
        else:
            current.append(line)
    if current:
        docs.append("\n".join(current))
    return docs


# MARK: - JSON as Foundation's JSONSerialization reads it

class _JSONError(Exception):
    pass


class _Object(list):
    """A JSON object as its (key, value) pairs in order."""


class _Number:
    """A JSON number, kept as its text (only strings are read as documents)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


_JSON_WS = " \t\r\n"
_STRING_RUN = re.compile(r'[^"\\\x00-\x1f]*')
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_NUMBER_END = frozenset(" \r\n\t,]}")
_MAX_DEPTH = 512


def _skip_ws(s: str, i: int) -> int:
    """consumeWhitespace: the index of the next non-whitespace character; end of input fails."""
    n = len(s)
    while i < n and s[i] in _JSON_WS:
        i += 1
    if i >= n:
        raise _JSONError("unexpected end of file")
    return i


def _read_string(s: str, i: int) -> Tuple[str, int]:
    if s[i] != '"':
        raise _JSONError("expected a string")
    i += 1
    n = len(s)
    parts = []
    while True:
        m = _STRING_RUN.match(s, i)
        run = m.group()
        # Foundation's String(bytes:encoding:.utf8) drops a byte-order mark at the start of every
        # run of unescaped characters.
        parts.append(run[1:] if run.startswith("\ufeff") else run)
        i = m.end()
        if i >= n:
            raise _JSONError("unexpected end of file")
        c = s[i]
        if c == '"':
            return "".join(parts), i + 1
        if c != "\\":
            raise _JSONError("unescaped control character")
        if i + 1 >= n:
            raise _JSONError("unexpected end of file")
        e = s[i + 1]
        i += 2
        if e in _ESCAPES:
            parts.append(_ESCAPES[e])
            continue
        if e != "u":
            raise _JSONError("bad escape")
        if not _HEX4.fullmatch(s, i, i + 4):
            raise _JSONError("bad hex digits")
        code = int(s[i:i + 4], 16)
        i += 4
        if code & 0xFC00 == 0xD800:
            if s[i:i + 2] != "\\u" or not _HEX4.fullmatch(s, i + 2, i + 6):
                raise _JSONError("expected a low surrogate")
            low = int(s[i + 2:i + 6], 16)
            if low & 0xFC00 != 0xDC00:
                raise _JSONError("expected a low surrogate")
            i += 6
            code = 0x10000 + (code - 0xD800) * 0x400 + (low - 0xDC00)
        elif code & 0xF800 == 0xD800:
            raise _JSONError("lone low surrogate")
        parts.append(chr(code))


def _read_scalar(s: str, i: int) -> Tuple[Any, int]:
    c = s[i]
    if c == '"':
        return _read_string(s, i)
    for word, value in (("true", True), ("false", False), ("null", None)):
        if c == word[0]:
            if s.startswith(word, i):
                return value, i + len(word)
            raise _JSONError("bad literal")
    if c == "-" or "0" <= c <= "9":
        m = _NUMBER.match(s, i)
        if m is None:
            raise _JSONError("bad number")
        end = m.end()
        if end < len(s) and s[end] not in _NUMBER_END:
            raise _JSONError("bad number")
        text = m.group()
        # NSNumber.fromJSONNumber: integers in Int64 / UInt64, else Decimal or a finite Double;
        # only a value beyond Double's range (which Decimal cannot hold either) is refused.
        if math.isinf(float(text)):
            raise _JSONError("number not representable")
        return _Number(text), end
    raise _JSONError("unexpected character")


def _parse_json(s: str) -> Any:
    """JSONParser.parse of swift-corelibs-foundation: objects as `_Object`, numbers as `_Number`.
    Raises _JSONError where Swift throws."""
    i = _skip_ws(s, 0)
    stack: List[list] = []  # [container, key]
    while True:
        # A value starts at s[i] (whitespace skipped).
        c = s[i]
        value: Any
        if c == "{" or c == "[":
            if len(stack) >= _MAX_DEPTH:
                raise _JSONError("too deeply nested")
            i = _skip_ws(s, i + 1)
            if c == "{":
                if s[i] == "}":
                    value, i = _Object(), i + 1
                else:
                    key, i = _read_string(s, i)
                    i = _skip_ws(s, i)
                    if s[i] != ":":
                        raise _JSONError("expected ':'")
                    i = _skip_ws(s, i + 1)
                    stack.append([_Object(), key])
                    continue
            else:
                if s[i] == "]":
                    value, i = [], i + 1
                else:
                    stack.append([[], None])
                    continue
        else:
            value, i = _read_scalar(s, i)
        # Attach the value to its parent, closing every container that ends here.
        while True:
            if not stack:
                while i < len(s):
                    if s[i] not in _JSON_WS:
                        raise _JSONError("trailing characters")
                    i += 1
                return value
            frame = stack[-1]
            container = frame[0]
            is_object = isinstance(container, _Object)
            if is_object:
                container.append((frame[1], value))
            else:
                container.append(value)
            i = _skip_ws(s, i)
            close = "}" if is_object else "]"
            if s[i] == close:
                value, i = container, i + 1
                stack.pop()
                continue
            if s[i] != ",":
                raise _JSONError("expected ',' or a closing bracket")
            i = _skip_ws(s, i + 1)
            if s[i] == close:  # Foundation accepts a trailing comma
                value, i = container, i + 1
                stack.pop()
                continue
            if is_object:
                key, i = _read_string(s, i)
                i = _skip_ws(s, i)
                if s[i] != ":":
                    raise _JSONError("expected ':'")
                i = _skip_ws(s, i + 1)
                frame[1] = key
            break


def _json_line_text(line: str) -> str:
    """The JSON text JSONSerialization parses for one line's UTF-8 bytes: a byte-order mark
    skipped, UTF-16 / UTF-32 detected from NUL bytes (as Foundation's detectEncoding)."""
    if "\x00" not in line[:4]:
        # No NUL in the first 4 bytes: UTF-8, after a BOM when the line has >= 4 bytes.
        if line.startswith("\ufeff") and len(line.encode("utf-8")) >= 4:
            return line[1:]
        return line
    b = line.encode("utf-8")
    n = len(b)
    encoding, skip = "utf-8", 0
    if n >= 4:
        b0, b1, b2, b3 = b[0], b[1], b[2], b[3]
        if b.startswith(b"\xef\xbb\xbf"):
            skip = 3
        elif b.startswith(b"\x00\x00\xfe\xff"):
            encoding, skip = "utf-32-be", 4
        elif b.startswith(b"\xff\xfe\x00\x00"):
            encoding, skip = "utf-32-le", 4
        elif b.startswith(b"\xff\xfe"):
            encoding, skip = "utf-16-le", 2
        elif b.startswith(b"\xfe\xff"):
            encoding, skip = "utf-16-be", 2
        elif b0 == 0 and b1 == 0 and b2 == 0:
            encoding = "utf-32-be"
        elif b1 == 0 and b2 == 0 and b3 == 0:
            encoding = "utf-32-le"
        elif b0 == 0 and b2 == 0:
            encoding = "utf-16-be"
        elif b1 == 0 and b3 == 0:
            encoding = "utf-16-le"
    elif n >= 2:
        if b[0] == 0:
            encoding = "utf-16-be"
        elif b[1] == 0:
            encoding = "utf-16-le"
    try:
        return b[skip:].decode(encoding)
    except UnicodeDecodeError:
        raise _JSONError("cannot convert to UTF-8") from None


def _canonical(s: str) -> str:
    return s if s.isascii() else unicodedata.normalize("NFD", s)


def _field(obj: "_Object", name: str) -> Tuple[bool, Any]:
    """`dict[name]` of the Swift dictionary: the last pair whose key is canonically equivalent."""
    want = _canonical(name)
    found, value = False, None
    for k, v in obj:
        if k == name or _canonical(k) == want:
            found, value = True, v
    return found, value


# MARK: - Documents

@dataclasses.dataclass(frozen=True, eq=False)
class Document:
    """One corpus document: `text` to tokenise, or `tokens` already tokenised (int32 [n]).

    `source` is `path`, `path:line` (JSON Lines) or `path#n` (n-th document of a file); `key` the
    128-bit content key (XXH3-128), high 64 bits first."""

    text: Optional[str]
    tokens: Optional[np.ndarray]
    source: str
    key: int

    @property
    def key_hex(self) -> str:
        """The key as a cache stores it: 32 lowercase hex digits, high word first."""
        return _key_hex(self.key)

    @property
    def key_words(self) -> Tuple[int, int]:
        """(high, low) 64-bit halves of the key."""
        return self.key >> 64, self.key & _MASK64

    def __repr__(self) -> str:
        what = f"text={self.text[:40]!r}" if self.text is not None else f"tokens=[{len(self.tokens)}]"
        return f"Document({what}, source={self.source!r}, key={self.key_hex})"


def _text_document(text: str, source: str) -> Document:
    return Document(text, None, source, document_key(text))


def _token_document(ids: np.ndarray, source: str) -> Document:
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    ids.setflags(write=False)
    return Document(None, ids, source, document_key(ids))


def read_documents(path: PathLike, text_field: str = "text", blank_line_documents: bool = False,
                   end_of_text_id: Optional[int] = None) -> List[Document]:
    """The documents of one corpus file in order; empty documents are skipped (readDocuments).

    - Parameters:
      - text_field: JSON Lines: the string field holding a document's text.
      - blank_line_documents: plain text: documents are separated by blank lines (else one per file).
      - end_of_text_id: token files: the id that ends documents (kept with the document it ends);
        None makes a token file one document. The teacher pass passes the tokenizer's id.
    - Returns: `Document`s; token documents hold int32 [n] ids.
    - Raises: `CorpusError` naming the file (and line or byte) of an unsupported, unreadable,
      non-UTF-8, malformed JSON Lines or inconsistent token file.
    """
    path = os.fspath(path)
    kind = corpus_file_kind(path)
    if kind is None:
        raise CorpusError.unsupported_file(path)
    if kind == "tokens":
        ids = _read_token_file(path)
        high = np.flatnonzero(ids >= 1 << 31)
        if high.size:
            raise CorpusError.bad_token_file(path, f"token {int(high[0])} is above 2^31-1")
        ids = ids.astype(np.int32)
        if end_of_text_id is None:
            return [] if ids.size == 0 else [_token_document(ids, path)]
        docs: List[Document] = []
        start = 0
        for i in np.flatnonzero(ids == int(end_of_text_id)).tolist():
            if i + 1 > start:
                docs.append(_token_document(ids[start:i + 1], f"{path}#{len(docs)}"))
            start = i + 1
        if start < ids.size:
            docs.append(_token_document(ids[start:], f"{path}#{len(docs)}"))
        return docs
    text = _read_utf8(path)
    if kind == "text":
        if not blank_line_documents:
            return [_text_document(text, path)] if text else []
        return [_text_document(t, f"{path}#{n}") for n, t in enumerate(split_at_blank_lines(text))]
    docs = []
    for line_no, line in enumerate(_swift_lines(text), start=1):
        if _is_blank(line):
            continue
        try:
            value = _parse_json(_json_line_text(line))
        except _JSONError:
            raise CorpusError.bad_json_line(path, line_no, "invalid JSON") from None
        if isinstance(value, list) and not isinstance(value, _Object):
            raise CorpusError.bad_json_line(path, line_no, "not an object")
        if not isinstance(value, _Object):
            raise CorpusError.bad_json_line(path, line_no, "invalid JSON")  # a fragment
        found, t = _field(value, text_field)
        if not found or not isinstance(t, str):
            raise CorpusError.missing_text_field(path, line_no, text_field)
        if t:
            docs.append(_text_document(t, f"{path}:{line_no}"))
    return docs


# MARK: - Token stream and windows

@dataclasses.dataclass(frozen=True)
class Window:
    """One training window of the token stream (Windows.swift).

    `index` is its place in the corpus's window order; inputs are `ids[start : start + length]`
    and next tokens `ids[start + 1 : start + length + 1]`; `document_key` (128-bit int) and
    `document_offset` (tokens) name the document the window starts in."""

    index: int
    start: int
    length: int
    document_key: int
    document_offset: int

    @property
    def key_hex(self) -> str:
        """32 lowercase hex digits, high word first (`SequenceInfo.document_key`)."""
        return _key_hex(self.document_key)


class TokenStream:
    """The tokenised corpus as one stream: documents back to back, text documents followed by the
    end-of-text id, token documents as they are.

    - `ids`: int32 [tokens], read-only.
    - `document_starts`: int64 [documents], ascending start of each document in `ids`.
    - `document_keys`: list of [documents] 128-bit keys (ints).
    """

    def __init__(self) -> None:
        self._chunks: List[np.ndarray] = []
        self._size = 0
        self._starts: List[int] = []
        self._keys: List[int] = []
        self._ids: Optional[np.ndarray] = None
        self._starts_array: Optional[np.ndarray] = None

    def append(self, ids: Union[np.ndarray, Sequence[int]], key: Union[int, str, Tuple[int, int]],
               end_of_text: Optional[int] = None) -> None:
        """Appends one document's ids (shape [n], int32 values); `end_of_text` is appended after
        them when given. A document with no ids and no end-of-text id is not recorded."""
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise ValueError(f"ids must be one-dimensional, not of shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"ids must be integers, not {arr.dtype}")
        if arr.size and (int(arr.min()) < -(1 << 31) or int(arr.max()) >= 1 << 31):
            raise ValueError("ids must fit in int32")
        arr = arr.astype(np.int32, copy=False)
        if arr.size == 0 and end_of_text is None:
            return
        self._starts.append(self._size)
        self._keys.append(_key_int(key))
        if arr.size:
            self._chunks.append(arr)
            self._size += int(arr.size)
        if end_of_text is not None:
            self._chunks.append(np.asarray([end_of_text], dtype=np.int32))
            self._size += 1
        self._ids = None
        self._starts_array = None

    @property
    def ids(self) -> np.ndarray:
        """All ids, documents back to back. int32 [tokens], read-only."""
        if self._ids is None:
            ids = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int32)
            ids = np.ascontiguousarray(ids, dtype=np.int32)
            ids.setflags(write=False)
            self._chunks = [ids] if ids.size else []
            self._ids = ids
        return self._ids

    @property
    def document_starts(self) -> np.ndarray:
        """Start of each document in `ids`, ascending. int64 [documents], read-only."""
        if self._starts_array is None:
            a = np.asarray(self._starts, dtype=np.int64)
            a.setflags(write=False)
            self._starts_array = a
        return self._starts_array

    @property
    def document_keys(self) -> List[int]:
        """128-bit content key of each document, [documents] ints (a copy)."""
        return list(self._keys)

    @property
    def document_key_words(self) -> np.ndarray:
        """Keys as (high, low) words. uint64 [documents, 2]."""
        return np.asarray([(k >> 64, k & _MASK64) for k in self._keys], dtype=np.uint64).reshape(-1, 2)

    @property
    def tokens(self) -> int:
        return self._size

    @property
    def documents(self) -> int:
        return len(self._starts)

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"TokenStream({self._size} tokens, {len(self._starts)} documents)"

    def window_count(self, context: int) -> int:
        """Windows of `context` tokens: ceil((n - 1) / context) for n tokens (each window needs
        the token after it as its last target)."""
        context = int(context)
        if context <= 0:
            raise ValueError("context must be positive")
        n = self._size
        return 0 if n < 2 else (n - 1 + context - 1) // context

    def window(self, w: int, context: int) -> Window:
        """Window `w`: start `w * context`, length `min(context, n - 1 - start)` (only the last
        window is short), and the document it starts in. IndexError outside the windows."""
        w, context = int(w), int(context)
        if context <= 0:
            raise ValueError("context must be positive")
        start = w * context
        length = min(context, self._size - 1 - start)
        if w < 0 or length <= 0:
            raise IndexError(f"window {w} out of range")
        d = int(np.searchsorted(self.document_starts, start, side="right")) - 1
        return Window(w, start, length, self._keys[d], start - int(self.document_starts[d]))

    def window_tokens(self, w: int, context: int) -> Tuple[np.ndarray, np.ndarray]:
        """(inputs, next tokens) of window `w`: int32 [length] each, views of `ids`."""
        win = self.window(w, context)
        ids = self.ids
        return ids[win.start:win.start + win.length], ids[win.start + 1:win.start + win.length + 1]

    def windows(self, context: int, partition: Optional["Partition"] = None) -> Iterator[Window]:
        """The windows of the corpus (or of one partition), in order."""
        total = self.window_count(context)
        span = range(total) if partition is None else partition.window_range(total)
        for w in span:
            yield self.window(w, context)


def tokenize_corpus(paths: Sequence[PathLike], encode: Callable[[str], Any], end_of_text_id: int,
                    vocabulary_size: int, text_field: str = "text",
                    blank_line_documents: bool = False) -> TokenStream:
    """The token stream of corpus arguments as the teacher pass builds it (TeacherPassJob.tokenize).

    Arguments are expanded with `expand_corpus_paths`; documents are read in file order, token
    files cut at `end_of_text_id`; text is encoded with `encode` (the caller's tokenizer, without
    special tokens, returning ids or an object with `.ids`) and followed by `end_of_text_id`.

    - Raises: `CorpusError` for the corpus's files, and "token id X is outside the model's
      vocabulary of V" (naming the document) for a token-file id >= `vocabulary_size`; ids from
      `encode` outside [0, V) are refused the same way (Swift refuses such a tokenizer up front).
    """
    V = int(vocabulary_size)
    eot = int(end_of_text_id)
    stream = TokenStream()
    for path in expand_corpus_paths(paths):
        for doc in read_documents(path, text_field=text_field, blank_line_documents=blank_line_documents,
                                  end_of_text_id=eot):
            if doc.text is not None:
                out = encode(doc.text)
                out = getattr(out, "ids", out)
                ids = np.asarray(out, dtype=np.int64).reshape(-1)
                bad = np.flatnonzero((ids < 0) | (ids >= V))
                if bad.size:
                    raise CorpusError.token_out_of_vocabulary(int(ids[bad[0]]), V, doc.source)
                stream.append(ids.astype(np.int32), doc.key, eot)
            else:
                ids = doc.tokens
                bad = np.flatnonzero((ids < 0) | (ids.astype(np.int64) >= V))
                if bad.size:
                    raise CorpusError.token_out_of_vocabulary(int(ids[bad[0]]), V, doc.source)
                stream.append(ids, doc.key, None)
    return stream


def _token_id(tokenizer: Any, token: str) -> Optional[int]:
    """The id of a token written as in the tokenizer file, added tokens first, or None."""
    backend = tokenizer if hasattr(tokenizer, "token_to_id") else getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "token_to_id"):
        found = backend.token_to_id(token)
        return None if found is None else int(found)
    vocab = tokenizer.get_vocab()
    found = vocab.get(token)
    return None if found is None else int(found)


def end_of_text_id(tokenizer: Any, named: Optional[str] = None, *, where: Optional[str] = None) -> int:
    """The id that joins documents: the token `named`, else the first of
    `END_OF_TEXT_CANDIDATES` the tokenizer has (TeacherPassJob.endOfText).

    `tokenizer` is a `tokenizers.Tokenizer`, a transformers `PreTrainedTokenizerBase`, or the path
    of a `tokenizer.json`; `where` names it in errors (default: the path, its `name_or_path`, else
    "tokenizer").

    - Raises: `CorpusError` as Swift words it: for an unknown `named` token, and when no
      candidate is a token.
    """
    if isinstance(tokenizer, (str, os.PathLike)):
        import tokenizers

        where = os.fspath(tokenizer) if where is None else where
        tokenizer = tokenizers.Tokenizer.from_file(os.fspath(tokenizer))
    candidates = [named] if named is not None else list(END_OF_TEXT_CANDIDATES)
    for c in candidates:
        found = _token_id(tokenizer, c)
        if found is not None:
            return found
    place = where if where is not None else (getattr(tokenizer, "name_or_path", None) or "tokenizer")
    if named is not None:
        raise CorpusError(f'{place}: --eot-token "{named}" is not a token of this tokenizer (give the token\'s '
                          "text, such as </s>, not its id)", "failed", place)
    raise CorpusError.no_end_of_text_token(place)


# MARK: - Partitions

def _swift_int(text: Optional[str]) -> Optional[int]:
    """Swift's `Int(text)`: optional sign and ASCII digits, within Int64; else None."""
    if text is None or not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    v = int(text)
    return v if -(1 << 63) <= v < 1 << 63 else None


@dataclasses.dataclass(frozen=True)
class Partition:
    """Part `index` of `count` of a corpus's windows (Partition.swift): part i of N owns windows
    [i*W//N, (i+1)*W//N), so parts are disjoint, cover every window and differ by at most one."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise CorpusError.bad_partition(f"index {self.index} of {self.count}: need 0 <= i < N")

    @classmethod
    def parse(cls, text: str) -> "Partition":
        """Parses "i/N" (as Swift: empty pieces between slashes are ignored)."""
        parts = [p for p in text.split("/") if p]
        i = _swift_int(parts[0]) if len(parts) == 2 else None
        n = _swift_int(parts[1]) if len(parts) == 2 else None
        if i is None or n is None:
            raise CorpusError.bad_partition(f'"{text}" is not of the form i/N')
        return cls(i, n)

    @classmethod
    def from_environment(cls, env: Optional[Mapping[str, str]] = None,
                         kubernetes_count: Optional[int] = None) -> Optional["Partition"]:
        """The partition a scheduler assigned, or None: Slurm job arrays (SLURM_ARRAY_TASK_ID minus
        SLURM_ARRAY_TASK_MIN, of SLURM_ARRAY_TASK_COUNT) win over Kubernetes Indexed Jobs
        (JOB_COMPLETION_INDEX of `kubernetes_count`). `env` defaults to `os.environ`."""
        env = os.environ if env is None else env
        task = env.get("SLURM_ARRAY_TASK_ID")
        if task is not None:
            i, n = _swift_int(task), _swift_int(env.get("SLURM_ARRAY_TASK_COUNT"))
            if i is None or n is None:
                raise CorpusError.bad_partition(f"SLURM_ARRAY_TASK_ID={task} needs a numeric SLURM_ARRAY_TASK_COUNT")
            base = _swift_int(env.get("SLURM_ARRAY_TASK_MIN"))
            return cls(i - (base if base is not None else 0), n)
        idx = env.get("JOB_COMPLETION_INDEX")
        if idx is not None:
            i = _swift_int(idx)
            if i is None:
                raise CorpusError.bad_partition(f"JOB_COMPLETION_INDEX={idx} is not a number")
            if kubernetes_count is None:
                raise CorpusError.bad_partition(
                    "JOB_COMPLETION_INDEX is set: give the number of completions (--partition-count)")
            return cls(i, int(kubernetes_count))
        return None

    def window_range(self, total: int) -> range:
        """The windows this part owns out of `total`."""
        return range(self.index * total // self.count, (self.index + 1) * total // self.count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


# MARK: - Fingerprints

def _file_hash(path: str) -> int:
    return _xxh3(_read_bytes(path))


def _name_order(names: Sequence[str]) -> List[str]:
    """Swift's `[String].sorted()`: Unicode scalar order of the NFC forms."""
    return sorted(names, key=lambda s: unicodedata.normalize("NFC", s))


def teacher_fingerprint(model_dir: PathLike) -> str:
    """"xxh3:" + 16 hex digits: XXH3-64 combined over the XXH3-64 of `config.json` and of every
    `*.safetensors` file in name order (the Swift rule; a renamed directory keeps it). Without
    safetensors, the `pytorch_model*.bin` files take their place (see the module notes).

    - Raises: `CorpusError` "cannot read" naming a missing or unreadable file."""
    directory = os.fspath(model_dir)
    try:
        names = os.listdir(directory)
    except OSError:
        names = []
    weights = _name_order([n for n in names if n.endswith(".safetensors")])
    if not weights:
        weights = _name_order([n for n in names if n.startswith("pytorch_model") and n.endswith(".bin")])
    parts = [_file_hash(os.path.join(directory, n)) for n in ["config.json", *weights]]
    return _render(_combine(parts))


#: The files that define a SentencePiece tokenizer, in name order, when present.
SENTENCEPIECE_FILES = ("added_tokens.json", "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json")


def tokenizer_fingerprint(path_or_dir: PathLike) -> str:
    """"xxh3:" + 16 hex digits of a tokenizer: XXH3-64 of `tokenizer.json` (the Swift rule; a
    directory holding one uses it), or for a SentencePiece tokenizer (its directory, or its
    `tokenizer.model`) XXH3-64 combined over the XXH3-64 of `SENTENCEPIECE_FILES` present.

    - Raises: `CorpusError` "cannot read" for a missing file or a directory with neither."""
    path = os.fspath(path_or_dir)
    directory = None
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "tokenizer.json")):
            return _render(_file_hash(os.path.join(path, "tokenizer.json")))
        directory = path
    elif os.path.basename(path) == "tokenizer.model":
        directory = os.path.dirname(path) or "."
    if directory is None:
        return _render(_file_hash(path))
    present = [n for n in SENTENCEPIECE_FILES if os.path.isfile(os.path.join(directory, n))]
    if "tokenizer.model" not in present:
        raise CorpusError.unreadable(path, "no tokenizer.json or tokenizer.model")
    return _render(_combine([_file_hash(os.path.join(directory, n)) for n in present]))


def corpus_fingerprint(stream: TokenStream, context: int) -> str:
    """"xxh3:" + 16 hex digits of the exact windows a cache holds: XXH3-64 combined over the
    XXH3-64 of the ids (int32 little-endian), the combined (high, low) words of every document
    key, and `context`."""
    ids = _xxh3(np.ascontiguousarray(stream.ids, dtype="<i4").tobytes())
    words: List[int] = []
    for k in stream.document_keys:
        words += [k >> 64, k & _MASK64]
    return _render(_combine([ids, _combine(words), int(context)]))
