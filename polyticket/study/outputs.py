"""What a study's cells wrote, read back: scores, level runs, and the study's tickets.

Reading only files (through ``study.layout``), so results and analyses work on a study
directory copied back from a cluster.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

from polyticket.errors import UserError
from polyticket.io import read_json
from polyticket.layout import RunLayout
from polyticket.study.kinds.imp import imp_cell
from polyticket.study.spec import Study
from polyticket.tickets import seed_std_tickets


def best_score(path: Path) -> float | None:
    """A run's ``metrics.json`` best score (None: not written yet, or no evaluation); a
    value that is no number is an unreadable file (``ValueError``), not a score."""
    if not path.is_file():
        return None
    value = read_json(path)["best_score"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{path}: best_score {value!r} is not a number")
    return value


def score(study: Study, cell_name: str) -> float | None:
    """The best score of a training cell, or None while it is not done."""
    return best_score(study.layout.cell(cell_name).metrics)


def level_run(study: Study, task: str, source: str, seed: int, sparsity: Fraction) -> RunLayout:
    """The level of ``source``'s IMP run that has ``sparsity`` (the paper compares at 50%)."""
    run = study.layout.cell(imp_cell(task, source, seed).name)
    return run.level(study.level_of(task, sparsity))


def level_score(
    study: Study, task: str, source: str, seed: int, sparsity: Fraction
) -> float | None:
    return best_score(level_run(study, task, source, seed, sparsity).metrics)


def imp_done(study: Study, task: str, source: str) -> bool:
    return all(imp_cell(task, source, seed).done(study) for seed in study.seeds)


def study_tickets(study: Study, task: str, source: str) -> dict[int, dict[str, Any]]:
    """The study's tickets of ``source`` (``tickets.SEED_STD``), one per seed, each with
    the path of its mask and the target sparsity it sits at (None if at none)."""
    runs = {}
    for seed in study.seeds:
        cell = imp_cell(task, source, seed)
        run = study.layout.cell(cell.name)
        if not cell.done(study):
            raise UserError(f"ticket {cell.name} is not done")
        runs[seed] = [read_json(run.level(k).metrics) for k in run.completed_levels()]
    one_seed_epsilon = read_json(
        study.layout.cell(imp_cell(task, source, study.seeds[0]).name).ticket_json
    )["epsilon"]
    schedule = study.schedule(task)
    out = {}
    for seed, ticket in seed_std_tickets(runs, one_seed_epsilon).items():
        run = study.layout.cell(imp_cell(task, source, seed).name)
        sparsity = schedule[ticket["level"]]
        ticket["mask"] = str(run.level(ticket["level"]).mask)
        ticket["target"] = float(sparsity) if sparsity in study.sparsities else None
        out[seed] = ticket
    return out
