"""IMP cells: one ``find`` run per task, language (or set of languages) and seed.

Its levels are the masks every other kind reads; ``run.multi_language: [[en, fr]]`` adds a
ticket trained on equal shares of several languages (named ``en+fr``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from polyticket.config import FindConfig, build_config, knob_names
from polyticket.errors import UserError
from polyticket.io import write_json
from polyticket.study.grid import Cell
from polyticket.study.kinds import CELL_KINDS
from polyticket.study.kinds.base import CellKind
from polyticket.study.spec import FINDING_KNOBS, Study, joined

KIND = "imp"

log = logging.getLogger("polyticket")


def imp_cell(task: str, source: str, seed: int, cost: float = 1.0) -> Cell:
    """The IMP cell of ``source`` (a language or ``en+fr``): what other cells depend on."""
    return Cell(KIND, task, source, seed, KIND, cost=cost)


@CELL_KINDS.register(KIND)
class Imp(CellKind):
    options = {"tickets": True, "multi_language": []}

    def read_option(self, path: Path, key: str, value: Any) -> Any:
        if key != "multi_language":
            return super().read_option(path, key, value)
        if not isinstance(value, list):
            raise UserError(f"{path}: run.multi_language must be a list of language lists")
        combos = []
        for combo in value:
            if isinstance(combo, str):
                combo = [v.strip() for v in combo.split(",")]
            if (
                not isinstance(combo, list)
                or len(combo) < 2
                or not all(isinstance(v, str) and v for v in combo)
            ):
                raise UserError(
                    f"{path}: run.multi_language: each entry must list two or more languages"
                )
            if len(set(combo)) < len(combo):  # "en+en" would be a ticket of English alone
                twice = next(lang for lang in combo if combo.count(lang) > 1)
                raise UserError(
                    f"{path}: run.multi_language: {', '.join(combo)} names {twice!r} twice; "
                    "give each language of a set once"
                )
            same = next((c for c in combos if set(c) == set(combo)), None)
            if same is not None:  # [en, fr] and [fr, en]: two tickets of one set
                raise UserError(
                    f"{path}: run.multi_language: {', '.join(combo)} is the set "
                    f"{', '.join(same)} again; give each set once"
                )
            combos.append(list(combo))
        return combos

    def validate(self, study: Study) -> None:
        known = {lang for spec in study.tasks.values() for lang in spec.languages}
        for combo in study.multi_language:
            unknown = [lang for lang in combo if lang not in known]
            if unknown:
                raise UserError(
                    f"{study.path}: run.multi_language: {unknown[0]!r} is none of the study's "
                    f"languages ({', '.join(sorted(known))})"
                )
            # A task trains a set's ticket only when it has all of its languages
            # (``Study.sources``): a set no task has would make no cells, unsaid.
            lacking = {
                key: [lang for lang in combo if lang not in spec.languages]
                for key, spec in study.tasks.items()
                if not set(combo) <= set(spec.languages)
            }
            if len(lacking) == len(study.tasks):
                have = "; ".join(
                    f"{key}: {', '.join(spec.languages)}" for key, spec in study.tasks.items()
                )
                raise UserError(
                    f"{study.path}: run.multi_language: no task has all of {', '.join(combo)} "
                    f"({have}); give a set of languages one task has"
                )
            if lacking:
                log.warning(
                    "%s: run.multi_language: no %s ticket in %s (a task trains a set only "
                    "when it has all of its languages)", study.path, joined(combo),
                    ", ".join(f"{key} (no {', '.join(langs)})" for key, langs in lacking.items()),
                )  # fmt: skip

    def expand(self, study: Study) -> list[Cell]:
        if not self.enabled(study):
            return []
        return [
            imp_cell(task, source, seed, cost=len(study.schedule(task)))
            for task in study.tasks
            for source in study.sources(task)
            for seed in study.seeds
        ]

    def run(self, study: Study, cell: Cell) -> None:
        find_cell(study, cell)

    def reads(self, cell: Cell) -> set[str]:
        return FINDING_KNOBS

    def continues(self, knobs: set[str]) -> bool:
        """Another ticket rule or largest target sparsity: ``find`` continues the run, its
        levels standing (``lottery.CONTINUABLE``); the cells that read them stand too."""
        from polyticket.lottery import CONTINUABLE

        return knobs <= {name.split(".")[-1] for name in CONTINUABLE}

    def reopen(self, study: Study, cell: Cell) -> None:
        run = study.layout.cell(cell.name)
        run.ticket_json.unlink(missing_ok=True)  # the result: the cell runs again
        run.ticket.unlink(missing_ok=True)

    def settings(self, study: Study, cell: Cell) -> dict[str, Any]:
        # The levels run up to the largest target sparsity (another one continues the run).
        return {**super().settings(study, cell), "target_sparsity": float(max(study.sparsities))}

    def result(self, study: Study, cell: Cell) -> Path:
        return study.layout.cell(cell.name).ticket_json


def find_cell(study: Study, cell: Cell, **knobs: Any) -> None:
    """Run ``find`` for a cell with the task's settings and ``knobs`` (e.g. a method)."""
    from polyticket.lottery import find
    from polyticket.study.kinds import CELL_KINDS

    spec = study.tasks[cell.task]
    out = study.layout.cell(cell.name).root
    values = {
        **spec.settings,
        "task": spec.task,
        "seed": cell.seed,
        "language": cell.language.replace("+", ","),
        "out": out,
        "target_sparsity": float(max(study.sparsities)),
        **knobs,
    }
    known = knob_names(FindConfig)
    config = build_config(
        FindConfig, None, {k: v for k, v in values.items() if k in known}, str(study.path)
    )
    # Recorded before the run: an interrupted run is continued only with these settings.
    write_json(study.layout.cell_settings(cell.name), CELL_KINDS[cell.kind]().settings(study, cell))
    find(config, out)
