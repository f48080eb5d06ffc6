"""``polyticket compare`` as text and CSV: every overlap printed beside its references.

``format_comparison(result)`` turns the dict of ``overlap.compare`` (with an optional
``clusters`` entry from ``cluster.cluster``) into the terminal table; ``write_csv`` writes
``overlap.overlap_rows`` (or any list of flat dicts) atomically.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping
from typing import Any

from polyticket.analysis.overlap import language_pairs, same_language_pairs

BEYOND = ("beyond_theta0", "beyond_theta0_random")
TITLES = {
    "agreement_random": "agr. random",
    "beyond_theta0": "beyond θ0",
    "beyond_theta0_random": "its random",
}


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _line(label: str, width: int, measures: Mapping[str, float], columns: list[str]) -> str:
    return f"{label:<{width}}" + "".join(f"{_num(measures.get(c)):>12}" for c in columns)


def _mean_by_group(pairs: list[dict[str, Any]], key: str, columns: list[str]) -> dict:
    """Each group's measures averaged over the pairs."""
    groups = list(dict.fromkeys(g for p in pairs for g in p.get(key, {})))
    return {g: {c: statistics.fmean(p[key][g][c] for p in pairs) for c in columns} for g in groups}


def format_comparison(result: Mapping[str, Any]) -> str:
    """Pairs, each mask against the baseline, the summary, then per layer, component and
    head (means over the pairs that compare languages, else over all; the per-pair detail
    is in --json and --csv) and the clusters."""
    pairs = result["pairs"]
    columns = ["jaccard", "random", "agreement", "agreement_random"]
    columns += list(BEYOND) if result["baseline"] else []
    labels = [f"{p['a']} ~ {p['b']}" for p in pairs]
    compared = language_pairs(pairs)
    over = "pairs of languages" if compared else "pairs"
    by_group = {
        f"by {title} (mean over {over})": _mean_by_group(compared or pairs, key, columns)
        for key, title in (("by_layer", "layer"), ("by_component", "component"))
    }
    mask_labels = [m["mask"] for m in result["with_baseline"]]
    titles = [
        *labels,
        *mask_labels,
        *by_group,
        *(g for groups in by_group.values() for g in groups),
    ]
    width = max(len(x) for x in ["each mask vs the baseline", *titles]) + 2

    def header(title: str, shown: list[str] = columns) -> str:
        return f"{title:<{width}}" + "".join(f"{TITLES.get(c, c):>12}" for c in shown)

    masks = ", ".join(f"{m['label']} ({m['sparsity']:.1%} pruned)" for m in result["masks"])
    lines = [f"masks: {masks}"]
    unknown = [m["label"] for m in result["masks"] if m.get("seed") is None]
    if unknown:  # then pairs of one seed cannot be set apart (see overlap.language_pairs)
        lines.append(
            f"seed unknown for {', '.join(unknown)}: pairs of one seed, whose overlap the "
            "shared seed alone raises, cannot be told from pairs of other seeds"
        )
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
    # languages are compared over pairs of other seeds where there are any
    seeds = ""
    if summary.get("between_languages_one_seed"):
        seeds = " (one seed)"
    elif summary.get("between_languages_same_seed") is not None:
        seeds = " (other seeds)"
    references = [
        (f"between languages{seeds}", "between_languages", "random"),
        ("  of one seed", "between_languages_same_seed", None),
        (_same_language_text(result), "same_language_other_seed", None),
        ("each mask vs the baseline", "with_baseline", "with_baseline_random"),
        (f"beyond θ0, between languages{seeds}", "beyond_theta0", "beyond_theta0_random"),
        ("  of one seed", "beyond_theta0_same_seed", None),
        ("beyond θ0, " + _same_language_text(result), "beyond_theta0_same_language", None),
    ]
    for text, key, random in references:
        if summary.get(key) is not None:
            ref = f" (random {_num(summary[random])})" if random else ""
            lines.append(f"  {text:<42} {_num(summary[key])}{ref}")
    for title, groups in by_group.items():
        lines += ["", header(title)]
        lines += [_line(group, width, measures, columns) for group, measures in groups.items()]
    lines += _head_grid(
        compared or pairs, over, "beyond_theta0" if result["baseline"] else "jaccard"
    )
    if "clusters" in result:
        lines += ["", *_cluster_lines(result["clusters"])]
    return "\n".join(lines)


def _head_grid(pairs: list[dict[str, Any]], over: str, measure: str) -> list[str]:
    """One measure per attention head, a row per layer and a column per head (mean over
    ``pairs``); grouped key/value heads and the other measures are in --json and --csv."""
    heads = {
        name: value[measure]
        for name, value in _mean_by_group(pairs, "by_head", [measure]).items()
        if ".head" in name
    }
    if not heads:
        return []
    grid: dict[str, dict[int, float]] = {}
    for name, value in heads.items():
        layer, head = name.rsplit(".head", 1)
        grid.setdefault(layer, {})[int(head)] = value
    count = 1 + max(h for row in grid.values() for h in row)
    width = max(len(layer) for layer in grid) + 2
    title = f"by head: {TITLES.get(measure, measure)} (mean over {over}; a column per head)"
    lines = ["", title, f"{'':<{width}}" + "".join(f"{h:>7}" for h in range(count))]
    for layer, row in grid.items():
        values = "".join(f"{row[h]:>7.3f}" if h in row else f"{'-':>7}" for h in range(count))
        lines.append(f"{layer:<{width}}{values}")
    return lines


def _same_language_text(result: Mapping[str, Any]) -> str:
    """What the pairs of the same-language bound are (``same_language_pairs``): other
    seeds (the paper's upper bound) only when every one's seeds are known and differ."""
    bound = {id(p) for p in same_language_pairs(result["pairs"])}
    masks = itertools.combinations(result["masks"], 2)
    seeds = [
        (a.get("seed"), b.get("seed"))
        for (a, b), p in zip(masks, result["pairs"], strict=True)
        if id(p) in bound
    ]
    other_seed = all(a is not None and b is not None and a != b for a, b in seeds)
    return "same language, other seed" if other_seed else "same language"


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
