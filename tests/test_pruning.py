from fractions import Fraction

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from polyticket.errors import UserError
from polyticket.masks import Mask
from polyticket.pruning import (
    Ranking,
    magnitude_prune,
    pruned_count,
    random_like,
    random_prune,
    ranking_units,
    sparsity_schedule,
)


def layers(seed=0):
    torch.manual_seed(seed)
    return nn.ModuleDict(
        {
            "a": nn.Linear(30, 20),
            "b": nn.Linear(20, 40),
            "c": nn.Linear(40, 10),
        }
    )


def weights(modules):
    return {f"l.{i}.{name}.weight": m.weight for i, (name, m) in enumerate(modules.items())}


def test_global_magnitude_equals_torch_global_unstructured_over_several_rounds():
    modules = layers()
    ours = weights(modules)
    mask = Mask.ones({n: w.shape for n, w in ours.items()})
    total = mask.numel()
    reference = [(m, "weight") for m in layers().values()]
    pruned_before = 0
    for level in (1, 2, 3):
        mask = magnitude_prune(ours, mask, Fraction(level, 10))
        target = pruned_count(Fraction(level, 10), total)
        torch_prune.global_unstructured(
            reference, torch_prune.L1Unstructured, amount=target - pruned_before
        )
        pruned_before = target
        for (module, _), name in zip(reference, ours, strict=True):
            assert torch.equal(mask[name], module.weight_mask.bool()), (level, name)
        assert total - mask.kept() == target


def test_level_k_has_exactly_k_tenths_pruned_and_never_everything():
    shapes = {"l.0.w": (7, 13), "l.1.w": (11, 3)}  # 124 weights: k/10 is rarely whole
    mask = Mask.ones(shapes)
    torch.manual_seed(0)
    w = {n: torch.randn(s) for n, s in shapes.items()}
    for level in range(1, 10):
        mask = magnitude_prune(w, mask, Fraction(level, 10))
        assert mask.numel() - mask.kept() == round(level * 124 / 10)
    assert magnitude_prune(w, mask, Fraction(999, 1000)).kept() == 1
    schedule = sparsity_schedule(0.1, 0.5)
    assert schedule == [Fraction(k, 10) for k in range(6)]
    assert sparsity_schedule(0.2, 0.5)[-1] == Fraction(1, 2)
    assert sparsity_schedule(0.1, 0.5, levels=9)[-1] == Fraction(9, 10)  # levels win
    assert len(sparsity_schedule(0.1, levels=9)) == 10
    with pytest.raises(UserError):
        sparsity_schedule(0.1, 1.0)


def test_ties_are_broken_deterministically_by_position():
    w = {"l.0.w": torch.ones(10), "l.1.w": torch.ones(10)}
    mask = magnitude_prune(w, Mask.ones({n: (10,) for n in w}), 0.25)
    assert mask["l.0.w"].tolist() == [False] * 5 + [True] * 5
    assert mask["l.1.w"].all()


def test_already_pruned_weights_stay_pruned_even_when_large():
    w = {"l.0.w": torch.arange(1.0, 11.0)}
    start = Mask({"l.0.w": torch.tensor([True] * 9 + [False])})
    mask = magnitude_prune(w, start, 0.3)
    assert mask["l.0.w"].tolist() == [False, False] + [True] * 7 + [False]
    with pytest.raises(UserError, match="already"):
        magnitude_prune(w, mask, 0.1)


def test_per_layer_and_per_matrix_scopes_prune_each_unit_equally():
    torch.manual_seed(0)
    w = {
        "enc.layer.0.q.weight": torch.randn(10, 10) * 10,  # large: global ranking spares it
        "enc.layer.0.v.weight": torch.randn(10, 10),
        "enc.layer.1.q.weight": torch.randn(10, 10) * 0.01,
    }
    ones = Mask.ones({n: t.shape for n, t in w.items()})
    global_mask = magnitude_prune(w, ones, 0.5)
    assert global_mask.sparsity_by_matrix()["enc.layer.0.q.weight"] < 0.1
    by_layer = magnitude_prune(w, ones, 0.5, Ranking("layer"))
    assert by_layer.sparsity_by_layer() == {"enc.layer.0": 0.5, "enc.layer.1": 0.5}
    by_matrix = magnitude_prune(w, ones, 0.5, Ranking("matrix"))
    assert set(by_matrix.sparsity_by_matrix().values()) == {0.5}


def test_groups_are_ranked_separately():
    w = {
        "encoder.block.0.q.weight": torch.randn(20, 20) * 100,
        "decoder.block.0.q.weight": torch.randn(20, 20) * 0.001,
    }
    groups = {n: n.split(".")[0] for n in w}
    ones = Mask.ones({n: t.shape for n, t in w.items()})
    mask = magnitude_prune(w, ones, 0.5, Ranking(groups=groups))
    assert set(mask.sparsity_by_matrix().values()) == {0.5}


def test_random_prune_is_reproducible_and_exact():
    shapes = {"l.0.w": (50, 50)}
    a = random_prune(Mask.ones(shapes), 0.5, seed=3)
    assert a == random_prune(Mask.ones(shapes), 0.5, seed=3)
    assert a != random_prune(Mask.ones(shapes), 0.5, seed=4)
    assert a.sparsity() == 0.5


def test_random_like_prunes_as_many_as_the_reference_in_each_unit():
    w = {
        "encoder.block.0.q.weight": torch.randn(30, 30) * 100,
        "encoder.block.1.q.weight": torch.randn(30, 30),
        "decoder.block.0.q.weight": torch.randn(30, 30) * 0.001,
    }
    groups = {n: n.split(".")[0] for n in w}
    ones = Mask.ones({n: t.shape for n, t in w.items()})
    # A ticket at 50% in each group (mT5's encoder and decoder) but 70% / 30% by layer.
    ticket = magnitude_prune(w, ones, Fraction(1, 2), Ranking(groups=groups))
    pruned = {n: int((~m).sum()) for n, m in ticket.items()}
    assert pruned["decoder.block.0.q.weight"] == 450 and pruned["encoder.block.0.q.weight"] < 300

    def counts(mask, units):
        return {k: sum(int((~mask[n]).sum()) for n in names) for k, names in units.items()}

    for scope in ("global", "layer", "matrix"):
        ranking = Ranking(scope, groups)
        units = ranking_units(list(w), ranking)
        random = random_like(ticket, seed=1, ranking=ranking)
        assert counts(random, units) == counts(ticket, units), scope
        assert random != ticket and random == random_like(ticket, 1, ranking)
    # Units draw on one stream of the seed: seed 2's first block is not seed 1's second.
    by_layer = Ranking("layer", groups)
    even = magnitude_prune(w, ones, Fraction(1, 2), by_layer)  # 450 of 900 in each
    one, two = (random_like(even, seed, by_layer) for seed in (1, 2))
    assert not torch.equal(one["encoder.block.1.q.weight"], two["encoder.block.0.q.weight"])
    # Without the groups one unit: the total alone is kept (the decoder gets its share).
    alone = random_like(ticket, seed=1)
    assert alone.numel() - alone.kept() == ticket.numel() - ticket.kept()
    assert int((~alone["decoder.block.0.q.weight"]).sum()) != 450


def test_row_scope_prunes_each_output_row_as_wanda_does():
    """Scope ``row``: the reference code of Wanda (locuslab/wanda, ``prune_wanda``) sorts
    each output row's scores and prunes the lowest ``int(in * sparsity)`` of each row."""
    torch.manual_seed(0)
    w = {"l.0.q.weight": torch.randn(6, 20), "l.0.fc.weight": torch.randn(20, 8)}
    ones = Mask.ones({n: t.shape for n, t in w.items()})
    mask = ones
    for level in (1, 2, 3):
        before, mask = mask, magnitude_prune(w, mask, Fraction(level, 4), Ranking("row"))
        assert all(torch.equal(m & before[n], m) for n, m in mask.items())  # nested
    for name, weight in w.items():
        order = weight.abs().sort(dim=-1, stable=True).indices
        expected = torch.ones_like(weight, dtype=torch.bool)
        expected.scatter_(1, order[:, : int(weight.shape[1] * 0.75)], False)
        assert torch.equal(mask[name], expected), name
    # GPT-2's Conv1D stores (in, out): its output rows are the columns.
    conv = {"h.0.c_fc.weight": torch.randn(20, 6)}
    by_column = magnitude_prune(conv, Mask.ones({"h.0.c_fc.weight": (20, 6)}), 0.5,
                                Ranking("row", input_axes={"h.0.c_fc.weight": 0}))  # fmt: skip
    assert set((~by_column["h.0.c_fc.weight"]).sum(0).tolist()) == {10}
    assert set((~by_column["h.0.c_fc.weight"]).sum(1).tolist()) != {3}
    # A row already sparser than asked is refused, as a unit is.
    with pytest.raises(UserError, match="a row of l.0.q.weight is already 0.750 sparse"):
        magnitude_prune(w, mask, 0.5, Ranking("row"))


def test_random_like_matches_each_row_of_the_reference():
    torch.manual_seed(1)
    w = {"l.0.q.weight": torch.randn(8, 30) * torch.linspace(0.1, 3, 30)}
    ticket = magnitude_prune(w, Mask.ones({"l.0.q.weight": (8, 30)}), 0.5)  # rows uneven
    per_row = (~ticket["l.0.q.weight"]).sum(1)
    assert len(set(per_row.tolist())) > 1
    random = random_like(ticket, seed=3, ranking=Ranking("row"))
    assert torch.equal((~random["l.0.q.weight"]).sum(1), per_row)
    assert random != ticket and random == random_like(ticket, 3, Ranking("row"))
