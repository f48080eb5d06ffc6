"""Each registry: a toy entry registered in a test shows up in the CLI choices, the config
schema and the study validation, and goes away again."""

from __future__ import annotations

import json
import sys

import pytest

from polyticket.cli import build_parser
from polyticket.config import FindConfig, build_config
from polyticket.errors import UserError
from polyticket.study import cells, load_study
from polyticket.study.executors import EXECUTORS
from polyticket.study.executors.base import Executor
from polyticket.study.grid import Cell
from polyticket.study.kinds import CELL_KINDS
from polyticket.study.kinds.base import CellKind
from polyticket.tasks import TASKS
from polyticket.tasks.ner import NerTask


@pytest.fixture
def toy_task():
    class ToyNer(NerTask):
        pass

    TASKS.register("toy-ner")(ToyNer)
    yield "toy-ner"
    TASKS.unregister("toy-ner")


def study_file(tmp_path, **extra) -> str:
    path = tmp_path / "study.yaml"
    study = {
        "model": "bert-base-multilingual-cased",
        "languages": ["en", "fr"],
        "settings": {"rate": 0.5},
        "tasks": {"ner": {"train_file": "x-{lang}.conll", "eval_file": "y-{lang}.conll"}},
        **extra,
    }
    path.write_text(json.dumps(study))
    return str(path)


def test_a_registered_task_is_a_choice_everywhere(toy_task, tmp_path):
    args = build_parser().parse_args(["find", "--task", toy_task, "--out", "x"])
    assert args.task == toy_task
    assert TASKS[toy_task].name == toy_task  # what run.json and mask metadata write
    assert build_config(FindConfig, None, {"task": toy_task}).data.task == toy_task
    study = load_study(study_file(tmp_path, tasks={"t": {"task": toy_task, "train_file": "a"}}))
    assert study.tasks["t"].task == toy_task
    TASKS.unregister(toy_task)
    with pytest.raises(UserError, match="bad value 'toy-ner' for task: must be one of mlm"):
        build_config(FindConfig, None, {"task": toy_task})
    with pytest.raises(SystemExit):
        build_parser().parse_args(["find", "--task", toy_task, "--out", "x"])


def test_a_registered_cell_kind_adds_its_run_key_and_cells(tmp_path):
    @CELL_KINDS.register("toy")
    class Toy(CellKind):
        options = {"toy": False}

        def expand(self, study):
            if not self.enabled(study):
                return []
            return [
                Cell("toy", task, "en", seed, "toy") for task in study.tasks for seed in study.seeds
            ]

    try:
        study = load_study(study_file(tmp_path, run={"toy": True}))
        assert [c.name for c in cells(study) if c.kind == "toy"] == ["ner/en/seed57/toy"]
        assert "toy" not in {c.kind for c in cells(load_study(study_file(tmp_path)))}
    finally:
        CELL_KINDS.unregister("toy")
    with pytest.raises(UserError, match="unknown key 'toy' in run"):
        load_study(study_file(tmp_path, run={"toy": True}))


def test_a_registered_executor_is_an_option_of_study(tmp_path):
    @EXECUTORS.register("toy")
    class Toy(Executor):
        pass

    try:
        args = build_parser().parse_args(["study", "s.yaml", "--executor", "toy"])
        assert args.executor == "toy" and EXECUTORS[args.executor] is Toy
    finally:
        EXECUTORS.unregister("toy")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["study", "s.yaml", "--executor", "toy"])
    with pytest.raises(UserError, match="unknown executor 'toy': use one of .*serial"):
        EXECUTORS["toy"]


def test_an_entry_is_named_by_its_registration(tmp_path):
    """One class under two names would write its first name into every run.json."""
    with pytest.raises(ValueError, match="'toy-ner': NerTask is named 'ner'"):
        TASKS.register("toy-ner")(NerTask)
    assert "toy-ner" not in TASKS and NerTask.name == "ner"


def test_two_kinds_cannot_share_a_run_key(tmp_path):
    @CELL_KINDS.register("toy")
    class Toy(CellKind):
        options = {"transfer": False}  # the transfer kind's key

    try:
        with pytest.raises(ValueError, match="run.transfer is an option of the cell kinds"):
            load_study(study_file(tmp_path))
    finally:
        CELL_KINDS.unregister("toy")


def test_a_module_that_fails_to_import_fails_every_lookup(tmp_path, monkeypatch):
    """Not once, then "unknown …: use one of" with an empty list (a long-lived process, a
    Ray worker, would show only that)."""
    package = tmp_path / "toys"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from polyticket.registry import Registry\nREG = Registry('toy', 'toys')\n"
    )
    (package / "broken.py").write_text(  # registers, then fails: a retry is no "twice"
        "from toys import REG\n\n@REG.register('half')\nclass Half:\n    pass\n\n"
        "import not_a_module_anywhere\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import toys

        for _ in range(2):
            with pytest.raises(ModuleNotFoundError, match="not_a_module_anywhere"):
                toys.REG.names()
    finally:
        sys.modules.pop("toys", None)
