"""Language-neutral core cells (``run.core``): is the core enough?

For each task, target sparsity and seed, the core is the weights every language's ticket
keeps (its level at that sparsity; ``analysis.core``). Each language then trains three
masks: the core alone (``core-s50``), the core plus that language's own residue (the
weights it keeps and no other language does: ``core-residue-s50``), and a random mask of
the core's sparsity (``random-core-s50``). The results' ``core`` table compares them with
the language's own ticket.
"""

from __future__ import annotations

from typing import Any

from polyticket.analysis.core import core_plus_residue, shared
from polyticket.analysis.packed import PackedMask
from polyticket.errors import UserError
from polyticket.layout import RunLayout
from polyticket.study.grid import Cell
from polyticket.study.kinds import CELL_KINDS
from polyticket.study.kinds.base import (
    CellKind,
    into_place,
    label,
    needs_tickets,
    training_config,
)
from polyticket.study.kinds.imp import imp_cell
from polyticket.study.spec import CONTROL_KNOBS, TRAINING_KNOBS, Study

KIND = "core"
VARIANTS = ("core", "core-residue", "random-core")


def core_cell(task: str, language: str, seed: int, variant: str, sparsity, languages) -> Cell:
    deps = tuple(imp_cell(task, lang, seed).name for lang in languages)
    return Cell(KIND, task, language, seed, label(variant, sparsity=sparsity), None, sparsity, deps)


def _variant(cell: Cell) -> str:
    return cell.label.rsplit("-s", 1)[0]


def language_tickets(study: Study, task: str, seed: int, sparsity) -> list[PackedMask]:
    """Every language's ticket level at ``sparsity`` (one seed), labelled by language."""
    from polyticket.study.outputs import level_run

    return [
        PackedMask.load(level_run(study, task, lang, seed, sparsity).mask, label=lang)
        for lang in study.tasks[task].languages
    ]


@CELL_KINDS.register(KIND)
class Core(CellKind):
    options = {"core": False}

    def validate(self, study: Study) -> None:
        needs_tickets(self, study)
        if self.enabled(study) and any(len(s.languages) < 2 for s in study.tasks.values()):
            raise UserError(f"{study.path}: run.core needs two or more languages per task")

    def expand(self, study: Study) -> list[Cell]:
        if not self.enabled(study):
            return []
        return [
            core_cell(task, lang, seed, variant, sparsity, spec.languages)
            for task, spec in study.tasks.items()
            for lang in spec.languages
            for seed in study.seeds
            for sparsity in study.sparsities
            for variant in VARIANTS
        ]

    def reads(self, cell: Cell) -> set[str]:
        return CONTROL_KNOBS if _variant(cell) == "random-core" else TRAINING_KNOBS

    def settings(self, study: Study, cell: Cell) -> dict[str, Any]:
        """The core is what the task's languages share: another list is another core."""
        languages = sorted(study.tasks[cell.task].languages)
        return {**super().settings(study, cell), "languages": languages}

    def run(self, study: Study, cell: Cell) -> None:
        from polyticket.lottery import finetune

        variant = _variant(cell)
        masks = language_tickets(study, cell.task, cell.seed, cell.sparsity)
        if variant == "core-residue":
            index = study.tasks[cell.task].languages.index(cell.language)
            mask = core_plus_residue(masks, index)
        else:
            mask = shared(masks)

        def write(partial: RunLayout) -> None:
            # The mask is written where train keeps the mask it used; a random control
            # reads only its sparsity and replaces it.
            mask.to_mask().save(partial.mask)
            knobs = (
                {"mask": "random", "sparsity_from": str(partial.mask)}
                if variant == "random-core"
                else {"mask": str(partial.mask)}
            )
            finetune(training_config(study, cell, partial, **knobs), partial.root)

        into_place(study, cell, write)
