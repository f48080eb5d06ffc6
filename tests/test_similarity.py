"""Representation similarity (issue 11, point 6) on properties that hold exactly, and the
``similarity`` command on a tiny BERT."""

import csv
import json

import pytest
import torch
from conftest import unique_sentences

from polyticket.analysis.similarity import (
    MEASURES,
    cca,
    linear_cka,
    pwcca,
    pwcca_weights,
    similarity_rows,
    spectrum,
    svcca,
)
from polyticket.cli import main


def random(n, d, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def rotation(d, seed=1):
    q, _ = torch.linalg.qr(random(d, d, seed))
    return q


def orthonormal_centred(n, count, seed=2):
    """``count`` orthonormal columns with zero mean: exact canonical variates to build from."""
    z = random(n, count, seed)
    q, _ = torch.linalg.qr(z - z.mean(0))
    return q.T


@pytest.mark.parametrize("measure", list(MEASURES))
def test_a_representation_is_similar_to_itself(measure):
    x = random(200, 16) @ torch.diag(torch.linspace(0.5, 3, 16, dtype=torch.float64))
    assert MEASURES[measure](x, x, 0.0) == pytest.approx(1.0, abs=1e-10)
    assert MEASURES[measure](x, x + 5.0, 0.0) == pytest.approx(1.0, abs=1e-10)  # centred


@pytest.mark.parametrize("measure", ["cka", "svcca"])
def test_invariant_to_rotation_and_isotropic_scaling(measure):
    x, y = random(150, 12, seed=3), random(150, 10, seed=4)
    y = y + 0.7 * x[:, :10]  # related, so the value is neither 0 nor 1
    value = MEASURES[measure](x, y, 0.0)
    assert 0.05 < value < 0.95
    assert MEASURES[measure](x @ rotation(12), 7.5 * y, 0.0) == pytest.approx(value, abs=1e-10)
    assert MEASURES[measure](0.01 * x, y @ rotation(10), 0.0) == pytest.approx(value, abs=1e-10)


def test_cka_equals_its_gram_form_when_samples_are_few():
    x, y = random(8, 20, seed=5), random(8, 30, seed=6)
    xc, yc = x - x.mean(0), y - y.mean(0)
    direct = (yc.T @ xc).square().sum() / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    assert linear_cka(x, y) == pytest.approx(direct.item(), abs=1e-12)


def test_cca_recovers_known_correlations():
    q1, q2, q3, q4 = orthonormal_centred(300, 4)
    c = 0.6
    s = (1 - c * c) ** 0.5
    # Mixed by invertible matrices (CCA does not see them) and with a redundant column.
    x = torch.stack([q1, q2, q4], 1) @ random(3, 3, seed=7)
    x = torch.cat([x, x[:, :1] - x[:, 1:2]], 1)
    y = torch.stack([q1, c * q2 + s * q3], 1) @ random(2, 2, seed=8)
    result = cca(x, y)
    assert result.correlations.tolist() == pytest.approx([1.0, c], abs=1e-10)
    assert cca(torch.stack([q1], 1), torch.stack([q2], 1)).correlations.tolist() == pytest.approx(
        [0.0], abs=1e-10
    )
    # SVCCA keeps every direction of these (none below 1% of the variance).
    x2, y2 = torch.stack([q1, q2], 1), torch.stack([q1, c * q2 + s * q3], 1)
    assert svcca(x2, y2) == pytest.approx((1 + c) / 2, abs=1e-10)


def test_pwcca_weights_sum_to_one_and_follow_the_neurons():
    x, y = random(120, 9, seed=9), random(120, 7, seed=10)
    for epsilon in (0.0, 0.5):
        weights = pwcca_weights(x, cca(x, y, epsilon))
        assert weights.sum().item() == pytest.approx(1.0, abs=1e-12)
        assert (weights >= 0).all() and len(weights) == 7
    # Neurons q1, q2 (orthonormal): each canonical variate is one of them, weight 1/2 each.
    q1, q2, q3 = orthonormal_centred(200, 3, seed=11)
    c, s = 0.3, (1 - 0.09) ** 0.5
    x, y = torch.stack([q1, q2], 1), torch.stack([q1, c * q2 + s * q3], 1)
    assert pwcca_weights(x, cca(x, y)).tolist() == pytest.approx([0.5, 0.5], abs=1e-10)
    assert pwcca(x, y) == pytest.approx((1 + c) / 2, abs=1e-10)


def test_epsilon_shrinks_correlations_but_keeps_scale_invariance():
    x, y = random(60, 40, seed=12), random(60, 40, seed=13)
    plain, ridge = cca(x, y).correlations, cca(x, y, epsilon=0.1).correlations
    assert (ridge <= plain + 1e-12).all() and ridge.mean() < plain.mean()
    assert svcca(x, y, epsilon=0.1) == pytest.approx(svcca(3 * x, y, epsilon=0.1), abs=1e-10)
    # Few samples, many dimensions: unregularised CCA finds correlations of 1 in pure noise.
    assert plain[:20].min() > 0.999


def test_constant_representations_give_nan():
    x = torch.ones(10, 4, dtype=torch.float64)
    assert all(torch.tensor(MEASURES[m](x, random(10, 4), 0.0)).isnan() for m in MEASURES)


def test_rows_compare_with_dense_and_across_languages():
    en, fr = random(3 * 50, 8, seed=14).reshape(3, 50, 8), random(150, 8, seed=15).reshape(3, 50, 8)
    rows = similarity_rows("m", {"en": en, "fr": fr}, {"en": en, "fr": fr}, ["cka"])
    dense = [r for r in rows if r["comparison"] == "dense"]
    assert [(r["languages"], r["layer"]) for r in dense] == [
        ("en", 0), ("en", 1), ("en", 2), ("fr", 0), ("fr", 1), ("fr", 2)
    ]  # fmt: skip
    assert all(r["value"] == pytest.approx(1.0) for r in dense)
    cross = [r for r in rows if r["comparison"] == "cross-lingual"]
    assert {r["languages"] for r in cross} == {"en,fr"} and len(cross) == 3
    assert similarity_rows("dense", {"en": en}, None) == []
    # Precomputed spectra (what the command passes) give the same rows as tensors.
    spectra = {"en": [spectrum(x) for x in en], "fr": [spectrum(x) for x in fr]}
    precomputed = similarity_rows("m", spectra, spectra, epsilon=0.2)
    direct = similarity_rows("m", {"en": en, "fr": fr}, {"en": en, "fr": fr}, epsilon=0.2)
    assert [r["value"] for r in precomputed] == pytest.approx([r["value"] for r in direct])
    assert [r["measure"] for r in precomputed] == [r["measure"] for r in direct]


def test_similarity_command_writes_csv_and_json(bert_dir, half_mask, tmp_path, capsys):
    sentences = unique_sentences(60)
    (tmp_path / "a.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("\n".join(reversed(sentences)) + "\n", encoding="utf-8")
    flags = ["--model", str(bert_dir), "--masks", str(half_mask), "--batch-size", "16"]
    flags += ["--parallel", f"a={tmp_path / 'a.txt'}", f"b={tmp_path / 'b.txt'}"]
    out = tmp_path / "similarity.csv"
    assert main(["similarity", *flags, "--out", str(out)]) == 0
    assert "cross-lingual" in capsys.readouterr().out
    with open(out, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows[0].keys() == {"mask", "comparison", "languages", "layer", "measure", "value"}
    # dense: a,b; half: vs dense on a and b, and a,b; 3 layers, 3 measures each
    assert len(rows) == (1 + 3) * 3 * 3
    embeddings = [r for r in rows if r["comparison"] == "dense" and r["layer"] == "0"]
    assert len(embeddings) == 6 and all(float(r["value"]) == pytest.approx(1) for r in embeddings)
    # a measure named twice is computed once
    assert main(["similarity", *flags, "--json", "--measures", "cka,cka", "--epsilon", "0.1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["measures"] == ["cka"] and report["epsilon"] == 0.1
    assert {r["mask"] for r in report["rows"]} == {"dense", "half"}
    assert main(["similarity", *flags, "--measures", "cka,nope"]) == 2
    assert "unknown 'nope'" in capsys.readouterr().err
    # nothing to compare: one language and no mask (it printed a warning and exited 0)
    alone = ["--model", str(bert_dir), "--parallel", f"a={tmp_path / 'a.txt'}"]
    assert main(["similarity", *alone]) == 2
    assert "give --masks, or --parallel files of two or more languages" in capsys.readouterr().err
    # two sentences span one direction once centred: every measure was 1
    (tmp_path / "two.txt").write_text("one\ntwo\n", encoding="utf-8")
    two = ["--parallel", f"a={tmp_path / 'two.txt'}", f"b={tmp_path / 'two.txt'}"]
    assert main(["similarity", "--model", str(bert_dir), *two]) == 2
    assert "similarity needs at least 3 sentences, has 2" in capsys.readouterr().err


def test_a_nan_in_the_table_is_explained():
    from polyticket.analysis.similarity import format_similarity

    def row(layer, value):
        keys = {"mask": "dense", "comparison": "dense", "languages": "en", "measure": "cka"}
        return {**keys, "layer": layer, "value": value}

    assert "nan:" not in format_similarity([row(0, 1.0), row(1, 0.9)])
    text = format_similarity([row(0, float("nan")), row(1, 0.9)])
    assert "nan: a representation with no variance across sentences" in text
