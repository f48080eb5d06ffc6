"""Natural language inference (XNLI): sequence classification, or text to text for mT5/T5."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
    PretrainedConfig,
)

from polyticket.config import DataArgs, ModelArgs
from polyticket.errors import UserError
from polyticket.io import text_lines
from polyticket.models import load_classifier, load_model
from polyticket.tasks import TASKS
from polyticket.tasks.base import Task, TaskData, hub_column, loss_sums, value_kind
from polyticket.tasks.labels import XNLI_LABELS

log = logging.getLogger("polyticket")

LABELS = list(XNLI_LABELS)

Pair = tuple[str, str, int]  # premise, hypothesis, label id

_COLUMNS = {
    "premise": ("premise", "sentence1"),
    "hypothesis": ("hypothesis", "sentence2"),
    "label": ("label", "gold_label"),
}


def _label(value: Any, where: str) -> int:
    if type(value) is int or (isinstance(value, str) and value.strip().isdigit()):
        index = int(value)
        if 0 <= index < len(LABELS):
            return index
    elif isinstance(value, str) and value.strip().lower() in LABELS:
        return LABELS.index(value.strip().lower())
    raise UserError(f"{where}: label {value!r} is none of {', '.join(LABELS)} (or 0-2)")


def _field(record: dict[str, Any], column: str, where: str) -> Any:
    for name in _COLUMNS[column]:
        if name in record and record[name] is not None:
            return record[name]
    raise UserError(f"{where}: no {column} (expected one of {', '.join(_COLUMNS[column])})")


def _text(record: dict[str, Any], column: str, where: str) -> str:
    value = _field(record, column, where)
    if not isinstance(value, str):
        raise UserError(f"{where}: the {column} must be a string, got {value!r}")
    return value


def _records(path: Path) -> list[tuple[int, Any]]:
    """(line number, record) of JSON lines, or of a TSV file with a header."""
    lines = text_lines(path)
    if path.suffix.lower() == ".jsonl":
        rows = []
        for lineno, line in lines:
            if line.strip():
                try:
                    rows.append((lineno, json.loads(line)))
                except (json.JSONDecodeError, RecursionError) as exc:
                    raise UserError(f"{path}:{lineno}: not JSON ({exc})") from None
        return rows
    text = (line for _, line in lines)
    reader = csv.DictReader(text, delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        return [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.line_num}: not TSV ({exc})") from None


def read_pairs(path: Path, language: str | None = None) -> list[Pair]:
    """TSV with a header (premise, hypothesis, label; XNLI's sentence1/2, gold_label too) or
    JSON lines with the same fields; labels as words or XNLI ids. A file with a ``language``
    column (XNLI's dev and test TSVs hold all fifteen) gives the rows of ``language``."""
    pairs = []
    records = _records(path)
    rows = [r for _, r in records if isinstance(r, dict)]
    by_language = language is not None and any("language" in r for r in rows)
    if by_language:
        given = sorted({str(r["language"]) for r in rows if r.get("language")})
        if language not in given:
            raise UserError(
                f"{path}: no rows of language {language} (its language column has "
                f"{', '.join(given) or 'no values'})"
            )
    for lineno, record in records:
        where = f"{path}:{lineno}"
        if not isinstance(record, dict) or None in record:
            raise UserError(f"{where}: expected premise, hypothesis and label fields")
        if by_language:
            if not record.get("language"):
                raise UserError(f"{where}: no language, in a file with a language column")
            if record["language"] != language:
                continue
        pairs.append(
            (
                _text(record, "premise", where),
                _text(record, "hypothesis", where),
                _label(_field(record, "label", where), where),
            )
        )
    return pairs


@TASKS.register("nli")
class NliTask(Task):
    """Encoder with a 3-way classification head; text to text on encoder-decoders."""

    metric = "accuracy"

    @classmethod
    def for_model(cls, config: PretrainedConfig) -> Task:
        return NliTextTask() if config.is_encoder_decoder else cls()

    def read_file(self, path: Path, data: DataArgs, language: str) -> list[Pair]:
        return read_pairs(path, language)

    def from_hub(self, dataset: Any, data: DataArgs) -> list[Pair]:
        """The columns and labels local files take (``premise``/``sentence1``, …; label ids
        or words); XNLI's label ids, and SNLI/MNLI-style data with the same names in the
        same order, whose -1 (a pair without a gold label) is left out and counted."""
        columns = [hub_column(dataset, data, _COLUMNS[c]) for c in ("premise", "hypothesis")]
        for column in columns:
            if value_kind(dataset.features[column]) != "string":
                raise UserError(
                    f"{data.dataset}: its {column} column holds {dataset.features[column]}, "
                    "not strings"
                )
        label = hub_column(dataset, data, _COLUMNS["label"])
        names = getattr(dataset.features[label], "names", None)
        if names is not None and [str(n).lower() for n in names] != LABELS:
            raise UserError(f"{data.dataset}: its labels are {names}, not XNLI's {LABELS}")
        source = f"{data.dataset} ({dataset.info.config_name}, {dataset.split})"
        pairs, unlabelled = [], 0
        for row, ex in enumerate(dataset.select_columns([*columns, label])):
            if type(ex[label]) is int and ex[label] == -1:
                unlabelled += 1
                continue
            where = f"{source} row {row}"
            pairs.append(
                (
                    _text(ex, "premise", where),
                    _text(ex, "hypothesis", where),
                    _label(ex[label], where),
                )
            )
        if unlabelled:
            log.warning("%s: %d pairs without a gold label (-1) left out", data.dataset, unlabelled)
        return pairs

    def featurize(self, train, dev, data: DataArgs, tokenizer: Any, seed: int) -> TaskData:
        def features(pairs: Sequence[Pair]) -> list[dict[str, Any]]:
            encoded = tokenizer(
                [p for p, _, _ in pairs],
                [h for _, h, _ in pairs],
                truncation=True,
                max_length=data.max_seq_length,
            )
            return [
                {k: v[i] for k, v in encoded.items()} | {"labels": label}
                for i, (_, _, label) in enumerate(pairs)
            ]

        return TaskData(
            train=features(train),
            eval=features(dev),
            collator=DataCollatorWithPadding(tokenizer),
            info={"labels": LABELS},
        )

    def build_model(self, model: ModelArgs, data: TaskData, seed: int):
        return load_classifier(AutoModelForSequenceClassification, model, seed, LABELS)

    @torch.no_grad()
    def evaluate(self, model, loader: DataLoader, accelerator: Accelerator, data: TaskData):
        correct = total = 0
        sums = torch.zeros(2, dtype=torch.float64)
        for batch in loader:
            out = model(**batch)
            sums += (
                accelerator.gather_for_metrics(loss_sums(out.logits, batch["labels"])).sum(0).cpu()
            )
            preds, refs = accelerator.gather_for_metrics((out.logits.argmax(-1), batch["labels"]))
            correct += int((preds == refs).sum())
            total += refs.numel()
        return {"accuracy": correct / total, "loss": (sums[0] / sums[1].clamp(min=1)).item()}


class NliTextTask(NliTask):
    """mT5/T5: "xnli premise: P hypothesis: H" -> the label word, greedy decoding, exact match.
    NLI's data and name, its own features, model and evaluation."""

    uses_decoder = True

    def featurize(self, train, dev, data: DataArgs, tokenizer: Any, seed: int) -> TaskData:
        def features(pairs: Sequence[Pair]) -> list[dict[str, Any]]:
            # "xnli premise: P hypothesis: H", cut from the premise's end: one string cut
            # from the right would lose the hypothesis behind a long premise. (The encoder
            # form cuts the longer of the two.) Only a hypothesis longer than everything is
            # itself cut, at its end.
            length = data.max_seq_length
            premises = tokenizer(
                [f"xnli premise: {p}" for p, _, _ in pairs], add_special_tokens=False
            )["input_ids"]
            hypotheses = tokenizer(  # with the closing </s>, kept by truncation
                [f" hypothesis: {h}" for _, h, _ in pairs], truncation=True, max_length=length
            )["input_ids"]
            targets = tokenizer(text_target=[LABELS[label] for _, _, label in pairs])
            out = []
            for premise, hypothesis, target in zip(
                premises, hypotheses, targets["input_ids"], strict=True
            ):
                ids = premise[: max(0, length - len(hypothesis))] + hypothesis
                out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": target})
            return out

        return TaskData(
            train=features(train),
            eval=features(dev),
            collator=DataCollatorForSeq2Seq(tokenizer),
            tokenizer=tokenizer,
            info={
                "labels": LABELS,
                "max_target_length": data.max_target_length
                or max(len(ids) for ids in tokenizer(text_target=LABELS)["input_ids"]),
            },
        )

    def build_model(self, model: ModelArgs, data: TaskData, seed: int):
        return load_model(AutoModelForSeq2SeqLM, model, seed)

    @torch.no_grad()
    def evaluate(self, model, loader: DataLoader, accelerator: Accelerator, data: TaskData):
        tokenizer = data.tokenizer
        generator = accelerator.unwrap_model(model)
        correct = total = 0
        sums = torch.zeros(2, dtype=torch.float64)
        for batch in loader:
            logits = model(**batch).logits
            sums += accelerator.gather_for_metrics(loss_sums(logits, batch["labels"])).sum(0).cpu()
            generated = generator.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                max_new_tokens=data.info["max_target_length"],
                do_sample=False,
                num_beams=1,
            )
            pad = tokenizer.pad_token_id
            generated = accelerator.pad_across_processes(generated, dim=1, pad_index=pad)
            refs = accelerator.pad_across_processes(batch["labels"], dim=1, pad_index=-100)
            generated, refs = accelerator.gather_for_metrics((generated, refs))
            answers = tokenizer.batch_decode(generated, skip_special_tokens=True)
            gold = tokenizer.batch_decode(
                refs.masked_fill(refs == -100, pad), skip_special_tokens=True
            )
            # An answer that is no label word counts as wrong.
            correct += sum(
                a.strip() == g.strip() and a.strip() in LABELS
                for a, g in zip(answers, gold, strict=True)
            )
            total += len(gold)
        return {"accuracy": correct / total, "loss": (sums[0] / sums[1].clamp(min=1)).item()}
