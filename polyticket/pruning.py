"""Choosing which weights to remove, given their scores (``polyticket.criteria``), globally,
per layer or per matrix.

Sparsity is always a fraction of the ORIGINAL prunable weights, computed exactly with
fractions, so level k of a 10% schedule has exactly round(k/10 * n) weights pruned in each
ranking unit. The original code pruned a fraction of the remainder and reached 100% at its
last level; here the count is capped so that no unit is ever pruned completely.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Literal

import torch

from polyticket.errors import UserError
from polyticket.masks import Mask, layer_of

Scope = Literal["global", "layer", "matrix"]


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


def ranking_units(
    names: list[str], groups: Mapping[str, str], scope: Scope
) -> dict[str, list[str]]:
    """Which weights compete with each other for survival."""
    units: dict[str, list[str]] = {}
    for name in names:
        group = groups.get(name, "all")
        key = {"global": group, "layer": f"{group}/{layer_of(name)}", "matrix": name}[scope]
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


def select(
    scores: Mapping[str, torch.Tensor],
    mask: Mask,
    sparsity: float | Fraction,
    groups: Mapping[str, str] | None = None,
    scope: Scope = "global",
) -> Mask:
    """Prune the lowest-scoring kept weights until each unit reaches ``sparsity``.

    Already pruned weights stay pruned: they are ranked first.
    """
    sparsity = as_fraction(sparsity)
    if scope not in ("global", "layer", "matrix"):
        raise UserError(f"unknown pruning scope {scope!r}: use global, layer or matrix")
    names = list(mask)
    new: dict[str, torch.Tensor] = {}
    for unit, unit_names in ranking_units(names, groups or {}, scope).items():
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
    groups: Mapping[str, str] | None = None,
    scope: Scope = "global",
) -> Mask:
    """Remove the smallest-magnitude kept weights."""
    return select({n: weights[n].detach().abs() for n in mask}, mask, sparsity, groups, scope)


def random_scores(shapes: Mapping[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Uniform scores, reproducible for a seed."""
    generator = torch.Generator().manual_seed(seed)
    return {n: torch.rand(shape, generator=generator) for n, shape in shapes.items()}


def random_prune(
    mask: Mask,
    sparsity: float | Fraction,
    seed: int,
    groups: Mapping[str, str] | None = None,
    scope: Scope = "global",
) -> Mask:
    """Remove kept weights uniformly at random (reproducible for a seed)."""
    return select(random_scores(mask.shapes, seed), mask, sparsity, groups, scope)


def random_like(
    reference: Mask, seed: int, groups: Mapping[str, str] | None = None, scope: Scope = "global"
) -> Mask:
    """A random mask over the same weights with exactly as many pruned as ``reference`` in
    each ranking unit (each layer with scope ``layer``): the paper's random baseline for a
    ticket."""
    scores = random_scores(reference.shapes, seed)  # one draw: no unit shares another seed's
    parts: dict[str, torch.Tensor] = {}
    for names in ranking_units(list(reference), groups or {}, scope).values():
        unit = reference.subset(names)
        sparsity = Fraction(unit.numel() - unit.kept(), unit.numel())
        parts.update(select({n: scores[n] for n in names}, Mask.ones(unit.shapes), sparsity))
    return Mask({name: parts[name] for name in reference}, {"method": "random"})
