"""Early-bird search (You et al. 2020): stop a level's training once its next mask has settled.

During the level's training the magnitude mask that the level would hand on (the live |W|
pruned to ``next_sparsity`` within the level's mask, groups and scope) is taken every
``ceil(planned steps / CHECKS_PER_LEVEL)`` steps, and at step 0 (θ0). The distance of a
check is the share of the mask's *departures* (the weights where it differs from the
step-0 mask: what training has decided so far) that changed since the previous check:
Hamming(previous, current) / Hamming(step 0, current), 1 while nothing has departed. When it
is below ``early_bird_threshold`` at ``PATIENCE`` checks in a row, the mask has converged
and training stops at the next evaluation, so that the level's score comes from an
evaluation like every other level's (the steps saved are a multiple of ``eval_steps``).
The scores are |W| at the stop, i.e. magnitude pruning of the weights reached so far.

Why relative: You et al. compare consecutive masks as a share of all weights (their
threshold 0.1, over channels). For single weights of a pretrained model that share is tiny
from the first steps on, because θ0's magnitudes decide almost every entry (on e5-small,
0.0011 of the weights changed at step 3 of 50, during warm-up): measured on the demo data,
stopping on it chose masks at step 9 with a Jaccard of 0.985 to IMP's and less than half
IMP's F1 (0.37 against 0.77 in English). What makes a ticket is the ~2% of weights where it
departs from θ0's magnitude mask, so that is what must have settled.

- Every level that hands on a mask may stop early, the dense level 0 included: You et
  al. draw their tickets from the early epochs of dense training, and the dense level is
  where most of a 50% ticket's selection steps are. The price: the run's own ticket rule
  (``tickets.EPSILON``) then compares levels with a partly trained dense score, which
  leans towards sparser levels; a study's ``methods`` table compares the early-bird levels
  with the IMP cell's fully trained ones instead. The last level hands on no mask (nothing
  left to prune at its sparsity): it never stops early, so the ticket's own sparsity is
  scored after full training.
- The threshold (``config.PruneArgs.early_bird_threshold``, 0.1 as You et al.'s): at most
  a tenth of the departures changed between two checks.
- ``PATIENCE`` checks in a row, and stopping only at an evaluation, guard against a single
  quiet check.
- The metrics of each level report ``planned_steps``, ``steps_saved``, ``converged_at`` and
  every check's ``distances`` (``[step, distance, departed]``, departed: the share of the
  weights where the mask differs from step 0's).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from torch import nn

from polyticket.config import PruneArgs
from polyticket.criteria import CRITERIA
from polyticket.criteria.base import Level
from polyticket.criteria.magnitude import Magnitude
from polyticket.masks import Mask
from polyticket.pruning import magnitude_prune
from polyticket.training import Callback

CHECKS_PER_LEVEL = 20
PATIENCE = 3  # consecutive checks below the threshold that count as converged


def hamming(a: Mask, b: Mask) -> float:
    """The fraction of the weights that one mask keeps and the other does not."""
    differ = sum(int((a[name] ^ b[name]).sum()) for name in a)
    return differ / a.numel() if a.numel() else 0.0


class EarlyBirdStop(Callback):
    """Checks the next mask every few steps; asks to stop at the evaluation after it settled."""

    def __init__(self, level: Level, threshold: float):
        self.level = level
        self.threshold = threshold
        self.every = 1
        self.planned = 0
        self.step = 0
        self.start: Mask | None = None  # the next mask at step 0
        self.previous: Mask | None = None
        self.decides = True  # False in the last level: it hands on no mask
        self.converged_at: int | None = None
        self.calm = 0  # consecutive checks below the threshold
        self.distances: list[list[float]] = []

    def next_mask(self) -> Mask:
        level = self.level
        weights = {name: level.params[name] for name in level.mask}
        return magnitude_prune(weights, level.mask, level.next_sparsity, level.groups, level.scope)

    def on_train_start(self, model: nn.Module, total_steps: int) -> None:
        self.planned = total_steps
        self.every = max(1, math.ceil(total_steps / CHECKS_PER_LEVEL))
        self.start = self.previous = self.next_mask()  # θ0's (the weights are masked by now)
        self.decides = self.start.kept() < self.level.mask.kept()
        self.report()

    def after_step(self, step: int) -> None:
        self.step = step
        if step % self.every:
            return
        current = self.next_mask()
        departed = hamming(self.start, current)
        distance = hamming(self.previous, current) / departed if departed else 1.0
        self.distances.append([step, distance, departed])
        self.calm = self.calm + 1 if distance < self.threshold else 0
        if self.converged_at is None and self.calm >= PATIENCE:
            self.converged_at = step
        self.previous = current
        self.report()

    def on_evaluate(self, step: int, scores: Mapping[str, float]) -> bool:
        stop = self.decides and self.converged_at is not None
        self.report()
        return stop

    def report(self) -> None:
        self.level.stats.update(
            early_bird_threshold=self.threshold,
            check_every=self.every,
            planned_steps=self.planned,
            steps_saved=self.planned - self.step,
            converged_at=self.converged_at,
            distances=list(self.distances),
        )


@CRITERIA.register("early-bird")
class EarlyBird(Magnitude):
    """Magnitude's scores (|W| where training stopped), with training stopped early."""

    name = "early-bird"

    def callbacks(self, level: Level) -> list[Callback]:
        knobs = level.prune if level.prune is not None else PruneArgs()
        return [EarlyBirdStop(level, knobs.early_bird_threshold)]
