"""``polyticket compare`` as text and CSV: every overlap printed beside its references.

``format_comparison(result)`` turns the dict of ``overlap.compare`` (with an optional
``clusters`` entry from ``cluster.cluster``) into the terminal table; ``write_csv`` writes
``overlap.overlap_rows`` (or any list of flat dicts) atomically.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

BEYOND = ("beyond_theta0", "beyond_theta0_random")
TITLES = {"beyond_theta0": "beyond θ0", "beyond_theta0_random": "its random"}


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _line(label: str, width: int, measures: Mapping[str, float], columns: list[str]) -> str:
    return f"{label:<{width}}" + "".join(f"{_num(measures.get(c)):>12}" for c in columns)


def _mean_by_group(pairs: list[dict[str, Any]], key: str, columns: list[str]) -> dict:
    """Each group's measures averaged over the pairs."""
    groups = list(dict.fromkeys(g for p in pairs for g in p.get(key, {})))
    return {g: {c: statistics.fmean(p[key][g][c] for p in pairs) for c in columns} for g in groups}


def format_comparison(result: Mapping[str, Any]) -> str:
    """Pairs, each mask against the baseline, the summary, then per layer and component
    (means over pairs; the per-pair detail is in --json and --csv) and the clusters."""
    pairs = result["pairs"]
    columns = ["jaccard", "random", "agreement"] + (list(BEYOND) if result["baseline"] else [])
    labels = [f"{p['a']} ~ {p['b']}" for p in pairs]
    width = max([24, *(len(x) + 2 for x in labels)])

    def header(title: str, shown: list[str] = columns) -> str:
        return f"{title:<{width}}" + "".join(f"{TITLES.get(c, c):>12}" for c in shown)

    masks = ", ".join(f"{m['label']} ({m['sparsity']:.1%} pruned)" for m in result["masks"])
    lines = [f"masks: {masks}"]
    if result["baseline"]:
        base = result["baseline"]
        lines.append(f"baseline (one-shot mask of θ0): {base['label']} ({base['sparsity']:.1%})")
    lines += ["", header("pairs")]
    lines += [_line(x, width, p["overall"], columns) for x, p in zip(labels, pairs, strict=True)]
    if result["with_baseline"]:
        lines += ["", header("each mask vs the baseline", columns[:3])]
        lines += [
            _line(m["mask"], width, m["overall"], columns[:3]) for m in result["with_baseline"]
        ]
    lines += ["", "summary (overall, means over pairs)"]
    summary = result["summary"]
    references = [
        ("between languages", "between_languages", "random"),
        ("same language, other seed", "same_language_other_seed", None),
        ("each mask vs the baseline", "with_baseline", "with_baseline_random"),
        ("beyond θ0, between languages", "beyond_theta0", "beyond_theta0_random"),
    ]
    for text, key, random in references:
        if summary[key] is not None:
            ref = f" (random {_num(summary[random])})" if random else ""
            lines.append(f"  {text:<30} {_num(summary[key])}{ref}")
    for key, title in (("by_layer", "layer"), ("by_component", "component")):
        lines += ["", header(f"by {title} (mean of pairs)")]
        for group, measures in _mean_by_group(pairs, key, columns).items():
            lines.append(_line(group, width, measures, columns))
    if "clusters" in result:
        lines += ["", *_cluster_lines(result["clusters"])]
    return "\n".join(lines)


def _cluster_lines(tree: Mapping[str, Any]) -> list[str]:
    lines = [
        f"languages clustered by {tree['measure']} (average linkage): " + " ".join(tree["leaves"])
    ]
    names = list(tree["languages"])
    for merge in tree["merges"]:
        names.append(f"({names[merge['left']]} {names[merge['right']]})")
        lines.append(f"  at distance {merge['distance']:.4f}: {names[-1]}")
    for grouping, scores in tree["groups"].items():
        lines.append(
            f"  vs {grouping}: adjusted Rand {scores['adjusted_rand']:.3f}, "
            f"purity {scores['purity']:.3f}"
        )
    return lines
