"""Named-entity recognition: WikiANN from the hub or CoNLL / JSON-lines files; entity F1."""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities
from torch.utils.data import DataLoader
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

from polyticket.config import DataArgs, ModelArgs
from polyticket.errors import UserError
from polyticket.io import text_lines
from polyticket.models import load_classifier
from polyticket.tasks import TASKS
from polyticket.tasks.base import Task, TaskData, hub_column, list_item, loss_sums, value_kind
from polyticket.tasks.labels import WIKIANN_LABELS

log = logging.getLogger("polyticket")

Sentence = tuple[list[str], list[str]]


# IOB2 tags: O, B-TYPE or I-TYPE (what seqeval scores); --labels may allow others.
_TAG = re.compile(r"O|[BI]-\S+")


def _check_tag(tag: str, where: str, allowed: Sequence[str]) -> str:
    if not (_TAG.fullmatch(tag) or tag in allowed):
        raise UserError(f"{where}: tag {tag!r} is not O, B-TYPE or I-TYPE")
    return tag


def read_conll(path: Path, labels: Sequence[str] = ()) -> list[Sentence]:
    """Token and tag per line (tag = last column), blank line between sentences; every
    line has as many columns as the file's first."""
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    columns = None
    for lineno, line in text_lines(path):
        fields = line.split()
        where = f"{path}:{lineno}"
        if not fields:
            if tokens:
                sentences.append((tokens, tags))
            tokens, tags = [], []
            continue
        if fields[0] == "-DOCSTART-":
            continue
        if len(fields) < 2:
            raise UserError(f"{where}: expected a token and a tag, got {line.strip()!r}")
        columns = columns or (len(fields), lineno)
        if len(fields) != columns[0]:
            raise UserError(
                f"{where}: {len(fields)} columns, but line {columns[1]} has {columns[0]}"
            )
        tokens.append(fields[0])
        tags.append(_check_tag(fields[-1], where, labels))
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def read_jsonl(path: Path, labels: Sequence[str]) -> list[Sentence]:
    """``{"tokens": [...], "ner_tags": [...]}`` per line; tags as strings or label ids."""
    sentences: list[Sentence] = []
    for lineno, line in text_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
            tokens, tags = record["tokens"], record["ner_tags"]
        except (json.JSONDecodeError, TypeError, KeyError, RecursionError) as exc:
            raise UserError(
                f"{where}: expected a JSON object with tokens and ner_tags ({exc})"
            ) from None
        if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
            raise UserError(f"{where}: tokens and ner_tags must be lists of the same length")
        if not all(isinstance(t, str) for t in tokens):
            raise UserError(f"{where}: every token must be a string")
        sentences.append((tokens, [_tag(t, where, labels) for t in tags]))
    return sentences


def _tag(value: Any, where: str, labels: Sequence[str]) -> str:
    """A tag of a JSON line: a label id (into ``labels``) or the tag itself."""
    if isinstance(value, str):
        return _check_tag(value, where, labels)
    if type(value) is int:  # not bool, which is an int to Python
        if 0 <= value < len(labels):
            return labels[value]
        raise UserError(f"{where}: tag id {value} out of range of the {len(labels)} labels")
    raise UserError(f"{where}: tag {value!r} is neither a string nor a label id")


def label_list(sentences: Sequence[Sentence], given: Sequence[str]) -> list[str]:
    if given:
        return list(given)
    seen = {tag for _, tags in sentences for tag in tags}
    if seen <= set(WIKIANN_LABELS):
        return list(WIKIANN_LABELS)
    return ["O", *sorted(seen - {"O"})]


def _warn_unscored(
    sentences: Sequence[Sentence], covered: list[int | None], max_length: int
) -> None:
    """Words past ``max_seq_length`` get no label, so their entities are left out of the F1
    (as in Hugging Face's run_ner): a score of 1.0 would not mean every entity was found.
    Said, with how many, so that a user can raise the length. ``covered``: per sentence,
    how many of its first words the truncated encoding reaches (None where it was not cut)."""
    total = cut = sentences_cut = 0
    for (_, tags), reached in zip(sentences, covered, strict=True):
        entities = get_entities(list(tags))  # (type, first word, last word)
        total += len(entities)
        missed = 0 if reached is None else sum(last >= reached for _, _, last in entities)
        cut, sentences_cut = cut + missed, sentences_cut + (missed > 0)
    if cut:
        log.warning(
            "%d of the evaluation data's %d entities (in %d sentences) lie wholly or partly "
            "past max_seq_length %d and are not scored: the F1 counts only what fits; raise "
            "--max-seq-length", cut, total, sentences_cut, max_length,
        )  # fmt: skip


@TASKS.register("ner")
class NerTask(Task):
    metric = "f1"

    def read_file(self, path: Path, data: DataArgs, language: str) -> list[Sentence]:
        if path.suffix.lower() == ".jsonl":
            return read_jsonl(path, list(data.labels) or WIKIANN_LABELS)
        return read_conll(path, data.labels)

    def prepare(self, data: DataArgs, tokenizer: Any, seed: int) -> TaskData:
        self.class_labels: list[str] | None = None  # set by from_hub
        return super().prepare(data, tokenizer, seed)

    def from_hub(self, dataset: Any, data: DataArgs) -> list[Sentence]:
        """Sentences of a hub dataset's ``tokens`` and ``ner_tags``: ClassLabel ids (whose
        names are then the label list, so that the head and its ids are the dataset's
        whatever the seed draws), or, as in JSON lines, ids of --labels (default WikiANN's)
        or the tags themselves. A sentence with a negative id (ClassLabel's "no label") is
        left out and counted, as NLI leaves out its unlabelled pairs: a word without a tag
        would cut the entity around it in two for training and for seqeval alike."""
        tokens, tags = (hub_column(dataset, data, [c]) for c in ("tokens", "ner_tags"))
        if value_kind(list_item(dataset.features[tokens])) != "string":
            raise UserError(
                f"{data.dataset}: its tokens column holds {dataset.features[tokens]}, "
                "not lists of strings"
            )
        item = list_item(dataset.features[tags])
        kind = value_kind(item)
        if kind is None:
            raise UserError(
                f"{data.dataset}: its ner_tags column holds {dataset.features[tags]}, not "
                "lists of tags, tag ids or ClassLabel ids"
            )
        names = list(data.labels) or list(WIKIANN_LABELS)  # what plain ids stand for
        if kind == "classlabel":
            names = list(item.names)
            if self.__dict__.get("class_labels") not in (None, names):
                raise UserError(
                    f"{data.dataset}: its splits or languages have other label lists: "
                    f"{self.class_labels} and {names}"
                )
            self.class_labels = names
        sentences: list[Sentence] = []
        unlabelled = 0
        source = f"{data.dataset} ({dataset.info.config_name}, {dataset.split})"
        for row, example in enumerate(dataset.select_columns([tokens, tags])):
            where = f"{source} row {row}"
            words, ids = example[tokens], example[tags]
            if words is None or ids is None or len(words) != len(ids):
                raise UserError(f"{where}: tokens and ner_tags must be lists of the same length")
            if any(type(t) is int and t < 0 for t in ids):
                unlabelled += 1
                continue
            sentences.append((words, [_tag(t, where, names) for t in ids]))
        if unlabelled:
            log.warning(
                "%s: %d sentences with a tag without a label (a negative id) left out",
                data.dataset, unlabelled,
            )  # fmt: skip
        return sentences

    def featurize(self, train, dev, data: DataArgs, tokenizer: Any, seed: int) -> TaskData:
        labels = label_list(train, data.labels or self.__dict__.get("class_labels") or ())
        for sentences in (train, dev):
            unknown = sorted({t for _, tags in sentences for t in tags} - set(labels))
            if unknown:
                tag = unknown[0]
                where = self.source_of(lambda sentence, tag=tag: tag in sentence[1])
                names = " ".join(labels)
                if data.labels:
                    raise UserError(f"{where}: tag {tag!r} is not one of --labels {names}")
                raise UserError(
                    f"{where}: tag {tag!r} is not among the labels inferred from the training "
                    f"data ({names}): give the whole list with --labels"
                )
        label_ids = {label: i for i, label in enumerate(labels)}
        covered: list[int | None] = []
        evaluated = self._features(dev, tokenizer, label_ids, data.max_seq_length, covered)
        _warn_unscored(dev, covered, data.max_seq_length)
        return TaskData(
            train=self._features(train, tokenizer, label_ids, data.max_seq_length),
            eval=evaluated,
            collator=DataCollatorForTokenClassification(tokenizer),
            info={"labels": labels},
        )

    @staticmethod
    def _features(
        sentences: Sequence[Sentence],
        tokenizer: Any,
        label_ids: dict[str, int],
        max_length: int,
        covered: list[int | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Tokenised sentences with their tags on one piece per word; ``covered`` (if given:
        the evaluation data) gets, per truncated sentence, how many of its first words fit,
        else None, and the words of an entity that the cut runs through lose their tags
        (scored, its start would count as a whole entity)."""
        features = []
        batch = 1000

        @functools.cache
        def blank(piece: int) -> bool:
            return not tokenizer.decode([piece]).strip()

        for start in range(0, len(sentences), batch):
            chunk = sentences[start : start + batch]
            encoded = tokenizer(
                [s for s, _ in chunk],
                is_split_into_words=True,
                truncation=True,
                max_length=max_length,
            )
            for i, (_, tags) in enumerate(chunk):
                # One piece per word carries its tag, the rest are ignored (-100): the first
                # piece that shows some of the word. (Sentencepiece splits a Chinese character
                # into a bare "▁" and the character; the tag belongs on the character.)
                pieces = encoded["input_ids"][i]
                carrier: dict[int, int] = {}  # word -> position of the piece with its tag
                for position, word in enumerate(encoded.word_ids(i)):
                    if word is not None and (word not in carrier or blank(pieces[carrier[word]])):
                        carrier[word] = position
                labels = [-100] * len(pieces)
                for word, position in carrier.items():
                    labels[position] = label_ids[tags[word]]
                if covered is not None:
                    words = [w for w in encoded.word_ids(i) if w is not None]
                    reached = words[-1] + 1 if words else 0
                    cut = len(pieces) == max_length and reached < len(tags)
                    covered.append(reached if cut else None)
                    if cut:  # an entity the cut runs through is not scored, its start neither
                        for _, first, last in get_entities(list(tags)):
                            for word in range(first, reached) if first < reached <= last else ():
                                labels[carrier[word]] = -100
                features.append({k: v[i] for k, v in encoded.items()} | {"labels": labels})
        return features

    def build_model(self, model: ModelArgs, data: TaskData, seed: int):
        return load_classifier(AutoModelForTokenClassification, model, seed, data.info["labels"])

    @torch.no_grad()
    def evaluate(self, model, loader: DataLoader, accelerator: Accelerator, data: TaskData):
        labels = data.info["labels"]
        gold: list[list[str]] = []
        predicted: list[list[str]] = []
        sums = torch.zeros(2, dtype=torch.float64)
        for batch in loader:
            out = model(**batch)
            sums += (
                accelerator.gather_for_metrics(loss_sums(out.logits, batch["labels"])).sum(0).cpu()
            )
            preds = accelerator.pad_across_processes(out.logits.argmax(-1), dim=1, pad_index=-100)
            refs = accelerator.pad_across_processes(batch["labels"], dim=1, pad_index=-100)
            preds, refs = accelerator.gather_for_metrics((preds, refs))
            for p_row, r_row in zip(preds.tolist(), refs.tolist(), strict=True):
                keep = [(p, r) for p, r in zip(p_row, r_row, strict=True) if r != -100]
                gold.append([labels[r] for _, r in keep])
                predicted.append([labels[p] for p, _ in keep])
        return {
            "f1": f1_score(gold, predicted, zero_division=0),
            "precision": precision_score(gold, predicted, zero_division=0),
            "recall": recall_score(gold, predicted, zero_division=0),
            "loss": (sums[0] / sums[1].clamp(min=1)).item(),
        }
