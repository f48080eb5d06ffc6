"""The Ray executor on a real local Ray cluster (a head and worker nodes as processes):
retries of a failing cell, a worker node killed mid-study, tables identical to a serial run."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from test_study import events, write_study

from polyticket.cli import main
from polyticket.errors import UserError
from polyticket.io import read_json
from polyticket.study import cells, load_study, run_study

ray_cluster_utils = pytest.importorskip("ray.cluster_utils")

STORE = 80 * 2**20  # object store per node: only the study and small answers go through it
# A small study: two languages, one seed, two steps per run (8 cells).
TINY = {
    "languages": ["en", "fr"],
    "seeds": [1],
    "settings": {
        "max_steps": 2,
        "batch_size": 16,
        "learning_rate": 0.002,
        "rate": 0.5,
        "eval_steps": 2,
    },
}


@pytest.fixture(scope="module")
def cluster():
    """A head without CPUs (nothing runs on it) and one worker node with one CPU. Ray's
    files go to a short private folder (its sockets' paths must stay short)."""
    saved = os.environ.get("RAY_TMPDIR")
    folder = os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rpt", dir="/tmp")
    cluster = ray_cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": STORE}
    )
    try:
        cluster.add_node(num_cpus=1, object_store_memory=STORE)
        yield cluster
    finally:
        cluster.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved


def tables(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "results").glob("*.csv"))}


def test_a_failing_cell_is_tried_again_then_recorded_and_the_rest_go_on(
    cluster, tmp_path, bert_dir, capsys
):
    path = write_study(tmp_path, bert_dir, tmp_path / "run", **TINY)
    # a file that is there but that a cell cannot read (a missing one is refused at the start)
    (tmp_path / "data" / "fr-dev.conll").write_text("Paris B-PLACE\n")
    study = load_study(path)
    outcome = run_study(study, executor="ray", address=cluster.address, retries=1)
    assert set(outcome.failed) == {
        "ner/fr/seed1/imp",  # its own error, twice
        "ner/fr/seed1/random-s50",  # trains on French: no dev file either
        "ner/fr/seed1/transfer-from-en-s50",
    }
    assert outcome.blocked == {  # not run: they need the French ticket
        "ner/fr/seed1/random-at-ticket": "ner/fr/seed1/imp",
        "ner/en/seed1/transfer-from-fr-s50": "ner/fr/seed1/imp",
    }
    assert "fr-dev.conll" in outcome.failed["ner/fr/seed1/imp"]
    assert sorted(outcome.ran) == sorted(c.name for c in cells(study) if c.done(study))
    assert len(outcome.ran) == 3
    log = events(study.out)
    starts = Counter(e["cell"] for e in log if e["event"] == "start")
    assert starts["ner/fr/seed1/imp"] == 2  # one retry
    assert "ner/fr/seed1/random-at-ticket" not in starts  # never started
    # A try with a retry left fails quietly (other shards go on waiting); the last is written.
    ends = [e["event"] for e in log if e["cell"] == "ner/fr/seed1/imp" and e["event"] != "start"]
    assert ends == ["try failed", "failed"]
    assert sorted(p.name for p in study.layout.cells.rglob("*.failed.json")) == [
        "imp.failed.json",
        "random-s50.failed.json",
        "transfer-from-en-s50.failed.json",
    ]
    err = capsys.readouterr().err
    assert "ner/fr/seed1/imp: try 1 failed" in err and "FAILED after 2 tries" in err
    assert "[8/8]" in err  # a progress line for every cell


def test_a_failure_file_beside_a_done_cell_blocks_nothing(cluster, tmp_path, bert_dir):
    """An earlier run's failure left beside a cell done since (a try that wrote its result,
    then failed or lost its worker) is no failure: its dependants run, under Ray as under
    the serial executor."""
    study = load_study(write_study(tmp_path, bert_dir, tmp_path / "run", **TINY))
    assert not run_study(study).failed
    ticket, dependant = "ner/fr/seed1/imp", "ner/fr/seed1/random-at-ticket"
    study.layout.cell_failure(ticket).write_text('{"error": "an earlier try"}')
    for executor, options in (("ray", {"address": cluster.address}), ("serial", {})):
        shutil.rmtree(study.layout.cell(dependant).root)
        outcome = run_study(study, executor=executor, **options)
        assert outcome.ran == [dependant] and not outcome.blocked, executor


def test_a_cell_lost_with_its_node_on_its_last_try_is_recorded_failed(cluster, tmp_path, bert_dir):
    """No worker lives to write the failure down: the driver does, so that another shard
    waiting for the cell stops waiting, and a re-run runs it (and only what is missing)."""
    path = write_study(tmp_path, bert_dir, tmp_path / "run", **TINY)
    out = tmp_path / "run"
    code, output = _kill_a_node_mid_study(cluster, path, out, retries=0)
    assert code == 1, output
    study = load_study(path)
    lost = {e["cell"] for e in events(out) if e["event"] == "failed"}
    assert lost and all(study.layout.cell_failure(name).is_file() for name in lost), output
    assert all("Error" in read_json(study.layout.cell_failure(n))["error"] for n in lost)
    assert "cell(s) not run: they need one that failed" in output or all(
        not c.deps or not set(c.deps) & lost for c in cells(study)
    )
    again = run_study(study, executor="ray", address=cluster.address)
    assert not again.failed and not again.blocked and lost <= set(again.ran)
    done = Counter(e["cell"] for e in events(out) if e["event"] == "done")
    assert set(done) == {c.name for c in cells(study)} and set(done.values()) == {1}
    assert not list(out.rglob("*.failed.json"))


def test_killing_a_worker_node_mid_study_changes_nothing(cluster, tmp_path, bert_dir):
    """Two worker nodes run the two tickets side by side; one node is killed while both
    run. The lost cell is tried again on the other node; every cell completes once and the
    tables are byte for byte those of a serial run."""
    serial = load_study(
        write_study(tmp_path / "serial", bert_dir, tmp_path / "serial" / "run", **TINY)
    )
    assert not run_study(serial).failed

    path = write_study(tmp_path / "ray", bert_dir, tmp_path / "ray" / "run", **TINY)
    out = tmp_path / "ray" / "run"
    code, output = _kill_a_node_mid_study(cluster, path, out, retries=2)
    assert code == 0, output
    assert "trying again" in output  # the killed node's cell

    study = load_study(path)
    assert all(c.done(study) for c in cells(study))
    done = Counter(e["cell"] for e in events(out) if e["event"] == "done")
    assert set(done) == {c.name for c in cells(study)} and set(done.values()) == {1}
    assert not list(out.rglob("*.partial")) and not list(out.rglob("*.failed.json"))
    assert main(["study", str(serial.path), "--summary"]) == 0
    assert tables(out) and tables(out) == tables(serial.out)


def test_options_of_another_executor_are_refused(tmp_path, bert_dir):
    study = load_study(write_study(tmp_path, bert_dir, tmp_path / "run", **TINY))
    with pytest.raises(
        UserError, match="--gpus-per-cell: not an option of --executor serial \\(it takes none\\)"
    ):
        run_study(study, gpus_per_cell=0.5)


def _kill_a_node_mid_study(cluster, path: Path, out: Path, retries: int) -> tuple[int, str]:
    """``polyticket study --executor ray`` on a fresh worker node, killed while two cells
    run (one of them on it): the driver's exit code and output."""
    doomed = cluster.add_node(num_cpus=1, object_store_memory=STORE)
    command = [sys.executable, "-m", "polyticket", "study", str(path), "--executor", "ray"]
    command += ["--address", cluster.address, "--retries", str(retries)]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: _running(out) >= 2, driver, "two cells running at once")
        cluster.remove_node(doomed, allow_graceful=False)
        output, _ = driver.communicate(timeout=900)
    finally:
        driver.kill()
    return driver.returncode, output


def _running(out: Path) -> int:
    ended = Counter(e["cell"] for e in events(out) if e["event"] in ("done", "failed"))
    started = Counter(e["cell"] for e in events(out) if e["event"] == "start")
    return sum((started - ended).values())


def _wait_for(condition, process: subprocess.Popen, what: str, seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            output = process.stdout.read() if process.poll() is not None else ""
            raise AssertionError(f"never saw {what}:\n{output}")
        time.sleep(0.1)


def test_cells_share_a_gpu_and_its_workers_run_cell_after_cell(cluster, tmp_path, bert_dir):
    """A node with one GPU (a logical one: Ray schedules by count) runs two cells at a time
    with --gpus-per-cell 0.5, and its workers are reused from cell to cell (Ray starts a
    fresh process for each task whose GPU share is declared in ``ray.remote``)."""
    study = load_study(write_study(tmp_path, bert_dir, tmp_path / "run", **TINY))
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1, object_store_memory=STORE)
    try:
        outcome = run_study(study, executor="ray", address=cluster.address, gpus_per_cell=0.5)
    finally:
        cluster.remove_node(gpu_node)
    assert not outcome.failed and len(outcome.ran) == 8
    log = events(study.out)
    starts = {e["cell"]: e for e in log if e["event"] == "start"}
    ends = {e["cell"]: e["time"] for e in log if e["event"] == "done"}
    spans = [(starts[c]["time"], ends[c]) for c in starts]
    assert any(a < d and c < b for i, (a, b) in enumerate(spans) for c, d in spans[i + 1 :])
    assert len({e["pid"] for e in starts.values()}) < len(starts)


def test_resources_no_node_has_are_refused_before_cells_wait_forever(
    tmp_path, bert_dir, caplog, monkeypatch
):
    """A negative or NaN share is refused before Ray starts; a share no node has fails on
    the cluster started for the run and is a warning on one's own (an autoscaler may grow
    it). Ray's node list is given here as the executor reads it."""
    from polyticket.study.executors.ray import Ray

    study = load_study(write_study(tmp_path, bert_dir, tmp_path / "run", **TINY))
    for knob, value in (("cpus_per_cell", -1.0), ("gpus_per_cell", float("nan"))):
        with pytest.raises(UserError, match="must be a number"):
            run_study(study, executor="ray", **{knob: value})
    with pytest.raises(UserError, match="--cpus-per-cell must be a number above 0, got 0"):
        run_study(study, executor="ray", cpus_per_cell=0.0)  # Ray would take 0 for 1
    with pytest.raises(UserError, match="--address bad: Invalid address"):
        run_study(study, executor="ray", address="bad")
    # Ray would retry these for minutes: a host that does not resolve, a port nobody is at
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    for address in ("nohost.invalid:6379", f"127.0.0.1:{port}"):
        with pytest.raises(UserError, match=f"--address {address}: no Ray cluster answers"):
            run_study(study, executor="ray", address=address)
    from polyticket.study.executors.ray import _check_answers

    with socket.socket(socket.AF_INET6) as listening:  # an IPv6 address in brackets
        try:
            listening.bind(("::1", 0))
        except OSError:  # no IPv6 loopback on this machine
            pass
        else:
            listening.listen()
            _check_answers(f"[::1]:{listening.getsockname()[1]}")
    with monkeypatch.context() as env, pytest.raises(UserError, match=r"^\$RAY_ADDRESS nohost"):
        env.setenv("RAY_ADDRESS", "nohost.invalid:6379")  # where Ray looks without the flag
        run_study(study, executor="ray")

    class Nodes:  # ray.nodes(): a CPU node, and a dead one with a GPU
        @staticmethod
        def nodes():
            return [
                {"Alive": True, "Resources": {"CPU": 2.0}},
                {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0}},
            ]

    with pytest.raises(UserError, match=r"--gpus-per-cell 1: no node .*\(the most is 0\)"):
        Ray(gpus_per_cell=1.0)._check_fits(Nodes, strict=True)
    with pytest.raises(UserError, match="--cpus-per-cell 4: no node"):
        Ray(cpus_per_cell=4.0)._check_fits(Nodes, strict=True)
    with caplog.at_level("WARNING", logger="polyticket"):
        Ray(cpus_per_cell=4.0)._check_fits(Nodes, strict=False)
    assert "--cpus-per-cell 4: no node" in caplog.text and "cells wait" in caplog.text
    Ray(cpus_per_cell=2.0, gpus_per_cell=0.0)._check_fits(Nodes, strict=True)  # fits
