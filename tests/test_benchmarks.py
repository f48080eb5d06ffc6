"""Every benchmark runs in its smoke mode and gives every row (no time is asserted: the
figures are measured by ``make bench``, not tested)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

BENCH = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "run.py"))


def test_make_bench_smoke_gives_every_row(tmp_path, capsys):
    out = tmp_path / "bench.json"
    report = BENCH["main"](["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    rows = {(r["benchmark"], r["row"].split(",")[0]) for r in report["rows"]}
    assert rows >= {
        ("train_step", "bool-masks / dense"),
        ("train_step", "bit-masks / dense"),
        ("train_step", "float-masks / dense"),
        ("train_step", "hooks / dense"),
        ("precision", "bf16 / fp32"),
        ("precision", "tf32 + AdamW fused / fp32 + foreach"),
        ("overlap", "one pair"),
        ("mask_files", "bits per weight"),
        ("mask_files", "save time"),
        ("mask_files", "load time"),
        ("padding", "tokens/s dynamic / padded to 128"),
        ("study_throughput", "1 cells per GPU / 1"),
        ("study_throughput", "8 cells per GPU / 1"),
    }
    for row in report["rows"]:
        figures = [row.get(k) for k in ("time", "memory", "ratio", "value")]
        assert any(isinstance(f, float) and f > 0 for f in figures) or row.get("note"), row
    assert "train_step" in capsys.readouterr().out


def test_make_bench_runs_the_throughput_rows_on_the_study_it_is_given(tmp_path):
    study = tmp_path / "packed.yaml"  # smoke rows name the study without running it
    report = BENCH["main"](
        [
            "--smoke",
            "--only",
            "study_throughput",
            "--study",
            str(study),
            "--out",
            str(tmp_path / "b.json"),
        ]
    )
    assert [r["row"] for r in report["rows"]] == [
        f"{k} cells per GPU / 1, packed.yaml" for k in (1, 2, 4, 8)
    ]


def test_the_table_gives_every_row_name_whole():
    """Names were cut at 64 characters, and rows lost the ends that tell them apart."""
    name = "tokens/s dynamic / padded to 128, forward + backward, bert-base batch 8"
    table = BENCH["table"]([{"benchmark": "padding", "row": name, "ratio": 2.5}])
    assert name in table and table.splitlines()[1].endswith("2.500        -")


def test_padding_does_not_always_run_the_same_padding_first(monkeypatch):
    """The first of a fixed order came out slower (train_step.py's dense, ~7%): each round
    starts with another variant (``train_step.rotated``)."""
    import padding

    widths = []
    real_padded = padding.padded
    monkeypatch.setattr(
        padding,
        "padded",
        lambda lengths, width, vocab: widths.append(width) or real_padded(lengths, width, vocab),
    )
    padding.rows(smoke=True, batches=1)
    fixed = [w == padding.MAX_LENGTH for w in widths]
    assert fixed == [False, True, True, False]  # rounds: dynamic first, then fixed first


def test_precision_does_not_always_run_the_baseline_first(monkeypatch):
    import precision

    order = []
    real_step = precision.run_step

    def run_step(model, optimizer, enforcer, inputs, dtype):
        order.append((dtype, bool(optimizer.defaults.get("fused"))))
        real_step(model, optimizer, enforcer, inputs, dtype)

    monkeypatch.setattr(precision, "run_step", run_step)
    precision.rows(smoke=True)
    rounds = [order[: len(precision.VARIANTS)], order[len(precision.VARIANTS) :]]
    assert rounds[0][0] != rounds[1][0] and sorted(rounds[0]) == sorted(rounds[1])


def test_overlap_checks_the_layer_and_component_figures_too(monkeypatch):
    """Only the overall Jaccard was compared: a wrong layer figure went unnoticed."""
    import overlap

    real = overlap.original_overlap

    def off_in_one_layer(a, b):
        found = real(a, b)
        first = next(iter(found["layer"]))
        found["layer"][first] += 0.01
        return found

    monkeypatch.setattr(overlap, "original_overlap", off_in_one_layer)
    with pytest.raises(AssertionError, match="layer"):
        overlap.main(["--smoke", "--masks", "2", "--repeats", "1"])


def test_study_throughput_prepares_the_model_before_timing_any_packing(monkeypatch):
    """The 1-per-GPU packing paid the model's conversion, which the later ones found done:
    every "k per GPU / 1" ratio came out too high."""
    import study_throughput

    import polyticket.study
    import polyticket.study.runner

    events = []

    class Outcome:
        ran, failed = ["cell"], []

    def run_study(study, gpus_per_cell, **_):
        events.append(f"run 1/{round(1 / gpus_per_cell)}")
        return Outcome()

    monkeypatch.setattr(polyticket.study.runner, "prepare_models", lambda s: events.append("model"))
    monkeypatch.setattr(polyticket.study, "run_study", run_study)
    monkeypatch.setattr(study_throughput.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(study_throughput.torch.cuda, "get_device_name", lambda: "a GPU")
    rows = list(study_throughput.rows())
    assert events == ["model", "run 1/1", "run 1/2", "run 1/4", "run 1/8"]
    assert [r["row"].split(",")[0] for r in rows] == [
        f"{k} cells per GPU / 1" for k in (1, 2, 4, 8)
    ]


def test_mask_files_runs_each_way_once_untimed_before_timing_it(monkeypatch):
    """The first save and load paid one-off costs inside the timing."""
    import mask_files
    import torch

    from polyticket.masks import Mask

    timing, calls = [False], []

    def timed(fn):
        timing[0] = True
        try:
            return real_timed(fn)
        finally:
            timing[0] = False

    def recorded(name, real):
        return lambda *a, **k: calls.append((name, timing[0])) or real(*a, **k)

    real_timed = mask_files.timed
    monkeypatch.setattr(mask_files, "timed", timed)
    monkeypatch.setattr(torch, "save", recorded("save_pt", torch.save))
    monkeypatch.setattr(torch, "load", recorded("load_pt", torch.load))
    monkeypatch.setattr(Mask, "save", recorded("save", Mask.save))
    monkeypatch.setattr(Mask, "load", staticmethod(recorded("load", Mask.load)))
    mask_files.rows(smoke=True)
    first = {}
    for name, was_timed in calls:
        first.setdefault(name, was_timed)
    assert first == {"save": False, "save_pt": False, "load": False, "load_pt": False}
