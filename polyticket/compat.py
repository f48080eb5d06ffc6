"""Bridges to the original code (Foroutan et al., 2022): its mask files and its JSON configs.

The original scripts pruned with ``torch.nn.utils.prune`` and saved ``{key: tensor}`` for
every state-dict key containing ``mask`` (``bert.encoder.layer.0.attention.self.query
.weight_mask``, float 0/1, sometimes behind ``module.`` from DataParallel) with a pickling
``torch.save``. Their configs are HF ``TrainingArguments``-style JSON files. This module
reads both into polyticket's terms, and writes a polyticket mask back in the original format
so the original scripts (or any ``torch.nn.utils.prune`` user) can apply it.
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from polyticket.errors import UserError
from polyticket.io import atomic_path
from polyticket.masks import Mask, is_mask_file

log = logging.getLogger("polyticket")

# Task-head wrappers put the base model under one of these attributes; polyticket keys masks
# by base-model names, so the wrapper's prefix has to go.
MODEL_PREFIXES = (
    "bert.",
    "roberta.",
    "xlm_roberta.",
    "xlmr.",
    "distilbert.",
    "transformer.",
    "model.",
)
_DATA_PARALLEL = "module."
_MASK_SUFFIX = "_mask"
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
# The original's XNLI masks always carry the pooler; its loader skips the entry on models
# without one (token classification, MLM), so a mask transfers across its tasks.
_POOLER = "pooler.dense.weight"
# What the original's ``pruning_model_custom`` reads of every BERT layer (and the pooler,
# where the model has one): ``bert.encoder.layer.{i}.{matrix}.weight_mask``.
ORIGINAL_MATRICES = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
_BERT_LAYER = re.compile(r"encoder\.layer\.(\d+)\.")


def _torch_load(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers, with errors a user can read."""
    if not path.is_file():
        raise UserError(f"mask file not found: {path}")
    try:
        with warnings.catch_warnings():  # a bare pickle's protocol is no concern of the user's
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported operand" in str(exc):  # torch's safe unpickler reads protocol 2 only
            raise UserError(
                f"{path.name}: saved with a pickle protocol torch.load(weights_only=True) "
                "cannot read; save it again with torch.save(..., pickle_protocol=2), the "
                "default, which the original code used"
            ) from None
        unsafe = _UNSAFE_GLOBAL.search(str(exc))
        what = f"a Python object ({unsafe.group(1)})" if unsafe else "Python objects"
        raise UserError(
            f"{path.name}: holds {what} besides tensors; only tensors are read from a .pt "
            "file, since unpickling anything else could run code from it"
        ) from None
    # A file that is not a torch archive fails deep in zipfile/pickle with KeyError, EOFError,
    # RuntimeError, ... depending on its first bytes; all of them mean the same to the user.
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise UserError(f"{path.name}: not a file torch.save wrote ({detail})") from None


def _base_name(key: str, known: set[str] | None) -> str:
    """``module.bert.X.weight_mask`` -> ``X.weight``, keeping a prefix that a known name has."""
    name = key.removesuffix(_MASK_SUFFIX)
    while name.startswith(_DATA_PARALLEL):
        name = name.removeprefix(_DATA_PARALLEL)
    stripped = next((name[len(p) :] for p in MODEL_PREFIXES if name.startswith(p)), None)
    if known is None:
        return stripped or name
    # T5's base names start with "encoder."/"decoder." and a model could have "model." in
    # its own names, so a prefix is stripped only where that yields a parameter of the model.
    if name in known or stripped is None:
        return name
    return stripped if stripped in known else name


def import_torch_mask(path: Path, known_names: Iterable[str] | None = None) -> Mask:
    """Read a mask saved by the original code (a ``torch.save`` of ``*_mask`` tensors).

    Every entry whose key ends in ``_mask`` becomes one bool tensor (nonzero = kept) named by
    the base model's parameter (``X.weight_mask`` -> ``X.weight``); other entries, such as
    the ``weight_orig`` of a full pruned state dict, are ignored. With ``known_names``, every
    resulting name must be one of them. Raises ``UserError`` on anything a user could get
    wrong: no file, not a torch file, pickled objects, no masks, values other than 0 and 1.
    """
    path = Path(path)
    data = _torch_load(path)
    if not isinstance(data, dict):
        raise UserError(
            f"{path.name}: expected a dict of mask tensors, found {type(data).__name__}"
        )
    known = set(known_names) if known_names is not None else None
    tensors: dict[str, torch.Tensor] = {}
    keys: dict[str, str] = {}
    skipped: list[str] = []
    for key, value in data.items():
        if not (isinstance(key, str) and key.endswith(_MASK_SUFFIX)):
            continue
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{path.name}: entry {key!r} is a {type(value).__name__}, not a tensor")
        if not bool(((value == 0) | (value == 1)).all()):
            raise UserError(f"{path.name}: entry {key!r} holds values other than 0 and 1")
        name = _base_name(key, known)
        if known is not None and name not in known:
            if _base_name(key, None) == _POOLER:
                skipped.append(key)
                continue
            raise UserError(
                f"{path.name}: entry {key!r}: parameter {_base_name(key, None)} is not in the model"
            )
        if name in tensors:
            raise UserError(f"{path.name}: entries {keys[name]!r} and {key!r} both mask {name}")
        tensors[name] = value != 0
        keys[name] = key
    if not tensors:
        raise UserError(f"{path.name}: no mask entries (keys ending in '{_MASK_SUFFIX}')")
    if skipped:
        log.warning(
            "%s: the model has no pooler; its mask entry %s is left out, as the original "
            "code did (its XNLI masks carry one)",
            path.name, skipped[0],
        )  # fmt: skip
    empty = [name for name, kept in tensors.items() if not kept.any()]
    if empty:
        log.warning(
            "%s: %d of its %d matrices have every weight pruned (first: %s); the original's "
            "last IMP rounds reach 100%%",
            path.name, len(empty), len(tensors), empty[0],
        )  # fmt: skip
    return Mask(tensors, {"method": "imported", "source": path.name})


def export_torch_prune(mask: Mask, path: Path, prefix: str | None = None) -> Path:
    """Write ``mask`` as the original code's ``.pt`` file: ``{prefix + X.weight_mask: float}``.

    These are the buffers ``torch.nn.utils.prune`` keeps (``module.weight_mask``). Without a
    ``prefix``, the one the original's loader reads: ``bert.`` for BERT's layer names, none
    for mT5's (its base names are the wrapper's). Says what that loader would not read, or
    would miss. Written to a temporary name and renamed, so a crash never leaves half a file.
    """
    path = Path(path)
    bert = any(_BERT_LAYER.match(name) for name in mask)
    if prefix is None:
        prefix = "bert." if bert else ""
    if bert and prefix.removeprefix(_DATA_PARALLEL) == "bert.":
        _check_original_set(mask)
    state = {f"{prefix}{name}{_MASK_SUFFIX}": t.to(torch.float32) for name, t in mask.items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def _check_original_set(mask: Mask) -> None:
    """Warn where a BERT mask is not the set ``pruning_model_custom`` reads: six matrices of
    every layer (a missing one is a KeyError there) and the pooler (entries besides those
    are ignored there: the original code would train them dense)."""
    layers = {int(m[1]) for name in mask if (m := _BERT_LAYER.match(name))}
    expected = {f"encoder.layer.{i}.{m}.weight" for i in layers for m in ORIGINAL_MATRICES}
    missing = sorted(expected - set(mask))
    ignored = sorted(set(mask) - expected - {_POOLER})
    for names, what, consequence in (
        (missing, "the original code's loader reads are not in the mask", "fail (KeyError)"),
        (ignored, "of the mask are not read by the original code's loader", "leave them dense"),
    ):
        if names:
            log.warning("%d matrices %s (first: %s): it would %s", len(names), what, names[0],
                        consequence)  # fmt: skip


def read_mask(path: Path, known_names: Iterable[str] | None = None) -> Mask:
    """A polyticket ``.safetensors`` mask, or an original ``.pt`` one, told apart by the
    file's structure.

    Original configs name ``.pt`` masks (``mask_dir``), so whatever loads a mask named in a
    config should accept both.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"mask file not found: {path}")
    if is_mask_file(path):
        return Mask.load(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    # torch.save writes a zip archive; the pre-1.6 format and plain pickles start with PROTO.
    if magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80":
        return import_torch_mask(path, known_names)
    return Mask.load(path)  # not a mask of either kind: its error names the file


# The original scripts' argument names -> polyticket knob names.
ORIGINAL_KEYS: dict[str, str] = {
    "model_name_or_path": "model",
    "data_language": "language",
    "dataset_name": "dataset",
    "task_name": "task",
    "learning_rate": "learning_rate",
    "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "num_train_epochs": "epochs",
    "max_steps": "max_steps",
    "max_seq_length": "max_seq_length",
    # The mT5 scripts truncate inputs at max_source_length (their max_seq_length is unused).
    "max_source_length": "max_seq_length",
    # ... and generate at most val_max_target_length (else max_target_length) tokens.
    "val_max_target_length": "max_target_length",
    "max_target_length": "max_target_length",
    # The original evaluated every logging_steps when evaluate_during_training was set.
    "logging_steps": "eval_steps",
    "seed": "seed",
    "mask_dir": "mask",
    "weight_init": "init",
    # ner_fine_tune.py declares weight_init but reads initial_weight; both mean the same.
    "initial_weight": "init",
    "train_file": "train_file",
    "validation_file": "eval_file",
    "val_data_ratio": "validation_ratio",
    "weight_decay": "weight_decay",
    "adam_epsilon": "adam_epsilon",
    "max_grad_norm": "max_grad_norm",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "warmup_ratio": "warmup_ratio",
    "output_dir": "out",
    "block_size": "block_size",
    "mlm_probability": "mlm_probability",
    "no_cuda": "cpu",
    "fp16": "mixed_precision",
}

# Keys the original scripts ignore when another key is present: key -> that other key.
_SUPERSEDED = {
    "max_seq_length": "max_source_length",
    "max_target_length": "val_max_target_length",
    "val_data_ratio": "validation_file",
}

# Original arguments with no polyticket equivalent; seeing one marks a file as original.
IGNORED_KEYS = frozenset(
    {
        "adam_beta1",
        "adam_beta2",
        "cache_dir",
        "config_name",
        "do_eval",
        "do_predict",
        "do_train",
        "evaluate_during_training",
        "fp16_opt_level",
        "ignore_pad_token_for_loss",
        "label_all_tokens",
        "local_rank",
        "log_dir",
        "max_eval_samples",
        "max_predict_samples",
        "max_train_samples",
        "model_revision",
        "model_type",
        "overwrite_cache",
        "overwrite_output_dir",
        "pad_to_max_length",
        "preprocessing_num_workers",
        "rand_seed",
        "return_entity_level_metrics",
        "server_ip",
        "server_port",
        "set_seed",
        "test_file",
        "tokenizer_name",
        "use_auth_token",
        "warmup_steps",
    }
)

# Read by the functions below rather than mapped one to one; ``sparsity`` (a percentage in
# the original, a fraction in polyticket) is read there too, but as a polyticket knob name it
# cannot mark a file as original, nor can ``max_target_length``.
_DERIVED_KEYS = frozenset({"mlm", "pruning_type", "save_steps"})

_ORIGINAL_ONLY = IGNORED_KEYS | _DERIVED_KEYS | {k for k, v in ORIGINAL_KEYS.items() if k != v}

# The original scripts' values -> polyticket's, per target knob; other values pass unchanged.
_VALUES: dict[str, dict[str, str]] = {
    "dataset": {"wikiann": "unimelb-nlp/wikiann", "xnli": "facebook/xnli"},
    "task": {"ner": "ner", "xnli": "nli", "mlm": "mlm", "pretrain": "mlm"},
    "init": {"pre": "pretrained", "rand": "random"},
}

# The fine-tuning scripts' only arguments: a config without them is one of LT_*.py (IMP).
_FINE_TUNING_KEYS = frozenset({"mask_dir", "pruning_type"})
# pretrain_trans.py / LT_pretrain.py hold out this share of train_file without validation_file.
_MLM_VALIDATION_RATIO = 0.01
# pretrain_trans.py prunes a random or one-shot mask to this many percent by default.
_DEFAULT_SPARSITY_PERCENT = 50
_MLM_TEXT_SUFFIXES = (".json", ".jsonl", ".txt")


def is_original_config(values: dict[str, Any]) -> bool:
    """True if the keys are the original scripts' (at least one key only they use)."""
    return any(key in _ORIGINAL_ONLY for key in values)


def _is_false(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _positive(value: Any) -> float | None:
    """A number > 0, else None: the original's 0 and -1 mean "off" for steps and limits."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _translate_value(target: str, value: Any) -> Any:
    if target == "max_steps":
        # The original's -1 (its default) means "no limit", which is polyticket's None.
        try:
            return None if float(value) <= 0 else value
        except (TypeError, ValueError):
            return value
    if target == "mixed_precision":  # HF's fp16 flag: true for fp16, else full precision
        return "fp16" if _is_true(value) else "no"
    if target == "max_target_length" and _positive(value):
        # HF generate(max_length=N) counted the decoder's start token, so the original
        # generated at most N - 1 tokens; polyticket's length counts generated tokens only.
        return max(1, int(value) - 1)
    if isinstance(value, str) and target in _VALUES:
        return _VALUES[target].get(value.lower(), value)
    return value


class Setting(NamedTuple):
    """What one original key becomes: a knob and its value, or (target None) why it is dropped."""

    key: str
    target: str | None
    value: Any
    why: str = "polyticket has no such setting"


def _task_settings(values: dict[str, Any], source: str) -> list[Setting]:
    """The MLM scripts take no task_name: infer MLM as they were told apart, and say so."""
    if "mlm" in values and not _is_true(values["mlm"]):
        raise UserError(f"{source}: mlm false asks for causal language modelling, not trained here")
    if "task_name" in values or "dataset_name" in values:
        return [Setting("mlm", None, True, "task_name decides the task")] if "mlm" in values else []
    train = values.get("train_file")
    text_file = isinstance(train, str) and Path(train).suffix.lower() in _MLM_TEXT_SUFFIXES
    if "mlm" in values:
        reason = "'mlm': true"
    elif "block_size" in values and text_file:
        reason = f"block_size and a text train_file ({Path(train).name})"
    else:
        return []
    out = [Setting("mlm", "task", "mlm")]
    held_out = ""
    if "validation_file" not in values and "val_data_ratio" not in values:
        out.append(Setting("val_data_ratio", "validation_ratio", _MLM_VALIDATION_RATIO))
        held_out = f"; no validation_file, so {_MLM_VALIDATION_RATIO:.0%} of it is held out"
    log.warning(
        "%s: inferred task mlm from %s, as the original scripts did%s", source, reason, held_out
    )
    return out


def _mask_settings(values: dict[str, Any], source: str) -> list[Setting]:
    """The fine-tuning scripts' mask: mask_dir, or pretrain_trans.py's pruning_type."""
    kind = str(values.get("pruning_type", "lth")).lower()
    if kind not in ("lth", "random", "oneshot"):
        raise UserError(f"{source}: pruning_type {kind!r}: expected lth, oneshot or random")
    if kind == "lth":
        if "pruning_type" in values and "mask_dir" not in values:
            raise UserError(f"{source}: pruning_type lth needs mask_dir, the mask to apply")
        keys = [k for k in ("mask_dir", "pruning_type") if k in values]
        out = [Setting(key, "mask", values["mask_dir"]) for key in keys]
        if "sparsity" in values:
            out.append(
                Setting("sparsity", None, values["sparsity"], "only random and oneshot use it")
            )
        return out
    # The original's sparsity is a percentage (default 50); polyticket's is a fraction.
    percent = _positive(values.get("sparsity", _DEFAULT_SPARSITY_PERCENT))
    if percent is None or percent >= 100:
        raise UserError(f"{source}: sparsity must be a percentage in (0, 100)")
    out = [Setting("pruning_type", "mask", kind), Setting("sparsity", "sparsity", percent / 100)]
    if "mask_dir" in values:
        out.append(Setting("mask_dir", None, values["mask_dir"], f"pruning_type {kind} ignores it"))
    return out


class ImpBudget(NamedTuple):
    """An LT_*.py run: prune every ``period`` steps until ``steps`` or ``epochs`` are used up."""

    period: int
    steps: int | None
    epochs: float | None


def _is_imp_config(values: dict[str, Any]) -> bool:
    """LT_ner.py, LT_xnli.py, LT_mt5_xnli.py and LT_pretrain.py's configs: they train once
    for ``num_train_epochs`` (or ``max_steps``) in all, and prune and rewind every
    ``save_steps`` steps. The fine-tuning scripts (mask_dir or pruning_type) only save a
    checkpoint every ``save_steps``."""
    return is_original_config(values) and not _FINE_TUNING_KEYS & values.keys()


def _imp_budget(values: dict[str, Any], source: str) -> ImpBudget:
    """The pruning period and total budget of an IMP config with ``save_steps``. A period or
    budget that is not positive is refused: the original would have trained without
    pruning, or not at all, where ``find`` would prune by its own schedule."""
    period = _positive(values["save_steps"])
    if period is None or period < 1 or not float(period).is_integer():
        raise UserError(
            f"{source}: save_steps {values['save_steps']!r}: the original IMP scripts prune "
            "every save_steps steps, so it must be a whole positive number of steps (leave it out "
            "for polyticket's own schedule)"
        )
    steps = _positive(values.get("max_steps"))
    epochs = None if steps else _positive(values.get("num_train_epochs", 3.0))
    if steps is None and epochs is None:
        raise UserError(
            f"{source}: num_train_epochs {values['num_train_epochs']!r} and no positive "
            "max_steps: the original would train for no steps at all"
        )
    return ImpBudget(int(period), int(steps) if steps else None, epochs)


def _schedule_settings(values: dict[str, Any], knobs: set[str], source: str) -> list[Setting]:
    """save_steps: the steps of each IMP level; the whole run's budget is left to the levels."""
    if "save_steps" not in values:
        return []
    if not _is_imp_config(values):
        why = "the fine-tuning scripts only save checkpoints at it"
        return [Setting("save_steps", None, values["save_steps"], why)]
    if "levels" not in knobs:
        why = "it is the pruning period of the original IMP scripts, which `polyticket find` runs"
        return [Setting("save_steps", None, values["save_steps"], why)]
    # Not the steps or epochs of each level: the budget of all levels together, which
    # find turns into levels once it knows the data (lottery.fit_budget).
    budget = _imp_budget(values, source)
    out = [Setting("save_steps", "max_steps", budget.period)]
    if budget.steps is not None:
        out.append(Setting("max_steps", "budget_steps", budget.steps))
        if "num_train_epochs" in values:  # as in HF's Trainer, max_steps wins
            why = "max_steps sets the budget instead"
            out.append(Setting("num_train_epochs", None, values["num_train_epochs"], why))
    else:
        out.append(Setting("num_train_epochs", "budget_epochs", budget.epochs))
        if "max_steps" in values:  # -1, HF's default in dumped configs: no limit
            why = "not positive, so num_train_epochs sets the budget"
            out.append(Setting("max_steps", None, values["max_steps"], why))
    return out


def _settings(values: dict[str, Any], knobs: set[str], source: str) -> list[Setting]:
    """Every key of an original config as a Setting, in the file's order."""
    derived = [
        *_task_settings(values, source),
        *_mask_settings(values, source),
        *_schedule_settings(values, knobs, source),
    ]
    done = {setting.key for setting in derived}
    out = []
    for key, value in values.items():
        if key in done:
            out += [setting for setting in derived if setting.key == key]
        elif key in _SUPERSEDED and _SUPERSEDED[key] in values:
            out.append(Setting(key, None, value, f"the original scripts use {_SUPERSEDED[key]!r}"))
        elif key in ORIGINAL_KEYS:
            target = ORIGINAL_KEYS[key]
            if target == "eval_steps" and _is_false(values.get("evaluate_during_training")):
                # Without evaluate_during_training, logging_steps only paced the loss log.
                target = "log_steps"
            out.append(Setting(key, target, _translate_value(target, value)))
        else:
            _check_spelling(key, knobs, source)
            out.append(Setting(key, key if key in knobs else None, value))
    # Settings a script implies without a key of its own (the held-out share of MLM).
    return out + [setting for setting in derived if setting.key not in values]


# How close an unknown key of an original config must be to a known one to be taken for a
# misspelling of it rather than one of the many HF arguments polyticket ignores:
# learnig_rate (0.96) and max_stepz (0.89) are typos, per_gpu_train_batch_size (0.82) is not.
_TYPO_CUTOFF = 0.85


def _check_spelling(key: str, knobs: set[str], source: str) -> None:
    """An original config's unknown key is only a warning, unless it is a misspelling of a
    key polyticket knows: then the setting the user meant would be silently lost."""
    from polyticket.config import suggestion

    known = knobs | ORIGINAL_KEYS.keys() | IGNORED_KEYS | _DERIVED_KEYS | {"sparsity"}
    if key in known:
        return
    hint = suggestion(key, known, _TYPO_CUTOFF)
    if hint:
        raise UserError(f"{source}: unknown key {key!r}{hint}")


def translate_config(values: dict[str, Any], knobs: set[str], source: str) -> dict[str, Any]:
    """Config-file values in polyticket's knob names, whether the file is original or ours.

    An original config (see ``is_original_config``) has its keys and values translated;
    keys polyticket cannot honour are dropped with one warning each. In any other file every
    key must be one of ``knobs``, else ``UserError``. Types are left to the caller.
    """
    if not is_original_config(values):
        for key in values:
            if key not in knobs:
                from polyticket.config import suggestion

                raise UserError(f"{source}: unknown key {key!r}{suggestion(key, knobs)}")
        return dict(values)
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, target, value, why in _settings(values, knobs, source):
        if target is None:
            log.warning("ignoring key %r of %s: %s", key, source, why)
            continue
        if target not in knobs:
            log.warning(
                "ignoring key %r of %s: this command has no setting %r", key, source, target
            )
            continue
        if target in out and out[target] != value:
            raise UserError(
                f"{source}: keys {origin[target]!r} and {key!r} both set {target}, "
                f"to {out[target]!r} and {value!r}"
            )
        out[target] = value
        origin[target] = key
    return out
