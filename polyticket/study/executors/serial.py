"""The default executor: one cell after the other in this process (one shard of a job
array, one GPU). A dependency that another shard runs is waited for."""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

from polyticket.study.executors import EXECUTORS
from polyticket.study.executors.base import Executor
from polyticket.study.grid import Cell
from polyticket.study.runner import Outcome, execute, failed_elsewhere
from polyticket.study.spec import Study

POLL_SECONDS = 5.0


@EXECUTORS.register("serial")
class Serial(Executor):
    def run(self, study: Study, pending: list[Cell], outcome: Outcome) -> None:
        mine = {c.name for c in pending}
        bar = tqdm(pending, desc=f"study {study.name}", unit="cell", disable=None)
        for index, cell in enumerate(bar, 1):
            blocker = self._blocker(study, cell, mine, outcome)
            if blocker is not None:
                what = outcome.block(cell, blocker)
                tqdm.write(f"[{index}/{len(pending)}] {cell.name}: {what}", file=sys.stderr)
                continue
            started = time.monotonic()
            error = execute(study, cell)
            what = f"FAILED: {error}" if error else f"done in {time.monotonic() - started:.0f} s"
            tqdm.write(f"[{index}/{len(pending)}] {cell.name}: {what}", file=sys.stderr)
            outcome.record(cell, error)

    def _blocker(self, study: Study, cell: Cell, mine: set[str], outcome: Outcome) -> str | None:
        """The first dependency that failed; waits for one that another shard is running."""
        from polyticket.study.grid import cells

        by_name = {c.name: c for c in cells(study)} if cell.deps else {}
        for dep in cell.deps:
            if outcome.failed_or_blocked(dep):
                return dep
            if dep in mine or by_name[dep].done(study):
                continue
            tqdm.write(f"{cell.name}: waiting for {dep} (another shard)", file=sys.stderr)
            while not by_name[dep].done(study):
                if failed_elsewhere(study, dep):
                    return dep
                time.sleep(POLL_SECONDS)
        return None
