"""Masked language modelling: documents -> blocks -> 15% of tokens predicted; perplexity.

Fixes of the original code: every block of every document is kept (it kept the first and
the last), attention masks are passed, evaluation masks once with a fixed seed (so the same
model always gets the same perplexity, whatever the run's seed), and a validation split
taken from one file splits documents before chunking (so no text is in both splits).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import (
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    DataCollatorForTokenClassification,
)

from polyticket.config import DataArgs, ModelArgs
from polyticket.errors import UserError
from polyticket.io import numbered_lines, read_text
from polyticket.models import load_model
from polyticket.tasks import TASKS
from polyticket.tasks.base import (
    EVAL_SEED,
    HubColumn,
    Split,
    Task,
    TaskData,
    hub_column,
    loss_sums,
    take,
    value_kind,
)

log = logging.getLogger("polyticket")


def read_documents(path: Path, text_column: str = "text") -> list[str]:
    """WikiExtractor JSON lines (``{"text": ...}``), or plain text: one document per line,
    or documents separated by blank lines when the file has any."""
    text = read_text(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        documents = []
        for lineno, line in numbered_lines(text):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                document = json.loads(line)[text_column]
            except (json.JSONDecodeError, KeyError, TypeError, IndexError, RecursionError):
                raise UserError(
                    f"{where}: expected a JSON object with a {text_column!r} field"
                ) from None
            if not isinstance(document, str):
                raise UserError(f"{where}: {text_column!r} must be a string")
            documents.append(document)
    elif "\n\n" in text.strip():
        documents = [" ".join(block.split("\n")) for block in text.split("\n\n")]
    else:
        documents = text.splitlines()
    return [d.strip() for d in documents if d.strip()]


def split_documents(
    documents: Sequence[str], ratio: float, seed: int
) -> tuple[Sequence[str], Sequence[str]]:
    """(train, validation) by whole documents, drawn with the seed, each in the documents'
    order; of a hub column, views still unread."""
    if not 0 < ratio < 1:
        raise UserError(f"--validation-ratio must be between 0 and 1, got {ratio}")
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    cut = max(1, round(len(order) * ratio))
    held = set(order[:cut])
    return (
        take(documents, [i for i in range(len(documents)) if i not in held]),
        take(documents, sorted(held)),
    )


def special_template(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single text (``[CLS]``/``[SEP]``,
    ``<s>``/``</s>``, T5's ``</s>``), read off one encoding: fast tokenizers keep the template
    in their post-processor, not in a method."""
    inner = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    start = next(i for i in range(len(full)) if full[i : i + len(inner)] == inner)
    return full[:start], full[start + len(inner) :]


def blocks(documents: Sequence[str], tokenizer: Any, block_size: int) -> list[dict[str, Any]]:
    """Each document cut into blocks of at most ``block_size`` tokens (special tokens
    included); the last block of a document is shorter, nothing is dropped."""
    before, after = special_template(tokenizer)
    room = block_size - len(before) - len(after)
    if room < 1:
        raise UserError(f"--block-size {block_size} leaves no room for text")
    out = []
    # a hub dataset's documents come unread, blank ones too (drawn before they were read)
    texts = [d for d in documents if d and d.strip()]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    for doc in ids:
        for start in range(0, len(doc), room):
            chunk = doc[start : start + room]
            out.append(
                {
                    "input_ids": before + chunk + after,
                    "attention_mask": [1] * (len(before) + len(chunk) + len(after)),
                    "special_tokens_mask": [1] * len(before) + [0] * len(chunk) + [1] * len(after),
                }
            )
    return out


@TASKS.register("mlm")
class MlmTask(Task):
    metric = "perplexity"
    greater_is_better = False
    data_hint = "give --train-file and --eval-file (or --validation-ratio), or --dataset"
    length_knob = "block_size"
    reads_validation_ratio = True

    def read(self, data: DataArgs, split: Split, language: str, seed: int) -> list[str]:
        """With ``--validation-ratio`` both splits come from the training source, split by
        whole documents; otherwise each split from its own file or hub split."""
        if data.validation_ratio is None:
            return super().read(data, split, language, seed)
        train, held_out = split_documents(
            super().read(data, "train", language, seed), data.validation_ratio, EVAL_SEED
        )
        return train if split == "train" else held_out

    def read_file(self, path: Path, data: DataArgs, language: str) -> list[str]:
        return read_documents(path, data.text_column)

    def from_hub(self, dataset: Any, data: DataArgs) -> HubColumn:
        """The text column, unread: the documents are drawn first, then only theirs read
        (``equal_shares``); a document without text gives no block."""
        hint = ": name the column of the text with --text-column"
        column = hub_column(dataset, data, [data.text_column], hint)
        if value_kind(dataset.features[column]) != "string":
            raise UserError(
                f"{data.dataset}: its {column} column holds {dataset.features[column]}, not "
                "text: name the column of the text with --text-column"
            )
        return HubColumn(dataset, column)

    def featurize(self, train, dev, data: DataArgs, tokenizer: Any, seed: int) -> TaskData:
        if tokenizer.mask_token is None:
            raise UserError("MLM needs a tokenizer with a mask token")
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=data.mlm_probability)
        # Evaluation masks once, with its own generator: the same model always gets the same
        # perplexity (the original re-masked at random on every evaluation), in every seed's
        # run (the study's seed spread is then the training's alone).
        fixed = DataCollatorForLanguageModeling(
            tokenizer, mlm_probability=data.mlm_probability, seed=EVAL_SEED
        )
        blank = sum(not (d and d.strip()) for d in [*train, *dev])
        if blank:
            log.warning("%d of the documents drawn are blank and give no block", blank)
        eval_blocks = blocks(dev, tokenizer, data.block_size)
        train_blocks = blocks(train, tokenizer, data.block_size)
        for split, made in (("training", train_blocks), ("evaluation", eval_blocks)):
            if not made:  # hub documents drawn blank, every one
                raise UserError(f"the {split} documents drawn hold no text")
        masked = []
        for start in range(0, len(eval_blocks), 64):
            chunk = eval_blocks[start : start + 64]
            batch = fixed([dict(b) for b in chunk])
            for i, block in enumerate(chunk):
                n = len(block["input_ids"])
                masked.append(
                    {
                        "input_ids": batch["input_ids"][i, :n].tolist(),
                        "attention_mask": block["attention_mask"],
                        "labels": batch["labels"][i, :n].tolist(),
                    }
                )
        return TaskData(
            train=train_blocks,
            eval=masked,
            collator=collator,
            eval_collator=DataCollatorForTokenClassification(tokenizer),
            tokenizer=tokenizer,
        )

    def build_model(self, model: ModelArgs, data: TaskData, seed: int):
        return load_model(AutoModelForMaskedLM, model, seed)

    @torch.no_grad()
    def evaluate(self, model, loader: DataLoader, accelerator: Accelerator, data: TaskData):
        sums = torch.zeros(3, dtype=torch.float64)  # summed loss, tokens predicted, correct
        for batch in loader:
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            labels = batch["labels"]
            right = ((logits.argmax(-1) == labels) & (labels != -100)).sum(1).float()
            rows = torch.cat([loss_sums(logits, labels), right[:, None]], dim=1)
            sums += accelerator.gather_for_metrics(rows).sum(0).cpu()
        loss_sum, predicted, correct = sums.tolist()
        mean = loss_sum / max(predicted, 1)
        return {"perplexity": math.exp(mean), "loss": mean, "accuracy": correct / max(predicted, 1)}
