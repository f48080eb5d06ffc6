"""What a pruning criterion is, and what it sees of a level of IMP."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch
from torch import nn

from polyticket.masks import Mask
from polyticket.pruning import Ranking, Scope


@dataclass
class Level:
    """One level of IMP as a criterion sees it: the live prunable weights, the mask they
    were trained with, and the sparsity the next mask must reach."""

    params: Mapping[str, nn.Parameter]  # base-model name -> live parameter
    mask: Mask
    next_sparsity: Fraction
    ranking: Ranking  # which weights compete: the scope, mT5's stacks apart
    seed: int
    # for criteria that look at activations (a calibration pass): the model and its data
    model: nn.Module | None = None
    data: Any = None  # tasks.base.TaskData
    accelerator: Any = None
    prune: Any = None  # config.PruneArgs: the knobs of criteria (early_bird_threshold)
    train: Any = None  # config.TrainArgs: the learning-rate schedule (early-bird projects on it)
    stats: dict[str, Any] = field(default_factory=dict)  # what the criterion reports


class Criterion:
    """Scores the kept weights of a level; the lowest-scoring go (``pruning.select``)."""

    name: str = ""  # set by ``CRITERIA.register``
    #: the PruneArgs knobs that only this criterion reads (``early_bird_threshold``): a study
    #: cell pruned by another criterion does not depend on them, so changing one does not
    #: make that cell "made with other settings" (``study.changes``)
    knobs: tuple[str, ...] = ()
    #: the ranking scope when none is given (``--scope``): the one its paper uses
    scope: Scope = "global"

    def callbacks(self, level: Level) -> list[Any]:
        """Training hooks (``training.Callback``) the criterion needs during the level, e.g.
        to accumulate scores or to stop early."""
        return []

    def scores(self, level: Level) -> dict[str, torch.Tensor]:
        raise NotImplementedError
