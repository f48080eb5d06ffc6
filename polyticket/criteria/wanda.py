"""Wanda (Sun et al. 2023): activation-aware one-shot scores, |W| times the input's norm.

The score of weight W_ij (output i, input j) of a linear layer is |W_ij| · ‖X_j‖₂, where X_j
is the j-th input feature of the layer over the tokens of a calibration set. It needs
forward passes only: the mask never depends on training.

- When: at the start of each level's training (``on_train_start``), i.e. on the rewound
  weights θ0 with the level's mask already applied (pruned weights are zero, and so are the
  activations they no longer produce). The level still trains, but only to measure the
  score of its mask; the level's ``selection_steps`` is 0: no training step chose the mask.
- Calibration set: ``CALIBRATION_EXAMPLES`` training examples drawn with the level's seed
  (Wanda uses 128 sequences), run in eval mode (no dropout) under a forked CPU generator, so
  the level's training is exactly what it would be without the calibration.
- Tokens: padding is excluded from the inputs that are the encoder's tokens (every layer of
  an encoder; in mT5's decoder, the cross-attention's keys and values, which read the
  encoder's output); the decoder's own positions all count.
- Layers: the linear layer that owns each prunable weight (``nn.Linear``: input features
  are the weight's columns; GPT-2's ``Conv1D``: its rows); a weight of anything else
  (``--prune-include`` of embeddings or norms) is refused: it has no input features.
- Ranking: by default per output row (scope ``row``), the paper's comparison group: each
  output neuron keeps the same share of its inputs. Ranked globally instead (``--scope
  global``), the scores of whole matrices differ by the scale of their inputs and some
  matrices lose nearly all their weights (e5-small at 50%: up to every weight of a feed-
  forward output matrix).
- One pass: each layer's inputs are measured on the level's starting weights; the reference
  code prunes block by block and measures the next block on the pruned block's outputs
  (on a tiny BERT the two masks differed in 2 of 16,384 weights).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from polyticket.criteria import CRITERIA
from polyticket.criteria.base import Criterion, Level
from polyticket.errors import UserError
from polyticket.training import Callback

CALIBRATION_EXAMPLES = 128
CALIBRATION_BATCH = 16
LINEAR = (nn.Linear, Conv1D)


def owning_modules(model: nn.Module, params: Mapping[str, nn.Parameter]) -> dict[str, nn.Module]:
    """For each parameter, the linear layer whose ``weight`` it is."""
    by_id = {id(module.weight): module for module in model.modules() if isinstance(module, LINEAR)}
    missing = [name for name, p in params.items() if id(p) not in by_id]
    if missing:
        raise UserError(
            f"wanda scores the weights of linear layers by their inputs; {missing[0]} is not "
            f"one's (leave it out of --prune-include, or prune by another --method)"
        )
    return {name: by_id[id(p)] for name, p in params.items()}


@torch.no_grad()
def input_norms(
    model: nn.Module, modules: Mapping[str, nn.Module], batches: Iterable[Mapping[str, Any]]
) -> tuple[dict[str, torch.Tensor], int]:
    """‖X_j‖₂ of each module's input features over the batches' tokens (the encoder's
    padding excluded), and the number of tokens counted (by the attention mask)."""
    squares: dict[str, torch.Tensor] = {}
    tokens: dict[str, torch.Tensor | None] = {"mask": None, "encoded": None}
    decoder = _decoder_modules(model)

    def hook(name: str):
        def add(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
            x = inputs[0].detach().float()
            keep = tokens["mask"]
            if keep is not None and _reads_encoder_tokens(module, inputs[0], decoder, tokens):
                x = x[keep.bool()]
            total = x.reshape(-1, x.shape[-1]).pow(2).sum(0)
            squares[name] = squares[name] + total if name in squares else total

        return add

    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    if decoder:  # the encoder's output, which the decoder's cross-attention reads
        handles.append(
            model.get_encoder().register_forward_hook(
                lambda module, inputs, output: tokens.update(encoded=output[0])
            )
        )
    counted = 0
    try:
        for batch in batches:
            tokens.update(mask=batch.get("attention_mask"), encoded=None)
            if tokens["mask"] is not None:
                counted += int(tokens["mask"].sum())
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: s.sqrt() for name, s in squares.items()}, counted


def _decoder_modules(model: nn.Module) -> set[int]:
    """The ids of an encoder-decoder model's decoder modules (empty for an encoder)."""
    if not getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return set()
    return {id(module) for module in model.get_decoder().modules()}


def _reads_encoder_tokens(
    module: nn.Module, x: torch.Tensor, decoder: set[int], tokens: Mapping[str, Any]
) -> bool:
    """Whether a layer's input is one vector per encoder token: any layer outside a decoder
    whose input has the attention mask's shape; in a decoder, only the encoder's output
    itself (the cross-attention's keys and values), told by identity, since a decoder as
    long as the batch's inputs has their shape too."""
    if id(module) in decoder:
        return x is tokens["encoded"]
    return tuple(tokens["mask"].shape) == tuple(x.shape[:-1])


def wanda_scores(
    params: Mapping[str, torch.Tensor],
    modules: Mapping[str, nn.Module],
    norms: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """|W| times the norm of the input feature each weight reads, on the CPU."""
    out = {}
    for name, weight in params.items():
        norm = norms[name].to(weight.device)
        # Linear weights are (out, in); Conv1D weights are (in, out).
        by_input = norm[:, None] if isinstance(modules[name], Conv1D) else norm[None, :]
        out[name] = (weight.detach().float().abs() * by_input).cpu()
    return out


def calibration_batches(data: Any, seed: int, device: torch.device) -> list[dict[str, Any]]:
    """Up to ``CALIBRATION_EXAMPLES`` training examples drawn with ``seed``, collated."""
    generator = torch.Generator().manual_seed(seed)
    count = min(CALIBRATION_EXAMPLES, len(data.train))
    chosen = torch.randperm(len(data.train), generator=generator)[:count].tolist()
    batches = []
    for start in range(0, count, CALIBRATION_BATCH):
        batch = data.collator([data.train[i] for i in chosen[start : start + CALIBRATION_BATCH]])
        batches.append({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()})
    return batches


class WandaCalibration(Callback):
    """Computes the level's scores on its starting weights, before any training step."""

    def __init__(self, level: Level):
        self.level = level
        self.scores: dict[str, torch.Tensor] | None = None

    def on_train_start(self, model: nn.Module, total_steps: int) -> None:
        level = self.level
        network = level.model if level.model is not None else model
        params = {name: level.params[name] for name in level.mask}
        modules = owning_modules(network, params)
        device = next(iter(params.values())).device
        was_training = network.training
        network.eval()
        # A fork of the CPU generator: collators that draw (MLM masking) leave the level's
        # training draws as they would be without the calibration.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(level.seed)
            batches = calibration_batches(level.data, level.seed, device)
            norms, tokens = input_norms(network, modules, batches)
        network.train(was_training)
        self.scores = wanda_scores(params, modules, norms)
        level.stats.update(
            selection_steps=0,  # no training step chose the next mask
            calibration_examples=min(CALIBRATION_EXAMPLES, len(level.data.train)),
            calibration_tokens=tokens,
        )


@CRITERIA.register("wanda")
class Wanda(Criterion):
    scope = "row"

    def __init__(self) -> None:
        self.calibration: WandaCalibration | None = None

    def callbacks(self, level: Level) -> list[Callback]:
        self.calibration = WandaCalibration(level)
        return [self.calibration]

    def scores(self, level: Level) -> dict[str, torch.Tensor]:
        if self.calibration is None or self.calibration.scores is None:
            raise RuntimeError("wanda scores are computed at the start of the level's training")
        return self.calibration.scores
