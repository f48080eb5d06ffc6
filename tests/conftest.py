"""Tiny models built from configs and tokenizers trained here: no download anywhere."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIRST = ["John", "Marie", "Hans", "Olga", "Ahmed", "Li", "Sofia", "Pierre"]
LAST = ["Smith", "Curie", "Müller", "Petrova", "Haddad", "Wei", "García", "Dubois"]
CITIES = ["Paris", "Berlin", "Madrid", "Moscow", "Cairo", "Beijing", "New York", "São Paulo"]
ORGS = ["Acme Corp", "Siemens", "Gazprom", "Banco Santander", "United Nations", "Renault"]
TEMPLATES = [
    "{PER} lives in {LOC} .",
    "{PER} works for {ORG} in {LOC} .",
    "the office of {ORG} is in {LOC} .",
    "yesterday {PER} met {PER} at {ORG} .",
    "{LOC} is a big city and {PER} likes it .",
]


def ner_sentences(count: int, seed: int) -> list[tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        tokens, tags = [], []
        for word in rng.choice(TEMPLATES).split():
            if word.startswith("{"):
                kind = word[1:4]
                entity = {
                    "PER": lambda: f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                    "LOC": lambda: rng.choice(CITIES),
                    "ORG": lambda: rng.choice(ORGS),
                }[kind]().split()
                tokens += entity
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1)
            else:
                tokens.append(word)
                tags.append("O")
        out.append((tokens, tags))
    return out


def write_conll(path: Path, sentences) -> Path:
    path.write_text(
        "\n\n".join("\n".join(f"{t}\t{g}" for t, g in zip(*s, strict=True)) for s in sentences)
        + "\n",
        encoding="utf-8",
    )
    return path


def corpus() -> list[str]:
    return [" ".join(tokens) for tokens, _ in ner_sentences(300, 0)]


def wordpiece_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials)
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )


def tiny_bert(path: Path, dropout: float = 0.1) -> Path:
    from transformers import BertConfig, BertModel

    tokenizer = wordpiece_tokenizer(corpus())
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def conll_files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("conll")
    return (
        write_conll(root / "train.conll", ner_sentences(96, 1)),
        write_conll(root / "dev.conll", ner_sentences(32, 2)),
    )


@pytest.fixture(autouse=True)
def _polyticket_home(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYTICKET_HOME", str(tmp_path / "polyticket-home"))
