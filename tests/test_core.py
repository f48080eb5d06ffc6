"""Core and residue of constructed masks whose sizes are known."""

from __future__ import annotations

import pytest
import torch

from polyticket.analysis.core import core_plus_residue, core_sizes, residue, shared
from polyticket.analysis.packed import PackedMask
from polyticket.errors import UserError
from polyticket.masks import Mask

Q = "encoder.layer.0.attention.self.query.weight"
FFN = "encoder.layer.1.intermediate.dense.weight"


def constructed() -> list[PackedMask]:
    """Three languages over 10 + 70 weights. In each matrix: weights 0-3 kept by all, 4 by
    en and fr, 5 by en alone, 6 by fr alone, 7 by de alone, the rest by none."""
    owners = {0: "efd", 1: "efd", 2: "efd", 3: "efd", 4: "ef", 5: "e", 6: "f", 7: "d"}

    def mask(letter: str) -> Mask:
        tensors = {}
        for name, shape in ((Q, (2, 5)), (FFN, (7, 10))):
            bits = torch.zeros(shape[0] * shape[1], dtype=torch.bool)
            for i, who in owners.items():
                bits[i] = letter in who
            tensors[name] = bits.reshape(shape)
        return Mask(tensors)

    return [
        PackedMask.from_mask(mask(c), label)
        for c, label in zip("efd", ("en", "fr", "de"), strict=True)
    ]


def kept(mask: PackedMask) -> list[int]:
    m = mask.to_mask()
    return [i for i, bit in enumerate(m[Q].reshape(-1).tolist()) if bit]


def test_core_and_at_least():
    masks = constructed()
    assert kept(shared(masks)) == [0, 1, 2, 3]
    assert kept(shared(masks, at_least=2)) == [0, 1, 2, 3, 4]
    assert kept(shared(masks, at_least=1)) == list(range(8))
    core = shared(masks).to_mask()
    assert core.metadata["method"] == "core" and core.metadata["languages"] == "en,fr,de"
    with pytest.raises(UserError, match="between 1 and 3"):
        shared(masks, at_least=4)


def test_residues_and_core_plus_residue():
    masks = constructed()
    assert kept(residue(masks, 0)) == [5]
    assert kept(residue(masks, 2)) == [7]
    assert kept(residue(masks, 0, few=2)) == [4, 5]
    assert kept(core_plus_residue(masks, 1)) == [0, 1, 2, 3, 6]
    assert kept(core_plus_residue(masks, 1, at_least=2)) == [0, 1, 2, 3, 4, 6]


def test_core_plus_residue_saves_as_a_mask(tmp_path):
    mask = core_plus_residue(constructed(), 0).to_mask()
    path = mask.save(tmp_path / "core-en.safetensors")
    again = Mask.load(path)
    assert again == mask and again.metadata["language"] == "en"
    assert again.kept() == 2 * 5


def test_sizes_need_one_label_per_mask():
    """Residues are named by label: two masks of one label would share a row unsaid."""
    unlabelled = [PackedMask(m.words, m.shapes) for m in constructed()]
    with pytest.raises(UserError, match="names each residue by its mask's label"):
        core_sizes(unlabelled)


def test_sizes_per_layer_and_component():
    rows = {(r["scope"], r["group"], r["set"]): r for r in core_sizes(constructed(), at_least=[2])}
    assert rows["overall", "all", "core"]["kept"] == 8
    assert rows["overall", "all", "core"]["weights"] == 80
    assert rows["overall", "all", "at_least_2"]["kept"] == 10
    assert rows["layer", "encoder.layer.0", "core"]["kept"] == 4
    assert rows["layer", "encoder.layer.0", "core"]["fraction"] == pytest.approx(0.4)
    assert rows["component", "ffn in", "residue:de"]["kept"] == 1
    assert rows["component", "query", "residue:en"]["weights"] == 10
    assert rows["overall", "all", "residue:fr"]["kept"] == 2
