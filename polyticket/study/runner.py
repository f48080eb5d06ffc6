"""Running a study: the cells not done yet, through an executor, then nothing else.

``execute`` runs one cell wherever it is called (this process, a Ray worker, another
machine sharing the study directory): it logs the start and the end to ``study.log.jsonl``,
and records a failure in ``NAME.failed.json`` instead of raising, so the rest go on.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field

from polyticket.errors import UserError
from polyticket.io import now, write_json
from polyticket.study.changes import changed_cells, forget, make_again, refuse
from polyticket.study.grid import Cell, cells, shard_of
from polyticket.study.kinds import CELL_KINDS
from polyticket.study.spec import Study, synthesize


@dataclass
class Outcome:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)  # not run: a dependency failed
    # seconds of the steps before the cells: writing the data, preparing the model
    phases: dict[str, float] = field(default_factory=dict)

    def record(self, cell: Cell, error: str | None) -> None:
        if error is None:
            self.ran.append(cell.name)
        else:
            self.failed[cell.name] = error

    def block(self, cell: Cell, dependency: str) -> str:
        """``cell`` is not run: ``dependency`` failed. What to print."""
        self.blocked[cell.name] = dependency
        return f"not run: needs {dependency}, which failed"

    def failed_or_blocked(self, name: str) -> bool:
        return name in self.failed or name in self.blocked


def event(study: Study, cell: Cell, what: str, **extra: object) -> None:
    study.out.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": now(), "cell": cell.name, "event": what, **extra})
    # one short write in append mode: lines of concurrent shards do not interleave
    with open(study.layout.log, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def execute(study: Study, cell: Cell, last_try: bool = True) -> str | None:
    """Run one cell; None when it succeeded, else the error. A failed last try is written
    to disk (``record_failure``): other shards then stop waiting for the cell. A try starts
    by removing an earlier run's failure, so that they wait while it is tried again."""
    study.layout.cell_failure(cell.name).unlink(missing_ok=True)
    event(study, cell, "start", host=socket.gethostname(), pid=os.getpid())
    started = time.monotonic()
    try:
        CELL_KINDS[cell.kind]().run(study, cell)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a failing cell must not stop the others
        message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        if last_try:
            record_failure(study, cell, message, traceback.format_exc())
        else:
            event(study, cell, "try failed", error=message)
        return message
    event(study, cell, "done", seconds=round(time.monotonic() - started, 2))
    return None


def record_failure(study: Study, cell: Cell, message: str, trace: str = "") -> None:
    """A cell failed for good in this run: ``NAME.failed.json`` and a "failed" event."""
    write_json(
        study.layout.cell_failure(cell.name),
        {"cell": cell.name, "error": message, "traceback": trace},
    )
    event(study, cell, "failed", error=message)


def failed_elsewhere(study: Study, name: str) -> bool:
    return study.layout.cell_failure(name).is_file()


def remove_changed(study: Study) -> int:
    """``study --plan --rerun-changed``: remove the cells made with other settings and every
    cell that read them, running nothing, so that shards started next make them again (one
    pass, before the shards: a shard removing them itself could pull a cell from under
    another). How many were removed."""
    every = cells(study)
    changed = changed_cells(study, every)
    forget(study, changed.unstarted)
    return make_again(study, every, changed) + len(changed.unstarted)


def run_study(
    study: Study,
    shard: tuple[int, int] | None = None,
    executor: str = "serial",
    rerun_changed: bool = False,
    **options,
) -> Outcome:
    """Run every cell of the (shard of the) study that is not done, dependencies first.
    Cells made with other settings are refused, or with ``rerun_changed`` run again with
    every cell that depends on them."""
    import sys

    from polyticket.study.executors import EXECUTORS

    runner = EXECUTORS[executor](**options)  # its options checked before any cell is touched
    every = cells(study)
    todo = shard_of(every, *shard) if shard is not None else every
    mine = {cell.name for cell in todo}
    started = time.monotonic()
    # First: a changed synth: entry writes its files again, which makes their readers changed.
    synthesize(study)
    data_seconds = time.monotonic() - started
    # Every shard judges the whole study: one of its cells may read a changed cell of another.
    changed = changed_cells(study, every)
    forget(study, changed.unstarted & mine)  # they start afresh with the study's settings
    if changed.cells:
        if not rerun_changed:
            raise refuse(study, changed, every)
        if shard is not None:  # removing them here could pull a cell from under another shard
            raise UserError(
                f"{study.path}: {len(changed.stale(every))} cell(s) are to be made again, in "
                f"several shards: remove them once first (`polyticket study {study.path} "
                "--plan --rerun-changed`), then start the shards, which make them again"
            )
        again = make_again(study, every, changed)
        print(f"rerunning {again} cell(s) made with other settings", file=sys.stderr)
    outcome = Outcome()
    started = time.monotonic()
    check_data(study)
    outcome.phases["data"] = data_seconds + time.monotonic() - started
    pending = []
    for cell in todo:
        (outcome.skipped.append(cell.name) if cell.done(study) else pending.append(cell))
    if pending:
        started = time.monotonic()
        prepare_models(study)
        outcome.phases["model"] = time.monotonic() - started
    runner.run(study, pending, outcome)
    if outcome.skipped:
        print(f"{len(outcome.skipped)} cell(s) were already done", file=sys.stderr)
    return outcome


def check_data(study: Study) -> None:
    """Every task's local data files, in each of its languages, before any cell runs: a
    missing one would fail each of its cells after the others had run."""
    from polyticket.tasks.base import data_file

    for key, spec in study.tasks.items():
        for language in spec.languages:
            for split, knob in (("train", "train_file"), ("eval", "eval_file")):
                path = data_file(spec.config.data, split, language)
                if path is not None and not path.is_file():
                    raise UserError(
                        f"{study.path}: tasks.{key}.{knob}: no file {path} (language {language})"
                    )


def prepare_models(study: Study) -> None:
    """Convert and trim the offline model once, before the cells, rather than inside the
    first cell that loads it (hub models are left to their cache)."""
    from polyticket.models import resolve

    seen = set()
    for spec in study.tasks.values():
        model = spec.config.model
        key = (model.model, tuple(map(str, model.vocab_from)))
        if key not in seen:
            seen.add(key)
            resolve(model.model, model.vocab_from)


def seconds_by_kind(study: Study, names: list[str]) -> dict[str, tuple[int, float]]:
    """Cells and seconds per cell kind, of the cells ``names`` as last run (from the study
    log, so it holds for any executor)."""
    kinds = {cell.name: cell.kind for cell in cells(study)}
    wanted = set(names)
    last: dict[str, float] = {}
    if study.layout.log.is_file():
        for line in study.layout.log.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            if entry.get("event") == "done" and entry["cell"] in wanted and "seconds" in entry:
                last[entry["cell"]] = entry["seconds"]
    totals: dict[str, list[float]] = defaultdict(list)
    for name, seconds in last.items():
        totals[kinds.get(name, "?")].append(seconds)
    return {kind: (len(times), sum(times)) for kind, times in totals.items()}


def plan(study: Study, shard: tuple[int, int] | None = None) -> list[dict[str, object]]:
    """Each cell with its state (changed: made with other settings; stale: done, but it
    read a changed cell, so --rerun-changed makes it again too; then done, failed on its
    last try, started (levels done, continues from them), ready, or waiting for a
    dependency), its kind and its expected cost."""
    every = cells(study)
    chosen = shard_of(every, *shard) if shard else every
    changed = changed_cells(study, every)
    stale = changed.stale(every)
    done = {c.name for c in every if c.done(study)}
    rows = []
    for cell in chosen:
        if cell.name in changed.cells:
            state = "changed"
        elif cell.name in stale and cell.name in done:
            state = "stale"
        elif cell.name in done:
            state = "done"
        elif failed_elsewhere(study, cell.name):
            state = "failed"
        elif study.layout.cell(cell.name).completed_levels():
            state = "started"  # an IMP cell with levels done: it continues from them
        elif all(d in done for d in cell.deps):
            state = "ready"
        else:
            state = "waiting"
        row = {"cell": cell.name, "kind": cell.kind, "state": state, "cost": cell.cost}
        if cell.name in changed.cells:
            row["changes"] = changed.cells[cell.name]
            row["continues"] = cell.name in changed.continued
        rows.append(row)
    return rows
