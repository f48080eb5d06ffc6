"""A study never mixes settings; shards finishing together; kills at random moments.

Kill tests: ``find`` and ``study`` on the tiny model, killed with SIGKILL at seeded random
moments (``POLYTICKET_KILLS`` times each, default 5), resumed, and compared with an
uninterrupted run: the same masks, the same tables, no temporary file left.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CHILD_ENV
from test_study import write_study

from polyticket.cli import main
from polyticket.io import read_json

KILLS = int(os.environ.get("POLYTICKET_KILLS", "5"))
TICKETS_ONLY = {"run": {"random": False, "transfer": False}, "seeds": [1]}


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "polyticket", *args],
        env=CHILD_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _files(root: Path, pattern: str) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob(pattern)) if p.is_file()
    }


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((".tmp", ".partial"))]


def _killed_then_resumed(args: list[str], seconds: float, seed: int) -> None:
    """Kill ``args`` KILLS times at random moments within ``seconds``, then finish it."""
    rng = random.Random(seed)
    for _ in range(KILLS):
        process = _cli(*args)
        time.sleep(rng.uniform(0.0, seconds))
        process.send_signal(signal.SIGKILL)
        process.wait()
    finish = _cli(*args)
    assert finish.wait() == 0, finish.stderr.read().decode()


def _timed(args: list[str]) -> float:
    started = time.monotonic()
    process = _cli(*args)
    assert process.wait() == 0, process.stderr.read().decode()
    return time.monotonic() - started


def test_changed_settings_are_refused_reported_and_rerun(tmp_path, bert_dir, capsys, caplog):
    out = tmp_path / "run"
    path = write_study(tmp_path, bert_dir, out, **TICKETS_ONLY)
    assert main(["study", str(path)]) == 0
    results = _files(out, "results/*")
    study = json.loads(path.read_text())
    study["settings"]["max_steps"] = 6
    path.write_text(json.dumps(study))
    capsys.readouterr()

    assert main(["study", str(path)]) == 2
    err = capsys.readouterr().err
    assert "ner/de/seed1/imp (max_steps 4 -> 6" in err and "--rerun-changed" in err
    assert _files(out, "results/*") == results  # nothing written

    assert main(["study", str(path), "--plan"]) == 0
    assert "changed  ner/en/seed1/imp  (max_steps 4 -> 6" in capsys.readouterr().out
    with caplog.at_level("WARNING", logger="polyticket"):
        assert main(["study", str(path), "--summary"]) == 0  # reports, never raises
    assert "made with other settings" in capsys.readouterr().out
    # said up front too, with the way out, since the tables alone would look merely empty
    assert f"were made with other settings than {path.name}'s" in caplog.text
    assert f"`polyticket study {path} --rerun-changed` reruns them" in caplog.text

    # a flag that the executor refuses, before any changed cell is removed
    assert main(["study", str(path), "--rerun-changed", "--retries", "2"]) == 2
    assert "--retries: not an option of --executor serial" in capsys.readouterr().err
    assert read_json(out / "cells/ner/en/seed1/imp/cell.json")["max_steps"] == 4

    assert main(["study", str(path), "--rerun-changed"]) == 0
    settings = read_json(out / "cells/ner/en/seed1/imp/cell.json")
    assert settings["max_steps"] == 6
    assert read_json(out / "cells/ner/en/seed1/imp/level_00/metrics.json")["steps"] == 6
    assert main(["study", str(path)]) == 0  # consistent again


def test_data_written_again_at_the_same_path_makes_its_cells_changed(tmp_path, bert_dir, capsys):
    """A path is not a content: regenerated data must not leave results standing."""
    out = tmp_path / "run"
    path = write_study(tmp_path, bert_dir, out, **TICKETS_ONLY)
    assert main(["study", str(path)]) == 0
    capsys.readouterr()
    dev = tmp_path / "data" / "fr-dev.conll"
    dev.write_bytes(dev.read_bytes())  # a newer time, the same bytes: nothing changed
    assert main(["study", str(path)]) == 0
    dev.write_text(dev.read_text().replace("\tO\n", "\tB-LOC\n", 1))
    assert main(["study", str(path)]) == 2
    err = capsys.readouterr().err
    assert "ner/fr/seed1/imp (fr-dev.conll changed since the cell read it)" in err
    assert main(["study", str(path), "--plan"]) == 0
    plan = capsys.readouterr().out
    assert "changed  ner/fr/seed1/imp" in plan and "changed  ner/en/seed1/imp" not in plan
    assert main(["study", str(path), "--rerun-changed"]) == 0
    assert main(["study", str(path)]) == 0  # consistent again


def test_a_study_remakes_only_the_cells_a_change_concerns(tmp_path, bert_dir, capsys):
    """Another epsilon picks the tickets again and remakes the random mask at them, training
    no level; a larger sparsity continues the IMP cells (their last shared level trained
    again) and keeps the transfers; another rate remakes IMP and what reads it, but not the
    random and one-shot masks, which never read it; log_steps changes nothing."""
    out = tmp_path / "run"
    settings = {"max_steps": 4, "batch_size": 16, "learning_rate": 0.002, "rate": 0.25}
    run = {"oneshot": True}
    path = write_study(tmp_path, bert_dir, out, languages=["en", "fr"], seeds=[1],
                       settings=settings, run=run)  # fmt: skip
    assert main(["study", str(path)]) == 0
    study = json.loads(path.read_text())

    def rerun(**change) -> set[str]:
        """The cells run again after ``change``, by --rerun-changed."""
        study.update(change)
        path.write_text(json.dumps(study))
        before = len((out / "study.log.jsonl").read_text().splitlines())
        capsys.readouterr()
        assert main(["study", str(path), "--rerun-changed"]) == 0
        lines = (out / "study.log.jsonl").read_text().splitlines()[before:]
        assert main(["study", str(path)]) == 0  # consistent again
        return {e["cell"] for e in map(json.loads, lines) if e["event"] == "done"}

    def levels(cell: str) -> dict[str, float]:
        root = out / "cells" / cell / "imp"
        return {p.name: p.stat().st_mtime for p in sorted(root.glob("level_*"))}

    trained = levels("ner/en/seed1")
    study["settings"] = {**settings, "log_steps": 3}
    assert rerun() == set()

    study["settings"] = {**settings, "log_steps": 3, "epsilon": 0.5}
    path.write_text(json.dumps(study))
    assert main(["study", str(path), "--plan"]) == 0
    assert "changed  ner/en/seed1/imp  (epsilon 0.01 -> 0.5; continues from its levels)" in (
        capsys.readouterr().out
    )
    again = rerun()
    assert again == {f"ner/{lang}/seed1/{c}" for lang in ("en", "fr")
                     for c in ("imp", "random-at-ticket")}  # fmt: skip
    assert levels("ner/en/seed1") == trained  # no level trained again
    assert read_json(out / "cells/ner/en/seed1/imp/ticket.json")["epsilon"] == 0.5

    transfer = "ner/fr/seed1/transfer-from-en-s50"
    again = rerun(sparsities=[0.5, 0.75])
    assert {"ner/en/seed1/imp", "ner/en/seed1/random-at-ticket"} <= again
    assert transfer not in again and "ner/en/seed1/oneshot-s50" not in again
    now = levels("ner/en/seed1")
    assert {k: now[k] for k in ("level_00", "level_01")} == {
        k: trained[k] for k in ("level_00", "level_01")
    }
    assert now["level_02"] != trained["level_02"] and "level_03" in now  # 50%, then 75%

    again = rerun(settings={**settings, "rate": 0.5}, sparsities=[0.5])
    assert {"ner/en/seed1/imp", transfer} <= again
    assert not {"ner/en/seed1/random-s50", "ner/en/seed1/oneshot-s50"} & again


def test_a_changed_synth_entry_writes_its_files_again_and_remakes_their_readers(
    tmp_path, bert_dir, capsys
):
    out = tmp_path / "run"
    synth = {"ner-{lang}.conll": {"task": "ner", "size": 24, "seed": 3}}
    files = {
        "train_file": "{out}/data/ner-{lang}.conll",
        "eval_file": "{out}/data/ner-{lang}.conll",
    }
    study = {"languages": ["en"], "synth": synth, "tasks": {"ner": files}, **TICKETS_ONLY}
    path = write_study(tmp_path, bert_dir, out, **study)
    assert main(["study", str(path)]) == 0
    data = out / "data" / "ner-en.conll"
    first = data.read_bytes()
    assert read_json(out / "data" / "synth.json") == {
        "ner-{lang}.conll": {"task": "ner", "size": 24, "seed": 3, "split": "train"}
    }
    (out / "data" / "synth.json").unlink()  # as a study of 0.4.7 left it: its files stand
    assert main(["study", str(path)]) == 0 and data.read_bytes() == first

    study["synth"] = {"ner-{lang}.conll": {"task": "ner", "size": 30, "seed": 3}}
    path.write_text(json.dumps({**json.loads(path.read_text()), **study}))
    capsys.readouterr()
    assert main(["study", str(path), "--plan"]) == 0  # says so before writing anything
    plan = capsys.readouterr().out
    assert "changed  ner/en/seed1/imp  (ner-en.conll is made again (synth: size 24 -> 30))" in plan
    assert data.read_bytes() == first
    assert main(["study", str(path)]) == 2
    assert (
        "ner/en/seed1/imp (ner-en.conll changed since the cell read it)" in capsys.readouterr().err
    )
    assert main(["study", str(path), "--rerun-changed"]) == 0
    assert data.read_bytes() != first and len(data.read_text().split("\n\n")) >= 30
    assert main(["study", str(path)]) == 0  # consistent again


def test_a_copied_study_judges_the_data_in_its_own_folder(tmp_path, bert_dir, monkeypatch):
    """The cells recorded their data's paths in the first folder: a copy elsewhere compares
    its own files (the first folder, still there, has nothing to do with it), from any
    working directory."""
    import shutil

    from polyticket.study import load_study
    from polyticket.study.changes import changed_cells
    from polyticket.study.grid import cells

    synth = {"ner-{lang}.conll": {"task": "ner", "size": 24, "seed": 3}}
    files = {
        "train_file": "{out}/data/ner-{lang}.conll",
        "eval_file": "{out}/data/ner-{lang}.conll",
    }
    study = {"languages": ["en"], "seeds": [1], "synth": synth, "tasks": {"ner": files},
             "run": {"transfer": False}}  # fmt: skip
    path = write_study(tmp_path, bert_dir, tmp_path / "run", **study)
    assert main(["study", str(path)]) == 0
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    monkeypatch.chdir(tmp_path / "copy")
    copy = load_study(path, out=Path("."))

    def changed() -> set[str]:
        return set(changed_cells(copy, cells(copy)).cells)

    assert changed() == set()
    original = tmp_path / "run" / "data" / "ner-en.conll"
    original.write_text(original.read_text().replace("\tO\n", "\tB-LOC\n", 1))
    assert changed() == set()  # not the copy's data
    data = tmp_path / "copy" / "data" / "ner-en.conll"
    data.write_text(data.read_text().replace("\tO\n", "\tB-PER\n", 1))
    # a training cell ran in NAME.partial: its recorded folder is found all the same
    assert changed() == {f"ner/en/seed1/{c}" for c in ("imp", "random-s50", "random-at-ticket")}


def test_two_shards_finishing_at_once(tmp_path, bert_dir):
    out = tmp_path / "run"
    path = write_study(tmp_path, bert_dir, out, **TICKETS_ONLY)
    shards = [_cli("study", str(path), "--shard", f"{i}/2") for i in (1, 2)]
    for shard in shards:
        assert shard.wait() == 0, shard.stderr.read().decode()
    assert main(["study", str(path), "--summary"]) == 0
    tickets = read_json(out / "results/tickets.json")
    assert sorted(row["language"] for row in tickets) == ["de", "en", "fr"]
    assert not _leftovers(out)


@pytest.mark.slow
def test_find_killed_at_random_moments_resumes_to_identical_masks(tmp_path, bert_dir, conll_files):
    def args(out: Path) -> list[str]:
        return [
            "find", "--model", str(bert_dir), "--train-file", str(conll_files[0]),
            "--eval-file", str(conll_files[1]), "--max-steps", "3", "--batch-size", "16",
            "--rate", "0.25", "--target-sparsity", "0.5", "--cpu", "--out", str(out),
        ]  # fmt: skip

    seconds = _timed(args(tmp_path / "reference"))
    _killed_then_resumed(args(tmp_path / "killed"), seconds, seed=1)
    masks = "level_*/mask.safetensors"
    assert _files(tmp_path / "killed", masks) == _files(tmp_path / "reference", masks)
    assert len(_files(tmp_path / "reference", masks)) == 3
    ticket = read_json(tmp_path / "killed/ticket.json")
    assert ticket == read_json(tmp_path / "reference/ticket.json")
    assert not _leftovers(tmp_path / "killed")


@pytest.mark.slow
def test_study_killed_at_random_moments_resumes_to_identical_tables(tmp_path, bert_dir):
    # two languages: tickets and the transfers between them (a cell that reads another's masks)
    extra = {"run": {"random": False, "transfer": True}, "seeds": [1], "languages": ["en", "fr"]}
    reference = write_study(tmp_path / "a", bert_dir, tmp_path / "a/run", **extra)
    killed = write_study(tmp_path / "b", bert_dir, tmp_path / "b/run", **extra)
    seconds = _timed(["study", str(reference)])
    _killed_then_resumed(["study", str(killed)], seconds, seed=2)
    tables = "results/*.csv"
    assert _files(tmp_path / "b/run", tables) == _files(tmp_path / "a/run", tables)
    masks = "cells/*/*/*/*/level_*/mask.safetensors"
    assert _files(tmp_path / "b/run", masks) == _files(tmp_path / "a/run", masks)
    assert not _leftovers(tmp_path / "b/run")


def test_a_failed_cell_reruns_with_the_fixed_settings_without_being_asked(
    tmp_path, bert_dir, capsys
):
    """Fixing the setting that made a cell fail is the common retry: nothing of the failed
    cell is kept, so nothing needs --rerun-changed; done cells still do."""
    out = tmp_path / "run"
    path = write_study(tmp_path, bert_dir, out, **TICKETS_ONLY)
    study = json.loads(path.read_text())
    study["tasks"]["ner"]["labels"] = ["O", "B-PER", "I-PER"]  # the data has more: cells fail
    path.write_text(json.dumps(study))
    assert main(["study", str(path)]) == 1
    assert (out / "cells/ner/en/seed1/imp/cell.json").is_file()  # it recorded its settings
    del study["tasks"]["ner"]["labels"]
    path.write_text(json.dumps(study))
    capsys.readouterr()
    assert main(["study", str(path), "--plan"]) == 0
    assert "0 changed" in capsys.readouterr().out  # failed, not changed
    assert main(["study", str(path)]) == 0
    assert read_json(out / "cells/ner/en/seed1/imp/ticket.json")["level"] is not None
