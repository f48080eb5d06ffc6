"""Loading models and tokenizers from the hub, a local directory, or the offline default."""

from __future__ import annotations

import json
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


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _load(what: str, name: str, loader: Any, *args: Any, **kwargs: Any) -> Any:
    local = Path(str(args[0])) if args else None
    if local is not None and local.is_dir():
        check_model_dir(local, what)
        try:
            return loader(*args, **kwargs)
        # A local directory's faults (corrupt weights, an unknown model type) surface as
        # whatever its loader raises; none of them is a bug of polyticket's.
        except Exception as exc:
            raise UserError(
                f"model directory {local}: cannot load its {what}: {_first_line(exc)}"
            ) from None
    try:
        return loader(*args, **kwargs)
    except (OSError, HfHubHTTPError) as exc:
        raise UserError(
            f"cannot load the {what} of {name!r}: {_first_line(exc)} "
            "(a hub model needs a network connection, or a local copy in the hub cache)"
        ) from None


# What each part of a Hugging Face model directory needs (any one of the files).
_MODEL_FILES = {
    "configuration": ("config.json",),
    "tokenizer": ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model"),
    "weights": (
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
    ),
}


def check_model_dir(path: Path, what: str) -> None:
    """A local model directory has the files of ``what`` (configuration, tokenizer,
    weights), and its config names a model type transformers knows."""
    if not any((path / name).is_file() for name in _MODEL_FILES[what]):
        empty = "" if any(path.iterdir()) else " (it is empty)"
        raise UserError(
            f"model directory {path} has no {what}{empty}: expected "
            f"{' or '.join(_MODEL_FILES[what])}"
        )
    if what != "configuration":
        return
    from polyticket.io import read_text

    try:
        config = json.loads(read_text(path / "config.json"))
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{path / 'config.json'}: not valid JSON ({exc})") from None
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in CONFIG_MAPPING:
        raise UserError(
            f"{path / 'config.json'}: unknown model_type {model_type!r} "
            "(not a model type this version of transformers knows)"
        )


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


def position_limit(config: PretrainedConfig) -> int | None:
    """The longest input the model's absolute position embeddings cover (None: relative
    positions, as T5's). RoBERTa-style models number positions from ``pad_token_id + 1``."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit and config.model_type in ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert"):
        limit -= (config.pad_token_id or 0) + 1
    return limit


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
