"""Iterative magnitude pruning with rewinding (``find``), and one training run (``train``).

A ``find`` run is levels of train -> score -> prune -> rewind (``layout.RunLayout``): a
level's folder appears, by an atomic rename, only once the level is complete, and the mask
of the next level is written into its partial folder before that rename, so a run stopped
anywhere continues from the first missing level and computes the same masks. The
criterion (``polyticket.criteria``) scores the weights; ``pruning.select`` removes the
lowest; ``tickets.epsilon_ticket`` picks the ticket.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

import polyticket
from polyticket.compat import read_mask
from polyticket.config import CONTROL_MASKS, FindConfig, TrainConfig, logging_knobs, to_dict
from polyticket.criteria import CRITERIA
from polyticket.criteria.base import Level
from polyticket.errors import UserError
from polyticket.io import copy_file, now, read_json, write_json
from polyticket.layout import RunLayout
from polyticket.masks import Mask
from polyticket.models import (
    load_config,
    load_tokenizer,
    model_fingerprint,
    model_revision,
    position_limit,
)
from polyticket.models.families import Prunable, PruneScope, find_prunable
from polyticket.pruning import magnitude_prune, random_like, random_prune, select, sparsity_schedule
from polyticket.tasks.base import DRAW, get_task
from polyticket.tickets import epsilon_ticket
from polyticket.training import (
    RunLog,
    epoch_steps,
    make_accelerator,
    run_steps,
    train,
    wait_for_everyone,
)

log = logging.getLogger("polyticket")


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """θ0: a real copy on the CPU, never an alias of the live tensors."""
    return {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()}


@torch.no_grad()
def rewind(model: nn.Module, theta0: dict[str, torch.Tensor]) -> None:
    """Every weight, encoder and task head, back to θ0 (copied into the live tensors)."""
    model.load_state_dict(theta0)


# Knobs a find run is continued under when they change: the ticket rule (the ticket is
# picked again from the levels) and where the levels stop (``_fit_levels``).
CONTINUABLE = {
    f"prune.{name}"
    for name in ("epsilon", "target_sparsity", "levels", "budget_steps", "budget_epochs")
}


def _changed(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, str]:
    """``section.knob`` -> ``section.knob old -> new`` for every setting that differs, but
    knobs that change no result (``log_steps``). A knob the earlier run did not record (it
    came with a later polyticket) is unchanged when it has its default."""
    defaults = to_dict(FindConfig())
    unrecorded = logging_knobs(FindConfig)
    missing = object()
    changed = {}
    for section, values in current.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            before = previous.get(section, {}).get(key, missing)
            if before is missing:
                before = defaults.get(section, {}).get(key)
            if before != value and key not in unrecorded:
                name = f"{section}.{key}"
                changed[name] = f"{name} {json.dumps(before)} -> {json.dumps(value)}"
    return dict(sorted(changed.items()))


def _check_same_settings(run: RunLayout, config: dict[str, Any]) -> dict[str, Any]:
    """The earlier run's ``run.json``, if it may be continued with ``config``: the same
    settings but for ``CONTINUABLE`` ones, which it is continued under where its schedule
    can tell (``_previous_schedule``)."""
    previous = read_json(run.run_json)
    if "prune" not in previous.get("config", {}):
        raise UserError(
            f"{run.root} holds a training run (polyticket train), not a find run to continue: "
            "use another --out"
        )
    changed = _changed(previous.get("config", {}), config)
    if _previous_schedule(previous) is not None:
        changed = {k: v for k, v in changed.items() if k not in CONTINUABLE}
    if changed:
        what = f"{run.root} holds a run with other settings ({', '.join(changed.values())})"
        if run.completed_levels():
            raise UserError(f"{what}; use another --out to start a new run")
        # Not removed here even so: it may be hours into its first level.
        raise UserError(
            f"{what} and no completed level; delete it to start afresh there, or use another --out"
        )
    return previous


def _previous_schedule(previous: dict[str, Any]) -> list[Fraction] | None:
    """The sparsities of an earlier run's levels: recorded, or (runs of polyticket 0.4.7 and
    before) computed from its settings where no budget cut them."""
    if "schedule" in previous:
        return [Fraction(s) for s in previous["schedule"]]
    prune = previous["config"]["prune"]
    if prune.get("budget_steps") is not None or prune.get("budget_epochs") is not None:
        return None
    return sparsity_schedule(prune["rate"], prune["target_sparsity"], prune.get("levels"))


def _fit_levels(run: RunLayout, previous: dict[str, Any], schedule: list[Fraction]) -> None:
    """Fit a continued run's levels to another schedule (a larger or smaller target, other
    levels or budget, at the same rate): the levels both schedules share stand but for the
    last of them, which is trained again, since a level is trained toward its successor (the
    next mask is pruned from its trained weights; early-bird stops by it). Levels beyond it
    are removed, and the ticket is picked again."""
    before = _previous_schedule(previous) if previous else None
    if before is None or before == schedule:
        return
    shared = 0
    while shared < min(len(before), len(schedule)) and before[shared] == schedule[shared]:
        shared += 1
    beyond = [p for p in run.root.glob("level_*") if p.is_dir()]
    for path in sorted(beyond, reverse=True):
        if int(path.name[len("level_") :][:2]) >= shared:
            shutil.rmtree(path)
    last = shared - 1
    if run.level(last).root.is_dir():  # its mask stays: the one it was pruned to
        shutil.rmtree(run.partial(last).root, ignore_errors=True)
        run.level(last).root.rename(run.partial(last).root)
        run.partial(last).metrics.unlink(missing_ok=True)
    run.ticket.unlink(missing_ok=True)
    run.ticket_json.unlink(missing_ok=True)
    log.warning(
        "continuing the run in %s up to %.0f%% pruned (it went up to %.0f%%): the levels "
        "before level %d stand, level %d is trained again", run.root,
        100 * float(schedule[-1]), 100 * float(before[-1]), last, last,
    )  # fmt: skip


def _check_same_processes(
    run: RunLayout, previous: dict[str, Any], schedule: list[Fraction], processes: int
) -> None:
    """A run trains its levels under the process count it started with: a level's steps and
    its batches (--batch-size per process) depend on it, and the ticket rule compares the
    levels. A run that recorded no count (made before polyticket did) is not checked: its
    count is unknown, and refusing it could strand a run that was started the same way."""
    before = previous.get("processes")
    if before is None or before == processes:
        return
    if _previous_schedule(previous) == schedule and len(run.completed_levels()) >= len(schedule):
        return  # nothing is trained: the ticket is picked again from the levels as they are
    raise UserError(
        f"{run.root} was trained by {before} process(es) and this is {processes}: a level's "
        f"steps and batches depend on the count; continue it under {before} process(es), or "
        "use another --out to start a new run"
    )


def _check_same_inputs(run: RunLayout, previous: dict[str, Any], inputs: dict) -> None:
    """A run continues only on the data and model it started with, drawn as it was: the
    same contents (a file's path may differ: a run folder moved with its data, or started
    from another directory, is the same run)."""
    before = previous.get("inputs")
    if before is None:
        return
    old = {_input_key(i) for i in before["data"] + before.get("model", [])}
    new = {_input_key(i): i for i in inputs["data"] + inputs["model"]}
    differs = sorted(new[key].get("file", key) for key in new.keys() - old)
    if differs == [_input_key(DRAW)]:
        # the draws of one seed share few examples: levels on both would be no one run
        raise UserError(
            f"{run.root} was started on examples drawn otherwise (polyticket 0.4.7 and before "
            "drew each language's --max-train-samples/--max-eval-samples share by its place "
            "in --language): use another --out to start a new run"
        )
    differs = [key for key in differs if key != _input_key(DRAW)]
    if differs or len(old) != len(new):
        what = Path(differs[0]).name if differs else "an input"
        raise UserError(
            f"{run.root} was started on other inputs: {what} changed since "
            "(its size or content); use another --out to start a new run"
        )


def _input_key(fingerprint: dict[str, Any]) -> str:
    if "file" in fingerprint:
        return f"{fingerprint['size']} {fingerprint['sha256']}"
    if fingerprint == DRAW:
        return "the draw of the examples"
    return " ".join(str(fingerprint.get(k)) for k in ("dataset", "config", "split", "model"))


def _versions() -> dict[str, str]:
    return {
        "polyticket": polyticket.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _prepare(config: FindConfig | TrainConfig):
    """Task, data, and the model with its head (θ0 drawn from the seed)."""
    model_config = load_config(config.model)
    task = get_task(config.data.task, model_config)
    # longer inputs would fail deep in the forward pass, after the data and model loaded
    length = getattr(config.data, task.length_knob)
    limit = position_limit(model_config)
    if limit and length > limit:
        raise UserError(
            f"{task.length_knob} {length} is longer than {config.model.model}'s {limit} positions: "
            f"use at most {limit}"
        )
    accelerator = make_accelerator(config.train)
    processes = accelerator.num_processes
    if accelerator.is_main_process:
        # Said once, by the main process. Several processes always: on a CPU `accelerate
        # launch` starts one without --multi_gpu, and a missing line shows it. One process
        # only with --verbose: it is the default, and every cell of a study has one.
        log.log(
            logging.WARNING if processes > 1 else logging.INFO,
            "%d process%s: an optimizer step takes %d examples (--batch-size %d per process%s)",
            processes, "es" if processes > 1 else "",
            processes * config.train.batch_size * config.train.gradient_accumulation_steps,
            config.train.batch_size,
            f", {config.train.gradient_accumulation_steps} batches accumulated"
            if config.train.gradient_accumulation_steps > 1 else "",
        )  # fmt: skip
    tokenizer = load_tokenizer(config.model)
    data = task.prepare(config.data, tokenizer, config.train.seed)
    model = task.build_model(config.model, data, config.train.seed)
    return task, accelerator, data, model


def control_mask(config: TrainConfig, model: nn.Module) -> Mask | None:
    """The mask ``train`` uses: a file (polyticket's or the original code's .pt), a random
    mask, or one-shot magnitude pruning of θ0; None for dense training."""
    choice = config.mask
    if choice in (None, "dense"):
        return None
    if choice not in CONTROL_MASKS:
        return read_mask(Path(choice), dict(model.base_model.named_parameters()))
    reference = Mask.load(config.sparsity_from) if config.sparsity_from else None
    if config.sparsity is None and reference is None:
        raise UserError(f"--mask {choice} needs --sparsity or --sparsity-from")
    prunable = find_prunable(model, PruneScope.of(config.model))
    seed = config.train.seed
    if choice == "random" and reference is not None and config.sparsity is None:
        mask = random_like(reference, seed, prunable.ranking(config.scope))
    else:
        sparsity = config.sparsity if config.sparsity is not None else reference.sparsity()
        start = (
            Mask.ones(prunable.shapes)
            if config.start_from is None
            else _start_mask(config, model, prunable)
        )
        ranking = prunable.ranking(config.scope)
        try:
            if choice == "oneshot":
                mask = magnitude_prune(prunable.params, start, sparsity, ranking)
            else:
                mask = random_prune(start, sparsity, seed, ranking)
        except UserError as exc:  # a start sparser than the target, in some unit
            if config.start_from is None:
                raise
            raise UserError(
                f"--start-from {config.start_from}: {exc}; give a denser start mask or a "
                "higher --sparsity"
            ) from None
    return Mask(mask, {"method": choice, "seed": str(seed)})


def _start_mask(config: TrainConfig, model: nn.Module, prunable: Prunable) -> Mask:
    """``--start-from``'s mask over the prunable matrices: a matrix it lacks starts whole, a
    matrix it has that is not prunable here (embeddings, the pooler) is left out, and said."""
    params = dict(model.base_model.named_parameters())
    source = str(config.start_from)
    given = read_mask(Path(config.start_from), params)
    given.check_fits({n: p.shape for n, p in params.items()}, source=source)
    given.check_covers(prunable.params, config.model.model, source=source)
    outside = [n for n in given if n not in prunable.params]
    if outside:
        log.warning(
            "%d matrices of %s are not prunable here and are left out (first: %s; "
            "--prune-include or --prune-pooler would prune them)",
            len(outside), source, outside[0],
        )  # fmt: skip
    inside = {n: given[n] for n in given if n in prunable.params}
    return Mask({**Mask.ones(prunable.shapes), **inside})


def _run_info(
    config: FindConfig | TrainConfig, out: Path, model: nn.Module, task, data, accelerator
) -> dict[str, Any]:
    return {
        "out": os.path.abspath(out),  # where the inputs' paths were seen from (a copy moves)
        "config": to_dict(config),
        "model": config.model.model,
        "revision": model_revision(model) or config.model.revision,
        "inputs": {"data": data.inputs},
        "versions": _versions(),
        "mixed_precision": accelerator.mixed_precision,  # what "auto" became here
        # --batch-size is per process: a step takes processes x batch size examples
        "processes": accelerator.num_processes,
        "metric": task.metric,
        "greater_is_better": task.greater_is_better,
    }


def fit_budget(
    schedule: list[Fraction], config: FindConfig, examples: int, processes: int, report: bool = True
) -> list[Fraction]:
    """The levels that fit the whole run's budget (``--budget-steps`` or
    ``--budget-epochs``, the original IMP scripts' total), each a full training run; the
    schedule unchanged without a budget. Printed (where ``report``: by the main process
    only), so a user sees what will run."""
    batches = math.ceil(examples / (config.train.batch_size * processes))
    per_level = run_steps(config.train, batches)
    budget = config.prune.budget_steps
    if config.prune.budget_epochs is not None:
        budget = math.floor(config.prune.budget_epochs * epoch_steps(config.train, batches))
    if budget is not None:
        if budget < 2 * per_level:  # level 0 is the dense model: no ticket without level 1
            raise UserError(
                f"the budget of {budget} steps does not fit two levels of {per_level} steps "
                "(level 0 trains the dense model, pruning starts at level 1): give at least "
                f"{2 * per_level} steps, or shorter levels"
            )
        schedule = schedule[: budget // per_level]
        if report and schedule[-1] < config.prune.target_sparsity and config.prune.levels is None:
            log.warning(
                "the budget of %d steps stops at %.0f%%, short of the target %.0f%%",
                budget, 100 * float(schedule[-1]), 100 * config.prune.target_sparsity,
            )  # fmt: skip
    if report:
        log.warning(
            "IMP schedule: levels 0-%d, %d steps each, up to %.0f%% pruned, %d steps in all%s",
            len(schedule) - 1,
            per_level,
            100 * float(schedule[-1]),
            len(schedule) * per_level,
            f" (budget {budget} steps)" if budget is not None else "",
        )
    return schedule


def find(config: FindConfig, out: Path) -> dict[str, Any]:
    """Run (or continue) IMP into ``out``; return the ticket description."""
    run = RunLayout(Path(out))
    schedule = sparsity_schedule(
        config.prune.rate, config.prune.target_sparsity, config.prune.levels
    )
    criterion = CRITERIA[config.prune.method]()
    previous = _check_same_settings(run, to_dict(config)) if run.run_json.exists() else {}
    task, accelerator, data, model = _prepare(config)
    info = _run_info(config, run.root, model, task, data, accelerator)
    # Only a resumable run needs the model's files hashed (a train run is never continued).
    info["inputs"]["model"] = model_fingerprint(config.model)
    _check_same_inputs(run, previous, info["inputs"])
    main = accelerator.is_main_process
    schedule = fit_budget(schedule, config, len(data.train), accelerator.num_processes, report=main)
    _check_same_processes(run, previous, schedule, accelerator.num_processes)
    # the count the levels were trained under: a run that did not record it is assumed to
    # have run as it is continued (its levels trained from now on are)
    info["processes"] = previous.get("processes", accelerator.num_processes)
    if main:
        _fit_levels(run, previous, schedule)
    wait_for_everyone(accelerator)
    prunable = find_prunable(model, PruneScope.of(config.model))
    theta0 = snapshot(model)
    info |= {
        "schedule": [str(sparsity) for sparsity in schedule],  # what a continued run fits
        "started": previous.get("started", now()),
        "prunable": {
            "matrices": len(prunable.params),
            "weights": sum(p.numel() for p in prunable.params.values()),
        },
    }
    if main:
        write_json(run.run_json, info)
    run_log = RunLog(run, accelerator)
    meta = {
        "model": config.model.model,
        "task": task.name,
        "language": config.data.language,
        "seed": config.train.seed,
        "method": config.prune.method,
        # for the per-head overlap of ``compare`` (T5 configs call it num_heads)
        "num_heads": getattr(model.config, "num_attention_heads", None)
        or getattr(model.config, "num_heads", None),
    }

    done = run.completed_levels()
    if main and done and len(done) < len(schedule):
        log.warning(
            "continuing the run in %s: levels 0-%d are done, from level %d", run.root,
            max(done), len(done),
        )  # fmt: skip
        if main:
            run_log.log(0, "resume", {"level": len(done)})  # a restart, in the run's log
    for k, sparsity in enumerate(schedule):
        if k in done:
            continue
        if k == 0:
            mask = Mask.ones(prunable.shapes)
        else:
            mask = Mask.load(run.partial(k).mask)
            mask.check_fits(prunable.shapes, source=str(run.partial(k).mask))
        rewind(model, theta0)
        level = Level(
            params=prunable.params,
            mask=mask,
            next_sparsity=schedule[k + 1] if k + 1 < len(schedule) else sparsity,
            ranking=prunable.ranking(config.prune.scope),
            seed=config.train.seed + k,
            model=model,
            data=data,
            accelerator=accelerator,
            prune=config.prune,  # criteria's knobs (issue 9.8)
            train=config.train,
        )
        result = train(
            model,
            task,
            data,
            config.train,
            accelerator,
            prunable.params,
            mask,
            run_log,
            {"level": k, "desc": f"level {k} ({float(sparsity):.0%} pruned)"},
            callbacks=criterion.callbacks(level),
        )
        if main:
            staging = run.partial(k)
            mask.save(staging.mask, **meta, level=k)
            if k + 1 < len(schedule):  # scoring first: the criterion may report in level.stats
                following = select(
                    criterion.scores(level), mask, level.next_sparsity, level.ranking
                )
                following.save(run.partial(k + 1).mask, **meta, level=k + 1)
            metrics = {"level": k, "sparsity": mask.sparsity(), **result.to_json()}
            write_json(staging.metrics, {**metrics, **level.stats})
            staging.root.replace(run.level(k).root)
        wait_for_everyone(accelerator)
    run_log.close()

    levels = [read_json(run.level(k).metrics) for k in range(len(schedule))]
    ticket = epsilon_ticket(levels, config.prune.epsilon, task.greater_is_better)
    if main:
        copy_file(run.level(ticket["level"]).mask, run.ticket)
        write_json(run.ticket_json, ticket)
        write_json(run.run_json, {**info, "ended": now()})
    return ticket


def finetune(config: TrainConfig, out: Path) -> dict[str, Any]:
    """Train once, optionally with a mask (a ticket, a transferred or a control mask)."""
    run = RunLayout(Path(out))
    if run.run_json.exists():  # a find run's levels or another training would be overwritten
        what = "a run" if run.metrics.exists() else "an unfinished run"
        raise UserError(
            f"{run.root} holds {what} already (a training run is not continued): use another "
            "--out, or remove it to train again"
        )
    task, accelerator, data, model = _prepare(config)
    params = dict(model.base_model.named_parameters())
    mask = control_mask(config, model)
    prunable = find_prunable(model, PruneScope.of(config.model)).params
    if mask is not None:
        mask.check_fits({n: p.shape for n, p in params.items()}, source=str(config.mask))
        mask.check_covers(prunable, config.model.model, source=str(config.mask))
    described = (
        {"source": config.mask, "sparsity": mask.sparsity(), **mask.metadata}
        if mask is not None
        else None
    )
    info = {
        **_run_info(config, run.root, model, task, data, accelerator),
        "started": now(),
        "mask": described,
    }
    if accelerator.is_main_process:
        write_json(run.run_json, info)
        if mask is not None:
            mask.save(run.mask, model=config.model.model)
    run_log = RunLog(run, accelerator)
    result = train(
        model, task, data, config.train, accelerator, params, mask, run_log, {"desc": "training"}
    )
    run_log.close()
    # the share of the model's prunable weights the mask prunes (the mask's own sparsity,
    # in run.json, counts only the matrices it has)
    pruned = sum(int((~mask[n]).sum()) for n in prunable if n in mask) if mask is not None else 0
    total = sum(p.numel() for p in prunable.values())
    metrics = {"sparsity": pruned / total if total else 0.0, **result.to_json()}
    if accelerator.is_main_process:
        write_json(run.metrics, metrics)
        write_json(run.run_json, {**info, "ended": now()})
    return metrics
