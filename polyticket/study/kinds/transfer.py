"""Transfers: a ticket's level at each target sparsity, trained on every other language of
its task (the diagonal of the transfer matrix is the ticket's own level)."""

from __future__ import annotations

from polyticket.study.grid import Cell
from polyticket.study.kinds import CELL_KINDS
from polyticket.study.kinds.base import CellKind, label, needs_tickets, train_cell
from polyticket.study.kinds.imp import imp_cell
from polyticket.study.spec import Study

KIND = "transfer"


def transfer_cell(task: str, target: str, seed: int, source: str, sparsity) -> Cell:
    return Cell(
        KIND,
        task,
        target,
        seed,
        label(KIND, source, sparsity),
        source=source,
        sparsity=sparsity,
        deps=(imp_cell(task, source, seed).name,),
    )


@CELL_KINDS.register(KIND)
class Transfer(CellKind):
    name = KIND
    options = {"transfer": True}

    def validate(self, study: Study) -> None:
        needs_tickets(self, study)

    def expand(self, study: Study) -> list[Cell]:
        if not self.enabled(study):
            return []
        return [
            transfer_cell(task, target, seed, source, sparsity)
            for task, spec in study.tasks.items()
            for source in study.sources(task)
            for target in spec.languages
            if target != source
            for seed in study.seeds
            for sparsity in study.sparsities
        ]

    def run(self, study: Study, cell: Cell) -> None:
        from polyticket.study.outputs import level_run

        run = level_run(study, cell.task, cell.source, cell.seed, cell.sparsity)
        train_cell(study, cell, mask=str(run.mask))
