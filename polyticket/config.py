"""Every knob as a typed dataclass field; command-line flags and config files map onto them.

A field ``target_sparsity`` is the flag ``--target-sparsity`` and the key ``target_sparsity``
(or ``target-sparsity``) in a YAML/JSON file given with ``--config``. Precedence: defaults,
then the file, then flags. The help text lives in the field's metadata, next to the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from polyticket.criteria import CRITERIA
from polyticket.errors import UserError
from polyticket.pruning import Scope
from polyticket.tasks import TASKS


def knob(default: Any, help: str, **kwargs: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class ModelArgs:
    model: str = knob("bert-base-multilingual-cased", "hub id, local model directory, or e5-small")
    revision: str | None = knob(None, "hub revision (branch, tag or commit) of the model")
    vocab_from: list[Path] = knob(
        [], "e5-small: trim the vocabulary to the pieces these data files (or folders) use"
    )
    init: Literal["pretrained", "random"] = knob(
        "pretrained", "start from the pre-trained weights or from a random initialisation"
    )
    prune_pooler: bool = knob(False, "also prune the pooler (only where the model has one)")
    prune_include: list[str] = knob(
        [],
        "regex that must match a whole base-model parameter name ('.*query\\.weight', not "
        "'query'): prune exactly these (repeatable)",
        regex=True,
    )
    prune_exclude: list[str] = knob(
        [], "regex of whole parameter names never to prune (repeatable)", regex=True
    )


@dataclass
class DataArgs:
    task: str = knob("ner", "the task", choices=TASKS)
    language: str = knob(
        "en", "language code (the hub dataset's configuration); en,fr,zh trains on equal shares"
    )
    train_file: Path | None = knob(
        None, "local training data; {lang} in the name stands for each language"
    )
    eval_file: Path | None = knob(None, "local evaluation data; {lang} as in --train-file")
    dataset: str | None = knob(None, "hub dataset id, e.g. unimelb-nlp/wikiann")
    dataset_config: str = knob(
        "{lang}",
        "hub dataset configuration; {lang} stands for the language (Wikipedia: 20231101.{lang})",
    )
    dataset_revision: str | None = knob(
        None, "hub revision (branch, tag or commit) of --dataset: the same data on every rerun"
    )
    train_split: str = knob("train", "split of the hub dataset to train on")
    eval_split: str = knob("validation", "split of the hub dataset to evaluate on")
    labels: list[str] = knob(
        [],
        "NER label list (default: a hub dataset's ClassLabel names; else WikiANN's when it "
        "covers the training tags, else those tags)",
    )
    max_seq_length: int = knob(
        128, "longest input in tokens; longer inputs are truncated", minimum=1
    )
    max_train_samples: int | None = knob(
        None,
        "training examples in all, drawn with the seed, an equal share per language",
        minimum=1,
    )
    max_eval_samples: int | None = knob(None, "evaluation examples in all, as above", minimum=1)
    validation_ratio: float | None = knob(
        None,
        "MLM without --eval-file: hold out this fraction of the documents for evaluation",
        above=0,
        below=1,
    )
    block_size: int = knob(
        128, "MLM: tokens per block (documents are split, nothing dropped)", minimum=1
    )
    mlm_probability: float = knob(
        0.15, "MLM: fraction of tokens chosen for prediction", above=0, maximum=1
    )
    text_column: str = knob("text", "MLM: the text field of JSON lines and hub datasets")
    max_target_length: int | None = knob(
        None,
        "text-to-text NLI: longest generated answer in tokens (default: longest label)",
        minimum=1,
    )


@dataclass
class TrainArgs:
    learning_rate: float = knob(2e-5, "peak learning rate of AdamW", above=0)
    batch_size: int = knob(
        32,
        "training examples per batch in each process (HF's per_device_train_batch_size): "
        "an optimizer step takes processes x this x --gradient-accumulation-steps",
        minimum=1,
    )
    eval_batch_size: int = knob(64, "examples per evaluation batch", minimum=1)
    epochs: float = knob(3.0, "passes over the training data (ignored with --max-steps)", above=0)
    max_steps: int | None = knob(
        None, "optimizer steps per training run; overrides --epochs", minimum=1
    )
    warmup_ratio: float = knob(
        0.0, "fraction of the steps spent warming up the learning rate", minimum=0, below=1
    )
    weight_decay: float = knob(0.0, "AdamW weight decay", minimum=0)
    adam_epsilon: float = knob(1e-8, "AdamW epsilon", above=0)
    max_grad_norm: float = knob(1.0, "gradient clipping norm (0 disables)", minimum=0)
    gradient_accumulation_steps: int = knob(1, "batches accumulated per optimizer step", minimum=1)
    eval_steps: int | None = knob(
        None, "evaluate every N optimizer steps (default: each epoch)", minimum=1
    )
    log_steps: int = knob(
        10, "log the training loss every N optimizer steps", minimum=1, changes_results=False
    )
    seed: int = knob(57, "random seed of the head, data order and dropout", minimum=0, below=2**32)
    cpu: bool = knob(False, "run on the CPU even where an accelerator is present")
    mixed_precision: Literal["no", "fp16", "bf16", "auto"] = knob(
        "no",
        "mixed precision (autocast over fp32 weights); auto: bf16 on a CPU that computes it "
        "natively (AVX512-BF16 or AMX), else none (README: Benchmarks)",
    )
    tf32: bool = knob(
        False,
        "fp32 matrix products in TF32 on NVIDIA GPUs (Ampere and newer): the fastest setting "
        "for fine-tuning on short sentences (README: Speed on a GPU)",
    )


@dataclass
class PruneArgs:
    method: str = knob(
        "magnitude", "pruning criterion: how weights are scored for removal", choices=CRITERIA
    )
    scope: Scope | None = knob(
        None,
        "rank weights over all prunable matrices, within each layer, each matrix or each output "
        "row (default: the method's own: row for wanda, as its paper compares them, global for "
        "the others)",
    )
    rate: float = knob(
        0.1, "fraction of the ORIGINAL prunable weights removed per level", above=0, below=1
    )
    target_sparsity: float | None = knob(0.5, "stop at this sparsity", above=0, below=1)
    levels: int | None = knob(
        None, "stop after this many pruning levels (overrides the target)", minimum=1
    )
    epsilon: float = knob(
        0.01, "a level is a ticket if its best score is within this of dense", minimum=0
    )
    budget_steps: int | None = knob(
        None,
        "training steps of all levels together: levels stop at the last one that fits",
        minimum=1,
    )
    budget_epochs: float | None = knob(
        None,
        "the same budget in passes over the training data (the original num_train_epochs)",
        above=0,
    )
    early_bird_threshold: float = knob(
        0.1,
        "--method early-bird: stop a level once less than this share of its next magnitude "
        "mask's departures from step 0's mask changed between two checks",
        minimum=0,
        below=1,
    )

    def __post_init__(self) -> None:
        if self.scope is None:
            self.scope = scope_for(self.method)


def scope_for(method: str, scope: Scope | None = None) -> Scope:
    """The scope a level of ``method`` ranks with: the given one, else the method's own."""
    return scope if scope is not None else CRITERIA[method].scope


@dataclass
class FindConfig:
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    prune: PruneArgs = field(default_factory=PruneArgs)
    out: Path | None = knob(None, "run directory (required); an existing run is continued")


# Masks ``train`` makes itself (from a sparsity), as opposed to a mask file or dense training.
CONTROL_MASKS = ("random", "oneshot")


@dataclass
class TrainConfig:
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    out: Path | None = knob(None, "output directory (required)")
    mask: str | None = knob(
        None, "mask file, 'random' / 'oneshot' for a control mask, or 'dense' (the default)"
    )
    sparsity: float | None = knob(None, "sparsity of a random or one-shot mask", minimum=0, below=1)
    sparsity_from: Path | None = knob(
        None, "a random mask takes the sparsity of this mask file instead"
    )
    start_from: Path | None = knob(
        None,
        "a random or one-shot mask starts from this mask file: its pruned weights stay "
        "pruned, more go up to --sparsity (the paper's earlier tickets pruned further)",
    )
    scope: Scope = knob(
        "global",
        "a random or one-shot mask ranks weights over all prunable matrices, within each "
        "layer, each matrix or each output row (a random one with --sparsity-from: as many "
        "pruned as the file in each)",
    )


# The paper's settings (Foroutan et al. 2022, Table 7 and section 4); flags and files override.
PRESETS: dict[str, dict[str, Any]] = {
    "paper-ner": dict(
        model="bert-base-multilingual-cased",
        task="ner",
        dataset="unimelb-nlp/wikiann",
        max_train_samples=20_000,
        max_eval_samples=10_000,
        max_seq_length=128,
        batch_size=32,
        eval_batch_size=32,
        learning_rate=2e-5,
        epochs=3.0,
    ),
    "paper-xnli": dict(
        model="bert-base-multilingual-cased",
        task="nli",
        dataset="facebook/xnli",
        max_eval_samples=2_490,
        max_seq_length=128,
        batch_size=32,
        eval_batch_size=32,
        learning_rate=5e-5,
        epochs=3.0,
    ),
    "paper-mlm": dict(
        model="bert-base-multilingual-cased",
        task="mlm",
        max_train_samples=1_600_000,
        max_eval_samples=30_000,
        block_size=512,
        batch_size=16,
        eval_batch_size=16,
        learning_rate=5e-5,
        # One epoch was the whole run, pruned every 10,000 steps (LT_pretrain's save_steps).
        max_steps=10_000,
    ),
    "paper-mt5-xnli": dict(
        model="google/mt5-base",
        task="nli",
        dataset="facebook/xnli",
        max_eval_samples=2_490,
        max_seq_length=128,
        # generate(max_length=5) in the original counts the decoder start token: 4 new ones
        max_target_length=4,
        batch_size=32,
        eval_batch_size=32,
        learning_rate=2e-4,
        epochs=3.0,
    ),
}


def _sections(cls: type) -> list[tuple[str | None, type]]:
    """(attribute, dataclass) for each section of a config; None for top-level knobs."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str | None, type]] = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.append((f.name, hints[f.name]))
    out.append((None, cls))
    return out


def _knobs(cls: type) -> list[tuple[str | None, dataclasses.Field, Any]]:
    out = []
    for section, section_cls in _sections(cls):
        hints = typing.get_type_hints(section_cls)
        for f in dataclasses.fields(section_cls):
            if not dataclasses.is_dataclass(hints[f.name]):
                out.append((section, f, hints[f.name]))
    return out


def _base_type(hint: Any) -> Any:
    """``int | None`` -> int; ``list[str]`` -> list."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _base_type(args[0])
    return hint


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per knob, with its default and help; defaults stay unset so files can win."""
    parser.add_argument("--config", type=Path, help="YAML or JSON file of knobs; flags override it")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=argparse.SUPPRESS,
        help="the paper's hyper-parameters for a task; the file and flags override",
    )
    groups: dict[str | None, Any] = {}
    for section, f, hint in _knobs(cls):
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section or 'run'} options")
        base = _base_type(hint)
        flag = flag_of(f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs: dict[str, Any] = dict(default=argparse.SUPPRESS, dest=f.name)
        help_text = f.metadata["help"]
        # None is "not set": nothing to say; some texts say what their default means
        if default is not None and "default" not in help_text:
            help_text += f" (default: {default})"
        if "choices" in f.metadata:
            # a registry, read only when the flag is used or the help printed (%(choices)s)
            kwargs.update(choices=f.metadata["choices"], type=str, metavar=f.name.upper())
            help_text += "; one of %(choices)s"
        elif typing.get_origin(base) is Literal:
            kwargs.update(choices=typing.get_args(base), type=str)
        elif base is bool:
            kwargs.update(action=argparse.BooleanOptionalAction)
        elif typing.get_origin(base) is list:
            # Several values per flag (--vocab-from data/*.conll) and the flag repeatable.
            kwargs.update(action="extend", nargs="+", type=typing.get_args(base)[0])
        else:
            kwargs.update(type=base)
        groups[section].add_argument(flag, help=help_text, **kwargs)


def flag_of(knob: str) -> str:
    """The command-line flag of a knob (or option): ``max_steps`` -> ``--max-steps``."""
    return "--" + knob.replace("_", "-")


def read_config_file(path: Path) -> dict[str, Any]:
    from polyticket.io import parse_yaml, read_text

    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    text = read_text(path)
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        data = json.loads(text) if kind == "JSON" else parse_yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError, RecursionError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"{path}: not valid {kind}: {detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of knob names to values")
    return knob_keys(data, str(path))


def knob_keys(values: dict[Any, Any], where: str) -> dict[str, Any]:
    """Knob names written with '-' or '_' alike (``max-steps`` is ``max_steps``); one knob
    written both ways is refused, as YAML refuses a key given twice (the last would win)."""
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in out:
            raise UserError(f"{where}: {name} is given twice, as {spelled[name]!r} and {key!r}")
        out[name], spelled[name] = value, str(key)
    return out


def _convert(value: Any, f: dataclasses.Field, hint: Any, source: str) -> Any:
    base, name = _base_type(hint), f.name
    if value is None:
        if type(None) in typing.get_args(hint):
            return None  # the knob's "off" (no step limit, no mask, ...)
        raise UserError(
            f"{source}: bad value null for {name}: it has no 'off'; leave the key out for "
            "its default"
        )
    try:
        if "choices" in f.metadata:
            if value not in f.metadata["choices"]:
                raise ValueError(f"must be one of {', '.join(f.metadata['choices'].names())}")
            return value
        if typing.get_origin(base) is Literal:
            if value not in typing.get_args(base):
                raise ValueError(f"must be one of {', '.join(map(str, typing.get_args(base)))}")
            return value
        if typing.get_origin(base) is list:
            items = value if isinstance(value, list) else [value]
            return [_scalar(v, typing.get_args(base)[0]) for v in items]
        return _scalar(value, base)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{source}: bad value {value!r} for {name}: {exc}") from None


def _scalar(value: Any, base: type) -> Any:
    """One value of a file as ``base``; what YAML/JSON would silently coerce is refused."""
    if base is bool:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    # bool is an int to Python, so without this `batch_size: true` would mean 1.
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        raise ValueError(f"must be {_TYPE_WORDS.get(base, base.__name__)}")
    if base in (str, Path) and not isinstance(value, (str, int, float, Path)):
        raise ValueError("must be a string")
    if base is int and isinstance(value, float) and not value.is_integer():
        raise ValueError("must be an integer")
    return base(value)


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", Path: "a path"}


def _rule(meta: typing.Mapping[str, Any]) -> str | None:
    """The allowed range of a knob in words (``an integer >= 1``), None without one."""
    parts = []
    for key, sign in (("minimum", ">="), ("above", ">"), ("maximum", "<="), ("below", "<")):
        if key in meta:
            parts.append(f"{sign} {meta[key]:g}")
    return " and ".join(parts) or None


def _out_of_range(value: Any, meta: typing.Mapping[str, Any]) -> bool:
    return (
        ("minimum" in meta and value < meta["minimum"])
        or ("above" in meta and value <= meta["above"])
        or ("maximum" in meta and value > meta["maximum"])
        or ("below" in meta and value >= meta["below"])
    )


def _check_value(name: str, value: Any, meta: typing.Mapping[str, Any], source: str) -> None:
    """The rules in a knob's metadata (range, regex), for a value from any source."""
    import math
    import re

    if value is None:
        return
    rule = _rule(meta)
    if rule and (isinstance(value, float) and math.isnan(value) or _out_of_range(value, meta)):
        raise UserError(f"{source}: bad value {value!r} for {name}: must be {rule}")
    if meta.get("regex"):
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise UserError(
                    f"{source}: bad value {pattern!r} for {name}: not a regular expression ({exc})"
                ) from None


def check_config(config: Any, source: str = "config") -> Any:
    """Every knob of a built config against the rules next to its default, and what the
    machine can do; raises ``UserError`` naming the knob, the value and what is allowed."""
    for section, f, _ in _knobs(type(config)):
        holder = getattr(config, section) if section else config
        _check_value(f.name, getattr(holder, f.name), f.metadata, source)
    train = getattr(config, "train", None)
    if train is not None:
        check_mixed_precision(train.mixed_precision, train.cpu, source)
    if isinstance(config, TrainConfig):
        check_mask_knobs(config, source)
    data = getattr(config, "data", None)
    if data is not None:
        check_sample_limits(data, source)
    if data is not None and data.validation_ratio is not None:
        # either would be silently ignored: the ratio by other tasks, the file by MLM
        readers = [name for name in TASKS if TASKS[name].reads_validation_ratio]
        if data.task not in readers:
            raise UserError(
                f"{source}: validation_ratio applies to task {', '.join(readers)}, not {data.task}"
            )
        if data.eval_file is not None:
            raise UserError(
                f"{source}: give eval_file or validation_ratio (documents of train_file "
                "held out), not both"
            )
    return config


def language_codes(language: str) -> list[str]:
    """The codes of ``--language``: ``en,fr`` is two languages."""
    return [code.strip() for code in language.split(",") if code.strip()]


def check_sample_limits(data: DataArgs, source: str) -> None:
    """A sample limit is shared equally by the languages: below one each, some get none
    (and the run failed later on an empty language)."""
    count = len(language_codes(data.language))
    for name in ("max_train_samples", "max_eval_samples"):
        limit = getattr(data, name)
        if limit is not None and limit < count:
            raise UserError(
                f"{source}: {name} {limit} leaves some of the {count} languages "
                f"({data.language}) without an example: give at least {count}, one per language"
            )


def check_mask_knobs(config: TrainConfig, source: str) -> None:
    """The knobs of a control mask go with one: given without it they would be ignored."""
    control = config.mask in CONTROL_MASKS
    for knob, given in (
        ("sparsity", config.sparsity is not None),
        ("sparsity_from", config.sparsity_from is not None),
        ("start_from", config.start_from is not None),
        ("scope", config.scope != "global"),
    ):
        if given and not control:
            raise UserError(
                f"{source}: {knob} applies to mask random or oneshot, not to "
                + ("a mask file" if config.mask not in (None, "dense") else "dense training")
            )
    if config.sparsity is not None and config.sparsity_from is not None:
        raise UserError(f"{source}: give sparsity or sparsity_from, not both")
    if config.start_from is not None and config.sparsity is None:
        raise UserError(f"{source}: start_from prunes further up to a sparsity: give sparsity")


def check_mixed_precision(precision: str, cpu: bool, source: str) -> None:
    """fp16 needs a CUDA device; bf16 a CUDA device that has it, or the CPU (accelerate runs
    bf16 autocast on CPUs), so that a run fails here rather than after loading the model."""
    if precision in ("no", "auto"):
        return
    import torch

    cuda = torch.cuda.is_available() and not cpu
    if precision == "fp16" and not cuda:
        raise UserError(
            f"{source}: bad value 'fp16' for mixed_precision: needs a CUDA GPU and none is used "
            "here (use 'bf16' on a CPU, or 'no')"
        )
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise UserError(
            f"{source}: bad value 'bf16' for mixed_precision: this GPU cannot do bf16 "
            "(use 'fp16' or 'no')"
        )


def build_config(
    cls: type,
    args: argparse.Namespace | None,
    file_values: dict[str, Any] | None = None,
    source: str = "config",
) -> Any:
    """Defaults, overridden by the config file's values, overridden by flags."""
    file_values = dict(file_values or {})
    known = {f.name: (section, f, hint) for section, f, hint in _knobs(cls)}
    unknown = sorted(set(file_values) - set(known))
    if unknown:
        raise UserError(f"{source}: unknown key {unknown[0]!r}{suggestion(unknown[0], known)}")
    values: dict[str | None, dict[str, Any]] = {}
    for name, (section, f, hint) in known.items():
        if args is not None and hasattr(args, name):
            value = getattr(args, name)
        elif name in file_values:
            value = _convert(file_values[name], f, hint, source)
        else:
            continue
        values.setdefault(section, {})[name] = value
    top = values.pop(None, {})
    sections = {
        attr: section_cls(**values.get(attr, {}))
        for attr, section_cls in _sections(cls)
        if attr is not None
    }
    return check_config(cls(**sections, **top), source)


def suggestion(key: str, names: typing.Iterable[str], cutoff: float = 0.6) -> str:
    """``; did you mean 'max_steps'?`` for a misspelt key, else nothing."""
    import difflib

    close = difflib.get_close_matches(key, list(names), n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


def knob_names(cls: type) -> set[str]:
    return {f.name for _, f, _ in _knobs(cls)}


def logging_knobs(cls: type) -> set[str]:
    """Knobs that change what is logged and no result (``changes_results=False``): a run
    continues, and a study's cells stand, whatever their values."""
    return {f.name for _, f, _ in _knobs(cls) if f.metadata.get("changes_results") is False}


def path_knobs(cls: type) -> set[str]:
    """Knobs holding file paths (alone or in a list): relative ones follow their file."""
    out = set()
    for _, f, hint in _knobs(cls):
        base = _base_type(hint)
        if base is Path or (typing.get_origin(base) is list and typing.get_args(base)[0] is Path):
            out.add(f.name)
    return out


def with_preset(
    preset: str | None, *layers: dict[str, Any], knobs: set[str], source: str
) -> dict[str, Any]:
    """The one precedence of values below flags: a preset's, then each layer in order (a
    config file; in a study, its settings then a task entry's). Only ``knobs`` are taken
    from the preset (a training run has no pruning knobs)."""
    if preset is not None and preset not in PRESETS:
        raise UserError(f"{source}: unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    merged = {k: v for k, v in PRESETS.get(preset, {}).items() if k in knobs}
    for layer in layers:
        merged = _epochs_replace_steps(merged, layer) | layer
    return merged


def _epochs_replace_steps(values: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """A later layer (a config file over a preset, flags over both) that gives epochs and no
    max_steps means to train by epochs: the max_steps given before it, which would win as in
    HF's Trainer, goes (said)."""
    if "epochs" in later and "max_steps" not in later and values.get("max_steps"):
        logging.getLogger("polyticket").warning(
            "epochs %s replaces max_steps %s given before it", later["epochs"], values["max_steps"]
        )
        return {k: v for k, v in values.items() if k != "max_steps"}
    return values


def _local_files_win(values: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """A --train-file/--eval-file flag wins over a hub dataset named by the file or preset.

    The tasks read the hub whenever a dataset is set, so without this a flag would lose to
    a file, unlike everywhere else.
    """
    flagged = hasattr(args, "train_file") or hasattr(args, "eval_file")
    if not (flagged and values.get("dataset") and not hasattr(args, "dataset")):
        return values
    logging.getLogger("polyticket").warning(
        "local data files given as flags: not loading the dataset %s", values["dataset"]
    )
    return {k: v for k, v in values.items() if k != "dataset"}


def parse_config(cls: type, args: argparse.Namespace) -> Any:
    """Defaults < preset < config file (polyticket's or the original code's keys) < flags."""
    from polyticket.compat import translate_config

    path = getattr(args, "config", None)
    source = str(path) if path else "config"
    knobs = knob_names(cls)
    file_values = {}
    if path:
        file_values = translate_config(read_config_file(path), knobs | {"preset"}, source)
    file_preset = file_values.pop("preset", None)  # --preset wins over the file's, as flags do
    preset = getattr(args, "preset", None) or file_preset
    values = with_preset(preset, file_values, knobs=knobs, source=source)
    flags = {k: getattr(args, k) for k in ("epochs", "max_steps") if hasattr(args, k)}
    values = _epochs_replace_steps(values, flags)
    config = build_config(cls, args, _local_files_win(values, args), source=source)
    if hasattr(config, "out") and config.out is None:
        raise UserError("give --out (or out in the config file; output_dir in the original's)")
    if hasattr(config, "out"):
        from polyticket.io import prepare_output_dir

        prepare_output_dir(config.out, create=False)
    return config


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready view of a config (paths as strings), without where it is written."""
    values = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    values.pop("out", None)
    return values
