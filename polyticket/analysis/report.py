"""A study's report: one self-contained HTML page, its PNGs and a Markdown summary.

    write_report(Path("runs/demo"))   # -> runs/demo/report/: index.html, *.png, summary.md

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from polyticket import __version__
from polyticket.analysis import plots
from polyticket.analysis.cluster import GROUPINGS, language_similarity
from polyticket.analysis.overlap import language_pairs, same_language_pairs
from polyticket.analysis.results import (
    GOAL_JACCARD,
    GOAL_SPARSITY,
    headline_text,
    is_reference,
    not_done_text,
    number,
    partial_cells,
    sparsity_tags,
    with_spread,
)
from polyticket.errors import UserError
from polyticket.io import atomic_path, prepare_output_dir, read_json, write_text
from polyticket.layout import ReportLayout, RunLayout, StudyLayout
from polyticket.study.grid import percent
from polyticket.study.kinds.imp import imp_cell
from polyticket.study.kinds.random_further import ROW_PREFIX

SPARSITY = "sparsity (% of prunable weights pruned)"
JACCARD = "Jaccard (weights both keep / weights either keeps, 0–1)"
BEYOND = "Jaccard of departures from θ0 (0–1)"
BLOCK = "transformer block"
# Representations are numbered from the embeddings: hidden state k is block k − 1's output.
HIDDEN_STATE = "layer (0: embeddings; k: output of block k − 1)"
# A reference's style (plots.REFERENCE_STYLES) by what it is: alike in every figure.
REFERENCE_STYLE = {"dense": 0, "random": 1, "oneshot": 2, "bound": 3}
# The two overlap measures the figures draw, each with its random expectation and how its
# axis is labelled: the plain Jaccard (the paper's) and the overlap beyond θ0 (the overlap
# of what training changed, which the plain Jaccard hides under θ0's magnitudes).
MEASURES = {
    "jaccard": ("random", JACCARD, "overlap"),
    "beyond_theta0": ("beyond_theta0_random", BEYOND, "overlap beyond θ0"),
}


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

    @cached_property
    def languages(self) -> list[str]:
        """The study's languages (and language sets) in its own order, as its transfer
        matrices and tickets list them."""
        found = [t for m in self.results.get("transfer", []) for t in m["targets"]]
        found += [row["language"] for row in self.results.get("tickets", [])]
        return list(dict.fromkeys(found))

    @cached_property
    def multi_language(self) -> dict[str, list[str]]:
        """The multi-language tickets (``en+fr``), each with the tasks that have one: the
        tickets' languages that are no target of a transfer matrix (those are the tasks'
        own languages)."""
        targets = {t for m in self.results.get("transfer", []) for t in m["targets"]}
        sets: dict[str, list[str]] = {}
        for row in self.results.get("tickets", []):
            if row["language"] not in targets:
                tasks = sets.setdefault(row["language"], [])
                tasks += [row["task"]] if row["task"] not in tasks else []
        return sets

    @cached_property
    def left_out(self) -> set[str]:
        """The cells results.json names as left out of its tables (their files may not even
        parse): the report's own reads of cells skip them too."""
        return {p["cell"] for p in self.results.get("problems", [])}

    def style(self, language: str) -> int | None:
        """A language's line style in every figure (None: not one of the study's)."""
        languages = self.languages
        return languages.index(language) if language in languages else None

    @classmethod
    def read(cls, root: Path) -> StudyFiles:
        if not root.is_dir():
            raise UserError(f"{root}: not a study directory")
        layout = StudyLayout(root)
        if RunLayout(root).run_json.is_file():
            raise UserError(f"{root}: a find or train run, not a study directory")
        path = layout.table_json("results")
        return cls(
            layout,
            _read_results(path) if path.is_file() else {},
            _read_csv(layout.table("retrieval")),
            _read_csv(layout.table("similarity")),
        )


def _read_results(path: Path) -> dict[str, Any]:
    """``results.json`` as ``polyticket study`` writes it: an object of lists of records
    (and the counts ``cells`` and ``not_done``, and the ``polyticket`` version)."""
    fix = "rewrite it with `polyticket study FILE --summary`"
    try:
        results = read_json(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); {fix}") from None
    if not isinstance(results, dict) or not all(
        (isinstance(v, list) and all(isinstance(r, dict) for r in v))
        or (k in ("cells", "not_done") and type(v) is int)
        or (k == "polyticket" and isinstance(v, str))
        for k, v in results.items()
    ):
        raise UserError(f"{path}: not a study's results (an object of lists of records); {fix}")
    return results


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


def _row(record: dict[str, Any], text: str, percents: str, numbers: str) -> list[str]:
    """A table row of ``record``'s fields: those named in ``text`` as they are, then those
    in ``percents`` as percentages, then those in ``numbers`` to three decimals."""
    return [
        *(str(record[key]) for key in text.split()),
        *(_percent(record[key]) for key in percents.split()),
        *(number(record[key]) for key in numbers.split()),
    ]


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


def _shown(row: str) -> str:
    """A transfer row as the page names it: ``oneshot`` -> ``one-shot θ0``,
    ``random-from-s10`` -> ``s10 level + random``."""
    if row.startswith(ROW_PREFIX):
        return f"{row.removeprefix(ROW_PREFIX)} level + random"
    return "one-shot θ0" if row == "oneshot" else row


def _layer_label(layer: str) -> str:
    """``encoder.layer.3`` -> ``3``, ``decoder.block.1`` -> ``dec 1``, its cross-attention
    heads ``decoder.block.1.cross`` -> ``dec 1 cross``: short tick labels."""
    match = re.fullmatch(
        r"(?:(encoder|decoder)\.)?(?:layer|block|h|layers)\.(\d+)(\.cross)?", layer
    )
    if not match:
        return layer
    label = f"dec {match.group(2)}" if match.group(1) == "decoder" else match.group(2)
    return label + (" cross" if match.group(3) else "")


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
    tickets = files.results.get("tickets", [])
    if tickets:
        seeds = sorted({row["seed"] for row in tickets})
        tasks = list(dict.fromkeys(row["task"] for row in tickets))
        sets = files.multi_language
        languages = [x for x in files.languages if x not in sets]
        # a set is named with its tasks where not every task has it (none lacking a language)
        named = [
            x if len(on) == len(tasks) else f"{x} ({', '.join(on)} only)" for x, on in sets.items()
        ]
        section.parts.append(
            Text(
                f"Tickets for {', '.join(tasks)} in {len(languages)} "
                f"language{'s' if len(languages) != 1 else ''} ({', '.join(languages)})"
                + (
                    f" and {len(sets)} multi-language set{'s' if len(sets) > 1 else ''} "
                    f"({', '.join(named)})"
                    if sets
                    else ""
                )
                + f", seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}."
                + (
                    " One seed: no spread over seeds (no ± and no error bars), no "
                    "same-language bound, and every pair of languages shares the seed, which "
                    "alone raises their overlap."
                    if len(seeds) == 1
                    else ""
                )
            )
        )
    # headline_text wants NaN where results.json has null (a cell not done yet)
    lines = [
        {k: math.nan if v is None else v for k, v in line.items()}
        for line in files.results.get("headline", [])
    ]
    for line in lines:
        section.parts.append(Text(headline_text(line), preformatted=True))
    section.parts += [Text(note) for note in _dense_far_behind(files)]
    written_by = files.results.get("polyticket", "a version before 0.4.4")
    if files.results and written_by != __version__:  # its tables may lack what this one draws
        section.parts.append(
            Text(
                f"results.json was written by polyticket {written_by}, this is {__version__}: "
                "`polyticket study FILE --summary` rewrites it with this version's tables."
            )
        )
    if files.results.get("not_done"):
        section.parts.append(Text(not_done_text(files.results)))
    problems = files.results.get("problems", [])
    if problems:
        listed = "; ".join(f"{p['cell']}: {p['problem']}" for p in problems[:PROBLEMS_LISTED])
        more = len(problems) - PROBLEMS_LISTED
        section.parts.append(
            Text(
                f"{len(problems)} cell(s) are left out of every table and figure below: "
                f"{listed}" + (f"; and {more} more (results.json: problems)" if more > 0 else "")
            )
        )
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
                        *(number(line[key]) for _, key in columns),
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
    """Per level that every seed has reached: (mean sparsity, mean score, std over seeds),
    and the metric's name (a level of fewer seeds would put a one-seed point on a curve of
    means, while a seed's run is still going)."""
    per_seed: list[dict[int, tuple[float, float]]] = []
    metric = "score"
    for seed in seeds:
        name = imp_cell(task, language, seed).name
        if name in files.left_out:  # named in the headline
            continue
        run = files.layout.cell(name)
        levels = {}
        for k in run.completed_levels():
            metrics = read_json(run.level(k).metrics)
            metric = metrics.get("metric", metric)
            levels[k] = (metrics["sparsity"], _nan(metrics["best_score"]))
        per_seed.append(levels)
    common = sorted(set.intersection(*(set(levels) for levels in per_seed))) if per_seed else []
    points = []
    for k in common:
        values = [levels[k] for levels in per_seed]
        points.append(
            (_mean(s for s, _ in values), _mean(x for _, x in values), _std([x for _, x in values]))
        )
    return points, metric


PROBLEMS_LISTED = 5  # cells left out that the headline names, before "and N more"

# A ticket this far ahead of its own dense model (absolute, on scores of 0-1; perplexity:
# this factor) says the dense model had not converged: the budget, not the sub-network.
FAR_AHEAD = 0.1
FAR_AHEAD_FACTOR = 1.25


def _dense_far_behind(files: StudyFiles) -> list[str]:
    """A warning per task whose tickets beat their own dense model by far."""
    greater = {m["task"]: m["greater_is_better"] for m in files.results.get("transfer", [])}
    notes = []
    for task in dict.fromkeys(r["task"] for r in files.results.get("tickets", [])):
        far = [
            r
            for r in files.results["tickets"]
            if r["task"] == task
            and not any(v is None or math.isnan(v) for v in (r["score"], r["dense_score"]))
            and (
                r["score"] - r["dense_score"] > FAR_AHEAD
                if greater.get(task, True)
                else r["dense_score"] > FAR_AHEAD_FACTOR * r["score"]
            )
        ]
        if far:
            cases = ", ".join(
                f"{r['language']} seed {r['seed']}: {number(r['score'])} vs dense "
                f"{number(r['dense_score'])}"
                for r in far[:4]
            )
            more = f" and {len(far) - 4} more" if len(far) > 4 else ""
            notes.append(
                f"Note ({task}): tickets beat their own dense model by far ({cases}{more}). "
                "The dense model had not converged at this training budget, so comparisons "
                "with it, and the tickets chosen against it, reflect the budget more than the "
                "sub-networks: train longer (max_steps or epochs) for conclusions."
            )
    return notes


def score_section(files: StudyFiles) -> Section:
    section = Section(
        "score-vs-sparsity",
        "Score against sparsity per language (Fig. 2)",
        "Each IMP level's best evaluation score (mean over seeds, at the levels every seed "
        "has reached; bars: standard deviation, with two or more seeds) beside random masks "
        "of the target sparsities (run.random); 0% is the dense model.",
    )
    for task, languages in imp_runs(files).items():
        series, metric = [], "score"
        order = files.languages
        for language in sorted(languages, key=lambda x: order.index(x) if x in order else 99):
            points, metric = level_scores(files, task, language, languages[language])
            if not points:  # every seed's cell left out
                continue
            x, y, err = zip(*points, strict=True)
            series.append(
                plots.Series(language, [100 * v for v in x], y, err, style=files.style(language))
            )
        random = [
            (100 * m["sparsity"], _mean(_nan(v) for v in m["mean"]["random"].values()))
            for m in files.results.get("transfer", [])
            if m["task"] == task and "random" in m["mean"]
        ]
        if not series:  # every IMP cell of the task left out: nothing to draw
            continue
        if random:
            x, y = zip(*random, strict=True)
            series.append(
                plots.Series("random mask", x, y, reference=True, style=REFERENCE_STYLE["random"])
            )
        section.parts.append(
            Plot(
                _stem("score", task),
                f"{task}: score of each IMP level against its sparsity.",
                plots.lines(
                    f"{task}: score vs sparsity",
                    f"{SPARSITY}; 0: the dense model",
                    _metric_label(metric),
                    series,
                ),
            )
        )
    section.parts += [Text(note) for note in _dense_far_behind(files)]
    tickets = files.results.get("tickets", [])
    if tickets:
        section.parts.append(
            Table(
                "The study's tickets (rule seed-std: the sparsest level within ε of the mean "
                "dense score, ε the standard deviation of the dense score over seeds, or with "
                "one seed find's ε) with their dense and random-mask scores",
                ["task", "language", "seed", "level", "sparsity", "score", "dense", "random", "ε"],
                [
                    _row(
                        r,
                        "task language seed level",
                        "sparsity",
                        "score dense_score random_score epsilon",
                    )
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


def _measures(overlap: dict[str, Any]) -> list[str]:
    """The measures an overlap entry has: beyond θ0 only with θ0's one-shot mask."""
    return [m for m in MEASURES if m in overlap["pairs"][0]["overall"]]


def layer_overlap_section(files: StudyFiles) -> Section:
    section = Section(
        "overlap-by-layer",
        "Overlap per layer (Fig. 3)",
        "Jaccard of tickets of different languages per block, with the expectation for "
        "random masks, the same language's other seed (the upper bound) and the one-shot "
        "magnitude mask of θ0; beside it the overlap beyond θ0 per block: of the weights "
        "training moved in or out of each ticket, how many two languages share.",
    )
    for overlap in _overlaps(files):
        section.parts += [
            _layer_plot(overlap, measure, len(files.languages)) for measure in _measures(overlap)
        ]
    return section.done(
        "No data: fewer than two tickets at every target sparsity (run the study's IMP cells)."
    )


def _layer_plot(overlap: dict[str, Any], measure: str, no_language: int) -> Plot:
    """``no_language``: a data style no language of the study has, for the pairs' mean."""
    chance, axis, what = MEASURES[measure]
    pairs = overlap["pairs"]
    between = language_pairs(pairs)
    same = same_language_pairs(pairs)
    curves = [  # (label, entries averaged, measure, which reference if one)
        ("between languages", between, measure, None),
        ("same language, other seed (bound)", same, measure, "bound"),
        ("random expectation", between or same, chance, "random"),
    ]
    if measure == "jaccard":  # beyond θ0, θ0's own mask departs from itself nowhere
        with_theta0 = overlap.get("with_baseline", [])
        curves.append(("ticket vs θ0 one-shot mask", with_theta0, measure, "oneshot"))
    layers = list(pairs[0]["by_layer"])
    series = [
        plots.Series(
            label,
            range(len(layers)),
            [_group_mean(entries, "by_layer", layer, m) for layer in layers],
            reference=reference is not None,
            style=REFERENCE_STYLE[reference] if reference else no_language,
        )
        for label, entries, m, reference in curves
        if entries
    ]
    name = _set_name(overlap)
    return Plot(
        _stem("overlap-layer" if measure == "jaccard" else "beyond-theta0-layer", overlap),
        f"{name}: {what} per block (means over pairs of tickets of different languages, of "
        "other seeds where a pair of languages has them; grey: references"
        + ("; no bound: one seed" if not same else "")
        + ").",
        plots.lines(
            f"{name}: ticket {what} per block",
            BLOCK,
            axis,
            series,
            [_layer_label(layer) for layer in layers],
        ),
    )


def _language_pairs(pairs: list[dict], order: list[str]) -> dict[str, list[dict]]:
    """The pairs ``language_pairs`` compares grouped by language pair (over seeds), named
    in the study's order of languages: ``en–fr``."""
    grouped: dict[str, list[dict]] = {}
    for pair in language_pairs(pairs):
        a, b = sorted(
            (label.split("/")[0] for label in (pair["a"], pair["b"])),
            key=lambda x: (order.index(x) if x in order else len(order), x),
        )
        grouped.setdefault(f"{a}–{b}", []).append(pair)
    return grouped


def component_section(files: StudyFiles) -> Section:
    section = Section(
        "overlap-by-component",
        "Overlap per component and per head",
        "Jaccard per weight matrix kind (query, key, value, attention output, FFN in/out) "
        "for each language pair, with the references, and the same for the overlap beyond "
        "θ0; per attention head, the overlap beyond θ0 (else the Jaccard) averaged over pairs "
        "of different languages (of other seeds where a pair of languages has them: a shared "
        "seed alone raises overlap).",
    )
    for overlap in _overlaps(files):
        measures = _measures(overlap)
        section.parts += [_component_plot(overlap, m, files.languages) for m in measures]
        heads = _head_plot(overlap, measures[-1])  # beyond θ0 where there is θ0's mask
        if heads:
            section.parts.append(heads)
        else:
            section.parts.append(
                Text(f"{_set_name(overlap)}: no per-head overlap (the masks state no head count).")
            )
    return section.done("No data: fewer than two tickets at every target sparsity.")


def _component_plot(overlap: dict[str, Any], measure: str, order: list[str]) -> Plot:
    chance, axis, what = MEASURES[measure]
    pairs = overlap["pairs"]
    components = list(pairs[0]["by_component"])
    rows = {name: (group, measure) for name, group in _language_pairs(pairs, order).items()}
    data_rows = len(rows)
    same = same_language_pairs(pairs)
    if same:
        rows["same language, other seed"] = (same, measure)
    if overlap.get("with_baseline") and measure == "jaccard":
        rows["vs θ0 one-shot"] = (overlap["with_baseline"], measure)
    # over the pairs the data rows compare, as in the layer and head figures
    rows["random expectation"] = (language_pairs(pairs) or same, chance)
    values = np.array(
        [
            [_group_mean(entries, "by_component", c, m) for c in components]
            for entries, m in rows.values()
        ]
    )
    name = _set_name(overlap)
    return Plot(
        _stem("overlap-component" if measure == "jaccard" else "beyond-theta0-component", overlap),
        f"{name}: {what} per component; below the rule the references, in the end colours "
        "of the language pairs' range.",
        plots.heatmap(
            f"{name}: {what} per component",
            values,
            list(rows),
            components,
            "component (weight matrix kind)",
            "language pair / reference",
            axis,
            separators=[data_rows],
            scale_rows=data_rows,
        ),
    )


def _head_plot(overlap: dict[str, Any], measure: str) -> Plot | None:
    chance_key, axis, what = MEASURES[measure]
    between = [p for p in language_pairs(overlap["pairs"]) if p.get("by_head")]
    if not between:
        return None
    keys = list(between[0]["by_head"])
    split = [key.rsplit(".", 1) for key in keys]  # "encoder.layer.0.head1" -> layer, head
    layers = list(dict.fromkeys(layer for layer, _ in split))
    heads = list(dict.fromkeys(head for _, head in split))
    values = np.full((len(layers), len(heads)), np.nan)
    for key, (layer, head) in zip(keys, split, strict=True):
        values[layers.index(layer), heads.index(head)] = _group_mean(
            between, "by_head", key, measure
        )
    chances = [_group_mean(between, "by_head", key, chance_key) for key in keys]
    name = _set_name(overlap)
    return Plot(
        _stem("overlap-head", overlap),
        f"{name}: {what} per attention head between languages (random expectation "
        f"{number(min(chances))}–{number(max(chances))} by head; the colours span the "
        f"heads' range {number(np.nanmin(values))}–{number(np.nanmax(values))}).",
        plots.heatmap(
            f"{name}: {what} per head (random ≈ {number(_mean(chances))})",
            values,
            [_layer_label(layer) for layer in layers],
            [h.replace("head", "") for h in heads],
            "head",
            BLOCK,
            axis,
        ),
    )


def beyond_section(files: StudyFiles) -> Section:
    section = Section(
        "overlap-beyond-theta0",
        "Overlap beyond θ0",
        "Jaccard of two tickets' departures from θ0's one-shot magnitude mask, per language "
        "pair (mean over pairs of other seeds where there are any; diagonal: the same "
        "language's other seed): did training "
        "move different languages to the same weights?",
    )
    for overlap in _overlaps(files):
        if "beyond_theta0" not in overlap["pairs"][0]["overall"]:
            continue
        languages, similarity = language_similarity(overlap, "beyond_theta0")
        same = same_language_pairs(overlap["pairs"])
        for i, language in enumerate(languages):
            own = [p for p in same if p["a"].split("/")[0] == language]
            similarity[i, i] = _mean(p["overall"]["beyond_theta0"] for p in own)
        chance = overlap["summary"].get("beyond_theta0_random")
        name = _set_name(overlap)
        section.parts.append(
            Plot(
                _stem("beyond-theta0", overlap),
                f"{name}: overlap beyond θ0 (random expectation {number(chance)})"
                + ("; blank diagonal: one seed only." if not same else "."),
                plots.heatmap(
                    f"{name}: overlap beyond θ0 (random ≈ {number(chance)})",
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


def _transfer_cell(
    matrix: dict[str, Any], partial: set, cell: tuple[str, str], mean: float, std: float,
    between: str,
) -> str:  # fmt: skip
    """Mean ± std, and how many seeds where it lacks some of the study's."""
    text = _mean_std(mean, std, between)
    if text and cell in partial:
        row, target = cell
        text += f"{between}({matrix['n'][row][target]} of {matrix['seeds']} seeds)"
    return text


def transfer_section(files: StudyFiles) -> Section:
    section = Section(
        "transfer",
        "Transfer matrices (Tables 3–5)",
        "Score of a source language's ticket trained on a target language (mean ± std over "
        "seeds); the diagonal is the target's own IMP level at that sparsity; dense, random "
        "and one-shot rows are "
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
        partial = partial_cells(matrix)
        text = [
            [
                _transfer_cell(matrix, partial, (r, t), m, s, "\n")
                for t, m, s in zip(targets, mr, sr, strict=True)
            ]
            for r, mr, sr in zip(rows, mean, std, strict=True)
        ]
        first_reference = next((i for i, r in enumerate(rows) if is_reference(r)), len(rows))
        name = _set_name(matrix)
        section.parts.append(
            Plot(
                _stem("transfer", matrix),
                f"{name}: transfer matrix ({matrix['metric']}; rows source, columns target).",
                plots.heatmap(
                    f"{name}: transfer ({matrix['metric']})",
                    mean,
                    [_shown(r) for r in rows],
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
                    [
                        _shown(r),
                        *(
                            _transfer_cell(matrix, partial, (r, t), m, s, " ") or "–"
                            for t, m, s in zip(targets, mr, sr, strict=True)
                        ),
                    ]
                    for r, mr, sr in zip(rows, mean, std, strict=True)
                ],
            )
        )
    cross = files.results.get("cross_task", [])
    if cross:
        section.parts.append(
            Table(
                "Across tasks (run.cross_task): a ticket of one task trained on another task "
                "in the same language, beside that task's own ticket and a random mask",
                [
                    "ticket of",
                    "trained on",
                    "language",
                    "seed",
                    "sparsity",
                    "score",
                    "own ticket",
                    "random",
                ],
                [
                    _row(
                        r,
                        "source_task task language seed",
                        "sparsity",
                        "score own_ticket_score random_score",
                    )
                    for r in cross
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
        of_task = [d for d in drops if d["task"] == task]
        if all(is_reference(d["source"]) for d in of_task):
            continue  # references alone (transfer off): nothing to stand beside
        section.parts.append(_drop_plot(task, of_task))
    return section.done("No data: no transfer cells are done (run.transfer).")


def _drop_plot(task: str, drops: list[dict[str, Any]]) -> Plot:
    """One sparsity: a bar per source; several: a line per source over the sparsities as
    evenly spaced categories (a study has a few: 50%, 75%, 90%)."""
    sparsities = sorted({d["sparsity"] for d in drops})
    by_source: dict[str, dict[float, float]] = {}
    for d in drops:
        by_source.setdefault(d["source"], {})[d["sparsity"]] = 100 * d["relative_drop"]
    title = f"{task}: relative transfer drop"
    axis = "(a(s,t) − a(t,t)) / a(t,t), mean over t ≠ s (%)"
    caption = f"{task}: relative transfer drop per source (grey: reference rows)."
    if len(sparsities) == 1:
        return Plot(
            _stem("transfer-drop", task),
            caption,
            plots.bars(
                f"{title} at {_percent(sparsities[0])}",
                axis,
                [_shown(source) for source in by_source],
                [values[sparsities[0]] for values in by_source.values()],
                {_shown(source) for source in by_source if is_reference(source)},
            ),
        )
    series = [
        plots.Series(
            _shown(source),
            [sparsities.index(s) for s in values],
            list(values.values()),
            reference=is_reference(source),
            style=REFERENCE_STYLE.get(source),
        )
        for source, values in by_source.items()
    ]
    return Plot(
        _stem("transfer-drop", task),
        caption,
        plots.lines(
            title, SPARSITY, axis, series, [_percent(s) for s in sparsities], zero_line=True
        ),
    )


# --- representations: retrieval and similarity ---------------------------------------------
# A study's cell labels (``en/seed1/s50``, ``oneshot/s50``) and, from ``retrieve`` on its
# ``results/masks``, the exported ones (``ner/en/seed1/s50``, ``ner/en/seed1/oneshot-s50``).
MASK_LABEL = re.compile(
    r"(?:(?P<task>[^/]+)/)?(?P<set>(?!seed\d)[^/]+)(?:/seed\d+)?/"
    r"(?:(?:(?P<oneshot>oneshot)-)?s(?P<percent>[\d.]+)|(?P<ticket>study-ticket))"
)
SEED = re.compile(r"/seed\d+(?=/|$)")


def _mask_label(mask: str) -> tuple[str, str]:
    """A representation table's mask as (the set it belongs to, a label): ``en/seed1/s50``
    -> (``en``, ``en ticket, 50%``), ``oneshot/s50`` -> (``oneshot``, ``one-shot θ0 mask,
    50%``), an exported ``ner/en/seed1/s50`` -> (``en``, ``ner: en ticket, 50%``; the task
    kept, so that two tasks' curves are never averaged). Seeds are dropped: curves average
    them. Other labels are kept as they are."""
    match = MASK_LABEL.fullmatch(mask)
    if not match:
        return mask, SEED.sub("", mask)
    which, task = match["oneshot"] or match["set"], f"{match['task']}: " if match["task"] else ""
    if match["ticket"]:
        return which, f"{task}{which} study ticket"
    kind = {"random": "random mask", "oneshot": "one-shot θ0 mask"}.get(which, f"{which} ticket")
    return which, f"{task}{kind}, {float(match['percent']):g}%"


def _layer_series(files: StudyFiles, rows: list[dict[str, str]], value: str) -> list:
    """One series per mask: at each layer the mean over seeds of each seed's mean over
    language pairs, with the standard deviation over seeds as bars (two seeds or more). The
    dense model and the masks of no language (random, one-shot) are references, a language's
    ticket keeps the language's style."""
    grouped: dict[str, dict[int, dict[str, list[float]]]] = {}
    sets: dict[str, str] = {}
    for row in rows:
        which, label = _mask_label(row["mask"])
        sets[label] = which
        seed = SEED.search(row["mask"])
        layer = grouped.setdefault(label, {}).setdefault(int(row["layer"]), {})
        layer.setdefault(seed[0] if seed else "", []).append(_nan(row[value]))
    series = []
    for label, layers in grouped.items():
        per_seed = [[_mean(v) for v in layers[k].values()] for k in sorted(layers)]
        seeds = max(len(means) for means in per_seed)
        series.append(
            plots.Series(
                label,
                sorted(layers),
                [_mean(means) for means in per_seed],
                err=[_std(means) for means in per_seed] if seeds > 1 else None,
                reference=is_reference(sets[label]),
                style=REFERENCE_STYLE.get(sets[label], files.style(sets[label])),
            )
        )
    return series


def _by_task(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """Rows per task ("" where the table has no task column)."""
    grouped: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        grouped.setdefault(row.get("task", ""), []).append(row)
    return grouped


def retrieval_section(files: StudyFiles) -> Section:
    section = Section(
        "retrieval",
        "Retrieval per layer (Fig. 7)",
        "Sentence retrieval accuracy across languages from each layer's representations, "
        "dense model against the tickets (mean over language pairs and seeds; bars: standard "
        "deviation over seeds).",
    )
    for task, rows in _by_task(files.retrieval).items():
        unit = _unit(_nan(r["accuracy"]) for r in rows)
        name = f"{task}: retrieval" if task else "Retrieval"
        section.parts.append(
            Plot(
                _stem("retrieval", task) if task else "retrieval",
                f"{name} accuracy per layer (grey: the dense model and the masks of no language).",
                plots.lines(
                    f"{name} accuracy per layer",
                    HIDDEN_STATE,
                    f"retrieval accuracy {unit}",
                    _layer_series(files, rows, "accuracy"),
                    integer_x=True,
                ),
            )
        )
    return section.done(
        "No data: no results/retrieval.csv; run the study with "
        "run: {representations: {parallel: FILES}} (or polyticket retrieve on its masks)."
    )


def similarity_section(files: StudyFiles) -> Section:
    section = Section(
        "similarity",
        "Representation similarity per layer (App. F)",
        "SVCCA, PWCCA (and CKA) per layer: each mask's representations against the dense "
        "model's of the same sentences, and between languages (a language's sentences against "
        "their translations, through the same mask); mean over language sets and seeds (bars: "
        "standard deviation over seeds). "
        "SVCCA and PWCCA need several times more sentences than hidden units: with fewer they "
        "are biased towards 1 (the study says so when its cell runs); CKA is not.",
    )
    known = ("svcca", "pwcca", "cka")
    for task, rows in _by_task(files.similarity).items():
        by_measure: dict[str, list[dict[str, str]]] = {}
        for row in rows:
            by_measure.setdefault(row["measure"], []).append(row)
        for measure in sorted(by_measure, key=lambda m: known.index(m) if m in known else 3):
            panels = [
                (title, _layer_series(files, chosen, "value"))
                for title, chosen in (
                    (
                        "vs the dense model",
                        [r for r in by_measure[measure] if r["comparison"] == "dense"],
                    ),
                    (
                        "between languages",
                        [r for r in by_measure[measure] if r["comparison"] != "dense"],
                    ),
                )
                if chosen
            ]
            name = f"{task}: {measure.upper()}" if task else measure.upper()
            section.parts.append(
                Plot(
                    _stem("similarity", f"{task}-{measure}" if task else measure),
                    f"{name} per layer (grey: the dense model and the masks of no language; "
                    "the y axis spans the values, not 0–1).",
                    plots.line_panels(
                        f"{name} similarity per layer",
                        HIDDEN_STATE,
                        f"{measure.upper()} similarity (0–1)",
                        panels,
                        integer_x=True,
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
        "Average-linkage clustering of languages on 1 − overlap (beyond θ0 where the study "
        "has θ0's one-shot masks), compared with script, family and genus groups (adjusted "
        "Rand index: 1 the same partition, 0 chance).",
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
                    f"distance (1 − {MEASURES[measure][2] if measure in MEASURES else measure})",
                ),
            )
        )
        groups = clusters.get("groups", {})
        untested = [g for g in GROUPINGS if g not in groups]
        if untested:
            section.parts.append(
                Text(
                    f"{name}: {', '.join(untested)}: not testable on these "
                    f"{len(clusters['languages'])} languages (every language alone in its "
                    "group, or all in one)."
                )
            )
        if groups:
            section.parts.append(
                Table(
                    f"{name}: the tree cut into as many clusters as each grouping has groups "
                    f"({len(clusters['languages'])} languages: few partitions are possible, "
                    "so read the index with care)",
                    ["grouping", "adjusted Rand", "purity"],
                    [
                        [g, number(v["adjusted_rand"]), number(v["purity"])]
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
                            r["set"].replace("residue:", "residue of "),
                            f"{r['kept']:,}",
                            f"{r['weights']:,}",
                            f"{100 * r['fraction']:.2f}",
                        ]
                        for r in overall
                    ],
                )
            )
            section.parts.append(_core_layers_plot(core, files))
            section.parts.append(_core_components_table(core))
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
                        [r["language"], str(r["seed"]), *(number(r.get(k)) for k in keys)]
                        for r in scores
                    ],
                )
            )
    return section.done(
        "No data: the core needs tickets of two or more languages at a target sparsity; its "
        "scores need `run: {core: true}`."
    )


# --- other ticket finders ------------------------------------------------------------------
def finders_section(files: StudyFiles) -> Section:
    section = Section(
        "finders",
        "Other ticket finders against IMP",
        "Tickets found by other pruning criteria (run.methods), per language, as means over "
        "the seeds where both ran: the score at each target sparsity, the Jaccard of the mask "
        "to IMP's at that level, the training steps that chose it, and the difference to "
        f"IMP's score. The goal: within ε of IMP's score, a Jaccard of at least "
        f"{GOAL_JACCARD}, for at most half IMP's steps, at {float(GOAL_SPARSITY):.0%}.",
    )
    rows = files.results.get("methods_mean", [])
    goal = f"goal_{percent(GOAL_SPARSITY)}"
    for task in dict.fromkeys(r["task"] for r in rows):
        ours = [r for r in rows if r["task"] == task]
        tags = sparsity_tags(ours[0])
        header = ["method", "language", "seeds"]
        for tag in tags:
            at = tag.removeprefix("s") + "%"
            header += [f"score {at}", f"J to IMP {at}", f"steps {at}", f"vs IMP {at}"]
        section.parts.append(
            Table(
                f"{task}: finders against IMP (means over seeds; ± the score's std over seeds "
                "and the standard error of the difference, where there are two seeds or more)",
                [*header, "goal"],
                [
                    [r["method"], r["language"], str(r["seeds"])]
                    + [cell for tag in tags for cell in _finder_cells(r, tag)]
                    + [{True: "yes", False: "no"}.get(r.get(goal), "–")]
                    for r in ours
                ],
            )
        )
    return section.done("No data: other finders need `run: {methods: [movement, wanda, …]}`.")


def _finder_cells(row: dict[str, Any], tag: str) -> list[str]:
    """Score, Jaccard to IMP, steps, difference to IMP at one sparsity (``s50``)."""
    difference = (
        with_spread(row, f"diff_{tag}", f"diff_{tag}_se", number) if f"diff_{tag}" in row else "–"
    )
    return [
        with_spread(row, f"score_{tag}", f"score_{tag}_std", number),
        number(row[f"jaccard_{tag}"]),
        f"{row[f'steps_{tag}']:g}",
        difference,
    ]


def _core_components_table(core: dict[str, Any]) -> Table:
    """Kept share per component of the core and of each residue (mean over seeds)."""
    rows = [r for r in core["sizes"] if r["scope"] == "component"]
    components = list(dict.fromkeys(r["group"] for r in rows))
    sets = list(dict.fromkeys(r["set"] for r in rows))

    def kept(which: str, component: str) -> str:
        share = _mean(
            100 * r["fraction"] for r in rows if (r["set"], r["group"]) == (which, component)
        )
        return f"{share:.2f}"

    return Table(
        f"{_set_name(core)}: weights kept per component (% of the component, mean over seeds)",
        ["set", *components],
        [
            [which.replace("residue:", "residue of "), *(kept(which, c) for c in components)]
            for which in sets
        ],
    )


def _core_layers_plot(core: dict[str, Any], files: StudyFiles) -> Plot:
    """Kept share per layer of the core and of each residue (mean over seeds); a residue
    in its language's style, the core in one no language has."""
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
            style=(
                files.style(which.removeprefix("residue:"))
                if which.startswith("residue:")
                else len(files.languages)
            ),
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
            f"{name}: core and residues per block",
            BLOCK,
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
    finders_section,
)


def build(root: Path) -> list[Section]:
    files = StudyFiles.read(Path(root))
    return [make(files) for make in SECTIONS]


# --- writing -------------------------------------------------------------------------------
STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; padding: 0 1em; max-width: 1300px;
  color: #111; }
section { border-top: 1px solid #bbb; margin-top: 1.5em; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: calc(50% - 6px); min-width: 480px; }
figure.wide { width: 100%; }
figure img { width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #333; }
table { border-collapse: collapse; margin: 0 0 0.8em; font-size: 0.9em; }
th, td { border: 1px solid #999; padding: 2px 8px; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
p.caption { font-weight: bold; font-size: 0.9em; margin: 0.8em 0 0.3em; }
pre { background: #f4f4f4; padding: 0.6em; white-space: pre-wrap; }
.missing { font-style: italic; color: #555; }
"""


# A table cell that is a number (right-aligned; anything else is text, left-aligned).
NUMBER = re.compile(r"[-+−]?[\d,.]+%?( ?±[\d.]+)?|–")
# A figure wider than this (pixels) gets the page's width rather than half of it.
WIDE = 700


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=plots.DPI)
    return buffer.getvalue()


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in table.rows)
    # the caption above the table, not a <caption>: that would wrap at a narrow table's width
    caption = f'<p class="caption">{html.escape(table.caption)}</p>'
    return f"{caption}<table><tr>{head}</tr>{body}</table>"


def _html_cell(text: str) -> str:
    align = "" if NUMBER.fullmatch(text) else ' class="text"'
    return f"<td{align}>{html.escape(text)}</td>"


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
            wide = ' class="wide"' if part.figure.get_figwidth() * plots.DPI > WIDE else ""
            figures.append(
                f'<figure id="fig-{part.name}"{wide}><img alt="{html.escape(part.caption)}" '
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
            out += [f"![{part.caption}]({ReportLayout(Path()).figure(part.name)})", ""]
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


def write_report(root: str | Path, out: str | Path | None = None) -> ReportLayout:
    """The report of the study in ``root`` under ``out`` (default ``root/report``): the
    HTML page, one PNG per figure and the Markdown summary; returns where they are."""
    root = Path(root)
    report = ReportLayout(Path(out)) if out else StudyLayout(root).report
    sections = build(root)  # reads first: a folder that is no study leaves nothing behind
    prepare_output_dir(report.root)
    images = {}
    for part in (p for s in sections for p in s.parts if isinstance(p, Plot)):
        images[part.name] = _png(part.figure)
        with atomic_path(report.figure(part.name)) as tmp:
            tmp.write_bytes(images[part.name])
    # A figure that a previous report drew and this one does not (its data was removed)
    # would otherwise stay beside the new summary and mislead.
    for stale in report.figures():
        if stale.stem not in images:
            stale.unlink()
    title = f"polyticket report: {root.resolve().name}"
    write_text(report.summary, render_markdown(title, sections))
    write_text(report.index, render_html(title, sections, images))
    return report
