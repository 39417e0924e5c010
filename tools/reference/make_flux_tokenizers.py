"""Tiny FLUX-style tokenizers (CLIP BPE and T5 unigram) and the ids transformers gives for them.

Run from the repository root:  python3 tools/reference/make_flux_tokenizers.py
Needs transformers 5.23, tokenizers, sentencepiece, protobuf and (for CLIP's merges) open-clip-torch
(`pip install sentencepiece protobuf; pip install --no-deps open-clip-torch`).
Writes:
  Tests/Fixtures/tokenizers/clip-tiny/   vocab.json, merges.txt, tokenizer.json and openai/clip-vit-large-patch14's
                                         tokenizer_config.json / special_tokens_map.json (FLUX's tokenizer/ copies them)
  Tests/Fixtures/tokenizers/t5-tiny/     spiece.model, tokenizer.json, tokenizer_config.json, special_tokens_map.json
                                         as FLUX's tokenizer_2/ has them (100 extra ids)
  Tests/Fixtures/flux_tokenizer_ids.json ids for assorted strings, plain and padded

CLIP: the vocabulary is built as open_clip's SimpleTokenizer builds CLIP's (256 byte characters, the same with
`</w>`, then merges, then the two specials) from the first merges of CLIP's real list, so every merge is a real one.
T5: a unigram model trained here with sentencepiece. Its normalisation rules are nmt_nfkc's (decompiled from the
charsmap sentencepiece builds for nmt_nfkc) restricted to Latin, punctuation, letterlike, enclosed, CJK-symbol,
ligature and full/half-width blocks: sentencepiece compiles them into a real precompiled charsmap, a few tens of KB
instead of nmt_nfkc's 240 KB (it would be stored twice, in spiece.model and tokenizer.json).

The ids are transformers 5's (CLIPTokenizer is CLIPTokenizerFast there; T5Tokenizer is T5TokenizerFast, loaded from
tokenizer.json and, separately, from spiece.model alone). sentencepiece's own ids (what the slow T5Tokenizer gave)
are kept beside them where they differ. "variants" are other folders or edits of the saved tokenizer.json that the
Swift test repeats, listing only the strings whose ids differ from the main cases'; T5's come from the tokenizers
library reading the edited file (transformers 5 rebuilds T5's and CLIP's pipelines whatever the file declares, the
library does not).
"""
import copy
import gzip
import importlib.util
import json
import os
import random
import re
import shutil
import struct
import tempfile

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2
from tokenizers import Tokenizer
from transformers import CLIPTokenizer, T5Tokenizer

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FIX = os.path.join(ROOT, "Tests", "Fixtures")
CLIP_DIR = os.path.join(FIX, "tokenizers", "clip-tiny")
T5_DIR = os.path.join(FIX, "tokenizers", "t5-tiny")
CLIP_MERGES = 1500
T5_EXTRA_IDS = 100

# FLUX.1's tokenizer/ files as transformers 4 wrote them: the specials are AddedTokens with normalized=True in
# added_tokens_decoder, so transformers matches them in the lower-cased text too.
CLIP_SPECIAL = {"content": None, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
CLIP_CONFIG = {
    "add_prefix_space": False,
    "added_tokens_decoder": {
        str(CLIP_MERGES + 512): dict(CLIP_SPECIAL, content="<|startoftext|>", special=True),
        str(CLIP_MERGES + 513): dict(CLIP_SPECIAL, content="<|endoftext|>", special=True),
    },
    "bos_token": "<|startoftext|>",
    "clean_up_tokenization_spaces": True,
    "do_lower_case": True,
    "eos_token": "<|endoftext|>",
    "errors": "replace",
    "model_max_length": 77,
    "pad_token": "<|endoftext|>",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": "<|endoftext|>",
}
CLIP_SPECIAL_MAP = {
    "bos_token": dict(CLIP_SPECIAL, content="<|startoftext|>"),
    "eos_token": dict(CLIP_SPECIAL, content="<|endoftext|>"),
    "pad_token": "<|endoftext|>",
    "unk_token": dict(CLIP_SPECIAL, content="<|endoftext|>"),
}

STRINGS = [
    "a photo of a cat",
    "A PHOTOGRAPH of an Astronaut riding a horse on the Moon, high detail, 8k",
    "The quick brown fox's tail wasn't there; they'll say it's gone. We've seen I'm sure you'd agree.",
    "it's 5 o'clock; we're here, you've got mail, I'll go, he'd say, DON'T Don't",
    'hello, world!!! (really?) [yes] {no} <tag> "quoted" \'single\' #hash @at & 50% $9.99',
    "1234567890 3.14159 2026-11-23 12:00 1e-5 0x1F",
    "Café naïve façade — déjà vu, Straße, Ångström, ÉCOLE",
    "Cafe\u0301 and nai\u0308ve written decomposed",
    "ＦＵＬＬ－ＷＩＤＴＨ ｌｅｔｔｅｒｓ １２３！",
    "ligatures: ﬁne ﬂow ﬀ ﬃ ﬄ",
    "circled ① ② ⑩ ⓐ, roman Ⅻ ⅳ, super x² H₂O, fraction ½ ¼",
    "non\u00a0breaking\u00a0spaces and\u2009thin\u3000ideographic\u2002en",
    "tabs\tand\nnewlines\r\nwindows\x0bvt\x0cff",
    "   leading and trailing   ",
    "a  b   c    d",
    "emoji 🦊🔥🌲 👍🏽 ❤️ 👨\u200d👩\u200d👧 🇯🇵",
    "一只红色的狐狸在雪地里奔跑",
    "東京タワー 서울 Ελλάδα Москва مرحبا हिन्दी",
    "ｶﾀｶﾅ halfwidth katakana ﾞ",
    "x<extra_id_3>y",
    "x <extra_id_3> y <extra_id_0>",
    "<extra_id_99><extra_id_100>",
    "<|startoftext|>hi<|endoftext|>",
    "<|ENDOFTEXT|> shouting",
    "</s> and <pad> and <unk> in text",
    "",
    " ",
    "\n\t ",
    "zero\u200bwidth\u200djoiner soft\u00adhyphen",
    "control\u0007bell and \u0000nul",
    "replacement \ufffd char",
    "İstanbul ΣΊΣΥΦΟΣ ß ǅ ﬅ",
    "™ ℃ № ㎏ ㈱ ℌ",
    "‘curly’ “quotes” … – — ‐ ‹›",
    "hi! wow!! a ! b",
    "path/to/file.png C:\\Windows\\ https://example.com/a?b=c&d=e",
    "cinematic lighting, ultra-detailed, 35mm film grain, bokeh, golden hour, by greg rutkowski and alphonse mucha",
    "a red fox " * 60,
    "word " * 300,
]
# (text index, max_length) pairs whose padded/truncated forms are recorded.
CLIP_PADDED = [(0, 77), (2, 77), (16, 77), (25, 77), (37, 77), (38, 77), (0, 5), (34, 10)]
T5_PADDED = [(0, 77), (1, 77), (19, 16), (25, 8), (37, 77), (38, 512), (38, 256), (0, 3)]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def copy_compact(path, folder):
    """tokenizer.json as transformers saved it, without the indentation (a third of its size)."""
    with open(path, encoding="utf-8") as f:
        obj = json.load(f)
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))


def clip_merges(count):
    # Found without importing open_clip (its import needs torchvision; only the data file is wanted).
    path = os.path.join(importlib.util.find_spec("open_clip").submodule_search_locations[0], "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    return lines[1:1 + count]


def build_clip():
    shutil.rmtree(CLIP_DIR, ignore_errors=True)
    os.makedirs(CLIP_DIR)
    merges = clip_merges(CLIP_MERGES)
    vocab = bytes_to_unicode()
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(CLIP_DIR, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(CLIP_DIR, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    for name, obj in [("tokenizer_config.json", CLIP_CONFIG), ("special_tokens_map.json", CLIP_SPECIAL_MAP)]:
        with open(os.path.join(CLIP_DIR, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
    tok = CLIPTokenizer.from_pretrained(CLIP_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        copy_compact(os.path.join(tmp, "tokenizer.json"), CLIP_DIR)
    return tok


def clip_ids(folder_tok):
    # The tokenizer.json alone must give what vocab.json + merges.txt give.
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(os.path.join(CLIP_DIR, "tokenizer.json"), tmp)
        from_json = CLIPTokenizer.from_pretrained(tmp)
    cases = []
    for s in STRINGS:
        ids = folder_tok(s).input_ids
        assert from_json(s).input_ids == ids, s
        cases.append({"text": s, "ids": ids})
    padded = [{"text": STRINGS[i], "max_length": n, "ids": folder_tok(STRINGS[i], padding="max_length", max_length=n,
                                                                    truncation=True).input_ids} for i, n in CLIP_PADDED]
    # SD2's tokenizer names "!" as pad: transformers then also matches "!" in text as that special token.
    bang = CLIPTokenizer.from_pretrained(CLIP_DIR, pad_token="!")
    padded_bang = [{"text": STRINGS[i], "max_length": n, "ids": bang(STRINGS[i], padding="max_length", max_length=n,
                                                                     truncation=True).input_ids} for i, n in CLIP_PADDED]
    variants = {}
    # vocab.json + merges.txt without any config: the specials are matched in the raw text only.
    with tempfile.TemporaryDirectory() as tmp:
        for f in ["vocab.json", "merges.txt"]:
            shutil.copy(os.path.join(CLIP_DIR, f), tmp)
        bare = CLIPTokenizer.from_pretrained(tmp)
        variants["no_config"] = [{"text": s, "ids": bare(s).input_ids} for s in STRINGS]
    # tokenizer.json alone, its added tokens marked normalized=false.
    tj = json.load(open(os.path.join(CLIP_DIR, "tokenizer.json"), encoding="utf-8"))
    for t in tj["added_tokens"]:
        t["normalized"] = False
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tj, f, ensure_ascii=False)
        raw = CLIPTokenizer.from_pretrained(tmp)
        variants["raw_specials_json"] = [{"text": s, "ids": raw(s).input_ids} for s in STRINGS]
    return {"folder": "tokenizers/clip-tiny", "cases": cases, "padded": padded, "padded_pad_bang": padded_bang,
            "variants": only_differences(variants, cases)}


# --- T5 -------------------------------------------------------------------------------------------------------

def nmt_nfkc_rules():
    """nmt_nfkc's rules, read back out of the double-array trie sentencepiece compiles for it."""
    with tempfile.TemporaryDirectory() as tmp:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(["a b c d e f g h"] * 20), model_prefix=tmp + "/m",
                                       vocab_size=12, hard_vocab_limit=False, normalization_rule_name="nmt_nfkc",
                                       num_threads=1, minloglevel=2)
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(open(tmp + "/m.model", "rb").read())
    blob = proto.normalizer_spec.precompiled_charsmap
    (size,) = struct.unpack("<I", blob[:4])
    units = struct.unpack("<%dI" % (size // 4), blob[4:4 + size])
    normalized = blob[4 + size:]
    rules = {}

    def walk(pos, key):
        unit = units[pos]
        base = pos ^ ((unit >> 10) << ((unit & (1 << 9)) >> 6))
        if key and (unit >> 8) & 1:
            v = units[base] & ((1 << 31) - 1)
            rules[bytes(key).decode("utf-8")] = normalized[v:normalized.index(b"\0", v)].decode("utf-8")
        for c in range(1, 256):
            p = base ^ c
            if p < len(units) and units[p] & ((1 << 31) | 0xFF) == c:
                walk(p, key + [c])

    walk(0, [])
    return rules


T5_RULE_BLOCKS = [(0x0, 0x24F), (0x300, 0x36F), (0x2000, 0x209F), (0x2100, 0x218F), (0x2460, 0x24FF),
                  (0x3000, 0x303F), (0x3200, 0x33FF), (0xFB00, 0xFB06), (0xFE00, 0xFE0F), (0xFF00, 0xFFEF)]


def t5_corpus():
    words = ["a", "red", "fox", "astronaut", "riding", "horse", "photograph", "cinematic", "lighting", "the", "of",
             "in", "on", "with", "and", "snowy", "forest", "dawn", "golden", "hour", "portrait", "woman", "man", "city",
             "street", "night", "neon", "rain", "mountain", "lake", "reflection", "detailed", "painting", "oil",
             "watercolor", "style", "by", "artist", "sharp", "focus", "bokeh", "film", "grain", "35mm", "ultra",
             "high", "resolution", "8k", "cat", "dog", "bird", "flower", "garden", "castle", "dragon", "ship", "sea",
             "it's", "don't", "we're", "they'll", "café", "naïve", "façade", "déjà", "vu", "Straße", "école",
             "Ångström", "word", "path", "file", "png", "example", "com", "quick", "brown", "lazy", "jumps", "over",
             "東京", "雪", "狐狸", "Москва", "Ελλάδα"]
    punct = [",", ".", "!", "?", ";", ":", "-", "(", ")", "\"", "'", "/", "&", "%", "$", "#", "@"]
    rng = random.Random(0)
    lines = []
    for _ in range(3000):
        parts = []
        for _ in range(rng.randint(3, 14)):
            parts.append(rng.choice(words))
            if rng.random() < 0.15:
                parts.append(rng.choice(punct))
            if rng.random() < 0.1:
                parts.append(str(rng.randint(0, 2030)))
        lines.append(" ".join(parts))
    return lines


def build_t5():
    shutil.rmtree(T5_DIR, ignore_errors=True)
    os.makedirs(T5_DIR)
    rules = {k: v for k, v in nmt_nfkc_rules().items()
             if len(k) <= 3 and all(any(a <= ord(c) <= b for a, b in T5_RULE_BLOCKS) for c in k)}
    with tempfile.TemporaryDirectory() as tmp:
        with open(tmp + "/rules.tsv", "w", encoding="utf-8") as f:
            for k, v in sorted(rules.items()):
                f.write(" ".join("%X" % ord(c) for c in k) + "\t" + " ".join("%X" % ord(c) for c in v) + "\n")
        # T5's layout: <pad>=0, </s>=1, <unk>=2, no <s>.
        spm.SentencePieceTrainer.train(sentence_iterator=iter(t5_corpus()), model_prefix=tmp + "/t5", vocab_size=600,
                                       model_type="unigram", normalization_rule_tsv=tmp + "/rules.tsv", pad_id=0,
                                       eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, num_threads=1,
                                       minloglevel=2)
        # The model records the paths it was trained with (a temporary folder): cleared, so that a rerun writes the
        # same bytes.
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(open(tmp + "/t5.model", "rb").read())
        proto.trainer_spec.model_prefix = "spiece"
        proto.normalizer_spec.normalization_rule_tsv = "nmt_nfkc subset"
        with open(os.path.join(T5_DIR, "spiece.model"), "wb") as f:
            f.write(proto.SerializeToString())
    extra = [f"<extra_id_{i}>" for i in range(T5_EXTRA_IDS)]
    # As FLUX's tokenizer_2/tokenizer_config.json has it (transformers 4's save).
    specials = {0: "<pad>", 1: "</s>", 2: "<unk>"}
    pieces = spm.SentencePieceProcessor(model_file=os.path.join(T5_DIR, "spiece.model")).get_piece_size()
    specials.update({pieces + T5_EXTRA_IDS - 1 - i: t for i, t in enumerate(extra)})
    decoder = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                        "special": True} for i, t in sorted(specials.items())}
    config = {"add_prefix_space": True, "added_tokens_decoder": decoder, "additional_special_tokens": extra,
              "clean_up_tokenization_spaces": True, "eos_token": "</s>", "extra_ids": T5_EXTRA_IDS, "legacy": True,
              "model_max_length": 512, "pad_token": "<pad>", "sp_model_kwargs": {}, "tokenizer_class": "T5Tokenizer",
              "unk_token": "<unk>"}
    with open(os.path.join(T5_DIR, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(T5_DIR, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump({"additional_special_tokens": extra, "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"},
                  f, indent=2)
    from_spm = T5Tokenizer.from_pretrained(T5_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        from_spm.save_pretrained(tmp)
        copy_compact(os.path.join(tmp, "tokenizer.json"), T5_DIR)
    return from_spm


def t5_ids(from_spm):
    from_json = T5Tokenizer.from_pretrained(T5_DIR)  # tokenizer.json is there now
    sp = spm.SentencePieceProcessor(model_file=os.path.join(T5_DIR, "spiece.model"))
    cases = []
    for s in STRINGS:
        ids = from_json(s).input_ids
        assert from_spm(s).input_ids == ids, s
        case = {"text": s, "ids": ids}
        slow = sp.encode(s) + [sp.eos_id()]
        if slow != ids:
            case["sentencepiece_ids"] = slow
        cases.append(case)
    padded = [{"text": STRINGS[i], "max_length": n, "ids": from_json(STRINGS[i], padding="max_length", max_length=n,
                                                                     truncation=True).input_ids} for i, n in T5_PADDED]
    # What the tokenizers library does with pipelines older transformers wrote (FLUX's tokenizer_2/tokenizer.json:
    # Replace " {2,}" after the charsmap, Metaspace without WhitespaceSplit) and with prepend_scheme "first".
    base = json.load(open(os.path.join(T5_DIR, "tokenizer.json"), encoding="utf-8"))
    variants = {}
    for name, scheme in [("flux_style", "always"), ("prepend_first", "first")]:
        tj = copy.deepcopy(base)
        tj["normalizer"] = {"type": "Sequence", "normalizers": [
            base["normalizer"], {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]}
        tj["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": True}
        lib = Tokenizer.from_str(json.dumps(tj))
        variants[name] = [{"text": s, "ids": lib.encode(s).ids} for s in STRINGS]
    return {"folder": "tokenizers/t5-tiny", "cases": cases, "padded": padded, "variants": only_differences(variants, cases)}


def only_differences(variants, cases):
    """Each variant keeps the strings whose ids differ from the main cases' (the others are the same)."""
    main = {c["text"]: c["ids"] for c in cases}
    return {name: [v for v in vs if v["ids"] != main[v["text"]]] for name, vs in variants.items()}


def main():
    clip = build_clip()
    t5 = build_t5()
    out = {"transformers": "5.23.0", "clip": clip_ids(clip), "t5": t5_ids(t5)}
    with open(os.path.join(FIX, "flux_tokenizer_ids.json"), "w", encoding="utf-8") as f:
        f.write(render(out) + "\n")


def render(obj, depth=0):
    """JSON with one case per line: small, and a change to one string is one line of a diff."""
    pad = " " * (depth + 1)
    if isinstance(obj, dict) and "text" not in obj:
        items = [pad + json.dumps(k) + ": " + render(v, depth + 1) for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        return "[\n" + ",\n".join(pad + render(v, depth + 1) for v in obj) + "\n" + " " * depth + "]"
    return json.dumps(obj, ensure_ascii=False)


if __name__ == "__main__":
    main()
