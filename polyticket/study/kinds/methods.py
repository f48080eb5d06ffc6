"""Other ticket finders beside IMP (``run.methods: [movement, wanda, early-bird]``): one
``find`` run per task, language, seed and pruning criterion, with the IMP cell's settings
and schedule and only ``method`` changed (with its own scope where the study sets none),
so that ``methods_TASK.csv`` (``analysis.results``) compares their levels with the IMP
cell's at each target sparsity. Named ``ner/en/seed1/imp-movement``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyticket.config import scope_for
from polyticket.criteria import CRITERIA
from polyticket.errors import UserError
from polyticket.study.grid import Cell
from polyticket.study.kinds import CELL_KINDS
from polyticket.study.kinds.base import needs_tickets
from polyticket.study.kinds.imp import Imp, find_cell
from polyticket.study.spec import Study

KIND = "methods"
PREFIX = "imp-"


def method_cell(task: str, language: str, seed: int, method: str, cost: float = 1.0) -> Cell:
    return Cell(KIND, task, language, seed, PREFIX + method, cost=cost)


def method_of(cell: Cell) -> str:
    return cell.label.removeprefix(PREFIX)


@CELL_KINDS.register(KIND)
class Methods(Imp):
    """IMP cells with another criterion (the run, the result file and the recorded
    settings are IMP's, plus the method)."""

    options = {"methods": []}

    def read_option(self, path: Path, key: str, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{path}: run.methods must be a list of pruning criteria")
        unknown = [v for v in value if v not in CRITERIA]
        if unknown:
            raise UserError(
                f"{path}: run.methods: unknown pruning criterion {unknown[0]!r} "
                f"(use {', '.join(CRITERIA.names())})"
            )
        if len(set(value)) < len(value):
            raise UserError(f"{path}: run.methods names a criterion twice")
        return list(value)

    def validate(self, study: Study) -> None:
        needs_tickets(self, study)  # the table compares each method with the IMP cell

    def expand(self, study: Study) -> list[Cell]:
        return [
            method_cell(task, lang, seed, method, cost=len(study.schedule(task)))
            for task, spec in study.tasks.items()
            for lang in spec.languages
            for seed in study.seeds
            for method in study.run["methods"]
        ]

    def run(self, study: Study, cell: Cell) -> None:
        find_cell(study, cell, method=method_of(cell))

    def settings(self, study: Study, cell: Cell) -> dict[str, Any]:
        method = method_of(cell)
        scope = scope_for(method, study.tasks[cell.task].settings.get("scope"))
        return {**super().settings(study, cell), "method": method, "scope": scope}
