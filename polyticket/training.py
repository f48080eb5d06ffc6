"""The one training loop of every task, with a mask enforced on the prunable weights.

Pruned weights are exactly zero in every forward pass and never change: they are zeroed
before training, their gradients are zeroed before clipping and the optimizer step, and
they are zeroed again after each step (weight decay or numerical noise cannot revive them).
No forward hooks, no second copy of the weights.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from polyticket.config import TrainArgs
from polyticket.errors import UserError
from polyticket.layout import RunLayout
from polyticket.masks import Mask, pack_bits
from polyticket.tasks.base import Task, TaskData


def make_accelerator(args: TrainArgs) -> Accelerator:
    # process-wide, as accelerate's own settings: a run has one precision
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    # accelerate keeps one device and one precision per process, refuses an Accelerator that
    # asks for another precision or for the CPU after a GPU (and ignores a GPU asked for after
    # the CPU): a process that trains again (a serial study, a notebook, the tests on a GPU
    # machine) starts its state afresh. A distributed run keeps its process group.
    if AcceleratorState._shared_state:
        AcceleratorState._reset_state(reset_partial_state=PartialState().num_processes == 1)
    return Accelerator(
        cpu=args.cpu,
        mixed_precision=resolve_precision(args),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
    )


def wait_for_everyone(accelerator: Accelerator) -> None:
    """Every process of a distributed run waits here for the others. CPU processes on a machine
    with GPUs (``--cpu`` under torchrun) cannot use ``accelerator.wait_for_everyone``: torch's
    barrier puts its tensor on the machine's GPU ``LOCAL_RANK``, which rank 1 of a one-GPU
    machine lacks ("invalid device ordinal", seen on an H100); an all-reduce of a CPU tensor
    waits the same way."""
    if accelerator.num_processes > 1 and accelerator.device.type == "cpu":
        torch.distributed.all_reduce(torch.zeros(1))
    else:
        accelerator.wait_for_everyone()


def leave_process_group() -> None:
    """Destroys this process's distributed process group, if it is in one (a command run
    under torchrun, at its end). Left to the interpreter's exit, gloo's threads once aborted
    rank 1 of a finished two-process ``find`` ("terminate called without an active
    exception"; seen once in the suite, not in 52 runs after); torch asks programs to destroy
    the group themselves."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    try:
        torch.distributed.destroy_process_group()
    except Exception as exc:  # the command's work is done: say so, do not fail it here
        print(f"polyticket: could not leave the process group: {exc}", file=sys.stderr)
    # accelerate would otherwise still count the processes of a group that is gone
    AcceleratorState._reset_state(reset_partial_state=True)


def resolve_precision(args: TrainArgs, cpu_flags: set[str] | None = None) -> str:
    """``mixed_precision`` with ``auto`` decided: bf16 where the run trains on a CPU with
    native bf16 arithmetic (measured on a Zen 4 core: an e5-small step 2.1x faster than fp32,
    the same F1), else ``no`` (on CUDA too: for sentence-length inputs a step is bound by
    kernel launches and fp32 is as fast or faster, ``benchmarks/precision.py``)."""
    if args.mixed_precision != "auto":
        return args.mixed_precision
    on_cpu = args.cpu or not torch.cuda.is_available()
    flags = cpu_flags if cpu_flags is not None else _cpu_flags()
    return "bf16" if on_cpu and flags & {"avx512_bf16", "amx_bf16"} else "no"


def _cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux; empty elsewhere, where auto means no)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


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


class Callback:
    """A hook into ``train``: override the moments you need. Mask enforcement, score
    accumulation for pruning criteria, early stopping and progress lines plug in here, so
    the loop itself never changes for them."""

    def on_train_start(self, model: nn.Module, total_steps: int) -> None:
        """Before the first step, after the model is placed on its device."""

    def after_backward(self, step: int) -> None:
        """The gradients of one optimizer step are complete (before clipping)."""

    def after_step(self, step: int) -> None:
        """After the optimizer and the schedule stepped; ``step`` counts from 1."""

    def on_evaluate(self, step: int, scores: Mapping[str, float]) -> bool:
        """After an evaluation; return True to stop training here."""
        return False


class MaskEnforcer(Callback):
    """Keeps pruned weights at zero: ``params`` are the live parameters the mask names.

    Each zeroing multiplies the weights (after the optimizer step) or the gradients (after
    backward) by 0/1 masks, one ``torch._foreach_mul_`` over many matrices. ``storage``
    picks how the masks are held on the device:

    - ``bool``: 1 byte per weight, one multiply over all matrices (the default on the CPU);
    - ``bits``: 1 bit per weight (``BitMasks``), unpacked a chunk of matrices at a time
      into a short-lived bool buffer (the default on accelerators, where memory is short);
    - ``float``: 0/1 in the parameters' dtype (4 bytes a weight in fp32).

    Why these defaults (the measured figures are in the README's Benchmarks, from
    ``benchmarks/train_step.py``): on an H100 in bf16 bool masks alone cost 2% of the peak
    memory and bits a quarter of a percent, for a few percent of step time in unpacking; on
    the CPU memory is plentiful and the unpacking would be a pass more over every weight per
    zeroing.
    """

    STORAGES = ("bool", "bits", "float")

    def __init__(self, params: Mapping[str, nn.Parameter], mask: Mask, storage: str | None = None):
        if storage not in (None, *self.STORAGES):
            raise ValueError(f"mask storage {storage!r} is not one of {self.STORAGES}")
        self.params = [params[name] for name in mask]
        self.storage = storage  # None: by the device, once placed
        self._mask = mask  # turned into device tensors at the start, once placed

    def on_train_start(self, model: nn.Module, total_steps: int) -> None:
        device = self.params[0].device if self.params else torch.device("cpu")
        self.storage = self.storage or ("bool" if device.type == "cpu" else "bits")
        if self.storage == "bits":
            self.keep: TensorMasks | BitMasks = BitMasks(self._mask, self.params)
        else:
            dtype = None if self.storage == "float" else torch.bool
            self.keep = TensorMasks(self._mask, self.params, dtype)
        self._mask = None  # not held twice (measured: +3% of a BERT-base step's memory)
        self.zero_weights()

    def after_backward(self, step: int) -> None:
        self.zero_grads()

    def after_step(self, step: int) -> None:
        self.zero_weights()

    @torch.no_grad()
    def zero_weights(self) -> None:
        self.keep.multiply([p.data for p in self.params])

    @torch.no_grad()
    def zero_grads(self) -> None:
        self.keep.multiply([p.grad for p in self.params])


# Both mask holders multiply with ``torch._foreach_mul_``. x * 0 is -0 for a negative x
# (equal to 0; and only the first zeroing of a level meets nonzero pruned weights). An inf
# gradient of a pruned weight would give NaN where masked_fill_ gives 0, but then the kept
# weights' gradients are inf too.


class TensorMasks:
    """Masks as one tensor per matrix beside its parameter, multiplied in one
    ``torch._foreach_mul_`` over all matrices: bool, or (``dtype`` None) 0/1 in each
    parameter's dtype."""

    def __init__(
        self, mask: Mask, params: Sequence[nn.Parameter], dtype: torch.dtype | None = torch.bool
    ):
        self.tensors = [
            mask[name].to(param.device, dtype or param.dtype)
            for name, param in zip(mask, params, strict=True)
        ]

    def multiply(self, tensors: list[torch.Tensor | None]) -> None:
        """``tensors[i] *= mask i`` for every tensor that is not None."""
        which = [i for i, t in enumerate(tensors) if t is not None]
        if which:  # torch refuses an empty list
            torch._foreach_mul_([tensors[i] for i in which], [self.tensors[i] for i in which])


class BitMasks:
    """Masks at 1 bit per weight beside their parameters, multiplied in chunks of matrices.

    The masks are packed (little bit order, each matrix padded to whole bytes) into one
    uint8 buffer per chunk of consecutive matrices on one device, of about ``chunk_weights``
    weights (a transformer layer of mBERT is 7M). A multiply unpacks one chunk into a bool
    buffer (1 byte a weight, freed before the next chunk), then multiplies that chunk's
    matrices with one ``torch._foreach_mul_``: the masks held between zeroings are an eighth
    of bool masks.
    """

    def __init__(self, mask: Mask, params: Sequence[nn.Parameter], chunk_weights: int = 1 << 23):
        names = list(mask)
        self.shapes = [tuple(mask[name].shape) for name in names]
        devices = [param.device for param in params]
        self.chunks: list[tuple[list[int], list[int], torch.Tensor]] = []  # which, offsets, bits
        sizes = [mask[name].numel() for name in names]
        for which in consecutive_groups(sizes, chunk_weights, devices):
            packed = [pack_bits(mask[names[i]]) for i in which]
            offsets = [0, *itertools.accumulate(8 * bits.size for bits in packed)][:-1]
            bits = torch.from_numpy(np.concatenate(packed)).to(devices[which[0]])
            self.chunks.append((which, offsets, bits))
        self._powers = {
            device: torch.tensor([1 << i for i in range(8)], dtype=torch.uint8, device=device)
            for device in set(devices)
        }

    def nbytes(self) -> int:
        return sum(bits.numel() for _, _, bits in self.chunks)

    def unpack(self, chunk: int) -> list[torch.Tensor]:
        """One chunk's masks as bool tensors, views of one fresh buffer."""
        which, offsets, bits = self.chunks[chunk]
        # bit i of byte j is weight 8j + i; 0/1 bytes are valid bools, so no second buffer
        powers = self._powers[bits.device]
        flat = torch.bitwise_and(bits.unsqueeze(1), powers).ne_(0).view(torch.bool).view(-1)
        return [
            flat[offset : offset + math.prod(self.shapes[i])].view(self.shapes[i])
            for i, offset in zip(which, offsets, strict=True)
        ]

    def multiply(self, tensors: list[torch.Tensor | None]) -> None:
        """``tensors[i] *= mask i`` for every tensor that is not None."""
        for chunk, (which, _, _) in enumerate(self.chunks):
            present = [j for j, i in enumerate(which) if tensors[i] is not None]
            if present:
                keep = self.unpack(chunk)
                torch._foreach_mul_(
                    [tensors[which[j]] for j in present], [keep[j] for j in present]
                )


def consecutive_groups(
    sizes: Sequence[int], limit: int, keys: Sequence[object] | None = None
) -> list[list[int]]:
    """The indices of ``sizes`` in consecutive groups whose sizes sum to at most ``limit``
    (an item larger than ``limit`` alone) and, with ``keys``, whose items share one key."""
    groups: list[list[int]] = []
    total = 0
    for i, size in enumerate(sizes):
        same_key = keys is None or not groups or keys[groups[-1][0]] == keys[i]
        if groups and same_key and total + size <= limit:
            groups[-1].append(i)
            total += size
        else:
            groups.append([i])
            total = size
    return groups


class ProgressLines(Callback):
    """One line per evaluation (step, score, speed, time left) where no progress bar shows:
    under a scheduler or with output to a file, a long level would otherwise print nothing
    for minutes."""

    def __init__(self, desc: str, metric: str, stream: Any = None):
        self.desc, self.metric = desc, metric
        self.stream = stream or sys.stderr

    def on_train_start(self, model: nn.Module, total_steps: int) -> None:
        self.total, self.started = total_steps, time.monotonic()

    def on_evaluate(self, step: int, scores: Mapping[str, float]) -> bool:
        elapsed = time.monotonic() - self.started
        speed = step / elapsed if elapsed > 0 else math.inf
        left = (self.total - step) / speed if speed > 0 else math.inf
        print(
            f"{self.desc}: step {step}/{self.total}, {self.metric} {scores[self.metric]:.4f}, "
            f"{speed:.2f} steps/s, {format_duration(left)} left",
            file=self.stream,
            flush=True,
        )
        return False


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class RunLog:
    """JSON lines and TensorBoard scalars, written by the main process only."""

    def __init__(self, run: RunLayout | None, accelerator: Accelerator, tag: str = ""):
        self.active = run is not None and accelerator.is_main_process
        self.tag = tag
        if self.active:
            run.root.mkdir(parents=True, exist_ok=True)
            self.jsonl = open(run.log, "a", encoding="utf-8")
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(run.tensorboard))

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


def epoch_steps(args: TrainArgs, batches: int) -> int:
    """Optimizer steps in one pass over ``batches`` (per process) batches."""
    return math.ceil(batches / args.gradient_accumulation_steps)


def run_steps(args: TrainArgs, batches: int) -> int:
    """Optimizer steps of one training run: ``--max-steps``, else the epochs."""
    return args.max_steps or max(1, math.ceil(args.epochs * epoch_steps(args, batches)))


def linear_schedule(
    optimizer: torch.optim.Optimizer, args: TrainArgs, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate of ``train``: a linear warm-up over ``warmup_ratio`` of the
    ``total`` steps, rounded up as the Trainer's ``get_warmup_steps`` (0.25 × 10 is 3) but
    not for float noise (0.07 × 100 is 7, where the Trainer's 7.000000000000001 makes 8),
    then a linear decay to 0 at the last one."""
    warmup = math.ceil(args.warmup_ratio * total - 1e-9)
    return get_linear_schedule_with_warmup(optimizer, warmup, total)


def lr_multipliers(args: TrainArgs, total: int) -> list[float]:
    """The factor on ``learning_rate`` of each of ``total`` optimizer steps under
    ``linear_schedule`` (read from the schedule itself, so the two cannot disagree)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = linear_schedule(optimizer, args, total)
    factors = []
    for _ in range(total):
        factors.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    return factors


def make_optimizer(
    model: nn.Module, args: TrainArgs, fused: bool | None = None
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: not on biases and norms (1-D, or named so,
    as the Trainer decides: T5's 2-D ``relative_attention_bias`` included).

    ``fused=None`` takes torch's fused kernel where the parameters live on the CPU or CUDA:
    on CUDA one launch per parameter group instead of a multi-tensor loop of several kernels
    (a fine-tuning step on short sentences is bound by kernel launches, not arithmetic: see
    ``benchmarks/precision.py``), on the CPU one vectorised pass instead of a loop over
    tensors (measured: 5.3x faster for e5-small's 24M parameters).
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        plain = param.ndim < 2 or "norm" in name.lower() or "bias" in name.lower()
        (no_decay if plain else decay).append(param)
    if fused is None:
        fused = all(param.device.type in ("cpu", "cuda") for param in model.parameters())
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.learning_rate,
        eps=args.adam_epsilon,
        fused=fused,
    )


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
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train ``model`` from its current weights with a fresh optimizer and schedule, the
    mask enforced, and ``callbacks`` called at their moments."""
    context = dict(context or {})
    set_seed(args.seed)
    loader = train_loader(data.train, data.collator, args.batch_size, args.seed)
    evaluation = eval_loader(data.eval, data.eval_collator or data.collator, args.eval_batch_size)
    model.to(accelerator.device)  # before the optimizer, which picks its kernel by device
    optimizer = make_optimizer(model, args)
    model, optimizer, loader, evaluation = accelerator.prepare(model, optimizer, loader, evaluation)
    steps_per_epoch = epoch_steps(args, len(loader))
    total = run_steps(args, len(loader))
    # The scheduler is stepped by hand once per optimizer step: accelerate's wrapper would step
    # it once per process, for a schedule computed on a per-process loader.
    scheduler = linear_schedule(optimizer, args, total)
    eval_every = args.eval_steps or steps_per_epoch
    desc = context.get("desc", "training")
    hooks = [MaskEnforcer(params, mask)] if mask is not None else []
    hooks += callbacks
    main = accelerator.is_main_process
    if main and not sys.stderr.isatty():
        hooks.append(ProgressLines(desc, task.metric))
    for hook in hooks:
        hook.on_train_start(model, total)

    result = TrainResult(task.metric, task.greater_is_better, math.nan, 0, 0)
    # disable=None: a bar on a terminal only (ProgressLines speaks elsewhere)
    progress = tqdm(
        total=total, desc=desc, unit="step", disable=None if main else True, leave=False
    )
    step = 0
    stop = False
    window: list[torch.Tensor] = []
    model.train()
    while step < total and not stop:
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                window.append(loss.detach())
                if accelerator.sync_gradients:
                    for hook in hooks:
                        hook.after_backward(step + 1)
                    if args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            step += 1
            for hook in hooks:
                hook.after_step(step)
            progress.update()
            # the mean over the accumulated micro-batches and over processes
            value = accelerator.reduce(torch.stack(window).mean(), reduction="mean").item()
            window.clear()
            if not math.isfinite(value):
                raise UserError(_diverged(value, step, total, scheduler, accelerator, desc))
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
                # every hook sees the evaluation, even when an earlier one asks to stop
                stop = any([hook.on_evaluate(step, scores) for hook in hooks])
            if step >= total or stop:
                break
    result.steps = step
    progress.close()
    accelerator.free_memory()
    return result


def _diverged(
    value: float, step: int, total: int, scheduler, accelerator: Accelerator, desc: str
) -> str:
    """Why a run whose loss is no longer finite stops: every step after it would train NaN
    weights, and the masks pruned from them would be noise."""
    advice = "lower --learning-rate"
    if accelerator.mixed_precision == "fp16":
        advice += ", or train in bf16 or fp32 (fp16 overflows, T5's feed-forward layers above all)"
    return (
        f"{desc}: the training loss is {value} at step {step} of {total} (learning rate "
        f"{scheduler.get_last_lr()[0]:.3g}): the run diverged; {advice}"
    )


def _evaluate(model, task: Task, loader: DataLoader, accelerator: Accelerator, data: TaskData):
    model.eval()
    try:
        return task.evaluate(model, loader, accelerator, data)
    finally:
        model.train()
