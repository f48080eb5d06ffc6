"""What sub-networks do to the model's representations (``run.representations``).

One cell per task, after its tickets: every language's ticket level at each target
sparsity (and the random and one-shot masks of that sparsity, where the study has them)
applied to the pre-trained weights θ0, and the dense model, encode the same parallel
sentences; the cell writes parallel-sentence retrieval per layer (``retrieval.csv``, the
paper's Fig. 7) and CKA / SVCCA / PWCCA per layer (``similarity.csv``, its App. F).

In a study file::

    run: {representations: {parallel: "{out}/data/parallel-{lang}.txt"}}

``parallel`` names one text file per language (aligned by line); ``pooling`` (mean or
cls) is optional.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

from polyticket.errors import UserError
from polyticket.io import file_fingerprint, write_csv
from polyticket.layout import RunLayout
from polyticket.study.grid import Cell, percent
from polyticket.study.kinds import CELL_KINDS
from polyticket.study.kinds.base import CellKind, in_out, into_place, needs_tickets
from polyticket.study.kinds.imp import imp_cell
from polyticket.study.kinds.oneshot import KIND as ONESHOT
from polyticket.study.kinds.oneshot import oneshot_cell
from polyticket.study.kinds.random import KIND as RANDOM
from polyticket.study.kinds.random import random_cell
from polyticket.study.spec import MODEL_KNOBS, Study

KIND = "representations"
OPTIONS = {"parallel", "pooling"}


def representations_cell(study: Study, task: str) -> Cell:
    """After every ticket of the task and the control cells whose masks it encodes with (a
    cell that reads a mask must wait for it: whether it ran first was the order's luck)."""
    seed = study.seeds[0]
    tickets = [imp_cell(task, lang, s) for lang in study.tasks[task].languages for s in study.seeds]
    controls = [c for s in study.sparsities for c in _control_cells(study, task, s).values()]
    return Cell(KIND, task, "all", seed, KIND, deps=tuple(c.name for c in tickets + controls))


def _control_cells(study: Study, task: str, sparsity: Fraction) -> dict[str, Cell]:
    """The random and one-shot cells of a target sparsity (first language and seed) by
    their label here (``random/seed1/s50``, ``oneshot/s50``), where the study has them."""
    language, seed, tag = study.tasks[task].languages[0], study.seeds[0], percent(sparsity)
    found = {}
    if CELL_KINDS[RANDOM]().enabled(study):
        found[f"random/seed{seed}/{tag}"] = random_cell(task, language, seed, sparsity)
    if CELL_KINDS[ONESHOT]().enabled(study):
        found[f"oneshot/{tag}"] = oneshot_cell(task, language, seed, sparsity)
    return found


@CELL_KINDS.register(KIND)
class Representations(CellKind):
    options = {"representations": False}

    def read_option(self, path: Path, key: str, value: Any) -> Any:
        if value is False:
            return False
        if not isinstance(value, dict) or "parallel" not in value or set(value) - OPTIONS:
            raise UserError(
                f"{path}: run.{key} must be false or {{parallel: FILE-with-{{lang}}, "
                "pooling: mean|cls}"
            )
        if "{lang}" not in str(value["parallel"]):
            raise UserError(f"{path}: run.{key}.parallel must contain {{lang}}")
        if value.get("pooling", "mean") not in ("mean", "cls"):
            raise UserError(f"{path}: run.{key}.pooling must be mean or cls")
        return dict(value)

    def validate(self, study: Study) -> None:
        needs_tickets(self, study)

    def expand(self, study: Study) -> list[Cell]:
        if not self.enabled(study):
            return []
        return [representations_cell(study, task) for task in study.tasks]

    def run(self, study: Study, cell: Cell) -> None:
        from polyticket.analysis.representations import read_inputs
        from polyticket.analysis.retrieval import retrieval_rows
        from polyticket.analysis.similarity import check_sample_size, similarity_rows
        from polyticket.models.families import PruneScope

        option = study.run["representations"]
        template = str(study.resolve(option["parallel"]))
        languages = study.tasks[cell.task].languages
        parallel = {lang: Path(template.replace("{lang}", lang)) for lang in languages}
        config = study.tasks[cell.task].config
        scope = PruneScope.of(config.model)  # what the masks cover: no warning for the rest
        inputs = read_inputs(config.model.model, masks(study, cell.task), parallel, scope)
        check_sample_size(inputs)
        retrieval, similarity, dense = [], [], None
        for label, states in inputs.states(option.get("pooling", "mean")):
            retrieval += retrieval_rows(label, states)
            similarity += similarity_rows(label, states, dense)
            dense = dense or states

        def write(partial: RunLayout) -> None:
            write_csv(partial.table("retrieval"), retrieval)
            write_csv(partial.table("similarity"), similarity)

        into_place(study, cell, write)

    def result(self, study: Study, cell: Cell) -> Path:
        return study.layout.cell(cell.name).table("similarity")

    def reads(self, cell: Cell) -> set[str]:
        return MODEL_KNOBS  # the masks are applied to θ0: nothing is trained

    def settings(self, study: Study, cell: Cell) -> dict[str, Any]:
        """Besides the model's knobs, what the cell encodes: its sentences (the files and
        their contents), the pooling, and the masks (the study's languages, seeds and
        sparsities, and the control masks it has)."""
        option = study.run[KIND]
        template = str(study.resolve(option["parallel"]))
        files = {
            lang: Path(template.replace("{lang}", lang))
            for lang in study.tasks[cell.task].languages
        }
        sentences = {  # a file since removed reads as changed
            lang: file_fingerprint(path)["sha256"] if path.is_file() else None
            for lang, path in files.items()
        }
        return {
            **super().settings(study, cell),
            "parallel": in_out(template, study.out),
            "parallel_sha256": sentences,
            "pooling": option.get("pooling", "mean"),
            "masks": sorted(masks(study, cell.task)),
        }


def masks(study: Study, task: str) -> dict[str, Path]:
    """Every language's ticket level at each target sparsity (``en/seed1/s50``), with the
    random and one-shot masks of that sparsity (``random/seed1/s50``, ``oneshot/s50``: one
    each, trained on the first language) where the study has them."""
    from polyticket.study.outputs import level_run

    found = {}
    for sparsity in study.sparsities:
        for lang in study.tasks[task].languages:
            for s in study.seeds:
                tag = f"{lang}/seed{s}/{percent(sparsity)}"
                found[tag] = level_run(study, task, lang, s, sparsity).mask
        for label, cell in _control_cells(study, task, sparsity).items():
            found[label] = study.layout.cell(cell.name).mask
    return found
