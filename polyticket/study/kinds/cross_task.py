"""Cross-task transfers (``run.cross_task``): a ticket of one task entry trained on another
task of the same model, in each language both have."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from polyticket.errors import UserError
from polyticket.study.grid import Cell
from polyticket.study.kinds import CELL_KINDS
from polyticket.study.kinds.base import LevelKind
from polyticket.study.spec import Study
from polyticket.tasks.base import get_task

KIND = "cross-task"

log = logging.getLogger("polyticket")


@CELL_KINDS.register(KIND)
class CrossTask(LevelKind):
    options = {"cross_task": False}

    @staticmethod
    def whose(task: str, language: str, source: str) -> tuple[str, str]:
        return source, language  # the source task's ticket of the same language

    def validate(self, study: Study) -> None:
        """Two tasks of one model trade tickets only when both prune the same weights
        (``_check_same_weights``)."""
        super().validate(study)
        if not self.enabled(study):
            return
        alone = [  # a ticket trains only tasks of its own model, in its own language
            f"{key} ({spec.model}; {', '.join(spec.languages)})"
            for key, spec in study.tasks.items()
            if not any(_pair(spec, other) for other in study.tasks.values() if other is not spec)
        ]
        if len(alone) == len(study.tasks):
            raise UserError(
                f"{study.path}: run.cross_task needs two tasks on one model with a language "
                f"in common; here no two have: {', '.join(alone)}"
            )
        if alone:
            log.warning(
                "%s: run.cross_task: no other task shares the model and a language of %s, so "
                "it has no cross-task cells", study.path, ", ".join(alone),
            )  # fmt: skip
        local = {spec.model: _local_model(spec.model) for spec in study.tasks.values()}
        prunable: dict[str, frozenset[str] | None] = {}
        for (first, a), (second, b) in itertools.combinations(study.tasks.items(), 2):
            if not _pair(a, b) or local[a.model] is None:
                continue  # no cells between them, or no model here (the cells will say)
            _check_same_weights(study, *local[a.model], first, second, prunable)

    def expand(self, study: Study) -> list[Cell]:
        if not self.enabled(study):
            return []
        return [
            self.cell(task, lang, seed, source_task, sparsity)
            for source_task, source in study.tasks.items()
            for task, spec in study.tasks.items()
            if task != source_task and _pair(source, spec)
            for lang in spec.languages
            if lang in source.languages
            for seed in study.seeds
            for sparsity in study.sparsities
        ]


def _pair(source, target) -> bool:
    """Whether a ticket of ``source`` (a task's spec) can be trained on ``target``."""
    return source.model == target.model and bool(set(source.languages) & set(target.languages))


def _check_same_weights(
    study: Study, directory: str, config, first: str, second: str, prunable: dict
) -> None:
    """A ticket of one task trained on the other masks the same weights only when both
    tasks prune the same ones: a mask covering a weight the other task's model lacks fails
    that cell after both tickets were made (BERT's pooler, in sequence classification
    models only), and one leaving out a weight the other prunes trains it dense, unseen in
    ``cross_task.csv``. Each task's set is ``find``'s: its own head's model and its own
    ``prune_pooler``, ``prune_include`` and ``prune_exclude``."""
    a, b = study.tasks[first], study.tasks[second]
    if config.is_encoder_decoder:  # the plainer words for the commonest case
        parts = {
            key: "encoder and decoder" if get_task(spec.task, config).uses_decoder else "encoder"
            for key, spec in ((first, a), (second, b))
        }
        if parts[first] != parts[second]:
            raise UserError(
                f"{study.path}: run.cross_task: on {a.model}, {first} prunes the "
                f"{parts[first]} and {second} the {parts[second]}, so a ticket of one does "
                "not fit the other; list these tasks in separate studies"
            )
    for key in (first, second):
        if key not in prunable:
            prunable[key] = _prunable_names(study, key, directory, config)
    if prunable[first] is None or prunable[second] is None or prunable[first] == prunable[second]:
        return
    differences = [
        f"{one} prunes {len(only)} weight matri{'x' if len(only) == 1 else 'ces'} that "
        f"{other} does not ({only[0]}{', …' if len(only) > 1 else ''})"
        for one, other in ((first, second), (second, first))
        if (only := sorted(prunable[one] - prunable[other]))
    ]
    raise UserError(
        f"{study.path}: run.cross_task: on {a.model}, {' and '.join(differences)}, so a "
        f"ticket of one does not fit the other; give tasks.{first} and tasks.{second} the "
        "same prune_include and prune_exclude, and prune_pooler off where one task's model "
        "has no pooler (BERT's sequence classification has one, its token classification "
        "none), or list these tasks in separate studies"
    )


def _prunable_names(study: Study, key: str, directory: str, config) -> frozenset[str] | None:
    """The base-model names of the weights a task's cells prune: the task's model built as
    the task builds it (its head decides what is there) on the meta device, so no weight is
    read or allocated, ranked as ``find`` ranks it. None when the task cannot build this
    model (its own cells fail, and say why)."""
    import torch

    from polyticket.models.families import PruneScope, find_prunable
    from polyticket.tasks.base import TaskData

    spec = study.tasks[key]
    args = replace(spec.config.model, model=directory, init="random")
    # the head's size does not change which weights are prunable: one label will do
    data = TaskData(train=[], eval=[], collator=None, info={"labels": ["O"]})
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"), _quiet(families_log):
            model = get_task(spec.task, config).build_model(args, data, 0)
    except ValueError:  # a head this model does not have (masked LM on mT5)
        return None
    try:
        with _quiet(families_log):  # what stays dense is said by the cells, once
            return frozenset(find_prunable(model, PruneScope.of(spec.config.model)).params)
    except UserError as exc:
        raise UserError(f"{study.path}: tasks.{key}: {exc}") from None


families_log = logging.getLogger("polyticket.models.families")


@contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _local_model(model: str) -> tuple[str, Any] | None:
    """The model's directory and config when it is on this machine (a directory, or the
    hub's cache: the directory then stands for the name, so that nothing asks the hub);
    None otherwise (the check is then left to the cells). Not ``models.resolve``: that
    would prepare the offline model (an encoder) and fail without the hub."""
    from transformers import AutoConfig
    from transformers.utils import cached_file

    try:
        if Path(model).expanduser().is_dir():
            directory = str(Path(model).expanduser())
        else:
            found = cached_file(model, "config.json", local_files_only=True)
            if not found:
                return None
            directory = str(Path(found).parent)
        return directory, AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError):
        return None
