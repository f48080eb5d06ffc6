"""What every task provides to the one training loop, and what all tasks share.

A task reads raw examples of one language and split; the base class samples equal shares of
every language (the paper trains each language on the same number of examples), then the
task turns them into features and says how to batch, model and score them.
"""

from __future__ import annotations

import json
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import PretrainedConfig, PreTrainedModel

from polyticket.config import DataArgs, ModelArgs, check_sample_limits, language_codes
from polyticket.errors import UserError
from polyticket.io import file_fingerprint

Split = Literal["train", "eval"]
Collator = Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]

log = logging.getLogger("polyticket")


@dataclass
class TaskData:
    """Tokenised examples and how to batch them."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    collator: Collator
    eval_collator: Collator | None = None  # when evaluation batches differ (fixed MLM masking)
    tokenizer: Any = None
    info: dict[str, Any] = field(default_factory=dict)  # e.g. the label list
    inputs: list[dict[str, Any]] = field(default_factory=list)  # what was read: fingerprints


def languages(data: DataArgs) -> list[str]:
    return language_codes(data.language)


def data_file(data: DataArgs, split: Split, language: str) -> Path | None:
    """The local file of a split; ``{lang}`` in its name stands for each language."""
    template = data.train_file if split == "train" else data.eval_file
    if template is None:
        return None
    text = str(template)
    if "{lang}" in text:
        return Path(text.replace("{lang}", language))
    if len(languages(data)) > 1:
        raise UserError(f"with several languages, put {{lang}} in the file name: {text}")
    return Path(text)


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    return path


def hub_config(data: DataArgs, language: str) -> str:
    """The hub dataset's configuration of a language; ``{lang}`` in it stands for each."""
    if "{lang}" not in data.dataset_config and len(languages(data)) > 1:
        # else every language would read the same configuration, silently
        raise UserError(
            f"with several languages, put {{lang}} in --dataset-config: {data.dataset_config}"
        )
    return data.dataset_config.replace("{lang}", language)


def load_hub_split(data: DataArgs, language: str, split: Split) -> Any:
    """One split of a hub dataset whose configuration is the language."""
    import datasets

    name = data.train_split if split == "train" else data.eval_split
    config = hub_config(data, language)
    try:
        return datasets.load_dataset(
            data.dataset, config, split=name, revision=data.dataset_revision
        )
    except Exception as exc:  # datasets raises many types for "not found" and "offline"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot load {data.dataset} ({language}, {name}) from the hub: {first}"
        ) from None


def hub_column(dataset: Any, data: DataArgs, names: Sequence[str], hint: str = "") -> str:
    """The first of ``names`` that a hub dataset has as a column; refused, naming the
    columns it has (a dataset of another task, a misspelt --text-column), rather than
    failing on the first row."""
    for name in names:
        if name in dataset.column_names:
            return name
    wanted = " or ".join(repr(name) for name in names)
    raise UserError(
        f"{data.dataset}: no {wanted} column, which --task {data.task} reads; its columns are "
        f"{', '.join(dataset.column_names)}{hint or ': is it a dataset of another task?'}"
    )


def value_kind(feature: Any) -> str | None:
    """``string``, ``int`` or ``classlabel``: what a hub column's values are (None: other)."""
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return "classlabel"
    if isinstance(feature, datasets.Value):
        if feature.dtype in ("string", "large_string"):
            return "string"
        if feature.dtype.startswith(("int", "uint")):
            return "int"
    return None


def list_item(feature: Any) -> Any:
    """The feature of a list column's items (None if the column holds no lists)."""
    import datasets

    return feature.feature if isinstance(feature, (datasets.List, datasets.LargeList)) else None


class HubColumn(Sequence[Any]):
    """One column of a hub dataset, read only at the rows taken (``take``, then ``values``):
    drawing a few thousand documents of Wikipedia must not read its whole text column,
    many GB, into memory. Positions are into ``rows``, a view's rows of the dataset."""

    def __init__(self, dataset: Any, column: str, rows: Sequence[int] | None = None):
        self.dataset, self.column = dataset, column
        self.rows = range(len(dataset)) if rows is None else rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int) -> Any:  # type: ignore[override]
        return self.dataset[self.rows[position]][self.column]

    def take(self, positions: Sequence[int]) -> HubColumn:
        return HubColumn(self.dataset, self.column, [self.rows[p] for p in positions])

    def values(self) -> list[Any]:
        return self.dataset.select(self.rows)[self.column]


def take(examples: Sequence[Any], positions: Sequence[int]) -> Sequence[Any]:
    """The examples at ``positions``, in their order; of a hub column, a view still unread."""
    if isinstance(examples, HubColumn):
        return examples.take(positions)
    return [examples[p] for p in positions]


def values(examples: Sequence[Any]) -> list[Any]:
    """The examples themselves: a hub column's read now, in one pass over its rows."""
    return examples.values() if isinstance(examples, HubColumn) else list(examples)


# The draw of the evaluation data (a --max-eval-samples share, MLM's held-out documents and
# masked tokens): one for every run, so that runs of every seed are scored on the same
# examples and their spread is the training's alone (the original took the first ones).
EVAL_SEED = 0


# How each language's examples are drawn, recorded with a run's inputs whenever a draw left
# some out. polyticket 0.4.7 and before drew the i-th language with Random(seed + i): seed
# s's language i+1 was seed s+1's language i (XNLI's languages are translations in the same
# order: the same pairs), and a language's draw hung on its place in --language. A find run
# started with that draw is not continued with this one (``lottery._check_same_inputs``).
DRAW = {"draw": "random.Random(f'{seed}:{language}').sample"}


def equal_shares(
    per_language: dict[str, Sequence[Any]], limit: int | None, seed: int, split: Split = "train"
) -> list[Any]:
    """The same number of examples from every language, each language's drawn from a stream
    of its own, keyed by the seed and its code (a string seed is hashed with SHA-512, the
    same in every process, whatever PYTHONHASHSEED).

    With a limit, each language gives ``limit // |languages|`` (the remainder is left out,
    and said), or, where a language has fewer, as many as it has; without, several
    languages give as many as the smallest has, and a single language gives everything.
    """
    sizes = {lang: len(examples) for lang, examples in per_language.items()}
    smallest = min(sizes, key=sizes.__getitem__)
    knob = f"--max-{split}-samples"
    kind = "training" if split == "train" else "evaluation"
    share: int | None = None
    if limit is not None:  # at least one per language (``check_sample_limits``)
        share = limit // len(sizes)
        if share * len(sizes) < limit:
            log.warning(
                "%s %d over %d languages: %d each, %d in all (equal shares: the remaining %d "
                "are not drawn)", knob, limit, len(sizes), share, share * len(sizes),
                limit - share * len(sizes),
            )  # fmt: skip
    wanted = share if share is not None else max(sizes.values())
    if len(sizes) > 1 and sizes[smallest] < wanted:
        log.warning(
            "%s has only %d %s examples%s: every language gives %d, to keep the shares equal",
            smallest, sizes[smallest], kind,
            f", fewer than the {share} each of {knob} {limit}" if share else "", sizes[smallest],
        )  # fmt: skip
        share = sizes[smallest]
    out: list[Any] = []
    for lang, examples in per_language.items():
        if share is not None and share < len(examples):
            # positions drawn, the examples read after: the same ones as sampling the list
            # (``sample`` picks positions by the length alone), and a hub column reads only
            # the rows drawn
            drawn = random.Random(f"{seed}:{lang}").sample(range(len(examples)), share)
            examples = take(examples, drawn)
        out.extend(values(examples))
    return out


class Task(ABC):
    name: str  # set by ``TASKS.register``
    metric: str  # the score that selects tickets
    greater_is_better: bool = True
    # On an encoder-decoder model, whether the task's model has the decoder (and so prunes
    # it): a mask of one task fits another only when both say the same.
    uses_decoder: bool = False
    # The DataArgs knob that bounds an input's length in tokens (checked against the model's
    # positions), and whether the task reads ``validation_ratio`` (documents of the training
    # file held out when there is no evaluation file).
    length_knob: str = "max_seq_length"
    reads_validation_ratio: bool = False

    def prepare(self, data: DataArgs, tokenizer: Any, seed: int) -> TaskData:
        """Read every language's data, take equal shares, tokenise."""
        codes = languages(data)
        if not codes:
            raise UserError("give at least one --language")
        check_sample_limits(data, "data")  # before any data is read
        self.inputs: list[dict[str, Any]] = []
        self.sources: list[tuple[str, list[Any]]] = []
        samples: dict[Split, list[Any]] = {}
        for split, limit in (("train", data.max_train_samples), ("eval", data.max_eval_samples)):
            per_language = {lang: self.read(data, split, lang, seed) for lang in codes}
            for lang, examples in per_language.items():
                if not examples:
                    raise UserError(f"no {split} examples for language {lang}")
            samples[split] = equal_shares(
                per_language, limit, seed if split == "train" else EVAL_SEED, split
            )
            if len(samples[split]) < sum(len(e) for e in per_language.values()):
                self.inputs.append(DRAW)
        prepared = self.featurize(samples["train"], samples["eval"], data, tokenizer, seed)
        unique = {json.dumps(i, sort_keys=True): i for i in self.inputs}
        prepared.inputs = list(unique.values())
        return prepared

    # what to tell a user who gave neither files nor a dataset
    data_hint = "give --train-file and --eval-file, or --dataset"

    def read(self, data: DataArgs, split: Split, language: str, seed: int) -> list[Any]:
        """Raw examples of one split and language: from the hub dataset when one is named,
        else from the split's local file."""
        if data.dataset:
            dataset = load_hub_split(data, language, split)
            config = hub_config(data, language)
            read = {
                "dataset": data.dataset,
                "config": config,
                "split": dataset.split and str(dataset.split),
                "fingerprint": getattr(dataset, "_fingerprint", None),
            }
            # only when given: runs that named none recorded none, and continue as before
            if data.dataset_revision is not None:
                read["revision"] = data.dataset_revision
            self._inputs().append(read)
            return self._record(f"{data.dataset} ({config}, {split})", self.from_hub(dataset, data))
        path = data_file(data, split, language)
        if path is None:
            raise UserError(self.data_hint)
        self._inputs().append(file_fingerprint(require_file(path)))
        return self._record(str(path), self.read_file(path, data, language))

    def _inputs(self) -> list[dict[str, Any]]:
        return self.__dict__.setdefault("inputs", [])

    def _record(self, where: str, examples: list[Any]) -> list[Any]:
        """Keep where examples came from, so that a fault found later (a tag the training
        data lacks) names its file; a source without examples is refused here, by name."""
        if not examples:
            raise UserError(f"{where}: no usable examples")
        self.__dict__.setdefault("sources", []).append((where, examples))
        return examples

    def source_of(self, example_matches: Callable[[Any], bool]) -> str:
        """The first source read that has an example for which ``example_matches`` holds."""
        for where, examples in self.__dict__.get("sources", []):
            if any(example_matches(e) for e in examples):
                return where
        return "data"

    @abstractmethod
    def read_file(self, path: Path, data: DataArgs, language: str) -> list[Any]:
        """Raw examples of a local file, of ``language`` where a file holds several."""

    @abstractmethod
    def from_hub(self, dataset: Any, data: DataArgs) -> list[Any]:
        """Raw examples of one split of a hub dataset."""

    @abstractmethod
    def featurize(
        self, train: Sequence[Any], dev: Sequence[Any], data: DataArgs, tokenizer: Any, seed: int
    ) -> TaskData:
        """Tokenised features and collators."""

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

    @classmethod
    def for_model(cls, config: PretrainedConfig) -> Task:
        """The task as this model does it (NLI is text to text on encoder-decoders)."""
        return cls()


def loss_sums(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per example, the summed cross-entropy of its labelled positions and their number,
    (batch, 2): an evaluation loss is a mean over positions (tokens, or examples
    with one label each), not over batches, where the last, smaller batch would count as
    much as a full one; and per example, so that ``gather_for_metrics`` drops the last
    batch's duplicates across processes. Sum the gathered rows (into float64 on the CPU:
    not every accelerator has float64); the loss is column 0 / column 1."""
    if labels.dim() == 1:  # one label per example (sequence classification)
        logits, labels = logits[:, None], labels[:, None]
    losses = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2).float(), labels, ignore_index=-100, reduction="none"
    )
    chosen = labels != -100
    return torch.stack([(losses * chosen).sum(1), chosen.sum(1).float()], dim=1)


def get_task(name: str, config: PretrainedConfig) -> Task:
    """The registered task ``name``, in the form ``config``'s model needs."""
    from polyticket.tasks import TASKS

    return TASKS[name].for_model(config)
