"""Cross-task transfers (``run.cross_task``): a ticket of one task entry trained on another
task of the same model, in each language both have."""

from __future__ import annotations

from polyticket.study.grid import Cell
from polyticket.study.kinds import CELL_KINDS
from polyticket.study.kinds.base import CellKind, label, needs_tickets, train_cell
from polyticket.study.kinds.imp import imp_cell
from polyticket.study.spec import Study

KIND = "cross-task"


def cross_task_cell(task: str, language: str, seed: int, source: str, sparsity) -> Cell:
    return Cell(
        KIND,
        task,
        language,
        seed,
        label(KIND, source, sparsity),
        source=source,
        sparsity=sparsity,
        deps=(imp_cell(source, language, seed).name,),
    )


@CELL_KINDS.register(KIND)
class CrossTask(CellKind):
    name = KIND
    options = {"cross_task": False}

    def validate(self, study: Study) -> None:
        needs_tickets(self, study)

    def expand(self, study: Study) -> list[Cell]:
        if not self.enabled(study):
            return []
        return [
            cross_task_cell(task, lang, seed, source_task, sparsity)
            for source_task, source in study.tasks.items()
            for task, spec in study.tasks.items()
            if task != source_task and source.model == spec.model
            for lang in spec.languages
            if lang in source.languages
            for seed in study.seeds
            for sparsity in study.sparsities
        ]

    def run(self, study: Study, cell: Cell) -> None:
        from polyticket.study.outputs import level_run

        run = level_run(study, cell.source, cell.language, cell.seed, cell.sparsity)
        train_cell(study, cell, mask=str(run.mask))
