"""Token ids on CLIP's real vocabulary, from transformers' CLIPTokenizer, for Sluice's tokenizer test.

Run from the repository root:  python3 tools/reference/make_clip_vocab_ids.py
Needs transformers 5.23 and `pip install --no-deps open-clip-torch==3.3.0` (which ships CLIP's merges as
open_clip/bpe_simple_vocab_16e6.txt.gz). The vocabulary is built from that file as open_clip's SimpleTokenizer
builds it (256 byte characters, the same with </w>, 48,894 merges, <|startoftext|>, <|endoftext|>: 49,408 tokens,
the ids of openai/clip-vit-large-patch14 and FLUX.1's tokenizer/), written as vocab.json + merges.txt and loaded
with CLIPTokenizer. Writes Tests/Fixtures/clip_vocab_ids.json: 300 strings and their ids (with BOS and EOS). The test
reads the .gz from the installed package (.ci/run installs it; SLUICE_CLIP_BPE names it).
"""
import gzip
import importlib.util
import json
import os
import random
import sys
import tempfile

from transformers import CLIPTokenizer

sys.path.insert(0, os.path.dirname(__file__))
from make_flux_tokenizers import bytes_to_unicode  # noqa: E402  (CLIP's byte → character table)

BPE = os.path.join(importlib.util.find_spec("open_clip").submodule_search_locations[0], "bpe_simple_vocab_16e6.txt.gz")


def load(folder):
    merges = gzip.open(BPE).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = bytes_to_unicode()
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(folder)


def strings():
    words = ["a", "red", "fox", "astronaut", "riding", "horse", "photograph", "cinematic", "lighting", "8k", "the",
             "It's", "we'll", "DON'T", "I'm", "they've", "she'd", "Hello", "world", "masterpiece", "best", "quality",
             "ultra-detailed", "bokeh", "35mm", "portrait", "trending", "artstation", "greg", "rutkowski", "octane",
             "render", "unreal", "engine", "hyperrealistic", "watercolor", "anime", "girl", "cyberpunk", "city"]
    other = ["Café", "Cafe\u0301", "naïve", "Straße", "東京タワー", "一只狐狸", "서울", "Ελλάδα", "Москва", "مرحبا", "हिन्दी",
             "∑", "≤", "€100", "½", "²", "Ⅻ", "٣", "１２３", "ﬁ", "①", "™", "İ"]
    emoji = ["🦊", "🔥", "👨\u200d👩\u200d👧", "🇯🇵", "👍🏽", "❤️", "✨"]
    spaces = [" ", "  ", "\t", "\n", "\n\n", "\r\n", "\u3000", "\u00a0"]
    digits = ["0", "42", "1234567890", "3.14159", "2026-11-23", "1e-5", "0x1F"]
    punct = ["!", "?", "...", "—", "(", ")", "[", "]", "{", "}", "<", ">", "/", "\\", "\"", "'", "#", "@", "&", ",", ":"]
    fixed = ["", "a red fox", "<|startoftext|>a<|endoftext|>", "<|endoftext|><|endoftext|>", "   leading",
             "trailing   ", "x\n\n\ny", "!!?\n\nok", "a  b   c    d", "don't stop believin'",
             "a photo of an astronaut riding a horse on mars, highly detailed, 8k, trending on artstation",
             # AUTOMATIC1111's emphasis syntax and BREAK, as users type them (the tokenizer sees them raw in
             # diffusers; Sluice's chunker tokenizes the fragments between the brackets).
             "(masterpiece:1.2), ((best quality)), [blurry], (worst quality:0.8)", "\\(literal\\) [[x]]",
             "a cat BREAK a hat", "(red fox: 1.5 ) in (snow:0.7)",
             # A long prompt (past 77 tokens: the ids are not truncated here).
             ", ".join(["a highly detailed photograph of a red fox in the snow at golden hour"] * 8)]
    rng = random.Random(0)
    pools = [words, words, other, emoji, spaces, digits, punct]
    out = list(fixed)
    while len(out) < 300:
        parts = []
        for _ in range(rng.randint(1, 14)):
            parts.append(rng.choice(rng.choice(pools)))
            if rng.random() < 0.5:
                parts.append(" ")
        out.append("".join(parts))
    return out


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tok = load(tmp)
        cases = [{"text": s, "ids": tok(s).input_ids} for s in strings()]
    out = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Fixtures", "clip_vocab_ids.json")
    with open(out, "w", encoding="utf-8") as f:
        f.write('{"vocabulary": "bpe_simple_vocab_16e6.txt.gz (open-clip-torch 3.3.0)", "transformers": "5.23.0", "cases": [\n')
        f.write(",\n".join(json.dumps(c, ensure_ascii=False) for c in cases))
        f.write("\n]}\n")


if __name__ == "__main__":
    main()
