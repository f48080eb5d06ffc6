"""The ``polyticket`` command: parse, call the API, print. Mistakes in input exit with status 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from polyticket.config import FindConfig, TrainConfig, add_flags, parse_config
from polyticket.errors import UserError


def _find(args: argparse.Namespace) -> None:
    from polyticket.lottery import find

    config = parse_config(FindConfig, args)
    ticket = find(config, config.out)
    print(
        f"ticket: level {ticket['level']}, {ticket['sparsity']:.1%} pruned, "
        f"score {ticket['score']:.4f} (dense {ticket['dense_score']:.4f})"
    )
    print(f"written: {config.out / 'ticket.safetensors'}")


def _train(args: argparse.Namespace) -> None:
    from polyticket.lottery import finetune

    config = parse_config(TrainConfig, args)
    metrics = finetune(config, config.out)
    print(
        f"best {metrics['metric']} {metrics['best_score']:.4f} at step {metrics['best_step']} "
        f"of {metrics['steps']} ({metrics['sparsity']:.1%} pruned)"
    )
    print(f"written: {config.out / 'metrics.json'}")


def _masks_info(args: argparse.Namespace) -> None:
    from polyticket.masks import Mask

    mask = Mask.load(args.file)
    summary = {
        "file": str(args.file),
        "tensors": len(mask),
        "weights": mask.numel(),
        "kept": mask.kept(),
        "sparsity": mask.sparsity(),
        "metadata": mask.metadata,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polyticket",
        description="Find, compare and transfer lottery tickets of multilingual models.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="more log output")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        format="polyticket: %(message)s", level=logging.INFO if args.verbose else logging.WARNING
    )
    if not args.verbose:
        # Load reports of every newly initialised head drown what polyticket itself says.
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    try:
        args.handler(args)
    except UserError as exc:
        print(f"polyticket: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("polyticket: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
