"""Random baselines: a random mask of each target sparsity, and one at the sparsity of the
study's ticket (the paper's baseline; reusing the target's cell when they coincide)."""

from __future__ import annotations

import shutil
from typing import Any

from polyticket.pruning import as_fraction
from polyticket.study.grid import Cell
from polyticket.study.kinds import CELL_KINDS
from polyticket.study.kinds.base import CellKind, into_place, label, needs_tickets, train_cell
from polyticket.study.kinds.imp import imp_cell
from polyticket.study.spec import CONTROL_KNOBS, Study

KIND = "random"
AT_TICKET = "random-at-ticket"


def random_cell(task: str, language: str, seed: int, sparsity=None, deps=()) -> Cell:
    text = label(KIND, sparsity=sparsity) if sparsity is not None else AT_TICKET
    return Cell(KIND, task, language, seed, text, sparsity=sparsity, deps=tuple(deps))


@CELL_KINDS.register(KIND)
class Random(CellKind):
    options = {"random": True}

    def validate(self, study: Study) -> None:
        needs_tickets(self, study)

    def expand(self, study: Study) -> list[Cell]:
        if not self.enabled(study):
            return []
        out = []
        for task, spec in study.tasks.items():
            for lang in spec.languages:
                every_seed = [imp_cell(task, lang, s).name for s in study.seeds]
                for seed in study.seeds:
                    out += [random_cell(task, lang, seed, s) for s in study.sparsities]
                    out.append(random_cell(task, lang, seed, deps=every_seed))
        return out

    def reads(self, cell: Cell) -> set[str]:
        return CONTROL_KNOBS

    def settings(self, study: Study, cell: Cell) -> dict[str, Any]:
        """The mask at the study's ticket depends on what picks the ticket
        (``tickets.seed_std_tickets``): every seed's run (the rule compares each seed with
        their mean), the levels up to the largest target, and with one seed ``epsilon``
        (several seeds' spread stands in for it)."""
        own = super().settings(study, cell)
        if cell.sparsity is not None:
            return own
        one_seed = len(study.seeds) == 1
        epsilon = {"epsilon": study.tasks[cell.task].config.prune.epsilon} if one_seed else {}
        return {
            **own,
            "seeds": list(study.seeds),
            "target_sparsity": float(max(study.sparsities)),
            **epsilon,
        }

    def run(self, study: Study, cell: Cell) -> None:
        if cell.sparsity is not None:
            train_cell(study, cell, mask="random", sparsity=float(cell.sparsity))
            return
        from polyticket.study.outputs import study_tickets

        ticket = study_tickets(study, cell.task, cell.language)[cell.seed]
        target = as_fraction(ticket["target"]) if ticket["target"] is not None else None
        same = random_cell(cell.task, cell.language, cell.seed, target) if target else None
        if same is not None and same.done(study):
            # The ticket sits at a target sparsity whose random baseline exists: reuse it.
            source = study.layout.cell(same.name).root
            into_place(study, cell, lambda partial: shutil.copytree(source, partial.root))
        else:
            train_cell(study, cell, mask="random", sparsity_from=ticket["mask"])
