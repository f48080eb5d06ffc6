"""Masked against dense training steps: time and peak memory, side by side in one run.

    python benchmarks/train_step.py [--steps N] [--smoke] [--device cuda] [--dtype bf16]

Token classification, forward + backward + clipping + AdamW, half the prunable weights
pruned at random. Variants: ``dense`` (no mask), ``bool-masks``, ``bit-masks`` and
``float-masks`` (``MaskEnforcer``'s storages: bool masks multiplied in one
``torch._foreach_mul_`` per zeroing, the CPU's default; bit-packed masks unpacked a chunk
at a time, the accelerators' default; 0/1 masks of the weights' dtype) and ``hooks``
(``torch.nn.utils.prune``, the original code's way). Times:
the variants alternate step by step, so machine noise hits all alike; the ratios to dense
are the figures. Peak memory: each variant in a fresh process (CPU: peak resident memory
of two steps, the peak reset after building the model, above what the process held
before; CUDA: peak allocated). Shapes:
BERT-base, batch 8×128 on the CPU; with a CUDA device also mBERT, batch 32×128, in fp32
and bf16 (autocast over fp32 weights, as accelerate's mixed precision).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.nn.utils import prune as torch_prune
from transformers import BertConfig, BertForTokenClassification

from polyticket.config import TrainArgs
from polyticket.masks import Mask
from polyticket.models.families import find_prunable
from polyticket.pruning import random_prune
from polyticket.training import MaskEnforcer, make_optimizer

STORAGES = {"bool-masks": "bool", "bit-masks": "bits", "float-masks": "float"}
VARIANTS = ("dense", *STORAGES, "hooks")
# Timed steps per variant: a BERT-base step takes seconds on the CPU; an mBERT step tens of
# milliseconds on a GPU, where with 5 steps two runs gave bf16 ratios up to 14% apart.
STEPS = {"cpu": 3, "cuda": 20}
SHAPES = {  # name: (vocab, hidden, layers, heads, ffn)
    "bert-base": (30522, 768, 12, 12, 3072),
    "mbert": (119547, 768, 12, 12, 3072),
    "smoke": (500, 64, 2, 2, 128),
}


def build(shape: str, variant: str, device: str, fused_adamw: bool | None = None):
    """A model of ``shape`` with its optimizer (``polyticket.training``'s: fused AdamW
    unless ``fused_adamw`` says otherwise) and its mask enforcer for ``variant``."""
    vocab, hidden, layers, heads, ffn = SHAPES[shape]
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        num_labels=7,
    )
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it trains: seconds less on a GPU
        model = BertForTokenClassification(config)
    prunable = find_prunable(model)
    mask = random_prune(Mask.ones(prunable.shapes), 0.5, seed=0)
    enforcer = None
    if variant in STORAGES or variant == "default-masks":  # the latter: the device's default
        enforcer = MaskEnforcer(prunable.params, mask, storage=STORAGES.get(variant))
        enforcer.on_train_start(model, 0)
    elif variant == "hooks":
        modules = dict(model.base_model.named_modules())
        for name in mask:
            module = modules[name.removesuffix(".weight")]
            torch_prune.custom_from_mask(module, "weight", mask[name].to(device))
    optimizer = make_optimizer(model, TrainArgs(learning_rate=1e-5), fused=fused_adamw)
    return model, optimizer, enforcer


def batch(shape: str, size: int, length: int, device: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, SHAPES[shape][0], (size, length), generator=generator)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": torch.randint(0, 7, (size, length), generator=generator).to(device),
    }


def step(model, optimizer, enforcer, inputs, dtype: str) -> None:
    """One optimizer step as ``polyticket.training.train`` takes it."""
    device = inputs["input_ids"].device.type
    autocast = (
        torch.autocast(device, dtype=torch.bfloat16)
        if dtype == "bf16"
        else contextlib.nullcontext()
    )
    with autocast:
        loss = model(**inputs).loss
    loss.backward()
    if enforcer:
        enforcer.after_backward(1)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    if enforcer:
        enforcer.after_step(1)
    optimizer.zero_grad()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def rotated(variants: list, index: int) -> list:
    """``variants`` in round ``index``'s order: each round starts with another variant, so
    that none always runs first (with a fixed order, dense, always first, came out ~7%
    slower than every other variant in ``times``)."""
    shift = index % len(variants)
    return [*variants[shift:], *variants[:shift]]


def times(shape, size, length, device, dtype, steps: int, variants=VARIANTS) -> dict:
    """Median seconds per step of each variant, alternating step by step in a rotating order."""
    runs = {v: build(shape, v, device) for v in variants}
    inputs = batch(shape, size, length, device)
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    for index in range(steps + 1):  # the first step warms allocators and kernels up
        for variant in rotated(list(variants), index):
            model, optimizer, enforcer = runs[variant]
            sync(device)
            start = time.perf_counter()
            step(model, optimizer, enforcer, inputs, dtype)
            sync(device)
            if index:
                seconds[variant].append(time.perf_counter() - start)
    return {v: statistics.median(s) for v, s in seconds.items()}


def peak_memory(shape, size, length, device, dtype, variant) -> int:
    """Peak bytes of two steps of one variant above what the process held before building
    the model (masks, hooks' copies and optimizer state included), measured in this process
    (start it fresh)."""
    before = _resident("VmRSS") if device == "cpu" else 0
    model, optimizer, enforcer = build(shape, variant, device)
    inputs = batch(shape, size, length, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        # the peak so far is the model's construction (transient copies), not training's
        Path("/proc/self/clear_refs").write_text("5")
    for _ in range(2):
        step(model, optimizer, enforcer, inputs, dtype)
    sync(device)
    return torch.cuda.max_memory_allocated() if device == "cuda" else _resident() - before


def _resident(field: str = "VmHWM") -> int:
    """Resident memory of this process in bytes: now (VmRSS) or at its peak since the last
    reset (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_in_fresh_process(*setting) -> int:
    """``peak_memory`` in a child process: each variant's peak is its own."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import train_step; "
        "print(json.dumps(train_step.peak_memory(*json.loads(sys.argv[2]))))"
    )
    here = str(Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", code, here, json.dumps(setting)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.strip().splitlines()[-1])


def settings(smoke: bool) -> list[tuple[str, int, int, str, str]]:
    """(shape, batch, length, device, dtype) to measure: the CPU, and CUDA when present."""
    if smoke:
        return [("smoke", 2, 16, "cpu", "fp32")]
    found = [("bert-base", 8, 128, "cpu", "fp32")]
    if torch.cuda.is_available():
        found += [("mbert", 32, 128, "cuda", "fp32"), ("mbert", 32, 128, "cuda", "bf16")]
    return found


def rows(
    smoke: bool = False,
    steps: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> Iterator[dict]:
    """One row per setting (those of ``device`` and ``dtype`` only, if given) and variant:
    time and peak memory as ratios to dense, yielded as each setting is measured."""
    torch.set_num_threads(2)
    chosen = [s for s in settings(smoke) if device in (None, s[3]) and dtype in (None, s[4])]
    for shape, size, length, device, dtype in chosen:
        count = 1 if smoke else steps or STEPS[device]
        measured = times(shape, size, length, device, dtype, count)
        # a fresh process per variant (seconds each): not in the smoke run, which gives no figure
        memory = {
            v: None if smoke else memory_in_fresh_process(shape, size, length, device, dtype, v)
            for v in VARIANTS
        }
        where = f"{shape} {size}x{length} {device} {dtype}"
        if device == "cuda":
            where += f" ({torch.cuda.get_device_name()})"
        for variant in VARIANTS[1:]:
            yield {
                "benchmark": "train_step",
                "row": f"{variant} / dense, {where}",
                "time": measured[variant] / measured["dense"],
                "memory": memory[variant] / memory["dense"] if memory["dense"] else None,
                "goal": "time <= 1.05, memory <= 1.02" if variant != "hooks" else "reference",
                "dense_seconds": measured["dense"],
                "dense_bytes": memory["dense"],
            }


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}x"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help=f"timed steps per variant (default {STEPS})")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, seconds")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="only this device's rows")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), help="only this precision's rows")
    args = parser.parse_args(argv)
    found = []
    # printed as they come: minutes apart
    for row in rows(args.smoke, args.steps, args.device, args.dtype):
        print(f"{row['row']:55} time {row['time']:.3f}x  memory {ratio(row['memory'])}", flush=True)
        found.append(row)
    return found


if __name__ == "__main__":
    main()
