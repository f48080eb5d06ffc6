"""One-shot references (``run.oneshot``, not in the paper): the magnitude mask of θ0 at each
target sparsity, trained once. It is the overlap a ticket would have with no training at
all, and the baseline the overlap beyond θ0 is measured against."""

from __future__ import annotations

from polyticket.study.grid import Cell
from polyticket.study.kinds import CELL_KINDS
from polyticket.study.kinds.base import CellKind, label, train_cell
from polyticket.study.spec import CONTROL_KNOBS, Study

KIND = "oneshot"


def oneshot_cell(task: str, language: str, seed: int, sparsity) -> Cell:
    return Cell(KIND, task, language, seed, label(KIND, sparsity=sparsity), sparsity=sparsity)


@CELL_KINDS.register(KIND)
class Oneshot(CellKind):
    options = {"oneshot": False}

    def expand(self, study: Study) -> list[Cell]:
        if not self.enabled(study):
            return []
        return [
            oneshot_cell(task, lang, seed, sparsity)
            for task, spec in study.tasks.items()
            for lang in spec.languages
            for seed in study.seeds
            for sparsity in study.sparsities
        ]

    def reads(self, cell: Cell) -> set[str]:
        return CONTROL_KNOBS

    def run(self, study: Study, cell: Cell) -> None:
        train_cell(study, cell, mask="oneshot", sparsity=float(cell.sparsity))
