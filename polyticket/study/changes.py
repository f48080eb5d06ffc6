"""A study never mixes settings: cells made with other settings than the study file's now.

Every cell records what made it (``cell.json``: its task's knobs and its own, see
``CellKind.settings``) and the fingerprints of the data it read (``run.json``). When the
study file changes (``rate``, ``max_steps``, a data file's name) or a data file does (written
again at the same path), the cells made before no longer belong to it: running refuses
until the user reruns them (``--rerun-changed``, with every cell that read their files) or
starts in another ``out``; the results leave them out and say so.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from polyticket.criteria import knobs_unread_by
from polyticket.errors import UserError
from polyticket.io import file_fingerprint, read_json
from polyticket.study.grid import Cell
from polyticket.study.spec import Study

# How many changed cells the refusal names before "and N more" (--plan lists them all).
NAMED = 3


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The knobs that differ, but for the knobs of pruning criteria the cell does not use
    (a magnitude IMP cell or a random mask does not depend on ``early_bird_threshold``)."""
    unread = knobs_unread_by(new.get("method"))
    return [
        f"{key} {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key) and key not in unread
    ]


def changes(study: Study, cells: list[Cell]) -> dict[str, list[str]]:
    """Cell name -> its knobs that differ (``max_steps 4 -> 6``) and its data files that
    changed since it read them, for every cell that recorded other settings than the study's
    or read other data; cells that recorded none are not judged."""
    from polyticket.study.kinds import CELL_KINDS
    from polyticket.study.kinds.base import in_out

    out = {}
    digests: dict[Path, str] = {}  # each data file hashed once, and only if it may differ
    for cell in cells:
        path = study.layout.cell_settings(cell.name)
        if not path.is_file():
            continue
        try:
            recorded = read_json(path)
        except (OSError, ValueError):
            recorded = None
        if not isinstance(recorded, dict):
            out[cell.name] = [f"{path.name} unreadable"]
            continue
        # cells made before 0.4.4 recorded paths inside out in full: read them as {out}/…
        recorded = {key: in_out(value, study.out) for key, value in recorded.items()}
        differs = _differences(recorded, CELL_KINDS[cell.kind]().settings(study, cell))
        differs += _data_changes(study.layout.cell(cell.name).run_json, digests)
        if differs:
            out[cell.name] = differs
    return out


def _data_changes(run_json: Path, digests: dict[Path, str]) -> list[str]:
    """The data and model files a cell read (its run.json's fingerprints) that have another
    size now, or that were written after the cell and hash otherwise: regenerated at the
    same path (a local model saved again), they would otherwise leave the cell's results
    standing for inputs that are gone. A file no longer there is left to the study's own
    check of its data."""
    try:
        inputs = read_json(run_json)["inputs"]
        recorded = [*inputs["data"], *inputs.get("model", [])]
        made = run_json.stat().st_mtime
    except (OSError, ValueError, KeyError, TypeError):
        return []
    out = []
    for entry in recorded:
        path = Path(str(entry.get("file", "")))
        if not path.is_file():
            continue
        stat = path.stat()
        if stat.st_size == entry.get("size") and stat.st_mtime <= made:
            continue
        if path not in digests:
            digests[path] = file_fingerprint(path)["sha256"]
        if stat.st_size != entry.get("size") or digests[path] != entry.get("sha256"):
            out.append(f"{path.name} changed since the cell read it")
    return out


def changed_cells(study: Study, cells: list[Cell]) -> tuple[dict[str, list[str]], set[str]]:
    """``changes`` split into the cells with work to keep or to refuse for (done, or IMP
    levels completed) and the names of those with none (failed, or stopped in a first
    level): those only start afresh with the study's settings, as a user who fixed a setting
    after a failure expects, and no other cell has read their files."""
    changed = changes(study, cells)
    by_name = {cell.name: cell for cell in cells}
    unstarted = {
        name
        for name in changed
        if not by_name[name].done(study) and not study.layout.cell(name).completed_levels()
    }
    return {k: v for k, v in changed.items() if k not in unstarted}, unstarted


def with_dependents(every: list[Cell], names: set[str]) -> set[str]:
    """``names`` and every cell that reads, directly or not, the files of one of them."""
    closed = set(names)
    grew = True
    while grew:
        grew = False
        for cell in every:
            if cell.name not in closed and closed & set(cell.deps):
                closed.add(cell.name)
                grew = True
    return closed


def refuse(study: Study, changed: dict[str, list[str]], dependents: int) -> UserError:
    """The error that stops a study whose cells were made with other settings."""
    named = [f"{name} ({', '.join(diffs)})" for name, diffs in list(changed.items())[:NAMED]]
    more = len(changed) - len(named)
    listed = "; ".join(named) + (f"; and {more} more" if more else "")
    also = f" (and {dependents} cell(s) that depend on them)" if dependents else ""
    return UserError(
        f"{study.path}: {len(changed)} cell(s) in {study.out} were made with other settings "
        f"than the study file's: {listed}. Run again with --rerun-changed to rerun them{also}, "
        "or give another out; --plan lists them all"
    )


def forget(study: Study, names: set[str]) -> None:
    """Remove what the cells wrote, so that they run again."""
    layout = study.layout
    for name in sorted(names):
        shutil.rmtree(layout.cell(name).root, ignore_errors=True)
        shutil.rmtree(layout.cell_partial(name).root, ignore_errors=True)
        layout.cell_failure(name).unlink(missing_ok=True)
