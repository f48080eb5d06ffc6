"""Every file and folder name of a run and of a study, in one place.

No other module spells ``level_03``, ``mask.safetensors`` or ``results/``: they ask a layout.
Two layouts:

- ``RunLayout``: what ``find`` (levels of IMP, the selected ticket) and ``train`` (one
  training run) write into ``--out``;
- ``StudyLayout``: a study directory: generated data, one run per cell, the tables, the
  exported masks and the report;
- ``ReportLayout``: a report folder (a study's ``report/``, or wherever ``report --out``
  says).

A name that changes here changes the file contract: say so in the README's changelog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_LEVEL = re.compile(r"level_(\d{2})")


@dataclass(frozen=True)
class RunLayout:
    """A run directory. ``find`` writes levels and a ticket; ``train`` a mask and metrics."""

    root: Path

    # both commands
    @property
    def run_json(self) -> Path:
        """Resolved settings, inputs' fingerprints, versions, start and end."""
        return self.root / "run.json"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def mask(self) -> Path:
        """The mask a training run used (``train``), or a level trained with (``find``)."""
        return self.root / "mask.safetensors"

    @property
    def cell_settings(self) -> Path:
        """In a study's cell: the settings the cell was made with (``StudyLayout``)."""
        return self.root / "cell.json"

    @property
    def metrics(self) -> Path:
        """Best score, its step, the evaluation history and the losses of one training run."""
        return self.root / "metrics.json"

    def table(self, name: str) -> Path:
        """Rows an analysis cell wrote (``retrieval``, ``similarity``)."""
        return self.root / f"{name}.csv"

    # find: one sub-run per level
    def level(self, level: int) -> RunLayout:
        """A complete level: it appears by an atomic rename of its partial folder."""
        return RunLayout(self.root / f"level_{level:02d}")

    def partial(self, level: int) -> RunLayout:
        """A level being made: its mask is written before the previous level is complete."""
        return RunLayout(self.root / f"level_{level:02d}.partial")

    def completed_levels(self) -> list[int]:
        return sorted(
            int(m.group(1))
            for p in self.root.glob("level_*")
            if p.is_dir() and (m := _LEVEL.fullmatch(p.name))
        )

    @property
    def ticket(self) -> Path:
        """``find``'s ticket: its own rule (``tickets.EPSILON``), not a study's."""
        return self.root / "ticket.safetensors"

    @property
    def ticket_json(self) -> Path:
        """Which level ``find`` selected, by which rule, and every level's score."""
        return self.root / "ticket.json"


@dataclass(frozen=True)
class StudyLayout:
    """A study directory (``out`` of a study file)."""

    root: Path

    @property
    def data(self) -> Path:
        """Synthetic data the study generates (``synth:``)."""
        return self.root / "data"

    @property
    def synth_record(self) -> Path:
        """What made each synthetic file (``synth:`` entries): another entry, new files."""
        return self.data / "synth.json"

    @property
    def cells(self) -> Path:
        return self.root / "cells"

    @property
    def log(self) -> Path:
        """One JSON line per cell start, end and failure."""
        return self.root / "study.log.jsonl"

    def cell(self, name: str) -> RunLayout:
        return RunLayout(self.cells / name)

    def cell_partial(self, name: str) -> RunLayout:
        """Where a training cell runs before it is renamed into place."""
        return RunLayout(self.cells / f"{name}.partial")

    def cell_failure(self, name: str) -> Path:
        return self.cells / f"{name}.failed.json"

    def cell_settings(self, name: str) -> Path:
        """The settings a cell was made with, to detect a changed study file."""
        return self.cell(name).cell_settings

    @property
    def results(self) -> Path:
        return self.root / "results"

    def table(self, name: str) -> Path:
        return self.results / f"{name}.csv"

    def table_json(self, name: str) -> Path:
        return self.results / f"{name}.json"

    def exported_mask(self, task: str, source: str, seed: int, label: str) -> Path:
        """A mask copied out of the cells for use elsewhere: ``label`` is ``study-ticket``
        (the study's own rule, ``tickets.SEED_STD``), a sparsity such as ``s50`` (the
        ticket's level there) or ``oneshot-s50`` (the magnitude mask of θ0)."""
        return self.results / "masks" / task / source / f"seed{seed}" / f"{label}.safetensors"

    @property
    def exported_masks(self) -> Path:
        return self.results / "masks"

    def exported_sets(self) -> dict[tuple[str, str], dict[str, Path]]:
        """The exported masks, by task and label (``s50``, ``oneshot-s50``, ...): each a
        mapping ``SOURCE/seedS`` -> file; what ``compare STUDY_DIR`` compares."""
        sets: dict[tuple[str, str], dict[str, Path]] = {}
        for path in sorted(self.exported_masks.glob("*/*/seed*/*.safetensors")):
            task, source, seed = path.parts[-4:-1]
            sets.setdefault((task, path.stem), {})[f"{source}/{seed}"] = path
        return sets

    @property
    def report(self) -> ReportLayout:
        return ReportLayout(self.root / "report")


@dataclass(frozen=True)
class ReportLayout:
    """A report: the HTML page, its Markdown summary and one PNG per figure."""

    root: Path

    @property
    def index(self) -> Path:
        return self.root / "index.html"

    @property
    def summary(self) -> Path:
        return self.root / "summary.md"

    def figure(self, name: str) -> Path:
        return self.root / f"{name}.png"

    def figures(self) -> list[Path]:
        return sorted(self.root.glob("*.png"))
