import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import BertConfig, BertModel

from polyticket.errors import UserError
from polyticket.masks import Mask, component_of, layer_of, read_metadata
from polyticket.models.families import PruneScope, find_prunable
from polyticket.pruning import random_prune


def random_mask(shapes, sparsity, seed):
    return random_prune(Mask.ones(shapes), sparsity, seed)


SHAPES = {
    "encoder.layer.0.attention.self.query.weight": (8, 8),
    "encoder.layer.0.output.dense.weight": (8, 16),
    "encoder.layer.1.attention.self.query.weight": (8, 8),
    "encoder.layer.1.output.dense.weight": (8, 16),
}


def test_round_trip_keeps_bits_metadata_and_follows_the_file_contract(tmp_path):
    mask = random_mask(SHAPES, 0.3, seed=1)
    path = mask.save(tmp_path / "m.safetensors", model="tiny", task="ner", language="fr", level=3)
    loaded = Mask.load(path)
    assert loaded == mask
    assert loaded.metadata == {"model": "tiny", "task": "ner", "language": "fr", "level": "3"}
    meta = read_metadata(path)
    assert meta["format"] == "polyticket-mask/1"
    assert json.loads(meta["shapes"]) == {k: list(v) for k, v in SHAPES.items()}
    assert float(meta["sparsity"]) == pytest.approx(mask.sparsity())
    raw = load_file(str(path))
    name = "encoder.layer.0.output.dense.weight"
    assert raw[name].dtype == np.uint8
    expected = np.packbits(mask[name].numpy().reshape(-1), bitorder="little")
    assert np.array_equal(raw[name], expected)
    assert not list(tmp_path.glob("*.tmp"))


def test_mbert_sized_mask_takes_at_most_1_05_bits_per_weight(tmp_path):
    config = BertConfig(vocab_size=119547)  # bert-base-multilingual-cased, built without weights
    with torch.device("meta"):
        model = BertModel(config)
    shapes = find_prunable(model, PruneScope(prune_pooler=True)).shapes
    mask = Mask({n: torch.rand(s) > 0.5 for n, s in shapes.items()})
    path = mask.save(tmp_path / "mbert.safetensors")
    bits = path.stat().st_size * 8 / mask.numel()
    assert mask.numel() == 12 * (4 * 768 * 768 + 2 * 768 * 3072) + 768 * 768  # with the pooler
    assert bits <= 1.05, bits


def test_algebra_and_statistics():
    a = Mask({"l.0.w": torch.tensor([1, 1, 0, 0], dtype=torch.bool)})
    b = Mask({"l.0.w": torch.tensor([1, 0, 1, 0], dtype=torch.bool)})
    assert (a & b)["l.0.w"].tolist() == [True, False, False, False]
    assert (a | b)["l.0.w"].tolist() == [True, True, True, False]
    assert (a - b)["l.0.w"].tolist() == [False, True, False, False]
    assert (~a)["l.0.w"].tolist() == [False, False, True, True]
    assert a.sparsity() == 0.5
    assert a.jaccard(b) == pytest.approx(1 / 3)
    assert a.jaccard(a) == 1.0


def test_per_layer_and_per_matrix_sparsity():
    mask = Mask(
        {
            "encoder.layer.0.attention.self.query.weight": torch.tensor([True, False]),
            "encoder.layer.0.output.dense.weight": torch.tensor([True, True]),
            "encoder.layer.1.attention.self.query.weight": torch.tensor([False, False]),
        }
    )
    assert mask.sparsity_by_layer() == {"encoder.layer.0": 0.25, "encoder.layer.1": 1.0}
    assert mask.sparsity_by_matrix()["encoder.layer.0.attention.self.query.weight"] == 0.5
    assert layer_of("decoder.block.3.layer.1.EncDecAttention.q.weight") == "decoder.block.3"
    assert component_of("encoder.layer.11.attention.self.query.weight") == "attention.self.query"
    assert layer_of("pooler.dense.weight") == "pooler"
    assert mask.sparsity_by_component() == {"attention.self.query": 0.75, "output.dense": 0.0}
    other = Mask({n: torch.ones_like(t) for n, t in mask.items()})
    assert mask.jaccard_by_component(other) == {"attention.self.query": 0.25, "output.dense": 1.0}


def test_independent_random_half_masks_overlap_by_a_third():
    shapes = {"l.0.w": (200, 200), "l.1.w": (200, 200)}
    a, b = random_mask(shapes, 0.5, 1), random_mask(shapes, 0.5, 2)
    assert a.jaccard(b) == pytest.approx(1 / 3, abs=0.01)
    assert all(v == pytest.approx(1 / 3, abs=0.02) for v in a.jaccard_by_layer(b).values())


def test_combining_masks_of_other_parameters_fails_clearly():
    a = Mask({"x.0.w": torch.ones(2, dtype=torch.bool)})
    b = Mask({"x.0.w": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(UserError, match=r"x\.0\.w"):
        _ = a & b


def test_truncated_file_is_a_clear_error(tmp_path):
    path = random_mask(SHAPES, 0.5, 0).save(tmp_path / "m.safetensors")
    data = path.read_bytes()
    for cut in (4, len(data) // 2, len(data) - 3):
        broken = tmp_path / f"cut{cut}.safetensors"
        broken.write_bytes(data[:cut])
        with pytest.raises(UserError, match=str(broken.name)):
            Mask.load(broken)
    with pytest.raises(UserError, match="not found"):
        Mask.load(tmp_path / "missing.safetensors")


def test_bits_past_the_last_weight_are_refused(tmp_path):
    """The analyses count set bits of whole bytes: padding set by another writer would
    count as kept weights (an all-pruned 3 × 3 read as 22% kept)."""
    from safetensors.numpy import save_file

    from polyticket.analysis.packed import PackedMask

    path = Mask({"w": torch.zeros(3, 3, dtype=torch.bool)}).save(tmp_path / "m.safetensors")
    arrays, meta = load_file(str(path)), read_metadata(path)
    arrays["w"][-1] |= 0b11111110  # the 7 bits past weight 9
    save_file(arrays, str(tmp_path / "padded.safetensors"), metadata=meta)
    for load in (Mask.load, PackedMask.load):
        with pytest.raises(UserError, match="w has bits set past its 9 weights"):
            load(tmp_path / "padded.safetensors")


def test_mask_that_does_not_fit_names_the_parameter_and_both_shapes():
    mask = random_mask(SHAPES, 0.5, 0)
    model_shapes = dict(SHAPES) | {"encoder.layer.1.output.dense.weight": (8, 32)}
    with pytest.raises(
        UserError, match=r"encoder\.layer\.1\.output\.dense\.weight.*\[8, 16\].*\[8, 32\]"
    ):
        mask.check_fits(model_shapes)
    with pytest.raises(
        UserError, match=r"encoder\.layer\.0\.attention\.self\.query\.weight is not in"
    ):
        mask.check_fits({})


def test_save_is_atomic_an_existing_file_survives_a_failed_write(tmp_path, monkeypatch):
    good = random_mask(SHAPES, 0.5, 0)
    path = good.save(tmp_path / "m.safetensors")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("polyticket.masks._safetensors_bytes", crash)
    with pytest.raises(OSError):
        random_mask(SHAPES, 0.2, 1).save(path)
    monkeypatch.undo()
    assert Mask.load(path) == good
    assert not list(tmp_path.glob(".*tmp"))


def test_read_mask_decides_the_format_from_structure_for_every_header_length(tmp_path):
    """Issue 16: a safetensors header length whose low byte is 0x80 looks like a pickle's
    first byte; the reader must not be fooled, whatever the header length."""
    import struct

    from polyticket.compat import read_mask

    mask = Mask({"encoder.layer.0.attention.self.query.weight": torch.rand(4, 4) > 0.5})
    low_bytes = set()
    for padding in range(0, 264, 2):
        path = mask.save(tmp_path / f"m{padding}.safetensors", note="x" * padding)
        (length,) = struct.unpack("<Q", path.read_bytes()[:8])
        low_bytes.add(length & 0xFF)
        assert read_mask(path) == mask
    # safetensors pads headers to multiples of 8: all 32 possible low bytes, 0x80 among them
    assert low_bytes == set(range(0, 256, 8))


def test_the_same_mask_is_the_same_bytes_in_every_process(tmp_path):
    """safetensors' writer orders metadata differently in each process; ours sorts it."""
    import subprocess
    import sys

    from safetensors.numpy import load_file

    script = (
        "import torch, sys; from polyticket.masks import Mask; torch.manual_seed(0); "
        "Mask({'b.weight': torch.rand(5, 3) > 0.5, 'a.weight': torch.rand(7) > 0.2}, "
        "{'model': 'x', 'task': 'ner', 'language': 'en', 'seed': '1'}).save(sys.argv[1], level=2)"
    )
    paths = [tmp_path / f"m{i}.safetensors" for i in range(3)]
    for path in paths:
        subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    assert len({p.read_bytes() for p in paths}) == 1
    mask = Mask.load(paths[0])
    assert mask.metadata == {
        "model": "x",
        "task": "ner",
        "language": "en",
        "seed": "1",
        "level": "2",
    }
    assert set(load_file(str(paths[0]))) == {"a.weight", "b.weight"}  # safetensors reads it
