"""Tiny models built from configs and tokenizers trained here: no download anywhere."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# the environment of a child polyticket process: this checkout first, then whatever the
# caller's PYTHONPATH holds (packages installed there, as on a machine without a venv)
CHILD_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH")) if p
    ),
}

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


def unigram_tokenizer(texts: list[str], kind: str):
    """A SentencePiece-style Unigram tokenizer trained here: XLM-R's or mT5's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "xlmr":
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    else:  # mt5: pad 0, eos 1, unk 2
        specials = ["<pad>", "</s>", "<unk>"]
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(
        texts, trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>")
    )
    if kind == "xlmr":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>",
            pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", 0), ("</s>", 2)],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<s>",
            eos_token="</s>",
            sep_token="</s>",
            cls_token="<s>",
            pad_token="<pad>",
            unk_token="<unk>",
            mask_token="<mask>",
            model_max_length=128,
        )
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=128,
    )


def nli_corpus() -> list[str]:
    from polyticket.data.synth import synth_nli

    pairs = synth_nli("en", 90, 0) + synth_nli("fr", 90, 0)
    return (
        [f"xnli premise: {p} hypothesis: {h}" for p, h, _ in pairs]
        + ["entailment neutral contradiction"] * 20
        + corpus()
    )


@pytest.fixture(scope="session")
def xlmr_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    path = tmp_path_factory.mktemp("tiny-xlmr")
    tokenizer = unigram_tokenizer(nli_corpus(), "xlmr")
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=160,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    XLMRobertaModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def mt5_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration

    path = tmp_path_factory.mktemp("tiny-mt5")
    tokenizer = unigram_tokenizer(nli_corpus(), "mt5")
    config = MT5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    MT5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def nli_files(tmp_path_factory) -> tuple[Path, Path]:
    from polyticket.data.synth import write_synth

    root = tmp_path_factory.mktemp("nli")
    return (
        write_synth("nli", "en", 60, 1, root / "train.tsv"),
        write_synth("nli", "en", 30, 2, root / "dev.jsonl"),
    )


def unique_sentences(count: int) -> list[str]:
    """Distinct sentences of the tiny corpus: retrieval against itself must find each one."""
    return list(dict.fromkeys(corpus()))[:count]


@pytest.fixture(scope="session")
def half_mask(tmp_path_factory, bert_dir) -> Path:
    """A random 50% mask of the tiny BERT's prunable weights, saved as a polyticket mask."""
    from transformers import AutoModel

    from polyticket.masks import Mask
    from polyticket.models.families import find_prunable
    from polyticket.pruning import random_prune

    shapes = find_prunable(AutoModel.from_pretrained(bert_dir)).shapes
    path = tmp_path_factory.mktemp("masks") / "half.safetensors"
    return random_prune(Mask.ones(shapes), 0.5, seed=0).save(path, method="random")


@pytest.fixture
def hub_dataset(tmp_path, monkeypatch):
    """Make a hub-like dataset folder that ``datasets.load_dataset(folder, config,
    split=...)`` reads as it reads a hub repository (README.md listing the configurations,
    ``{config}/{split}-00000-of-00001.parquet``), its cache inside ``tmp_path``:
    ``hub_dataset(name, {config: {split: columns}}, features)`` returns the folder."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))

    def make(name: str, configs: dict, features) -> str:
        root = tmp_path / "hub" / name
        lines = ["---", "configs:"]
        for config, splits in configs.items():
            (root / config).mkdir(parents=True, exist_ok=True)
            lines += [f"- config_name: {config}", "  data_files:"]
            for split, columns in splits.items():
                parquet = root / config / f"{split}-00000-of-00001.parquet"
                datasets.Dataset.from_dict(columns, features=features).to_parquet(str(parquet))
                lines += [f"  - split: {split}", f"    path: {config}/{split}-*"]
        (root / "README.md").write_text("\n".join([*lines, "---", f"# {name}", ""]))
        return str(root)

    return make
