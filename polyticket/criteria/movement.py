"""Movement pruning (Sanh et al. 2020): keep the weights that training moves away from zero.

The score of a weight is accumulated over the level's training as S = −Σ_t W_t · ∂L/∂W_t,
one term per optimizer step, taken once the gradients of the step are complete (after
gradient accumulation and the all-reduce, before clipping: the first-order estimate of how
much the loss falls as |W| grows, which clipping would only rescale per step). A weight
whose update pushes it away from zero (W and −grad of the same sign) gains score.

- Pruned weights are zero in every forward pass (``training.MaskEnforcer``), so their terms
  are zero; ``pruning.select`` ranks them first anyway.
- The sums live on the parameters' device in float32 and come to the CPU for ``scores``.
- Under fp16 mixed precision the gradients at that moment are loss-scaled: each step's
  term carries that step's scale. Use bf16 or full precision for exact movement scores.
- A level's scores depend on its training alone (they start at zero after each rewind),
  so a resumed run that retrains a level gets the same scores.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from polyticket.criteria import CRITERIA
from polyticket.criteria.base import Criterion, Level
from polyticket.training import Callback


class MovementScores(Callback):
    """Accumulates −W·grad for each parameter after every backward pass of an optimizer step."""

    def __init__(self, params: Mapping[str, nn.Parameter]):
        self.params = dict(params)
        self.sums: dict[str, torch.Tensor] = {}

    def on_train_start(self, model: nn.Module, total_steps: int) -> None:
        # Created here, not in __init__: the model is on its device only now.
        self.sums = {
            name: torch.zeros_like(p, dtype=torch.float32) for name, p in self.params.items()
        }

    @torch.no_grad()
    def after_backward(self, step: int) -> None:
        for name, param in self.params.items():
            if param.grad is not None:
                self.sums[name].sub_(param.detach().float() * param.grad.float())

    def scores(self) -> dict[str, torch.Tensor]:
        return {name: s.cpu() for name, s in self.sums.items()}


@CRITERIA.register("movement")
class Movement(Criterion):
    def __init__(self) -> None:
        self.accumulator: MovementScores | None = None

    def callbacks(self, level: Level) -> list[Callback]:
        self.accumulator = MovementScores({name: level.params[name] for name in level.mask})
        return [self.accumulator]

    def scores(self, level: Level) -> dict[str, torch.Tensor]:
        if self.accumulator is None:
            raise RuntimeError("movement scores need the level's training (callbacks first)")
        return self.accumulator.scores()
