"""A study file: its schema, its validation, and the settings of every task, merged once.

A study file (YAML) names a model, tasks with their data, languages, seeds and target
sparsities, and which kinds of cells to run (``run:``, one key per registered cell kind).
Every knob is one of ``find``/``train``'s and is checked here, when the file is read, by
building the same typed configs the commands build; defaults live only in those configs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from polyticket.config import (
    CONTROL_MASKS,
    FindConfig,
    ModelArgs,
    TrainConfig,
    build_config,
    knob_keys,
    knob_names,
    logging_knobs,
    path_knobs,
    with_preset,
)
from polyticket.errors import UserError
from polyticket.io import parse_yaml, read_json, read_text, write_json
from polyticket.layout import StudyLayout
from polyticket.pruning import as_fraction, sparsity_schedule
from polyticket.study.kinds import CELL_KINDS
from polyticket.tasks import TASKS

# Knobs each cell sets itself, and why a study file does not.
CELL_KNOBS = {
    "out": "each cell's directory is in the study's 'out'",
    "language": "give 'languages'",
    "seed": "give 'seeds'",
    "task": "give the task entry's 'task'",
    **dict.fromkeys(["mask", "sparsity", "sparsity_from", "start_from"], "'run:' sets it"),
    **dict.fromkeys(  # another stop would leave the cells at the other sparsities no mask
        ["target_sparsity", "levels", "budget_steps", "budget_epochs"],
        "IMP's levels run to the largest of 'sparsities', where the other cells find masks",
    ),
}
KNOBS = knob_names(FindConfig) | knob_names(TrainConfig)
SETTING_KNOBS = KNOBS - CELL_KNOBS.keys()
# What a cell records of its task's knobs (``CellKind.reads``): those that change its result
# (logging knobs change none). A cell training a control mask reads train's knobs; another
# training cell all but scope, which only ranks a control mask; an IMP cell reads find's.
CONTROL_KNOBS = knob_names(TrainConfig) - CELL_KNOBS.keys() - logging_knobs(TrainConfig)
TRAINING_KNOBS = CONTROL_KNOBS - {"scope"}
FINDING_KNOBS = knob_names(FindConfig) - CELL_KNOBS.keys() - logging_knobs(FindConfig)
MODEL_KNOBS = knob_names(ModelArgs)
PATH_KNOBS = path_knobs(FindConfig) | path_knobs(TrainConfig)
STUDY_KEYS = {
    "name",
    "model",
    "out",
    "languages",
    "seeds",
    "sparsities",
    "settings",
    "tasks",
    "run",
    "synth",
}
SYNTH_KEYS = {"task", "size", "seed", "split"}


@dataclass
class TaskSpec:
    """One task entry of a study: which task, which languages, which knobs."""

    key: str  # the entry's name in the study file (e.g. "ner", "xnli-mt5")
    task: str
    languages: list[str]
    settings: dict[str, Any]  # preset < study settings < the entry's own settings
    config: FindConfig  # the settings as ``find`` sees them: every default filled in

    @property
    def rate(self) -> float:
        return self.config.prune.rate

    @property
    def model(self) -> str:
        return self.config.model.model


@dataclass
class Study:
    name: str
    path: Path
    out: Path
    seeds: list[int]
    sparsities: list[Fraction]
    tasks: dict[str, TaskSpec]
    run: dict[str, Any]  # cell kind's run key -> its value (true/false, or a kind's options)
    synth: dict[str, dict[str, Any]] = field(default_factory=dict)  # file -> task, size, seed

    @property
    def layout(self) -> StudyLayout:
        return StudyLayout(self.out)

    @property
    def multi_language(self) -> list[list[str]]:
        return self.run.get("multi_language") or []

    def sources(self, task: str) -> list[str]:
        """Whose tickets a task has: each language, and each multi-language set (``en+fr``)
        whose languages the task has."""
        languages = self.tasks[task].languages
        combos = [joined(c) for c in self.multi_language if set(c) <= set(languages)]
        return [*languages, *combos]

    def languages_of(self, source: str) -> list[str]:
        """The languages a ticket of ``source`` trained on: a language alone, or each of a
        multi-language set's (``en+fr``)."""
        return next((list(c) for c in self.multi_language if joined(c) == source), [source])

    def schedule(self, task: str) -> list[Fraction]:
        """The sparsity of each IMP level of a task's tickets, up to the largest target."""
        return sparsity_schedule(self.tasks[task].rate, float(max(self.sparsities)))

    def resolve(self, value: str) -> Path:
        """A path written in the study file, resolved as its data paths are."""
        return Path(_relative_to(self.path, value, self.out))

    def level_of(self, task: str, sparsity: Fraction) -> int:
        return self.schedule(task).index(sparsity)


def joined(languages: list[str] | tuple[str, ...]) -> str:
    return "+".join(languages)


def is_multi_language(source: str) -> bool:
    """Whether a ticket's source (a cell's or an exported mask's folder name) is a
    multi-language set (``joined``) rather than one language."""
    return "+" in source


def _fail(path: Path, message: str) -> UserError:
    return UserError(f"{path}: {message}")


def _check_keys(path: Path, where: str, values: dict, allowed: set[str]) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise _fail(
            path, f"unknown key {unknown[0]!r} in {where} (allowed: {', '.join(sorted(allowed))})"
        )


def _relative_to(path: Path, value: Any, out: Path) -> str:
    """A path of a study file: ``{out}`` is the study directory; a relative one follows the
    file, wherever polyticket runs."""
    text = str(value).replace("{out}", str(out))
    return text if Path(text).is_absolute() or "{out}" in str(value) else str(path.parent / text)


def _settings(path: Path, where: str, values: Any, out: Path) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise _fail(path, f"{where} must be a mapping of knobs")
    values = knob_keys(values, f"{path}: {where}")
    decided = sorted(values.keys() & CELL_KNOBS)
    if decided:
        name = decided[0]
        raise _fail(path, f"{where}: {name} is not a study setting: {CELL_KNOBS[name]}")
    _check_keys(path, where, values, SETTING_KNOBS | {"preset"})
    for name in PATH_KNOBS & set(values):
        # Relative paths in a study file are relative to the file, wherever it is run from.
        value = values[name]
        values[name] = (
            [_relative_to(path, v, out) for v in value]
            if isinstance(value, list)
            else _relative_to(path, value, out)
        )
    return values


def _languages(path: Path, where: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _fail(path, f"{where} must be a non-empty list of language codes")
    return list(value)


def _task_spec(
    path: Path, key: str, entry: Any, settings: dict[str, Any], languages: list[str] | None, out
) -> TaskSpec:
    where = f"tasks.{key}"
    if entry is not None and not isinstance(entry, dict):
        raise _fail(path, f"{where} must be a mapping of knobs")
    entry = dict(entry or {})
    task = entry.pop("task", key)
    if task not in TASKS:
        raise _fail(path, f"{where}: unknown task {task!r} ({', '.join(TASKS)}; set 'task:')")
    task_languages = entry.pop("languages", None)
    own = _settings(path, where, entry, out)
    preset = own.pop("preset", None) or settings.get("preset")
    merged = with_preset(
        preset,
        {k: v for k, v in settings.items() if k != "preset"},
        own,
        knobs=KNOBS,
        source=f"{path}: {where}",
    )
    chosen = _languages(path, f"{where}.languages", task_languages) if task_languages else languages
    if not chosen:
        raise _fail(path, f"{where}: no languages (give 'languages' here or at the top)")
    # Types and choices of every knob are checked now, not when a cell gets to them.
    source = f"{path}: {where}"
    config = build_config(
        FindConfig, None, {**_only(merged, FindConfig), "task": task, "out": out}, source
    )
    build_config(TrainConfig, None, training_knobs({**merged, "task": task}), source)
    return TaskSpec(str(key), task, chosen, merged, config)


def training_knobs(values: dict[str, Any]) -> dict[str, Any]:
    """The knobs of a study's settings a training cell takes: the study's ``scope`` ranks its
    control masks as it ranks its tickets, and means nothing to dense or mask-file training."""
    knobs = _only(values, TrainConfig)
    if knobs.get("mask") not in CONTROL_MASKS:
        knobs.pop("scope", None)
    return knobs


def _only(values: dict[str, Any], cls: type) -> dict[str, Any]:
    known = knob_names(cls)
    return {k: v for k, v in values.items() if k in known}


def _run(path: Path, values: Any) -> dict[str, Any]:
    """``run:``: one key per cell kind (with its default), validated by the kind."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise _fail(path, "'run' must be a mapping")
    options: dict[str, Any] = {}  # run: key -> the kind that reads it
    for name in CELL_KINDS:
        for key in CELL_KINDS[name].options:
            if key in options:  # the kind loaded last would take the key over unseen
                raise ValueError(
                    f"run.{key} is an option of the cell kinds {options[key].name} and {name}"
                )
            options[key] = CELL_KINDS[name]()
    _check_keys(path, "run", values, set(options))
    return {
        key: kind.read_option(path, key, values.get(key, kind.options[key]))
        for key, kind in options.items()
    }


def load_study(path: Path, out: Path | None = None) -> Study:
    """Read and validate a study file; every mistake names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"study file not found: {path}")
    try:
        raw = parse_yaml(read_text(path))
    except (yaml.YAMLError, RecursionError) as exc:
        raise _fail(path, f"not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise _fail(path, "expected a mapping at the top")
    _check_keys(path, "the study", raw, STUDY_KEYS)
    if "tasks" not in raw or not isinstance(raw["tasks"], dict) or not raw["tasks"]:
        raise _fail(path, "'tasks' must map task names to their data")
    # like --out, relative to where polyticket runs (data paths follow the study file)
    if not isinstance(raw.get("out", ""), str):
        raise _fail(path, f"out must be a directory name, got {raw['out']!r}")
    out = Path(out or raw.get("out", Path("runs") / path.stem))
    settings = _settings(path, "settings", raw.get("settings"), out)
    if "model" in raw:
        settings["model"] = raw["model"]
    languages = _languages(path, "languages", raw["languages"]) if "languages" in raw else None
    tasks = {
        str(key): _task_spec(path, str(key), entry, settings, languages, out)
        for key, entry in raw["tasks"].items()
    }
    default_seed = next(iter(tasks.values())).config.train.seed
    seeds = raw.get("seeds", [default_seed])
    sparsities = raw.get("sparsities", [0.5])
    if not isinstance(seeds, list) or not all(type(s) is int and 0 <= s < 2**32 for s in seeds):
        raise _fail(path, "seeds must be a list of integers in [0, 2^32)")
    if not isinstance(sparsities, list) or not all(
        type(s) in (int, float) and 0 < s < 1 for s in sparsities
    ):
        raise _fail(path, "sparsities must be a list of numbers between 0 and 1")
    if not seeds or not sparsities:
        raise _fail(path, "give at least one seed and one sparsity")
    study = Study(
        name=str(raw.get("name", path.stem)),
        path=path,
        out=out,
        seeds=list(seeds),
        sparsities=sorted({as_fraction(s) for s in sparsities}),
        tasks=tasks,
        run=_run(path, raw.get("run")),
        synth=_synth(path, raw.get("synth")),
    )
    for key, spec in tasks.items():
        schedule = study.schedule(key)
        missing = [s for s in study.sparsities if s not in schedule]
        if missing:
            raise _fail(
                path,
                f"tasks.{key}: sparsity {float(missing[0]):g} is no level of a "
                f"schedule with rate {spec.rate}",
            )
    if study.synth:
        from polyticket.data.synth import SYNTH_LANGUAGES

        wanted = sorted({lang for spec in tasks.values() for lang in spec.languages})
        unknown = [lang for lang in wanted if lang not in SYNTH_LANGUAGES]
        if unknown:
            raise _fail(
                path,
                f"synth: no synthetic data in {unknown[0]!r}; its languages are "
                f"{', '.join(SYNTH_LANGUAGES)}",
            )
    for name in CELL_KINDS:
        CELL_KINDS[name]().validate(study)
    return study


def _synth(path: Path, values: Any) -> dict[str, dict[str, Any]]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise _fail(path, "'synth' must map file names to {task, size, seed}")
    from polyticket.data.synth import SPLITS, SYNTH_EXTENSIONS, SYNTH_TASKS

    for name, spec in values.items():
        where = f"synth.{name}"
        if not isinstance(spec, dict) or "{lang}" not in str(name):
            raise _fail(path, f"{where}: give task, size and seed; put {{lang}} in the name")
        if Path(str(name)).is_absolute() or ".." in Path(str(name)).parts:
            raise _fail(path, f"{where}: a file name inside the study's data folder, not a path")
        _check_keys(path, where, spec, SYNTH_KEYS)
        if spec.get("task") not in SYNTH_TASKS:
            raise _fail(path, f"{where}.task must be one of {', '.join(SYNTH_TASKS)}")
        extensions = ", ".join(SYNTH_EXTENSIONS[spec["task"]])
        if Path(str(name)).suffix.lower() not in SYNTH_EXTENSIONS[spec["task"]]:
            raise _fail(path, f"{where}: the extension picks the format: {extensions}")
        if spec.get("split", "train") not in SPLITS:
            raise _fail(path, f"{where}.split must be one of {', '.join(SPLITS)}")
        if type(spec.get("size")) is not int or spec["size"] < 1:
            raise _fail(path, f"{where}.size must be an integer >= 1, got {spec.get('size')!r}")
        if type(spec.get("seed", 0)) is not int or not 0 <= spec.get("seed", 0) < 2**32:
            raise _fail(path, f"{where}.seed must be an integer in [0, 2^32)")
    return {str(k): dict(v) for k, v in values.items()}


def _synth_entry(spec: dict[str, Any]) -> dict[str, Any]:
    """A ``synth:`` entry with its defaults: what the files it names are made from."""
    return {
        "task": spec["task"],
        "size": int(spec["size"]),
        "seed": int(spec.get("seed", 0)),
        "split": str(spec.get("split", "train")),
    }


def _synth_targets(study: Study) -> dict[str, dict[str, Path]]:
    """Each ``synth:`` entry's file in each of the study's languages."""
    languages = sorted({lang for spec in study.tasks.values() for lang in spec.languages})
    return {
        name: {lang: study.layout.data / name.replace("{lang}", lang) for lang in languages}
        for name in study.synth
    }


def _synth_recorded(study: Study) -> dict[str, Any]:
    path = study.layout.synth_record
    return read_json(path) if path.is_file() else {}


def synth_changes(study: Study, recorded: dict[str, Any] | None = None) -> dict[Path, str]:
    """The synthetic files that exist and that ``synthesize`` writes again, because their
    ``synth:`` entry changed since it wrote them (``recorded``, read if not given): each with
    what changed."""
    recorded = _synth_recorded(study) if recorded is None else recorded
    out = {}
    for name, targets in _synth_targets(study).items():
        before, now = recorded.get(name), _synth_entry(study.synth[name])
        if before is None or before == now:
            continue
        what = ", ".join(f"{k} {before.get(k)} -> {now[k]}" for k in now if before.get(k) != now[k])
        for target in targets.values():
            if target.exists():
                out[target.resolve()] = f"{target.name} is made again (synth: {what})"
    return out


def synthesize(study: Study) -> None:
    """Write the study's synthetic data files (``{out}/data/``) that do not exist yet, or
    whose ``synth:`` entry changed since they were written (``data/synth.json`` records the
    entries; a file written by polyticket 0.4.7 or before, or put there by hand, is kept)."""
    from polyticket.data.synth import write_synth

    recorded = _synth_recorded(study)
    again = synth_changes(study, recorded)
    for name, targets in _synth_targets(study).items():
        entry = _synth_entry(study.synth[name])
        for lang, target in targets.items():
            if not target.exists() or target.resolve() in again:
                write_synth(
                    entry["task"], lang, entry["size"], entry["seed"], target, entry["split"]
                )
    # entries no longer in the study file are kept: their files are too
    record = {**recorded, **{name: _synth_entry(spec) for name, spec in study.synth.items()}}
    if record != recorded:  # written only when it changes: every shard calls this
        write_json(study.layout.synth_record, record)
