"""Transfers: a ticket's level at each target sparsity, trained on every other language of
its task (the diagonal of the transfer matrix is the ticket's own level)."""

from __future__ import annotations

from polyticket.study.grid import Cell
from polyticket.study.kinds import CELL_KINDS
from polyticket.study.kinds.base import LevelKind
from polyticket.study.spec import Study

KIND = "transfer"


@CELL_KINDS.register(KIND)
class Transfer(LevelKind):
    options = {"transfer": True}

    @staticmethod
    def whose(task: str, language: str, source: str) -> tuple[str, str]:
        return task, source  # the same task's ticket of the source language

    def expand(self, study: Study) -> list[Cell]:
        if not self.enabled(study):
            return []
        return [
            self.cell(task, target, seed, source, sparsity)
            for task, spec in study.tasks.items()
            for source in study.sources(task)
            for target in spec.languages
            if target != source
            for seed in study.seeds
            for sparsity in study.sparsities
        ]


def transfer_cell(task: str, target: str, seed: int, source: str, sparsity) -> Cell:
    return Transfer().cell(task, target, seed, source, sparsity)
