"""What every task provides to the one training loop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import PreTrainedModel

from polyticket.config import DataArgs, ModelArgs


@dataclass
class TaskData:
    """Tokenised examples and how to batch them."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]
    info: dict[str, Any] = field(default_factory=dict)  # e.g. the label list


class Task(ABC):
    name: str
    metric: str  # the score that selects tickets
    greater_is_better: bool = True

    @abstractmethod
    def prepare(self, data: DataArgs, tokenizer: Any) -> TaskData:
        """Read and tokenise the training and evaluation data."""

    @abstractmethod
    def build_model(self, model: ModelArgs, data: TaskData, seed: int) -> PreTrainedModel:
        """The model with this task's head."""

    @abstractmethod
    def evaluate(
        self, model: PreTrainedModel, loader: DataLoader, accelerator: Accelerator, data: TaskData
    ) -> dict[str, float]:
        """Scores on the evaluation data; must include ``self.metric``."""

    def better(self, score: float, than: float) -> bool:
        return score > than if self.greater_is_better else score < than


def get_task(name: str) -> Task:
    from polyticket.tasks.ner import NerTask

    tasks: dict[str, type[Task]] = {"ner": NerTask}
    if name not in tasks:
        from polyticket.errors import UserError

        raise UserError(f"unknown task {name!r}: use one of {', '.join(tasks)}")
    return tasks[name]()
