"""Studies: the grid end to end, its tables, interruption, shards and failing cells."""

import itertools
import json
import math
import signal
import subprocess
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import CHILD_ENV, ner_sentences, unique_sentences, write_conll

from polyticket.analysis.overlap import random_jaccard
from polyticket.analysis.results import StudyResults, write_results
from polyticket.cli import main, time_breakdown
from polyticket.errors import UserError
from polyticket.io import read_json
from polyticket.masks import Mask
from polyticket.study import cells, load_study, run_study
from polyticket.study.runner import Outcome, prepare_models, seconds_by_kind

LANGS = ["en", "fr", "de"]
SETTINGS = {"max_steps": 4, "batch_size": 16, "learning_rate": 0.002, "rate": 0.5, "eval_steps": 2}


def write_study(root: Path, bert_dir: Path, out: Path, **extra) -> Path:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    for i, lang in enumerate(LANGS):
        write_conll(data / f"{lang}-train.conll", ner_sentences(48, i))
        write_conll(data / f"{lang}-dev.conll", ner_sentences(24, 10 + i))
    study = {
        "model": str(bert_dir),
        "out": str(out),
        "languages": LANGS,
        "seeds": [1, 2],
        "sparsities": [0.5],
        "settings": SETTINGS,
        "tasks": {
            "ner": {"train_file": "data/{lang}-train.conll", "eval_file": "data/{lang}-dev.conll"}
        },
        **extra,
    }
    path = root / "study.yaml"
    path.write_text(json.dumps(study))  # JSON is YAML
    return path


def events(out: Path) -> list[dict]:
    log = out / "study.log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture(scope="module")
def finished(tmp_path_factory, bert_dir):
    root = tmp_path_factory.mktemp("study")
    path = write_study(root, bert_dir, root / "run")
    assert main(["study", str(path)]) == 0
    return load_study(path)


def test_every_cell_is_done_once(finished):
    names = [c.name for c in cells(finished)]
    assert len(names) == len(set(names)) == 6 + 6 + 6 + 12
    assert all(c.done(finished) for c in cells(finished))
    starts = Counter(e["cell"] for e in events(finished.out) if e["event"] == "start")
    assert set(starts) == set(names) and set(starts.values()) == {1}


def test_another_epsilon_continues_the_tickets_and_keeps_every_other_cell(finished):
    """With two seeds the study's ticket is picked by their spread, not by epsilon: only the
    IMP cells change (their own ticket rule), and they continue from their levels."""
    from polyticket.study.changes import changed_cells

    again = finished.path.with_name("epsilon.yaml")
    values = json.loads(finished.path.read_text())
    again.write_text(json.dumps({**values, "settings": {**values["settings"], "epsilon": 0.5}}))
    study = load_study(again)
    changed = changed_cells(study, cells(study))
    imp = {c.name for c in cells(study) if c.kind == "imp"}
    assert set(changed.cells) == changed.continued == imp
    assert changed.stale(cells(study)) == imp


def test_done_events_carry_seconds_that_add_up_by_kind(finished):
    done = [e for e in events(finished.out) if e["event"] == "done"]
    assert all(e["seconds"] >= 0 for e in done)
    # (a random-at-ticket cell whose ticket sits at the target sparsity takes the random
    # cell's run: no training of its own)
    trained = [e for e in done if e["cell"].endswith("/imp") or "transfer-from" in e["cell"]]
    assert len(trained) == 18 and all(e["seconds"] > 0 for e in trained)
    by_kind = seconds_by_kind(finished, [e["cell"] for e in done])
    assert {k: n for k, (n, _) in by_kind.items()} == Counter(c.kind for c in cells(finished))
    assert sum(s for _, s in by_kind.values()) == pytest.approx(sum(e["seconds"] for e in done))
    outcome = Outcome(ran=[e["cell"] for e in done], phases={"data": 1.0, "model": 2.0})
    total = 3.0 + sum(e["seconds"] for e in done) + 10.0
    text = time_breakdown(finished, outcome, total)
    assert text.startswith("time: ") and "data 0m01s, model 0m02s" in text
    assert "imp (6 cells)" in text and "transfer (12 cells)" in text
    assert text.endswith("results and report 0m10s")


def test_the_model_is_prepared_once_before_the_cells_only_when_some_run(finished, monkeypatch):
    calls = []
    monkeypatch.setattr(
        "polyticket.models.resolve", lambda name, vocab_from=None: calls.append(name) or name
    )
    prepare_models(finished)
    assert calls == [finished.tasks["ner"].config.model.model]
    calls.clear()
    outcome = run_study(finished)  # everything is done: nothing to prepare
    assert calls == [] and not outcome.ran and "model" not in outcome.phases


def test_tables_follow_from_the_cell_results(finished):
    results = StudyResults(finished)
    cell = finished.layout.cells
    score = lambda p: read_json(cell / p)["best_score"]  # noqa: E731
    matrix = results.transfer("ner", Fraction(1, 2))
    assert matrix["rows"] == [*LANGS, "dense", "random"]
    assert matrix["targets"] == LANGS
    fr_to_de = [score(f"ner/de/seed{s}/transfer-from-fr-s50/metrics.json") for s in (1, 2)]
    assert matrix["mean"]["fr"]["de"] == pytest.approx(sum(fr_to_de) / 2)
    own = [score(f"ner/de/seed{s}/imp/level_01/metrics.json") for s in (1, 2)]
    assert matrix["mean"]["de"]["de"] == pytest.approx(sum(own) / 2)
    dense = [score(f"ner/de/seed{s}/imp/level_00/metrics.json") for s in (1, 2)]
    assert matrix["mean"]["dense"]["de"] == pytest.approx(sum(dense) / 2)
    assert matrix["std"]["dense"]["de"] == pytest.approx(abs(dense[0] - dense[1]) / math.sqrt(2))
    random = [score(f"ner/de/seed{s}/random-s50/metrics.json") for s in (1, 2)]
    assert matrix["mean"]["random"]["de"] == pytest.approx(sum(random) / 2)

    drop = results.transfer_drop(matrix)["fr"]
    expected = (
        sum(
            (matrix["mean"]["fr"][t] - matrix["mean"][t][t]) / matrix["mean"][t][t]
            for t in ("en", "de")
        )
        / 2
    )
    assert drop == pytest.approx(expected)

    overlap = results.overlap("ner", Fraction(1, 2))
    masks = {
        (lang, s): Mask.load(cell / f"ner/{lang}/seed{s}/imp/level_01/mask.safetensors")
        for lang in LANGS
        for s in (1, 2)
    }
    pair = next(p for p in overlap["pairs"] if (p["a"], p["b"]) == ("en/seed1", "fr/seed1"))
    assert pair["overall"]["jaccard"] == pytest.approx(masks["en", 1].jaccard(masks["fr", 1]))
    assert set(pair["by_layer"]) == {"encoder.layer.0", "encoder.layer.1"}
    assert pair["by_component"]["query"]["jaccard"] == pytest.approx(
        masks["en", 1].jaccard_by_component(masks["fr", 1])["attention.self.query"]
    )
    # languages compared over pairs of other seeds; pairs of one seed apart
    pairs = [(a, b) for a, b in itertools.combinations(masks, 2) if a[0] != b[0]]
    for key, one_seed in (("between_languages", False), ("between_languages_same_seed", True)):
        values = [masks[a].jaccard(masks[b]) for a, b in pairs if (a[1] == b[1]) == one_seed]
        assert overlap["summary"][key] == pytest.approx(sum(values) / len(values)), key
    same = [masks[lang, 1].jaccard(masks[lang, 2]) for lang in LANGS]
    assert overlap["summary"]["same_language_other_seed"] == pytest.approx(sum(same) / 3)
    assert overlap["summary"]["random"] == pytest.approx(1 / 3, abs=1e-3)
    assert random_jaccard(0.2, 0.2) == pytest.approx(0.04 / 0.36)

    tickets = results.tickets()
    assert len(tickets) == 6
    row = next(r for r in tickets if r["language"] == "de" and r["seed"] == 2)
    assert row["dense_score"] == dense[1]
    assert row["random_score"] == score("ner/de/seed2/random-at-ticket/metrics.json")
    assert row["epsilon"] == pytest.approx(
        __import__("statistics").stdev(
            [score(f"ner/de/seed{s}/imp/level_00/metrics.json") for s in (1, 2)]
        )
    )


def test_results_files_and_summary(finished, capsys):
    assert main(["study", str(finished.path), "--summary"]) == 0
    text = capsys.readouterr().out
    assert "overlap" in text and "transfer ner at 50%" in text
    results = finished.layout.results
    for name in (
        "tickets.csv",
        "tickets.json",
        "transfer_ner_s50.csv",
        "transfer_ner_s50_std.csv",
        "transfer_drop.csv",
        "overlap_ner_s50.csv",
        "results.json",
    ):
        assert (results / name).is_file(), name
    header = (results / "transfer_ner_s50.csv").read_text().splitlines()[0]
    assert header == "source,en,fr,de"
    assert (results / "masks/ner/fr/seed1/s50.safetensors").is_file()
    assert (results / "masks/ner/fr/seed1/study-ticket.safetensors").is_file()


def test_tables_of_an_unfinished_study_are_strict_json(tmp_path, bert_dir):
    path = write_study(tmp_path, bert_dir, tmp_path / "run", seeds=[1])
    study = load_study(path)
    run_study(study, shard=(1, 3))  # some groups only: transfers into other languages missing
    everything = write_results(study)
    text = (study.layout.results / "results.json").read_text()
    assert "NaN" not in text and json.loads(text)["transfer"][0]["task"] == "ner"
    assert any(
        v is None for row in json.loads(text)["transfer"][0]["mean"].values() for v in row.values()
    )
    assert everything["headline"]
    done = sum(c.done(study) for c in cells(study))
    assert 0 < done < everything["cells"] and everything["not_done"] == everything["cells"] - done
    from polyticket.analysis.results import format_summary

    assert f"{everything['not_done']} of the study's" in format_summary(everything)


def test_results_drop_what_a_cell_no_longer_stands_for(finished, tmp_path):
    """A ticket that became unreadable leaves no exported mask or table of it behind."""
    import shutil

    shutil.copytree(finished.layout.root, tmp_path / "run")
    study = load_study(finished.path, out=tmp_path / "run")
    masks = study.layout.exported_masks
    assert {p.parts[-3] for p in masks.rglob("*.safetensors")} == set(LANGS)
    stale = study.layout.table("cross_task")
    stale.write_text("task,score\nner,1\n")  # as if an earlier pass had written it
    run = study.layout.cell("ner/de/seed1/imp")
    run.level(0).metrics.write_text("{not json")
    everything = write_results(study)
    assert any(p["cell"] == "ner/de/seed1/imp" for p in everything["problems"])
    assert {p.parts[-3] for p in masks.rglob("*.safetensors")} == {"en", "fr"}
    assert not stale.exists()  # one task: no cross-task table to write


def test_a_study_copied_elsewhere_is_the_same_study(tmp_path, bert_dir, capsys):
    """Settings inside out are recorded as {out}/…: a study copied back from a cluster
    (or moved) keeps its cells, and --summary of the copy keeps its tables and masks."""
    import shutil

    data = {
        "train_file": "{out}/data/{lang}-train.conll",
        "eval_file": "{out}/data/{lang}-dev.conll",
    }
    synth = {
        "{lang}-train.conll": {"task": "ner", "size": 32, "seed": 1},
        "{lang}-dev.conll": {"task": "ner", "size": 16, "seed": 2, "split": "dev"},
    }
    extra = {"run": {"random": False, "transfer": False}, "seeds": [1], "languages": ["en", "fr"]}
    path = write_study(tmp_path / "a", bert_dir, tmp_path / "a/run", synth=synth, **extra)
    raw = json.loads(path.read_text())
    raw["tasks"]["ner"] = data
    raw["settings"]["vocab_from"] = ["{out}/data"]
    path.write_text(json.dumps(raw))
    assert main(["study", str(path)]) == 0
    shutil.copytree(tmp_path / "a/run", tmp_path / "b/run")
    copy = tmp_path / "b/study.yaml"
    copy.write_text(json.dumps({**raw, "out": str(tmp_path / "b/run")}))
    capsys.readouterr()
    assert main(["study", str(copy), "--plan"]) == 0
    assert "2 cells: 2 done, 0 changed" in capsys.readouterr().out
    assert main(["study", str(copy), "--summary"]) == 0
    assert len(list((tmp_path / "b/run/results/masks").rglob("*.safetensors"))) == 4


def test_plan_lists_states_and_runs_nothing(finished, tmp_path, bert_dir, capsys):
    assert main(["study", str(finished.path), "--plan"]) == 0
    assert "30 cells: 30 done" in capsys.readouterr().out
    fresh = write_study(tmp_path, bert_dir, tmp_path / "run")
    assert main(["study", str(fresh), "--plan"]) == 0
    out = capsys.readouterr().out
    assert (
        "ready    ner/en/seed1/imp" in out and "waiting  ner/fr/seed1/transfer-from-en-s50" in out
    )
    assert not (tmp_path / "run" / "cells").exists()
    (tmp_path / "run" / "cells" / "ner/de/seed2/imp" / "level_00").mkdir(parents=True)
    assert main(["study", str(fresh), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "started  ner/de/seed2/imp" in out and "1 started" in out


def test_interrupted_study_finishes_without_rerunning_done_cells(tmp_path, bert_dir):
    path = write_study(tmp_path, bert_dir, tmp_path / "run")
    process = subprocess.Popen(
        [sys.executable, "-m", "polyticket", "study", str(path)],
        env=CHILD_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        done = [e for e in events(tmp_path / "run") if e["event"] == "done"]
        if len(done) >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {e["cell"] for e in events(tmp_path / "run") if e["event"] == "done"}
    assert 3 <= len(before) < 30
    study = load_study(path)
    outcome = run_study(study)
    assert not outcome.failed and not set(outcome.ran) & before
    assert all(c.done(study) for c in cells(study))
    assert not list((tmp_path / "run").rglob("*.partial"))


def test_two_shards_complete_exactly_the_unsharded_cells(tmp_path, bert_dir):
    path = write_study(tmp_path, bert_dir, tmp_path / "run")
    study = load_study(path)
    second = run_study(study, shard=(2, 2))
    first = run_study(study, shard=(1, 1 + 1))
    assert not first.failed and not second.failed
    assert not set(first.ran) & set(second.ran)
    assert sorted(first.ran + second.ran) == sorted(c.name for c in cells(study))
    starts = Counter(e["cell"] for e in events(study.out) if e["event"] == "start")
    assert set(starts.values()) == {1}


def test_a_failing_cell_is_reported_and_the_others_complete(tmp_path, bert_dir, capsys):
    path = write_study(tmp_path, bert_dir, tmp_path / "run", seeds=[1])
    # a file that is there but that a cell cannot read (a missing one is refused at the start)
    (tmp_path / "data" / "de-dev.conll").write_text("Paris B-PLACE\n")
    assert main(["study", str(path)]) == 1
    err = capsys.readouterr().err
    assert "ner/de/seed1/imp" in err and "de-dev.conll" in err
    study = load_study(path)
    states = {c.name: c.done(study) for c in cells(study)}
    assert states["ner/en/seed1/imp"] and states["ner/fr/seed1/transfer-from-en-s50"]
    assert not states["ner/de/seed1/imp"] and not states["ner/en/seed1/transfer-from-de-s50"]
    failure = read_json(study.layout.cells / "ner/de/seed1/imp.failed.json")
    assert "de-dev.conll" in failure["error"]
    assert "cell(s) not run: they need one that failed" in err
    # The tables say which cells wait for the failure, and do not count them as still to do.
    everything = write_results(study)
    problems = {p["cell"]: p["problem"] for p in everything["problems"]}
    assert problems["ner/en/seed1/transfer-from-de-s50"] == (
        "not run: needs ner/de/seed1/imp, which failed"
    )
    assert not everything.get("not_done")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tasks": {"pos": {}}}, "unknown task 'pos'"),
        ({"sparsities": [0.3, 0.5]}, "sparsity 0.3 is no level"),
        ({"run": {"transfers": True}}, "unknown key 'transfers'"),
        ({"settings": {"max_stepz": 1}}, "unknown key 'max_stepz'"),
        ({"languages": []}, "languages"),
        ({"settings": {"max_steps": "many"}}, "bad value 'many' for max_steps"),
        ({"settings": {"scope": "column"}}, "bad value 'column' for scope"),
        # A budget stopped IMP short of the sparsities the other cells read masks at.
        ({"settings": {"budget-steps": 8}}, "settings: budget_steps is not a study setting"),
        ({"tasks": {"ner": {"levels": 2}}}, "tasks.ner: levels is not a study setting"),
        ({"settings": {"seed": 3}}, "seed is not a study setting: give 'seeds'"),
    ],
)
def test_study_file_is_validated(tmp_path, bert_dir, change, message):
    path = write_study(tmp_path, bert_dir, tmp_path / "run", **change)
    with pytest.raises(UserError, match=message):
        load_study(path)


def test_shipped_studies_load_and_plan_offline(capsys):
    from importlib.resources import files

    from polyticket.data.synth import LANGUAGE_SCRIPTS

    root = Path(str(files("polyticket") / "studies"))
    demo = load_study(root / "demo.yaml")
    ner = demo.tasks["ner"]
    assert len(ner.languages) >= 4 and len({LANGUAGE_SCRIPTS[x] for x in ner.languages}) >= 3
    assert ner.settings["model"] == "e5-small" and demo.sparsities == [Fraction(1, 2)]
    kinds = Counter(c.kind for c in cells(demo))
    assert kinds["transfer"] == 4 * 3 and kinds["imp"] == 4 and kinds["random"] >= 4

    full = load_study(root / "demo-full.yaml")
    assert set(full.tasks) == {"ner", "nli"} and len(full.seeds) == 2
    assert len(full.tasks["ner"].languages) == 6

    paper = load_study(root / "paper.yaml")
    assert paper.tasks["xnli-mt5"].settings["model"] == "google/mt5-base"
    assert paper.tasks["ner"].settings["dataset"] == "unimelb-nlp/wikiann"
    assert len(paper.tasks["mlm"].languages) == 11 and paper.seeds == [1, 2, 3]
    assert paper.sparsities == [Fraction(1, 2), Fraction(4, 5)]
    assert main(["study", str(root / "paper.yaml"), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "ready    ner/fa/seed3/imp" in out
    assert "ner/en/seed1/transfer-from-en+fa+fr+zh-s80" in out
    assert not any(
        c.kind == "cross-task" and "mt5" in (c.source or "") + c.task for c in cells(paper)
    )  # no cross-task transfer between two models


def test_synth_section_writes_data_once_under_out(tmp_path, bert_dir):
    from polyticket.study import synthesize

    study_file = tmp_path / "s.yaml"
    study_file.write_text(
        json.dumps(
            {
                "model": str(bert_dir),
                "out": str(tmp_path / "run"),
                "languages": ["fr", "ru"],
                "synth": {"ner-{lang}.conll": {"task": "ner", "size": 5, "seed": 3}},
                "settings": {"vocab_from": ["{out}/data"]},
                "tasks": {
                    "ner": {
                        "train_file": "{out}/data/ner-{lang}.conll",
                        "eval_file": "{out}/data/ner-{lang}.conll",
                    }
                },
            }
        )
    )
    study = load_study(study_file)
    assert study.tasks["ner"].settings["train_file"] == f"{tmp_path}/run/data/ner-{{lang}}.conll"
    assert study.tasks["ner"].settings["vocab_from"] == [f"{tmp_path}/run/data"]
    synthesize(study)
    ru = tmp_path / "run" / "data" / "ner-ru.conll"
    first = ru.read_bytes()
    synthesize(study)
    assert ru.read_bytes() == first
    assert (tmp_path / "run" / "data" / "ner-fr.conll").is_file()


@pytest.fixture(scope="module")
def with_references(tmp_path_factory, bert_dir):
    """One seed, tickets with the one-shot masks of θ0 and the core cells."""
    root = tmp_path_factory.mktemp("references")
    path = write_study(
        root,
        bert_dir,
        root / "run",
        seeds=[1],
        settings={**SETTINGS, "mixed_precision": "bf16"},  # the representations stay fp32
        run={
            "transfer": False,
            "random": False,
            "oneshot": True,
            "core": True,
            "representations": {"parallel": "data/parallel-{lang}.txt"},
        },
    )
    for lang in LANGS:  # the same sentences in every "language": retrieval is exact
        (root / f"data/parallel-{lang}.txt").write_text("\n".join(unique_sentences(12)) + "\n")
    assert main(["study", str(path)]) == 0
    return load_study(path)


def test_oneshot_reference_cells_rows_and_overlap(with_references, capsys):
    study = with_references
    kinds = Counter(c.kind for c in cells(study))
    assert kinds == {"imp": 3, "oneshot": 3, "core": 9, "representations": 1}
    assert main(["study", str(study.path), "--summary"]) == 0
    out = capsys.readouterr().out
    assert "with the one-shot mask of θ0" in out and "departures from θ0" in out
    results = StudyResults(study)
    matrix = results.transfer("ner", Fraction(1, 2))
    assert matrix["rows"] == [*LANGS, "dense", "oneshot"]
    oneshot_dir = study.layout.cells / "ner/fr/seed1/oneshot-s50"
    assert matrix["mean"]["oneshot"]["fr"] == read_json(oneshot_dir / "metrics.json")["best_score"]
    oneshot = Mask.load(oneshot_dir / "mask.safetensors")
    assert oneshot.sparsity() == pytest.approx(0.5, abs=1e-4)
    tickets = [
        Mask.load(study.layout.cells / f"ner/{lang}/seed1/imp/level_01/mask.safetensors")
        for lang in LANGS
    ]
    overlap = results.overlap("ner", Fraction(1, 2))
    expected = [
        t.jaccard(Mask.load(study.layout.cells / f"ner/{lang}/seed1/oneshot-s50/mask.safetensors"))
        for t, lang in zip(tickets, LANGS, strict=True)
    ]
    assert overlap["summary"]["with_baseline"] == pytest.approx(sum(expected) / 3)
    assert overlap["summary"]["beyond_theta0"] is not None


def test_the_study_scope_ranks_its_control_masks_as_its_tickets(tmp_path, bert_dir):
    settings = {**SETTINGS, "scope": "layer"}
    run = {"transfer": False, "oneshot": True}
    path = write_study(tmp_path, bert_dir, tmp_path / "run", languages=["en"], seeds=[1],
                       settings=settings, run=run)  # fmt: skip
    assert main(["study", str(path)]) == 0
    study = load_study(path)
    cell = study.layout.cells / "ner/en/seed1"
    ticket = Mask.load(cell / "imp/level_01/mask.safetensors")
    assert list(ticket.sparsity_by_layer().values()) == [0.5, 0.5]
    for control in ("oneshot-s50", "random-s50", "random-at-ticket"):
        mask = Mask.load(cell / control / "mask.safetensors")
        assert mask.sparsity_by_layer() == ticket.sparsity_by_layer(), control


def test_earlier_levels_pruned_further_at_random_are_rows_of_the_transfer_matrix(
    tmp_path, bert_dir, capsys
):
    """The paper's second baseline: the level at 25% pruned at random up to 50%."""
    settings = {**SETTINGS, "rate": 0.25}
    run = {"random": False, "transfer": False, "random_further": True}
    path = write_study(tmp_path, bert_dir, tmp_path / "run", languages=["en", "fr"],
                       seeds=[1], settings=settings, run=run)  # fmt: skip
    assert main(["study", str(path)]) == 0
    study = load_study(path)
    further = [c for c in cells(study) if c.kind == "random-further"]
    assert [c.name for c in further] == [
        "ner/en/seed1/random-from-s25-s50",
        "ner/fr/seed1/random-from-s25-s50",
    ]
    imp = study.layout.cells / "ner/en/seed1/imp"
    start = Mask.load(imp / "level_01/mask.safetensors")
    ticket = Mask.load(imp / "level_02/mask.safetensors")
    mask = Mask.load(study.layout.cell(further[0].name).mask)
    assert start.sparsity() == pytest.approx(0.25, abs=1e-3)
    assert mask.sparsity() == pytest.approx(0.5, abs=1e-3) and mask != ticket
    assert all(not (mask[n] & ~start[n]).any() for n in start)  # pruned stays pruned
    matrix = StudyResults(study).transfer("ner", Fraction(1, 2))
    assert matrix["rows"] == ["en", "fr", "dense", "random-from-s25"]
    score = read_json(study.layout.cell(further[0].name).metrics)["best_score"]
    assert matrix["mean"]["random-from-s25"]["en"] == score
    assert main(["report", str(study.out)]) == 0
    page = (study.out / "report" / "index.html").read_text()
    assert "s25 level + random" in page


def test_core_cells_train_the_core_and_its_residues(with_references):
    from polyticket.analysis.core import core_plus_residue, shared
    from polyticket.analysis.packed import PackedMask

    study = with_references
    level = [
        PackedMask.load(study.layout.cells / f"ner/{lang}/seed1/imp/level_01/mask.safetensors")
        for lang in LANGS
    ]
    cell = study.layout.cells / "ner/fr/seed1"
    core = Mask.load(cell / "core-s50/mask.safetensors")
    assert core == shared(level).to_mask()
    assert (
        Mask.load(cell / "core-residue-s50/mask.safetensors")
        == core_plus_residue(level, 1).to_mask()
    )
    random = Mask.load(cell / "random-core-s50/mask.safetensors")
    assert random.kept() == core.kept() and random != core
    rows = read_json(study.layout.results / "results.json")["core"][0]["scores"]
    fr = next(r for r in rows if r["language"] == "fr")
    assert fr["core"] == read_json(cell / "core-s50/metrics.json")["best_score"]
    assert fr["ticket"] == read_json(cell / "imp/level_01/metrics.json")["best_score"]
    assert (study.layout.results / "core_ner_s50.csv").is_file()
    sizes = (study.layout.results / "core_sizes_ner_s50.csv").read_text()
    assert "overall,all,core," in sizes and "residue:fr" in sizes


def test_representations_cell_retrieval_and_similarity_per_layer(with_references):
    from polyticket.io import read_csv

    results = with_references.layout.results
    retrieval = read_csv(results / "retrieval.csv")
    labels = {row["mask"] for row in retrieval}
    assert labels == {"dense", "oneshot/s50", *(f"{lang}/seed1/s50" for lang in LANGS)}
    dense = [r for r in retrieval if r["mask"] == "dense" and r["src"] == "en" and r["tgt"] == "fr"]
    assert [int(r["layer"]) for r in dense] == [0, 1, 2]  # embeddings and two blocks
    assert {float(r["accuracy"]) for r in dense} == {1.0}  # the same sentences
    similarity = read_csv(results / "similarity.csv")
    assert {r["comparison"] for r in similarity} == {"dense", "cross-lingual"}
    assert {r["measure"] for r in similarity} == {"cka", "svcca", "pwcca"}
    assert {r["task"] for r in retrieval + similarity} == {"ner"}
    # The cell's numbers are the command's (both in fp32; the cell once ran bf16 autocast).
    study = with_references
    ticket = study.layout.cells / "ner/en/seed1/imp/level_01/mask.safetensors"
    parallel = str(study.resolve(study.run["representations"]["parallel"]))
    files = [f"{lang}={parallel.replace('{lang}', lang)}" for lang in LANGS]
    out = study.out / "alone.csv"
    args = ["--model", study.tasks["ner"].model, "--masks", str(ticket), "--parallel", *files]
    assert main(["similarity", *args, "--out", str(out)]) == 0
    alone = {(r["mask"] == "dense", r["comparison"], r["measure"], r["layer"], r.get("src"),
              r.get("tgt")): float(r["value"]) for r in read_csv(out)}  # fmt: skip
    cell = {(r["mask"] == "dense", r["comparison"], r["measure"], r["layer"], r.get("src"),
             r.get("tgt")): float(r["value"]) for r in similarity
            if r["mask"] in ("dense", "en/seed1/s50")}  # fmt: skip
    assert cell.keys() == alone.keys() and cell == pytest.approx(alone, rel=0, abs=1e-10)


def test_representation_tables_of_a_cell_left_out_are_removed(with_references, monkeypatch):
    """A representations cell made with other settings (or removed) leaves the tables: an
    earlier pass's retrieval.csv must not stay for the report to draw."""
    study = with_references
    tables = [study.layout.table(name) for name in ("retrieval", "similarity")]
    assert all(path.is_file() for path in tables)
    with monkeypatch.context() as patch:
        patch.setattr(StudyResults, "representation_tables", lambda self: {"retrieval": [],
                      "similarity": []})  # fmt: skip
        write_results(study)
        assert not any(path.is_file() for path in tables)
    write_results(study)  # as it was, for the tests after this one
    assert all(path.is_file() for path in tables)
    # so does any table this pass does not write: of a sparsity or run option gone since
    gone = [study.layout.table(n) for n in ("transfer_ner_s75", "methods_ner", "core_ner_s75")]
    for path in gone:
        path.write_text("a,b\n1,2\n")
    write_results(study)
    assert not any(path.exists() for path in gone) and all(path.is_file() for path in tables)


def test_the_representations_cell_waits_for_the_control_masks_it_encodes(tmp_path, bert_dir):
    """It reads the random and one-shot masks of the first language and seed: as its
    dependencies, whatever the order or the executor (under Ray it once ran before a slow
    random cell and left its rows out)."""

    def deps(**run):
        run = {"transfer": False, "representations": {"parallel": "p-{lang}.txt"}, **run}
        study = load_study(write_study(tmp_path, bert_dir, tmp_path / "run", run=run))
        (cell,) = [c for c in cells(study) if c.kind == "representations"]
        return {d for d in cell.deps if "/imp" not in d}

    assert deps(random=True, oneshot=True) == {
        "ner/en/seed1/random-s50",
        "ner/en/seed1/oneshot-s50",
    }
    assert deps(random=False, oneshot=False) == set()


def test_the_representations_cell_says_when_cca_is_biased(tmp_path, bert_dir, caplog):
    run = {"random": False, "transfer": False, "representations": {"parallel": "p-{lang}.txt"}}
    # the study prunes all but one matrix: its masks cover what it prunes, nothing to say
    settings = {**SETTINGS, "prune_exclude": [r"encoder\.layer\.0\.attention\.self\.query\..*"]}
    path = write_study(tmp_path, bert_dir, tmp_path / "run", languages=["en", "fr"],
                       seeds=[1], run=run, settings=settings)  # fmt: skip
    for lang in ("en", "fr"):
        (tmp_path / f"p-{lang}.txt").write_text("\n".join(unique_sentences(12)) + "\n")
    assert main(["study", str(path)]) == 0
    assert "12 sentences for 32 hidden units: SVCCA/PWCCA are biased towards 1" in caplog.text
    assert "stay dense" not in caplog.text


def test_compare_a_study_directory(with_references, capsys):
    assert main(["compare", str(with_references.out), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["set"] == "ner s50" and result["baseline"]["label"] == "oneshot"
    assert {m["label"] for m in result["masks"]} == {f"{lang}/seed1" for lang in LANGS}
    assert result["summary"]["beyond_theta0"] is not None


def test_more_shards_than_cells_are_refused(finished):
    from polyticket.study.grid import shard_names

    with pytest.raises(UserError, match="the study has 30 cells; give at most that many"):
        shard_names(cells(finished), 10**12)  # was a MemoryError
    assert len(shard_names(cells(finished), 30)) == 30


def test_shards_are_balanced_when_there_are_more_shards_than_languages(tmp_path, bert_dir):
    """Issue 14.3: 4 languages x 2 seeds on 8 shards used to give all cells to 4 shards."""
    from polyticket.study.grid import shard_names

    langs = ["en", "fr", "de", "es"]
    path = write_study(tmp_path, bert_dir, tmp_path / "run", languages=langs, seeds=[1, 2])
    every = cells(load_study(path))
    shards = shard_names(every, 8)
    cost = {c.name: c.cost for c in every}
    loads = [sum(cost[n] for n in shard) for shard in shards]
    assert all(shards) and sorted(n for s in shards for n in s) == sorted(cost)
    assert max(loads) - min(loads) <= max(cost.values())


def test_concurrent_shards_wait_for_a_ticket_another_shard_makes(tmp_path, bert_dir):
    """With more shards than independent groups, cells are spread one by one; a transfer
    whose ticket another shard makes waits for it. Every cell runs exactly once."""
    path = write_study(
        tmp_path,
        bert_dir,
        tmp_path / "run",
        languages=["en", "fr"],
        seeds=[1],
        settings={
            "max_steps": 2,
            "batch_size": 16,
            "rate": 0.5,
            "eval_steps": 2,
        },
    )
    command = [sys.executable, "-m", "polyticket", "study", str(path), "--shard"]
    shards = [
        subprocess.Popen(command + [f"{i}/5"], env=CHILD_ENV, stdout=subprocess.DEVNULL)
        for i in range(1, 6)
    ]
    assert [p.wait(timeout=600) for p in shards] == [0] * 5
    study = load_study(path)
    assert all(c.done(study) for c in cells(study))
    starts = Counter(e["cell"] for e in events(study.out) if e["event"] == "start")
    assert set(starts.values()) == {1} and len(starts) == len(cells(study))

    # French data written again: every shard refuses (one of its cells may read a changed
    # cell of another shard), with --rerun-changed too (removing cells another shard may be
    # running is unsafe); `--plan --rerun-changed` removes them once, then the shards, all
    # started together, make exactly them again
    from polyticket.study.changes import changed_cells

    write_conll(tmp_path / "data" / "fr-train.conll", ner_sentences(48, 7))
    stale = changed_cells(study, cells(study)).stale(cells(study))
    assert stale and len(stale) < len(cells(study))
    for i in range(1, 6):
        with pytest.raises(UserError, match="made with other settings"):
            run_study(study, shard=(i, 5))
        with pytest.raises(UserError, match="--plan --rerun-changed`\\), then start the shards"):
            run_study(study, shard=(i, 5), rerun_changed=True)
    assert main(["study", str(path), "--plan", "--rerun-changed"]) == 0
    assert not any(study.layout.cell(name).root.exists() for name in stale)
    again = [subprocess.Popen(command + [f"{i}/5"], env=CHILD_ENV, stdout=subprocess.DEVNULL)
             for i in range(1, 6)]  # fmt: skip
    assert [p.wait(timeout=600) for p in again] == [0] * 5
    assert all(c.done(study) for c in cells(study)) and not changed_cells(study, cells(study)).cells
    done = Counter(e["cell"] for e in events(study.out) if e["event"] == "done")
    assert {name for name, n in done.items() if n == 2} == stale


def test_cross_task_on_an_encoder_decoder_refuses_tasks_that_prune_other_parts(
    tmp_path, mt5_dir, bert_dir
):
    """mT5's NER model is its encoder, its NLI model encoder and decoder: a ticket of one
    cannot be trained on the other (it failed, or trained a fifth of its weights masked)."""
    data = {"train_file": "x-{lang}", "eval_file": "y-{lang}"}
    study = {
        "model": str(mt5_dir),
        "languages": ["en"],
        "tasks": {"ner": {**data, "task": "ner"}, "nli": {**data, "task": "nli"}},
        "run": {"cross_task": True},
    }
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(study))
    with pytest.raises(UserError, match="ner prunes the encoder and nli the encoder and decoder"):
        load_study(path)
    path.write_text(json.dumps({**study, "model": str(bert_dir)}))  # one encoder: fits
    assert load_study(path).run["cross_task"]


def test_cross_task_between_tasks_of_other_models_is_said(tmp_path, mt5_dir, bert_dir, caplog):
    """A ticket trains only tasks of its own model: no pair at all is an error, a task
    alone on its model a warning (both gave no cells, unsaid)."""
    data = {"train_file": "x-{lang}", "eval_file": "y-{lang}"}
    study = {
        "model": str(bert_dir),
        "languages": ["en"],
        "tasks": {
            "ner": {**data, "task": "ner"},
            "nli-t5": {**data, "task": "nli", "model": str(mt5_dir)},
        },
        "run": {"cross_task": True},
    }
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(study))
    with pytest.raises(UserError, match="run.cross_task needs two tasks on one model with a"):
        load_study(path)
    shared = {**study, "tasks": {"ner": {**data, "task": "ner"}, "nli": {**data, "task": "nli"}}}
    shared["tasks"]["nli"]["languages"] = ["fr"]  # one model, no language in common
    shared["languages"] = ["en", "fr"]
    shared["tasks"]["ner"]["languages"] = ["en"]
    path.write_text(json.dumps(shared))
    with pytest.raises(UserError, match=r"no two have: ner \(.*; en\), nli \(.*; fr\)"):
        load_study(path)
    path.write_text(json.dumps(study))
    study["tasks"]["nli"] = {**data, "task": "nli"}
    path.write_text(json.dumps(study))
    with caplog.at_level("WARNING", logger="polyticket"):
        crossed = {c.name for c in cells(load_study(path)) if c.kind == "cross-task"}
    assert f"no other task shares the model and a language of nli-t5 ({mt5_dir}; en)" in (
        caplog.text
    )
    assert crossed == {
        f"{t}/en/seed57/cross-task-from-{s}-s50" for t, s in (("ner", "nli"), ("nli", "ner"))
    }


def test_an_unreadable_level_leaves_its_cell_out_of_every_table(finished, tmp_path):
    """The cell named is the one whose file is bad; the others of its language stay; the
    report draws the rest."""
    import shutil

    from polyticket.analysis.report import write_report

    shutil.copytree(finished.layout.root, tmp_path / "run")
    study = load_study(finished.path, out=tmp_path / "run")
    (study.layout.cell("ner/fr/seed2/imp").level(1).metrics).write_text("{garbage")
    everything = write_results(study)
    problems = {p["cell"]: p["problem"] for p in everything["problems"]}
    assert problems["ner/fr/seed2/imp"].startswith("unreadable")
    assert "ner/fr/seed1/imp" not in problems
    assert all(name.startswith("ner/") for name in problems)  # its dependents, said
    labels = {m["label"] for o in everything["overlap"] for m in o["masks"]}
    assert "fr/seed1" in labels and "fr/seed2" not in labels
    assert write_report(study.layout.root).index.is_file()  # no traceback from the bad file


def test_what_a_cell_depends_on_beyond_its_task_settings_is_recorded(tmp_path, bert_dir):
    """Cells whose results depend on more than their task's knobs are flagged when that
    changes: the representations cell (its sentences, pooling and masks), the core (the
    languages that share it), the random mask at the study's ticket (every seed decides the
    ticket), and every training cell when a local model is saved again at its path."""
    import shutil

    from polyticket.study.changes import changed_cells
    from polyticket.study.runner import plan

    model = tmp_path / "model"
    shutil.copytree(bert_dir, model)
    run = {"transfer": False, "core": True, "representations": {"parallel": "p-{lang}.txt"}}
    base = {"seeds": [1], "languages": ["en", "fr"], "settings": {**SETTINGS, "max_steps": 2}}

    def study(**change):
        return load_study(write_study(tmp_path, model, tmp_path / "run", **{**base, **change}))

    for lang in LANGS:
        (tmp_path / f"p-{lang}.txt").write_text("\n".join(unique_sentences(6)) + "\n")
    assert main(["study", str(study(run=run).path)]) == 0

    def changed(s) -> set[str]:
        return set(changed_cells(s, cells(s)).cells)

    rep, at_ticket = "ner/all/seed1/representations", "ner/en/seed1/random-at-ticket"
    assert changed(study(run=run)) == set()
    assert changed(study(run={**run, "representations": {**run["representations"],
                                                          "pooling": "cls"}})) == {rep}  # fmt: skip
    fr = tmp_path / "p-fr.txt"
    kept = fr.read_text()
    fr.write_text(kept + "One more sentence.\n")
    assert changed(study(run=run)) == {rep}
    fr.write_text(kept)
    more_seeds = changed(study(run=run, seeds=[1, 2]))
    assert {rep, at_ticket} <= more_seeds and "ner/en/seed1/imp" not in more_seeds
    assert "ner/en/seed1/core-s50" in changed(study(run=run, languages=LANGS))
    # a local model saved again at the same path with other weights
    from transformers import AutoModel

    torch_model = AutoModel.from_pretrained(model)
    for p in torch_model.parameters():
        p.data.add_(0.01)
    torch_model.save_pretrained(model)
    again = study(run=run)
    assert "ner/en/seed1/imp" in changed(again)
    states = {r["cell"]: r["state"] for r in plan(again)}
    assert states["ner/en/seed1/imp"] == "changed"
    assert states[rep] == "stale"  # done, but it read changed cells: --rerun-changed remakes it


def _two_ner_tasks(first: list[str], second: list[str], **run) -> dict:
    """A study change: two NER entries of the given languages (write_study's data)."""
    data = {"train_file": "data/{lang}-train.conll", "eval_file": "data/{lang}-dev.conll"}
    return {
        "tasks": {
            "ner": {**data, "languages": first},
            "ner2": {**data, "task": "ner", "languages": second},
        },
        "run": run,
    }


@pytest.mark.parametrize(
    "sets, message",
    [
        ([["en", "en"]], r"run.multi_language: en, en names 'en' twice"),
        ([["en", "fr"], ["fr", "en"]], r"run.multi_language: fr, en is the set en, fr again"),
        ([["en", "fr", "de"], ["de", "en", "fr"]], "is the set en, fr, de again"),
    ],
)
def test_a_multi_language_set_names_each_language_and_each_set_once(
    tmp_path, bert_dir, sets, message
):
    path = write_study(tmp_path, bert_dir, tmp_path / "run", run={"multi_language": sets})
    with pytest.raises(UserError, match=message):
        load_study(path)


def test_a_multi_language_set_no_task_has_is_refused_and_one_some_lack_said(
    tmp_path, bert_dir, caplog
):
    """A task trains a set only when it has all of its languages: a set no task has made no
    cells, unsaid; a task lacking one made none of its own, unsaid too."""
    change = _two_ner_tasks(["en", "de"], ["en", "fr"], multi_language=[["de", "fr"]])
    path = write_study(tmp_path, bert_dir, tmp_path / "run", **change)
    with pytest.raises(UserError, match=r"no task has all of de, fr \(ner: en, de; ner2: en, fr\)"):
        load_study(path)
    change = _two_ner_tasks(["en", "de"], ["en", "fr", "de"], multi_language=[["de", "fr"]])
    path = write_study(tmp_path, bert_dir, tmp_path / "run", **change)
    with caplog.at_level("WARNING", logger="polyticket"):
        study = load_study(path)
    assert "run.multi_language: no de+fr ticket in ner (no fr)" in caplog.text
    assert study.sources("ner") == ["en", "de"] and study.sources("ner2")[-1] == "de+fr"


@pytest.fixture(scope="module")
def with_set(tmp_path_factory, bert_dir):
    """One seed, the three languages' tickets and an en+fr ticket, transfers and random masks."""
    root = tmp_path_factory.mktemp("multi")
    path = write_study(
        root, bert_dir, root / "run", seeds=[1], run={"multi_language": [["en", "fr"]]}
    )
    assert main(["study", str(path)]) == 0
    return load_study(path)


def test_the_transfer_drop_of_a_set_is_over_the_languages_outside_it(with_set):
    """README: the drop is a transfer's, to languages a ticket was not trained on; the en+fr
    ticket's drop averaged in its own en and fr too."""
    results = StudyResults(with_set)
    matrix = results.transfer("ner", Fraction(1, 2))
    assert matrix["rows"][:4] == ["en", "fr", "de", "en+fr"]
    mean = matrix["mean"]
    drops = results.transfer_drop(matrix)
    assert drops["en+fr"] == pytest.approx(
        (mean["en+fr"]["de"] - mean["de"]["de"]) / mean["de"]["de"]
    )
    assert matrix["multi_language"] == {"en+fr": ["en", "fr"]}
    others = [(mean["en"][t] - mean[t][t]) / mean[t][t] for t in ("fr", "de")]
    assert drops["en"] == pytest.approx(sum(others) / 2)


@pytest.mark.parametrize(
    "ner, nli, message",
    [
        ({}, {"prune_pooler": True}, r"nli prunes 1 weight matrix that ner does not \(pooler"),
        (  # the study's settings: NER's model has no pooler to prune
            {"prune_pooler": True},
            {"prune_pooler": True},
            r"on .*, nli prunes 1 weight matrix that ner does not \(pooler.dense.weight\), so",
        ),
        (
            {"prune_exclude": [r".*\.intermediate\.dense\.weight"]},
            {},
            r"nli prunes 2 weight matrices that ner does not \(encoder.layer.0.intermediate.*"
            "give tasks.ner and tasks.nli the same prune_include and prune_exclude",
        ),
        ({"prune_pooler": True}, {}, None),  # nothing to prune in NER's model: the same weights
    ],
)
def test_cross_task_refuses_tasks_that_prune_other_weights_of_one_encoder(
    tmp_path, bert_dir, ner, nli, message
):
    """A ticket covering a weight the other task's model lacks failed its cross-task cell
    after both tickets were made; one leaving out a weight the other prunes trained it
    dense while cross_task.csv listed the ticket's sparsity."""
    data = {"train_file": "x-{lang}", "eval_file": "y-{lang}"}
    both = ner.get("prune_pooler") and nli.get("prune_pooler")
    study = {
        "model": str(bert_dir),
        "languages": ["en"],
        "settings": {"prune_pooler": True} if both else {},
        "tasks": {
            "ner": {**data, "task": "ner", **({} if both else ner)},
            "nli": {**data, "task": "nli", **({} if both else nli)},
        },
        "run": {"cross_task": True},
    }
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(study))
    if message is None:
        assert load_study(path).run["cross_task"]
        return
    with pytest.raises(UserError, match=message):
        load_study(path)
    study["run"]["cross_task"] = False  # only trading tickets needs the same weights
    path.write_text(json.dumps(study))
    assert not load_study(path).run["cross_task"]


def test_the_questions_between_languages_are_of_single_language_tickets(with_set):
    """An en+fr ticket was counted as a language: its pairs in the overlap between
    languages, a leaf of the clusters, its transfers to en and fr in the headline."""
    everything = write_results(with_set)
    overlap = next(o for o in everything["overlap"] if o["task"] == "ner")
    languages = {"en/seed1", "fr/seed1", "de/seed1"}
    assert {m["label"] for m in overlap["masks"]} == languages
    assert {frozenset((p["a"], p["b"])) for p in overlap["pairs"]} == {
        frozenset(pair) for pair in itertools.combinations(languages, 2)
    }
    jaccards = [p["overall"]["jaccard"] for p in overlap["pairs"]]
    assert overlap["summary"]["between_languages"] == pytest.approx(sum(jaccards) / 3)
    assert sorted(overlap["clusters"]["leaves"]) == ["de", "en", "fr"]
    # the set's own pairs, with every ticket, stand apart, in a table of their own
    multi = overlap["multi_language"]
    assert {frozenset((p["a"], p["b"])) for p in multi["pairs"]} == {
        frozenset((label, "en+fr/seed1")) for label in languages
    }
    rows = (with_set.layout.results / "overlap_multi_ner_s50.csv").read_text().splitlines()
    assert rows[1].startswith("en/seed1,en+fr/seed1,overall,all,")
    matrix = everything["transfer"][0]
    line = everything["headline"][0]
    single = [matrix["mean"][s][t] for s in LANGS for t in LANGS if s != t]
    assert line["transfer_score"] == pytest.approx(sum(single) / len(single))


def test_compare_a_study_directory_leaves_multi_language_tickets_apart(with_set, capsys):
    """As the study's own tables: en+fr was a language of the summary and the clusters."""
    write_results(with_set)
    assert main(["compare", str(with_set.out), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert {m["label"] for m in result["masks"]} == {f"{lang}/seed1" for lang in LANGS}
    assert sorted(result["clusters"]["leaves"]) == sorted(LANGS)
    assert {m["label"] for m in result["multi_language"]["masks"]} == {"en+fr/seed1"}
    assert len(result["multi_language"]["pairs"]) == 3
