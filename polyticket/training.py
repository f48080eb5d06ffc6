"""The one training loop of every task, with a mask enforced on the prunable weights.

Pruned weights are exactly zero in every forward pass and never change: they are zeroed
before training, their gradients are zeroed before clipping and the optimizer step, and
they are zeroed again after each step (weight decay or numerical noise cannot revive them).
No forward hooks, no second copy of the weights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from polyticket.config import TrainArgs
from polyticket.masks import Mask
from polyticket.tasks.base import Task, TaskData


def make_accelerator(args: TrainArgs) -> Accelerator:
    return Accelerator(
        cpu=args.cpu,
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
    )


def train_loader(
    features: list[dict[str, Any]], collator: Any, batch_size: int, seed: int
) -> DataLoader:
    """Shuffled with its own generator, so the order depends on the seed alone."""
    return DataLoader(
        features,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(seed),
    )


def eval_loader(features: list[dict[str, Any]], collator: Any, batch_size: int) -> DataLoader:
    return DataLoader(features, batch_size=batch_size, shuffle=False, collate_fn=collator)


class MaskEnforcer:
    """Keeps pruned weights at zero: ``params`` are the live parameters the mask names."""

    def __init__(self, params: Mapping[str, nn.Parameter], mask: Mask):
        self.params = [params[name] for name in mask]
        self.pruned = [(~mask[name]).to(params[name].device) for name in mask]

    @torch.no_grad()
    def zero_weights(self) -> None:
        for param, pruned in zip(self.params, self.pruned, strict=True):
            param.masked_fill_(pruned, 0.0)

    @torch.no_grad()
    def zero_grads(self) -> None:
        for param, pruned in zip(self.params, self.pruned, strict=True):
            if param.grad is not None:
                param.grad.masked_fill_(pruned, 0.0)


class RunLog:
    """JSON lines and TensorBoard scalars, written by the main process only."""

    def __init__(self, directory: Path | None, accelerator: Accelerator, tag: str = ""):
        self.active = directory is not None and accelerator.is_main_process
        self.tag = tag
        if self.active:
            directory.mkdir(parents=True, exist_ok=True)
            self.jsonl = open(directory / "log.jsonl", "a", encoding="utf-8")
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(directory / "tensorboard"))

    def log(self, step: int, kind: str, values: Mapping[str, float], **context: Any) -> None:
        if not self.active:
            return
        self.jsonl.write(json.dumps({**context, "step": step, "kind": kind, **values}) + "\n")
        self.jsonl.flush()
        for key, value in values.items():
            self.tensorboard.add_scalar(f"{self.tag}{kind}/{key}", value, step)

    def close(self) -> None:
        if self.active:
            self.jsonl.close()
            self.tensorboard.close()


@dataclass
class TrainResult:
    metric: str
    greater_is_better: bool
    best_score: float
    best_step: int
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def train(
    model: nn.Module,
    task: Task,
    data: TaskData,
    args: TrainArgs,
    accelerator: Accelerator,
    params: Mapping[str, nn.Parameter],
    mask: Mask | None = None,
    log: RunLog | None = None,
    context: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` from its current weights with a fresh optimizer and schedule."""
    context = dict(context or {})
    set_seed(args.seed)
    loader = train_loader(data.train, data.collator, args.batch_size, args.seed)
    evaluation = eval_loader(data.eval, data.eval_collator or data.collator, args.eval_batch_size)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.learning_rate,
        eps=args.adam_epsilon,
    )
    model, optimizer, loader, evaluation = accelerator.prepare(model, optimizer, loader, evaluation)
    steps_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    total = args.max_steps or max(1, math.ceil(args.epochs * steps_per_epoch))
    # The scheduler is stepped by hand once per optimizer step: accelerate's wrapper would step
    # it once per process, for a schedule computed on a per-process loader.
    scheduler = get_linear_schedule_with_warmup(optimizer, round(args.warmup_ratio * total), total)
    eval_every = args.eval_steps or steps_per_epoch
    enforcer = MaskEnforcer(params, mask) if mask is not None else None
    if enforcer:
        enforcer.zero_weights()

    result = TrainResult(task.metric, task.greater_is_better, math.nan, 0, total)
    progress = tqdm(
        total=total,
        desc=context.get("desc", "training"),
        unit="step",
        disable=None if accelerator.is_main_process else True,
        leave=False,
    )
    step = 0
    window: list[torch.Tensor] = []
    model.train()
    while step < total:
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                window.append(loss.detach())
                if accelerator.sync_gradients:
                    if enforcer:
                        enforcer.zero_grads()
                    if args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            if enforcer:
                enforcer.zero_weights()
            step += 1
            progress.update()
            # the mean over the accumulated micro-batches and over processes
            value = accelerator.reduce(torch.stack(window).mean(), reduction="mean").item()
            window.clear()
            result.losses.append(value)
            if step % args.log_steps == 0 and log:
                log.log(step, "train", {"loss": value, "lr": scheduler.get_last_lr()[0]}, **context)
            if step % eval_every == 0 or step == total:
                scores = _evaluate(model, task, evaluation, accelerator, data)
                result.history.append({"step": step, **scores})
                if log:
                    log.log(step, "eval", scores, **context)
                score = scores[task.metric]
                if math.isnan(result.best_score) or task.better(score, result.best_score):
                    result.best_score, result.best_step = score, step
                progress.set_postfix({task.metric: f"{score:.4g}"})
            if step >= total:
                break
    progress.close()
    accelerator.free_memory()
    return result


def _evaluate(model, task: Task, loader: DataLoader, accelerator: Accelerator, data: TaskData):
    model.eval()
    try:
        return task.evaluate(model, loader, accelerator, data)
    finally:
        model.train()
