"""IMP runs: level layout, exact sparsities, resumption, ticket selection."""

from pathlib import Path

import pytest

import polyticket.lottery as lottery
from polyticket.config import DataArgs, FindConfig, ModelArgs, PruneArgs, TrainArgs
from polyticket.io import read_json
from polyticket.masks import Mask
from polyticket.tickets import EPSILON, SEED_STD, epsilon_ticket, seed_std_tickets


def config(bert_dir, conll_files, **prune):
    return FindConfig(
        model=ModelArgs(model=str(bert_dir)),
        data=DataArgs(train_file=conll_files[0], eval_file=conll_files[1], language="fr"),
        # CPU: resumed runs are compared bit for bit with uninterrupted ones
        train=TrainArgs(
            learning_rate=1e-3, batch_size=16, max_steps=12, eval_steps=6, seed=5, cpu=True
        ),
        prune=PruneArgs(**({"rate": 0.2, "target_sparsity": 0.5} | prune)),
    )


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, bert_dir, conll_files):
    run = tmp_path_factory.mktemp("full") / "run"
    ticket = lottery.find(config(bert_dir, conll_files), run)
    return run, ticket


def test_run_directory_layout_and_sparsities(full_run):
    run, ticket = full_run
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("level")) == [
        "level_00",
        "level_01",
        "level_02",
        "level_03",
    ]
    assert not list(run.glob("*.partial"))
    sparsities = [
        Mask.load(run / f"level_{k:02d}" / "mask.safetensors").sparsity() for k in range(4)
    ]
    assert sparsities == pytest.approx([0.0, 0.2, 0.4, 0.5], abs=1e-4)
    metrics = read_json(run / "level_02" / "metrics.json")
    assert metrics["steps"] == 12 and [h["step"] for h in metrics["history"]] == [6, 12]
    assert metrics["best_score"] == max(h["f1"] for h in metrics["history"])
    info = read_json(run / "run.json")
    assert info["config"]["prune"]["target_sparsity"] == 0.5 and "ended" in info
    assert info["prunable"]["matrices"] == 12 and info["mixed_precision"] == "no"
    assert (run / "log.jsonl").read_text().count('"kind": "eval"') == 8
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    chosen = read_json(run / "ticket.json")
    assert chosen == ticket
    assert Mask.load(run / "ticket.safetensors") == Mask.load(
        run / f"level_{ticket['level']:02d}" / "mask.safetensors"
    )


def test_interrupted_run_resumes_to_identical_masks(
    full_run, tmp_path, bert_dir, conll_files, monkeypatch
):
    run = tmp_path / "run"
    real_train = lottery.train
    calls = []

    def dies_in_level_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if killed in the middle of level 2
        return real_train(*args, **kwargs)

    monkeypatch.setattr(lottery, "train", dies_in_level_two)
    with pytest.raises(KeyboardInterrupt):
        lottery.find(config(bert_dir, conll_files), run)
    assert (run / "level_01").is_dir() and not (run / "level_02").exists()
    assert (run / "level_02.partial" / "mask.safetensors").is_file()

    monkeypatch.setattr(lottery, "train", real_train)
    trained = []
    monkeypatch.setattr(lottery, "train", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    ticket = lottery.find(config(bert_dir, conll_files), run)
    assert len(trained) == 2  # levels 2 and 3 only
    full, _ = full_run
    for level in range(4):
        name = f"level_{level:02d}/mask.safetensors"
        assert Mask.load(run / name) == Mask.load(full / name), level
        assert read_json(run / f"level_{level:02d}/metrics.json")["losses"] == pytest.approx(
            read_json(full / f"level_{level:02d}/metrics.json")["losses"]
        )
    assert ticket == read_json(full / "ticket.json")


def test_a_finished_run_is_not_retrained(full_run, bert_dir, conll_files, monkeypatch):
    run, ticket = full_run
    monkeypatch.setattr(lottery, "train", lambda *a, **k: pytest.fail("retrained"))
    assert lottery.find(config(bert_dir, conll_files), run) == ticket


def test_other_settings_in_an_existing_run_are_refused(full_run, bert_dir, conll_files):
    run, _ = full_run
    with pytest.raises(lottery.UserError, match="prune.rate"):
        lottery.find(config(bert_dir, conll_files, rate=0.1), run)


def _copy_of(run: Path, where: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, where / "run"))


def _same_levels(run: Path, fresh: Path, count: int) -> None:
    assert sorted(p.name for p in run.glob("level_*")) == [f"level_{k:02d}" for k in range(count)]
    for k in range(count):
        level = f"level_{k:02d}"
        assert Mask.load(run / level / "mask.safetensors") == Mask.load(
            fresh / level / "mask.safetensors"
        ), level
        assert read_json(run / level / "metrics.json")["losses"] == pytest.approx(
            read_json(fresh / level / "metrics.json")["losses"]
        ), level
    assert read_json(run / "ticket.json") == read_json(fresh / "ticket.json")


@pytest.mark.parametrize("target, retrained", [(0.7, [2, 3, 4]), (0.3, [1, 2])])
def test_a_run_continues_to_another_target_as_a_fresh_run_would_have_made_it(
    full_run, tmp_path, bert_dir, conll_files, monkeypatch, caplog, target, retrained
):
    """[0, .2, .4, .5] continued to 0.7 ([0, .2, .4, .6, .7]) keeps levels 0-1 and trains
    level 2 again (the level after it, now 60%, is pruned from its trained weights), then
    levels 3 and 4; to 0.3 ([0, .2, .3]) it keeps level 0, trains level 1 again and makes
    level 2 at 30%, dropping the old levels 2 and 3. Either way the levels equal a fresh
    run's at the new target."""
    run = _copy_of(full_run[0], tmp_path)
    if target == 0.3:  # a run of polyticket 0.4.7 recorded no schedule: it is computed
        info = read_json(run / "run.json")
        del info["schedule"]
        (run / "run.json").write_text(__import__("json").dumps(info))
    real_train = lottery.train
    levels_trained = []

    def recording(*args, **kwargs):
        levels_trained.append(args[8]["level"])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(lottery, "train", recording)
    with caplog.at_level("WARNING", logger="polyticket"):
        ticket = lottery.find(config(bert_dir, conll_files, target_sparsity=target), run)
    assert levels_trained == retrained
    assert f"the levels before level {retrained[0]} stand" in caplog.text
    monkeypatch.setattr(lottery, "train", real_train)
    fresh = tmp_path / "fresh"
    assert lottery.find(config(bert_dir, conll_files, target_sparsity=target), fresh) == ticket
    _same_levels(run, fresh, len(retrained) + retrained[0])
    assert not list(run.glob("*.partial"))
    assert read_json(run / "run.json")["config"]["prune"]["target_sparsity"] == target


def test_another_epsilon_or_log_interval_picks_the_ticket_again_without_training(
    full_run, tmp_path, bert_dir, conll_files, monkeypatch
):
    run = _copy_of(full_run[0], tmp_path)
    monkeypatch.setattr(lottery, "train", lambda *a, **k: pytest.fail("retrained"))
    ticket = lottery.find(config(bert_dir, conll_files, epsilon=0.5), run)
    scores = [read_json(run / f"level_{k:02d}/metrics.json") for k in range(4)]
    assert ticket == epsilon_ticket(scores, 0.5, True) == read_json(run / "ticket.json")
    assert ticket["epsilon"] == 0.5
    assert Mask.load(run / "ticket.safetensors") == Mask.load(
        run / f"level_{ticket['level']:02d}/mask.safetensors"
    )
    logged = config(bert_dir, conll_files, epsilon=0.5)
    logged.train.log_steps = 3  # what is logged, not what is trained
    assert lottery.find(logged, run) == ticket


def levels(*scores):
    return [{"level": k, "sparsity": k / 10, "best_score": s} for k, s in enumerate(scores)]


def test_ticket_is_the_sparsest_level_within_epsilon_for_either_direction():
    higher = epsilon_ticket(levels(0.80, 0.81, 0.795, 0.70, 0.789), 0.01, True)
    assert higher["level"] == 2 and higher["dense_score"] == 0.80
    assert higher["rule"] == EPSILON
    assert [r["within"] for r in higher["levels"]] == [True, True, True, False, False]
    # perplexity: lower is better
    lower = epsilon_ticket(levels(10.0, 10.5, 9.0, 12.0), 0.6, False)
    assert lower["level"] == 2
    assert epsilon_ticket(levels(10.0, 12.0), 0.5, False)["level"] == 0
    # exactly ε away counts, though 0.79 - 0.80 is -0.010000000000000009 in floats
    assert epsilon_ticket(levels(0.80, 0.79), 0.01, True)["level"] == 1
    assert epsilon_ticket(levels(0.80, 0.7899), 0.01, True)["level"] == 0
    assert epsilon_ticket(levels(3.3, 3.4), 0.1, False)["level"] == 1  # 0.10000000000000009


def test_study_tickets_use_the_std_of_the_dense_score_over_seeds():
    def run(*scores):
        return [{**entry, "greater_is_better": True} for entry in levels(*scores)]

    # dense scores 0.80 and 0.82: mean 0.81, std 0.01414
    tickets = seed_std_tickets({1: run(0.80, 0.80, 0.70), 2: run(0.82, 0.79, 0.60)}, 0.5)
    assert {seed: t["level"] for seed, t in tickets.items()} == {1: 1, 2: 0}
    assert tickets[1]["rule"] == SEED_STD
    assert tickets[1]["epsilon"] == pytest.approx(0.0141421356)
    assert tickets[1]["dense_score"] == pytest.approx(0.81)
    # one seed: the given epsilon; nothing within means the dense level
    assert seed_std_tickets({1: run(0.70, 0.69)}, 0.02)[1]["level"] == 1
    assert seed_std_tickets({1: run(0.70, 0.60)}, 0.02)[1]["level"] == 0


def test_find_under_two_distributed_processes(tmp_path, bert_dir, conll_files):
    """DDP (gloo on the CPU): every rank uses the one mask rank 0 writes per level, so the
    run completes with exact sparsities and nothing is written twice."""
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "-m",
            "polyticket",
            "find",
            "--cpu",
            "--model",
            str(bert_dir),
            "--train-file",
            str(conll_files[0]),
            "--eval-file",
            str(conll_files[1]),
            "--max-steps",
            "4",
            "--batch-size",
            "8",
            "--rate",
            "0.25",
            "--target-sparsity",
            "0.5",
            "--out",
            str(run),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-6000:]
    assert result.stdout.count("ticket: level") == 1
    sparsities = [
        Mask.load(run / f"level_{k:02d}" / "mask.safetensors").sparsity() for k in range(3)
    ]
    assert sparsities == pytest.approx([0.0, 0.25, 0.5], abs=1e-4)
    assert (run / "log.jsonl").read_text().count('"kind": "eval"') == 3
    assert read_json(run / "run.json")["processes"] == 2
    # said once, by rank 0: the count, and what a step takes (8 per process)
    assert result.stderr.count("2 processes: an optimizer step takes 16 examples") == 1
    assert result.stderr.count("IMP schedule") == 1


def test_a_run_is_continued_only_under_the_process_count_it_was_trained_by(
    full_run, tmp_path, bert_dir, conll_files
):
    """Audit: a run started under 2 DDP processes and continued under 1 trained its later
    levels with other steps and batches (--batch-size is per process), and the ticket rule
    compared them. Its run.json records the count; the count is edited here, as if the run
    had been started by two processes."""
    import json
    import shutil

    run, ticket = full_run
    assert read_json(run / "run.json")["processes"] == 1
    shutil.copytree(run, tmp_path / "run")
    info = read_json(tmp_path / "run" / "run.json")
    (tmp_path / "run" / "run.json").write_text(json.dumps(info | {"processes": 2}))
    # finished under the same settings: nothing to train, the ticket is read as it stands
    assert lottery.find(config(bert_dir, conll_files), tmp_path / "run") == ticket
    assert read_json(tmp_path / "run" / "run.json")["processes"] == 2
    # a level to train (another target): refused before a level is touched
    with pytest.raises(
        lottery.UserError,
        match=r"trained by 2 process\(es\) and this is 1: .* continue it under 2 process\(es\)",
    ):
        lottery.find(config(bert_dir, conll_files, target_sparsity=0.6), tmp_path / "run")
    assert (tmp_path / "run" / "level_03").is_dir()
    # a run from before the count was recorded continues as it did, and records it from then
    del info["processes"]
    (tmp_path / "run" / "run.json").write_text(json.dumps(info))
    lottery.find(config(bert_dir, conll_files, target_sparsity=0.6), tmp_path / "run")
    assert read_json(tmp_path / "run" / "run.json")["processes"] == 1


def test_a_run_from_before_a_new_knob_continues_when_the_knob_has_its_default(
    full_run, bert_dir, conll_files
):
    """A later polyticket adds knobs; a run that did not record them is still the same run."""
    import json

    run, _ = full_run
    info = read_json(run / "run.json")
    del info["config"]["prune"]["early_bird_threshold"]
    (run / "run.json").write_text(json.dumps(info))
    assert lottery.find(config(bert_dir, conll_files), run)["level"] is not None
    with pytest.raises(lottery.UserError, match="prune.early_bird_threshold"):
        # 0.2: not the default
        lottery.find(config(bert_dir, conll_files, early_bird_threshold=0.2), run)


def test_a_run_whose_data_changed_is_not_continued(tmp_path, bert_dir, conll_files):
    """Issue 16: a training file edited between a run's levels must not be mixed into it."""
    import shutil

    train, dev = tmp_path / "train.conll", tmp_path / "dev.conll"
    shutil.copyfile(conll_files[0], train)
    shutil.copyfile(conll_files[1], dev)
    cfg = config(bert_dir, (train, dev), levels=1)
    run = tmp_path / "run"
    lottery.find(cfg, run)
    recorded = read_json(run / "run.json")["inputs"]["data"]
    assert {Path(i["file"]).name for i in recorded} == {"train.conll", "dev.conll"}
    train.write_text("\n".join(train.read_text().splitlines()[:40]) + "\n")
    with pytest.raises(lottery.UserError, match=r"train\.conll changed"):
        lottery.find(cfg, run)


def test_a_run_with_other_settings_is_kept_and_the_way_out_depends_on_its_levels(
    full_run, tmp_path, bert_dir, conll_files
):
    import shutil

    run, _ = full_run
    with pytest.raises(
        lottery.UserError, match=r"other settings \(prune.early_bird_threshold \S+ -> 0.2\); use"
    ):
        lottery.find(config(bert_dir, conll_files, early_bird_threshold=0.2), run)
    # a run that failed before its first level: nothing to continue, but never deleted here
    started = tmp_path / "started"
    started.mkdir()
    shutil.copyfile(run / "run.json", started / "run.json")
    with pytest.raises(lottery.UserError, match="no completed level; delete it to start afresh"):
        lottery.find(config(bert_dir, conll_files, early_bird_threshold=0.2), started)
    assert sorted(p.name for p in started.iterdir()) == ["run.json"]


def test_a_continued_run_says_so_and_marks_its_log(
    full_run, tmp_path, bert_dir, conll_files, caplog
):
    import json
    import shutil

    run, ticket = full_run
    shutil.copytree(run, tmp_path / "run")
    # as if stopped in level 2: its mask staged, nothing of it trained
    staged = tmp_path / "run" / "level_02.partial"
    staged.mkdir()
    shutil.copyfile(run / "level_02" / "mask.safetensors", staged / "mask.safetensors")
    shutil.rmtree(tmp_path / "run" / "level_02")
    shutil.rmtree(tmp_path / "run" / "level_03")
    for late in ("ticket.json", "ticket.safetensors"):
        (tmp_path / "run" / late).unlink()
    with caplog.at_level("WARNING", logger="polyticket"):
        again = lottery.find(config(bert_dir, conll_files), tmp_path / "run")
    assert "levels 0-1 are done, from level 2" in caplog.text
    assert again == ticket  # the same ticket as the run that never stopped
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    marks = [x for x in lines if x["kind"] == "resume"]
    assert [m["level"] for m in marks] == [2]
    after = lines[lines.index(marks[0]) + 1 :]  # what level 2 logs again follows the mark
    assert {x.get("level") for x in after} == {2, 3}


def test_a_run_drawn_by_an_older_polyticket_is_not_continued_with_the_new_draw(
    tmp_path, bert_dir, conll_files
):
    """0.4.8 drew a --max-train-samples share with Random(seed + the language's place);
    a run it started must not get levels trained on the new draw."""
    import json

    from polyticket.tasks.base import DRAW

    cfg = config(bert_dir, conll_files, levels=1)
    cfg.data.max_train_samples = 20
    run = tmp_path / "run"
    lottery.find(cfg, run)
    info = read_json(run / "run.json")
    assert DRAW in info["inputs"]["data"]
    assert lottery.find(cfg, run)["level"] is not None  # the same draw continues
    info["inputs"]["data"].remove(DRAW)  # as 0.4.8 recorded it
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(lottery.UserError, match="started on examples drawn otherwise"):
        lottery.find(cfg, run)
    # no limit, nothing drawn: nothing recorded, and such runs of 0.4.8 continue
    unlimited = config(bert_dir, conll_files, levels=1)
    lottery.find(unlimited, tmp_path / "all")
    assert DRAW not in read_json(tmp_path / "all" / "run.json")["inputs"]["data"]
