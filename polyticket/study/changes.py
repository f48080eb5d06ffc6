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
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyticket.criteria import knobs_unread_by
from polyticket.errors import UserError
from polyticket.io import file_fingerprint, read_json
from polyticket.study.grid import Cell
from polyticket.study.spec import Study, synth_changes

# How many changed cells the refusal names before "and N more" (--plan lists them all).
NAMED = 3


def _differences(old: dict[str, Any], new: dict[str, Any]) -> dict[str, str]:
    """Knob -> ``key old -> new`` for the knobs the cell reads now that differ, but for the
    knobs of pruning criteria the cell does not use (a magnitude IMP cell or a random mask
    does not depend on ``early_bird_threshold``). A knob recorded and no longer read (a
    random mask recorded ``rate`` before polyticket 0.4.8) is no difference."""
    unread = knobs_unread_by(new.get("method"))
    return {
        key: f"{key} {json.dumps(old.get(key))} -> {json.dumps(new[key])}"
        for key in sorted(new)
        if old.get(key) != new[key] and key not in unread
    }


@dataclass
class Changed:
    """The cells of a study made with other settings or data than it has now."""

    # cell -> what differs, of the cells with work to keep or to refuse for (done, or IMP
    # levels completed)
    cells: dict[str, list[str]] = field(default_factory=dict)
    # of those, the cells continued from what they made (``CellKind.continues``)
    continued: set[str] = field(default_factory=set)
    # changed cells with no work to keep (failed, or stopped in a first level): they only
    # start afresh with the study's settings, as a user who fixed a setting after a failure
    # expects, and no other cell has read their files
    unstarted: set[str] = field(default_factory=set)

    def stale(self, every: list[Cell]) -> set[str]:
        """What ``--rerun-changed`` makes again: the changed cells and every cell that read
        their files, but a continued cell's (its files stand)."""
        return with_dependents(every, set(self.cells) - self.continued) | self.continued


def changed_cells(study: Study, cells: list[Cell]) -> Changed:
    """Every cell that recorded other settings than the study's or read other data (cells
    that recorded none are not judged), sorted as ``Changed`` says."""
    from polyticket.study.kinds import CELL_KINDS
    from polyticket.study.kinds.base import in_out

    out = Changed()
    digests: dict[Path, str] = {}  # each data file hashed once, and only if it may differ
    remade = synth_changes(study)  # synthetic files the next run writes again
    for cell in cells:
        path = study.layout.cell_settings(cell.name)
        if not path.is_file():
            continue
        kind = CELL_KINDS[cell.kind]()
        try:
            recorded = read_json(path)
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, dict):
            # cells made before 0.4.4 recorded paths inside out in full: read them as {out}/…
            recorded = {key: in_out(value, study.out) for key, value in recorded.items()}
            knobs = _differences(recorded, kind.settings(study, cell))
            data = _data_changes(study, cell.name, digests, remade)
        else:
            knobs, data = {}, [f"{path.name} unreadable"]
        if not knobs and not data:
            continue
        if not cell.done(study) and not study.layout.cell(cell.name).completed_levels():
            out.unstarted.add(cell.name)
            continue
        out.cells[cell.name] = [*knobs.values(), *data]
        if not data and kind.continues(set(knobs)):
            out.continued.add(cell.name)
    return out


def _data_changes(
    study: Study, name: str, digests: dict[Path, str], remade: dict[Path, str]
) -> list[str]:
    """The data and model files a cell read (its run.json's fingerprints) that have another
    size now, or that were written after the cell and hash otherwise, or that the next run
    writes again (``remade``: a changed ``synth:`` entry): regenerated at the same path (a
    local model saved again), they would otherwise leave the cell's results standing for
    inputs that are gone. A file no longer there is left to the study's own check of its
    data."""
    run_json = study.layout.cell(name).run_json
    try:
        info = read_json(run_json)
        recorded = [*info["inputs"]["data"], *info["inputs"].get("model", [])]
        made = run_json.stat().st_mtime
    except (OSError, ValueError, KeyError, TypeError):
        return []
    moved = _moved(study, name, info.get("out"))
    out = []
    for entry in recorded:
        path = moved(Path(str(entry.get("file", ""))))
        if not path.is_file():
            continue
        if path.resolve() in remade:
            out.append(remade[path.resolve()])
            continue
        stat = path.stat()
        if stat.st_size == entry.get("size") and stat.st_mtime <= made:
            continue
        if path not in digests:
            digests[path] = file_fingerprint(path)["sha256"]
        if stat.st_size != entry.get("size") or digests[path] != entry.get("sha256"):
            out.append(f"{path.name} changed since the cell read it")
    return out


def _moved(study: Study, name: str, made_in: str | None) -> Callable[[Path], Path]:
    """Where a file a cell read is now: one inside the study's folder when the cell ran (its
    data, made by ``synth:``) is at the same place in the folder now, wherever the study was
    copied. ``made_in``: the folder the cell ran in (``run.json``'s ``out``, recorded since
    polyticket 0.4.8; paths recorded before stay as they are)."""
    here = study.layout.cell(name).root
    depth = len(here.relative_to(study.layout.root).parts)  # cells/ner/en/seed1/imp
    if made_in is None or len(Path(made_in).parts) <= depth:
        return lambda path: path
    then = Path(made_in).parents[depth - 1]  # the study's folder when the cell ran
    now = Path(os.path.abspath(study.layout.root))

    def located(path: Path) -> Path:
        return now / path.relative_to(then) if path.is_relative_to(then) else path

    return located


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


def refuse(study: Study, changed: Changed, every: list[Cell]) -> UserError:
    """The error that stops a study whose cells were made with other settings."""
    items = list(changed.cells.items())
    named = [f"{name} ({', '.join(diffs)})" for name, diffs in items[:NAMED]]
    more = len(items) - len(named)
    listed = "; ".join(named) + (f"; and {more} more" if more else "")
    dependents = len(changed.stale(every) - set(changed.cells))
    also = f" and {dependents} cell(s) that read them" if dependents else ""
    kept = len(changed.continued)
    continued = f"; {kept} continue from their levels" if kept else ""
    return UserError(
        f"{study.path}: {len(items)} cell(s) in {study.out} were made with other settings "
        f"than the study file's: {listed}. Run again with --rerun-changed to rerun them{also}"
        f"{continued}, or give another out; --plan lists them all"
    )


def forget(study: Study, names: set[str]) -> None:
    """Remove what the cells wrote, so that they run again."""
    layout = study.layout
    for name in sorted(names):
        shutil.rmtree(layout.cell(name).root, ignore_errors=True)
        shutil.rmtree(layout.cell_partial(name).root, ignore_errors=True)
        layout.cell_failure(name).unlink(missing_ok=True)


def make_again(study: Study, every: list[Cell], changed: Changed) -> int:
    """Remove what ``--rerun-changed`` makes again (``Changed.stale``): all a cell wrote,
    but for a continued cell its result alone, so that it runs and continues from the rest.
    How many cells run again."""
    from polyticket.study.kinds import CELL_KINDS

    stale = changed.stale(every)
    forget(study, stale - changed.continued)
    for cell in every:
        if cell.name in changed.continued:
            CELL_KINDS[cell.kind]().reopen(study, cell)
    return len(stale)
