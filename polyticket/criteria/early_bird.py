"""Early-bird search (You et al. 2020): stop a level's training once its next mask has settled.

During the level's training the magnitude mask that the level would hand on (the projected
|W|, below, pruned to ``next_sparsity`` within the level's mask and ranking) is taken
every ``ceil(planned steps / CHECKS_PER_LEVEL)`` steps, and at step 0 (θ0). The distance of
a check is the share of the mask's *departures* (the weights where it differs from the
step-0 mask: what training has decided so far) that changed since the previous check:
Hamming(previous, current) / Hamming(step 0, current), 1 while nothing has departed. When it
is below ``early_bird_threshold`` at ``PATIENCE`` checks in a row, the mask has converged
and training stops at the next evaluation, so that the level's score comes from an
evaluation like every other level's (the steps saved are a multiple of ``eval_steps``).
The scores are the projected |W| at the stop.

Why relative: You et al. take a mask of BatchNorm channels once an epoch and stop when the
newest's distances to the four before it (the share of all channels that differ) are all at
most 0.1 (``EarlyBird`` in GATECH-EIC/Early-Bird-Tickets). For single weights of a
pretrained model the share of all weights that changed is tiny from the first steps on,
because θ0's magnitudes decide almost every entry (on e5-small, 0.0011 of the weights
changed at step 3 of 50, during warm-up): measured on the demo data, stopping on it chose
masks at step 9 with a Jaccard of 0.985 to IMP's and less than half IMP's F1 (0.37 against
0.77 in English). What makes a ticket is the ~2% of weights where it departs from θ0's
magnitude mask, so that is what must have settled.

Why projected: a level stopped early has gone only part of the way its schedule would take
it. The weights are scored where they would end if they kept their direction for the
planned steps: θ0 + (W - θ0) × (the learning rate summed over the planned steps / summed up
to the stop; ``training.lr_multipliers``, 1.70 at step 20 of 50 under the demo's warm-up
and linear decay). The checks take the projected masks too, so that what settles is the
mask that will be handed on. At the same steps on the demo data that raised the F1 at 50%
from 0.44 to 0.66 in English. The projection keeps a float copy of the level's prunable
weights (θ0) while the level trains: 4 bytes a weight.

- Every level that hands on a mask may stop early, the dense level 0 included: You et
  al. draw their tickets from the early epochs of dense training, and the dense level is
  where most of a 50% ticket's selection steps are. The price: the run's own ticket rule
  (``tickets.EPSILON``) then compares levels with a partly trained dense score, which
  leans towards sparser levels; a study's ``methods`` table compares the early-bird levels
  with the IMP cell's fully trained ones instead. The last level hands on no mask (nothing
  left to prune at its sparsity): it never stops early, so the ticket's own sparsity is
  scored after full training.
- The threshold (``config.PruneArgs.early_bird_threshold``, 0.1): at most a tenth of the
  departures changed between two checks. You et al.'s 0.1 bounds another quantity (a share
  of all channels), so the number is a starting point, not their setting carried over.
- ``PATIENCE`` checks in a row, and stopping only at an evaluation, guard against a single
  quiet check.
- The metrics of each level report ``planned_steps``, ``steps_saved``, ``converged_at``,
  ``projection`` (the factor at the stop) and every check's ``distances`` (``[step,
  distance, departed]``, departed: the share of the weights where the mask differs from
  step 0's).

What the measurements (README, "Other finders": thresholds 0.1-0.3 on the demo's and
demo-full's budgets, seeds 1-3, Arabic 1-5) say about the rule: the distances of a level
agree across seeds within 0.03 at every check, because the projection's factor, a function
of the schedule, drives most of their fall; the threshold and the schedule, not the seed's
progress, pick the step. At demo-full's budget 0.2 stops every level at its first
evaluation (half IMP's steps, Jaccard 0.98) within ε = 0.02 of IMP's F1 in English, Russian
and Chinese, not in Arabic (−0.049±0.022 over five seeds), whose model learns slowest. Why a
gap stays: IMP's score at a level is its mask trained with the seed that chose it, and at
these budgets that pairing is much of the score (the IMP 50% mask of seed 1 scores F1 0.773
in English trained with seed 1 and 0.37-0.47 with seeds 2-5); a level stopped at half its
steps has seen half the batches that the target level trains on.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import torch
from torch import nn

from polyticket.config import PruneArgs, TrainArgs
from polyticket.criteria import CRITERIA
from polyticket.criteria.base import Level
from polyticket.criteria.magnitude import Magnitude
from polyticket.masks import Mask
from polyticket.pruning import magnitude_prune
from polyticket.training import Callback, lr_multipliers

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
        self.theta0: dict[str, torch.Tensor] = {}  # the level's start, for the projection
        self.lr_sums: list[float] = [0.0]  # the schedule's factors summed up to each step

    def projection(self) -> float:
        """How far the weights travel in all planned steps, in multiples of how far they
        have travelled: the learning rate summed over the planned steps over its sum so far
        (1 at step 0 and once the level trained fully)."""
        done = self.lr_sums[min(self.step, self.planned)]
        return self.lr_sums[self.planned] / done if done and self.step < self.planned else 1.0

    def weights(self) -> dict[str, torch.Tensor]:
        """Where the level's weights end if they keep their direction: θ0 + (W - θ0) ×
        ``projection()`` (the live weights themselves while that is 1)."""
        live = {name: self.level.params[name].detach() for name in self.level.mask}
        factor = self.projection()
        if factor == 1.0:
            return live
        return {
            name: self.theta0[name] + factor * (w.float() - self.theta0[name])
            for name, w in live.items()
        }

    def next_mask(self) -> Mask:
        level = self.level
        return magnitude_prune(self.weights(), level.mask, level.next_sparsity, level.ranking)

    def on_train_start(self, model: nn.Module, total_steps: int) -> None:
        self.planned = total_steps
        schedule = lr_multipliers(self.level.train or TrainArgs(), total_steps)
        self.lr_sums = [0.0, *itertools.accumulate(schedule)]
        self.theta0 = {n: self.level.params[n].detach().float().clone() for n in self.level.mask}
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
            projection=self.projection(),
            distances=list(self.distances),
        )


@CRITERIA.register("early-bird")
class EarlyBird(Magnitude):
    """The projected |W| where training stopped, with training stopped early."""

    knobs = ("early_bird_threshold",)

    def __init__(self) -> None:
        self.stop: EarlyBirdStop | None = None  # the callback of the level in training

    def callbacks(self, level: Level) -> list[Callback]:
        knobs = level.prune if level.prune is not None else PruneArgs()
        self.stop = EarlyBirdStop(level, knobs.early_bird_threshold)
        return [self.stop]

    def scores(self, level: Level) -> dict[str, torch.Tensor]:
        if self.stop is None or self.stop.level is not level:  # trained without the callback
            return super().scores(level)
        return {name: w.abs() for name, w in self.stop.weights().items()}
