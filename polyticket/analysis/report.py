"""A study's report: one self-contained HTML page, its PNGs and a Markdown summary.

    write_report(Path("runs/demo"))   # -> runs/demo/report/index.html (+ *.png, summary.md)

Built from the study directory alone (no study file): ``results/results.json`` (written by
``polyticket study``), the IMP cells' levels under ``cells/`` and, when another analysis has
written them, ``results/retrieval.csv`` and ``results/similarity.csv``. The page opens from a
file with no network: its images are inline ``data:`` URIs and its style is in the page.

Sections, in the order of the paper: the headline answers; score against sparsity per
language (Fig. 2); overlap per layer with its references (Fig. 3); overlap per component and
per head; the overlap beyond θ0; transfer matrices (Tables 3-5); relative transfer drop
(Fig. 6); retrieval per layer (Fig. 7); SVCCA/PWCCA per layer (App. F); the language
dendrogram; the core. A section without data says what would give it some; it never
vanishes, so a reader can tell "not run" from "forgotten".
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polyticket.analysis import plots
from polyticket.analysis.cluster import language_similarity
from polyticket.analysis.results import BASELINES, headline_text
from polyticket.errors import UserError
from polyticket.io import atomic_path, read_json, write_text
from polyticket.layout import StudyLayout
from polyticket.study.kinds.imp import imp_cell

SPARSITY = "sparsity (% of prunable weights pruned)"
JACCARD = "Jaccard (kept ∩ / kept ∪, 0–1)"
REFERENCE_ROWS = ("dense", *BASELINES)


# --- the report's parts --------------------------------------------------------------------
@dataclass
class Plot:
    """A figure of a section; ``name`` is its PNG's file stem."""

    name: str
    caption: str
    figure: Any  # matplotlib Figure


@dataclass
class Table:
    caption: str
    header: list[str]
    rows: list[list[str]]


@dataclass
class Text:
    text: str
    preformatted: bool = False


@dataclass
class Section:
    key: str  # HTML id
    title: str
    about: str  # what the section shows, one sentence
    parts: list[Plot | Table | Text] = field(default_factory=list)
    missing: str = ""  # why there is nothing to show, and how to get it

    def done(self, missing: str) -> Section:
        """The section as built; ``missing`` is said when nothing was added to it."""
        if not self.parts:
            self.missing = missing
        return self


# --- reading -------------------------------------------------------------------------------
@dataclass
class StudyFiles:
    """What the report reads from a study directory; absent files read as empty."""

    layout: StudyLayout
    results: dict[str, Any]
    retrieval: list[dict[str, str]]
    similarity: list[dict[str, str]]

    @classmethod
    def read(cls, root: Path) -> StudyFiles:
        if not root.is_dir():
            raise UserError(f"{root}: not a study directory")
        layout = StudyLayout(root)
        path = layout.table_json("results")
        return cls(
            layout,
            read_json(path) if path.is_file() else {},
            _read_csv(layout.table("retrieval")),
            _read_csv(layout.table("similarity")),
        )


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _nan(value: Any) -> float:
    """Missing numbers are null in results.json and empty in CSV; NaN here."""
    if value is None or value == "":
        return math.nan
    return float(value)


def _mean(values: Iterable[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.fmean(finite) if finite else math.nan


def _std(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.stdev(finite) if len(finite) > 1 else 0.0


def _number(value: Any, digits: int = 3) -> str:
    value = _nan(value) if not isinstance(value, float) else value
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _percent(value: float) -> str:
    return f"{value:.0%}"


def _set_name(entry: dict[str, Any]) -> str:
    """``ner at 50%``: how a task and sparsity are named in titles and file names."""
    return f"{entry['task']} at {_percent(entry['sparsity'])}"


def _stem(kind: str, entry: dict[str, Any] | str) -> str:
    """A PNG's file stem: ``transfer-ner-s50`` for a task and sparsity (as the results'
    tables are named), ``score-ner`` for a task."""
    if isinstance(entry, dict):
        entry = f"{entry['task']}-s{100 * entry['sparsity']:g}"
    return re.sub(r"[^A-Za-z0-9]+", "-", f"{kind}-{entry}").strip("-").lower()


def _layer_label(layer: str) -> str:
    """``encoder.layer.3`` -> ``3``, ``decoder.block.1`` -> ``dec 1``: short tick labels."""
    match = re.fullmatch(r"(?:(encoder|decoder)\.)?(?:layer|block|h|layers)\.(\d+)", layer)
    if not match:
        return layer
    return f"dec {match.group(2)}" if match.group(1) == "decoder" else match.group(2)


def _metric_label(metric: str) -> str:
    return f"{metric} (best evaluation score, 0–1)"


def _unit(values: Iterable[float]) -> str:
    """Scores on 0–1 or in percent: say which, from the values."""
    return "(%)" if max((v for v in values if not math.isnan(v)), default=0) > 1 else "(0–1)"


# --- the headline --------------------------------------------------------------------------
def headline_section(files: StudyFiles) -> Section:
    section = Section(
        "headline",
        "Headline",
        "The paper's questions answered with this study's numbers, each beside its "
        "references (random masks, the same language's other seed, the one-shot mask of θ0).",
    )
    # headline_text wants NaN where results.json has null (a cell not done yet)
    lines = [
        {k: math.nan if v is None else v for k, v in line.items()}
        for line in files.results.get("headline", [])
    ]
    for line in lines:
        section.parts.append(Text(headline_text(line), preformatted=True))
    if lines:
        columns = [
            ("between languages", "overlap_between_languages"),
            ("random", "overlap_random"),
            ("same language", "overlap_same_language"),
            ("with θ0", "overlap_oneshot"),
            ("beyond θ0", "overlap_beyond_theta0"),
            ("beyond θ0, random", "overlap_beyond_theta0_random"),
            ("transfer", "transfer_score"),
            ("random mask", "random_score"),
            ("one-shot", "oneshot_score"),
            ("dense", "dense_score"),
        ]
        section.parts.append(
            Table(
                "Overlap (Jaccard) and scores (mean over targets and seeds) per task and sparsity",
                ["task", "sparsity", "metric", *(name for name, _ in columns)],
                [
                    [
                        line["task"],
                        _percent(line["sparsity"]),
                        line["metric"],
                        *(_number(line[key]) for _, key in columns),
                    ]
                    for line in lines
                ],
            )
        )
    return section.done(
        "No data: results/results.json has no headline; run `polyticket study FILE` (or "
        "`--summary`) to write it."
    )


# --- score vs sparsity (Fig. 2) ------------------------------------------------------------
def imp_runs(files: StudyFiles) -> dict[str, dict[str, list[int]]]:
    """task -> language -> seeds of the IMP cells present, from the tickets table and the
    cells folder (so a study still running, with no tickets yet, shows its levels)."""
    found: set[tuple[str, str, int]] = {
        (row["task"], row["language"], int(row["seed"])) for row in files.results.get("tickets", [])
    }
    cells = files.layout.cells
    for seed_dir in cells.glob("*/*/*") if cells.is_dir() else []:
        match = re.fullmatch(r"seed(\d+)", seed_dir.name)
        if match:
            found.add((seed_dir.parent.parent.name, seed_dir.parent.name, int(match.group(1))))
    runs: dict[str, dict[str, list[int]]] = {}
    for task, language, seed in sorted(found):
        if files.layout.cell(imp_cell(task, language, seed).name).completed_levels():
            runs.setdefault(task, {}).setdefault(language, []).append(seed)
    return runs


def level_scores(files: StudyFiles, task: str, language: str, seeds: list[int]):
    """Per level: (mean sparsity, mean score, std over seeds) and the metric's name."""
    by_level: dict[int, list[tuple[float, float]]] = {}
    metric = "score"
    for seed in seeds:
        run = files.layout.cell(imp_cell(task, language, seed).name)
        for k in run.completed_levels():
            metrics = read_json(run.level(k).metrics)
            metric = metrics.get("metric", metric)
            by_level.setdefault(k, []).append((metrics["sparsity"], _nan(metrics["best_score"])))
    points = [
        (_mean(s for s, _ in v), _mean(x for _, x in v), _std([x for _, x in v]))
        for _, v in sorted(by_level.items())
    ]
    return points, metric


def score_section(files: StudyFiles) -> Section:
    section = Section(
        "score-vs-sparsity",
        "Score against sparsity per language (Fig. 2)",
        "Each IMP level's best evaluation score (mean over seeds, bars: standard deviation), "
        "beside random masks of the target sparsities.",
    )
    for task, languages in imp_runs(files).items():
        series, metric = [], "score"
        for language, seeds in languages.items():
            points, metric = level_scores(files, task, language, seeds)
            x, y, err = zip(*points, strict=True)
            series.append(plots.Series(language, [100 * v for v in x], y, err))
        random = [
            (100 * m["sparsity"], _mean(_nan(v) for v in m["mean"]["random"].values()))
            for m in files.results.get("transfer", [])
            if m["task"] == task and "random" in m["mean"]
        ]
        if random:
            x, y = zip(*random, strict=True)
            series.append(plots.Series("random mask", x, y, reference=True))
        section.parts.append(
            Plot(
                _stem("score", task),
                f"{task}: score of each IMP level against its sparsity.",
                plots.lines(f"{task}: score vs sparsity", SPARSITY, _metric_label(metric), series),
            )
        )
    tickets = files.results.get("tickets", [])
    if tickets:
        section.parts.append(
            Table(
                "The study's tickets (rule seed-std) with their dense and random-mask scores",
                ["task", "language", "seed", "level", "sparsity", "score", "dense", "random"],
                [
                    [
                        r["task"],
                        r["language"],
                        str(r["seed"]),
                        str(r["level"]),
                        _percent(r["sparsity"]),
                        _number(r["score"]),
                        _number(r["dense_score"]),
                        _number(r["random_score"]),
                    ]
                    for r in tickets
                ],
            )
        )
    return section.done("No data: no IMP cell has a completed level under cells/.")


# --- overlap -------------------------------------------------------------------------------
def _overlaps(files: StudyFiles) -> list[dict[str, Any]]:
    """The overlap entries that have pairs of tickets."""
    return [o for o in files.results.get("overlap", []) if o.get("pairs")]


def _group_mean(entries: list[dict], scope: str, group: str, measure: str) -> float:
    return _mean(_nan(e[scope].get(group, {}).get(measure)) for e in entries)


def layer_overlap_section(files: StudyFiles) -> Section:
    section = Section(
        "overlap-by-layer",
        "Overlap per layer (Fig. 3)",
        "Jaccard of tickets of different languages per layer, with the expectation for "
        "random masks, the same language's other seed (the upper bound) and the one-shot "
        "magnitude mask of θ0.",
    )
    for overlap in _overlaps(files):
        section.parts.append(_layer_plot(overlap))
    return section.done(
        "No data: fewer than two tickets at every target sparsity (run the study's IMP cells)."
    )


def _layer_plot(overlap: dict[str, Any]) -> Plot:
    pairs = overlap["pairs"]
    between = [p for p in pairs if not p["same_language"]]
    same = [p for p in pairs if p["same_language"]]
    curves = [  # (label, entries averaged, measure, is a reference)
        ("between languages", between, "jaccard", False),
        ("same language, other seed (bound)", same, "jaccard", True),
        ("random expectation", between or same, "random", True),
        ("ticket vs θ0 one-shot mask", overlap.get("with_baseline", []), "jaccard", True),
    ]
    layers = list(pairs[0]["by_layer"])
    series = [
        plots.Series(
            label,
            range(len(layers)),
            [_group_mean(entries, "by_layer", layer, measure) for layer in layers],
            reference=reference,
        )
        for label, entries, measure, reference in curves
        if entries
    ]
    name = _set_name(overlap)
    return Plot(
        _stem("overlap-layer", overlap),
        f"{name}: overlap per layer (means over pairs of tickets; grey: references).",
        plots.lines(
            f"{name}: ticket overlap per layer",
            "layer",
            JACCARD,
            series,
            [_layer_label(layer) for layer in layers],
        ),
    )


def _language_pairs(pairs: list[dict]) -> dict[str, list[dict]]:
    """Pairs of different languages grouped by language pair (over seeds): ``en–fr``."""
    grouped: dict[str, list[dict]] = {}
    for pair in pairs:
        if not pair["same_language"]:
            a, b = sorted(label.split("/")[0] for label in (pair["a"], pair["b"]))
            grouped.setdefault(f"{a}–{b}", []).append(pair)
    return grouped


def component_section(files: StudyFiles) -> Section:
    section = Section(
        "overlap-by-component",
        "Overlap per component and per head",
        "Jaccard per weight matrix kind (query, key, value, attention output, FFN in/out) "
        "for each language pair, with the references; and per attention head, the mean over "
        "pairs of different languages.",
    )
    for overlap in _overlaps(files):
        section.parts.append(_component_plot(overlap))
        heads = _head_plot(overlap)
        if heads:
            section.parts.append(heads)
        else:
            section.parts.append(
                Text(f"{_set_name(overlap)}: no per-head overlap (the masks state no head count).")
            )
    return section.done("No data: fewer than two tickets at every target sparsity.")


def _component_plot(overlap: dict[str, Any]) -> Plot:
    pairs = overlap["pairs"]
    components = list(pairs[0]["by_component"])
    rows = {name: (group, "jaccard") for name, group in _language_pairs(pairs).items()}
    same = [p for p in pairs if p["same_language"]]
    if same:
        rows["same language"] = (same, "jaccard")
    if overlap.get("with_baseline"):
        rows["vs θ0 one-shot"] = (overlap["with_baseline"], "jaccard")
    rows["random expectation"] = (pairs, "random")
    values = np.array(
        [
            [_group_mean(entries, "by_component", c, measure) for c in components]
            for entries, measure in rows.values()
        ]
    )
    name = _set_name(overlap)
    references = len(rows) - sum(1 for r in rows if "–" in r)
    return Plot(
        _stem("overlap-component", overlap),
        f"{name}: overlap per component; the last rows are the references.",
        plots.heatmap(
            f"{name}: overlap per component",
            values,
            list(rows),
            components,
            "component (weight matrix kind)",
            "language pair / reference",
            JACCARD,
            separators=[len(rows) - references],
        ),
    )


def _head_plot(overlap: dict[str, Any]) -> Plot | None:
    between = [p for p in overlap["pairs"] if not p["same_language"] and p.get("by_head")]
    if not between:
        return None
    keys = list(between[0]["by_head"])
    split = [key.rsplit(".", 1) for key in keys]  # "encoder.layer.0.head1" -> layer, head
    layers = list(dict.fromkeys(layer for layer, _ in split))
    heads = list(dict.fromkeys(head for _, head in split))
    values = np.full((len(layers), len(heads)), np.nan)
    for key, (layer, head) in zip(keys, split, strict=True):
        values[layers.index(layer), heads.index(head)] = _group_mean(
            between, "by_head", key, "jaccard"
        )
    chance = _mean(_group_mean(between, "by_head", key, "random") for key in keys)
    name = _set_name(overlap)
    return Plot(
        _stem("overlap-head", overlap),
        f"{name}: overlap per attention head between languages (random expectation "
        f"{_number(chance)}).",
        plots.heatmap(
            f"{name}: overlap per head (random ≈ {_number(chance)})",
            values,
            [_layer_label(layer) for layer in layers],
            [h.replace("head", "") for h in heads],
            "head",
            "layer",
            JACCARD,
        ),
    )


def beyond_section(files: StudyFiles) -> Section:
    section = Section(
        "overlap-beyond-theta0",
        "Overlap beyond θ0",
        "Jaccard of two tickets' departures from θ0's one-shot magnitude mask, per language "
        "pair (mean over seeds; diagonal: the same language's other seed): did training "
        "move different languages to the same weights?",
    )
    for overlap in _overlaps(files):
        if "beyond_theta0" not in overlap["pairs"][0]["overall"]:
            continue
        languages, similarity = language_similarity(overlap, "beyond_theta0")
        same = [p for p in overlap["pairs"] if p["same_language"]]
        for i, language in enumerate(languages):
            own = [p for p in same if p["a"].split("/")[0] == language]
            similarity[i, i] = _mean(p["overall"]["beyond_theta0"] for p in own)
        chance = overlap["summary"].get("beyond_theta0_random")
        name = _set_name(overlap)
        section.parts.append(
            Plot(
                _stem("beyond-theta0", overlap),
                f"{name}: overlap beyond θ0 (random expectation {_number(chance)})"
                + ("; blank diagonal: one seed only." if not same else "."),
                plots.heatmap(
                    f"{name}: overlap beyond θ0 (random ≈ {_number(chance)})",
                    similarity,
                    languages,
                    languages,
                    "language",
                    "language",
                    "Jaccard of departures from θ0 (0–1)",
                ),
            )
        )
    return section.done(
        "No data: needs the one-shot masks of θ0; run the study with `run: {oneshot: true}`."
    )


# --- transfer ------------------------------------------------------------------------------
def _has_values(matrix: dict[str, Any]) -> bool:
    return any(not math.isnan(_nan(v)) for row in matrix["mean"].values() for v in row.values())


def _mean_std(mean: float, std: float, between: str) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.3f}" + ("" if math.isnan(std) else f"{between}±{std:.3f}")


def transfer_section(files: StudyFiles) -> Section:
    section = Section(
        "transfer",
        "Transfer matrices (Tables 3–5)",
        "Score of a source language's ticket trained on a target language (mean ± std over "
        "seeds); the diagonal is the target's own ticket; dense, random and one-shot rows are "
        "the references.",
    )
    for matrix in files.results.get("transfer", []):
        if not _has_values(matrix):
            continue
        rows, targets = matrix["rows"], matrix["targets"]
        mean = np.array([[_nan(matrix["mean"][r][t]) for t in targets] for r in rows])
        # a standard deviation over one seed is no spread: left out rather than shown as 0
        std = [
            [_nan(matrix["std"][r][t]) if matrix["n"][r][t] > 1 else math.nan for t in targets]
            for r in rows
        ]
        text = [
            [_mean_std(m, s, "\n") for m, s in zip(mr, sr, strict=True)]
            for mr, sr in zip(mean, std, strict=True)
        ]
        first_reference = next((i for i, r in enumerate(rows) if r in REFERENCE_ROWS), len(rows))
        name = _set_name(matrix)
        section.parts.append(
            Plot(
                _stem("transfer", matrix),
                f"{name}: transfer matrix ({matrix['metric']}; rows source, columns target).",
                plots.heatmap(
                    f"{name}: transfer ({matrix['metric']})",
                    mean,
                    rows,
                    targets,
                    "target language (trained and evaluated on)",
                    "source of the mask",
                    _metric_label(matrix["metric"]),
                    text,
                    separators=[first_reference],
                ),
            )
        )
        section.parts.append(
            Table(
                f"{name}: transfer, {matrix['metric']} mean ± std over seeds",
                ["source \\ target", *targets],
                [
                    [r, *(_mean_std(m, s, " ") or "–" for m, s in zip(mr, sr, strict=True))]
                    for r, mr, sr in zip(rows, mean, std, strict=True)
                ],
            )
        )
    return section.done(
        "No data: no transfer, random or one-shot cell is done (run.transfer, run.random, "
        "run.oneshot)."
    )


def drop_section(files: StudyFiles) -> Section:
    section = Section(
        "transfer-drop",
        "Relative transfer drop (Fig. 6)",
        "For each source, the mean over other targets of (a(source, t) − a(t, t)) / a(t, t): "
        "how its ticket does on other languages against their own tickets (negative: worse).",
    )
    drops = [
        d
        for d in files.results.get("transfer_drop", [])
        if not math.isnan(_nan(d["relative_drop"]))
    ]
    for task in dict.fromkeys(d["task"] for d in drops):
        section.parts.append(_drop_plot(task, [d for d in drops if d["task"] == task]))
    return section.done("No data: no transfer cells are done (run.transfer).")


def _drop_plot(task: str, drops: list[dict[str, Any]]) -> Plot:
    """Sparsities as evenly spaced categories: a study has a few (50%, 75%, 90%)."""
    sparsities = sorted({d["sparsity"] for d in drops})
    by_source: dict[str, dict[float, float]] = {}
    for d in drops:
        by_source.setdefault(d["source"], {})[d["sparsity"]] = 100 * d["relative_drop"]
    series = [
        plots.Series(
            source,
            [sparsities.index(s) for s in values],
            list(values.values()),
            reference=source in REFERENCE_ROWS,
        )
        for source, values in by_source.items()
    ]
    return Plot(
        _stem("transfer-drop", task),
        f"{task}: relative transfer drop per source (grey: reference rows).",
        plots.lines(
            f"{task}: relative transfer drop",
            SPARSITY,
            "(a(s,t) − a(t,t)) / a(t,t), mean over t ≠ s (%)",
            series,
            [_percent(s) for s in sparsities],
        ),
    )


# --- representations: retrieval and similarity ---------------------------------------------
def _without_seed(mask: str) -> str:
    """``ner/en/seed1/study-ticket`` -> ``ner/en/study-ticket``: curves average seeds."""
    return re.sub(r"/seed\d+(?=/|$)", "", mask)


def _layer_curves(rows: list[dict[str, str]], key: Callable[[dict], str], value: str):
    """label -> (layers, mean value per layer), averaged over everything else."""
    grouped: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        grouped.setdefault(key(row), {}).setdefault(int(row["layer"]), []).append(_nan(row[value]))
    return {
        label: (sorted(layers), [_mean(layers[k]) for k in sorted(layers)])
        for label, layers in grouped.items()
    }


def retrieval_section(files: StudyFiles) -> Section:
    section = Section(
        "retrieval",
        "Retrieval per layer (Fig. 7)",
        "Sentence retrieval accuracy across languages from each layer's representations, "
        "dense model against the tickets (mean over language pairs and seeds).",
    )
    if files.retrieval:
        curves = _layer_curves(files.retrieval, lambda r: _without_seed(r["mask"]), "accuracy")
        unit = _unit(_nan(r["accuracy"]) for r in files.retrieval)
        series = [
            plots.Series(label, x, y, reference=label == "dense")
            for label, (x, y) in curves.items()
        ]
        section.parts.append(
            Plot(
                "retrieval",
                "Retrieval accuracy per layer (grey: dense model).",
                plots.lines(
                    "Retrieval accuracy per layer", "layer", f"retrieval accuracy {unit}", series
                ),
            )
        )
    return section.done(
        "No data: no results/retrieval.csv; run the study with "
        "run: {representations: {parallel: FILES}} (or polyticket retrieve on its masks)."
    )


def _comparison(name: str) -> str:
    return "vs dense model" if name == "dense" else name


def similarity_section(files: StudyFiles) -> Section:
    section = Section(
        "similarity",
        "Representation similarity per layer (App. F)",
        "SVCCA, PWCCA (and CKA) per layer: each ticket against the dense model, and between "
        "languages (mean over language sets and seeds).",
    )
    by_measure: dict[str, list[dict[str, str]]] = {}
    for row in files.similarity:
        by_measure.setdefault(row["measure"], []).append(row)
    for measure in sorted(
        by_measure,
        key=lambda m: ("svcca", "pwcca", "cka").index(m) if m in ("svcca", "pwcca", "cka") else 3,
    ):
        curves = _layer_curves(
            by_measure[measure],
            lambda r: f"{_without_seed(r['mask'])} ({_comparison(r['comparison'])})",
            "value",
        )
        series = [plots.Series(label, x, y) for label, (x, y) in curves.items()]
        section.parts.append(
            Plot(
                _stem("similarity", measure),
                f"{measure.upper()} per layer.",
                plots.lines(
                    f"{measure.upper()} similarity per layer",
                    "layer",
                    f"{measure.upper()} similarity (0–1)",
                    series,
                ),
            )
        )
    return section.done(
        "No data: no results/similarity.csv; run the study with "
        "run: {representations: {parallel: FILES}} (or polyticket similarity on its masks)."
    )


# --- clusters and core ---------------------------------------------------------------------
def dendrogram_section(files: StudyFiles) -> Section:
    section = Section(
        "dendrogram",
        "Languages clustered by ticket overlap",
        "Average-linkage clustering of languages on 1 − overlap, compared with script, "
        "family and genus groups (adjusted Rand index: 1 the same partition, 0 chance).",
    )
    for overlap in _overlaps(files):
        clusters = overlap.get("clusters")
        if not clusters:
            continue
        name = _set_name(overlap)
        measure = clusters.get("measure", "jaccard")
        section.parts.append(
            Plot(
                _stem("dendrogram", overlap),
                f"{name}: dendrogram of languages.",
                plots.dendrogram(
                    f"{name}: languages by ticket overlap",
                    clusters["merges"],
                    clusters["languages"],
                    f"distance (1 − {measure}, 0–1)",
                ),
            )
        )
        groups = clusters.get("groups", {})
        if groups:
            section.parts.append(
                Table(
                    f"{name}: the tree cut into as many clusters as each grouping has groups",
                    ["grouping", "adjusted Rand", "purity"],
                    [
                        [g, _number(v["adjusted_rand"]), _number(v["purity"])]
                        for g, v in groups.items()
                    ],
                )
            )
    return section.done("No data: clustering needs tickets of three or more languages.")


def core_section(files: StudyFiles) -> Section:
    section = Section(
        "core",
        "The language-neutral core",
        "Weights every language's ticket keeps (the core) and each language's own residue; "
        "with run.core, the scores of the core, the core plus a language's residue and a "
        "random mask of the core's sparsity.",
    )
    for core in files.results.get("core", []):
        name = _set_name(core)
        overall = [r for r in core["sizes"] if r["scope"] == "overall"]
        if overall:
            section.parts.append(
                Table(
                    f"{name}: kept weights of the core and the residues (per seed)",
                    ["seed", "set", "kept", "weights", "kept (%)"],
                    [
                        [
                            str(r["seed"]),
                            r["set"],
                            f"{r['kept']:,}",
                            f"{r['weights']:,}",
                            f"{100 * r['fraction']:.2f}",
                        ]
                        for r in overall
                    ],
                )
            )
            section.parts.append(_core_layers_plot(core))
        scores = [r for r in core["scores"] if not math.isnan(_nan(r.get("core")))]
        if scores:
            keys = ["core", "core_residue", "random_core", "ticket", "dense", "recovered"]
            section.parts.append(
                Table(
                    f"{name}: scores of the core cells (recovered: (core − random) / (ticket − "
                    "random))",
                    [
                        "language",
                        "seed",
                        "core",
                        "core + residue",
                        "random of core's size",
                        "ticket",
                        "dense",
                        "recovered",
                    ],
                    [
                        [r["language"], str(r["seed"]), *(_number(r.get(k)) for k in keys)]
                        for r in scores
                    ],
                )
            )
    return section.done(
        "No data: the core needs tickets of two or more languages at a target sparsity; its "
        "scores need `run: {core: true}`."
    )


def _core_layers_plot(core: dict[str, Any]) -> Plot:
    """Kept share per layer of the core and of each residue (mean over seeds)."""
    rows = [r for r in core["sizes"] if r["scope"] == "layer"]
    layers = list(dict.fromkeys(r["group"] for r in rows))
    sets = list(dict.fromkeys(r["set"] for r in rows))
    series = [
        plots.Series(
            which.replace("residue:", "residue of "),
            range(len(layers)),
            [
                _mean(100 * r["fraction"] for r in rows if r["set"] == which and r["group"] == g)
                for g in layers
            ],
        )
        for which in sets
    ]
    name = _set_name(core)
    # residues are often a hundredth of the core: a log axis shows both, when it can
    positive = all(v > 0 for s in series for v in s.y)
    return Plot(
        _stem("core-layers", core),
        f"{name}: share of each layer's weights in the core and in each residue.",
        plots.lines(
            f"{name}: core and residues per layer",
            "layer",
            "weights kept (% of the layer)",
            series,
            [_layer_label(layer) for layer in layers],
            log=positive,
        ),
    )


SECTIONS = (
    headline_section,
    score_section,
    layer_overlap_section,
    component_section,
    beyond_section,
    transfer_section,
    drop_section,
    retrieval_section,
    similarity_section,
    dendrogram_section,
    core_section,
)


def build(root: Path) -> list[Section]:
    files = StudyFiles.read(Path(root))
    return [make(files) for make in SECTIONS]


# --- writing -------------------------------------------------------------------------------
STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1300px; color: #111; }
section { border-top: 1px solid #bbb; margin-top: 1.5em; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: 620px; }
figure img { width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #333; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #999; padding: 2px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { text-align: left; font-weight: bold; padding: 4px 0; }
pre { background: #f4f4f4; padding: 0.6em; white-space: pre-wrap; }
.missing { font-style: italic; color: #555; }
"""


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=plots.DPI)
    return buffer.getvalue()


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    return f"<table><caption>{html.escape(table.caption)}</caption><tr>{head}</tr>{body}</table>"


def _markdown_table(table: Table) -> str:
    def cells(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    return "\n".join(
        [
            f"**{table.caption}**",
            "",
            cells(table.header),
            cells(["---"] * len(table.header)),
            *(cells(r) for r in table.rows),
        ]
    )


def _html_section(section: Section, images: dict[str, bytes]) -> str:
    out = [
        f'<section id="{section.key}"><h2>{html.escape(section.title)}</h2>',
        f"<p>{html.escape(section.about)}</p>",
    ]
    if section.missing:
        out.append(f'<p class="missing">{html.escape(section.missing)}</p>')
    figures = []
    for part in section.parts:
        if isinstance(part, Plot):
            data = base64.b64encode(images[part.name]).decode("ascii")
            figures.append(
                f'<figure id="fig-{part.name}"><img alt="{html.escape(part.caption)}" '
                f'src="data:image/png;base64,{data}"><figcaption>{html.escape(part.caption)}'
                "</figcaption></figure>"
            )
            continue
        if figures:  # a run of figures side by side, then the text or table after them
            out.append(f'<div class="figures">{"".join(figures)}</div>')
            figures = []
        if isinstance(part, Table):
            out.append(_html_table(part))
        elif part.preformatted:
            out.append(f"<pre>{html.escape(part.text)}</pre>")
        else:
            out.append(f"<p>{html.escape(part.text)}</p>")
    if figures:
        out.append(f'<div class="figures">{"".join(figures)}</div>')
    return "\n".join([*out, "</section>"])


def _markdown_section(section: Section) -> str:
    out = [f"## {section.title}", "", section.about, ""]
    if section.missing:
        out += [f"*{section.missing}*", ""]
    for part in section.parts:
        if isinstance(part, Plot):
            out += [f"![{part.caption}]({part.name}.png)", ""]
        elif isinstance(part, Table):
            out += [_markdown_table(part), ""]
        else:
            out += [
                "```" if part.preformatted else "",
                part.text,
                "```" if part.preformatted else "",
                "",
            ]
    return "\n".join(out)


def render_html(title: str, sections: list[Section], images: dict[str, bytes]) -> str:
    contents = "".join(
        f'<li><a href="#{s.key}">{html.escape(s.title)}</a>{" (no data)" if s.missing else ""}</li>'
        for s in sections
    )
    body = "\n".join(_html_section(s, images) for s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1><ul>{contents}</ul>\n{body}\n</body></html>\n"
    )


def render_markdown(title: str, sections: list[Section]) -> str:
    return "\n".join([f"# {title}", "", *(_markdown_section(s) for s in sections)])


def write_report(root: str | Path, out: str | Path | None = None) -> Path:
    """The report of the study in ``root`` under ``out`` (default ``root/report``):
    ``index.html``, one PNG per figure and ``summary.md``; returns the HTML's path."""
    root = Path(root)
    sections = build(root)
    out = Path(out) if out else StudyLayout(root).report
    images = {}
    for part in (p for s in sections for p in s.parts if isinstance(p, Plot)):
        images[part.name] = _png(part.figure)
        with atomic_path(out / f"{part.name}.png") as tmp:
            tmp.write_bytes(images[part.name])
    # A figure that a previous report drew and this one does not (its data was removed)
    # would otherwise stay beside the new summary and mislead.
    for stale in out.glob("*.png"):
        if stale.stem not in images:
            stale.unlink()
    title = f"polyticket report: {root.resolve().name}"
    write_text(out / "summary.md", render_markdown(title, sections))
    return write_text(out / "index.html", render_html(title, sections, images))
