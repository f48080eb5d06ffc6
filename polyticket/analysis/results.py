"""The tables of a study, computed from the files its cells wrote (never from a live run).

- tickets: per task, language and seed, the paper's winning ticket, its dense and random
  scores, and the score at each target sparsity;
- transfer matrices per task and sparsity: rows source (plus dense and random), columns
  target, mean and std over seeds; a(t, t) is the target's own ticket level;
- the relative transfer drop of each source, (1/(|L|-1)) sum_{t != s} (a(s,t) - a(t,t)) / a(t,t);
- pairwise Jaccard overlap of the tickets' masks at each target sparsity, overall and per
  layer, with the expectation for independent random masks;
- cross-task transfer: a ticket of task A trained on task B;
- other ticket finders (``run.methods``) against IMP: score, Jaccard to IMP's level and the
  training steps that chose the mask, at each target sparsity (``methods_TASK``).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

from polyticket.io import copy_file, read_json, write_csv, write_json
from polyticket.masks import Mask
from polyticket.study import Study, cells
from polyticket.study.grid import Cell, percent
from polyticket.study.kinds.cross_task import KIND as CROSS_TASK
from polyticket.study.kinds.imp import imp_cell
from polyticket.study.kinds.methods import method_cell
from polyticket.study.kinds.oneshot import oneshot_cell
from polyticket.study.kinds.random import random_cell
from polyticket.study.kinds.transfer import transfer_cell
from polyticket.study.outputs import imp_done, level_run, level_score, score, study_tickets
from polyticket.tickets import RULES, SEED_STD


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else (0.0 if values else math.nan)


BASELINES = ("random", "oneshot")  # rows of a transfer matrix besides the sources and dense
STUDY_TICKET = "study-ticket"  # exported name of the study's tickets (rule SEED_STD)
# issue 9.8: a finder matches IMP when at 50% its score is within the task's epsilon, its
# mask has a Jaccard of at least 0.95 to IMP's, and choosing it took at most half the steps
GOAL_SPARSITY = Fraction(1, 2)
GOAL_JACCARD = 0.95


def random_jaccard(kept_a: float, kept_b: float) -> float:
    """E[|a ∩ b| / |a ∪ b|] for independent random masks keeping these fractions (1/3 at 50%)."""
    both = kept_a * kept_b
    either = kept_a + kept_b - both
    return both / either if either else 1.0


class StudyResults:
    """Reads a study's cells once; every table is a method."""

    def __init__(self, study: Study):
        self.study = study
        self.cells = cells(study)
        self._masks: dict[Path, Mask] = {}

    # --- reading ----------------------------------------------------------------
    def score(self, cell_name: str) -> float | None:
        return score(self.study, cell_name)

    def level_score(self, task: str, language: str, seed: int, sparsity: Fraction) -> float | None:
        return level_score(self.study, task, language, seed, sparsity)

    def mask(self, path: Path) -> Mask | None:
        if path not in self._masks and path.is_file():
            self._masks[path] = Mask.load(path)
        return self._masks.get(path)

    def level_mask(self, task: str, source: str, seed: int, sparsity: Fraction) -> Mask | None:
        return self.mask(level_run(self.study, task, source, seed, sparsity).mask)

    def metric(self, task: str) -> tuple[str, bool]:
        for lang in self.study.sources(task):
            path = level_run(self.study, task, lang, self.study.seeds[0], Fraction(0)).metrics
            if path.is_file():
                m = read_json(path)
                return m["metric"], m["greater_is_better"]
        return "score", True

    # --- tables -------------------------------------------------------------------
    def tickets(self) -> list[dict[str, Any]]:
        rows = []
        for task in self.study.tasks:
            for lang in self.study.sources(task):
                if not imp_done(self.study, task, lang):
                    continue
                for seed, ticket in study_tickets(self.study, task, lang).items():
                    dense = self.level_score(task, lang, seed, Fraction(0))
                    row = {
                        "task": task,
                        "language": lang,
                        "seed": seed,
                        "rule": ticket["rule"],
                        "level": ticket["level"],
                        "sparsity": ticket["sparsity"],
                        "score": ticket["score"],
                        "dense_score": dense,
                        "random_score": self.score(random_cell(task, lang, seed).name),
                        "epsilon": ticket["epsilon"],
                    }
                    for s in self.study.sparsities:
                        row[f"score_{percent(s)}"] = self.level_score(task, lang, seed, s)
                    rows.append(row)
        return rows

    def transfer(self, task: str, sparsity: Fraction) -> dict[str, Any]:
        """Rows source (and dense, random, one-shot), columns target: mean, std and count
        over seeds."""
        targets = self.study.tasks[task].languages
        rows: dict[str, dict[str, list[float]]] = {}

        def add(row: str, target: str, value: float | None) -> None:
            if value is not None:
                rows.setdefault(row, {}).setdefault(target, []).append(value)

        for seed in self.study.seeds:
            for target in targets:
                add("dense", target, self.level_score(task, target, seed, Fraction(0)))
                add("random", target, self.score(random_cell(task, target, seed, sparsity).name))
                add("oneshot", target, self.score(oneshot_cell(task, target, seed, sparsity).name))
                for source in self.study.sources(task):
                    if source == target:
                        value = self.level_score(task, target, seed, sparsity)
                    else:
                        value = self.score(transfer_cell(task, target, seed, source, sparsity).name)
                    add(source, target, value)
        order = [*self.study.sources(task), "dense", *BASELINES]
        metric, greater = self.metric(task)
        return {
            "task": task,
            "sparsity": float(sparsity),
            "metric": metric,
            "greater_is_better": greater,
            "targets": targets,
            "rows": [r for r in order if r in rows],
            "mean": {
                r: {t: _mean(rows[r].get(t, [])) for t in targets} for r in order if r in rows
            },
            "std": {r: {t: _std(rows[r].get(t, [])) for t in targets} for r in order if r in rows},
            "n": {r: {t: len(rows[r].get(t, [])) for t in targets} for r in order if r in rows},
        }

    @staticmethod
    def transfer_drop(matrix: dict[str, Any]) -> dict[str, float]:
        """Per row: mean over targets t != row of (a(row,t) - a(t,t)) / a(t,t)."""
        mean = matrix["mean"]
        drops = {}
        for row in matrix["rows"]:
            values = []
            for target in matrix["targets"]:
                own = mean.get(target, {}).get(target, math.nan)
                value = mean[row].get(target, math.nan)
                if row != target and not math.isnan(own) and not math.isnan(value) and own:
                    values.append((value - own) / own)
            drops[row] = _mean(values)
        return drops

    def overlap(self, task: str, sparsity: Fraction) -> dict[str, Any]:
        """Mean Jaccard (over seeds) between the tickets' masks at ``sparsity``."""
        sources = self.study.sources(task)
        pairs: dict[tuple[str, str], list[float]] = {}
        layers: dict[tuple[str, str], dict[str, list[float]]] = {}
        components: dict[tuple[str, str], dict[str, list[float]]] = {}
        kept: list[float] = []
        for seed in self.study.seeds:
            masks = {s: self.level_mask(task, s, seed, sparsity) for s in sources}
            masks = {s: m for s, m in masks.items() if m is not None}
            kept += [1 - m.sparsity() for m in masks.values()]
            for a, b in itertools.combinations(masks, 2):
                pairs.setdefault((a, b), []).append(masks[a].jaccard(masks[b]))
                for layer, value in masks[a].jaccard_by_layer(masks[b]).items():
                    layers.setdefault((a, b), {}).setdefault(layer, []).append(value)
                for part, value in masks[a].jaccard_by_component(masks[b]).items():
                    components.setdefault((a, b), {}).setdefault(part, []).append(value)
        # Without training, magnitude alone would pick the one-shot mask of θ0: how close
        # the tickets stay to it says how much of their overlap training decided.
        to_oneshot = []
        for seed in self.study.seeds:
            for source in self.study.tasks[task].languages:
                ticket = self.level_mask(task, source, seed, sparsity)
                cell = oneshot_cell(task, source, seed, sparsity)
                oneshot = self.mask(self.study.layout.cell(cell.name).mask)
                if ticket is not None and oneshot is not None:
                    to_oneshot.append(ticket.jaccard(oneshot))
        same_language = []
        for source in sources:
            seeds = [self.level_mask(task, source, seed, sparsity) for seed in self.study.seeds]
            seeds = [m for m in seeds if m is not None]
            same_language += [a.jaccard(b) for a, b in itertools.combinations(seeds, 2)]
        k = _mean(kept)
        return {
            "task": task,
            "sparsity": float(sparsity),
            "languages": sources,
            "pairs": {f"{a}|{b}": _mean(v) for (a, b), v in pairs.items()},
            "by_layer": {
                f"{a}|{b}": {layer: _mean(v) for layer, v in ls.items()}
                for (a, b), ls in layers.items()
            },
            "by_component": {
                f"{a}|{b}": {part: _mean(v) for part, v in cs.items()}
                for (a, b), cs in components.items()
            },
            "mean_between_languages": _mean([_mean(v) for v in pairs.values()]),
            "mean_with_oneshot": _mean(to_oneshot),
            "mean_same_language_other_seed": _mean(same_language),
            "random_expectation": random_jaccard(k, k) if kept else math.nan,
        }

    def cross_task(self) -> list[dict[str, Any]]:
        rows = []
        for cell in self.cells:
            if cell.kind != CROSS_TASK:
                continue
            score = self.score(cell.name)
            if score is None:
                continue
            rows.append(
                {
                    "source_task": cell.source,
                    "task": cell.task,
                    "language": cell.language,
                    "seed": cell.seed,
                    "sparsity": float(cell.sparsity),
                    "score": score,
                    "own_ticket_score": self.level_score(
                        cell.task, cell.language, cell.seed, cell.sparsity
                    ),
                    "random_score": self.score(
                        random_cell(cell.task, cell.language, cell.seed, cell.sparsity).name
                    ),
                }
            )
        return rows

    def finders(self, task: str) -> list[dict[str, Any]]:
        """Per finder (IMP first, then each of ``run.methods``), language and seed: the
        level's score, its mask's Jaccard to IMP's level and the training steps that chose
        it, at each target sparsity; the steps run in all; and whether it meets the goal."""
        study = self.study
        epsilon = study.tasks[task].config.prune.epsilon
        greater = self.metric(task)[1]
        rows = []
        for lang in study.tasks[task].languages:
            for seed in study.seeds:
                reference = imp_cell(task, lang, seed)
                if not reference.done(study):
                    continue
                imp = self._finder_row(task, "imp", reference, reference)
                rows.append(imp)
                for method in study.run.get("methods") or []:
                    cell = method_cell(task, lang, seed, method)
                    if cell.done(study):
                        row = self._finder_row(task, method, cell, reference)
                        rows.append(row | goal(row, imp, epsilon, greater))
        return rows

    def _finder_row(self, task: str, method: str, cell: Cell, reference: Cell) -> dict[str, Any]:
        study = self.study
        run = study.layout.cell(cell.name)
        imp = study.layout.cell(reference.name)
        levels = [read_json(run.level(k).metrics) for k in run.completed_levels()]
        row = {"task": task, "method": method, "language": cell.language, "seed": cell.seed}
        for sparsity in study.sparsities:
            k, tag = study.level_of(task, sparsity), percent(sparsity)
            row[f"score_{tag}"] = levels[k]["best_score"]
            row[f"jaccard_{tag}"] = self.mask(run.level(k).mask).jaccard(
                self.mask(imp.level(k).mask)
            )
            row[f"steps_{tag}"] = sum(selection_steps(m) for m in levels[:k])
        row["steps_run"] = sum(m["steps"] for m in levels)
        return row


def selection_steps(level: dict[str, Any]) -> int:
    """The training steps of a level that the next mask's choice depended on: the steps run,
    unless the criterion says otherwise (wanda: 0, its scores need no training)."""
    return level.get("selection_steps", level["steps"])


def goal(row: dict[str, Any], imp: dict[str, Any], epsilon: float, greater: bool) -> dict:
    """``goal_s50``: the finder's ticket at 50% is as good as IMP's for at most half the
    steps (absent where 50% is no target sparsity of the study)."""
    tag = percent(GOAL_SPARSITY)
    if f"score_{tag}" not in row:
        return {}
    score, reference = row[f"score_{tag}"], imp[f"score_{tag}"]
    within = score >= reference - epsilon if greater else score <= reference + epsilon
    similar = row[f"jaccard_{tag}"] >= GOAL_JACCARD
    cheaper = row[f"steps_{tag}"] <= imp[f"steps_{tag}"] / 2
    return {f"goal_{tag}": within and similar and cheaper}


def headline(matrix: dict[str, Any], overlap: dict[str, Any]) -> dict[str, Any]:
    """For one task and sparsity: do languages' tickets overlap more than random masks, and
    do transferred tickets beat random masks? (From tables already computed.)"""
    mean = matrix["mean"]
    transferred = [
        mean[s][t]
        for s in matrix["rows"]
        if s not in ("dense", *BASELINES)
        for t in matrix["targets"]
        if s != t and not math.isnan(mean[s][t])
    ]
    return {
        "task": matrix["task"],
        "sparsity": matrix["sparsity"],
        "metric": matrix["metric"],
        "greater_is_better": matrix["greater_is_better"],
        "overlap_between_languages": overlap["mean_between_languages"],
        "overlap_random": overlap["random_expectation"],
        "overlap_oneshot": overlap["mean_with_oneshot"],
        "transfer_score": _mean(transferred),
        "random_score": _row_mean(mean, "random"),
        "oneshot_score": _row_mean(mean, "oneshot"),
        "dense_score": _row_mean(mean, "dense"),
    }


def _row_mean(mean: dict[str, dict[str, float]], row: str) -> float:
    """The mean of a transfer-matrix row over the targets that have a value."""
    return _mean([v for v in mean.get(row, {}).values() if not math.isnan(v)])


def missing_as_none(value: Any) -> Any:
    """NaN (a cell not done yet) as null: strict JSON, and empty in CSV."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: missing_as_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [missing_as_none(v) for v in value]
    return value


def _csv(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_csv(path, missing_as_none(list(rows)))


def _matrix_rows(matrix: dict[str, Any], which: str) -> list[dict[str, Any]]:
    return [
        {"source": r, **{t: matrix[which][r][t] for t in matrix["targets"]}} for r in matrix["rows"]
    ]


def write_results(study: Study) -> dict[str, Any]:
    """Every table as CSV and JSON under ``results/``; returns the headline and paths."""
    results = StudyResults(study)
    layout = study.layout
    tickets = results.tickets()
    _csv(layout.table("tickets"), tickets)
    write_json(layout.table_json("tickets"), missing_as_none(tickets))
    everything: dict[str, Any] = {"tickets": tickets, "transfer": [], "overlap": [], "headline": []}
    drops = []
    for task in study.tasks:
        for sparsity in study.sparsities:
            tag = f"{task}_{percent(sparsity)}"
            matrix = results.transfer(task, sparsity)
            everything["transfer"].append(matrix)
            _csv(layout.table(f"transfer_{tag}"), _matrix_rows(matrix, "mean"))
            _csv(layout.table(f"transfer_{tag}_std"), _matrix_rows(matrix, "std"))
            for source, drop in results.transfer_drop(matrix).items():
                drops.append(
                    {
                        "task": task,
                        "sparsity": float(sparsity),
                        "source": source,
                        "relative_drop": drop,
                    }
                )
            overlap = results.overlap(task, sparsity)
            everything["overlap"].append(overlap)
            everything["headline"].append(headline(matrix, overlap))
            _csv(
                layout.table(f"overlap_{tag}"),
                [
                    {
                        "pair": pair,
                        "jaccard": value,
                        **overlap["by_layer"][pair],
                        **overlap["by_component"][pair],
                    }
                    for pair, value in overlap["pairs"].items()
                ],
            )
    _csv(layout.table("transfer_drop"), drops)
    cross = results.cross_task()
    if cross:
        _csv(layout.table("cross_task"), cross)
    everything.update(transfer_drop=drops, cross_task=cross, methods=[])
    if study.run.get("methods"):
        for task in study.tasks:
            rows = results.finders(task)
            _csv(layout.table(f"methods_{task}"), rows)
            everything["methods"] += rows
    write_json(layout.table_json("results"), missing_as_none(everything))
    _export_level_masks(results)
    return everything


def _export_level_masks(results: StudyResults) -> None:
    """Under ``results/masks/``, each study ticket (``study-ticket``, the ``seed-std`` rule)
    and every ticket's level at each target sparsity (the paper compares all at 50%)."""
    study = results.study
    layout = study.layout
    for task in study.tasks:
        for lang in study.sources(task):
            if not imp_done(study, task, lang):
                continue
            for seed, ticket in study_tickets(study, task, lang).items():
                copy_file(ticket["mask"], layout.exported_mask(task, lang, seed, STUDY_TICKET))
                for sparsity in study.sparsities:
                    copy_file(
                        level_run(study, task, lang, seed, sparsity).mask,
                        layout.exported_mask(task, lang, seed, percent(sparsity)),
                    )


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _beats(a: float, b: float, greater_is_better: bool) -> str:
    if math.isnan(a) or math.isnan(b):
        return "not known yet"
    return "yes" if (a > b if greater_is_better else a < b) else "no"


def headline_text(line: dict[str, Any]) -> str:
    """The two questions of the paper, answered with this study's numbers; the one-shot
    magnitude mask of θ0 is added where the study ran it (run.oneshot)."""
    metric, greater = line["metric"], line["greater_is_better"]
    overlap, transfer = line["overlap_between_languages"], line["transfer_score"]
    overlap_text = (
        f"{_beats(overlap, line['overlap_random'], True)}: Jaccard {_fmt(overlap)} vs "
        f"{_fmt(line['overlap_random'])}"
    )
    if not math.isnan(line["overlap_oneshot"]):
        overlap_text += f" (a ticket vs the one-shot mask of θ0: {_fmt(line['overlap_oneshot'])})"
    reference = f"dense {_fmt(line['dense_score'])}"
    if not math.isnan(line["oneshot_score"]):
        reference += f", one-shot mask {_fmt(line['oneshot_score'])}"
    transfer_text = (
        f"{_beats(transfer, line['random_score'], greater)}: {metric} {_fmt(transfer)} vs "
        f"{_fmt(line['random_score'])} ({reference})"
    )
    return (
        f"{line['task']} at {line['sparsity']:.0%} sparsity:\n"
        f"  Do tickets of different languages overlap more than random masks? {overlap_text}\n"
        f"  Do transferred tickets beat random masks? {transfer_text}"
    )


def format_summary(everything: dict[str, Any]) -> str:
    """The main tables as plain text for the terminal, the headline last."""
    lines: list[str] = []
    for matrix in everything["transfer"]:
        lines += [
            "",
            f"transfer {matrix['task']} at {matrix['sparsity']:.0%} "
            f"({matrix['metric']}, mean over seeds; rows source, columns target)",
        ]
        width = max([8, *(len(r) for r in matrix["rows"])])
        lines.append(" " * width + "".join(f"{t:>10}" for t in matrix["targets"]))
        for row in matrix["rows"]:
            lines.append(
                f"{row:<{width}}"
                + "".join(f"{_fmt(matrix['mean'][row][t]):>10}" for t in matrix["targets"])
            )
    if everything["tickets"]:
        lines += ["", f"study tickets (rule {SEED_STD}: {RULES[SEED_STD]})"]
        for row in everything["tickets"]:
            lines.append(
                f"  {row['task']} {row['language']} seed {row['seed']}: level {row['level']} "
                f"({row['sparsity']:.0%}) score {_fmt(row['score'])}, dense "
                f"{_fmt(row['dense_score'])}, random {_fmt(row['random_score'])}"
            )
    lines += finder_lines(everything.get("methods") or [])
    lines += ["", *(headline_text(line) for line in everything["headline"])]
    return "\n".join(lines).strip()


def finder_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The ``methods_TASK`` rows in words: at each target sparsity the score, the Jaccard to
    IMP's mask and the training steps that chose the mask; whether the goal holds."""
    if not rows:
        return []
    lines = ["", "ticket finders against IMP (score, Jaccard to IMP's mask, steps that chose it)"]
    goal_key = f"goal_{percent(GOAL_SPARSITY)}"
    for row in rows:
        tags = [key.removeprefix("score_") for key in row if key.startswith("score_")]
        parts = [
            f"{tag}: {_fmt(row[f'score_{tag}'])}, J {_fmt(row[f'jaccard_{tag}'])}, "
            f"{row[f'steps_{tag}']} steps"
            for tag in tags
        ]
        if goal_key in row:
            parts.append(f"as good for half the steps: {'yes' if row[goal_key] else 'no'}")
        lines.append(
            f"  {row['task']} {row['language']} seed {row['seed']} {row['method']}: "
            + "; ".join(parts)
        )
    return lines
