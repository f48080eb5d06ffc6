"""Every benchmark in one run: a table of ratios measured side by side, and a JSON file.

    python benchmarks/run.py [--out benchmarks/results/bench.json] [--smoke] [--only NAME]
                             [--study STUDY.yaml]

Each benchmark module has ``rows(smoke)``: dictionaries with ``benchmark``, ``row`` and the
figures (``time``/``memory``/``ratio``/``value``; absolute seconds only beside a ratio).
``--smoke`` runs tiny shapes in seconds: every row, no figure worth quoting (the tests).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # the benchmarks import each other by module name

BENCHMARKS = ("train_step", "precision", "overlap", "mask_files", "padding", "study_throughput")
FIGURES = ("time", "memory", "ratio", "value")


def run(names=BENCHMARKS, smoke: bool = False, study: Path | None = None) -> dict:
    """``study``: the study file ``study_throughput`` runs (default: the demo's)."""
    import importlib

    rows = []
    for name in names:
        options = {"study_file": study} if name == "study_throughput" and study else {}
        rows += importlib.import_module(name).rows(smoke, **options)
    return {
        "machine": machine(),
        "torch": torch.__version__,
        "smoke": smoke,
        "rows": rows,
    }


def machine() -> str:
    where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        where += f", {torch.cuda.get_device_name()}"
    return where


def table(rows: list[dict]) -> str:
    # as wide as the longest row's name: a cut name loses what tells rows apart (their ends)
    width = max([len("row"), *(len(row["row"]) for row in rows)])
    lines = [f"{'benchmark':17} {'row':{width}} " + " ".join(f"{f:>8}" for f in FIGURES)]
    for row in rows:
        cells = [_figure(row.get(f)) for f in FIGURES]
        lines.append(f"{row['benchmark']:17} {row['row']:{width}} " + " ".join(cells))
    return "\n".join(lines)


def _figure(value) -> str:
    return f"{value:8.3f}" if isinstance(value, (int, float)) else f"{'-':>8}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench.json")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, every row, seconds")
    parser.add_argument("--only", choices=BENCHMARKS, action="append", help="one benchmark")
    parser.add_argument("--study", type=Path, help="the study the throughput rows run")
    args = parser.parse_args(argv)
    report = run(args.only or BENCHMARKS, args.smoke, args.study)
    print(f"\n{report['machine']}; torch {report['torch']}")
    print(table(report["rows"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten: {args.out}")
    return report


if __name__ == "__main__":
    main()
