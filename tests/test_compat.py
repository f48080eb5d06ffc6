"""The bridges to the original code: its .pt mask files and its JSON configs."""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from original_configs import LT_MT5_XNLI, LT_NER, LT_PRETRAIN, PRETRAIN_TRANS
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
    path = export_torch_prune(mask, tmp_path / "mask.pt", prefix="")
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


def pruning_model_custom(model: BertForTokenClassification, mask_dict: dict) -> None:
    """The original code's loader (helpers/pruning_utils.py), its ``range(12)`` made the
    model's layer count: six matrices of every layer by their ``bert.`` keys (a missing one is
    a KeyError), the pooler where the model has one and the file names it."""
    parameters, masks = [], []
    for ii in range(model.config.num_hidden_layers):
        layer = model.bert.encoder.layer[ii]
        for matrix in MATRICES:
            parameters.append(layer.get_submodule(matrix))
            masks.append(mask_dict[f"bert.encoder.layer.{ii}.{matrix}.weight_mask"])
    if model.bert.pooler is not None and "bert.pooler.dense.weight_mask" in mask_dict:
        parameters.append(model.bert.pooler.dense)
        masks.append(mask_dict["bert.pooler.dense.weight_mask"])
    for module, kept in zip(parameters, masks, strict=True):
        prune.CustomFromMask.apply(module, "weight", mask=kept)


def test_the_original_loader_reads_an_export_as_polyticket_applies_it(tmp_path, mask, caplog):
    path = export_torch_prune(mask, tmp_path / "mask.pt")  # the prefix it reads: bert.
    model = tiny_model()
    pruning_model_custom(model, torch.load(path, weights_only=True))
    for name, kept in mask.items():
        weight = model.bert.get_submodule(name.removesuffix(".weight")).weight
        assert torch.equal(weight != 0, kept), name
    # Masks it cannot read whole are said: a matrix missing (its KeyError), one it ignores.
    partial = Mask({n: t for n, t in mask.items() if "layer.1.output.dense" not in n})
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        export_torch_prune(partial, tmp_path / "partial.pt")
    assert "1 matrices the original code's loader reads are not in the mask" in caplog.text
    assert "(first: encoder.layer.1.output.dense.weight): it would fail (KeyError)" in caplog.text
    caplog.clear()
    embeddings = Mask(
        {**mask, "embeddings.word_embeddings.weight": torch.ones(100, 32, dtype=torch.bool)}
    )
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        export_torch_prune(embeddings, tmp_path / "more.pt")
        export_torch_prune(mask, tmp_path / "plain.pt")
    assert caplog.text.count("not read by the original code's loader") == 1
    assert "(first: embeddings.word_embeddings.weight): it would leave them dense" in caplog.text
    # mT5's names are the wrapper's: no prefix
    t5 = Mask(
        {"encoder.block.0.layer.0.SelfAttention.q.weight": torch.ones(2, 2, dtype=torch.bool)}
    )
    keys = torch.load(export_torch_prune(t5, tmp_path / "t5.pt"), weights_only=True)
    assert list(keys) == ["encoder.block.0.layer.0.SelfAttention.q.weight_mask"]


def test_an_xnli_mask_goes_to_a_model_without_a_pooler_as_in_the_original(
    tmp_path, mask, shapes, caplog
):
    """The original's XNLI masks always carry the pooler; NER and MLM models have none and
    its loader skips the entry, so its cross-task transfers work."""
    path = original_file(tmp_path / "xnli.pt", mask, "bert.")
    state = torch.load(path, weights_only=True)
    state["bert.pooler.dense.weight_mask"] = torch.ones(32, 32)
    torch.save(state, path)
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        imported = import_torch_mask(path, known_names=shapes)
    assert imported == mask
    assert "xnli.pt: the model has no pooler; its mask entry bert.pooler.dense.weight_mask" in (
        caplog.text
    )
    assert "pooler.dense.weight" in import_torch_mask(path)  # no model: every entry read


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
    torch.save({"bert.encoder.layer.7.output.dense.weight_mask": torch.ones(2)}, path)
    with pytest.raises(UserError, match=r"parameter encoder\.layer\.7\.output\.dense\.weight is"):
        import_torch_mask(path, ["encoder.layer.0.output.dense.weight"])  # named as the model's
    # torch's safe loader reads pickle protocol 2 (torch.save's default) only
    torch.save({"bert.encoder.layer.0.output.dense.weight_mask": torch.ones(2)}, path,
               pickle_protocol=4)  # fmt: skip
    with pytest.raises(
        UserError, match=r"m\.pt: saved with a pickle protocol .* pickle_protocol=2"
    ):
        import_torch_mask(path)


def test_a_matrix_pruned_whole_is_said(tmp_path, caplog):
    path = tmp_path / "last-round.pt"
    layer = "bert.encoder.layer.0"
    torch.save({f"{layer}.output.dense.weight_mask": torch.zeros(2, 2),
                f"{layer}.intermediate.dense.weight_mask": torch.eye(2)}, path)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        import_torch_mask(path)
    assert "last-round.pt: 1 of its 2 matrices have every weight pruned (first: " in caplog.text


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
    # With mask_dir this is a fine-tuning config, where save_steps only paced checkpoints.
    assert "only save checkpoints" in next(m for m in messages if "save_steps" in m)
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
    typo = r"^ours\.yaml: unknown key 'learning_rat'; did you mean 'learning_rate'\?$"
    with pytest.raises(UserError, match=typo):
        translate_config({"model": "m", "learning_rat": 1e-4}, KNOBS, "ours.yaml")
    # An original key that polyticket shares (seed) does not make a file original.
    with pytest.raises(UserError, match="unknown key 'block_size'"):
        translate_config({"seed": 1, "block_size": 512}, KNOBS, "ours.yaml")


def parse(command: str, config: dict, tmp_path: Path, *flags: str):
    """What ``polyticket COMMAND --config FILE FLAGS`` runs with, without running it."""
    import json

    from polyticket.cli import build_parser
    from polyticket.config import FindConfig, TrainConfig, parse_config

    path = tmp_path / f"{command}.json"
    path.write_text(json.dumps(config))
    args = build_parser().parse_args(
        [command, "--config", str(path), "--out", str(tmp_path / "out"), *flags]
    )
    return parse_config({"find": FindConfig, "train": TrainConfig}[command], args)


def warnings_of(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


@pytest.mark.parametrize("config", [PRETRAIN_TRANS, LT_PRETRAIN], ids=["pretrain_trans", "LT"])
def test_mlm_configs_are_read_as_mlm(config, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        train = parse("train", config, tmp_path)
    assert train.data.task == "mlm" and train.data.block_size == 512
    assert str(train.data.train_file) == config["train_file"]
    assert "inferred task mlm" in warnings_of(caplog)
    if config is LT_PRETRAIN:
        assert str(train.data.eval_file) == "pretrain_data/en.valid.json"
        assert train.data.validation_ratio is None
        found = parse("find", config, tmp_path)  # LT_pretrain.py is IMP: find runs it
        assert (found.data.task, found.train.max_steps) == ("mlm", 10000)
    else:
        # pretrain_trans.py's default val_data_ratio: no validation_file, 1% held out.
        assert train.data.eval_file is None and train.data.validation_ratio == 0.01
        assert train.mask == "tmp/mlm_mask/mask.pt"  # pruning_type lth: apply mask_dir


def test_mlm_is_inferred_only_where_the_original_scripts_would(caplog):
    knobs = KNOBS | {"block_size", "validation_ratio"}
    ner = {"block_size": 128, "train_file": "fr.conll", "seed": 1}
    assert "task" not in translate_config(ner, knobs, "c.json")
    named = {"block_size": 128, "train_file": "fr.json", "task_name": "ner"}
    assert translate_config(named, knobs, "c.json")["task"] == "ner"
    with pytest.raises(UserError, match="causal language modelling"):
        translate_config({"mlm": False, "train_file": "en.json"}, knobs, "c.json")


@pytest.mark.parametrize(
    ("extra", "mask", "sparsity"),
    [
        ({"pruning_type": "random"}, "random", 0.5),
        ({"pruning_type": "oneshot", "sparsity": 80}, "oneshot", 0.8),
    ],
)
def test_pruning_type_becomes_the_mask_kind_of_train(extra, mask, sparsity, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        config = parse("train", PRETRAIN_TRANS | extra, tmp_path)
    assert (config.mask, config.sparsity) == (mask, sparsity)
    assert f"ignoring key 'mask_dir' of {tmp_path / 'train.json'}: pruning_type {mask}" in (
        warnings_of(caplog)
    )


def test_bad_pruning_type_and_lth_without_mask():
    with pytest.raises(UserError, match="pruning_type 'magnitude': expected lth, oneshot or"):
        translate_config({"pruning_type": "magnitude"}, KNOBS, "c.json")
    with pytest.raises(UserError, match="pruning_type lth needs mask_dir"):
        translate_config({"pruning_type": "lth", "seed": 1}, KNOBS, "c.json")
    with pytest.raises(UserError, match="sparsity must be a percentage"):
        translate_config({"pruning_type": "random", "sparsity": 0.5 * 300}, KNOBS, "c.json")


def test_our_sparsity_and_target_length_do_not_make_a_file_original():
    knobs = KNOBS | {"sparsity", "max_target_length"}
    ours = {"mask": "random", "sparsity": 0.5, "max_target_length": 5}
    assert translate_config(ours, knobs, "ours.yaml") == ours
    with pytest.raises(UserError, match="unknown key 'sparsity_'"):
        translate_config({"sparsity": 0.5, "sparsity_": 1}, knobs, "ours.yaml")


def test_imp_config_prunes_every_save_steps_within_its_budget(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        config = parse("find", LT_NER, tmp_path)
    # One level = save_steps steps; num_train_epochs is the whole run's budget, not a level's.
    assert config.train.max_steps == 1875 and config.train.epochs == 3.0
    assert config.prune.budget_epochs == 30 and config.prune.budget_steps is None
    assert (config.prune.rate, config.prune.target_sparsity, config.prune.levels) == (
        0.1,
        0.5,
        None,
    )
    assert "ignoring key 'save_steps'" not in warnings_of(caplog)
    budget = parse("find", LT_NER | {"max_steps": 5000}, tmp_path)
    assert budget.prune.budget_steps == 5000 and budget.prune.budget_epochs is None
    assert parse("find", LT_NER | {"seed": "57"}, tmp_path).train.seed == 57
    hf = parse("find", LT_NER | {"no_cuda": True, "fp16": False}, tmp_path).train
    assert (hf.cpu, hf.mixed_precision) == (True, "no")
    dumped = parse("find", LT_NER | {"max_steps": -1}, tmp_path)  # HF's default: no limit
    assert (dumped.train.max_steps, dumped.prune.budget_epochs) == (1875, 30)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"save_steps": 0}, "save_steps 0: the original IMP scripts prune every save_steps"),
        ({"save_steps": -1}, "save_steps -1"),
        ({"save_steps": 0.5}, "save_steps 0.5"),
        ({"save_steps": 2.5}, "save_steps 2.5: .* a whole positive number"),
        ({"num_train_epochs": 0}, "num_train_epochs 0 and no positive max_steps"),
        ({"num_train_epochs": 0, "max_steps": -1}, "num_train_epochs 0 and no positive"),
    ],
)
def test_an_imp_config_that_would_never_prune_or_train_is_refused(change, message, tmp_path):
    """The original would train dense, or not at all, where find would prune by its own plan."""
    with pytest.raises(UserError, match=message):
        parse("find", LT_NER | change, tmp_path)
    # train does what the original did with such a file: fine-tune, the period unused
    assert parse("train", LT_NER | {"save_steps": 0}, tmp_path).train.epochs == 30
    assert parse("find", LT_NER | {"num_train_epochs": 0, "max_steps": 90}, tmp_path)


def test_the_budget_fits_whole_levels_once_the_data_size_is_known(tmp_path, caplog):
    from polyticket.lottery import fit_budget
    from polyticket.pruning import sparsity_schedule

    config = parse("find", LT_NER, tmp_path)  # 1875 steps a level, 30 epochs in all
    schedule = sparsity_schedule(0.1, 0.5)
    # 20,000 sentences in batches of 32: 625 steps an epoch, 18,750 steps in all = 10 levels
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        assert fit_budget(schedule, config, 20_000, 1) == schedule  # the target decides
    assert "levels 0-5, 1875 steps each, up to 50% pruned, 11250 steps in all" in (
        warnings_of(caplog)
    )
    assert "short of the target" not in warnings_of(caplog)
    # 4,000 sentences: 125 steps an epoch, 3,750 in all: two levels, short of the target, said
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        assert fit_budget(schedule, config, 4_000, 1) == schedule[:2]
    assert "the budget of 3750 steps stops at 10%, short of the target 50%" in warnings_of(caplog)
    steps = parse("find", LT_NER | {"max_steps": 5000}, tmp_path)
    assert fit_budget(schedule, steps, 20_000, 1) == schedule[:2]  # 2 rounds of 1875 in full
    # A budget that fits level 0 alone would train the dense model and call it a ticket.
    for examples in (2_000, 20_000):  # 1,890 steps; max_steps 1,000
        config = parse(
            "find", LT_NER | ({"max_steps": 1000} if examples == 20_000 else {}), tmp_path
        )
        with pytest.raises(UserError, match="does not fit two levels of 1875 steps"):
            fit_budget(schedule, config, examples, 1)


def test_fine_tuning_configs_and_train_keep_their_epochs(tmp_path, caplog):
    ner_fine_tune = LT_NER | {"mask_dir": "tmp/ner_mask/mask.pt", "num_train_epochs": 3}
    ner_fine_tune["save_steps"] = 0
    config = parse("train", ner_fine_tune, tmp_path)
    assert (config.train.epochs, config.train.max_steps) == (3, None)
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        config = parse("train", LT_NER, tmp_path)
    assert config.train.max_steps is None
    assert "pruning period of the original IMP scripts, which `polyticket find` runs" in (
        warnings_of(caplog)
    )


def test_mt5_lengths(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        config = parse("find", LT_MT5_XNLI, tmp_path)
    assert config.data.max_seq_length == 128  # max_source_length, not the unused 256
    # generate(max_length=5) counted the decoder's start token: 4 generated tokens at most.
    assert config.data.max_target_length == 4
    text = warnings_of(caplog)
    assert "ignoring key 'max_seq_length'" in text and "use 'max_source_length'" in text
    assert "ignoring key 'max_target_length'" in text and "use 'val_max_target_length'" in text
    assert config.train.max_steps == 2000
    fallback = {k: v for k, v in LT_MT5_XNLI.items() if k != "val_max_target_length"}
    assert parse("find", fallback, tmp_path).data.max_target_length == 15


def test_local_file_flags_win_over_the_files_dataset(tmp_path, caplog):
    assert parse("find", LT_NER, tmp_path).data.dataset == "unimelb-nlp/wikiann"
    files = ["--train-file", "fr.conll", "--eval-file", "de.conll"]
    with caplog.at_level(logging.WARNING, logger="polyticket"):
        config = parse("find", LT_NER, tmp_path, *files)
    assert config.data.dataset is None and str(config.data.train_file) == "fr.conll"
    assert "not loading the dataset unimelb-nlp/wikiann" in warnings_of(caplog)
    both = parse("find", LT_NER, tmp_path, *files, "--dataset", "x/y")
    assert both.data.dataset == "x/y"
    preset = parse("train", {"seed": 1}, tmp_path, "--preset", "paper-ner", *files)
    assert preset.data.dataset is None


@pytest.mark.parametrize(
    "preset, original, batches",
    [("paper-mlm", LT_PRETRAIN, 100_000), ("paper-ner", LT_NER, 625)],  # 1.6M / 16, 20k / 32
)
def test_a_preset_trains_each_level_as_long_as_the_original_imp_config(
    preset, original, batches, tmp_path
):
    from polyticket.cli import build_parser
    from polyticket.config import FindConfig, parse_config
    from polyticket.training import run_steps

    args = build_parser().parse_args(["find", "--preset", preset, "--out", str(tmp_path)])
    ours = parse_config(FindConfig, args).train
    theirs = parse("find", original, tmp_path).train  # save_steps: the steps of a level
    assert run_steps(ours, batches) == run_steps(theirs, batches) == original["save_steps"]
