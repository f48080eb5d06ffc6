"""Cross-task transfers (``run.cross_task``): a ticket of one task entry trained on another
task of the same model, in each language both have."""

from __future__ import annotations

import logging

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
        """On an encoder-decoder model, NER (the encoder) and text-to-text NLI (encoder and
        decoder) prune different weights: a ticket of one cannot be trained on the other."""
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
        configs = {spec.model: _local_config(spec.model) for spec in study.tasks.values()}

        def pruned(task: str, config) -> str:
            return "encoder and decoder" if get_task(task, config).uses_decoder else "encoder"

        for source_task, source in study.tasks.items():
            for task, spec in study.tasks.items():
                config = configs[spec.model]
                if task == source_task or source.model != spec.model:
                    continue
                if config is None or not config.is_encoder_decoder:
                    continue
                theirs, ours = pruned(source.task, config), pruned(spec.task, config)
                if theirs != ours:
                    raise UserError(
                        f"{study.path}: run.cross_task: on {spec.model}, {source_task} prunes "
                        f"the {theirs} and {task} the {ours}, so a ticket of one does not fit "
                        "the other; list these tasks in separate studies"
                    )

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


def _local_config(model: str):
    """The model's config when it is on this machine (a directory, or the hub's cache);
    None otherwise (the check is then left to the cells). Not ``models.load_config``: that
    would prepare the offline model (an encoder) and fail without the hub."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model, local_files_only=True)
    except (OSError, ValueError):
        return None
