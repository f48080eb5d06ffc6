"""Every mistake in input is one line naming the file, line or knob, exit 2, and harms nothing.

The table runs ``polyticket`` in this process on malformed configs, flags, data, masks,
study files, outputs and model directories; most fail before any model is loaded. Each case
checks the exit status, the one line and its words, and that no file changed (checksums of
everything the case could reach, the existing results in ``--out`` included).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
from conftest import ner_sentences, write_conll

from polyticket.cli import main
from polyticket.masks import Mask


def _checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _safetensors(header: dict | bytes, payload: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


@pytest.fixture(scope="module")
def world(tmp_path_factory, bert_dir):
    """Good inputs, the bad ones of every case, a tiny model and an existing result."""
    w = tmp_path_factory.mktemp("world")
    shutil.copytree(bert_dir, w / "bert")
    write_conll(w / "train.conll", ner_sentences(24, 1))
    write_conll(w / "dev.conll", ner_sentences(8, 2))
    (w / "out").mkdir()
    (w / "out" / "metrics.json").write_text('{"best_score": 0.5}\n')
    files = {
        "bad-utf8.yaml": b"batch_size: 4\nlanguage: \xff\xfe\n",
        "bad-utf8.conll": b"EU B-ORG\nParis\xc3 B-LOC\n",
        "empty.conll": b"",
        "columns.conll": b"EU NNP B-ORG\nrejects O\n",
        "tag.conll": b"EU PER\n",
        "one-column.conll": b"EU B-ORG\nParis\n",
        "id.jsonl": b'{"tokens": ["a"], "ner_tags": [99]}\n',
        "negative-id.jsonl": b'{"tokens": ["a"], "ner_tags": [-1]}\n',
        "number-token.jsonl": b'{"tokens": [3], "ner_tags": ["O"]}\n',
        "bool-tag.jsonl": b'{"tokens": ["a"], "ner_tags": [true]}\n',
        "not-json.jsonl": b'{"tokens": ["a"], "ner_tags": ["O"]}\n{tokens\n',
        "list.jsonl": b'[["a"], ["O"]]\n',
        "misc-dev.conll": b"EU B-MISC\n",
        "label.tsv": b"premise\thypothesis\tlabel\na\tb\tmaybe\n",
        "premise.jsonl": b'{"premise": 3, "hypothesis": "b", "label": 0}\n',
        "no-label.tsv": b"premise\thypothesis\na\tb\n",
        "text.jsonl": b'{"text": ["not", "a", "string"]}\n',
        "random.safetensors": bytes(range(256)) * 3,
        "empty.safetensors": b"",
        "huge-header.safetensors": struct.pack("<Q", 2**60) + b"{}",
        "nested.safetensors": _safetensors(b"[" * 100000),
        "shapes.safetensors": _safetensors({"__metadata__": {"format": "polyticket-mask/1"}}),
        "bad-shapes.safetensors": _safetensors(
            {"__metadata__": {"format": "polyticket-mask/1", "shapes": '{"w": [-1]}'}}
        ),
        "huge-shapes.safetensors": _safetensors(
            {
                "__metadata__": {"format": "polyticket-mask/1", "shapes": '{"w": [99999999999]}'},
                "w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
            },
            b"\x01",
        ),
        "offsets.safetensors": _safetensors(
            {
                "__metadata__": {"format": "polyticket-mask/1", "shapes": '{"w": [4]}'},
                "w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 4096]},
            },
            b"\x01",
        ),
        "pickle.pt": pickle.dumps(print),
        "not-json.json": b'{"batch_size": 4,',
        "list.yaml": b"- batch_size\n- 4\n",
        "yaml-error.yaml": b"batch_size: [4\n",
        "a-file": b"I am a file\n",
    }
    for name, data in files.items():
        (w / name).write_bytes(data)
    with zipfile.ZipFile(w / "archive.zip", "w") as z:
        z.writestr("data.pkl", b"not a pickle")
    mask = Mask.ones({"encoder.layer.0.attention.self.query.weight": (32, 32)})
    mask.save(w / "good.safetensors")
    (w / "truncated.safetensors").write_bytes((w / "good.safetensors").read_bytes()[:-10])
    (w / "no-model").mkdir()
    (w / "config-only").mkdir()
    shutil.copy(w / "bert" / "config.json", w / "config-only")
    (w / "unknown-type").mkdir()
    (w / "unknown-type" / "config.json").write_text('{"model_type": "no-such-model"}')
    (w / "broken-config").mkdir()
    (w / "broken-config" / "config.json").write_text("{not json")
    shutil.copytree(w / "bert", w / "corrupt")
    (w / "corrupt" / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    import torch

    torch.save(
        {"bert.encoder.layer.0.attention.self.query.weight_mask": torch.ones(2)}, w / "orig.pt"
    )
    (w / "done-run").mkdir()
    (w / "done-run" / "run.json").write_text('{"config": {}}\n')
    (w / "train-run").mkdir()
    (w / "train-run" / "run.json").write_text('{"config": {"train": {}, "mask": null}}\n')
    (w / "train-run" / "metrics.json").write_text('{"best_score": 0.5}\n')
    (w / "bad-study" / "results").mkdir(parents=True)
    (w / "bad-study" / "results" / "results.json").write_text("[]\n")
    (w / "empty-study").mkdir()
    imp = w / "old-demo" / "cells" / "ner" / "en" / "seed1" / "imp"  # a cell of another make
    (imp / "level_00").mkdir(parents=True)  # with work done (one with none starts afresh)
    (imp / "cell.json").write_text('{"max_steps": 1}\n')
    return w


def _yaml(w: Path, name: str, text: str) -> Path:
    path = w / name
    if not path.exists():
        path.write_text(text, encoding="utf-8")
    return path


def find(w: Path, *extra: str, train: str = "train.conll", dev: str = "dev.conll") -> list[str]:
    return [
        "find",
        "--model", str(w / "bert"),
        "--train-file", str(w / train),
        "--eval-file", str(w / dev),
        "--max-steps", "1",
        "--cpu",
        "--out", str(w / "out"),
        *extra,
    ]  # fmt: skip


def train(w: Path, *extra: str) -> list[str]:
    return ["train", *find(w)[1:-2], *extra]


def with_config(w: Path, name: str, text: str) -> list[str]:
    return find(w, "--config", str(_yaml(w, name, text)))


def study(w: Path, name: str, text: str) -> list[str]:
    return ["study", str(_yaml(w, name, text))]


STUDY = "model: {bert}\nout: {out}\nlanguages: [en]\ntasks: {{ner: {{train_file: x}}}}\n"


def study_with(w: Path, name: str, extra: str) -> list[str]:
    return study(w, name, STUDY.format(bert=w / "bert", out=w / "o") + extra)


def model(w: Path, name: str) -> list[str]:
    argv = find(w)
    return [*argv[:1], "--model", str(w / name), *argv[3:]]


def out(w: Path, where: str) -> list[str]:
    return [*find(w)[:-2], "--out", where]


# (id, argv from the world, words the one line must contain)
CASES = [
    # knobs as flags: checked when the config is built, before any model is loaded
    ("batch-zero", lambda w: find(w, "--batch-size", "0"), "batch_size: must be >= 1"),
    ("batch-negative", lambda w: find(w, "--batch-size", "-3"), "batch_size"),
    ("batch-word", lambda w: find(w, "--batch-size", "x"), "--batch-size"),
    ("lr-zero", lambda w: find(w, "--learning-rate", "0"), "learning_rate: must be > 0"),
    ("lr-negative", lambda w: find(w, "--learning-rate=-1e-5"), "learning_rate"),
    ("lr-nan", lambda w: find(w, "--learning-rate", "nan"), "learning_rate"),
    ("seed-negative", lambda w: find(w, "--seed", "-1"), "seed"),
    ("seed-2-32", lambda w: find(w, "--seed", str(2**32)), "seed: must be >= 0 and < 4.29"),
    ("epsilon", lambda w: find(w, "--epsilon", "-0.1"), "epsilon: must be >= 0"),
    ("levels", lambda w: find(w, "--levels", "0"), "levels: must be >= 1"),
    ("levels-all", lambda w: find(w, "--rate", "0.5", "--levels", "2"), "at most 1 level at"),
    ("target-one", lambda w: find(w, "--target-sparsity", "1"), "target_sparsity: must be"),
    ("target-negative", lambda w: find(w, "--target-sparsity", "-0.1"), "target_sparsity"),
    ("target-zero", lambda w: find(w, "--target-sparsity", "0"), "target_sparsity: must be > 0"),
    ("rate-zero", lambda w: find(w, "--rate", "0"), "rate: must be > 0 and < 1"),
    ("rate-big", lambda w: find(w, "--rate", "1.5"), "rate"),
    ("max-steps", lambda w: find(w, "--max-steps", "0"), "max_steps: must be >= 1"),
    ("eval-steps", lambda w: find(w, "--eval-steps", "0"), "eval_steps"),
    ("log-steps", lambda w: find(w, "--log-steps", "0"), "log_steps"),
    ("accumulation", lambda w: find(w, "--gradient-accumulation-steps", "0"), "accumulation"),
    ("samples", lambda w: find(w, "--max-train-samples", "0"), "max_train_samples"),
    ("seq-length", lambda w: find(w, "--max-seq-length", "0"), "max_seq_length"),
    ("block-size", lambda w: find(w, "--block-size", "0"), "block_size"),
    # longer than the model's positions (the tiny BERT has 128): the task's own length knob
    ("seq-long", lambda w: find(w, "--max-seq-length", "129"), "max_seq_length 129 is longer"),
    ("block-long", lambda w: find(w, "--task", "mlm", "--block-size", "129"), "block_size 129"),
    ("eval-batch", lambda w: find(w, "--eval-batch-size", "0"), "eval_batch_size"),
    ("warmup", lambda w: find(w, "--warmup-ratio", "1"), "warmup_ratio"),
    ("mlm-probability", lambda w: find(w, "--mlm-probability", "0"), "mlm_probability"),
    ("fp16-cpu", lambda w: find(w, "--mixed-precision", "fp16"), "'fp16' for mixed_precision"),
    ("regex", lambda w: find(w, "--prune-include", "("), "not a regular expression"),
    ("task", lambda w: find(w, "--task", "pos"), "--task"),
    ("scope", lambda w: find(w, "--scope", "column"), "--scope"),
    # knobs in config files: one schema for every source
    ("yaml-bool", lambda w: with_config(w, "bool.yaml", "batch_size: true\n"), "batch_size"),
    ("yaml-word", lambda w: with_config(w, "word.yaml", "batch_size: 32x\n"), "batch_size"),
    ("yaml-list", lambda w: with_config(w, "lr.yaml", "learning_rate: [1]\n"), "learning_rate"),
    ("yaml-float", lambda w: with_config(w, "float.yaml", "eval_steps: 1.5\n"), "eval_steps"),
    ("yaml-text", lambda w: with_config(w, "text.yaml", "text_column: [a, b]\n"), "text_column"),
    ("yaml-flag", lambda w: with_config(w, "flag.yaml", "prune_pooler: yes2\n"), "prune_pooler"),
    ("yaml-typo", lambda w: with_config(w, "typo.yaml", "max_stepz: 3\n"), "'max_steps'?"),
    ("yaml-seed", lambda w: with_config(w, "seed.yaml", "seed: -5\n"), "seed.yaml"),
    ("yaml-preset", lambda w: with_config(w, "preset.yaml", "preset: paper-pos\n"), "paper-pos"),
    ("yaml-shape", lambda w: find(w, "--config", str(w / "list.yaml")), "list.yaml"),
    ("yaml-syntax", lambda w: find(w, "--config", str(w / "yaml-error.yaml")), "not valid YAML"),
    (
        "yaml-null",
        lambda w: with_config(w, "null.yaml", "learning_rate: null\n"),
        "null.yaml: bad value null for learning_rate: it has no 'off'",
    ),
    (
        "ratio-and-eval-file",
        lambda w: find(w, "--task", "mlm", "--validation-ratio", "0.2"),
        "give eval_file or validation_ratio",
    ),
    ("ratio-ner", lambda w: find(w, "--validation-ratio", "0.2"), "applies to task mlm, not ner"),
    (
        "yaml-twice",
        lambda w: with_config(w, "twice.yaml", "batch_size: 4\nbatch_size: 8\n"),
        "duplicate key 'batch_size'",
    ),
    (
        "yaml-two-spellings",
        lambda w: with_config(w, "spellings.yaml", "max-steps: 5\nmax_steps: 6\n"),
        "max_steps is given twice, as 'max-steps' and 'max_steps'",
    ),
    ("yaml-utf8", lambda w: find(w, "--config", str(w / "bad-utf8.yaml")), "bad-utf8.yaml:2"),
    ("json-syntax", lambda w: find(w, "--config", str(w / "not-json.json")), "not-json.json"),
    ("config-missing", lambda w: find(w, "--config", str(w / "nope.yaml")), "nope.yaml"),
    (
        "original-typo",
        lambda w: with_config(w, "orig.json", '{"do_train": true, "learnig_rate": 1e-5}'),
        "did you mean 'learning_rate'",
    ),
    (
        "original-batch",
        lambda w: with_config(
            w, "orig2.json", '{"do_train": true, "per_device_train_batch_size": 0}'
        ),
        "batch_size",
    ),
    # data files: the file at fault and its line
    ("data-utf8", lambda w: find(w, train="bad-utf8.conll"), "bad-utf8.conll:2: not UTF-8"),
    ("data-empty", lambda w: find(w, train="empty.conll"), "empty.conll: no usable examples"),
    ("data-columns", lambda w: find(w, train="columns.conll"), "columns.conll:2: 2 columns"),
    ("data-tag", lambda w: find(w, train="tag.conll"), "tag.conll:1: tag 'PER'"),
    ("data-one-column", lambda w: find(w, train="one-column.conll"), "one-column.conll:2"),
    ("jsonl-id", lambda w: find(w, train="id.jsonl"), "id.jsonl:1: tag id 99"),
    ("jsonl-negative", lambda w: find(w, train="negative-id.jsonl"), "negative-id.jsonl:1"),
    ("jsonl-token", lambda w: find(w, train="number-token.jsonl"), "number-token.jsonl:1"),
    ("jsonl-bool", lambda w: find(w, train="bool-tag.jsonl"), "bool-tag.jsonl:1"),
    ("jsonl-syntax", lambda w: find(w, train="not-json.jsonl"), "not-json.jsonl:2"),
    ("jsonl-shape", lambda w: find(w, train="list.jsonl"), "list.jsonl:1"),
    ("data-missing", lambda w: find(w, dev="nope.conll"), "nope.conll"),
    (
        "dev-only-tag",
        lambda w: find(w, dev="misc-dev.conll"),
        "misc-dev.conll: tag 'B-MISC' is not among the labels inferred from the training data",
    ),
    (
        "given-labels",
        lambda w: find(w, "--labels", "O", "B-PER", "I-PER"),
        "train.conll: tag 'B-LOC' is not one of --labels O B-PER I-PER",
    ),
    ("nli-label", lambda w: find(w, "--task", "nli", train="label.tsv"), "label.tsv:2"),
    ("nli-text", lambda w: find(w, "--task", "nli", train="premise.jsonl"), "premise.jsonl:1"),
    ("nli-column", lambda w: find(w, "--task", "nli", train="no-label.tsv"), "no-label.tsv:2"),
    ("mlm-text", lambda w: find(w, "--task", "mlm", train="text.jsonl"), "text.jsonl:1"),
    # masks: any bytes at all
    ("mask-random", lambda w: ["masks", "info", str(w / "random.safetensors")], "random.safe"),
    ("mask-empty", lambda w: ["masks", "info", str(w / "empty.safetensors")], "empty.safe"),
    ("mask-header", lambda w: ["masks", "info", str(w / "huge-header.safetensors")], "huge-h"),
    ("mask-nested", lambda w: ["masks", "info", str(w / "nested.safetensors")], "nested.safe"),
    ("mask-no-shapes", lambda w: ["masks", "info", str(w / "shapes.safetensors")], "shapes.safe"),
    ("mask-bad-shapes", lambda w: ["masks", "info", str(w / "bad-shapes.safetensors")], "bad-sh"),
    ("mask-huge", lambda w: ["masks", "info", str(w / "huge-shapes.safetensors")], "huge-shapes"),
    ("mask-offsets", lambda w: ["masks", "info", str(w / "offsets.safetensors")], "offsets.safe"),
    ("mask-truncated", lambda w: ["masks", "info", str(w / "truncated.safetensors")], "truncated"),
    ("mask-pickle", lambda w: ["masks", "info", str(w / "pickle.pt")], "pickle.pt"),
    ("mask-zip", lambda w: ["masks", "import", str(w / "archive.zip"), str(w / "out/m.st")], "zip"),
    ("import-pickle", lambda w: ["masks", "import", str(w / "pickle.pt"), str(w / "out/x")], "pt"),
    ("mask-missing", lambda w: ["masks", "info", str(w / "nope.safetensors")], "nope.safetensors"),
    # outputs: refused before any work
    ("out-file", lambda w: out(w, str(w / "a-file")), "a-file is an existing file"),
    ("out-under-file", lambda w: out(w, str(w / "a-file" / "run")), "a-file/run"),
    ("out-proc", lambda w: out(w, "/proc/polyticket-run"), "/proc/polyticket-run"),
    (
        "export-dir",
        lambda w: ["masks", "export", str(w / "good.safetensors"), str(w / "out")],
        "is a directory",
    ),
    (
        "synth-under-file",
        lambda w: ["data", "synth", "--task", "ner", "--language", "en", "--size", "2",
                   "--out", str(w / "a-file" / "x.conll")],
        "a-file is an existing file",
    ),  # fmt: skip
    # an output that is an input, or that holds another run: refused, the input unharmed
    (
        "export-onto-input",
        lambda w: ["masks", "export", str(w / "good.safetensors"), str(w / "good.safetensors")],
        "is an input of the command too",
    ),
    (
        "import-onto-input",
        lambda w: ["masks", "import", str(w / "orig.pt"), str(w / "orig.pt")],
        "is an input of the command too",
    ),
    (
        "compare-csv-onto-input",
        lambda w: ["compare", str(w / "good.safetensors"), str(w / "good.safetensors"),
                   "--csv", str(w / "good.safetensors")],
        "is an input of the command too",
    ),  # fmt: skip
    (
        "train-over-unfinished",
        lambda w: train(w, "--out", str(w / "done-run")),
        "holds an unfinished run already",
    ),
    ("train-over-run", lambda w: train(w, "--out", str(w / "train-run")), "holds a run already"),
    (
        "find-over-train",
        lambda w: out(w, str(w / "train-run")),
        "train-run holds a training run (polyticket train), not a find run to continue",
    ),
    # a control mask's knobs without a control mask would be ignored
    ("sparsity-dense", lambda w: train(w, "--sparsity", "0.3"), "not to dense training"),
    (
        "sparsity-dense-named",
        lambda w: train(w, "--mask", "dense", "--sparsity", "0.3"),
        "not to dense training",
    ),
    (
        "sparsity-with-file",
        lambda w: train(w, "--mask", str(w / "good.safetensors"), "--sparsity", "0.3"),
        "not to a mask file",
    ),
    (
        "sparsity-twice",
        lambda w: train(w, "--mask", "random", "--sparsity", "0.3",
                        "--sparsity-from", str(w / "good.safetensors")),
        "not both",
    ),  # fmt: skip
    (
        "start-from-without-sparsity",
        lambda w: train(w, "--mask", "random", "--start-from", str(w / "good.safetensors")),
        "start_from prunes further up to a sparsity: give sparsity",
    ),
    (
        "start-from-a-mask-file",
        lambda w: train(w, "--mask", str(w / "good.safetensors"),
                        "--start-from", str(w / "good.safetensors")),
        "start_from applies to mask random or oneshot, not to a mask file",
    ),  # fmt: skip
    (
        "scope-with-file",
        lambda w: train(w, "--mask", str(w / "good.safetensors"), "--scope", "layer"),
        "scope applies to mask random or oneshot, not to a mask file",
    ),
    ("scope-dense", lambda w: train(w, "--scope", "matrix"), "not to dense training"),
    (
        "synth-one-file",
        lambda w: ["data", "synth", "--task", "nli", "--language", "en,fr", "--size", "2",
                   "--out", str(w / "x.tsv")],
        "need {lang}",
    ),  # fmt: skip
    (
        "synth-size-zero",
        lambda w: ["data", "synth", "--task", "ner", "--language", "en", "--size", "0",
                   "--out", str(w / "x.conll")],
        "--size: must be at least 1",
    ),  # fmt: skip
    (
        "synth-language-list",
        lambda w: ["data", "synth", "--task", "ner", "--language", "en,,fr", "--size", "2",
                   "--out", str(w / "x-{lang}.conll")],
        "unsupported language ''",
    ),  # fmt: skip
    # masks by kind: a folder, the original code's torch.save file
    ("mask-folder", lambda w: ["masks", "info", str(w / "no-model")], "a directory, not a mask"),
    ("mask-torch-save", lambda w: ["masks", "info", str(w / "orig.pt")], "masks import"),
    # analyses' numbers and folders
    (
        "heads-zero",
        lambda w: ["compare", str(w / "good.safetensors"), str(w / "good.safetensors"),
                   "--heads", "0"],
        "--heads: must be at least 1",
    ),  # fmt: skip
    (
        "retrieve-batch",
        lambda w: ["retrieve", "--model", str(w / "bert"), "--parallel", "en=x", "fr=y",
                   "--batch-size", "0"],
        "--batch-size: must be at least 1",
    ),  # fmt: skip
    (
        "retrieve-one-language",
        lambda w: ["retrieve", "--model", str(w / "bert"), "--parallel", "en=x"],
        "retrieval needs files of two or more languages",
    ),
    (
        "similarity-epsilon-nan",
        lambda w: ["similarity", "--model", str(w / "bert"), "--parallel", "en=x", "fr=y",
                   "--epsilon", "nan"],
        "--epsilon must be a number",
    ),  # fmt: skip
    ("report-of-a-run", lambda w: ["report", str(w / "done-run")], "a find or train run"),
    ("report-results", lambda w: ["report", str(w / "bad-study")], "not a study's results"),
    (
        "report-out-file",
        lambda w: ["report", str(w / "empty-study"), "--out", str(w / "a-file")],
        "a-file is an existing file",
    ),
    # the model's limits, known from its config before any data is read
    ("seq-too-long", lambda w: find(w, "--max-seq-length", "1000"), "max_seq_length 1000 is"),
    # study files
    ("study-shape", lambda w: study(w, "s1.yaml", "- a\n"), "s1.yaml"),
    ("study-utf8", lambda w: ["study", str(w / "bad-utf8.yaml")], "bad-utf8.yaml:2"),
    (
        "study-bool",
        lambda w: study_with(w, "s2.yaml", "settings: {batch_size: true}\n"),
        "batch_size",
    ),
    (
        "study-synth",
        lambda w: study_with(w, "s3.yaml", "synth: {'{lang}.conll': {task: ner, size: x}}\n"),
        "size",
    ),
    ("study-out", lambda w: study(w, "s4.yaml", "out: [1]\ntasks: {ner: {}}\n"), "s4.yaml: out"),
    (
        "study-seeds",
        lambda w: study_with(w, "s5.yaml", "seeds: [true]\n"),
        "seeds",
    ),
    ("study-tasks", lambda w: study(w, "s6.yaml", "languages: [en]\n"), "s6.yaml: 'tasks'"),
    (
        "study-typo",
        lambda w: study_with(w, "s7.yaml", "settings: {learnig_rate: 1}\n"),
        "learning_rate",
    ),
    ("study-data", lambda w: study_with(w, "s8.yaml", ""), "tasks.ner.train_file: no file"),
    (
        "study-null",
        lambda w: study_with(w, "s8c.yaml", "settings: {batch_size: null}\n"),
        "bad value null for batch_size",
    ),
    (
        "study-twice",
        lambda w: study_with(w, "s8b.yaml", "settings: {seed: 1}\nsettings: {seed: 2}\n"),
        "duplicate key 'settings'",
    ),
    (
        "study-two-spellings",
        lambda w: study_with(w, "s8d.yaml", "settings: {eval-steps: 2, eval_steps: 3}\n"),
        "s8d.yaml: settings: eval_steps is given twice",
    ),
    (
        "study-multi",
        lambda w: study_with(w, "s9.yaml", "run: {multi_language: [[en, xx]]}\n"),
        "'xx' is none of the study's languages",
    ),
    (
        "study-synth-path",
        lambda w: study_with(w, "s10.yaml", "synth: {'../{lang}.conll': {task: ner, size: 2}}\n"),
        "not a path",
    ),
    (
        "study-synth-language",
        lambda w: study(
            w,
            "s11.yaml",
            STUDY.format(bert=w / "bert", out=w / "o").replace("[en]", "[en, xx]")
            + "synth: {'{lang}.conll': {task: ner, size: 2}}\n",
        ),
        "no synthetic data in 'xx'",
    ),
    (
        "study-synth-extension",
        lambda w: study_with(w, "s12.yaml", "synth: {'{lang}.tsv': {task: ner, size: 2}}\n"),
        "synth.{lang}.tsv: the extension picks the format: .conll, .jsonl",
    ),
    (
        "study-synth-split",
        lambda w: study_with(
            w, "s13.yaml", "synth: {'{lang}.tsv': {task: nli, size: 2, split: x}}\n"
        ),
        "split must be one of train, dev, test",
    ),
    (
        "demo-other-settings",
        lambda w: ["demo", "--out", str(w / "old-demo")],
        "made with other settings than the demo study's (first: ner/en/seed1/imp): give "
        "another --out",
    ),
    (
        "model-home-file",
        lambda w: ["models", "prepare", "e5-small", "--home", str(w / "a-file")],
        "a-file/models",
    ),
    (
        "prune-include-part",
        lambda w: find(w, "--prune-include", "query"),
        "with 'query' (each must match a whole parameter name)",
    ),
    # model directories
    ("model-empty", lambda w: model(w, "no-model"), "empty"),
    ("model-no-tokenizer", lambda w: model(w, "config-only"), "no tokenizer"),
    ("model-type", lambda w: model(w, "unknown-type"), "no-such-model"),
    ("model-config", lambda w: model(w, "broken-config"), "config.json"),
    ("model-weights", lambda w: model(w, "corrupt"), "corrupt"),
    ("model-missing", lambda w: model(w, "nowhere/x"), "nowhere"),
]  # fmt: skip


def test_the_table_covers_every_category():
    assert len(CASES) >= 60
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("argv, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_malformed_input_is_one_line_and_exit_2(world, argv, words, capsys):
    args = argv(world)
    before = _checksums(world)
    try:
        code = main(args)
    except SystemExit as exc:  # flags argparse refuses
        code = exc.code
    err = capsys.readouterr().err
    # warnings (an original config's ignored keys) may precede it; the error is one line
    lines = [line for line in err.splitlines() if line.startswith("polyticket: error: ")]
    assert code == 2, err
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]), err
    assert words in lines[0], lines[0]
    assert "Traceback" not in err
    after = _checksums(world)
    # nothing outside --out changed, and no existing file in --out was modified
    assert {k: v for k, v in after.items() if k in before} == before
    assert all(k.startswith("out/") for k in after.keys() - before.keys()), after.keys() - before


def test_a_refused_command_leaves_no_empty_output_folder(world, tmp_path, capsys):
    """The output folder is checked before any work and made by the first file written: a
    command refused later (its data, its model) leaves nothing to clean up."""
    fresh = tmp_path / "runs" / "new"
    for argv in (
        [*find(world, train="empty.conll")[:-2], "--out", str(fresh)],
        [*find(world)[:-2], "--model", str(world / "no-model"), "--out", str(fresh)],
        ["masks", "import", str(world / "pickle.pt"), str(fresh / "m.safetensors")],
    ):
        assert main(argv) == 2, capsys.readouterr().err
        assert not (tmp_path / "runs").exists(), argv
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")  # found now, not at the first write
    assert main([*find(world)[:-2], "--out", str(tmp_path / "gone" / "run")]) == 2
    assert "gone is a link to nothing" in capsys.readouterr().err


def test_a_yaml_key_given_twice_is_refused_but_merge_keys_still_override():
    import yaml

    from polyticket.io import parse_yaml

    text = "base: &b {seed: 1, lr: 2}\nrun:\n  <<: *b\n  seed: 3\n"
    assert parse_yaml(text) == {"base": {"seed": 1, "lr": 2}, "run": {"seed": 3, "lr": 2}}
    with pytest.raises(yaml.YAMLError, match="(?s)duplicate key 'seed'.*line 3"):
        parse_yaml("run:\n  seed: 1\n  seed: 2\n")
