"""Choosing which weights to remove, given their scores (``polyticket.criteria``), globally,
per layer, per matrix or per output row (``Ranking``).

Sparsity is always a fraction of the ORIGINAL prunable weights, computed exactly with
fractions, so level k of a 10% schedule has exactly round(k/10 * n) weights pruned in each
ranking unit. The original code pruned a fraction of the remainder and reached 100% at its
last level; here the count is capped so that no unit is ever pruned completely.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import torch

from polyticket.errors import UserError
from polyticket.masks import Mask, layer_of

Scope = Literal["global", "layer", "matrix", "row"]
SCOPES: tuple[Scope, ...] = typing.get_args(Scope)
# Rows ranked at once: bounds the sort's memory (an argsort is 8 bytes a weight).
ROW_CHUNK = 1 << 22


@dataclass(frozen=True)
class Ranking:
    """Which kept weights compete with each other for survival: all of a group (``global``),
    a layer's, a matrix's, or each output row's (``row``: the weights one output neuron
    reads, as Wanda compares them), each unit pruned to the same sparsity."""

    scope: Scope = "global"
    # name -> ranking group: mT5's encoder and decoder stacks never compete
    groups: Mapping[str, str] = field(default_factory=dict)
    # name -> the axis of a matrix's input features, along which ``row`` ranks: the last one
    # unless said (nn.Linear's (out, in)); GPT-2's Conv1D stores (in, out) and says 0
    input_axes: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise UserError(f"unknown pruning scope {self.scope!r}: use {', '.join(SCOPES)}")

    def input_axis(self, name: str, tensor: torch.Tensor) -> int:
        return self.input_axes.get(name, tensor.dim() - 1)


def as_fraction(value: float | str | Fraction) -> Fraction:
    # Through str so that 0.1 is 1/10, not the nearest binary float.
    return value if isinstance(value, Fraction) else Fraction(str(value))


def sparsity_schedule(
    rate: float, target: float | None = None, levels: int | None = None
) -> list[Fraction]:
    """Sparsity of each level, level 0 (dense) first: 0, rate, 2 rate, ... up to the target."""
    rate_f = as_fraction(rate)
    if not 0 < rate_f < 1:
        raise UserError(f"pruning rate must be between 0 and 1, got {rate}")
    if target is None and levels is None:
        raise UserError("give a target sparsity or a number of levels")
    # --levels overrides the target: that many levels of ``rate`` each
    target_f = rate_f * levels if levels is not None else as_fraction(target)
    if levels is not None and target_f >= 1:
        most = math.ceil(1 / rate_f) - 1
        raise UserError(
            f"{levels} levels of rate {rate} would prune {float(target_f):.0%} of the weights: "
            f"at most {most} level{'s' if most != 1 else ''} at that rate"
        )
    if not 0 < target_f < 1:
        raise UserError(f"target sparsity must be in (0, 1), got {float(target_f):g}")
    count = levels if levels is not None else math.ceil(target_f / rate_f)
    return [min(rate_f * k, target_f) for k in range(count + 1)]


def pruned_count(sparsity: Fraction, n: int) -> int:
    """Weights to prune out of n: round half up, never all of them."""
    return min(n - 1, math.floor(sparsity * n + Fraction(1, 2)))


def ranking_units(names: list[str], ranking: Ranking) -> dict[str, list[str]]:
    """Which matrices are ranked together (with scope ``row``, each alone, row by row)."""
    units: dict[str, list[str]] = {}
    for name in names:
        group = ranking.groups.get(name, "all")
        key = {
            "global": group,
            "layer": f"{group}/{layer_of(name)}",
            "matrix": name,
            "row": name,
        }[ranking.scope]
        units.setdefault(key, []).append(name)
    return units


def _lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Bool tensor marking the ``count`` lowest scores; ties go to the lower index."""
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    if count == 0:
        return chosen
    # kthvalue keeps memory linear (a full argsort of 85M weights would need 680 MB of indices).
    threshold = scores.kthvalue(count).values
    chosen = scores < threshold
    ties = (scores == threshold).nonzero().flatten()[: count - int(chosen.sum())]
    chosen[ties] = True
    return chosen


def _lowest_in_rows(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Bool tensor marking the ``counts[i]`` lowest scores of each row ``i`` of a 2-D
    tensor; ties go to the lower index."""
    chosen = torch.empty_like(scores, dtype=torch.bool)
    step = max(1, ROW_CHUNK // max(1, scores.shape[1]))
    for start in range(0, scores.shape[0], step):
        rows = scores[start : start + step]
        order = rows.argsort(dim=1, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(rows.shape[1]).expand_as(order).contiguous())
        chosen[start : start + step] = rank < counts[start : start + step, None]
    return chosen


def _as_rows(tensor: torch.Tensor, axis: int) -> torch.Tensor:
    """A matrix as (output rows, input features): ``axis`` holds the input features."""
    moved = tensor.movedim(axis, -1)
    return moved.reshape(-1, moved.shape[-1])


def _from_rows(rows: torch.Tensor, like: torch.Tensor, axis: int) -> torch.Tensor:
    return rows.reshape(like.movedim(axis, -1).shape).movedim(-1, axis).contiguous()


def _select_rows(
    name: str, scores: torch.Tensor, kept: torch.Tensor, sparsity: Fraction, axis: int
) -> torch.Tensor:
    """Scope ``row``: each output row of a matrix pruned to ``sparsity``; the new mask."""
    rows, kept_rows = _as_rows(scores, axis), _as_rows(kept, axis)
    target = pruned_count(sparsity, rows.shape[1])
    already = int((~kept_rows).sum(1).max())
    if target < already:
        raise UserError(
            f"a row of {name} is already {already / rows.shape[1]:.3f} sparse, more than the "
            f"requested {float(sparsity):.3f}"
        )
    counts = torch.full((rows.shape[0],), target)
    pruned = _lowest_in_rows(rows.masked_fill(~kept_rows, float("-inf")), counts)
    return _from_rows(~pruned, kept, axis)


def select(
    scores: Mapping[str, torch.Tensor],
    mask: Mask,
    sparsity: float | Fraction,
    ranking: Ranking = Ranking(),
) -> Mask:
    """Prune the lowest-scoring kept weights until each unit reaches ``sparsity``.

    Already pruned weights stay pruned: they are ranked first.
    """
    sparsity = as_fraction(sparsity)
    names = list(mask)
    new: dict[str, torch.Tensor] = {}
    for unit, unit_names in ranking_units(names, ranking).items():
        if ranking.scope == "row":
            (name,) = unit_names
            score = scores[name].detach().float().cpu()
            new[name] = _select_rows(
                name, score, mask[name], sparsity, ranking.input_axis(name, score)
            )
            continue
        kept = torch.cat([mask[n].reshape(-1) for n in unit_names])
        flat = torch.cat([scores[n].detach().reshape(-1).float().cpu() for n in unit_names])
        flat = flat.masked_fill(~kept, float("-inf"))
        target = pruned_count(sparsity, flat.numel())
        already = int((~kept).sum())
        if target < already:
            raise UserError(
                f"unit {unit} is already {already / flat.numel():.3f} sparse, "
                f"more than the requested {float(sparsity):.3f}"
            )
        pruned = _lowest(flat, target)
        offset = 0
        for n in unit_names:
            size = mask[n].numel()
            new[n] = ~pruned[offset : offset + size].reshape(mask[n].shape)
            offset += size
    return Mask({n: new[n] for n in names}, mask.metadata)


def magnitude_prune(
    weights: Mapping[str, torch.Tensor],
    mask: Mask,
    sparsity: float | Fraction,
    ranking: Ranking = Ranking(),
) -> Mask:
    """Remove the smallest-magnitude kept weights."""
    return select({n: weights[n].detach().abs() for n in mask}, mask, sparsity, ranking)


def random_scores(shapes: Mapping[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Uniform scores, reproducible for a seed."""
    generator = torch.Generator().manual_seed(seed)
    return {n: torch.rand(shape, generator=generator) for n, shape in shapes.items()}


def random_prune(
    mask: Mask, sparsity: float | Fraction, seed: int, ranking: Ranking = Ranking()
) -> Mask:
    """Remove kept weights uniformly at random (reproducible for a seed)."""
    return select(random_scores(mask.shapes, seed), mask, sparsity, ranking)


def random_like(reference: Mask, seed: int, ranking: Ranking = Ranking()) -> Mask:
    """A random mask over the same weights with exactly as many pruned as ``reference`` in
    each ranking unit (each layer with scope ``layer``, each output row with ``row``): the
    paper's random baseline for a ticket."""
    scores = random_scores(reference.shapes, seed)  # one draw: no unit shares another seed's
    parts: dict[str, torch.Tensor] = {}
    for names in ranking_units(list(reference), ranking).values():
        if ranking.scope == "row":
            (name,) = names
            axis = ranking.input_axis(name, reference[name])
            counts = (~_as_rows(reference[name], axis)).sum(1)
            pruned = _lowest_in_rows(_as_rows(scores[name], axis), counts)
            parts[name] = _from_rows(~pruned, reference[name], axis)
            continue
        unit = reference.subset(names)
        sparsity = Fraction(unit.numel() - unit.kept(), unit.numel())
        parts.update(select({n: scores[n] for n in names}, Mask.ones(unit.shapes), sparsity))
    return Mask({name: parts[name] for name in reference}, {"method": "random"})
