"""Magnitude: the classic IMP criterion (Frankle & Carbin 2019): keep the largest |W|."""

from __future__ import annotations

import torch

from polyticket.criteria import CRITERIA
from polyticket.criteria.base import Criterion, Level


@CRITERIA.register("magnitude")
class Magnitude(Criterion):
    def scores(self, level: Level) -> dict[str, torch.Tensor]:
        return {name: level.params[name].detach().abs() for name in level.mask}
