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
  training steps that chose the mask, at each target sparsity, per seed (``methods_TASK``)
  and as means over the seeds with the goal judged on them (``methods_TASK_mean``).
"""

from __future__ import annotations

import functools
import logging
import math
import statistics
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

from polyticket import __version__
from polyticket.analysis.cluster import add_clusters
from polyticket.analysis.core import core_sizes
from polyticket.analysis.overlap import (
    compare,
    heads_for,
    overlap_rows,
    pair_measures,
    split,
)
from polyticket.analysis.packed import PackedMask, intersection_counts
from polyticket.errors import UserError
from polyticket.io import copy_file, read_csv, read_json, write_csv, write_json
from polyticket.layout import StudyLayout
from polyticket.study import Study, cells
from polyticket.study.changes import changed_cells, with_dependents
from polyticket.study.grid import Cell, percent
from polyticket.study.kinds.core import VARIANTS as CORE_VARIANTS
from polyticket.study.kinds.core import core_cell
from polyticket.study.kinds.cross_task import KIND as CROSS_TASK
from polyticket.study.kinds.imp import imp_cell
from polyticket.study.kinds.methods import method_cell
from polyticket.study.kinds.oneshot import KIND as ONESHOT
from polyticket.study.kinds.oneshot import oneshot_cell
from polyticket.study.kinds.random import random_cell
from polyticket.study.kinds.random_further import ROW_PREFIX, further_cell, row_name, starts
from polyticket.study.kinds.representations import representations_cell
from polyticket.study.kinds.transfer import transfer_cell
from polyticket.study.outputs import (
    best_score,
    imp_done,
    level_run,
    level_score,
    score,
    study_tickets,
)
from polyticket.tickets import RULES, SEED_STD, within


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else (0.0 if values else math.nan)


BASELINES = ("random", "oneshot")  # rows of a transfer matrix besides the sources and dense


def is_reference(row: str) -> bool:
    """A transfer matrix's row that is no ticket of a source: the dense model, a random or
    one-shot mask, an earlier level pruned further at random (``random-from-s10``)."""
    return row in ("dense", *BASELINES) or row.startswith(ROW_PREFIX)


STUDY_TICKET = "study-ticket"  # exported name of the study's tickets (rule SEED_STD)
# issue 9.8: a finder matches IMP when at 50% its score is within the task's epsilon, its
# mask has a Jaccard of at least 0.95 to IMP's, and choosing it took at most half the steps
GOAL_SPARSITY = Fraction(1, 2)
GOAL_JACCARD = 0.95


log = logging.getLogger("polyticket")

# What reading a cell's files can raise when they are missing, truncated or from another
# version of the study: reported as a problem of that cell, never a traceback.
_UNREADABLE = (OSError, ValueError, KeyError, IndexError, TypeError, UserError)


class StudyResults:
    """Reads a study's cells once; every table is a method. A cell that is missing, failed,
    unreadable or made with other settings (``study.changes``) is left out of every table
    and listed in ``problems``."""

    def __init__(self, study: Study):
        self.study = study
        self.cells = cells(study)
        self.problems: dict[str, str] = {}
        found = changed_cells(study, self.cells)
        changed = found.cells
        unreadable = self._unreadable_levels(set(changed))
        self.excluded = found.stale(self.cells) | with_dependents(self.cells, set(unreadable))
        if changed:  # said first: the tables below would otherwise look merely empty
            log.warning(
                "%d cell(s) in %s were made with other settings than %s's and are left out "
                "of the tables with %d that depend on them (listed at the end); "
                "`polyticket study %s --rerun-changed` reruns them",
                len(changed), study.out, study.path.name,
                len(self.excluded) - len(changed), study.path,
            )  # fmt: skip
        for name in sorted(self.excluded):
            if name in unreadable:
                self.problems[name] = f"unreadable: {unreadable[name]}"
            elif name in changed:
                why = "; ".join(changed[name])
                self.problems[name] = f"made with other settings than the study file's: {why}"
            else:
                self.problems[name] = "depends on a cell that is left out"
        failed: dict[str, str] = {}  # cell -> the failed cell it is, or waits for
        for cell in self.cells:
            failure = study.layout.cell_failure(cell.name)
            if failure.is_file() and not cell.done(study):
                self.problems.setdefault(cell.name, "failed (see its .failed.json)")
                failed[cell.name] = cell.name
        # not run for want of a failed cell (dependencies come first): no more "to do" than
        # the failure is fixed
        for cell in self.cells:
            if cell.name not in self.problems and not cell.done(study):
                blocker = next((failed[d] for d in cell.deps if d in failed), None)
                if blocker is not None:
                    self.problems[cell.name] = f"not run: needs {blocker}, which failed"
                    failed[cell.name] = blocker

    def _unreadable_levels(self, skip: set[str]) -> dict[str, str]:
        """IMP cells whose completed levels cannot all be read, with why: found before any
        table, so that such a cell, and every cell that read it, is left out of all of them
        (one level's bad file would otherwise drop a ticket from one table and not another)."""
        out = {}
        for cell in self.cells:
            run = self.study.layout.cell(cell.name)
            if cell.name in skip or not cell.done(self.study):
                continue
            for k in run.completed_levels():
                try:
                    best_score(run.level(k).metrics)
                except _UNREADABLE as exc:
                    out[cell.name] = str(exc) or type(exc).__name__
                    break
        return out

    def _read(self, cell_name: str, read: Callable[[], Any]) -> Any:
        """``read()``, or None (and a problem noted) where the cell's files cannot say."""
        if cell_name in self.excluded:
            return None
        try:
            return read()
        except _UNREADABLE as exc:
            self.problems.setdefault(cell_name, f"unreadable: {exc}")
            return None

    # --- reading ----------------------------------------------------------------
    def score(self, cell_name: str) -> float | None:
        return self._read(cell_name, lambda: score(self.study, cell_name))

    def level_score(self, task: str, language: str, seed: int, sparsity: Fraction) -> float | None:
        return self._read(
            imp_cell(task, language, seed).name,
            lambda: level_score(self.study, task, language, seed, sparsity),
        )

    def study_tickets(self, task: str, source: str) -> dict[int, dict[str, Any]]:
        """The study's tickets of a source whose IMP cells are all done and usable."""
        names = [imp_cell(task, source, seed).name for seed in self.study.seeds]
        if set(names) & self.excluded or not imp_done(self.study, task, source):
            return {}
        return self._read(names[0], lambda: study_tickets(self.study, task, source)) or {}

    def metric(self, task: str) -> tuple[str, bool]:
        for lang in self.study.sources(task):
            path = level_run(self.study, task, lang, self.study.seeds[0], Fraction(0)).metrics
            name = imp_cell(task, lang, self.study.seeds[0]).name
            m = self._read(name, lambda p=path: read_json(p)) if path.is_file() else None
            if isinstance(m, dict) and "metric" in m:
                return m["metric"], bool(m.get("greater_is_better", True))
        return "score", True

    # --- tables -------------------------------------------------------------------
    def tickets(self) -> list[dict[str, Any]]:
        rows = []
        for task in self.study.tasks:
            for lang in self.study.sources(task):
                for seed, ticket in self.study_tickets(task, lang).items():
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
        """Rows source (and dense, random, one-shot, earlier levels pruned further at
        random), columns target: mean, std and count over seeds."""
        targets = self.study.tasks[task].languages
        further = starts(self.study, task, sparsity)  # earlier levels pruned further
        rows: dict[str, dict[str, list[float]]] = {}

        def add(row: str, target: str, value: float | None) -> None:
            if value is not None:
                rows.setdefault(row, {}).setdefault(target, []).append(value)

        for seed in self.study.seeds:
            for target in targets:
                add("dense", target, self.level_score(task, target, seed, Fraction(0)))
                add("random", target, self.score(random_cell(task, target, seed, sparsity).name))
                add("oneshot", target, self.score(oneshot_cell(task, target, seed, sparsity).name))
                for start in further:
                    cell = further_cell(task, target, seed, start, sparsity)
                    add(row_name(start), target, self.score(cell.name))
                for source in self.study.sources(task):
                    if source == target:
                        value = self.level_score(task, target, seed, sparsity)
                    else:
                        value = self.score(transfer_cell(task, target, seed, source, sparsity).name)
                    add(source, target, value)
        order = [*self.study.sources(task), "dense", *BASELINES, *map(row_name, further)]
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
            "seeds": len(self.study.seeds),  # what each cell's n reaches when all are done
            # the rows that are multi-language tickets, with their languages
            "multi_language": {
                s: self.study.languages_of(s)
                for s in self.study.sources(task)
                if s in rows and s not in targets
            },
        }

    @staticmethod
    def transfer_drop(matrix: dict[str, Any]) -> dict[str, float]:
        """Per row: mean over targets t != row of (a(row,t) - a(t,t)) / a(t,t); for a
        multi-language ticket, over the targets outside its set (a transfer is to a language
        the ticket was not trained on)."""
        mean = matrix["mean"]
        drops = {}
        for row in matrix["rows"]:
            own_languages = matrix.get("multi_language", {}).get(row, [row])
            values = []
            for target in matrix["targets"]:
                own = mean.get(target, {}).get(target, math.nan)
                value = mean[row].get(target, math.nan)
                if target in own_languages or math.isnan(own) or math.isnan(value) or not own:
                    continue
                values.append((value - own) / own)
            drops[row] = _mean(values)
        return drops

    def packed(self, cell_name: str, path: Path, label: str) -> PackedMask | None:
        """A cell's mask file, read without unpacking; None when it is missing or the cell
        cannot be used (its problem is noted)."""
        if not path.is_file():
            return None
        return self._read(cell_name, lambda: PackedMask.load(path, label=label))

    def level_mask(self, task: str, source: str, seed: int, sparsity: Fraction, label: str):
        path = level_run(self.study, task, source, seed, sparsity).mask
        return self.packed(imp_cell(task, source, seed).name, path, label)

    def ticket_masks(
        self, task: str, sparsity: Fraction, sources: list[str] | None = None
    ) -> list[PackedMask]:
        """Every source's level at ``sparsity`` that can be read, labelled ``SOURCE/seedS``
        (the sources given, else all the task's)."""
        masks = [
            self.level_mask(task, source, seed, sparsity, f"{source}/seed{seed}")
            for source in (self.study.sources(task) if sources is None else sources)
            for seed in self.study.seeds
        ]
        return [m for m in masks if m is not None]

    def oneshot_mask(self, task: str, sparsity: Fraction) -> PackedMask | None:
        """The magnitude mask of θ0 at ``sparsity`` (the same for every language and seed:
        the prunable weights of θ0 do not depend on either), where the study made one."""
        for lang in self.study.tasks[task].languages:
            for seed in self.study.seeds:
                cell = oneshot_cell(task, lang, seed, sparsity)
                mask = self.packed(cell.name, self.study.layout.cell(cell.name).mask, "oneshot")
                if mask is not None:
                    return mask
        return None

    def overlap(self, task: str, sparsity: Fraction) -> dict[str, Any]:
        """``analysis.overlap.compare`` of the tickets at ``sparsity`` (every language and
        seed), against the one-shot mask of θ0 where there is one; languages clustered.
        The summary and the clusters answer a question between languages: they are of the
        single-language tickets; the pairs with a multi-language ticket (``en+fr``, which
        shares its languages' data) are apart, under ``multi_language``."""
        languages = self.study.tasks[task].languages
        masks = self.ticket_masks(task, sparsity, languages)
        head = {"task": task, "sparsity": float(sparsity)}
        if len(masks) < 2:
            return {**head, "pairs": [], "summary": {}, "missing": "fewer than two tickets"}
        sets = [s for s in self.study.sources(task) if s not in languages]
        multi = self.ticket_masks(task, sparsity, sets)
        baseline = self.oneshot_mask(task, sparsity)
        everything = compare(masks + multi, baseline, heads_for(masks + multi))
        result, others = split(everything, {m.label for m in masks})
        if others["pairs"]:
            result["multi_language"] = others
        # beyond θ0 where there is θ0's mask: the plain Jaccard differs between pairs of
        # languages by a few thousandths (θ0's magnitudes dominate it), too little for a tree
        add_clusters(result, "jaccard" if baseline is None else "beyond_theta0")
        return {**head, **result}

    def core(self, task: str, sparsity: Fraction) -> dict[str, Any]:
        """The language-neutral core of the tickets at ``sparsity`` (per seed): its sizes per
        layer and component, and (with ``run.core``) the scores of the core cells."""
        languages = self.study.tasks[task].languages
        sizes, scores = [], []
        for seed in self.study.seeds:
            masks = [self.level_mask(task, lang, seed, sparsity, lang) for lang in languages]
            if len(languages) < 2 or None in masks:
                continue
            sizes += [{"seed": seed, **row} for row in core_sizes(masks)]
            for lang in languages:
                scores.append(self._core_scores(task, lang, seed, sparsity))
        return {"task": task, "sparsity": float(sparsity), "sizes": sizes, "scores": scores}

    def _core_scores(self, task: str, lang: str, seed: int, sparsity: Fraction) -> dict:
        """Does the core carry the ticket's score on ``lang``? ``recovered`` is the share of
        the ticket's gain over a random mask of the core's sparsity that the core alone
        keeps: (core - random) / (ticket - random); most when above 0.5."""
        languages = self.study.tasks[task].languages
        row: dict[str, Any] = {"language": lang, "seed": seed}
        for variant in CORE_VARIANTS:
            name = core_cell(task, lang, seed, variant, sparsity, languages).name
            row[variant.replace("-", "_")] = self.score(name)
        row["ticket"] = self.level_score(task, lang, seed, sparsity)
        row["dense"] = self.level_score(task, lang, seed, Fraction(0))
        core, ticket, random = row["core"], row["ticket"], row["random_core"]
        known = None not in (core, ticket, random) and ticket != random
        row["recovered"] = (core - random) / (ticket - random) if known else None
        return row

    def representation_tables(self) -> dict[str, list[dict[str, str]]]:
        """Retrieval and similarity rows of every task's representations cell, with the
        task in front (``run.representations``)."""
        tables: dict[str, list[dict[str, str]]] = {"retrieval": [], "similarity": []}
        for task in self.study.tasks:
            cell = representations_cell(self.study, task)
            run = self.study.layout.cell(cell.name)
            if not cell.done(self.study):
                continue
            for name, rows in tables.items():
                path = run.table(name)
                read = self._read(cell.name, functools.partial(read_csv, path))
                rows += [{"task": task, **row} for row in read or []]
        return tables

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
                if not self._usable(reference):
                    continue
                imp = self._finder_row(task, "imp", reference, reference)
                rows.append(imp)
                for method in study.run.get("methods") or []:
                    cell = method_cell(task, lang, seed, method)
                    if self._usable(cell):
                        row = self._finder_row(task, method, cell, reference)
                        rows.append(row | goal(row, imp, epsilon, greater))
        return rows

    def _usable(self, cell: Cell) -> bool:
        """Done, and not left out of the tables (made with other settings, or reading one)."""
        return cell.name not in self.excluded and cell.done(self.study)

    def _finder_row(self, task: str, method: str, cell: Cell, reference: Cell) -> dict[str, Any]:
        study = self.study
        run = study.layout.cell(cell.name)
        imp = study.layout.cell(reference.name)
        levels = [read_json(run.level(k).metrics) for k in run.completed_levels()]
        row = {"task": task, "method": method, "language": cell.language, "seed": cell.seed}
        for sparsity in study.sparsities:
            k, tag = study.level_of(task, sparsity), percent(sparsity)
            row[f"score_{tag}"] = levels[k]["best_score"]
            row[f"jaccard_{tag}"] = jaccard(
                PackedMask.load(run.level(k).mask), PackedMask.load(imp.level(k).mask)
            )
            row[f"steps_{tag}"] = sum(selection_steps(m) for m in levels[:k])
        row["steps_run"] = sum(m["steps"] for m in levels)
        return row


def jaccard(a: PackedMask, b: PackedMask) -> float:
    """|a ∧ b| / |a ∨ b| over every weight, counted on the packed bits."""
    both = sum(intersection_counts(a, b).values())
    kept_a, kept_b = sum(a.kept_counts().values()), sum(b.kept_counts().values())
    return pair_measures(a.numel(), kept_a, kept_b, both)["jaccard"]


def selection_steps(level: dict[str, Any]) -> int:
    """The training steps of a level that the next mask's choice depended on: the steps run,
    unless the criterion says otherwise (wanda: 0, its scores need no training)."""
    return level.get("selection_steps", level["steps"])


def finder_means(rows: list[dict[str, Any]], epsilon: float, greater: bool) -> list[dict]:
    """``methods_TASK_mean``: per finder (IMP first) and language, the ``methods_TASK`` rows
    averaged over the seeds where both the finder and IMP ran, with the std over seeds of
    the score, the mean paired difference to IMP's score (``diff_s50``: same seed, same
    data order) and its standard error, and the goal judged on the means.

    Why means: one run's score at the demo's budget moves by 0.1-0.2 between evaluations and
    between training seeds (the same 50% mask retrained under seeds 1-5 on the demo data:
    F1 0.37-0.77), so a single seed's ``goal_s50`` says more about the seed than about the
    finder. The goal's numbers are unchanged; only the estimate of each side is better."""
    imp_rows = {(r["language"], r["seed"]): r for r in rows if r["method"] == "imp"}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if (row["language"], row["seed"]) in imp_rows:
            groups.setdefault((row["method"], row["language"]), []).append(row)
    out = []
    for (method, language), runs in groups.items():
        imps = [imp_rows[language, r["seed"]] for r in runs]
        mean = {"task": runs[0]["task"], "method": method, "language": language}
        mean["seeds"] = len(runs)
        measures = [k for k in runs[0] if k.startswith(("score_", "jaccard_", "steps_"))]
        for key in measures:
            mean[key] = _mean([r[key] for r in runs])
            if key.startswith("score_"):
                mean[f"{key}_std"] = _std([r[key] for r in runs])
        if method != "imp":
            imp_mean = {key: _mean([r[key] for r in imps]) for key in measures}
            for key in [k for k in measures if k.startswith("score_")]:
                diffs = [r[key] - i[key] for r, i in zip(runs, imps, strict=True)]
                sparsity = key.removeprefix("score_")
                mean[f"diff_{sparsity}"] = _mean(diffs)
                mean[f"diff_{sparsity}_se"] = _std(diffs) / math.sqrt(len(diffs))
            mean |= goal(mean, imp_mean, epsilon, greater)
        out.append(mean)
    return out


def goal(row: dict[str, Any], imp: dict[str, Any], epsilon: float, greater: bool) -> dict:
    """``goal_s50``: the finder's ticket at 50% is as good as IMP's for at most half the
    steps (absent where 50% is no target sparsity of the study)."""
    tag = percent(GOAL_SPARSITY)
    if f"score_{tag}" not in row:
        return {}
    score, reference = row[f"score_{tag}"], imp[f"score_{tag}"]
    close = within(score, reference, epsilon, greater)
    similar = row[f"jaccard_{tag}"] >= GOAL_JACCARD
    cheaper = row[f"steps_{tag}"] <= imp[f"steps_{tag}"] / 2
    return {f"goal_{tag}": close and similar and cheaper}


def headline(matrix: dict[str, Any], overlap: dict[str, Any], seeds: int) -> dict[str, Any]:
    """For one task and sparsity: do languages' tickets overlap more than random masks, and
    do transferred tickets beat random masks? (From tables already computed; ``seeds``: the
    study's, which a cell of a study in progress or with a failure may not all have.)"""
    mean, summary = matrix["mean"], overlap["summary"]
    sets = matrix.get("multi_language", {})  # their rows stand apart (``transfer``)
    transfer_cells = [
        (s, t)
        for s in matrix["rows"]
        if not is_reference(s) and s not in sets
        for t in matrix["targets"]
        if s != t and not math.isnan(mean[s][t])
    ]
    random = mean.get("random", {})  # no row without run.random
    random_cells = [
        ("random", t) for t in matrix["targets"] if not math.isnan(random.get(t, math.nan))
    ]
    compared = transfer_cells + random_cells
    return {
        "task": matrix["task"],
        "sparsity": matrix["sparsity"],
        "metric": matrix["metric"],
        "greater_is_better": matrix["greater_is_better"],
        "languages": len(matrix["targets"]),
        "overlap_between_languages": _nan(summary.get("between_languages")),
        "overlap_random": _nan(summary.get("random")),
        "overlap_same_language": _nan(summary.get("same_language_other_seed")),
        "overlap_oneshot": _nan(summary.get("with_baseline")),
        "overlap_beyond_theta0": _nan(summary.get("beyond_theta0")),
        "overlap_beyond_theta0_random": _nan(summary.get("beyond_theta0_random")),
        # pairs of languages in one seed, apart (a shared seed alone raises the overlap)
        "overlap_one_seed": bool(summary.get("between_languages_one_seed", False)),
        "overlap_same_seed": _nan(summary.get("between_languages_same_seed")),
        "overlap_beyond_theta0_same_seed": _nan(summary.get("beyond_theta0_same_seed")),
        "overlap_beyond_theta0_same_language": _nan(summary.get("beyond_theta0_same_language")),
        "transfer_score": _mean([mean[s][t] for s, t in transfer_cells]),
        "random_score": _row_mean(mean, "random"),
        # how far apart seeds land: the margin the two scores above must clear
        "score_seeds": min((matrix["n"][r][t] for r, t in compared), default=0),
        "study_seeds": seeds,
        "score_seed_std": _mean(
            [matrix["std"][r][t] for r, t in compared if matrix["n"][r][t] > 1]
        ),
        "oneshot_score": _row_mean(mean, "oneshot"),
        "dense_score": _row_mean(mean, "dense"),
    }


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


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


class _Tables:
    """The CSV tables of one pass of ``write_results``: a table with no rows is not
    written, and at the end every table of ``results/`` this pass did not write goes (an
    earlier pass's, of cells since left out, of a sparsity or run option the study file no
    longer has), so that nothing drawn or read stands for cells the study no longer has."""

    def __init__(self, layout: StudyLayout):
        self.layout = layout
        self.written: set[Path] = set()

    def write(self, name: str, rows: Iterable[dict[str, Any]]) -> None:
        rows = missing_as_none(list(rows))
        if rows:
            path = self.layout.table(name)
            write_csv(path, rows)
            self.written.add(path)

    def remove_the_rest(self) -> None:
        for path in self.layout.results.glob("*.csv"):
            if path not in self.written:
                path.unlink()


def _matrix_rows(matrix: dict[str, Any], which: str) -> list[dict[str, Any]]:
    return [
        {"source": r, **{t: matrix[which][r][t] for t in matrix["targets"]}} for r in matrix["rows"]
    ]


def write_results(study: Study) -> dict[str, Any]:
    """Every table as CSV and JSON under ``results/``; returns the headline and paths."""
    results = StudyResults(study)
    layout = study.layout
    tables = _Tables(layout)
    tickets = results.tickets()
    tables.write("tickets", tickets)
    write_json(layout.table_json("tickets"), missing_as_none(tickets))
    everything: dict[str, Any] = {
        "tickets": tickets,
        "transfer": [],
        "overlap": [],
        "core": [],
        "headline": [],
    }
    drops = []
    for task in study.tasks:
        for sparsity in study.sparsities:
            tag = f"{task}_{percent(sparsity)}"
            matrix = results.transfer(task, sparsity)
            everything["transfer"].append(matrix)
            tables.write(f"transfer_{tag}", _matrix_rows(matrix, "mean"))
            tables.write(f"transfer_{tag}_std", _matrix_rows(matrix, "std"))
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
            everything["headline"].append(headline(matrix, overlap, len(study.seeds)))
            tables.write(f"overlap_{tag}", overlap_rows(overlap) if overlap["pairs"] else [])
            multi = overlap.get("multi_language")
            tables.write(f"overlap_multi_{tag}", overlap_rows(multi) if multi else [])
            core = results.core(task, sparsity)
            everything["core"].append(core)
            tables.write(f"core_sizes_{tag}", core["sizes"])
            trained = any(row["core"] is not None for row in core["scores"])
            tables.write(f"core_{tag}", core["scores"] if trained else [])
    for name, rows in results.representation_tables().items():
        tables.write(name, rows)
    tables.write("transfer_drop", drops)
    cross = results.cross_task()
    tables.write("cross_task", cross)
    problems = [{"cell": name, "problem": why} for name, why in sorted(results.problems.items())]
    # cells still to run (neither done nor a problem): a study in progress, said as a count
    not_done = sum(not c.done(study) and c.name not in results.problems for c in results.cells)
    everything.update(
        transfer_drop=drops,
        cross_task=cross,
        problems=problems,
        not_done=not_done,
        cells=len(results.cells),
        polyticket=__version__,
        methods=[],
        methods_mean=[],
    )
    if study.run.get("methods"):
        for task in study.tasks:
            rows = results.finders(task)
            tables.write(f"methods_{task}", rows)
            everything["methods"] += rows
            config = study.tasks[task].config
            means = finder_means(rows, config.prune.epsilon, results.metric(task)[1])
            tables.write(f"methods_{task}_mean", means)
            everything["methods_mean"] += means
    tables.remove_the_rest()
    write_json(layout.table_json("results"), missing_as_none(everything))
    _export_level_masks(results)
    return everything


def _export_level_masks(results: StudyResults) -> None:
    """Under ``results/masks/``, each study ticket (``study-ticket``, the ``seed-std`` rule),
    every ticket's level at each target sparsity (the paper compares all at 50%) and the
    one-shot masks of θ0 (``oneshot-s50``): what ``compare STUDY_DIR`` reads. A copy whose
    source is gone or excluded since an earlier pass is removed, so that ``compare`` and
    the representation cells never read a mask the tables no longer stand for."""
    study = results.study
    layout = study.layout
    copies: dict[Path, Path] = {}  # exported file -> its source
    for task in study.tasks:
        for lang in study.sources(task):
            for seed, ticket in results.study_tickets(task, lang).items():
                sources = {STUDY_TICKET: Path(ticket["mask"])}
                for sparsity in study.sparsities:
                    sources[percent(sparsity)] = level_run(study, task, lang, seed, sparsity).mask
                for label, source in sources.items():
                    if source.is_file():  # else the cell's problem is in the report already
                        copies[layout.exported_mask(task, lang, seed, label)] = source
        for lang in study.tasks[task].languages:
            for seed in study.seeds:
                for sparsity in study.sparsities:
                    cell = oneshot_cell(task, lang, seed, sparsity)
                    if cell.done(study) and cell.name not in results.excluded:
                        label = f"{ONESHOT}-{percent(sparsity)}"
                        copies[layout.exported_mask(task, lang, seed, label)] = layout.cell(
                            cell.name
                        ).mask
    for target, source in copies.items():
        copy_file(source, target)
    if layout.exported_masks.is_dir():
        for stale in sorted(set(layout.exported_masks.rglob("*.safetensors")) - set(copies)):
            stale.unlink()


def number(value: Any, digits: int = 3) -> str:
    """A score or overlap as the summary and the report both write it: three decimals, "–"
    for a missing one (None, NaN or an empty cell of a table read back)."""
    if value is None or value == "":
        return "–"
    if isinstance(value, int):  # a count, a level
        return str(value)
    value = float(value)
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _beats(a: float, b: float, greater_is_better: bool) -> str:
    if math.isnan(a) or math.isnan(b):
        return "not known yet"
    return "yes" if (a > b if greater_is_better else a < b) else "no"


def _beats_beyond_seeds(a: float, b: float, line: dict[str, Any]) -> str:
    """``_beats`` for two means over seeds, both ways: "yes" or "no" only when ``a`` is
    ahead or behind by more than twice the standard error of a difference of two seed means
    (the cells' typical spread over seeds), "not clearly" within it; with one seed the
    difference is given as it is, with no margin to judge it by, and while some cells lack
    some of the study's seeds it is given as it stands so far."""
    verdict = _beats(a, b, line["greater_is_better"])
    if verdict == "not known yet" or "score_seeds" not in line:  # results of < 0.4.4
        return verdict
    gap = abs(a - b)
    seeds, spread = line["score_seeds"], line["score_seed_std"]
    planned = line.get("study_seeds", seeds)
    if seeds < planned:  # a failed or pending cell: means over fewer seeds than the others
        return (
            f"{verdict} so far, by {number(gap)} (some cells have {seeds} of the study's "
            f"{planned} seeds: not judged until they have all)"
        )
    if seeds < 2 or math.isnan(spread):
        return f"{verdict}, by {number(gap)} (one seed: no spread to judge the margin by)"
    margin = 2 * spread * math.sqrt(2 / seeds)
    if gap > margin:
        return f"{verdict}, by {number(gap)} (twice the seeds' standard error: {number(margin)})"
    where = "ahead" if verdict == "yes" else "behind"
    return (
        f"not clearly: {where} by {number(gap)}, within twice the seeds' standard error "
        f"({number(margin)})"
    )


def _same_seed_text(value: float) -> str:
    """The overlap of pairs of languages in one seed, beside the answer (of other seeds)."""
    if math.isnan(value):
        return ""
    return f" (pairs of other seeds; {number(value)} for pairs of one seed)"


def _bound_text(value: float) -> str:
    """The same language's other seeds: the bound the overlap between languages stands by."""
    return "" if math.isnan(value) else f", {number(value)} between seeds of a language"


def headline_text(line: dict[str, Any]) -> str:
    """The paper's questions, answered with this study's numbers, each beside its
    references: random masks, the same language's other seeds (the upper bound), the
    one-shot mask of θ0 and, first where there is one, the overlap beyond θ0 (the plain
    overlap of tickets is mostly the overlap of θ0's magnitudes, which every ticket shares)."""
    metric = line["metric"]
    overlap, transfer = line["overlap_between_languages"], line["transfer_score"]
    lines = [f"{line['task']} at {line['sparsity']:.0%} sparsity:"]
    if line.get("languages", 2) < 2:  # no pair of languages, ever: not "not known yet"
        lines.append("  One language: the questions about languages need two or more.")
        return "\n".join(lines)
    beyond = line["overlap_beyond_theta0"]
    if not math.isnan(beyond):
        chance = line["overlap_beyond_theta0_random"]
        lines.append(
            "  Did training move different languages to the same weights (overlap of their "
            f"departures from θ0's magnitude mask)? {_beats(beyond, chance, True)}: "
            f"Jaccard {number(beyond)} vs {number(chance)} at random"
            + _same_seed_text(line.get("overlap_beyond_theta0_same_seed", math.nan))
            + _bound_text(line.get("overlap_beyond_theta0_same_language", math.nan))
        )
    overlap_text = (
        f"{_beats(overlap, line['overlap_random'], True)}: Jaccard {number(overlap)} vs "
        f"{number(line['overlap_random'])} at random"
        + _same_seed_text(line.get("overlap_same_seed", math.nan))
    )
    overlap_text += _bound_text(line["overlap_same_language"])
    oneshot = line["overlap_oneshot"]
    if not math.isnan(oneshot):
        overlap_text += f", {number(oneshot)} with the one-shot mask of θ0"
        if not math.isnan(overlap) and overlap <= oneshot:
            overlap_text += " (no more than θ0's magnitudes alone give)"
    lines.append(
        f"  Do tickets of different languages overlap more than random masks? {overlap_text}"
    )
    if line.get("overlap_one_seed"):
        lines.append(
            "  (Every pair of languages above shares the study's one seed: its head "
            "initialisation, order of batches and dropout alone raise their overlap. A second "
            "seed tells by how much.)"
        )
    reference = f"dense {number(line['dense_score'])}"
    if not math.isnan(line["oneshot_score"]):
        reference += f", one-shot mask {number(line['oneshot_score'])}"
    verdict = _beats_beyond_seeds(transfer, line["random_score"], line)
    lines.append(
        f"  Do transferred tickets beat random masks? {verdict}: "
        f"{metric} {number(transfer)} vs {number(line['random_score'])} ({reference})"
    )
    return "\n".join(lines)


def partial_cells(matrix: dict[str, Any]) -> set[tuple[str, str]]:
    """The (row, target) cells of a transfer matrix whose mean lacks some of the study's
    seeds (a failed or pending cell), where it has a value at all."""
    planned = matrix.get("seeds", 0)  # results of < 0.4.7 do not say
    return {
        (row, target)
        for row, by_target in matrix["n"].items()
        for target, n in by_target.items()
        if 0 < n < planned
    }


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
        partial = partial_cells(matrix)
        for row in matrix["rows"]:
            lines.append(
                f"{row:<{width}}"
                + "".join(
                    f"{number(matrix['mean'][row][t]) + ('*' if (row, t) in partial else ''):>10}"
                    for t in matrix["targets"]
                )
            )
        if partial:
            lines.append(f"(* a mean over fewer than the study's {matrix['seeds']} seeds so far)")
    if everything["tickets"]:
        lines += ["", f"study tickets (rule {SEED_STD}: {RULES[SEED_STD]})"]
        for row in everything["tickets"]:
            lines.append(
                f"  {row['task']} {row['language']} seed {row['seed']}: level {row['level']} "
                f"({row['sparsity']:.0%}) score {number(row['score'])}, dense "
                f"{number(row['dense_score'])}, random {number(row['random_score'])}"
            )
    lines += finder_lines(everything.get("methods") or [], everything.get("methods_mean") or [])
    lines += ["", *(headline_text(line) for line in everything["headline"])]
    problems = everything.get("problems", [])
    if problems:
        lines += ["", f"{len(problems)} cell(s) left out of the tables:"]
        lines += [f"  {p['cell']}: {p['problem']}" for p in problems]
    if everything.get("not_done"):
        lines += ["", not_done_text(everything)]
    return "\n".join(lines).strip()


def not_done_text(everything: dict[str, Any]) -> str:
    return (
        f"{everything['not_done']} of the study's {everything['cells']} cells are not done "
        "yet: the tables lack their results (study --plan lists them)."
    )


def sparsity_tags(row: dict[str, Any]) -> list[str]:
    """The target sparsities of a ``methods_TASK`` (or ``_mean``) row, as its columns name
    them (``s50``, ``s62.5``): from its score columns, not their spread."""
    return [k.removeprefix("score_") for k in row if k.startswith("score_") and "_std" not in k]


def with_spread(row: dict[str, Any], key: str, spread: str, fmt: Callable[[Any], str]) -> str:
    """``0.800 ± 0.020``: a mean of ``row`` with its spread over the row's seeds, where there
    are seeds to measure it by (the tables write 0 for one seed, which is no spread)."""
    return fmt(row[key]) + (f" ± {fmt(row[spread])}" if row["seeds"] > 1 else "")


def finder_lines(rows: list[dict[str, Any]], means: list[dict[str, Any]] = ()) -> list[str]:
    """The ``methods_TASK`` rows in words: at each target sparsity the score, the Jaccard to
    IMP's mask and the training steps that chose the mask, whether the goal holds for the
    seed; then the ``methods_TASK_mean`` rows: the means, the score's std over seeds, the
    mean difference to IMP's score with its standard error, and the goal on the means."""
    if not rows:
        return []
    lines = ["", "ticket finders against IMP (score, Jaccard to IMP's mask, steps that chose it)"]
    goal_key = f"goal_{percent(GOAL_SPARSITY)}"
    for row in rows:
        tags = sparsity_tags(row)
        parts = [
            f"{tag}: {number(row[f'score_{tag}'])}, J {number(row[f'jaccard_{tag}'])}, "
            f"{row[f'steps_{tag}']} steps"
            for tag in tags
        ]
        if goal_key in row:
            parts.append(f"as good for half the steps: {'yes' if row[goal_key] else 'no'}")
        lines.append(
            f"  {row['task']} {row['language']} seed {row['seed']} {row['method']}: "
            + "; ".join(parts)
        )
    for row in means:
        tags = sparsity_tags(row)
        parts = []
        for tag in tags:
            part = (
                f"{tag}: {with_spread(row, f'score_{tag}', f'score_{tag}_std', number)}, "
                f"J {number(row[f'jaccard_{tag}'])}, {row[f'steps_{tag}']:g} steps"
            )
            if f"diff_{tag}" in row:
                part += f", vs IMP {with_spread(row, f'diff_{tag}', f'diff_{tag}_se', number)}"
            parts.append(part)
        if goal_key in row:
            parts.append(
                f"on the means, as good for half the steps: {'yes' if row[goal_key] else 'no'}"
            )
        lines.append(
            f"  {row['task']} {row['language']} {row['method']}, mean of {row['seeds']} "
            "seed(s): " + "; ".join(parts)
        )
    return lines
