#!/usr/bin/env python3
"""Writes the tokenizer fixtures of Tests/TokenizersTests/Fixtures: small byte-level BPE
tokenizers trained here with the Hugging Face `tokenizers` library (no downloads) and the
library's own ids for a varied test set. Run by hand:

    /work/venv/bin/python tools/make_tokenizer_fixtures.py

Training text: the King James Bible (public domain, Debian's `bible-kjv` package, when
installed) plus synthetic multilingual, numeric and code-like lines generated below.
The Swift tests compare ids exactly and need none of these packages.
"""
import json
import os
import random
import subprocess
import sys

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "TokenizersTests", "Fixtures")

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Short phrases written for these fixtures (no third-party text).
MULTILINGUAL = [
    "Le café est très bon, n'est-ce pas ? Où est la gare ?",
    "Ärger über Straßenbahnen: Öl, Übel, Grüße aus München.",
    "El niño comió piñas y jamón en la montaña.",
    "Привет, мир! Как дела? Это тестовая строка.",
    "Γειά σου κόσμε, αυτό είναι ένα τεστ.",
    "日本語のテキストです。東京は大きい都市です。",
    "中文测试句子，包括标点符号。北京欢迎你！",
    "한국어 문장입니다. 안녕하세요!",
    "مرحبا بالعالم، هذا نص تجريبي.",
    "שלום עולם, זה מבחן.",
    "नमस्ते दुनिया, यह एक परीक्षण है।",
    "สวัสดีชาวโลก นี่คือการทดสอบ",
    "Tiếng Việt có dấu: người, được, những.",
    "emoji 😀 😃 🎉 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ ✨",
    "math: ∑ x² ≤ ∞, α + β = γ, √2 ≈ 1.414",
    "quotes “curly” ‘single’ — dash – en … ellipsis",
]

WORDS = ("the of and to in is was for that with as on by at from this be are or have an "
         "not but which one all were when there can more if will no out so what time up "
         "about into than them only other new some could these two may first then do any "
         "like my now over such our man me even most made after also did many before must "
         "through back years where much your way well down should because each just those "
         "people how too little state good very make world still own see men work long get "
         "here between both life being under never day same another know while last might "
         "us great old year off come since against go came right used take three").split()


def synthetic_lines(rng, n):
    lines = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            words = [rng.choice(WORDS) for _ in range(rng.randint(5, 18))]
            words[0] = words[0].capitalize()
            lines.append(" ".join(words) + rng.choice([".", "!", "?", ";", ":"]))
        elif kind == 1:
            lines.append(rng.choice(MULTILINGUAL))
        elif kind == 2:
            lines.append(f"In {rng.randint(1000, 2100)} there were {rng.randint(0, 10**7)} items, "
                         f"{rng.random() * 100:.2f}% of {rng.randint(1, 999)}.")
        elif kind == 3:
            name = rng.choice(WORDS)
            lines.append(f"def {name}_{i}(x, y):\n    return x * {rng.randint(2, 99)} + y  # {name}\n")
        elif kind == 4:
            lines.append(rng.choice(["I'm", "You're", "We've", "She'll", "It's", "They'd", "DON'T",
                                     "WE'LL", "I'VE"]) + " " + " ".join(rng.choice(WORDS) for _ in range(6)))
        else:
            lines.append("\t" + " " * rng.randint(0, 8) + rng.choice(WORDS) + "\n" * rng.randint(1, 3))
    return lines


def training_text():
    rng = random.Random(1234)
    lines = synthetic_lines(rng, 6000)
    try:
        kjv = subprocess.run(["bible", "gen1:1-rev22:21"], capture_output=True, text=True,
                             check=True).stdout
        lines.extend(kjv.splitlines()[:12000])
    except (OSError, subprocess.CalledProcessError):
        print("note: `bible` (Debian bible-kjv) not found; training on synthetic text only",
              file=sys.stderr)
    rng.shuffle(lines)
    return lines


SPECIALS_LLAMA3 = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>"] + [f"<|reserved_special_token_{i}|>" for i in range(4)]


def train(pre_tokenizer, vocab_size, specials, ignore_merges=False, normalizer=None):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(training_text(), trainer)
    return tok


def make_gpt2():
    tok = train(pre_tokenizers.ByteLevel(add_prefix_space=False), 2000, ["<|endoftext|>"])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def make_gpt2_prefix():
    """GPT-2 style with add_prefix_space, an NFC normalizer and added tokens exercising
    lstrip / rstrip / single_word / normalized."""
    tok = train(pre_tokenizers.ByteLevel(add_prefix_space=True), 1200, ["<|endoftext|>"],
                normalizer=normalizers.Sequence([normalizers.NFC()]))
    tok.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", pair="$A <|endoftext|> $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", tok.token_to_id("<|endoftext|>"))])
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, special=True, normalized=False)])
    tok.add_tokens([
        AddedToken("[SEP]", rstrip=True, normalized=False),
        AddedToken("word", single_word=True, normalized=True),
        AddedToken("café", normalized=True),          # matched after NFC
        AddedToken("hi there", normalized=False),     # contains a space
        AddedToken("é", normalized=False),            # a lone byte-level char when decoding
    ])
    return tok


def make_llama3(legacy_merges=False):
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok = train(pre, 2500, SPECIALS_LLAMA3, ignore_merges=True)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
            special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))]),
    ])
    tok.add_tokens([AddedToken("<tool_call>", normalized=False, special=False)])
    return tok


def test_texts():
    texts = [
        "", " ", "  ", "\n", "\n\n", "\r\n", " \n ", "\t", "a", "Hello world",
        "Hello, world! How are you today?",
        "In the beginning God created the heaven and the earth.",
        "I'm sure you're right, they've said we'll see; he'd go.",
        "I'M SURE YOU'RE RIGHT, THEY'VE SAID WE'LL SEE; HE'D GO. IT'S DON'T",
        "x'S 'ſ 'Ll 'rE 'Ve", "don't'''s ''", "'s", "' s",
        "1 12 123 1234 12345 123456 1234567 3.14159 1,000,000 0x1F",
        "١٢٣٤٥ ൧൨൩ ²³¹ ½ Ⅻ",
        "   leading spaces", "trailing spaces   ", "many     inner      spaces",
        "tabs\tand\t\ttabs", "lines\nand\n\nmore\n\n\nlines\n", "mixed \t \n \t\n  x",
        "\r\n\r\nwindows\r\nlines", " \n\n \n x", "x  \n", "end with space ",
        "Le café est très bon.", "cafe\u0301 (decomposed)", "e\u0301\u0302\u0303 stacked marks",
        "\u0301 leading mark", "Ａｂｃ full width", "Привет, мир!", "日本語のテキスト",
        "中文，标点。", "مرحبا بالعالم", "שלום", "नमस्ते", "สวัสดี", "한국어",
        "😀", "👨‍👩‍👧‍👦 family", "🏳️‍🌈 flag", "👍🏽 thumbs", "❤️ heart", "emoji😀in😀words",
        "a\u200db zero width joiner", "\u00a0nbsp\u00a0here", "\u3000ideographic space",
        "\u2028line sep\u2029para", "\u0085next line", "\x0bvt\x0cff",
        "def f(x):\n    return x * 2  # comment\n", "if (a && b) { c(); } else { d[0] = 'e'; }",
        "https://example.com/path?q=1&r=2#frag", "user@example.org", "$100.00 €5 £3 ¥7",
        "!!!???...,,,;;;", "___---+++===", "\\ / | < > [ ] { }",
        "<|begin_of_text|>", "<|begin_of_text|>Hello<|end_of_text|>",
        "text <|eot_id|> more text", "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
        "<|begin_of_text|><|begin_of_text|>", "<|begin_of_text", "|>", "<|endoftext|>",
        "a<|endoftext|>b", "x <|endoftext|> y", "<tool_call>call()</tool_call>",
        "<mask>", "a <mask> b", "a    <mask>b", "x[SEP]   y", "[SEP]", "word", "a word here",
        "words wordy sword word.", "café and café", "say hi there", "hi therex", "é",
        "\ufffd replacement", "\U0001F600\U0001F601\U0001F602", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters",
        "ǅungla ǈ titlecase", "ÀÉÎÕÜ àéîõü", "ß ẞ ﬁ ﬂ", "İstanbul ı",
        "x" * 300, "ab" * 120, " " * 50 + "x", "\n" * 20, "9" * 40,
        # Unicode 17 scalars are unassigned for the library's regex engine (Unicode 16 data).
        "a\U000323B0b CJK Ext J", "x\U00010D40y Garay digit", "\U0001D2C0\U0001D2C1 Kaktovik",
    ]
    return texts


def fuzz_texts(n, seed):
    """Random strings over a palette that stresses the pre-tokenizer's character classes."""
    palette = (list("aAzZ  \t\n\r'sStTdDmMlLrReEvV09.,!?-_/\\\"") +
               ["é", "\u0301", "日", "本", "ß", "ſ", "١", "²", "½", "\u00a0", "\u2003", "\u3000",
                "😀", "\u200d", "👍", "🏽", "\u2028", "\x0b", "\x0c", "\x85", "<", "|", ">",
                "<|endoftext|>", "<|eot_id|>", "<mask>", "[SEP]", "word", "hi there", "café", "é",
                "<tool_call>", "Ω", "ǅ", "Ⅻ", "\ufeff", "\u00ad"])
    rng = random.Random(seed)
    return ["".join(rng.choice(palette) for _ in range(rng.randint(1, 24))) for _ in range(n)]


def random_code_point_texts(n, seed):
    """Random scalars from every plane (surrogates excluded), assigned or not."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(1, 20)):
            r = rng.random()
            if r < 0.3:
                cp = rng.randint(0x20, 0x7E)
            elif r < 0.4:
                cp = rng.choice([0x20, 0x09, 0x0A, 0x0D, 0x27])
            elif r < 0.8:
                cp = rng.randint(0x80, 0xFFFF)
            else:
                cp = rng.randint(0x10000, 0x10FFFF)
            chars.append(chr(0x41 if 0xD800 <= cp < 0xE000 else cp))
        out.append("".join(chars))
    return out


def decode_cases(tok, n, seed):
    """Random id sequences (partial UTF-8 sequences, added and special tokens included)."""
    rng = random.Random(seed)
    size = tok.get_vocab_size()
    cases = []
    for _ in range(n):
        ids = [rng.randrange(size) for _ in range(rng.randint(0, 8))]
        cases.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                      "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
    return cases


def write_variants(name, base, texts):
    """Pre-tokenizer variants of one tokenizer: the Swift test swaps `pre_tokenizer` in the
    base file. Covers every Split behaviour, `invert`, literal patterns and the Qwen 2 regex."""
    data = json.loads(base.to_str())
    qwen2 = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    variants = [{"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": qwen2}, "behavior": "Isolated", "invert": False}, byte_level]}]
    for behavior in ["Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"]:
        for invert in [False, True]:
            for pattern in [{"String": " "}, {"String": "ab"}]:
                variants.append({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": pattern, "behavior": behavior, "invert": invert},
                    dict(byte_level, add_prefix_space=invert)]})
    out = []
    for pre in variants:
        data["pre_tokenizer"] = pre
        tok = Tokenizer.from_str(json.dumps(data))
        out.append({"pre_tokenizer": pre, "cases": [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids}
                                                    for t in texts]})
    with open(os.path.join(OUT, f"{name}.variants.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer": f"{name}.tokenizer.json", "variants": out}, f, ensure_ascii=False,
                  separators=(",", ":"))
    print(f"{name} variants: {len(out)} pre-tokenizers x {len(texts)} texts")


def write_fixture(name, tok, texts, legacy_merges=False):
    tok.no_truncation()
    tok.no_padding()
    data = json.loads(tok.to_str())
    if legacy_merges:
        data["model"]["merges"] = [" ".join(m) for m in data["model"]["merges"]]
    path = os.path.join(OUT, f"{name}.tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
    # Reload from the file so the ids are those of exactly what is committed.
    tok = Tokenizer.from_file(path)
    cases = []
    for t in texts:
        plain = tok.encode(t, add_special_tokens=False).ids
        with_special = tok.encode(t, add_special_tokens=True).ids
        cases.append({"text": t, "ids": plain, "ids_with_special": with_special,
                      "decoded": tok.decode(plain, skip_special_tokens=False),
                      "decoded_skip_special": tok.decode(with_special, skip_special_tokens=True)})
    with open(os.path.join(OUT, f"{name}.cases.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer": f"{name}.tokenizer.json", "cases": cases,
                   "decode_cases": decode_cases(tok, 60, len(name))}, f, ensure_ascii=False,
                  separators=(",", ":"))
    print(f"{name}: vocab {tok.get_vocab_size()}, {len(cases)} cases")


def main():
    os.makedirs(OUT, exist_ok=True)
    texts = test_texts()
    llama3 = make_llama3()
    write_fixture("llama3", llama3, texts + fuzz_texts(300, 1) + random_code_point_texts(100, 5))
    write_fixture("llama3-legacy-merges", llama3, texts[:40] + fuzz_texts(60, 2), legacy_merges=True)
    write_fixture("gpt2", make_gpt2(), texts + fuzz_texts(300, 3) + random_code_point_texts(100, 6))
    write_fixture("gpt2-prefix", make_gpt2_prefix(), texts + fuzz_texts(300, 4) + random_code_point_texts(100, 7))
    write_variants("llama3", llama3, texts[:60] + fuzz_texts(40, 8))


if __name__ == "__main__":
    main()
