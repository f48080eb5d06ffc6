"""The Mask type: one bool tensor per prunable parameter, its algebra and its file format.

A mask is keyed by base-model parameter names (``encoder.layer.0.attention.self.query.weight``)
so that one mask fits every task head of a model. On disk it is a safetensors file of
bit-packed uint8 tensors (``polyticket-mask/1``, see docs/design.md): 1 bit per weight instead of
the 32 of the original code's float pickles.
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file

from polyticket.errors import UserError
from polyticket.io import atomic_path

log = logging.getLogger(__name__)

FORMAT = "polyticket-mask/1"
_LAYER = re.compile(r"^(.*?\.\d+)\.")


def layer_of(name: str) -> str:
    """The repeated block a parameter lives in (``encoder.layer.3``), or its first component."""
    match = _LAYER.match(name)
    return match.group(1) if match else name.split(".")[0]


def component_of(name: str) -> str:
    """The kind of matrix regardless of depth: ``attention.self.query`` for every layer."""
    match = _LAYER.match(name)
    rest = name[match.end() :] if match else name
    return rest.removesuffix(".weight")


class Mask(Mapping[str, torch.Tensor]):
    """Immutable mapping from parameter name to a bool tensor (True = kept), plus metadata."""

    def __init__(
        self, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
    ):
        self._tensors = {
            name: t.detach().to(device="cpu", dtype=torch.bool) for name, t in tensors.items()
        }
        self.metadata = dict(metadata or {})

    # Mapping protocol
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        return f"Mask({len(self)} tensors, sparsity={self.sparsity():.4f})"

    @classmethod
    def ones(cls, shapes: Mapping[str, tuple[int, ...] | torch.Size]) -> Mask:
        return cls(
            {name: torch.ones(tuple(shape), dtype=torch.bool) for name, shape in shapes.items()}
        )

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(t.shape) for name, t in self._tensors.items()}

    # Algebra
    def _combine(self, other: Mask, op) -> Mask:
        detail = shape_difference(self.shapes, other.shapes)
        if detail:
            raise UserError(f"masks do not cover the same parameters: {detail}")
        return Mask({name: op(t, other[name]) for name, t in self._tensors.items()})

    def __and__(self, other: Mask) -> Mask:
        return self._combine(other, torch.logical_and)

    def __or__(self, other: Mask) -> Mask:
        return self._combine(other, torch.logical_or)

    def __sub__(self, other: Mask) -> Mask:
        """Kept here and pruned in ``other``."""
        return self._combine(other, lambda a, b: a & ~b)

    def __invert__(self) -> Mask:
        return Mask({name: ~t for name, t in self._tensors.items()})

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Mask)
            and self.shapes == other.shapes
            and all(torch.equal(t, other[name]) for name, t in self._tensors.items())
        )

    __hash__ = None  # type: ignore[assignment]

    # Statistics
    def numel(self) -> int:
        return sum(t.numel() for t in self._tensors.values())

    def kept(self) -> int:
        return sum(int(t.sum()) for t in self._tensors.values())

    def sparsity(self) -> float:
        """Fraction pruned over all masked weights."""
        total = self.numel()
        return 1.0 - self.kept() / total if total else 0.0

    def sparsity_by_matrix(self) -> dict[str, float]:
        return {name: 1.0 - int(t.sum()) / t.numel() for name, t in self._tensors.items()}

    def _groups(self, key) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for name in self._tensors:
            groups.setdefault(key(name), []).append(name)
        return groups

    def sparsity_by_layer(self) -> dict[str, float]:
        return {k: self.subset(names).sparsity() for k, names in self._groups(layer_of).items()}

    def sparsity_by_component(self) -> dict[str, float]:
        """Per kind of matrix (``attention.self.query``, …) over all layers."""
        return {k: self.subset(names).sparsity() for k, names in self._groups(component_of).items()}

    def subset(self, names: list[str]) -> Mask:
        return Mask({name: self._tensors[name] for name in names})

    def jaccard(self, other: Mask) -> float:
        """|kept in both| / |kept in either|."""
        both = (self & other).kept()
        either = (self | other).kept()
        return both / either if either else 1.0

    def _jaccard_by(self, other: Mask, key) -> dict[str, float]:
        return {
            k: self.subset(names).jaccard(other.subset(names))
            for k, names in self._groups(key).items()
        }

    def jaccard_by_layer(self, other: Mask) -> dict[str, float]:
        return self._jaccard_by(other, layer_of)

    def jaccard_by_component(self, other: Mask) -> dict[str, float]:
        return self._jaccard_by(other, component_of)

    # Fitting a model
    def check_fits(
        self, shapes: Mapping[str, tuple[int, ...] | torch.Size], source: str = "mask"
    ) -> None:
        """Fail with the first parameter that is missing or has another shape."""
        for name, shape in self.shapes.items():
            if name not in shapes:
                raise UserError(f"{source}: parameter {name} is not in the model")
            if tuple(shapes[name]) != shape:
                raise UserError(
                    f"{source}: parameter {name} has shape {list(shape)} in the mask "
                    f"but {list(shapes[name])} in the model"
                )

    def check_covers(self, prunable: Iterable[str], model: str, source: str = "mask") -> None:
        """Say what a mask that fits leaves to chance: made for another model of the same
        shapes (XLM-R and e5), or without some prunable matrices (they stay dense). A mask
        with no matrix at all is refused: it would pass for the dense model."""
        if not self._tensors:
            raise UserError(f"{source}: the mask holds no matrix")
        made_for = self.metadata.get("model")
        if made_for and made_for != model:
            log.warning(
                "the mask %s was made for the model %s, used on %s", source, made_for, model
            )
        unmasked = [name for name in prunable if name not in self._tensors]
        if unmasked:  # a mask of another pruning scope, or cut by hand
            log.warning(
                "%d prunable matrices are not in the mask %s and stay dense (first: %s)",
                len(unmasked), source, unmasked[0],
            )  # fmt: skip

    # File I/O
    def save(self, path: str | Path, **metadata: object) -> Path:
        """Write atomically (``polyticket.io``)."""
        path = Path(path)
        meta = {**self.metadata, **{k: str(v) for k, v in metadata.items() if v is not None}}
        meta.update(
            format=FORMAT,
            shapes=json.dumps(self.shapes, separators=(",", ":")),
            sparsity=repr(self.sparsity()),
        )
        packed = {name: pack_bits(t) for name, t in self._tensors.items()}
        with atomic_path(path) as tmp:
            tmp.write_bytes(_safetensors_bytes(packed, meta))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Mask:
        packed, shapes, metadata = read_packed(path)
        tensors = {
            name: torch.from_numpy(unpack_bits(packed[name], math.prod(shape)).reshape(shape))
            for name, shape in shapes.items()
        }
        return cls(tensors, metadata)


def pack_bits(keep: torch.Tensor | np.ndarray) -> np.ndarray:
    """A bool tensor's bits, flattened and packed as the mask file holds them: bit ``i`` of
    byte ``j`` is weight ``8j + i`` (little bit order), the last byte padded with zeros."""
    return np.packbits(np.asarray(keep).reshape(-1), bitorder="little")


def unpack_bits(packed: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` weights of ``pack_bits``'s bytes, as a flat bool array."""
    return np.unpackbits(packed, count=count, bitorder="little").view(bool)


def shape_difference(
    first: Mapping[str, tuple[int, ...]], second: Mapping[str, tuple[int, ...]]
) -> str | None:
    """The first way two masks' shapes differ, in words; None where they are the same."""
    if first == second:
        return None
    missing = sorted(set(first) ^ set(second))
    if missing:
        return f"parameter {missing[0]} is in only one of them"
    return next(f"{n}: {first[n]} vs {second[n]}" for n in first if first[n] != second[n])


def read_packed(
    path: str | Path,
) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, ...]], dict[str, str]]:
    """A mask file's bit-packed uint8 arrays (little bit order), shapes and user metadata,
    checked but not unpacked: the analyses count on the packed bits directly."""
    path = Path(path)
    if not path.is_file():
        what = "a directory, not a mask file" if path.is_dir() else "mask file not found"
        raise UserError(f"{what}: {path}")
    with open(path, "rb") as f:
        if f.read(4) in TORCH_SAVE_STARTS:
            raise UserError(
                f"{path}: a torch.save file (the original code's masks are), not a polyticket "
                f"mask: convert it with `polyticket masks import {path} OUT.safetensors`"
            )
    try:
        meta = read_metadata(path)
        arrays = load_file(str(path))
    except (SafetensorError, OSError, ValueError, struct.error) as exc:
        raise UserError(f"{path}: not a readable mask file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: not a polyticket mask (format {meta.get('format')!r})")
    shapes = {name: tuple(shape) for name, shape in _shapes(meta, path).items()}
    for name, shape in shapes.items():
        if name not in arrays:
            raise UserError(f"{path}: parameter {name} is listed in 'shapes' but has no data")
        count = math.prod(shape)
        packed = arrays[name]
        if packed.dtype != np.uint8 or packed.size != (count + 7) // 8:
            raise UserError(
                f"{path}: parameter {name} has {packed.size} bytes of {packed.dtype}, "
                f"expected {(count + 7) // 8} bytes of uint8 for shape {list(shape)}"
            )
        if count % 8 and int(packed[-1]) >> (count % 8):  # popcounts count every bit
            raise UserError(
                f"{path}: parameter {name} has bits set past its {count} weights (a damaged "
                "file, or not written by polyticket)"
            )
    metadata = {k: v for k, v in meta.items() if k not in ("format", "shapes", "sparsity")}
    return {name: arrays[name] for name in shapes}, shapes, metadata


def _shapes(meta: Mapping[str, str], path: Path) -> dict[str, list[int]]:
    """The ``shapes`` metadata: parameter name -> list of non-negative ints."""
    try:
        shapes = json.loads(meta["shapes"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise UserError(f"{path}: mask metadata has no valid 'shapes'") from None
    if not isinstance(shapes, dict) or not all(
        isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
        for shape in shapes.values()
    ):
        raise UserError(f"{path}: mask metadata 'shapes' must map names to lists of sizes")
    return shapes


def _safetensors_bytes(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    """A safetensors file of 1-D uint8 arrays, byte for byte the same for the same mask.

    safetensors' own writer keeps metadata in a hash map whose order changes from process
    to process; here keys are sorted, so a resumed run or a copy can be checked by hash.
    """
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    for name in sorted(arrays):
        size = arrays[name].nbytes
        header[name] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes
    body = b"".join(arrays[name].astype(np.uint8).tobytes() for name in sorted(arrays))
    return struct.pack("<Q", len(text)) + text + body


def read_header(path: str | Path) -> dict:
    """The JSON header of a safetensors file, without reading any tensor. ``ValueError`` when
    the bytes are not one (the declared length is checked against the file before reading)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("too short for a safetensors header")
        (size,) = struct.unpack("<Q", head)
        if size > path.stat().st_size - 8:
            raise ValueError(f"declared header length {size} exceeds the file")
        try:
            header = json.loads(f.read(size))  # not UTF-8 / not JSON: ValueError subclasses
        except RecursionError:  # hostile nesting: "[[[[..." deeper than the parser goes
            raise ValueError("the header nests too deeply") from None
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header


# The first bytes of torch.save's files: a zip archive (torch >= 1.6) or a bare pickle.
TORCH_SAVE_STARTS = (b"PK\x03\x04", b"\x80\x02\x8a\x0a")


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors header metadata, without loading any tensor."""
    meta = read_header(path).get("__metadata__", {})
    if not isinstance(meta, dict):
        raise ValueError("__metadata__ is not a JSON object")
    return meta


def is_mask_file(path: str | Path) -> bool:
    """Whether the file is structurally a polyticket mask: a safetensors header that parses
    and carries this format. Decided from the structure, never from a leading byte (a
    header length can start with any byte, 0x80 included)."""
    try:
        return read_metadata(path).get("format") == FORMAT
    except (OSError, ValueError):
        return False
