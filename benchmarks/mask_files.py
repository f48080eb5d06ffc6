"""Mask files: bits per weight, save and load, against the original code's float pickles.

    python benchmarks/mask_files.py [--smoke]

A random half of BERT-base's prunable weights (85M) kept. polyticket writes 1 bit per weight
in safetensors (``Mask.save``/``Mask.load``); the original code ``torch.save``d the float
0/1 ``weight_mask`` tensors of ``torch.nn.utils.prune``. Both written and read once untimed,
then in one run, alternating; the ratios of the medians are the figures.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from overlap import bert_shapes
from train_step import SHAPES

from polyticket.masks import Mask
from polyticket.pruning import random_prune


def prunable_shapes(shape: str) -> dict[str, tuple[int, int]]:
    _, hidden, layers, _, ffn = SHAPES[shape]
    return bert_shapes(hidden, ffn, layers)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rows(smoke: bool = False, repeats: int = 3) -> list[dict]:
    mask = random_prune(Mask.ones(prunable_shapes("smoke" if smoke else "bert-base")), 0.5, 0)
    floats = {name: mask[name].float() for name in mask}
    folder = Path(tempfile.mkdtemp())
    ours, theirs = folder / "mask.safetensors", folder / "mask.pt"
    ways = {
        "save": lambda: mask.save(ours),
        "save_pt": lambda: torch.save(floats, theirs),
        "load": lambda: Mask.load(ours),
        "load_pt": lambda: torch.load(theirs),
    }
    for way in ways.values():  # untimed: the first save and load pay lazy imports, caches
        way()
    seconds: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(1 if smoke else repeats):
        for name, way in ways.items():
            seconds[name].append(timed(way))
    assert Mask.load(ours).jaccard(mask) == 1.0
    median = {k: statistics.median(v) for k, v in seconds.items()}
    bits = ours.stat().st_size * 8 / mask.numel()
    what = f"{mask.numel() / 1e6:.1f}M weights"
    return [
        {
            "benchmark": "mask_files",
            "row": f"bits per weight, {what}",
            "value": bits,
            "reference": theirs.stat().st_size * 8 / mask.numel(),
            "goal": "about 1 (original: 32)",
        },
        {
            "benchmark": "mask_files",
            "row": f"save time, original / polyticket, {what}",
            "ratio": median["save_pt"] / median["save"],
            "seconds": median["save"],
        },
        {
            "benchmark": "mask_files",
            "row": f"load time, original / polyticket, {what}",
            "ratio": median["load_pt"] / median["load"],
            "seconds": median["load"],
        },
    ]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, seconds")
    found = rows(parser.parse_args(argv).smoke)
    for row in found:
        print(row)
    return found


if __name__ == "__main__":
    main()
