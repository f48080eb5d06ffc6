"""Loading models and tokenizers from the hub, a local directory, or the offline default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import HfHubHTTPError
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel

from polyticket.config import ModelArgs
from polyticket.errors import UserError
from polyticket.io import file_fingerprint

OFFLINE_MODELS = ("e5-small",)


TEXT_SUFFIXES = (".txt", ".jsonl", ".json", ".conll", ".conllu", ".iob", ".tsv")


def corpus_files(paths: list[Path]) -> list[Path]:
    """Files as given; a folder stands for the data files directly inside it (not below:
    run directories with masks and logs often live next to the data)."""
    files = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in TEXT_SUFFIXES)
        if not inside:
            # Else the vocabulary would silently stay untrimmed, or be trimmed to other files.
            suffixes = " ".join(TEXT_SUFFIXES)
            raise UserError(f"vocabulary folder {path} holds no data files ({suffixes})")
        files += inside
    return files


def resolve(name: str, vocab_from: list[Path] | None = None) -> str:
    """A local directory, the prepared offline default, or a hub id (returned as is)."""
    if name in OFFLINE_MODELS:
        from polyticket.models.e5 import prepare_e5_small

        return str(prepare_e5_small(vocab_from=corpus_files(vocab_from or []) or None))
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if name.startswith((".", "/", "~")) or path.suffix or name.count("/") > 1:
        raise UserError(f"model directory not found: {name}")
    return name


def _load(what: str, name: str, loader: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return loader(*args, **kwargs)
    except (OSError, HfHubHTTPError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot load the {what} of {name!r}: {first_line} "
            "(a hub model needs a network connection, or a local copy in the hub cache)"
        ) from None


def load_config(args: ModelArgs, **overrides: Any) -> PretrainedConfig:
    path = resolve(args.model, args.vocab_from)
    return _load(
        "configuration",
        args.model,
        AutoConfig.from_pretrained,
        path,
        revision=args.revision,
        **overrides,
    )


def load_tokenizer(args: ModelArgs, **kwargs: Any):
    path = resolve(args.model, args.vocab_from)
    config = load_config(args)
    # Byte-level BPE tokenizers need this to tokenise text that is already split into words.
    if config.model_type in ("roberta", "gpt2", "longformer", "bart"):
        kwargs.setdefault("add_prefix_space", True)
    tokenizer = _load(
        "tokenizer",
        args.model,
        AutoTokenizer.from_pretrained,
        path,
        revision=args.revision,
        **kwargs,
    )
    if not tokenizer.is_fast:
        raise UserError(f"{args.model}: polyticket needs a fast (Rust) tokenizer")
    return tokenizer


def load_model(
    auto_class: Any, args: ModelArgs, seed: int, **config_overrides: Any
) -> PreTrainedModel:
    """The model with a task head; its head (all of it with ``init=random``) drawn from ``seed``."""
    config = load_config(args, **config_overrides)
    torch.manual_seed(seed)
    if args.init == "random":
        return auto_class.from_config(config)
    return _load(
        "weights",
        args.model,
        auto_class.from_pretrained,
        resolve(args.model, args.vocab_from),
        config=config,
        revision=args.revision,
    )


def load_classifier(
    auto_class: Any, args: ModelArgs, seed: int, labels: list[str]
) -> PreTrainedModel:
    """A model with a classification head over ``labels`` (named in its config)."""
    return load_model(
        auto_class,
        args,
        seed,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )


def model_fingerprint(args: ModelArgs) -> list[dict[str, Any]]:
    """What a run's model was: the hub id and revision, or each file of a local directory
    (size and hash), so that a resumed run can tell the model changed under it."""
    path = Path(resolve(args.model, args.vocab_from))
    if not path.is_dir():
        return [{"model": args.model, "revision": args.revision}]
    return [file_fingerprint(p) for p in sorted(path.iterdir()) if p.is_file()]


def model_revision(model: PreTrainedModel) -> str | None:
    """The hub commit the weights came from, where known."""
    return getattr(model.config, "_commit_hash", None)
