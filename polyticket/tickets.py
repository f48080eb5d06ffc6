"""Which level of an IMP run is *the* ticket: two rules, named for what they are.

- ``EPSILON`` (``find``): the sparsest level whose best score is within a fixed ``--epsilon``
  of the run's own dense (level 0) score. ``find`` writes it as ``ticket.safetensors``.
- ``SEED_STD`` (a study, the paper's rule): ε is the sample standard deviation (n − 1) of
  the dense score over the study's seeds, and each seed's ticket is its sparsest level
  within ε of the mean dense score. A study exports it as ``study-ticket.safetensors``
  and its tables say ``rule: seed-std``; with one seed it falls back to the ``find`` ε.

Both read only the levels' metrics (``level_KK/metrics.json``) and return the same record.
Level 0 is the ticket when no level is within ε.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

EPSILON = "epsilon"
SEED_STD = "seed-std"

RULES = {
    EPSILON: "sparsest level whose best score is within epsilon of the run's dense score",
    SEED_STD: "sparsest level within one std over seeds (one seed: epsilon) of the dense mean",
}


def within(score: float, reference: float, epsilon: float, greater_is_better: bool) -> bool:
    """``score`` is at most ``epsilon`` worse than ``reference``, a level exactly ε away
    included (0.79 against 0.80 with ε 0.01: their float difference is 0.010000000000000009)."""
    gap = score - reference if greater_is_better else reference - score
    return gap >= -epsilon or math.isclose(gap, -epsilon, rel_tol=1e-9, abs_tol=1e-12)


def select_level(
    levels: Sequence[Mapping[str, Any]],
    epsilon: float,
    greater_is_better: bool,
    dense: float,
    rule: str,
) -> dict[str, Any]:
    """The sparsest level whose best score is within ``epsilon`` of ``dense``."""
    rows = [
        {
            "level": entry["level"],
            "sparsity": entry["sparsity"],
            "score": entry["best_score"],
            "within": within(entry["best_score"], dense, epsilon, greater_is_better),
        }
        for entry in levels
    ]
    chosen = max((r for r in rows if r["within"]), key=lambda r: r["sparsity"], default=rows[0])
    return {
        "rule": rule,
        "rule_text": RULES[rule],
        "level": chosen["level"],
        "sparsity": chosen["sparsity"],
        "score": chosen["score"],
        "dense_score": dense,
        "epsilon": epsilon,
        "greater_is_better": greater_is_better,
        "levels": rows,
    }


def epsilon_ticket(
    levels: Sequence[Mapping[str, Any]], epsilon: float, greater_is_better: bool
) -> dict[str, Any]:
    """``find``'s ticket: within ``epsilon`` of this run's own level-0 score."""
    return select_level(levels, epsilon, greater_is_better, levels[0]["best_score"], EPSILON)


def seed_std_tickets(
    runs: Mapping[int, Sequence[Mapping[str, Any]]], one_seed_epsilon: float
) -> dict[int, dict[str, Any]]:
    """A study's tickets, one per seed: ``runs`` maps each seed to its levels' metrics."""
    dense = [levels[0]["best_score"] for levels in runs.values()]
    mean = statistics.fmean(dense)
    epsilon = statistics.stdev(dense) if len(dense) > 1 else one_seed_epsilon
    return {
        seed: select_level(levels, epsilon, levels[0]["greater_is_better"], mean, SEED_STD)
        for seed, levels in runs.items()
    }
