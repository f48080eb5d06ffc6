"""Mixed precision on a GPU: fp32, TF32 and bf16 training steps side by side, with the
optimizer's two CUDA kernels, and a profile that says where each step's time goes.

    python benchmarks/precision.py [--steps 20] [--smoke]

A fine-tuning step as ``find`` takes it (forward, backward, mask enforced as on that device
by default: bit masks on CUDA, clipping, AdamW) of an mBERT-shaped token classifier (178M
parameters, half of the prunable weights pruned) on batches of 32 sentences of WikiANN-like
lengths (``padding.py``'s distribution, dynamic padding). Variants: precision ``fp32``,
``tf32`` (fp32 weights, TF32 matrix products) and ``bf16`` (autocast over fp32 weights:
accelerate's mixed precision), each with AdamW ``foreach`` (torch's multi-tensor default)
and ``fused`` (one kernel per group: polyticket's choice on CUDA). Steps alternate variant
by variant, each round starting with another (``train_step.rotated``), the same batches for
all; ``time`` is each variant's median step over fp32 +
foreach (polyticket 0.2). The profile of one step per variant counts the kernels launched
and the time the GPU was busy: busy / wall near 1 means arithmetic or memory bound, far
below 1 means launch bound (the GPU waits for Python to queue work). Without a CUDA device
only ``--smoke`` gives rows (on the CPU, no figure worth quoting).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter

import torch
from padding import padded, sentence_lengths
from train_step import build, rotated, step, sync

PRECISIONS = ("fp32", "tf32", "bf16")
OPTIMIZERS = ("foreach", "fused")
VARIANTS = [(p, o) for p in PRECISIONS for o in OPTIMIZERS]
BASELINE = ("fp32", "foreach")


def run_step(model, optimizer, enforcer, inputs, precision: str) -> None:
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    step(model, optimizer, enforcer, inputs, "bf16" if precision == "bf16" else "fp32")


def batches(count: int, size: int, vocab: int, device: str) -> list[dict[str, torch.Tensor]]:
    lengths = sentence_lengths(count * size, seed=2)
    found = []
    for index in range(count):
        chosen = lengths[index * size : (index + 1) * size]
        found.append({k: v.to(device) for k, v in padded(chosen, int(chosen.max()), vocab).items()})
    return found


def profile(model, optimizer, enforcer, inputs, precision: str) -> dict:
    """Kernels launched by one step and the GPU's busy time, with the costliest kernels."""
    from torch.profiler import DeviceType, ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run_step(model, optimizer, enforcer, inputs, precision)
        sync("cuda")
    # GPU-side ranges of annotations (the optimizer's step) overlap the kernels they hold
    kernels = [
        e for e in prof.events() if e.device_type == DeviceType.CUDA and not e.is_user_annotation
    ]
    busy = Counter()
    for kernel in kernels:
        busy[kernel.name[:70]] += kernel.device_time_total  # microseconds
    return {
        "kernels": len(kernels),
        "busy_seconds": sum(busy.values()) / 1e6,
        # [name, ms] lists, not tuples: the row is the same after a JSON round trip
        "top_kernels": [[name, round(us / 1e3, 3)] for name, us in busy.most_common(6)],
    }


def rows(smoke: bool = False, steps: int = 20) -> list[dict]:
    cuda = torch.cuda.is_available()
    if not cuda and not smoke:
        print("precision: no CUDA device, no rows (the figures are a GPU's)", file=sys.stderr)
        return []
    device = "cuda" if cuda else "cpu"
    shape, size = ("smoke", 4) if smoke else ("mbert", 32)
    vocab = 500 if smoke else 119547
    runs = {v: build(shape, "default-masks", device, fused_adamw=v[1] == "fused") for v in VARIANTS}
    inputs = batches(2 if smoke else steps + 1, size, vocab, device)
    seconds: dict[tuple[str, str], list[float]] = {v: [] for v in VARIANTS}
    for index, batch in enumerate(inputs):  # the first batch warms kernels and allocators up
        for variant in rotated(VARIANTS, index):  # the baseline not always first
            model, optimizer, enforcer = runs[variant]
            sync(device)
            start = time.perf_counter()
            run_step(model, optimizer, enforcer, batch, variant[0])
            sync(device)
            if index:
                seconds[variant].append(time.perf_counter() - start)
    median = {v: statistics.median(s) for v, s in seconds.items()}
    where = f"{shape} batch {size}, WikiANN lengths, {device}"
    if cuda:
        where += f" ({torch.cuda.get_device_name()})"
    found = []
    for variant, (model, optimizer, enforcer) in runs.items():
        row = {
            "benchmark": "precision",
            "row": f"{variant[0]} + AdamW {variant[1]} / fp32 + foreach, {where}",
            "time": median[variant] / median[BASELINE],
            "seconds": median[variant],
        }
        if cuda:
            row.update(profile(model, optimizer, enforcer, inputs[-1], variant[0]))
            row["value"] = row["busy_seconds"] / median[variant]  # GPU busy / wall
        found.append(row)
    for optimizer in OPTIMIZERS:
        found.append(
            {
                "benchmark": "precision",
                "row": f"bf16 / fp32, AdamW {optimizer}, {where}",
                "time": median["bf16", optimizer] / median["fp32", optimizer],
                "goal": "<= 1 (bf16 at least as fast as fp32)",
            }
        )
    torch.backends.cuda.matmul.allow_tf32 = False
    return found


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, seconds")
    args = parser.parse_args(argv)
    found = rows(args.smoke, args.steps)
    for row in found:
        extra = ""
        if "kernels" in row:
            extra = f"  {row['kernels']} kernels, GPU busy {row['value']:.2f} of the wall"
        print(f"{row['row']:75} time {row['time']:.3f}x{extra}")
        for name, ms in row.get("top_kernels", []):
            print(f"      {ms:8.3f} ms  {name}")
    return found


if __name__ == "__main__":
    main()
