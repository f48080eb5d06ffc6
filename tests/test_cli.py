"""The command line as a user runs it: find, train, masks info, and clear errors (exit 2)."""

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from original_configs import LT_NER, PRETRAIN_TRANS

from polyticket.cli import build_parser, main
from polyticket.masks import Mask

FAST = ["--max-steps", "8", "--batch-size", "16", "--learning-rate", "1e-3", "--eval-steps", "4"]


def ner_run(bert_dir, conll_files, out) -> list[str]:
    """The flags every find and train here shares: task, model, data, output, FAST."""
    train, dev = map(str, conll_files)
    model_and_data = ["--task", "ner", "--model", str(bert_dir), "--train-file", train]
    return [*model_and_data, "--eval-file", dev, "--out", str(out), *FAST]


def find_args(bert_dir, conll_files, out):
    prune = ["--language", "fr", "--target-sparsity", "0.5", "--rate", "0.25"]
    return ["find", *ner_run(bert_dir, conll_files, out), *prune]


@pytest.fixture(scope="module")
def found(tmp_path_factory, bert_dir, conll_files):
    out = tmp_path_factory.mktemp("cli") / "ner-fr"
    assert main(find_args(bert_dir, conll_files, out)) == 0
    return out


def train_args(bert_dir, conll_files, mask, out, *extra):
    return ["train", *ner_run(bert_dir, conll_files, out), "--mask", str(mask), *extra]


def test_find_then_train_with_the_ticket(found, bert_dir, conll_files, tmp_path, capsys, caplog):
    ticket = Mask.load(found / "ticket.safetensors")
    assert ticket.metadata["language"] == "fr" and ticket.metadata["task"] == "ner"
    out = tmp_path / "ner-fr-to-de"
    with caplog.at_level("WARNING", logger="polyticket"):
        code = main(train_args(bert_dir, conll_files, found / "ticket.safetensors", out,
                               "--language", "de"))  # fmt: skip
    assert code == 0
    assert "best f1" in capsys.readouterr().out
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sparsity"] == pytest.approx(ticket.sparsity())
    run = json.loads((out / "run.json").read_text())
    assert run["mask"]["language"] == "fr" and run["config"]["data"]["language"] == "de"
    assert "was made for the model" not in caplog.text and "not in the mask" not in caplog.text

    # a mask of another model with the same shapes (XLM-R's and mBERT's encoders): said
    other = ticket.save(tmp_path / "other-model.safetensors", model="xlm-roberta-base")
    with caplog.at_level("WARNING", logger="polyticket"):
        assert main(train_args(bert_dir, conll_files, other, tmp_path / "other")) == 0
    assert f"was made for the model xlm-roberta-base, used on {bert_dir}" in caplog.text

    # a mask that lacks a prunable matrix: that matrix trains dense, and the user is told
    first, *rest = ticket
    cut = Mask({name: ticket[name] for name in rest}).save(tmp_path / "cut.safetensors")
    with caplog.at_level("WARNING", logger="polyticket"):
        assert main(train_args(bert_dir, conll_files, cut, tmp_path / "cut")) == 0
    assert f"1 prunable matrices are not in the mask {cut} and stay dense (first: {first})" in (
        caplog.text
    )
    # and the sparsity it reports is of the model's prunable weights, not of the mask's own
    dense_share = ticket[first].numel() / sum(t.numel() for t in ticket.values())
    cut_metrics = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert cut_metrics["sparsity"] == pytest.approx(
        Mask({n: ticket[n] for n in rest}).sparsity() * (1 - dense_share)
    )


def test_train_from_random_init_and_config_file(bert_dir, conll_files, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        f"model: {bert_dir}\ntrain_file: {conll_files[0]}\neval_file: {conll_files[1]}\n"
        "init: random\nmax_steps: 4\nlearning-rate: 0.001\n"
    )
    out = tmp_path / "random"
    assert main(["train", "--config", str(cfg), "--max-steps", "2", "--out", str(out)]) == 0
    import json

    run = json.loads((out / "run.json").read_text())
    assert run["config"]["model"]["init"] == "random"
    assert run["config"]["train"]["max_steps"] == 2  # the flag wins over the file
    assert run["config"]["train"]["learning_rate"] == 0.001


def test_masks_info(found, capsys):
    assert main(["masks", "info", str(found / "ticket.safetensors")]) == 0
    text = capsys.readouterr().out
    assert "pruned" in text and "encoder.layer.1" in text and "language: fr" in text
    assert main(["masks", "info", "--json", str(found / "ticket.safetensors")]) == 0
    import json

    info = json.loads(capsys.readouterr().out)
    ticket = Mask.load(found / "ticket.safetensors")
    assert info["sparsity"] == pytest.approx(ticket.sparsity())
    assert info["by_layer"] == pytest.approx(ticket.sparsity_by_layer())
    assert info["metadata"]["language"] == "fr" and isinstance(info["metadata"]["seed"], int)
    assert info["metadata"]["task"] == "ner"


@pytest.mark.parametrize("fails", [False, True])
def test_a_command_leaves_its_process_group_at_the_end(found, tmp_path, fails):
    """Under torchrun a command ends by destroying its process group (gloo's threads left
    to the interpreter's exit once aborted a finished rank), also when it fails."""
    import torch.distributed as dist
    from accelerate.state import PartialState

    dist.init_process_group(
        "gloo", store=dist.HashStore(), rank=0, world_size=1
    )  # what accelerate does under torchrun
    try:
        mask = tmp_path / "missing.safetensors" if fails else found / "ticket.safetensors"
        assert main(["masks", "info", str(mask)]) == (2 if fails else 0)
        assert not dist.is_initialized()
        assert not PartialState._shared_state  # accelerate no longer counts its processes
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "polyticket", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def assert_clean_error(result, *needles):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("polyticket: error:"), result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_missing_file_is_a_clean_error(bert_dir, conll_files, tmp_path):
    result = run_cli(
        "train",
        "--model",
        bert_dir,
        "--train-file",
        tmp_path / "nope.conll",
        "--eval-file",
        conll_files[1],
        "--out",
        tmp_path / "x",
    )
    assert_clean_error(result, "nope.conll")


def test_malformed_line_names_file_and_line(bert_dir, conll_files, tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("John\tB-PER\nlives\n")
    result = run_cli(
        "train",
        "--model",
        bert_dir,
        "--train-file",
        bad,
        "--eval-file",
        conll_files[1],
        "--out",
        tmp_path / "x",
    )
    assert_clean_error(result, "bad.conll:2")


def test_mask_that_does_not_fit_names_parameter_and_shapes(bert_dir, conll_files, tmp_path):
    wrong = Mask(
        {"encoder.layer.0.attention.self.query.weight": torch.ones(16, 32, dtype=torch.bool)}
    )
    wrong.save(tmp_path / "wrong.safetensors")
    result = run_cli(
        "train",
        "--model",
        bert_dir,
        "--mask",
        tmp_path / "wrong.safetensors",
        "--train-file",
        conll_files[0],
        "--eval-file",
        conll_files[1],
        "--out",
        tmp_path / "x",
    )
    assert_clean_error(
        result, "encoder.layer.0.attention.self.query.weight", "[16, 32]", "[32, 32]"
    )


def test_offline_hub_model_and_dataset_are_clean_errors(conll_files, tmp_path):
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = run_cli(
        "train",
        "--model",
        "bert-base-multilingual-cased",
        "--train-file",
        conll_files[0],
        "--eval-file",
        conll_files[1],
        "--out",
        tmp_path / "x",
        env=offline,
    )
    assert_clean_error(result, "bert-base-multilingual-cased")
    result = run_cli(
        "train",
        "--model",
        "bert-base-multilingual-cased",
        "--dataset",
        "unimelb-nlp/wikiann",
        "--language",
        "fr",
        "--out",
        tmp_path / "x",
        env=offline,
    )
    assert_clean_error(result)


def test_failed_command_leaves_an_existing_run_untouched(found, bert_dir, conll_files, tmp_path):
    before = digest(found)
    bad = tmp_path / "bad.conll"
    bad.write_text("only-a-token\n")
    args = find_args(bert_dir, conll_files, found)
    args[args.index("--train-file") + 1] = str(bad)
    result = run_cli(*args[: -len(FAST)], *FAST)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = run_cli(
        *find_args(bert_dir, conll_files, found)[: -len(FAST)], *FAST[:-2], "--eval-steps", "2"
    )
    assert_clean_error(result, "eval_steps")
    assert digest(found) == before


def test_bad_flag_and_help():
    assert run_cli("find", "--no-such-flag").returncode == 2
    result = run_cli("find", "--help")
    assert result.returncode == 0 and "--target-sparsity" in result.stdout
    help_text = " ".join(result.stdout.split())  # argparse wraps lines
    from polyticket.criteria import CRITERIA
    from polyticket.tasks import TASKS

    for registry in (CRITERIA, TASKS):  # the names, read from the registry when printed
        assert f"one of {', '.join(registry.names())}" in help_text
    assert "(default: None)" not in help_text and help_text.count("(default:") > 10


def test_flags_are_spelled_out_and_the_version_is_printed():
    from polyticket import __version__

    refused = run_cli("find", "--target", "0.5")  # argparse would take it for --target-sparsity
    assert refused.returncode == 2 and "unrecognized arguments: --target" in refused.stderr
    assert "(see polyticket find --help)" in refused.stderr  # the page that lists its flags
    assert run_cli("study", "--pla", "s.yaml").returncode == 2
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"polyticket {__version__}"


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["study", "s.yaml", "--shard", "-1/2"], "is written --shard=-1/2"),
        (["find", "--learning-rate", "-1e-5"], "is written --learning-rate=-1e-5"),
        (["study", "s.yaml", "--shard", "--plan"], None),  # a flag after it: the value is missing
        (["study", "s.yaml", "--shard"], None),
    ],
)
def test_a_value_that_starts_with_a_dash_is_explained(argv, hint, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "expected one argument" in err
    assert (hint in err) if hint else "is written" not in err


def test_every_command_and_action_has_help():
    """Every help page formats (a help text with a stray % would not) and names itself."""

    def pages(parser, path):
        yield path, parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from pages(sub, [*path, name])

    seen = dict((" ".join(path), text) for path, text in pages(build_parser(), []))
    assert {"find", "train", "study", "report", "masks info", "data synth"} <= set(seen)
    for path, text in seen.items():
        assert text.startswith(f"usage: polyticket {path}".rstrip()), path


def test_models_prepare_takes_folders_and_several_paths_per_flag(tmp_path, monkeypatch, capsys):
    from polyticket.models import e5

    data = tmp_path / "data"
    data.mkdir()
    for name in ("fr.conll", "de.conll", "notes.bin"):
        (data / name).write_text("x\tO\n")
    extra = [tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"]
    seen = {}
    monkeypatch.setattr(
        e5, "prepare_e5_small", lambda home, vocab_from: seen.setdefault("files", vocab_from)
    )
    argv = ["models", "prepare", "e5-small", "--vocab-from", str(data), *map(str, extra[:2])]
    assert main([*argv, "--vocab-from", str(extra[2])]) == 0
    assert seen["files"] == [data / "de.conll", data / "fr.conll", *extra]
    (tmp_path / "empty").mkdir()
    assert main(["models", "prepare", "e5-small", "--vocab-from", str(tmp_path / "empty")]) == 2
    assert "holds no data files" in capsys.readouterr().err


def test_list_flags_take_several_values_and_repeat():
    from polyticket.cli import build_parser

    args = build_parser().parse_args(
        ["find", "--vocab-from", "a.conll", "b.conll", "--prune-exclude", "x", "--vocab-from", "c"]
    )
    assert args.vocab_from == [Path("a.conll"), Path("b.conll"), Path("c")]
    assert args.prune_exclude == ["x"]
    assert not hasattr(args, "prune_include")  # unset flags still leave the file's value alone


def original_config(path: Path, values: dict) -> Path:
    import json

    path.write_text(json.dumps(values))
    return path


def test_original_mlm_config_trains_mlm_on_its_json_lines(bert_dir, tmp_path, capsys):
    """configs/pretrain_trans.json: no task_name, a WikiExtractor train_file, an lth mask."""
    from transformers import AutoModelForMaskedLM

    from polyticket.compat import export_torch_prune
    from polyticket.data.synth import write_synth
    from polyticket.models.families import find_prunable

    # WikiExtractor --json writes JSON lines ({"text": ...}) under the name .json.
    wiki = write_synth("text", "en", 40, 0, tmp_path / "wiki.jsonl").rename(tmp_path / "wiki.json")
    prunable = find_prunable(AutoModelForMaskedLM.from_pretrained(bert_dir)).params
    torch.manual_seed(0)
    mask = Mask({name: torch.rand(p.shape) > 0.5 for name, p in prunable.items()})
    export_torch_prune(mask, tmp_path / "mask.pt", prefix="bert.")
    config = original_config(
        tmp_path / "pretrain_trans.json",
        PRETRAIN_TRANS
        | {
            "output_dir": str(tmp_path / "out"),
            "mask_dir": str(tmp_path / "mask.pt"),
            "model_name_or_path": str(bert_dir),
            "train_file": str(wiki),
        },
    )
    # The tiny model has 128 positions; the flags win over the file's 512 and budget.
    assert main(["train", "--config", str(config), "--block-size", "64", "--max-steps", "1"]) == 0
    assert "best perplexity" in capsys.readouterr().out


def test_original_imp_config_prunes_every_save_steps_on_local_files(
    bert_dir, conll_files, tmp_path, monkeypatch
):
    """configs/LT_ner_args.json with local files as flags: its dataset_name loses to them."""
    import json

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # a hub load fails fast instead of hanging
    local = {"output_dir": str(tmp_path / "out"), "model_name_or_path": str(bert_dir)}
    config = original_config(
        tmp_path / "LT_ner_args.json", LT_NER | local | {"save_steps": 3, "logging_steps": 3}
    )
    files = ["--train-file", str(conll_files[0]), "--eval-file", str(conll_files[1])]
    assert main(["find", "--config", str(config), *files, "--target-sparsity", "0.2"]) == 0
    levels = sorted(p.name for p in (tmp_path / "out").glob("level_*"))
    assert levels == ["level_00", "level_01", "level_02"]
    for level in levels:
        metrics = json.loads((tmp_path / "out" / level / "metrics.json").read_text())
        assert metrics["steps"] == 3  # save_steps per level, not 30 epochs per level


def test_a_line_per_evaluation_when_output_is_not_a_terminal(bert_dir, conll_files, tmp_path):
    """Issue 14.4: under a scheduler (stderr to a file) progress bars are hidden; a line per
    evaluation says how far training is."""
    import subprocess
    import sys

    train, dev = conll_files
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        subprocess.run(
            [sys.executable, "-m", "polyticket", "train", "--model", str(bert_dir)]
            + ["--train-file", str(train), "--eval-file", str(dev), "--max-steps", "4"]
            + ["--eval-steps", "2", "--out", str(tmp_path / "run")],
            stderr=stderr,
            check=True,
        )
    lines = [line for line in log.read_text().splitlines() if "steps/s" in line]
    assert [line.split(",")[0] for line in lines] == [
        "training: step 2/4",
        "training: step 4/4",
    ]
    assert all(" f1 " in line and " left" in line for line in lines)


@pytest.mark.parametrize("command, hint", [("study", True), ("find", True), ("train", False)])
def test_an_interrupt_says_whether_running_again_continues(command, hint, monkeypatch, capsys):
    import polyticket.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, f"_{command}", interrupted)
    argv = [command, "s.yaml"] if command == "study" else [command, "--out", "o"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.startswith("polyticket: interrupted")
    assert ("run it again to continue" in err) == hint


def test_output_into_a_closed_pipe_is_no_traceback(found):
    """`polyticket masks info FILE | head -1`: the reader leaving is not an error."""
    process = subprocess.Popen(
        [sys.executable, "-m", "polyticket", "masks", "info", str(found / "ticket.safetensors")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait() in (0, 141) and "Traceback" not in err and "Error" not in err
