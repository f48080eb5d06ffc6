"""The paper's second baseline (``run.random_further``): a language's earlier IMP levels
(10–40% for a 50% target at rate 10%) pruned further at random up to each target sparsity,
then trained like the ticket. Does IMP's own choice of the last weights beat chance, given
its earlier choices? They are rows ``random-from-s10``, … of the transfer matrix
(``analysis.results``), on the language's own column. Named
``ner/en/seed1/random-from-s10-s50``."""

from __future__ import annotations

from fractions import Fraction

from polyticket.study.grid import Cell, percent
from polyticket.study.kinds import CELL_KINDS
from polyticket.study.kinds.base import CellKind, label, needs_tickets, train_cell
from polyticket.study.kinds.imp import imp_cell
from polyticket.study.spec import CONTROL_KNOBS, Study

KIND = "random-further"
ROW_PREFIX = "random-from-"


def further_cell(task: str, language: str, seed: int, start: Fraction, sparsity) -> Cell:
    deps = (imp_cell(task, language, seed).name,)
    text = label("random", percent(start), sparsity)
    return Cell(KIND, task, language, seed, text, sparsity=sparsity, deps=deps)


def row_name(start: Fraction) -> str:
    """The transfer matrix's row of the cells that start from the level at ``start``."""
    return ROW_PREFIX + percent(start)


def starts(study: Study, task: str, sparsity: Fraction) -> list[Fraction]:
    """The task's IMP levels that a target sparsity prunes further: every one between the
    dense level and the target."""
    return [level for level in study.schedule(task) if 0 < level < sparsity]


@CELL_KINDS.register(KIND)
class RandomFurther(CellKind):
    options = {"random_further": False}

    def validate(self, study: Study) -> None:
        needs_tickets(self, study)

    def expand(self, study: Study) -> list[Cell]:
        if not self.enabled(study):
            return []
        return [
            further_cell(task, lang, seed, start, sparsity)
            for task, spec in study.tasks.items()
            for lang in spec.languages
            for seed in study.seeds
            for sparsity in study.sparsities
            for start in starts(study, task, sparsity)
        ]

    def reads(self, cell: Cell) -> set[str]:
        return CONTROL_KNOBS

    def run(self, study: Study, cell: Cell) -> None:
        from polyticket.study.outputs import level_run

        (start,) = [
            s
            for s in starts(study, cell.task, cell.sparsity)
            if further_cell(cell.task, cell.language, cell.seed, s, cell.sparsity) == cell
        ]
        level = level_run(study, cell.task, cell.language, cell.seed, start)
        train_cell(
            study, cell, mask="random", sparsity=float(cell.sparsity), start_from=str(level.mask)
        )
