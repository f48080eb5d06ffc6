"""Cross-task transfers (``run.cross_task``): a ticket of one task entry trained on another
task of the same model, in each language both have."""

from __future__ import annotations

from polyticket.study.grid import Cell
from polyticket.study.kinds import CELL_KINDS
from polyticket.study.kinds.base import LevelKind
from polyticket.study.spec import Study

KIND = "cross-task"


@CELL_KINDS.register(KIND)
class CrossTask(LevelKind):
    name = KIND
    options = {"cross_task": False}

    @staticmethod
    def whose(task: str, language: str, source: str) -> tuple[str, str]:
        return source, language  # the source task's ticket of the same language

    def expand(self, study: Study) -> list[Cell]:
        if not self.enabled(study):
            return []
        return [
            self.cell(task, lang, seed, source_task, sparsity)
            for source_task, source in study.tasks.items()
            for task, spec in study.tasks.items()
            if task != source_task and source.model == spec.model
            for lang in spec.languages
            if lang in source.languages
            for seed in study.seeds
            for sparsity in study.sparsities
        ]
