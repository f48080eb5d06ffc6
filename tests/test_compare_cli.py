"""``polyticket compare`` as a user runs it: table, --json, --csv, clusters, clear errors."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from test_overlap import bert_shapes, random_mask

from polyticket.cli import main
from polyticket.masks import Mask


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A one-shot mask and tickets of four languages that depart a little from it."""
    folder = tmp_path_factory.mktemp("compare")
    oneshot = random_mask(bert_shapes(), 0.5, 100)
    paths = {"oneshot": oneshot.save(folder / "oneshot.safetensors")}
    for i, lang in enumerate(["en", "fr", "ru", "zh"]):
        g = torch.Generator().manual_seed(i)
        moved = Mask({n: t ^ (torch.rand(t.shape, generator=g) < 0.05) for n, t in oneshot.items()})
        paths[lang] = moved.save(folder / f"{lang}.safetensors", language=lang, seed=0, num_heads=4)
    return paths


def tickets(files):
    return [str(files[lang]) for lang in ("en", "fr", "ru", "zh")]


def test_table_with_references(files, capsys):
    assert main(["compare", *tickets(files), "--baseline", str(files["oneshot"])]) == 0
    out = capsys.readouterr().out
    assert "en/0 ~ fr/0" in out and "beyond θ0" in out and "random" in out
    # with a baseline, clustered by beyond θ0 as a study's results are
    assert "languages clustered by beyond_theta0" in out and "vs script" in out


def test_json_and_csv(files, tmp_path, capsys):
    table = tmp_path / "overlap.csv"
    argv = ["compare", *tickets(files), "--baseline", str(files["oneshot"]), "--json"]
    assert main([*argv, "--csv", str(table), "--cluster-by", "beyond_theta0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["pairs"]) == 6 and result["heads"] == {"heads": 4, "kv_heads": None}
    pair = result["pairs"][0]
    assert set(pair["overall"]) == {
        "jaccard",
        "random",
        "agreement",
        "agreement_random",
        "beyond_theta0",
        "beyond_theta0_random",
    }
    assert "encoder.layer.1.head3" in pair["by_head"]
    assert result["clusters"]["measure"] == "beyond_theta0"
    assert len(result["clusters"]["merges"]) == 3
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert {r["scope"] for r in rows} == {"overall", "layer", "component", "head"}
    assert sum(r["b"] == "oneshot" for r in rows if r["scope"] == "overall") == 4


def test_bad_input_names_the_file(files, tmp_path, capsys, caplog):
    assert main(["compare", str(files["en"]), str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
    other = random_mask(bert_shapes(layers=1), 0.5, 0).save(tmp_path / "small.safetensors")
    assert main(["compare", str(files["en"]), str(other)]) == 2
    err = capsys.readouterr().err
    assert "not of one model" in err and str(other) in err  # the files, not only the labels
    xlmr = Mask.load(files["fr"]).save(tmp_path / "xlmr.safetensors", model="xlm-roberta-base")
    mbert = Mask.load(files["en"]).save(tmp_path / "mbert.safetensors", model="mbert")
    with caplog.at_level("WARNING", logger="polyticket"):
        assert main(["compare", str(mbert), str(xlmr)]) == 0  # the same shapes: compared, said
    assert "was made for the model mbert and" in caplog.text
    # a head count against the masks' own is refused; one they do not state is checked
    assert main(["compare", *tickets(files), "--heads", "3"]) == 2
    assert "--heads 3 gives 3 attention heads, but the masks were made for a model with 4" in (
        capsys.readouterr().err
    )
    unstated = [Mask(dict(Mask.load(files[lang]).items())) for lang in ("en", "fr")]
    paths = [str(m.save(tmp_path / f"{i}.safetensors")) for i, m in enumerate(unstated)]
    assert main(["compare", *paths, "--heads", "3"]) == 2
    assert "does not split into 3 heads" in capsys.readouterr().err
    assert main(["compare", *paths]) == 0  # masks that state no seed: said
    assert "seed unknown for 0, 1: pairs of one seed" in capsys.readouterr().out
    odd = Mask.load(files["en"]).save(tmp_path / "odd.safetensors", num_heads="x")
    assert main(["compare", str(odd), str(files["fr"]), str(files["ru"])]) == 2
    assert "odd.safetensors: num_heads 'x' is no head count" in capsys.readouterr().err


def test_text_columns_line_up_and_heads_are_a_grid(files, capsys):
    """Short labels under long section titles kept their columns; heads get a grid."""
    assert main(["compare", str(files["en"]), str(files["fr"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert not any(line.startswith("seed unknown") for line in lines)
    headers = [line for line in lines if line.rstrip().endswith("agr. random")]
    assert len(headers) == 3  # pairs, by layer, by component
    rows = [line for line in lines if line.startswith(("en/0 ~ fr/0", "query", "ffn out"))]
    ends = {len(line.rstrip()) for line in headers + rows}
    assert len(ends) == 1, "\n".join(headers + rows)
    grid = lines[
        lines.index("by head: jaccard (mean over pairs of languages; a column per head)") + 1 :
    ]
    assert grid[0].split() == ["0", "1", "2", "3"]
    assert [row.split()[0] for row in grid[1:3]] == ["encoder.layer.0", "encoder.layer.1"]
    assert all(0 <= float(value) <= 1 for value in grid[1].split()[1:])


def test_masks_of_one_language_and_seed_are_not_called_other_seeds(files, tmp_path, capsys):
    same = Mask.load(files["en"]).save(tmp_path / "en-nli.safetensors", language="en", seed=0)
    assert main(["compare", str(files["en"]), str(files["fr"]), str(same)]) == 0
    out = capsys.readouterr().out
    assert "  same language " in out and "other seed" not in out
    other = Mask.load(files["en"]).save(tmp_path / "en-1.safetensors", language="en", seed=1)
    assert main(["compare", str(files["en"]), str(files["fr"]), str(other)]) == 0
    assert "same language, other seed" in capsys.readouterr().out
    # with other seeds there, the one-seed twin is left out of the bound, which stays "other seed"
    assert main(["compare", str(files["en"]), str(files["fr"]), str(same), str(other)]) == 0
    assert "same language, other seed" in capsys.readouterr().out


def test_a_study_task_with_one_ticket_is_passed_over(files, tmp_path, capsys):
    """NER in two languages and NLI in one: NER's tickets are compared, NLI's one is said
    (the study's own overlap tables pass it over too)."""
    import shutil

    masks = tmp_path / "study" / "results" / "masks"
    for task, langs in (("ner", ("en", "fr")), ("nli", ("en",))):
        for lang in langs:
            (masks / task / lang / "seed1").mkdir(parents=True)
            shutil.copy(files[lang], masks / task / lang / "seed1" / "s50.safetensors")
    assert main(["compare", str(tmp_path / "study")]) == 0
    captured = capsys.readouterr()
    assert "== ner s50 ==" in captured.out and "nli s50" not in captured.out
    assert "nli s50: one ticket, nothing to compare it with" in captured.err
    shutil.rmtree(masks / "ner" / "fr")
    assert main(["compare", str(tmp_path / "study")]) == 2
    assert "no task has two tickets at one sparsity to compare" in capsys.readouterr().err
