"""Random: uniform scores drawn from the seed (the IMP-with-random-pruning control)."""

from __future__ import annotations

import torch

from polyticket.criteria import CRITERIA
from polyticket.criteria.base import Criterion, Level
from polyticket.pruning import random_scores


@CRITERIA.register("random")
class Random(Criterion):
    def scores(self, level: Level) -> dict[str, torch.Tensor]:
        return random_scores(level.mask.shapes, level.seed)
