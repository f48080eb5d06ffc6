"""The bridges to the original code: its .pt mask files and its JSON configs."""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch.nn.utils import prune
from transformers import BertConfig, BertForTokenClassification

from polyticket.compat import (
    export_torch_prune,
    import_torch_mask,
    is_original_config,
    read_mask,
    translate_config,
)
from polyticket.errors import UserError
from polyticket.masks import Mask

MATRICES = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


class NotATensor:
    """Pickled by torch.save as a global, which a weights_only load must refuse."""


def tiny_model() -> BertForTokenClassification:
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
        num_labels=3,
    )
    return BertForTokenClassification(config).eval()


@pytest.fixture(scope="module")
def shapes() -> dict[str, tuple[int, ...]]:
    """The six prunable matrices per layer, by base-model name."""
    return {
        name: tuple(p.shape)
        for name, p in tiny_model().base_model.named_parameters()
        if name.endswith(".weight") and name.split(".", 3)[-1].removesuffix(".weight") in MATRICES
    }


@pytest.fixture
def mask(shapes) -> Mask:
    generator = torch.Generator().manual_seed(1)
    return Mask(
        {name: torch.rand(shape, generator=generator) > 0.3 for name, shape in shapes.items()}
    )


def original_file(path: Path, mask: Mask, prefix: str) -> Path:
    """What the original scripts saved: every ``*mask`` entry of a pruned state dict, as float."""
    state = OrderedDict()
    for name, kept in mask.items():
        state[f"{prefix}{name}_mask"] = kept.float()
        state[f"{prefix}{name}_orig"] = torch.randn(kept.shape)
    torch.save(state, path)
    return path


def test_shapes_cover_six_matrices_per_layer(shapes):
    assert len(shapes) == 2 * len(MATRICES)
    assert "encoder.layer.1.attention.self.query.weight" in shapes


@pytest.mark.parametrize("prefix", ["bert.", "module.bert."])
def test_import_original_mask_gives_the_bool_mask(tmp_path, mask, shapes, prefix):
    path = original_file(tmp_path / "fr_mask.pt", mask, prefix)
    imported = import_torch_mask(path, known_names=shapes)
    assert imported == mask
    assert imported.metadata == {"method": "imported", "source": "fr_mask.pt"}
    imported.check_fits(shapes)
    assert import_torch_mask(path) == mask  # without known names, the prefixes still go


def test_t5_encoder_prefix_stays_when_it_is_part_of_the_name(tmp_path):
    known = ["encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight"]
    path = tmp_path / "mt5_mask.pt"
    torch.save(
        {"module.transformer.encoder.block.0.layer.0.SelfAttention.q.weight_mask": torch.eye(3)},
        path,
    )
    assert list(import_torch_mask(path, known)) == [known[0]]
    torch.save({"encoder.block.0.layer.0.SelfAttention.q.weight_mask": torch.eye(3)}, path)
    assert list(import_torch_mask(path, known)) == [known[0]]


def test_export_then_import_round_trips(tmp_path, mask, shapes):
    path = export_torch_prune(mask, tmp_path / "out" / "mask.pt", prefix="bert.")
    assert import_torch_mask(path, shapes) == mask
    assert read_mask(path, shapes) == mask
    assert list(tmp_path.joinpath("out").iterdir()) == [path]  # no temporary file left


def test_exported_file_prunes_exactly_the_masked_weights(tmp_path, mask):
    path = export_torch_prune(mask, tmp_path / "mask.pt")
    state = torch.load(path, map_location="cpu", weights_only=True)
    base = tiny_model().base_model
    for key, buffer in state.items():
        assert buffer.dtype == torch.float32
        module = base.get_submodule(key.removesuffix(".weight_mask"))
        prune.custom_from_mask(module, "weight", mask=buffer)
        # The buffers torch.nn.utils.prune keeps carry exactly the names the file uses.
        assert dict(base.named_buffers())[key] is module.weight_mask
    weights = dict(base.named_parameters(remove_duplicate=False))
    for name, kept in mask.items():
        weight = base.get_submodule(name.removesuffix(".weight")).weight
        original = weights[name.removesuffix(".weight") + ".weight_orig"]
        assert torch.equal(weight == 0, ~kept | (original == 0))
        assert torch.equal(weight[kept], original[kept])


def test_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"bert.encoder.layer.0.output.dense.weight_mask": NotATensor()}, path)
    with pytest.raises(UserError, match=r"evil\.pt: holds a Python object .*NotATensor"):
        import_torch_mask(path)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(UserError, match="mask file not found: .*nope.pt"):
        import_torch_mask(tmp_path / "nope.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello world")
    with pytest.raises(UserError, match=r"notes\.pt: not a file torch.save wrote"):
        import_torch_mask(text)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match=r"empty\.pt: not a file torch.save wrote"):
        import_torch_mask(empty)


def test_bad_contents(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"bert.encoder.layer.0.output.dense.weight_mask": torch.tensor([0.0, 0.5])}, path)
    with pytest.raises(UserError, match=r"m\.pt: entry '.*output.dense.weight_mask'.* 0 and 1"):
        import_torch_mask(path)
    torch.save({"bert.encoder.layer.0.output.dense.weight": torch.ones(2)}, path)
    with pytest.raises(UserError, match=r"m\.pt: no mask entries"):
        import_torch_mask(path)
    torch.save([torch.ones(2)], path)
    with pytest.raises(UserError, match=r"m\.pt: expected a dict"):
        import_torch_mask(path)
    torch.save({"classifier.weight_mask": torch.ones(2)}, path)
    with pytest.raises(UserError, match="parameter classifier.weight is not in the model"):
        import_torch_mask(path, ["encoder.layer.0.output.dense.weight"])


def test_read_mask_takes_both_formats(tmp_path, mask):
    ours = mask.save(tmp_path / "mask.safetensors", language="fr")
    theirs = export_torch_prune(mask, tmp_path / "mask.pt", prefix="module.bert.")
    assert read_mask(ours) == mask == read_mask(theirs)
    assert read_mask(ours).metadata["language"] == "fr"
    assert read_mask(theirs).metadata["method"] == "imported"


KNOBS = {
    "model",
    "language",
    "dataset",
    "task",
    "learning_rate",
    "batch_size",
    "eval_batch_size",
    "epochs",
    "max_steps",
    "max_seq_length",
    "eval_steps",
    "log_steps",
    "seed",
    "init",
    "train_file",
    "eval_file",
    "mask",
}

NER_ORIGINAL = {
    "output_dir": "tmp/ner",
    "model_name_or_path": "bert-base-multilingual-cased",
    "data_language": "fr",
    "task_name": "ner",
    "dataset_name": "wikiann",
    "do_train": True,
    "max_seq_length": 128,
    "per_device_train_batch_size": 32,
    "learning_rate": 2e-5,
    "num_train_epochs": 30,
    "evaluate_during_training": True,
    "logging_steps": 1875,
    "save_steps": 1875,
    "pad_to_max_length": True,
    "seed": 57,
    "weight_init": "pre",
    "mask_dir": "x.pt",
}


def test_translate_original_ner_config(caplog):
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        values = translate_config(NER_ORIGINAL, KNOBS, "ner.json")
    assert values == {
        "model": "bert-base-multilingual-cased",
        "language": "fr",
        "task": "ner",
        "dataset": "unimelb-nlp/wikiann",
        "max_seq_length": 128,
        "batch_size": 32,
        "learning_rate": 2e-5,
        "epochs": 30,
        "eval_steps": 1875,
        "seed": 57,
        "init": "pretrained",
        "mask": "x.pt",
    }
    messages = [r.getMessage() for r in caplog.records]
    ignored = ["output_dir", "do_train", "evaluate_during_training", "save_steps"]
    ignored.append("pad_to_max_length")
    assert len(messages) == len(ignored)
    for key in ignored:
        assert sum(f"ignoring key {key!r} of ner.json" in m for m in messages) == 1
    assert "polyticket has no such setting" in next(m for m in messages if "save_steps" in m)
    assert "no setting 'out'" in next(m for m in messages if "output_dir" in m)


def test_translate_values_and_missing_targets(caplog):
    original = {
        "model_name_or_path": "google/mt5-base",
        "task_name": "XNLI",
        "dataset_name": "xnli",
        "initial_weight": "rand",
        "max_steps": -1,
        "logging_steps": 100,
        "evaluate_during_training": False,
        "some_future_flag": 1,
    }
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        values = translate_config(original, KNOBS - {"mask"}, "x.json")
    assert values == {
        "model": "google/mt5-base",
        "task": "nli",
        "dataset": "facebook/xnli",
        "init": "random",
        "max_steps": None,
        "log_steps": 100,
    }
    assert any("'some_future_flag'" in r.getMessage() for r in caplog.records)
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        translate_config({"mask_dir": "m.pt", "seed": 1}, {"seed"}, "y.json")
    assert "ignoring key 'mask_dir' of y.json: this command has no setting 'mask'" in caplog.text


def test_conflicting_original_keys():
    with pytest.raises(UserError, match="'weight_init' and 'initial_weight' both set init"):
        translate_config({"weight_init": "pre", "initial_weight": "rand"}, KNOBS, "c.json")
    same = translate_config({"weight_init": "pre", "initial_weight": "pre"}, KNOBS, "c.json")
    assert same == {"init": "pretrained"}


def test_polyticket_config_passes_through_and_rejects_unknown_keys():
    ours = {"model": "m", "language": "de", "epochs": 2, "learning_rate": 1e-4}
    assert not is_original_config(ours)
    assert translate_config(ours, KNOBS, "ours.yaml") == ours
    with pytest.raises(UserError, match=r"^ours\.yaml: unknown key 'learning_rat'$"):
        translate_config({"model": "m", "learning_rat": 1e-4}, KNOBS, "ours.yaml")
    # An original key that polyticket shares (seed) does not make a file original.
    with pytest.raises(UserError, match="unknown key 'block_size'"):
        translate_config({"seed": 1, "block_size": 512}, KNOBS, "ours.yaml")
