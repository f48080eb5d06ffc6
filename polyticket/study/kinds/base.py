"""What a cell kind is: its ``run:`` options, its cells, how one of them runs, when it is done."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polyticket.config import TrainConfig, build_config, to_dict
from polyticket.errors import UserError
from polyticket.io import write_json
from polyticket.layout import RunLayout
from polyticket.study.grid import Cell, percent
from polyticket.study.kinds import CELL_KINDS
from polyticket.study.spec import PATH_KNOBS, TRAINING_KNOBS, Study, training_knobs


class CellKind:
    """A kind of cell. Subclasses set ``options`` and implement ``expand`` and ``run``; a
    training cell (the default) is done when its ``metrics.json`` exists."""

    name: str = ""  # set by ``CELL_KINDS.register``
    # the kind's keys under ``run:`` in a study file, with their defaults
    options: dict[str, Any] = {}

    def read_option(self, path: Path, key: str, value: Any) -> Any:
        """Check one ``run:`` value; by default a kind is switched on or off."""
        if not isinstance(value, bool):
            raise UserError(f"{path}: run.{key} must be true or false, got {value!r}")
        return value

    def enabled(self, study: Study) -> bool:
        return bool(study.run[next(iter(self.options))])

    def validate(self, study: Study) -> None:
        """Check what the kind needs of the rest of the study."""

    def expand(self, study: Study) -> list[Cell]:
        raise NotImplementedError

    def run(self, study: Study, cell: Cell) -> None:
        raise NotImplementedError

    def result(self, study: Study, cell: Cell) -> Path:
        """The file whose existence means the cell is done."""
        return study.layout.cell(cell.name).metrics

    def continues(self, knobs: set[str]) -> bool:
        """Whether a cell whose recorded ``knobs`` differ from the study's is continued from
        what it made (``reopen``) rather than made again with every cell that read it."""
        return False

    def reopen(self, study: Study, cell: Cell) -> None:
        """Make a cell that ``continues`` not done, keeping what it continues from."""
        raise NotImplementedError

    def reads(self, cell: Cell) -> set[str]:
        """The knobs of its task that change the cell's result (``spec``'s sets): by
        default, a training run's."""
        return TRAINING_KNOBS

    def settings(self, study: Study, cell: Cell) -> dict[str, Any]:
        """What makes the cell: the knobs of its task it reads (defaults filled in, paths
        absolute, so that running the study from elsewhere changes nothing, and inside the
        study's ``out`` as ``{out}/…``, so that a study copied elsewhere is the same study)
        and the cell's own."""
        spec = study.tasks[cell.task]
        reads = self.reads(cell)
        values = {
            name: in_out(_absolute(value), study.out) if name in PATH_KNOBS else value
            for section in to_dict(spec.config).values()
            if isinstance(section, dict)
            for name, value in section.items()
            if name in reads
        }
        sparsity = float(cell.sparsity) if cell.sparsity is not None else None
        own = {"task": spec.task, "language": cell.language, "seed": cell.seed}
        return {**values, **own, "source": cell.source, "sparsity": sparsity}


def in_out(value: Any, out: Path) -> Any:
    """Absolute paths inside the study's ``out`` written as ``{out}/…`` (lists item by item)."""
    if isinstance(value, list):
        return [in_out(v, out) for v in value]
    root = os.path.abspath(out)
    if isinstance(value, str) and (value == root or value.startswith(root + os.sep)):
        return "{out}" + value[len(root) :]
    return value


def _absolute(value: Any) -> Any:
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    return os.path.abspath(value) if isinstance(value, str) else value


class LevelKind(CellKind):
    """Cells that train an IMP ticket's level at a target sparsity on their own task and
    language (transfers across languages or tasks); ``whose`` names the ticket."""

    @staticmethod
    def whose(task: str, language: str, source: str) -> tuple[str, str]:
        """(task, language) of the IMP cell whose level a cell trains."""
        raise NotImplementedError

    def cell(self, task: str, language: str, seed: int, source: str, sparsity) -> Cell:
        from polyticket.study.kinds.imp import imp_cell

        ticket = imp_cell(*self.whose(task, language, source), seed)
        text = label(self.name, source, sparsity)
        return Cell(self.name, task, language, seed, text, source, sparsity, (ticket.name,))

    def validate(self, study: Study) -> None:
        needs_tickets(self, study)

    def run(self, study: Study, cell: Cell) -> None:
        from polyticket.study.outputs import level_run

        task, source = self.whose(cell.task, cell.language, cell.source)
        train_cell(
            study, cell, mask=str(level_run(study, task, source, cell.seed, cell.sparsity).mask)
        )


def needs_tickets(kind: CellKind, study: Study) -> None:
    if kind.enabled(study) and not study.run["tickets"]:
        raise UserError(f"{study.path}: {kind.name} cells need run.tickets: true")


def label(kind: str, source: str | None = None, sparsity=None, suffix: str = "") -> str:
    """``transfer-from-en-s50``: kind, where the mask comes from, at which sparsity."""
    text = kind + (f"-from-{source}" if source is not None else "")
    return text + (f"-{percent(sparsity)}" if sparsity is not None else "") + suffix


def train_cell(study: Study, cell: Cell, **knobs: Any) -> None:
    """Run ``train`` for a cell with the task's settings and ``knobs`` (a mask, a
    sparsity), in ``NAME.partial``, renamed into place when complete: an interrupted one
    starts over (one training run is not resumable)."""
    from polyticket.lottery import finetune

    def write(partial: RunLayout) -> None:
        finetune(training_config(study, cell, partial, **knobs), partial.root)

    into_place(study, cell, write)


def training_config(study: Study, cell: Cell, out: RunLayout, **knobs: Any) -> TrainConfig:
    spec = study.tasks[cell.task]
    values = {
        **spec.settings,
        "scope": spec.config.prune.scope,  # control masks ranked as the tickets are
        "task": spec.task,
        "seed": cell.seed,
        "language": cell.language,
        "out": out.root,
        **knobs,
    }
    return build_config(TrainConfig, None, training_knobs(values), str(study.path))


def into_place(study: Study, cell: Cell, write: Callable[[RunLayout], Any]) -> None:
    final = study.layout.cell(cell.name).root
    partial = study.layout.cell_partial(cell.name)
    shutil.rmtree(partial.root, ignore_errors=True)
    write(partial)
    # Inside the folder before the rename: a done cell always says what made it.
    write_json(partial.cell_settings, CELL_KINDS[cell.kind]().settings(study, cell))
    partial.root.replace(final)
