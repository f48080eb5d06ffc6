"""Parallel-sentence retrieval (issue 11, point 5) and the shared representation plumbing:
margin scores against a direct O(n²) computation, self-retrieval, masks applied and undone,
mask discovery, input errors, and the ``retrieve`` command."""

import csv
import json

import pytest
import torch
from conftest import unique_sentences
from transformers import AutoModel, AutoTokenizer

from polyticket.analysis.representations import (
    applied,
    encode,
    find_masks,
    parse_parallel,
    read_parallel,
)
from polyticket.analysis.retrieval import (
    MARGINS,
    margin_scores,
    retrieval_accuracy,
    retrieval_rows,
)
from polyticket.cli import main
from polyticket.errors import UserError
from polyticket.masks import Mask


def direct_margin(x, y, k, margin):
    """Every step of retrieval.md with plain loops: cosines, k-NN both ways, margin."""
    n = len(x)
    cos = [[(x[i] @ y[j] / (x[i].norm() * y[j].norm())).item() for j in range(n)] for i in range(n)]
    k = min(k, n)
    forward = [sorted(range(n), key=lambda j, i=i: -cos[i][j])[:k] for i in range(n)]
    fwd_mean = [sum(cos[i][j] for j in forward[i]) / k for i in range(n)]
    bwd_mean = [sum(sorted((cos[i][j] for i in range(n)), reverse=True)[:k]) / k for j in range(n)]
    scores = []
    for i in range(n):
        row = {}
        for j in forward[i]:
            mean = (fwd_mean[i] + bwd_mean[j]) / 2
            row[j] = {"ratio": cos[i][j] / mean, "distance": cos[i][j] - mean}.get(
                margin, cos[i][j]
            )
        scores.append(row)
    return scores


@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("k", [1, 3, 5, 20])
def test_margin_scores_match_a_direct_computation(margin, k):
    generator = torch.Generator().manual_seed(k)
    x = torch.randn(12, 6, generator=generator)
    y = x + 0.8 * torch.randn(12, 6, generator=generator)
    candidates, scores = margin_scores(x, y, k, margin)
    expected = direct_margin(x.double(), y.double(), k, margin)
    assert candidates.shape == (12, min(k, 12))
    for i, row in enumerate(expected):
        got = dict(zip(candidates[i].tolist(), scores[i].tolist(), strict=True))
        assert got.keys() == row.keys()
        assert list(got.values()) == pytest.approx([row[j] for j in got], rel=1e-9, abs=1e-12)
    predicted = [max(row, key=row.get) for row in expected]
    gold = sum(p == i for i, p in enumerate(predicted)) / len(predicted)
    assert retrieval_accuracy(x, y, k, margin) == pytest.approx(gold)


@pytest.fixture(scope="module")
def tiny(bert_dir):
    return AutoModel.from_pretrained(bert_dir).eval(), AutoTokenizer.from_pretrained(bert_dir)


def test_a_language_against_itself_scores_one_at_every_layer(tiny):
    states = encode(*tiny, unique_sentences(40), batch_size=16)
    assert states.shape == (3, 40, 32)  # embeddings + 2 blocks
    rows = retrieval_rows("dense", {"en": states, "again": states})
    assert [r["layer"] for r in rows] == [0, 1, 2, 0, 1, 2]
    assert all(r["accuracy"] == 1.0 for r in rows)


def test_cls_pooling_takes_the_first_token(tiny):
    model, tokenizer = tiny
    sentences = unique_sentences(6)
    states = encode(model, tokenizer, sentences, pooling="cls", batch_size=4)
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states
    torch.testing.assert_close(states, torch.stack(hidden)[:, :, 0], atol=1e-5, rtol=1e-5)


def test_mean_pooling_leaves_padding_out(tiny):
    sentences = unique_sentences(5)
    batched = encode(*tiny, sentences, batch_size=5)
    alone = torch.cat([encode(*tiny, [s]) for s in sentences], dim=1)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_batches_by_length_give_the_states_in_the_sentences_order(tiny):
    """Sentences are batched by length to save padding; the states come back in order."""
    short, long = unique_sentences(3), [" ".join(unique_sentences(4)) for _ in range(3)]
    sentences = [long[0], short[0], long[1], short[1], short[2], long[2]]
    by_length = encode(*tiny, sentences, batch_size=2)
    alone = torch.cat([encode(*tiny, [s]) for s in sentences], dim=1)
    torch.testing.assert_close(by_length, alone, atol=1e-5, rtol=1e-5)


def test_a_mask_is_applied_to_theta0_and_undone(tiny, half_mask):
    model, tokenizer = tiny
    mask = Mask.load(half_mask)
    before = {n: p.clone() for n, p in model.named_parameters()}
    params = dict(model.named_parameters())
    with applied(model, mask):
        for name, keep in mask.items():
            assert torch.equal(params[name], before[name] * keep)
        masked = encode(model, tokenizer, unique_sentences(8))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    dense = encode(model, tokenizer, unique_sentences(8))
    torch.testing.assert_close(masked[0], dense[0])  # embeddings are never pruned
    assert not torch.allclose(masked[-1], dense[-1])


def test_a_mask_that_does_not_fit_is_a_user_error(tiny, tmp_path):
    path = Mask({"encoder.layer.0.output.dense.weight": torch.ones(3, 3)}).save(tmp_path / "m.st")
    with pytest.raises(UserError, match=r"m\.st.*shape \[3, 3\]"):
        with applied(tiny[0], Mask.load(path), source=str(path)):
            pass


def test_masks_are_found_in_files_directories_and_a_study(tmp_path, half_mask):
    mask = Mask.load(half_mask)
    mask.save(tmp_path / "runs" / "ner-fr" / "ticket.safetensors")
    mask.save(tmp_path / "runs" / "ner-fr" / "level-1" / "mask.safetensors")
    (tmp_path / "runs" / "model.safetensors").write_bytes(b"\x08" + b"\0" * 7 + b"{}      ")
    assert find_masks([tmp_path / "runs", half_mask]) == {
        "ner-fr/level-1/mask": tmp_path / "runs/ner-fr/level-1/mask.safetensors",
        "ner-fr/ticket": tmp_path / "runs/ner-fr/ticket.safetensors",
        "half": half_mask,
    }
    # A study directory: only the tickets it exports.
    study = tmp_path / "study"
    mask.save(study / "cells" / "ner-en-s0" / "ticket.safetensors")
    mask.save(study / "results" / "masks" / "ner" / "en" / "seed0" / "ticket.safetensors")
    assert list(find_masks([study])) == ["ner/en/seed0/ticket"]
    with pytest.raises(UserError, match="already"):
        find_masks([half_mask, half_mask])
    with pytest.raises(UserError, match="not found"):
        find_masks([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no polyticket mask"):
        find_masks([tmp_path / "empty"])


def test_bad_parallel_input_is_a_user_error(tmp_path):
    good = tmp_path / "en.txt"
    good.write_text("one\ntwo\nthree\n", encoding="utf-8")
    short = tmp_path / "ru.txt"
    short.write_text("один\nдва\n", encoding="utf-8")
    cases = {
        "expected LANG=FILE": lambda: parse_parallel(["en.txt"]),
        "given twice": lambda: parse_parallel(["en=a", "en=b"]),
        "en.txt has 3 lines, .*ru.txt has 2": lambda: read_parallel({"en": good, "ru": short}),
        "not found": lambda: read_parallel({"en": tmp_path / "missing.txt"}),
    }
    (tmp_path / "latin1.txt").write_bytes(b"ok\nd\xe9j\xe0\n")
    cases["latin1.txt:2: not UTF-8"] = lambda: read_parallel({"en": tmp_path / "latin1.txt"})
    (tmp_path / "empty.txt").write_text("")
    cases["empty.txt: empty file"] = lambda: read_parallel({"en": tmp_path / "empty.txt"})
    (tmp_path / "gap.txt").write_text("one\n\nthree\n")
    cases["gap.txt:2: empty line"] = lambda: read_parallel({"en": tmp_path / "gap.txt"})
    (tmp_path / "one.txt").write_text("alone\n")
    cases["at least 2 sentences"] = lambda: read_parallel({"en": tmp_path / "one.txt"})
    for message, call in cases.items():
        with pytest.raises(UserError, match=message):
            call()


def test_retrieve_command_writes_csv_and_json(bert_dir, half_mask, tmp_path, capsys):
    text = tmp_path / "en.txt"
    text.write_text("\n".join(unique_sentences(20)) + "\n", encoding="utf-8")
    flags = ["--model", str(bert_dir), "--masks", str(half_mask)]
    flags += ["--parallel", f"en={text}", f"copy={text}", "--batch-size", "8"]
    out = tmp_path / "retrieval.csv"
    assert main(["retrieve", *flags, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "half  " in printed and "en→copy" in printed and "L2" in printed
    with open(out, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows[0].keys() == {"mask", "src", "tgt", "layer", "accuracy"}
    assert len(rows) == 2 * 2 * 3  # (dense, half) x both directions x 3 layers
    assert {float(r["accuracy"]) for r in rows} == {1.0}  # the same text on both sides
    assert main(["retrieve", *flags, "--json", "--k", "3", "--margin", "distance"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["k"] == 3 and report["margin"] == "distance" and report["sentences"] == 20
    assert report["masks"] == {"half": str(half_mask)} and report["languages"] == ["en", "copy"]
    assert report["rows"][0] == {
        "mask": "dense",
        "src": "en",
        "tgt": "copy",
        "layer": 0,
        "accuracy": 1.0,
    }


def test_retrieve_command_errors_exit_2(bert_dir, tmp_path, capsys):
    (tmp_path / "a.txt").write_text("x\ny\n")
    (tmp_path / "b.txt").write_text("x\n")
    parallel = ["--parallel", f"a={tmp_path / 'a.txt'}", f"b={tmp_path / 'b.txt'}"]
    assert main(["retrieve", "--model", str(bert_dir), *parallel]) == 2
    assert "a.txt has 2 lines" in capsys.readouterr().err
    wrong = Mask({"encoder.layer.0.output.dense.weight": torch.ones(3, 3)})
    wrong.save(tmp_path / "wrong.safetensors")
    (tmp_path / "c.txt").write_text("z\nw\n")
    parallel = ["--parallel", f"a={tmp_path / 'a.txt'}", f"c={tmp_path / 'c.txt'}"]
    flags = ["--model", str(bert_dir), "--masks", str(tmp_path / "wrong.safetensors")]
    assert main(["retrieve", *flags, *parallel]) == 2
    assert "wrong.safetensors: parameter encoder.layer.0" in capsys.readouterr().err


def test_the_analyses_say_what_a_fitting_mask_leaves_out(
    bert_dir, half_mask, tmp_path, caplog, capsys
):
    """As train does: a mask made for another model, or without some prunable matrices
    (they stay dense), is said; one without any matrix is refused (it is the dense model)."""
    text = tmp_path / "en.txt"
    text.write_text("\n".join(unique_sentences(6)) + "\n", encoding="utf-8")
    ticket = Mask.load(half_mask)
    first, *rest = ticket
    other = Mask({name: ticket[name] for name in rest}, {"model": "xlm-roberta-base"})
    path = other.save(tmp_path / "other.safetensors")
    flags = ["--model", str(bert_dir), "--parallel", f"en={text}", f"copy={text}"]
    with caplog.at_level("WARNING", logger="polyticket"):
        assert main(["retrieve", *flags, "--masks", str(path)]) == 0
    assert f"{path} was made for the model xlm-roberta-base, used on {bert_dir}" in caplog.text
    assert f"1 prunable matrices are not in the mask {path} and stay dense" in caplog.text
    empty = Mask({}).save(tmp_path / "empty.safetensors")
    assert main(["similarity", *flags, "--masks", str(empty)]) == 2
    assert f"{empty}: the mask holds no matrix" in capsys.readouterr().err
