"""Overlap of masks of one model, each number with its references (``polyticket compare``).

For every pair of masks, overall and per layer, component and attention head:

- ``jaccard``: |a ∧ b| / |a ∨ b| of the kept weights;
- ``random``: its expectation for independent random masks with the same kept fractions
  k1, k2 (in that group): k1·k2 / (k1 + k2 − k1·k2), the ratio of the expectations
  E|a ∧ b| / E|a ∨ b|, exact as the number of weights grows (for one head of 49k weights
  the difference is far below the third decimal; for 64 weights at 50% it is 0.336 vs 0.333);
- ``agreement``: the fraction of weights both keep or both prune;
- ``agreement_random``: its expectation for independent random masks, 1 − k1 − k2 + 2·k1·k2;

and, given the one-shot magnitude mask ``o`` of θ0 at the same sparsity (``baseline``):

- ``beyond_theta0``: the Jaccard of the two masks' departures from ``o``, d = (m ∧ ¬o) ∨
  (¬m ∧ o). Tickets stay close to the magnitude order of θ0, so their raw overlap is mostly
  the overlap each has with ``o``; this one says whether training moved two languages to
  the same weights.
- ``beyond_theta0_random``: its expectation if each mask departed from ``o`` at random
  places, keeping its numbers of additions (kept, pruned in ``o``) and removals (pruned, kept
  in ``o``): additions fall among the |¬o| weights and removals among the |o| weights
  independently, so E|d_a ∧ d_b| = add_a·add_b / |¬o| + rem_a·rem_b / |o|, and the
  expectation is E|d_a ∧ d_b| / (|d_a| + |d_b| − E|d_a ∧ d_b|) (ratio of expectations, as
  for ``random``; exact as the number of weights grows).

Each mask is also compared with ``o`` (``with_baseline``), and pairs of one language with
other seeds give the paper's upper bound (``summary.same_language_other_seed``). Languages
are compared over pairs of other seeds too where there are any (``language_pairs``): two
runs of one seed share a head initialisation, an order of batches and dropout draws, which
alone raises their overlap.

Everything is counted on packed words (``polyticket.analysis.packed``): per-parameter
popcounts summed into groups, and per-head counts from prefix popcounts at the heads' bit
offsets, so no model is ever unpacked.

API (for the study report and the CLI)::

    masks = load_all(paths)                       # PackedMask, shapes checked
    result = compare(masks, baseline=PackedMask.load(oneshot), heads=heads_for(masks))
    rows = overlap_rows(result)                   # flat rows for a CSV

``compare`` returns a JSON-ready dict::

    {"masks": [{"label", "file", "weights", "sparsity", "language", "seed"}],
     "baseline": {same keys as a mask} | None,
     "heads": {"heads", "kv_heads"} | None,
     "pairs": [{"a", "b", "languages", "same_language", "same_seed",
                "overall": MEASURES, "by_layer": {layer: MEASURES},
                "by_component": {component: MEASURES}, "by_head": {head: MEASURES}}],
     "with_baseline": [{"mask", "overall": MEASURES, "by_layer", "by_component", ...}],
     "summary": {"between_languages", "random", "same_language_other_seed",
                 "between_languages_one_seed", "between_languages_same_seed",
                 "with_baseline", "with_baseline_random",
                 "beyond_theta0", "beyond_theta0_random", "beyond_theta0_same_seed",
                 "beyond_theta0_same_language"}}

where MEASURES is ``{"jaccard", "random", "agreement"}`` plus ``beyond_theta0`` and
``beyond_theta0_random`` for pairs when a baseline is given. A mean over no pairs is None.
Groups: ``by_layer`` keys are ``layer_of`` names (``encoder.layer.3``), ``by_component``
keys readable names (``query``, ``attention output``, ``ffn in``, ``decoder …``; see
``component_name``), ``by_head`` keys ``LAYER.headH`` (``LAYER.kv_headG`` for grouped k/v,
``LAYER.cross.headH`` for T5's cross-attention), present only when a head count is known.
``polyticket compare --json`` prints this dict, plus ``"clusters"`` (``cluster.cluster``)
when the masks cover three or more languages.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from polyticket.analysis.packed import (
    PackedMask,
    check_same_shapes,
    popcount,
    prefix_counts,
)
from polyticket.errors import UserError
from polyticket.masks import component_of, layer_of

log = logging.getLogger("polyticket")

Counts = dict[str, dict[str, int]]  # scope ("overall", "layer", ...) -> group -> count
SCOPES = {"overall": "overall", "layer": "by_layer", "component": "by_component", "head": "by_head"}

# Readable component names across families: (pattern over ``component_of``, name). The first
# match wins, so attention output comes before the FFN output it would otherwise match.
COMPONENTS: tuple[tuple[str, str], ...] = (
    (
        r"attention\.self\.query|attention\.q_lin|layer\.\d+\.SelfAttention\.q|self_attn\.q_proj",
        "query",
    ),
    (
        r"attention\.self\.key|attention\.k_lin|layer\.\d+\.SelfAttention\.k|self_attn\.k_proj",
        "key",
    ),
    (
        r"attention\.self\.value|attention\.v_lin|layer\.\d+\.SelfAttention\.v|self_attn\.v_proj",
        "value",
    ),
    (r"attn\.c_attn", "query/key/value"),
    (
        r"attention\.output\.dense|attention\.out_lin|layer\.\d+\.SelfAttention\.o|self_attn\.o_proj"
        r"|attn\.c_proj",
        "attention output",
    ),
    (r"layer\.\d+\.EncDecAttention\.q", "cross-attention query"),
    (r"layer\.\d+\.EncDecAttention\.k", "cross-attention key"),
    (r"layer\.\d+\.EncDecAttention\.v", "cross-attention value"),
    (r"layer\.\d+\.EncDecAttention\.o", "cross-attention output"),
    (r"layer\.\d+\.DenseReluDense\.wi_0|mlp\.gate_proj", "ffn gate"),
    (
        r"intermediate\.dense|ffn\.lin1|layer\.\d+\.DenseReluDense\.wi(_1)?|mlp\.up_proj|mlp\.c_fc",
        "ffn in",
    ),
    (
        r"output\.dense|ffn\.lin2|layer\.\d+\.DenseReluDense\.wo|mlp\.down_proj|mlp\.c_proj",
        "ffn out",
    ),
)


def component_name(name: str) -> str:
    """``query``, ``attention output``, ``ffn in``, … for any family; T5's decoder matrices
    get a ``decoder`` prefix. Unknown matrices keep ``component_of``'s name."""
    part = component_of(name)
    readable = next((label for pattern, label in COMPONENTS if re.fullmatch(pattern, part)), part)
    return f"decoder {readable}" if name.startswith("decoder.") else readable


# How attention matrices split into heads: (pattern over ``component_of``, axis, blocks).
# Axis 0: a head is a block of rows (outputs of q/k/v; inputs of GPT-2's Conv1D c_proj);
# axis 1: a block of columns (inputs of the output projection). Blocks: "heads", "kv_heads"
# (Llama's grouped k/v) or "3heads" (GPT-2's fused c_attn: q heads, then k, then v).
HEAD_SPLITS: tuple[tuple[str, int, str], ...] = (
    (r"attention\.self\.(query|key|value)|attention\.(q_lin|k_lin|v_lin)", 0, "heads"),
    (r"layer\.\d+\.(SelfAttention|EncDecAttention)\.(q|k|v)|self_attn\.q_proj", 0, "heads"),
    (r"self_attn\.(k_proj|v_proj)", 0, "kv_heads"),
    (r"attention\.output\.dense|attention\.out_lin|self_attn\.o_proj", 1, "heads"),
    (r"layer\.\d+\.(SelfAttention|EncDecAttention)\.o", 1, "heads"),
    (r"attn\.c_attn", 1, "3heads"),
    (r"attn\.c_proj", 0, "heads"),
)


@dataclass(frozen=True)
class Heads:
    """Attention heads of the model; ``kv_heads`` for grouped-query attention."""

    heads: int
    kv_heads: int | None = None

    def to_json(self) -> dict[str, int | None]:
        return {"heads": self.heads, "kv_heads": self.kv_heads}


def heads_from_config(directory: str | Path) -> Heads:
    """The head counts in a Hugging Face model directory's config.json."""
    path = Path(directory) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: no readable model config ({exc})") from None
    heads = next(
        (config[k] for k in ("num_attention_heads", "n_head", "num_heads") if k in config), None
    )
    if not isinstance(heads, int):
        raise UserError(f"{path}: no number of attention heads in the model config")
    return Heads(heads, config.get("num_key_value_heads"))


def _stated_heads(mask: PackedMask) -> int:
    value = str(mask.metadata["num_heads"])
    if not value.isdigit() or int(value) == 0:
        raise UserError(f"{mask.source or mask.label}: num_heads {value!r} is no head count")
    return int(value)


def heads_for(
    masks: Sequence[PackedMask], heads: int | None = None, model_config: Path | None = None
) -> Heads | None:
    """The head count to split by: given, else from a model directory, else the masks'
    ``num_heads`` metadata, else the config of their ``model`` when it is a local directory;
    None when nothing says (the per-head overlap is then left out). A given count or model
    that contradicts the masks' own metadata is refused: every per-head number would be
    cut at the wrong places."""
    stated = {_stated_heads(m) for m in masks if "num_heads" in m.metadata}
    if len(stated) > 1:
        raise UserError(f"masks state different head counts: {sorted(stated)}")
    if heads is not None or model_config is not None:
        given = Heads(heads) if heads is not None else heads_from_config(model_config)
        source = f"--heads {heads}" if heads is not None else f"{model_config}'s config"
        if stated and given.heads not in stated:
            raise UserError(
                f"{source} gives {given.heads} attention heads, but the masks were made "
                f"for a model with {stated.pop()}"
            )
        return given
    if stated:
        return Heads(stated.pop())
    models = {m.metadata.get("model", "") for m in masks}
    model = models.pop() if len(models) == 1 else ""
    if model and (Path(model) / "config.json").is_file():
        return heads_from_config(model)
    return None


@dataclass(frozen=True)
class HeadSplit:
    """One attention matrix cut into ``blocks`` along ``axis``; block b is head ``keys[b]``."""

    shape: tuple[int, int]
    axis: int
    keys: tuple[str, ...]

    @cached_property
    def runs(self) -> tuple[np.ndarray, np.ndarray]:
        """The bit offsets where runs of one block start (and the end of the matrix), and
        the block of each run. The runs tile the matrix in order, so each run ends where
        the next starts."""
        rows, cols = self.shape
        blocks = len(self.keys)
        if self.axis == 0:  # one contiguous run per block
            size = rows // blocks * cols
            return np.arange(blocks + 1, dtype=np.int64) * size, np.arange(blocks)
        starts = np.arange(rows * blocks, dtype=np.int64) * (cols // blocks)  # per row, block
        return np.append(starts, rows * cols), np.tile(np.arange(blocks), rows)

    def counts(self, words: np.ndarray) -> np.ndarray:
        """Set bits per block, from prefix popcounts at the runs' bounds (any alignment)."""
        bounds, block = self.runs
        per_run = np.diff(prefix_counts(words, bounds))
        return np.bincount(block, weights=per_run, minlength=len(self.keys)).astype(np.int64)


def head_splits(shapes: Mapping[str, tuple[int, ...]], heads: Heads) -> dict[str, HeadSplit]:
    """The attention matrices among ``shapes`` and how each splits into heads."""
    splits = {}
    for name, shape in shapes.items():
        rule = next((r for r in HEAD_SPLITS if re.fullmatch(r[0], component_of(name))), None)
        if rule is None or len(shape) != 2:
            continue
        _, axis, kind = rule
        kv = heads.kv_heads or _kv_heads(name, shapes, heads.heads)
        blocks = {"heads": heads.heads, "kv_heads": kv, "3heads": 3 * heads.heads}[kind]
        if shape[axis] % blocks:
            raise UserError(
                f"parameter {name} of shape {list(shape)} does not split into {blocks} heads "
                f"along axis {axis}: wrong head count?"
            )
        layer = layer_of(name)
        if "EncDecAttention" in name:  # T5's cross-attention: other heads than the block's own
            layer += ".cross"
        if kind == "kv_heads" and kv != heads.heads:
            keys = tuple(f"{layer}.kv_head{b}" for b in range(blocks))
        else:
            keys = tuple(f"{layer}.head{b % heads.heads}" for b in range(blocks))
        splits[name] = HeadSplit((shape[0], shape[1]), axis, keys)
    return splits


def _kv_heads(name: str, shapes: Mapping[str, tuple[int, ...]], heads: int) -> int:
    """Key/value heads where nothing states them: as many as the query heads unless the
    layer's key or value projection is narrower than its query projection (grouped-query
    attention: Llama, Mistral, Qwen2 share each key/value head among several query heads)."""
    query = shapes.get(re.sub(r"\b[kv]_proj\b", "q_proj", name))
    rows = shapes[name][0]
    if query is None or query[0] == rows or query[0] % heads or rows % (query[0] // heads):
        return heads
    return rows // (query[0] // heads)  # the query heads' width gives the key/value heads'


class Grouping:
    """Sums per-parameter counts into the scopes: overall, layer, component and head."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], heads: Heads | None = None):
        self.shapes = dict(shapes)
        self.splits = head_splits(shapes, heads) if heads else {}
        self._keys = {
            "layer": {name: layer_of(name) for name in shapes},
            "component": {name: component_name(name) for name in shapes},
        }
        self.sizes = self.group(
            {name: int(np.prod(shape)) for name, shape in shapes.items()},
            {
                name: np.full(len(s.keys), int(np.prod(s.shape)) // len(s.keys))
                for name, s in self.splits.items()
            },
        )

    def counts(self, words: Mapping[str, np.ndarray]) -> Counts:
        """Set bits of packed words (one mask, or an AND/XOR of masks) in every group."""
        return self.group(
            {name: popcount(w) for name, w in words.items()},
            {name: split.counts(words[name]) for name, split in self.splits.items()},
        )

    def group(
        self, per_param: Mapping[str, int], per_head: Mapping[str, np.ndarray] | None = None
    ) -> Counts:
        """Per-parameter counts (and per-head counts of the attention matrices) in groups."""
        counts: Counts = {"overall": {"all": sum(per_param.values())}}
        for scope, keys in self._keys.items():
            counts[scope] = _sum_by(per_param.items(), keys.get)
        if self.splits and per_head is not None:
            counts["head"] = _sum_by(
                (
                    (key, int(c))
                    for name, split in self.splits.items()
                    for key, c in zip(split.keys, per_head[name], strict=True)
                ),
                lambda key: key,
            )
        return counts


def _sum_by(items: Iterable[tuple[str, int]], key: Callable[[str], str]) -> dict[str, int]:
    sums: dict[str, int] = {}
    for name, count in items:
        sums[key(name)] = sums.get(key(name), 0) + count
    return sums


def random_jaccard(kept_a: float, kept_b: float) -> float:
    """Jaccard of independent random masks keeping these fractions, as the ratio of
    expectations E|a ∧ b| / E|a ∨ b| = k1k2 / (k1+k2−k1k2) (exact as the group grows)."""
    both = kept_a * kept_b
    either = kept_a + kept_b - both
    return both / either if either else 1.0


def _ratio(part: float, whole: float) -> float:
    """A Jaccard with an empty union is 1: two empty sets are the same set."""
    return part / whole if whole else 1.0


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def pair_measures(n: int, a: int, b: int, both: int) -> dict[str, float]:
    """Jaccard and agreement with their random expectations, from the four counts of one
    group."""
    k1, k2 = (a / n, b / n) if n else (1.0, 1.0)
    return {
        "jaccard": _ratio(both, a + b - both),
        "random": random_jaccard(k1, k2),
        "agreement": (n - a - b + 2 * both) / n if n else 1.0,
        "agreement_random": 1 - k1 - k2 + 2 * k1 * k2,
    }


def beyond_measures(n: int, o: int, ao: int, bo: int, da: int, db: int, both: int):
    """Jaccard of departures from the one-shot mask and its random expectation.

    ``o``: kept by the one-shot mask; ``ao``, ``bo``: kept by each mask and by it; ``da``,
    ``db``: departures of each mask; ``both``: departures they share.
    """
    removes_a, removes_b = o - ao, o - bo
    adds_a, adds_b = da - removes_a, db - removes_b
    expected_both = _share(adds_a * adds_b, n - o) + _share(removes_a * removes_b, o)
    return {
        "beyond_theta0": _ratio(both, da + db - both),
        "beyond_theta0_random": _ratio(expected_both, da + db - expected_both),
    }


def _by_scope(measure: Callable[..., dict[str, float]], *counts: Counts) -> dict[str, Any]:
    """``measure`` applied group by group to counts of the same grouping."""
    return {
        SCOPES[scope]: (
            measure(*(c[scope]["all"] for c in counts))
            if scope == "overall"
            else {g: measure(*(c[scope][g] for c in counts)) for g in groups}
        )
        for scope, groups in counts[0].items()
    }


def _merge(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Scope-by-scope union of two measure tables of the same groups."""
    return {
        scope: (
            {**value, **second[scope]}
            if scope == "overall"
            else {g: {**m, **second[scope][g]} for g, m in value.items()}
        )
        for scope, value in first.items()
    }


def _and(a: PackedMask, b: PackedMask) -> dict[str, np.ndarray]:
    return {name: w & b.words[name] for name, w in a.words.items()}


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.fmean(values) if values else None


def _describe(mask: PackedMask, kept: Counts, n: int) -> dict[str, Any]:
    return {
        "label": mask.label,
        "file": mask.source or None,
        "weights": n,
        "sparsity": 1 - kept["overall"]["all"] / n if n else 0.0,
        "language": mask.metadata.get("language"),
        "seed": mask.metadata.get("seed"),
    }


def compare(
    masks: Sequence[PackedMask], baseline: PackedMask | None = None, heads: Heads | None = None
) -> dict[str, Any]:
    """Every pair of ``masks`` (and each against ``baseline``), with references; see the
    module docstring for the shape of the result."""
    if len(masks) < 2:
        raise UserError("compare needs at least two masks")
    check_same_shapes([*masks, *([baseline] if baseline else [])])
    if baseline is not None:
        _check_baseline_sparsity(masks, baseline)
    grouping = Grouping(masks[0].shapes, heads)
    size = grouping.sizes
    kept = [grouping.counts(m.words) for m in masks]
    pairs = []
    for i, j in itertools.combinations(range(len(masks)), 2):
        both = grouping.counts(_and(masks[i], masks[j]))
        pairs.append(
            {
                "a": masks[i].label,
                "b": masks[j].label,
                "languages": [_language(masks[i]), _language(masks[j])],
                "same_language": _language(masks[i]) == _language(masks[j]),
                "same_seed": _seed(masks[i]) is not None and _seed(masks[i]) == _seed(masks[j]),
                **_by_scope(pair_measures, size, kept[i], kept[j], both),
            }
        )
    with_baseline = _against_baseline(masks, kept, baseline, grouping, pairs) if baseline else []
    n = size["overall"]["all"]
    return {
        "masks": [_describe(m, k, n) for m, k in zip(masks, kept, strict=True)],
        "baseline": (_describe(baseline, grouping.counts(baseline.words), n) if baseline else None),
        "heads": heads.to_json() if heads else None,
        "pairs": pairs,
        "with_baseline": with_baseline,
        "summary": summarize(pairs, with_baseline),
    }


def split(result: dict[str, Any], labels: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``result`` (``compare``'s) in two: the comparison of only the masks labelled
    ``labels`` (their pairs, each against the baseline, and the summary of those), and the
    rest (the other masks, every pair with one of them, each of them against the baseline;
    no summary). A study's multi-language tickets are compared with every ticket, but the
    questions between languages are asked of single-language tickets only."""

    def of(entries: list[dict[str, Any]], key: str, inside: bool) -> list[dict[str, Any]]:
        return [e for e in entries if (e[key] in labels) == inside]

    pairs = [p for p in result["pairs"] if p["a"] in labels and p["b"] in labels]
    with_baseline = of(result["with_baseline"], "mask", True)
    chosen = {
        **result,
        "masks": of(result["masks"], "label", True),
        "pairs": pairs,
        "with_baseline": with_baseline,
        "summary": summarize(pairs, with_baseline),
    }
    rest = {
        "masks": of(result["masks"], "label", False),
        "baseline": result["baseline"],
        "pairs": [p for p in result["pairs"] if p["a"] not in labels or p["b"] not in labels],
        "with_baseline": of(result["with_baseline"], "mask", False),
    }
    return chosen, rest


# Kept fractions this far apart are no rounding: the baseline is of another sparsity.
BASELINE_TOLERANCE = 0.005


def _check_baseline_sparsity(masks: Sequence[PackedMask], baseline: PackedMask) -> None:
    """The overlap beyond θ0 counts departures from the baseline: against a baseline of
    another sparsity, most of them are the difference in sparsity, not training's choice."""
    other = [m for m in masks if abs(m.sparsity() - baseline.sparsity()) > BASELINE_TOLERANCE]
    if other:
        log.warning(
            "the baseline is %.1f%% pruned but %s is %.1f%% (%d of %d masks differ): the "
            "overlap beyond θ0 then mostly counts the difference in sparsity; give the "
            "one-shot mask of θ0 at the masks' sparsity",
            100 * baseline.sparsity(), other[0].label,
            100 * other[0].sparsity(), len(other), len(masks),
        )  # fmt: skip


def _against_baseline(
    masks: Sequence[PackedMask],
    kept: list[Counts],
    baseline: PackedMask,
    grouping: Grouping,
    pairs: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each mask's overlap with the baseline (returned), and the overlap beyond it of each
    pair (added to ``pairs``, in the order of ``itertools.combinations``)."""
    size, o = grouping.sizes, grouping.counts(baseline.words)
    with_o = [grouping.counts(_and(m, baseline)) for m in masks]
    departures = [m.departures(baseline) for m in masks]
    moved = [grouping.counts(d.words) for d in departures]
    for pair, (i, j) in zip(pairs, itertools.combinations(range(len(masks)), 2), strict=True):
        both = grouping.counts(_and(departures[i], departures[j]))
        beyond = _by_scope(beyond_measures, size, o, with_o[i], with_o[j], moved[i], moved[j], both)
        pair.update(_merge({scope: pair[scope] for scope in beyond}, beyond))
    return [
        {"mask": m.label, **_by_scope(pair_measures, size, k, o, ko)}
        for m, k, ko in zip(masks, kept, with_o, strict=True)
    ]


def _language(mask: PackedMask) -> str:
    """The mask's language, or its label when the metadata has none."""
    return mask.metadata.get("language") or mask.label


def _seed(mask: PackedMask) -> str | None:
    return mask.metadata.get("seed")


def language_pairs(pairs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pairs that compare languages: masks of different languages and, where there are
    any for that pair of languages, of different seeds. Two runs of one seed share their
    head's initialisation, their order of batches and their dropout draws, which alone
    raises the overlap of their masks;
    the same-language bound is of other seeds by necessity, so languages are compared like
    for like. A pair of languages with masks of one seed only keeps those (rather than
    count as sharing nothing); with one seed every pair shares it
    (``summary.between_languages_one_seed``)."""
    by_pair: dict[frozenset, list[dict[str, Any]]] = {}
    for p in pairs:
        if not p["same_language"]:  # older files name no languages: a study's labels do
            languages = p.get("languages") or [p[k].split("/")[0] for k in ("a", "b")]
            by_pair.setdefault(frozenset(languages), []).append(p)
    return [
        p
        for group in by_pair.values()
        for p in ([q for q in group if not q.get("same_seed")] or group)
    ]


def same_language_pairs(pairs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pairs of the same-language bound: one language's masks of other seeds, and masks
    of one language and seed (two tasks') only where there are no such pairs."""
    same = [p for p in pairs if p["same_language"]]
    return [p for p in same if not p.get("same_seed")] or same


def summarize(pairs: list[dict[str, Any]], with_baseline: list[dict[str, Any]]) -> dict:
    """Means of the overall numbers: between languages (``language_pairs``), within a
    language (other seeds), with the baseline; each beside its random expectation. Pairs
    of different languages and one seed are summarised apart (``…_same_seed``) where other
    seeds are compared: the difference is what sharing a seed does."""
    compared = language_pairs(pairs)
    between = [p["overall"] for p in compared]
    one_seed = bool(compared) and all(p.get("same_seed") for p in compared)
    chosen = {id(p) for p in compared}
    shared = [
        p["overall"] for p in pairs if not p["same_language"] and id(p) not in chosen
    ]  # pairs of one seed set aside
    same = [p["overall"] for p in same_language_pairs(pairs)]
    return {
        "between_languages": _mean(p["jaccard"] for p in between),
        "random": _mean(p["random"] for p in between),
        "between_languages_one_seed": one_seed,
        "between_languages_same_seed": _mean(p["jaccard"] for p in shared),
        "same_language_other_seed": _mean(p["jaccard"] for p in same),
        "with_baseline": _mean(m["overall"]["jaccard"] for m in with_baseline),
        "with_baseline_random": _mean(m["overall"]["random"] for m in with_baseline),
        "beyond_theta0": _mean(p["beyond_theta0"] for p in between if "beyond_theta0" in p),
        "beyond_theta0_random": _mean(
            p["beyond_theta0_random"] for p in between if "beyond_theta0" in p
        ),
        "beyond_theta0_same_seed": _mean(
            p["beyond_theta0"] for p in shared if "beyond_theta0" in p
        ),
        "beyond_theta0_same_language": _mean(
            p["beyond_theta0"] for p in same if "beyond_theta0" in p
        ),
    }


def overlap_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per pair (or mask against the baseline), scope and group: for a CSV."""
    rows = []
    entries = [(p["a"], p["b"], p) for p in result["pairs"]]
    if result["baseline"]:
        label = result["baseline"]["label"]
        entries += [(m["mask"], label, m) for m in result["with_baseline"]]
    for a, b, entry in entries:
        for scope, key in SCOPES.items():
            groups = {"all": entry[key]} if scope == "overall" else entry.get(key, {})
            for group, measures in groups.items():
                rows.append({"a": a, "b": b, "scope": scope, "group": group, **measures})
    return rows
