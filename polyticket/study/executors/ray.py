"""The Ray executor: every cell a Ray task on a cluster, each started as soon as the cells
it depends on are done (no barrier between waves), with its own CPU and GPU share.

    polyticket study paper.yaml --executor ray [--address HOST:6379] \\
        [--cpus-per-cell 1] [--gpus-per-cell 0.25] [--retries 2]

The cells run ``runner.execute`` on the workers and write into the study directory, which
every node must share (same path); the driver only schedules and, after the run, writes
``results/``. Ray's own task retries are off: a try that failed (an error in the cell, or
its worker or node gone) is resubmitted by the driver up to ``retries`` times, and a try
begins by checking the cell's result file, so no cell runs twice to completion.
Ray is an optional extra: ``pip install 'polyticket[ray]'``.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from polyticket.config import flag_of
from polyticket.errors import UserError
from polyticket.study.executors import EXECUTORS
from polyticket.study.executors.base import Executor
from polyticket.study.grid import Cell, cells
from polyticket.study.runner import Outcome, execute, failed_elsewhere, record_failure
from polyticket.study.spec import Study

log = logging.getLogger("polyticket")

# How often the driver looks again at a dependency that another shard runs.
POLL_SECONDS = 5.0
# Settings the workers need as the driver has them (model cache, offline mode).
FORWARDED_ENV = ("POLYTICKET_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")


def run_cell(study: Study, cell: Cell, last_try: bool) -> dict[str, Any]:
    """One try of a cell, on a worker. A cell that is already done (an earlier try completed
    it, then its worker died before answering) is not run again, and an earlier run's
    failure next to it goes."""
    if cell.done(study):
        study.layout.cell_failure(cell.name).unlink(missing_ok=True)
        return {"error": None, "seconds": 0.0, "node": socket.gethostname(), "again": True}
    started = time.monotonic()
    error = execute(study, cell, last_try)
    seconds = time.monotonic() - started
    _release_gpu_memory()
    return {"error": error, "seconds": seconds, "node": socket.gethostname(), "again": False}


def _release_gpu_memory() -> None:
    """A worker runs cell after cell: what the cell's tensors left in torch's cache goes back
    to the GPU, which other workers share."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


@dataclass
class _Try:
    cell: Cell
    number: int  # 1 for the first try


@dataclass
class _Progress:
    total: int
    finished: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self, cell: Cell, what: str) -> None:
        self.finished += 1
        elapsed = time.monotonic() - self.started
        print(
            f"[{self.finished}/{self.total}] {cell.name}: {what} ({elapsed:.0f} s into the run)",
            file=sys.stderr,
            flush=True,
        )


@EXECUTORS.register("ray")
class Ray(Executor):
    accepts = ("address", "cpus_per_cell", "gpus_per_cell", "retries")

    def __init__(self, **options: object):
        super().__init__(**options)
        for knob in ("cpus_per_cell", "gpus_per_cell", "retries"):
            value = self.options.get(knob)
            low = 0 if knob != "cpus_per_cell" else 1e-9  # no CPU at all would mean 1 to Ray
            if value is not None and not low <= float(value) < math.inf:  # NaN fails too
                flag = flag_of(knob)
                what = "above 0" if low else "of at least 0"
                raise UserError(f"{flag} must be a number {what}, got {value}")
        _check_answers(self.options.get("address"))

    def run(self, study: Study, pending: list[Cell], outcome: Outcome) -> None:
        if not pending:
            return
        ray = _import_ray()
        ours = not ray.is_initialized()
        if ours:
            # address None: $RAY_ADDRESS, else the cluster `ray start` started on this
            # machine, else a local one for this run (Ray's own rule)
            try:
                ray.init(
                    address=self.options.get("address"),
                    runtime_env={"env_vars": _forwarded_env()},
                    log_to_driver=False,  # the cells' own output stays in the workers' logs
                )
            except ValueError as exc:  # an address that is no HOST:PORT
                raise UserError(f"--address {self.options.get('address')}: {exc}") from None
        try:
            self._check_fits(ray, strict=ours)
            _Schedule(ray, study, pending, outcome, self.options).run()
        finally:
            if ours:
                ray.shutdown()

    def _check_fits(self, ray, strict: bool) -> None:
        """A cell that asks for more CPUs or GPUs than any node has would wait forever. On
        the cluster started for this run that is an error; a cluster of one's own may grow
        (an autoscaler), so there it is a warning."""
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        for knob, resource in (("cpus_per_cell", "CPU"), ("gpus_per_cell", "GPU")):
            wanted = float(self.options.get(knob) or 0)
            most = max((node.get(resource, 0.0) for node in nodes), default=0.0)
            if wanted > most:
                text = (
                    f"{flag_of(knob)} {wanted:g}: no node of the Ray cluster has "
                    f"that many {resource}s (the most is {most:g})"
                )
                if strict:
                    raise UserError(text)
                log.warning("%s; cells wait until one has", text)


def _check_answers(address: str | None) -> None:
    """Ray retries a HOST:PORT that nobody answers at for minutes, printing a warning every
    few seconds: a host that does not resolve or a port nobody listens at is said at once.
    Without ``--address``, Ray reads $RAY_ADDRESS; auto, local and ray:// keep Ray's rules."""
    flag, value = (
        ("--address", address) if address else ("$RAY_ADDRESS", os.environ.get("RAY_ADDRESS", ""))
    )
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or "://" in host:
        return
    host = host.removeprefix("[").removesuffix("]")  # [::1]:6379
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise UserError(
            f"{flag} {value}: no Ray cluster answers there ({exc.strerror or exc}); "
            "`ray start --head` on that machine prints the address to give"
        ) from None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'polyticket[ray]'") from None
    return ray


def _forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}


class _Schedule:
    """The driver's loop: submit the cells whose dependencies are done, wait for any try to
    end, record it or try again, until every cell is done, failed or blocked."""

    def __init__(self, ray, study: Study, pending: list[Cell], outcome: Outcome, options):
        self.ray, self.study, self.outcome = ray, study, outcome
        self.retries = int(options.get("retries", 1))
        resources = {
            "num_cpus": float(options.get("cpus_per_cell") or 1.0),
            "num_gpus": float(options.get("gpus_per_cell") or 0.0),
        }
        # max_retries=0: the driver decides about retries (it knows what a try left on disk).
        # The GPU share is an option of the call, not of ``ray.remote``: there, Ray would give
        # every GPU cell a fresh worker process (imports and CUDA's start each time)
        self.task = ray.remote(run_cell).options(max_retries=0, **resources)
        self.waiting = list(pending)  # dependencies first
        self.mine = {c.name for c in pending}
        self.every = {c.name: c for c in cells(study)}
        self.succeeded: set[str] = set()
        self.running: dict[Any, _Try] = {}
        self.progress = _Progress(len(pending))
        self.study_ref = ray.put(study)  # shipped once, not once per cell

    def run(self) -> None:
        while self.waiting or self.running:
            self._submit_ready()
            if not self.running:
                if not self.waiting:
                    break
                time.sleep(POLL_SECONDS)  # only cells waiting for another shard are left
                continue
            # with cells waiting for another shard, look at them again now and then
            timeout = POLL_SECONDS if self.waiting else None
            ended, _ = self.ray.wait(list(self.running), num_returns=1, timeout=timeout)
            for ref in ended:
                self._finish(self.running.pop(ref), ref)

    def _submit_ready(self) -> None:
        still = []
        for cell in self.waiting:
            blocker = self._failed_dependency(cell)
            if blocker is not None:
                self.progress.line(cell, self.outcome.block(cell, blocker))
            elif self._dependencies_done(cell):
                self._submit(_Try(cell, 1))
            else:
                still.append(cell)
        self.waiting = still

    def _submit(self, attempt: _Try) -> None:
        last_try = attempt.number > self.retries
        self.running[self.task.remote(self.study_ref, attempt.cell, last_try)] = attempt

    def _failed_dependency(self, cell: Cell) -> str | None:
        """A dependency that failed in this run, or for good in another shard's (a failure
        file beside a done cell is an earlier run's)."""
        for dep in cell.deps:
            if self.outcome.failed_or_blocked(dep):
                return dep
            elsewhere = dep not in self.mine and not self._done_on_disk(dep)
            if elsewhere and failed_elsewhere(self.study, dep):
                return dep
        return None

    def _dependencies_done(self, cell: Cell) -> bool:
        return all(dep in self.succeeded or self._done_on_disk(dep) for dep in cell.deps)

    def _done_on_disk(self, name: str) -> bool:
        """A dependency outside this run (done before, or by another shard)."""
        return name not in self.mine and self.every[name].done(self.study)

    def _finish(self, attempt: _Try, ref) -> None:
        cell = attempt.cell
        crashed = False
        try:
            answer = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:  # the worker or its node died
            answer = {"error": f"{type(exc).__name__}: {_first_line(exc)}", "seconds": None}
            crashed = True
        error = answer["error"]
        if error is not None and attempt.number <= self.retries:
            print(
                f"{cell.name}: try {attempt.number} failed ({error}); trying again",
                file=sys.stderr,
                flush=True,
            )
            self._submit(_Try(cell, attempt.number + 1))
            return
        if crashed and error is not None:  # no worker lived to write it down
            record_failure(self.study, cell, error)
        self.outcome.record(cell, error)
        if error is None:
            self.succeeded.add(cell.name)
            what = "done by an earlier try" if answer.get("again") else "done"
            if answer.get("seconds"):
                what += f" in {answer['seconds']:.0f} s on {answer['node']}"
        else:
            what = f"FAILED after {attempt.number} tries: {error}"
        self.progress.line(cell, what)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
