"""Studies: the paper's grid of runs as cells, run resumably, in shards, in dependency order.

A study file (YAML) names a model, tasks with their data, languages, seeds and target
sparsities, and what to run. Each run is a cell with its own directory, named by what it
is (``cells/ner/fr/seed1/transfer-from-en-s50``). A cell is done when its result file
exists: ``ticket.json`` for a ticket (an IMP run, itself resumable level by level),
``metrics.json`` for a training run (written into ``NAME.partial`` and renamed when
complete). Shards are unions of whole groups: a ticket with every cell that uses its masks,
so any shard can run on any machine at any time, and all shards together do every cell once.
"""

from __future__ import annotations

import os
import shutil
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from polyticket.config import (
    PRESETS,
    FindConfig,
    TrainConfig,
    build_config,
    knob_names,
    path_knobs,
)
from polyticket.errors import UserError
from polyticket.io import now, read_json, write_json
from polyticket.pruning import as_fraction, sparsity_schedule

# Knobs each cell sets itself; a study file may not.
CELL_KNOBS = {
    "out",
    "language",
    "task",
    "mask",
    "sparsity",
    "sparsity_from",
    "layer_matched",
    "target_sparsity",
    "levels",
    "seed",
}
SETTING_KNOBS = (knob_names(FindConfig) | knob_names(TrainConfig)) - CELL_KNOBS
PATH_KNOBS = path_knobs(FindConfig) | path_knobs(TrainConfig)
RUN_KEYS = {"tickets", "random", "oneshot", "transfer", "cross_task", "multi_language"}
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


@dataclass
class Study:
    name: str
    path: Path
    out: Path
    seeds: list[int]
    sparsities: list[Fraction]
    tasks: dict[str, TaskSpec]
    tickets: bool = True
    random: bool = True
    oneshot: bool = False  # magnitude masks of θ0: the overlap a ticket has without training
    transfer: bool = True
    cross_task: bool = False
    multi_language: list[list[str]] = field(default_factory=list)
    synth: dict[str, dict[str, Any]] = field(default_factory=dict)  # file -> task, size, seed

    @property
    def cells_dir(self) -> Path:
        return self.out / "cells"

    @property
    def results_dir(self) -> Path:
        return self.out / "results"

    def sources(self, task: str) -> list[str]:
        """Whose tickets a task has: each language, and each multi-language set (``en+fr``)
        whose languages the task has."""
        languages = self.tasks[task].languages
        combos = [joined(c) for c in self.multi_language if set(c) <= set(languages)]
        return [*languages, *combos]

    def schedule(self, spec: TaskSpec) -> list[Fraction]:
        settings = spec.settings
        return sparsity_schedule(settings.get("rate", 0.1), float(max(self.sparsities)))


def _fail(path: Path, message: str) -> UserError:
    return UserError(f"{path}: {message}")


def _check_keys(path: Path, where: str, values: dict, allowed: set[str]) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise _fail(
            path, f"unknown key {unknown[0]!r} in {where} (allowed: {', '.join(sorted(allowed))})"
        )


def _relative_to(path: Path, value: Any, out: Path) -> str:
    text = str(value).replace("{out}", str(out))
    return text if Path(text).is_absolute() or "{out}" in str(value) else str(path.parent / text)


def _settings(path: Path, where: str, values: Any, out: Path) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise _fail(path, f"{where} must be a mapping of knobs")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
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


def load_study(path: Path, out: Path | None = None) -> Study:
    """Read and validate a study file; every mistake names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"study file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise _fail(path, f"not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise _fail(path, "expected a mapping at the top")
    _check_keys(path, "the study", raw, STUDY_KEYS)
    if "tasks" not in raw or not isinstance(raw["tasks"], dict) or not raw["tasks"]:
        raise _fail(path, "'tasks' must map task names to their data")
    # like --out, relative to where polyticket runs (data paths follow the study file)
    out = Path(out or raw.get("out", Path("runs") / path.stem))
    settings = _settings(path, "settings", raw.get("settings"), out)
    if "model" in raw:
        settings["model"] = raw["model"]
    languages = _languages(path, "languages", raw["languages"]) if "languages" in raw else None
    try:
        seeds = [int(s) for s in raw.get("seeds", [settings.get("seed", 57)])]
        sparsities = sorted({as_fraction(s) for s in raw.get("sparsities", [0.5])})
    except (TypeError, ValueError):
        raise _fail(path, "seeds must be integers and sparsities numbers") from None
    if not seeds or not sparsities or not all(0 < s < 1 for s in sparsities):
        raise _fail(path, "give at least one seed and sparsities between 0 and 1")

    tasks: dict[str, TaskSpec] = {}
    for key, entry in raw["tasks"].items():
        entry = dict(entry or {})
        where = f"tasks.{key}"
        task = entry.pop("task", key)
        if task not in ("ner", "nli", "mlm"):
            raise _fail(path, f"{where}: unknown task {task!r} (ner, nli or mlm; set 'task:')")
        task_languages = entry.pop("languages", None)
        own = _settings(path, where, entry, out)
        preset = own.pop("preset", None) or settings.get("preset")
        if preset is not None and preset not in PRESETS:
            raise _fail(path, f"{where}: unknown preset {preset!r}")
        merged = {**PRESETS.get(preset, {}), **settings, **own}
        merged.pop("preset", None)
        merged.pop("task", None)
        chosen = (
            _languages(path, f"{where}.languages", task_languages) if task_languages else languages
        )
        if not chosen:
            raise _fail(path, f"{where}: no languages (give 'languages' here or at the top)")
        tasks[key] = TaskSpec(str(key), task, chosen, merged)

    run = raw.get("run") or {}
    if not isinstance(run, dict):
        raise _fail(path, "'run' must be a mapping")
    _check_keys(path, "run", run, RUN_KEYS)
    multi = [
        _languages(path, "run.multi_language", combo)
        for combo in run.get("multi_language", []) or []
    ]
    study = Study(
        name=str(raw.get("name", path.stem)),
        path=path,
        out=out,
        seeds=seeds,
        sparsities=sparsities,
        tasks=tasks,
        tickets=bool(run.get("tickets", True)),
        random=bool(run.get("random", True)),
        oneshot=bool(run.get("oneshot", False)),
        transfer=bool(run.get("transfer", True)),
        cross_task=bool(run.get("cross_task", False)),
        multi_language=multi,
        synth=_synth(path, raw.get("synth")),
    )
    for spec in tasks.values():
        schedule = study.schedule(spec)
        missing = [s for s in sparsities if s not in schedule]
        if missing:
            raise _fail(
                path,
                f"tasks.{spec.key}: sparsity {float(missing[0]):g} is no level of a "
                f"schedule with rate {spec.settings.get('rate', 0.1)}",
            )
        # Types and choices of every knob are checked now, not when a cell gets to them.
        for cls in (FindConfig, TrainConfig):
            known = knob_names(cls)
            values = {k: v for k, v in spec.settings.items() if k in known}
            build_config(cls, None, {**values, "task": spec.task}, f"{path}: tasks.{spec.key}")
    if (study.transfer or study.random or study.cross_task) and not study.tickets:
        raise _fail(path, "transfer, random and cross-task cells need run.tickets: true")
    return study


def _synth(path: Path, values: Any) -> dict[str, dict[str, Any]]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise _fail(path, "'synth' must map file names to {task, size, seed}")
    for name, spec in values.items():
        if not isinstance(spec, dict) or "{lang}" not in name:
            raise _fail(path, f"synth.{name}: give task, size and seed; put {{lang}} in the name")
        _check_keys(path, f"synth.{name}", spec, SYNTH_KEYS)
    return {str(k): dict(v) for k, v in values.items()}


def synthesize(study: Study) -> None:
    """Write the study's synthetic data files (``{out}/data/``) that do not exist yet."""
    from polyticket.data.synth import write_synth

    languages = sorted({lang for spec in study.tasks.values() for lang in spec.languages})
    for name, spec in study.synth.items():
        for lang in languages:
            target = study.out / "data" / name.replace("{lang}", lang)
            if not target.exists():
                seed = int(spec.get("seed", 0))
                split = str(spec.get("split", "train"))
                write_synth(spec["task"], lang, int(spec["size"]), seed, target, split)


def percent(sparsity: Fraction) -> str:
    return f"s{float(sparsity) * 100:g}"


@dataclass(frozen=True)
class Cell:
    """One run of the grid. ``language`` is the language trained on; ``source`` is the
    language (transfer) or task entry (cross-task) whose ticket supplies the mask."""

    kind: str  # ticket | random | oneshot | transfer | cross-task
    task: str  # the task entry's key
    language: str
    seed: int
    source: str | None = None
    sparsity: Fraction | None = None  # None for a random mask at the ticket's sparsity
    deps: tuple[str, ...] = ()
    group: str = ""

    @property
    def name(self) -> str:
        label = self.kind
        if self.source is not None:
            label += f"-from-{self.source}"
        if self.kind != "ticket":
            label += f"-{percent(self.sparsity)}" if self.sparsity is not None else "-at-ticket"
        return f"{self.task}/{self.language}/seed{self.seed}/{label}"

    def directory(self, study: Study) -> Path:
        return study.cells_dir / self.name

    def result(self, study: Study) -> Path:
        return self.directory(study) / ("ticket.json" if self.kind == "ticket" else "metrics.json")

    def failure(self, study: Study) -> Path:
        return study.cells_dir / f"{self.name}.failed.json"

    def done(self, study: Study) -> bool:
        return self.result(study).is_file()


def ticket_name(task: str, language: str, seed: int) -> str:
    return f"{task}/{language}/seed{seed}/ticket"


def joined(languages: Iterable[str]) -> str:
    return "+".join(languages)


def cells(study: Study) -> list[Cell]:
    """Every cell, dependencies before dependents."""
    out: list[Cell] = []
    tickets: list[Cell] = []
    for key in study.tasks:
        for source in study.sources(key) if study.tickets else []:
            for seed in study.seeds:
                tickets.append(Cell("ticket", key, source, seed, group=f"{key}/{source}"))
    out.extend(tickets)
    for key, spec in study.tasks.items():
        for lang in spec.languages:
            group = f"{key}/{lang}"
            all_seeds = tuple(ticket_name(key, lang, s) for s in study.seeds)
            for seed in study.seeds if study.random else []:
                for sparsity in study.sparsities:
                    out.append(Cell("random", key, lang, seed, sparsity=sparsity, group=group))
                out.append(Cell("random", key, lang, seed, deps=all_seeds, group=group))
            for seed in study.seeds if study.oneshot else []:
                for sparsity in study.sparsities:
                    out.append(Cell("oneshot", key, lang, seed, sparsity=sparsity, group=group))
        if study.transfer:
            for source in study.sources(key):
                for target in spec.languages:
                    if target == source:
                        continue  # the ticket's own level is the diagonal
                    for seed in study.seeds:
                        for sparsity in study.sparsities:
                            out.append(
                                Cell(
                                    "transfer",
                                    key,
                                    target,
                                    seed,
                                    source,
                                    sparsity,
                                    (ticket_name(key, source, seed),),
                                    f"{key}/{source}",
                                )
                            )
    if study.cross_task:
        for source_key, source in study.tasks.items():
            for key, spec in study.tasks.items():
                same_model = source.settings.get("model") == spec.settings.get("model")
                if key == source_key or not same_model:
                    continue
                for lang in [x for x in spec.languages if x in source.languages]:
                    for seed in study.seeds:
                        for sparsity in study.sparsities:
                            out.append(
                                Cell(
                                    "cross-task",
                                    key,
                                    lang,
                                    seed,
                                    source_key,
                                    sparsity,
                                    (ticket_name(source_key, lang, seed),),
                                    f"{source_key}/{lang}",
                                )
                            )
    return out


def shard_of(cells_: list[Cell], index: int, count: int) -> list[Cell]:
    """The cells of shard ``index`` (1-based) of ``count``: whole groups, round robin over
    the sorted group names, so the split depends on the study file alone."""
    if not 1 <= index <= count:
        raise UserError(f"--shard {index}/{count}: need 1 <= i <= n")
    groups = sorted({c.group for c in cells_})
    mine = {g for i, g in enumerate(groups) if i % count == index - 1}
    return [c for c in cells_ if c.group in mine]


# --- running cells -------------------------------------------------------------------


def level_mask(study: Study, task: str, language: str, seed: int, sparsity: Fraction) -> Path:
    """The mask of a ticket run's level at ``sparsity`` (the paper compares at 50%)."""
    spec = study.tasks[task]
    level = study.schedule(spec).index(sparsity)
    return (
        study.cells_dir
        / ticket_name(task, language, seed)
        / f"level_{level:02d}"
        / "mask.safetensors"
    )


def _values(study: Study, cell: Cell, cls: type, **extra: Any) -> dict[str, Any]:
    """The cell's knobs that ``cls`` has (a training cell ignores the pruning knobs)."""
    spec = study.tasks[cell.task]
    values = {**spec.settings, "task": spec.task, "seed": cell.seed, **extra}
    known = knob_names(cls)
    return {k: v for k, v in values.items() if k in known}


def _into_place(study: Study, cell: Cell, write: Callable[[Path], Any]) -> None:
    """Write a training cell into ``NAME.partial`` and rename it when complete; an
    interrupted one starts over (training is not resumable)."""
    final = cell.directory(study)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    os.replace(partial, final)


def _train(study: Study, cell: Cell, **extra: Any) -> None:
    from polyticket.lottery import finetune

    def write(partial: Path) -> None:
        values = _values(study, cell, TrainConfig, language=cell.language, out=partial, **extra)
        finetune(build_config(TrainConfig, None, values, str(study.path)), partial)

    _into_place(study, cell, write)


def run_cell(study: Study, cell: Cell) -> None:
    from polyticket.lottery import find

    if cell.kind == "ticket":
        language = cell.language.replace("+", ",")
        out = cell.directory(study)
        config = build_config(
            FindConfig,
            None,
            _values(
                study,
                cell,
                FindConfig,
                language=language,
                out=out,
                target_sparsity=float(max(study.sparsities)),
            ),
            str(study.path),
        )
        find(config, out)
    elif cell.kind in ("random", "oneshot") and cell.sparsity is not None:
        _train(study, cell, mask=cell.kind, sparsity=float(cell.sparsity))
    elif cell.kind == "random":
        ticket = winning_tickets(study, cell.task, cell.language)[cell.seed]
        same = Cell(
            "random",
            cell.task,
            cell.language,
            cell.seed,
            sparsity=as_fraction(ticket["target"]) if ticket.get("target") else None,
        )
        if same.sparsity is not None and same.done(study):
            # The ticket sits at a target sparsity whose random baseline exists: reuse it.
            _into_place(
                study, cell, lambda partial: shutil.copytree(same.directory(study), partial)
            )
        else:
            _train(study, cell, mask="random", sparsity_from=ticket["mask"])
    elif cell.kind == "transfer":
        _train(
            study,
            cell,
            mask=str(level_mask(study, cell.task, cell.source, cell.seed, cell.sparsity)),
        )
    elif cell.kind == "cross-task":
        _train(
            study,
            cell,
            mask=str(level_mask(study, cell.source, cell.language, cell.seed, cell.sparsity)),
        )
    else:  # pragma: no cover - cells() makes no other kind
        raise ValueError(cell.kind)


def winning_tickets(study: Study, task: str, language: str) -> dict[int, dict[str, Any]]:
    """The paper's tickets: ε is the standard deviation of the dense score over the seeds,
    and each seed's ticket is its sparsest level within ε of the dense mean."""
    import statistics

    from polyticket.lottery import select_ticket

    runs = {}
    for seed in study.seeds:
        run = study.cells_dir / ticket_name(task, language, seed)
        if not (run / "ticket.json").is_file():
            raise UserError(f"ticket {ticket_name(task, language, seed)} is not done")
        runs[seed] = sorted(
            (read_json(p) for p in run.glob("level_*/metrics.json")), key=lambda m: m["level"]
        )
    dense = [levels[0]["best_score"] for levels in runs.values()]
    mean = statistics.fmean(dense)
    if len(dense) > 1:
        epsilon, rule = statistics.stdev(dense), "std of the dense score over seeds"
    else:
        epsilon = read_json(
            study.cells_dir / ticket_name(task, language, study.seeds[0]) / "ticket.json"
        )["epsilon"]
        rule = "one seed: the find epsilon"
    schedule = study.schedule(study.tasks[task])
    out = {}
    for seed, levels in runs.items():
        chosen = select_ticket(levels, epsilon, levels[0]["greater_is_better"], dense=mean)
        run = study.cells_dir / ticket_name(task, language, seed)
        sparsity = schedule[chosen["level"]]
        out[seed] = {
            "level": chosen["level"],
            "sparsity": chosen["sparsity"],
            "score": chosen["score"],
            "dense_mean": mean,
            "epsilon": epsilon,
            "rule": rule,
            "mask": str(run / f"level_{chosen['level']:02d}" / "mask.safetensors"),
            "target": float(sparsity) if sparsity in study.sparsities else None,
        }
    return out


@dataclass
class Outcome:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _event(study: Study, cell: Cell, event: str, **extra: Any) -> None:
    import json

    study.out.mkdir(parents=True, exist_ok=True)
    with open(study.out / "study.log.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"time": now(), "cell": cell.name, "event": event, **extra}) + "\n")


def run_study(study: Study, shard: tuple[int, int] | None = None) -> Outcome:
    """Run every cell of the (shard of the) study that is not done, dependencies first.

    One process runs the cells one after the other; many GPUs run one shard each.
    """
    import sys
    import time

    from tqdm.auto import tqdm

    todo = cells(study)
    if shard is not None:
        todo = shard_of(todo, *shard)
    synthesize(study)
    outcome = Outcome()
    failed: set[str] = set()

    def say(index: int, cell: Cell, what: str) -> None:
        tqdm.write(f"[{index}/{len(todo)}] {cell.name}: {what}", file=sys.stderr)

    for index, cell in enumerate(
        tqdm(todo, desc=f"study {study.name}", unit="cell", disable=None), 1
    ):
        if cell.done(study):
            outcome.skipped.append(cell.name)
            continue
        blocked = [d for d in cell.deps if d in failed]
        if blocked:
            failed.add(cell.name)
            outcome.failed[cell.name] = f"needs {blocked[0]}, which failed"
            continue
        _event(study, cell, "start")
        started = time.monotonic()
        try:
            run_cell(study, cell)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a failing cell must not stop the others
            failed.add(cell.name)
            message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            outcome.failed[cell.name] = message
            write_json(
                cell.failure(study),
                {"cell": cell.name, "error": message, "traceback": traceback.format_exc()},
            )
            _event(study, cell, "failed", error=message)
            say(index, cell, f"FAILED: {message}")
            continue
        cell.failure(study).unlink(missing_ok=True)
        _event(study, cell, "done")
        say(index, cell, f"done in {time.monotonic() - started:.0f} s")
        outcome.ran.append(cell.name)
    if outcome.skipped:
        print(f"{len(outcome.skipped)} cell(s) were already done", file=sys.stderr)
    return outcome


def plan(study: Study, shard: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """Each cell with its state: done, failed (last try), ready, or waiting for a dependency."""
    every = cells(study)
    chosen = shard_of(every, *shard) if shard else every
    done = {c.name for c in every if c.done(study)}
    rows = []
    for cell in chosen:
        if cell.name in done:
            state = "done"
        elif cell.failure(study).is_file():
            state = "failed"
        elif all(d in done for d in cell.deps):
            state = "ready"
        else:
            state = "waiting"
        rows.append({"cell": cell.name, "kind": cell.kind, "state": state, "group": cell.group})
    return rows
