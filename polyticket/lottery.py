"""Iterative magnitude pruning with rewinding: levels of train -> prune -> rewind.

Run directory (DESIGN.md): ``level_KK/`` holds the mask a level trained with and its
metrics, and appears (by an atomic rename) only once the level is complete. The mask of the
next level is written, before that rename, into ``level_KK+1.partial/``, so a run that is
stopped anywhere continues from the first missing level and computes the same masks.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

import polyticket
from polyticket.compat import read_mask
from polyticket.config import FindConfig, TrainConfig, to_dict
from polyticket.errors import UserError
from polyticket.io import now, read_json, write_json
from polyticket.masks import Mask
from polyticket.models import load_config, load_tokenizer, model_revision
from polyticket.models.families import PruneScope, find_prunable
from polyticket.pruning import prune, random_like, sparsity_schedule
from polyticket.tasks.base import get_task
from polyticket.training import RunLog, make_accelerator, train

MASK = "mask.safetensors"
METRICS = "metrics.json"


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """θ0: a real copy on the CPU, never an alias of the live tensors."""
    return {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()}


@torch.no_grad()
def rewind(model: nn.Module, theta0: dict[str, torch.Tensor]) -> None:
    """Every weight, encoder and task head, back to θ0 (copied into the live tensors)."""
    model.load_state_dict(theta0)


def level_dir(run: Path, level: int) -> Path:
    return run / f"level_{level:02d}"


def partial_dir(run: Path, level: int) -> Path:
    return run / f"level_{level:02d}.partial"


def completed_levels(run: Path) -> list[int]:
    return sorted(int(p.name[6:]) for p in run.glob("level_[0-9][0-9]") if p.is_dir())


def select_ticket(
    levels: list[dict[str, Any]],
    epsilon: float,
    greater_is_better: bool,
    dense: float | None = None,
) -> dict:
    """The sparsest level whose best score is within ``epsilon`` of the dense score: the
    dense level's own by default, or a given one (a study's mean over seeds). Level 0 when
    no level is within."""
    dense = levels[0]["best_score"] if dense is None else dense
    rows = []
    for entry in levels:
        gap = entry["best_score"] - dense if greater_is_better else dense - entry["best_score"]
        rows.append(
            {
                "level": entry["level"],
                "sparsity": entry["sparsity"],
                "score": entry["best_score"],
                "within": gap >= -epsilon,
            }
        )
    chosen = max((r for r in rows if r["within"]), key=lambda r: r["sparsity"], default=rows[0])
    return {
        "level": chosen["level"],
        "sparsity": chosen["sparsity"],
        "score": chosen["score"],
        "dense_score": dense,
        "epsilon": epsilon,
        "greater_is_better": greater_is_better,
        "rule": "sparsest level whose best score is within epsilon of the dense score",
        "levels": rows,
    }


def _check_same_run(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    previous = read_json(path)
    if previous.get("config") != config:
        changed = sorted(
            f"{section}.{key}"
            for section, values in config.items()
            if isinstance(values, dict)
            for key, value in values.items()
            if previous.get("config", {}).get(section, {}).get(key) != value
        )
        raise UserError(
            f"{path.parent} holds a run with other settings ({', '.join(changed) or 'config'}); "
            "use another --out to start a new run"
        )
    return previous


def _versions() -> dict[str, str]:
    return {
        "polyticket": polyticket.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _prepare(config: FindConfig | TrainConfig):
    """Task, data, and the model with its head (θ0 drawn from the seed)."""
    task = get_task(config.data.task, load_config(config.model))
    accelerator = make_accelerator(config.train)
    tokenizer = load_tokenizer(config.model)
    data = task.prepare(config.data, tokenizer, config.train.seed)
    model = task.build_model(config.model, data, config.train.seed)
    return task, accelerator, data, model


def _scope(config: FindConfig | TrainConfig) -> PruneScope:
    return PruneScope(
        config.model.prune_pooler, config.model.prune_include, config.model.prune_exclude
    )


def control_mask(config: TrainConfig, model: nn.Module) -> Mask | None:
    """The mask ``train`` uses: a file (polyticket's or the original code's .pt), a random
    mask, or one-shot magnitude pruning of θ0; None for dense training."""
    choice = config.mask
    if choice is None:
        return None
    if choice not in ("random", "oneshot"):
        return read_mask(Path(choice), dict(model.base_model.named_parameters()))
    reference = Mask.load(config.sparsity_from) if config.sparsity_from else None
    if config.sparsity is None and reference is None:
        raise UserError(f"--mask {choice} needs --sparsity or --sparsity-from")
    prunable = find_prunable(model, _scope(config))
    seed = config.train.seed
    if choice == "random" and reference is not None and config.sparsity is None:
        mask = random_like(reference, seed, config.layer_matched)
    else:
        sparsity = config.sparsity if config.sparsity is not None else reference.sparsity()
        mask = prune(
            "magnitude" if choice == "oneshot" else "random",
            prunable.params,
            Mask.ones(prunable.shapes),
            sparsity,
            prunable.groups,
            seed=seed,
        )
    return Mask(mask, {"method": choice, "seed": str(seed)})


def _run_info(config: FindConfig | TrainConfig, model: nn.Module, task) -> dict[str, Any]:
    return {
        "config": to_dict(config),
        "model": config.model.model,
        "revision": model_revision(model) or config.model.revision,
        "versions": _versions(),
        "metric": task.metric,
        "greater_is_better": task.greater_is_better,
    }


def find(config: FindConfig, run: Path) -> dict[str, Any]:
    """Run (or continue) IMP into ``run``; return the ticket description."""
    schedule = sparsity_schedule(
        config.prune.rate, config.prune.target_sparsity, config.prune.levels
    )
    run_json = run / "run.json"
    previous = _check_same_run(run_json, to_dict(config)) if run_json.exists() else {}
    task, accelerator, data, model = _prepare(config)
    main = accelerator.is_main_process
    prunable = find_prunable(model, _scope(config))
    theta0 = snapshot(model)
    info = {
        **_run_info(config, model, task),
        "started": previous.get("started", now()),
        "prunable": {
            "matrices": len(prunable.params),
            "weights": sum(p.numel() for p in prunable.params.values()),
        },
    }
    if main:
        write_json(run_json, info)
    log = RunLog(run, accelerator)
    meta = {
        "model": config.model.model,
        "task": task.name,
        "language": config.data.language,
        "seed": config.train.seed,
        "method": config.prune.method,
    }

    done = completed_levels(run)
    for level, sparsity in enumerate(schedule):
        if level in done:
            continue
        if level == 0:
            mask = Mask.ones(prunable.shapes)
        else:
            mask = Mask.load(partial_dir(run, level) / MASK)
            mask.check_fits(prunable.shapes, source=str(partial_dir(run, level) / MASK))
        rewind(model, theta0)
        result = train(
            model,
            task,
            data,
            config.train,
            accelerator,
            prunable.params,
            mask,
            log,
            {"level": level, "desc": f"level {level} ({float(sparsity):.0%} pruned)"},
        )
        if main:
            staging = partial_dir(run, level)
            mask.save(staging / MASK, **meta, level=level)
            write_json(
                staging / METRICS, {"level": level, "sparsity": mask.sparsity(), **result.to_json()}
            )
            if level + 1 < len(schedule):
                following = prune(
                    config.prune.method,
                    prunable.params,
                    mask,
                    schedule[level + 1],
                    prunable.groups,
                    config.prune.scope,
                    seed=config.train.seed + level,
                )
                following.save(partial_dir(run, level + 1) / MASK, **meta, level=level + 1)
            os.replace(staging, level_dir(run, level))
        accelerator.wait_for_everyone()
    log.close()

    levels = [read_json(level_dir(run, k) / METRICS) for k in range(len(schedule))]
    ticket = select_ticket(levels, config.prune.epsilon, task.greater_is_better)
    if main:
        shutil.copyfile(level_dir(run, ticket["level"]) / MASK, run / ".ticket.tmp")
        os.replace(run / ".ticket.tmp", run / "ticket.safetensors")
        write_json(run / "ticket.json", ticket)
        write_json(run_json, {**info, "ended": now()})
    return ticket


def finetune(config: TrainConfig, out: Path) -> dict[str, Any]:
    """Train once, optionally with a mask (a ticket, a transferred or a control mask)."""
    task, accelerator, data, model = _prepare(config)
    params = dict(model.base_model.named_parameters())
    mask = control_mask(config, model)
    if mask is not None:
        mask.check_fits({n: p.shape for n, p in params.items()}, source=str(config.mask))
    described = (
        {"source": config.mask, "sparsity": mask.sparsity(), **mask.metadata}
        if mask is not None
        else None
    )
    info = {**_run_info(config, model, task), "started": now(), "mask": described}
    if accelerator.is_main_process:
        write_json(out / "run.json", info)
        if mask is not None:
            mask.save(out / MASK, model=config.model.model)
    log = RunLog(out, accelerator)
    result = train(
        model, task, data, config.train, accelerator, params, mask, log, {"desc": "training"}
    )
    log.close()
    metrics = {"sparsity": mask.sparsity() if mask is not None else 0.0, **result.to_json()}
    if accelerator.is_main_process:
        write_json(out / METRICS, metrics)
        write_json(out / "run.json", {**info, "ended": now()})
    return metrics
