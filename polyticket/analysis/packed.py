"""Masks as bit-packed 64-bit words, and counting on them with popcount.

The analyses compare many masks of a whole model (33 tickets of mBERT are 33 × 85M weights),
so they never unpack a model: a ``PackedMask`` holds, per parameter, the mask file's packed
bytes (little bit order, as ``Mask.save`` writes them) viewed as little-endian ``uint64``
words. Bit ``i`` of the flattened parameter is bit ``i % 64`` of word ``i // 64``; the bits
past the end of a parameter are zero in every mask, so AND, OR and XOR of two masks keep them
zero and popcounts need no correction. (NOT would set them: nothing here uses it; the pruned
side of a count comes from ``numel - kept``.)

    packed = PackedMask.load("ticket.safetensors")       # or PackedMask.from_mask(mask)
    both = intersection_counts(packed, other)             # {parameter: |a ∧ b|}
    packed.to_mask()                                      # back to a Mask, e.g. to save it

Optional mask metadata read here: ``num_heads`` (attention heads of the model, for the
per-head overlap) besides the usual ``language`` and ``seed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from polyticket.errors import UserError
from polyticket.masks import Mask, pack_bits, read_packed, shape_difference, unpack_bits

log = logging.getLogger("polyticket")

WORD_BITS = 64
_WORD = np.dtype("<u8")  # little-endian words, so bit i of the file is bit i % 64 of a word

if hasattr(np, "bitwise_count"):  # numpy >= 2

    def popcounts(words: np.ndarray) -> np.ndarray:
        """The number of set bits of each word."""
        return np.bitwise_count(words)

else:  # pragma: no cover - numpy 1.x
    _BYTE_COUNTS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

    def popcounts(words: np.ndarray) -> np.ndarray:
        """The number of set bits of each word (a table over its eight bytes)."""
        return _BYTE_COUNTS[words.view(np.uint8)].reshape(*words.shape, 8).sum(-1)


def popcount(words: np.ndarray) -> int:
    """The number of set bits in all the words."""
    return int(popcounts(words).sum(dtype=np.int64))


def to_words(packed: np.ndarray) -> np.ndarray:
    """Packed uint8 bytes as uint64 words, zero-padded to a multiple of 8 bytes."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8).reshape(-1)
    pad = -packed.size % 8
    if pad:
        packed = np.concatenate([packed, np.zeros(pad, dtype=np.uint8)])
    return packed.view(_WORD)


def unpack(words: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` bits as a bool array: for one matrix at a time, never a model."""
    return unpack_bits(words.view(np.uint8), count)


def prefix_counts(words: np.ndarray, offsets: Sequence[int] | np.ndarray) -> np.ndarray:
    """For each bit offset, the number of set bits before it.

    Works for any offset, aligned to a word or not: the whole words before it from a
    cumulative popcount, plus the low bits of the word it falls in. Counts over a range of
    bits (the rows of one attention head) are differences of two prefixes.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    cumulative = np.concatenate([[0], np.cumsum(popcounts(words), dtype=np.int64)])
    word, bit = np.divmod(offsets, WORD_BITS)
    partial = np.zeros(len(offsets), dtype=np.int64)
    inside = bit > 0  # an offset at a word boundary has no partial word
    if inside.any():
        low = (np.uint64(1) << bit[inside].astype(np.uint64)) - np.uint64(1)
        partial[inside] = popcounts(words[word[inside]] & low)
    return cumulative[word] + partial


@dataclass(frozen=True)
class PackedMask:
    """One mask as packed words per parameter, with its shapes, metadata and a label."""

    words: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]
    metadata: dict[str, str] = field(default_factory=dict)
    label: str = ""
    source: str = ""  # the file it was read from

    @classmethod
    def load(cls, path: str | Path, label: str | None = None) -> PackedMask:
        """Read a mask file without unpacking it."""
        packed, shapes, metadata = read_packed(path)
        words = {name: to_words(array) for name, array in packed.items()}
        label = label or default_label(metadata, Path(path))
        return cls(words, shapes, metadata, label, str(path))

    @classmethod
    def from_mask(cls, mask: Mask, label: str = "") -> PackedMask:
        words = {name: to_words(pack_bits(t)) for name, t in mask.items()}
        return cls(words, mask.shapes, dict(mask.metadata), label)

    def to_mask(self, **metadata: str) -> Mask:
        """Unpacked, to save or train with; ``metadata`` is added to the mask's own."""
        tensors = {
            name: torch.from_numpy(unpack(self.words[name], self.numel(name)).reshape(shape))
            for name, shape in self.shapes.items()
        }
        return Mask(tensors, {**self.metadata, **metadata})

    def numel(self, name: str | None = None) -> int:
        """Weights of one parameter, or of all."""
        shapes = [self.shapes[name]] if name is not None else self.shapes.values()
        return sum(int(np.prod(shape)) for shape in shapes)

    def kept_counts(self) -> dict[str, int]:
        """Kept weights per parameter."""
        return {name: popcount(w) for name, w in self.words.items()}

    def sparsity(self) -> float:
        """The fraction of all weights pruned."""
        return 1 - sum(self.kept_counts().values()) / self.numel()

    def combine(self, other: PackedMask, op: Callable, label: str = "") -> PackedMask:
        """A new mask from a bitwise ``op`` on the words of each parameter."""
        check_same_shapes([self, other])
        words = {name: op(w, other.words[name]) for name, w in self.words.items()}
        return PackedMask(words, self.shapes, {}, label)

    def departures(self, reference: PackedMask) -> PackedMask:
        """Where this mask and ``reference`` differ: kept here and pruned there, or the
        reverse (XOR)."""
        return self.combine(reference, np.bitwise_xor, f"{self.label}^{reference.label}")


def default_label(metadata: Mapping[str, str], path: Path) -> str:
    """``language/seed`` from the metadata where it says so, else the file name."""
    language, seed = metadata.get("language"), metadata.get("seed")
    if language:
        return f"{language}/{seed}" if seed else language
    return path.stem if path.stem not in ("ticket", "mask") else f"{path.parent.name}/{path.stem}"


def check_same_shapes(masks: Iterable[PackedMask]) -> None:
    """All masks cover the same parameters with the same shapes, or a UserError naming the
    first mask that does not; masks that say they were made for different models but have
    the same shapes (XLM-R's and mBERT's encoders) are compared, with a warning."""
    masks = list(masks)
    first = masks[0]
    for mask in masks[1:]:
        detail = shape_difference(first.shapes, mask.shapes)
        if detail:
            raise UserError(
                f"masks {_named(first)} and {_named(mask)} are not of one model: {detail}"
            )
    models = {m.metadata["model"]: m for m in masks if m.metadata.get("model")}
    if len(models) > 1:
        (a, one), (b, other) = list(models.items())[:2]
        log.warning("%s was made for the model %s and %s for %s", _named(one), a, _named(other), b)


def _named(mask: PackedMask) -> str:
    """A mask in a message: its label, and its file when it has one."""
    return f"{mask.label!r} ({mask.source})" if mask.source else repr(mask.label)


def intersection_counts(a: PackedMask, b: PackedMask) -> dict[str, int]:
    """|a ∧ b| per parameter, without building the intersection."""
    return {name: popcount(w & b.words[name]) for name, w in a.words.items()}


def load_all(paths: Iterable[str | Path]) -> list[PackedMask]:
    """Masks of one model, read packed; their shapes checked against the first."""
    masks = [PackedMask.load(p) for p in paths]
    if not masks:
        raise UserError("no mask files given")
    check_same_shapes(masks)
    labels = [m.label for m in masks]
    if len(set(labels)) < len(labels):  # two files of one language and seed: name them apart
        masks = [replace(m, label=f"{m.label} ({m.source})") for m in masks]
    return masks
