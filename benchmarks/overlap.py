"""Seconds to compare masks of mBERT's prunable shape: the original code's way vs packed words.

    python benchmarks/overlap.py [--repeats 3] [--masks 33] [--smoke]

(a) One pair, overall + per layer + per component: the original code's way (float 0/1 masks,
the group's modules concatenated and stacked, kept-in-both counted with boolean indexing)
and ``polyticket.analysis.overlap.compare`` on packed words, and the popcount bound (one
AND, one OR and their popcounts): each run once untimed, then alternating run by run in a
rotating order so that machine noise hits all alike, each the median of ``--repeats``; the
ratios are the figures to quote (both ways' overall, layer and component Jaccards checked
equal). (b) All pairs of ``--masks``
masks (33: the paper's 11 languages × 3 seeds), also per head. Two threads. ``--smoke`` uses
tiny shapes and finishes in seconds (the tests run it).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from train_step import rotated

from polyticket.analysis.overlap import Heads, compare, component_name
from polyticket.analysis.packed import PackedMask, unpack
from polyticket.masks import layer_of


def bert_shapes(hidden: int, ffn: int, layers: int) -> dict[str, tuple[int, int]]:
    """The prunable matrices of a BERT encoder (mBERT: 768, 3072, 12; 85M weights)."""
    shapes = {}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("self.query", "self.key", "self.value", "output.dense"):
            shapes[f"{p}attention.{name}.weight"] = (hidden, hidden)
        shapes[f"{p}intermediate.dense.weight"] = (ffn, hidden)
        shapes[f"{p}output.dense.weight"] = (hidden, ffn)
    return shapes


def random_packed(shapes, rng: np.random.Generator, label: str) -> PackedMask:
    """Half the weights kept at random, drawn straight as words (every shape here is a
    multiple of 64 weights, so no padding bits to clear)."""
    words = {
        name: rng.integers(0, 2**64, size=int(np.prod(s)) // 64, dtype=np.uint64)
        for name, s in shapes.items()
    }
    return PackedMask(words, dict(shapes), {}, label)


def as_float(mask: PackedMask) -> dict[str, torch.Tensor]:
    """The original code's in-memory masks: float 0/1 ``weight_mask`` tensors."""
    return {
        name: torch.from_numpy(unpack(mask.words[name], int(np.prod(s))).reshape(s)).float()
        for name, s in mask.shapes.items()
    }


def original_overlap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict:
    """The original code's way: per module, stack the two float masks and count kept-in-both
    with boolean indexing; sum the modules' counts into overall, layer and component."""
    counts = {}
    for name in a:
        stacked = torch.stack([a[name], b[name]])
        both = stacked[1][stacked[0] == 1].sum().item()
        counts[name] = (both, stacked[0].sum().item() + stacked[1].sum().item() - both)

    def jaccard(names: list[str]) -> float:
        return sum(counts[n][0] for n in names) / sum(counts[n][1] for n in names)

    def grouped(key) -> dict[str, float]:
        groups: dict[str, list[str]] = {}
        for name in a:
            groups.setdefault(key(name), []).append(name)
        return {k: jaccard(names) for k, names in groups.items()}

    return {
        "overall": jaccard(list(a)),
        "layer": grouped(layer_of),
        # compare's readable names (``ffn in``): the same groups, named as it names them
        "component": grouped(component_name),
    }


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def one_pair(shapes, rng: np.random.Generator, repeats: int) -> dict[str, float]:
    """Median seconds of the original way, of ``compare`` and of the popcount bound on one
    pair: each run once untimed (caches, allocators, lazy imports), then ``repeats`` rounds
    alternating them in a rotating order, so that all three are measured alike."""
    pair = [random_packed(shapes, rng, label) for label in ("a", "b")]
    floats = [as_float(m) for m in pair]
    words = [np.concatenate(list(m.words.values())) for m in pair]  # the bound's input
    print(f"{len(shapes)} matrices, {pair[0].numel():,} weights per mask, 2 threads")
    ways = {
        "original": lambda: original_overlap(*floats),
        "packed": lambda: compare(pair),
        "bound": lambda: popcount_bound(*words),
    }
    results = {way: fn() for way, fn in ways.items()}  # the warm-up
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    for index in range(repeats):
        for way in rotated(list(ways), index):
            took, results[way] = timed(ways[way])
            seconds[way].append(took)
    expected, found = results["original"], results["packed"]["pairs"][0]
    assert abs(found["overall"]["jaccard"] - expected["overall"]) < 1e-9
    both, either = results["bound"]
    assert abs(both / either - expected["overall"]) < 1e-9
    for scope in ("layer", "component"):  # the groups too, not the overall figure alone
        groups = {g: m["jaccard"] for g, m in found[f"by_{scope}"].items()}
        assert groups.keys() == expected[scope].keys(), scope
        assert all(abs(groups[g] - expected[scope][g]) < 1e-9 for g in groups), scope
    return {way: statistics.median(s) for way, s in seconds.items()}


def popcount_bound(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """The least any exact comparison does: one AND, one OR and their popcounts over every
    word of the pair (kept in both, kept in either)."""
    return int(np.bitwise_count(a & b).sum()), int(np.bitwise_count(a | b).sum())


def rows(smoke: bool = False) -> list[dict]:
    """The compare issue's figures as rows of ``benchmarks/run.py``."""
    figures = main(["--smoke", "--masks", "4", "--repeats", "1"] if smoke else [])
    size = "smoke shapes" if smoke else "mBERT size"
    return [
        {
            "benchmark": "overlap",
            "row": f"one pair, original / packed, {size}",
            "ratio": figures["ratio"],
            "seconds": figures["packed"],
        },
        {
            "benchmark": "overlap",
            "row": f"one pair, packed / popcount bound, {size}",
            "ratio": figures["packed"] / figures["bound"],
            "seconds": figures["bound"],
        },
    ]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--masks", type=int, default=33)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, seconds")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    hidden, ffn, layers, heads = (64, 256, 2, 4) if args.smoke else (768, 3072, 12, 12)
    shapes = bert_shapes(hidden, ffn, layers)
    rng = np.random.default_rng(0)
    medians = one_pair(shapes, rng, args.repeats)
    old, new, bound = medians["original"], medians["packed"], medians["bound"]
    print(f"one pair, overall + layer + component (median of {args.repeats}, after a warm-up):")
    print(f"  original (float, stacked, indexing) {old:9.4f} s")
    print(f"  packed words, popcount              {new:9.4f} s")
    print(f"  ratio                               {old / new:9.1f}x")
    print(f"  popcount bound (AND, OR, popcount)  {bound:9.4f} s: packed is {new / bound:.1f}x")

    many = [random_packed(shapes, rng, f"m{i}") for i in range(args.masks)]
    pairs = args.masks * (args.masks - 1) // 2
    all_pairs, _ = timed(lambda: compare(many))
    with_heads, _ = timed(lambda: compare(many, heads=Heads(heads)))
    print(
        f"all {pairs} pairs of {args.masks} masks: {all_pairs:.2f} s, with heads {with_heads:.2f} s"
    )
    return {
        "original": old,
        "packed": new,
        "ratio": old / new,
        "bound": bound,
        "all_pairs": all_pairs,
        "all_pairs_heads": with_heads,
    }


if __name__ == "__main__":
    main()
