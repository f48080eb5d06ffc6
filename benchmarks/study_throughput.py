"""Study throughput on one GPU: cells per hour with the Ray executor at 1, 2, 4 and 8 cells
sharing the GPU, relative to one at a time.

    python benchmarks/study_throughput.py [--study studies/demo.yaml] [--smoke]

Each packing runs the whole study afresh (its own output folder, a local Ray cluster) with
``--gpus-per-cell 1/k``, after one untimed preparation of the study's model (``warm_up``):
every packing finds it ready, none pays its conversion. Without a CUDA device there is
nothing to share: the rows say so.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

PACKINGS = (1, 2, 4, 8)
DEFAULT_STUDY = Path(__file__).parents[1] / "studies" / "demo.yaml"


def warm_up(study_file: Path) -> None:
    """The study's one-off costs, paid once and not timed: converting and trimming its
    offline model (``prepare_models``, into POLYTICKET_HOME, which every later run finds
    done) and reading its files into the page cache. Timed in the first packing instead,
    they made 1 per GPU slower and so inflated every "k per GPU / 1" ratio."""
    from polyticket.study import load_study
    from polyticket.study.runner import prepare_models

    prepare_models(load_study(study_file, out=Path(tempfile.mkdtemp()) / "run"))


def cells_per_hour(study_file: Path, per_gpu: int) -> float:
    from polyticket.study import load_study, run_study

    study = load_study(study_file, out=Path(tempfile.mkdtemp()) / "run")
    started = time.monotonic()
    outcome = run_study(study, executor="ray", gpus_per_cell=1 / per_gpu, retries=0)
    if outcome.failed:
        raise RuntimeError(f"cells failed: {outcome.failed}")
    return len(outcome.ran) / (time.monotonic() - started) * 3600


def rows(smoke: bool = False, study_file: Path = DEFAULT_STUDY) -> Iterator[dict]:
    """One row per packing, yielded as each is measured (a whole study each: minutes)."""
    if smoke or not torch.cuda.is_available():
        # a whole study per packing takes minutes: the smoke run only lists the rows
        note = "smoke run: not measured" if smoke else "no CUDA device"
        for k in PACKINGS:
            row = f"{k} cells per GPU / 1, {study_file.name}"
            yield {"benchmark": "study_throughput", "row": row, "note": note}
        return
    card = torch.cuda.get_device_name()
    warm_up(study_file)
    alone = None
    for k in PACKINGS:
        speed = cells_per_hour(study_file, k)
        alone = alone or speed
        yield {
            "benchmark": "study_throughput",
            "row": f"{k} cells per GPU / 1, {study_file.name} ({card})",
            "ratio": speed / alone,
            "cells_per_hour": speed,
        }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=DEFAULT_STUDY)
    parser.add_argument("--smoke", action="store_true", help="the rows only, not measured")
    args = parser.parse_args(argv)
    found = []
    for row in rows(args.smoke, args.study):
        print(row, flush=True)
        found.append(row)
    return found


if __name__ == "__main__":
    main()
