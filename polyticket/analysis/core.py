"""The language-neutral core of a task's tickets, and each language's specific residue.

Given one ticket per language (one seed; run it per seed to average), each weight gets a
vote count: how many languages keep it. Then

- the core is what every language keeps (``shared(masks)``), or at least ``m`` of the ``n``
  (``shared(masks, at_least=m)``);
- a language's residue is what it keeps and at most ``few`` languages in all keep
  (``residue(masks, i)``: ``few=1``, kept by it and by no other);
- ``core_plus_residue(masks, i)`` is the mask to train for the question "is the core plus a
  language's own weights enough for that language?";
- ``core_sizes(masks)`` tabulates kept weights of all these per layer and component.

Votes are counted one matrix at a time (the matrix unpacked for all masks at once), so
memory stays at one matrix × languages. Every mask returned is a ``PackedMask``;
``.to_mask(...)`` turns it into a ``Mask`` that can be saved (its metadata says what it is).

Study integration (``run: {core: true}``): pick the tickets of a task at one sparsity and
seed, ``shared(...).to_mask().save(...)`` and ``core_plus_residue(...)``, train them like any
other mask; ``core_sizes`` goes into results beside the overlap tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from polyticket.analysis.overlap import Grouping
from polyticket.analysis.packed import PackedMask, check_same_shapes, to_words, unpack
from polyticket.errors import UserError
from polyticket.masks import pack_bits


def votes(masks: Sequence[PackedMask]) -> Iterator[tuple[str, np.ndarray]]:
    """Per parameter, how many masks keep each weight (a flat uint8 array)."""
    if not masks:
        raise UserError("no masks to take a core of")
    if len(masks) > 255:
        raise UserError(f"{len(masks)} masks: at most 255 can vote")
    check_same_shapes(masks)
    for name, shape in masks[0].shapes.items():
        count = int(np.prod(shape))
        total = np.zeros(count, dtype=np.uint8)
        for mask in masks:
            total += unpack(mask.words[name], count)
        yield name, total


def _select(masks: Sequence[PackedMask], keep, label: str, **metadata: object) -> PackedMask:
    """The mask of the weights where ``keep(votes, name)`` is true, with its metadata."""
    words = {name: to_words(pack_bits(keep(count, name))) for name, count in votes(masks)}
    meta = {
        "method": label,
        "languages": ",".join(m.label for m in masks),
        **{k: str(v) for k, v in metadata.items()},
    }
    return PackedMask(words, dict(masks[0].shapes), meta, label)


def _own(mask: PackedMask, name: str, count: np.ndarray) -> np.ndarray:
    return unpack(mask.words[name], count.size)


def shared(masks: Sequence[PackedMask], at_least: int | None = None) -> PackedMask:
    """Weights kept by at least ``at_least`` of the masks (all of them by default)."""
    m = _at_least(masks, at_least)
    return _select(masks, lambda count, _: count >= m, "core", at_least=m)


def residue(masks: Sequence[PackedMask], index: int, few: int = 1) -> PackedMask:
    """Weights kept by ``masks[index]`` and by at most ``few`` masks in all (1: by it alone)."""
    own = masks[index]
    return _select(
        masks,
        lambda count, name: _own(own, name, count) & (count <= few),
        "residue",
        language=own.label,
        few=few,
    )


def core_plus_residue(
    masks: Sequence[PackedMask], index: int, at_least: int | None = None, few: int = 1
) -> PackedMask:
    """The core (``at_least`` of the masks) together with ``masks[index]``'s residue."""
    m, own = _at_least(masks, at_least), masks[index]
    return _select(
        masks,
        lambda count, name: (count >= m) | (_own(own, name, count) & (count <= few)),
        "core+residue",
        language=own.label,
        at_least=m,
        few=few,
    )


def _at_least(masks: Sequence[PackedMask], at_least: int | None) -> int:
    m = len(masks) if at_least is None else at_least
    if not 1 <= m <= len(masks):
        raise UserError(f"at_least must be between 1 and {len(masks)}, not {m}")
    return m


def core_sizes(
    masks: Sequence[PackedMask], at_least: Sequence[int] = (), few: int = 1
) -> list[dict[str, Any]]:
    """Kept weights of the core, of each ``at_least`` level and of each mask's residue, per
    scope (overall, layer, component) and group: rows of ``{scope, group, set, kept,
    weights, fraction}``; ``set`` is ``core``, ``at_least_m`` or ``residue:LABEL``."""
    labels = [m.label for m in masks]
    if len(set(labels)) < len(labels):
        raise UserError(f"core_sizes names each residue by its mask's label: labels {labels}")
    n = len(masks)
    levels = {"core": n, **{f"at_least_{m}": _at_least(masks, m) for m in at_least}}
    sets = [*levels, *(f"residue:{m.label}" for m in masks)]
    per_param: dict[str, dict[str, int]] = {name: {} for name in sets}
    for name, count in votes(masks):
        for level, m in levels.items():
            per_param[level][name] = int((count >= m).sum())
        alone = count <= few
        for mask in masks:
            per_param[f"residue:{mask.label}"][name] = int((_own(mask, name, count) & alone).sum())
    grouping = Grouping(masks[0].shapes)
    sizes = grouping.sizes
    rows = []
    for which, counts in per_param.items():
        for scope, groups in grouping.group(counts).items():
            for group, kept in groups.items():
                weights = sizes[scope][group]
                rows.append(
                    {
                        "scope": scope,
                        "group": group,
                        "set": which,
                        "kept": kept,
                        "weights": weights,
                        "fraction": kept / weights if weights else 0.0,
                    }
                )
    return rows
