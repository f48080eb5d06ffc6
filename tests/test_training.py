"""The training loop enforces masks exactly, and rewinding restores θ0 bit for bit."""

import math
from dataclasses import replace

import pytest
import torch
from conftest import tiny_bert
from torch.nn.utils import prune as torch_prune
from transformers import get_linear_schedule_with_warmup

from polyticket.config import DataArgs, ModelArgs, TrainArgs
from polyticket.lottery import rewind, snapshot
from polyticket.masks import Mask
from polyticket.models import load_tokenizer
from polyticket.models.families import find_prunable
from polyticket.pruning import random_prune
from polyticket.tasks.ner import NerTask
from polyticket.training import (
    BitMasks,
    MaskEnforcer,
    consecutive_groups,
    lr_multipliers,
    make_accelerator,
    make_optimizer,
    resolve_precision,
    train,
    train_loader,
)

# Bit-exact comparisons with a reference computed on the CPU: train on the CPU too, also on
# a machine with a GPU (where the model would otherwise move to it).
ARGS = TrainArgs(
    cpu=True,
    learning_rate=1e-3,
    batch_size=8,
    max_steps=20,
    eval_steps=10,
    warmup_ratio=0.1,
    weight_decay=0.01,
    max_grad_norm=1.0,
    seed=3,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, conll_files):
    path = tiny_bert(tmp_path_factory.mktemp("bert-no-dropout"), dropout=0.0)
    model_args = ModelArgs(model=str(path))
    data_args = DataArgs(train_file=conll_files[0], eval_file=conll_files[1])
    task = NerTask()
    data = task.prepare(data_args, load_tokenizer(model_args), 0)
    return task, model_args, data


def fresh(setup):
    task, model_args, data = setup
    model = task.build_model(model_args, data, seed=0)
    prunable = find_prunable(model)
    mask = random_prune(Mask.ones(prunable.shapes), 0.5, seed=1)
    return model, prunable, mask


def test_masked_training_matches_torch_prune_custom_from_mask(setup):
    task, _, data = setup
    model, prunable, mask = fresh(setup)
    reference, ref_prunable, _ = fresh(setup)

    checked = []

    def pruned_are_zero(module, inputs):
        checked.append(all((p[~mask[n]] == 0).all() for n, p in prunable.params.items()))

    model.register_forward_pre_hook(pruned_are_zero)
    result = train(model, task, data, ARGS, make_accelerator(ARGS), prunable.params, mask)
    assert len(checked) > 20 and all(checked)

    # The same steps by hand, with torch's own pruning re-parametrisation.
    modules = dict(reference.base_model.named_modules())
    for name in mask:
        torch_prune.custom_from_mask(modules[name.removesuffix(".weight")], "weight", mask[name])
    decay = [p for n, p in reference.named_parameters() if p.ndim >= 2 and "norm" not in n.lower()]
    rest = [
        p for n, p in reference.named_parameters() if not (p.ndim >= 2 and "norm" not in n.lower())
    ]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": ARGS.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=ARGS.learning_rate,
        eps=ARGS.adam_epsilon,
        fused=True,  # as training's on the CPU
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, 2, 20)
    torch.manual_seed(ARGS.seed)
    losses = []
    reference.train()
    loader = train_loader(data.train, data.collator, ARGS.batch_size, ARGS.seed)
    batches = iter(loader)
    while len(losses) < 20:
        try:
            batch = next(batches)
        except StopIteration:  # a new epoch, reshuffled by the same generator
            batches = iter(loader)
            continue
        loss = reference(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), ARGS.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())

    assert result.losses == pytest.approx(losses, rel=1e-4, abs=1e-5)
    assert len(set(losses)) > 10  # it really trained
    for name, param in prunable.params.items():
        assert (param[~mask[name]] == 0).all()
        torch.testing.assert_close(
            param.detach(),
            modules[name.removesuffix(".weight")].weight.detach(),
            rtol=1e-3,
            atol=2e-4,
        )


def test_every_mask_storage_trains_exactly_alike(setup):
    """Bool masks (the CPU's default), bit-packed masks (the accelerators') and 0/1 masks of
    the weights' dtype: the same losses and weights, bit for bit (a pruned -0.0 equals 0),
    and the same zeros as ``masked_fill_``."""
    task, _, data = setup
    args = replace(ARGS, max_steps=6, eval_steps=6)
    runs = {}
    for storage in MaskEnforcer.STORAGES:
        model, prunable, mask = fresh(setup)
        enforcer = MaskEnforcer(prunable.params, mask, storage=storage)
        accelerator = make_accelerator(args)
        result = train(model, task, data, args, accelerator, prunable.params, callbacks=[enforcer])
        runs[storage] = result.losses, {n: p.detach().clone() for n, p in prunable.params.items()}
    assert {k.dtype for k in enforcer.keep.tensors} == {torch.float32}  # the last: float
    losses, weights = runs["bool"]
    for storage, (other_losses, other_weights) in runs.items():
        assert other_losses == losses, storage
        for name, weight in weights.items():
            assert torch.equal(other_weights[name], weight), (storage, name)
    for name, weight in weights.items():
        assert torch.equal(weight, weight.masked_fill(~mask[name], 0.0))
        assert (weight[~mask[name]] == 0).all()


@pytest.mark.parametrize("storage", MaskEnforcer.STORAGES)
def test_every_mask_storage_leaves_tensors_without_gradients_alone(setup, storage):
    """Before the first backward (or for frozen weights) there are no gradients to zero."""
    _, prunable, mask = fresh(setup)
    enforcer = MaskEnforcer(prunable.params, mask, storage=storage)
    enforcer.on_train_start(None, 1)
    assert all(p.grad is None for p in prunable.params.values())
    enforcer.zero_grads()
    for name, param in prunable.params.items():
        assert (param[~mask[name]] == 0).all()
    empty = MaskEnforcer({}, Mask({}), storage=storage)  # a mask of no weights
    empty.on_train_start(None, 1)
    empty.after_backward(1)
    empty.after_step(1)


def test_mask_storage_defaults_by_device_and_rejects_unknown_names(setup):
    _, prunable, mask = fresh(setup)
    enforcer = MaskEnforcer(prunable.params, mask)
    enforcer.on_train_start(None, 1)
    assert enforcer.storage == "bool"
    with pytest.raises(ValueError, match="mask storage 'bytes'"):
        MaskEnforcer(prunable.params, mask, storage="bytes")


@pytest.mark.parametrize("chunk_weights", [1, 40, 1 << 23])
def test_bit_masks_unpack_to_the_mask_and_multiply_chunk_by_chunk(chunk_weights):
    """Odd sizes (not whole bytes), chunks of one matrix, of several and of all."""
    shapes = {"a": (3, 5), "b": (7,), "c": (4, 4), "d": (1, 1), "e": (2, 9)}
    generator = torch.Generator().manual_seed(0)
    mask = Mask({n: torch.rand(s, generator=generator) < 0.5 for n, s in shapes.items()})
    params = [torch.nn.Parameter(torch.zeros(s)) for s in shapes.values()]
    bits = BitMasks(mask, params, chunk_weights=chunk_weights)
    assert bits.nbytes() == sum((math.prod(s) + 7) // 8 for s in shapes.values())
    unpacked = [keep for chunk in range(len(bits.chunks)) for keep in bits.unpack(chunk)]
    assert [k.dtype for k in unpacked] == [torch.bool] * len(shapes)
    assert all(torch.equal(k, mask[n]) for k, n in zip(unpacked, mask, strict=True))
    tensors = [torch.randn(s, generator=generator) for s in shapes.values()]
    tensors[1] = None  # a parameter without a gradient is left alone
    expected = [None if t is None else t * mask[n] for t, n in zip(tensors, mask, strict=True)]
    bits.multiply(tensors)
    for got, want in zip(tensors, expected, strict=True):
        assert (got is None and want is None) or torch.equal(got, want)
    assert len(bits.chunks) == {1: 5, 40: 2, 1 << 23: 1}[chunk_weights]


@pytest.mark.parametrize(
    ("sizes", "limit", "groups"),
    [
        ([3, 3, 3], 6, [[0, 1], [2]]),
        ([7, 1, 1], 6, [[0], [1, 2]]),
        ([], 6, []),
        ([2, 2, 2], 100, [[0, 1, 2]]),
    ],
)
def test_consecutive_groups(sizes, limit, groups):
    assert consecutive_groups(sizes, limit) == groups


def test_consecutive_groups_never_mix_keys():
    """Masks of a model spread over devices: a chunk holds the matrices of one device."""
    keys = ["cuda:0", "cuda:0", "cuda:1", "cuda:1", "cuda:0"]
    assert consecutive_groups([1] * 5, 100, keys) == [[0, 1], [2, 3], [4]]


def test_rewind_restores_every_weight_bit_for_bit_on_cpu(setup):
    task, _, data = setup
    model, prunable, mask = fresh(setup)
    theta0 = snapshot(model)
    independent = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, task, data, ARGS, make_accelerator(ARGS), prunable.params, mask)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, independent[k])]
    assert "classifier.weight" in changed and len(changed) > 10
    # θ0 must not have followed the training (the original code's alias bug)
    assert all(torch.equal(theta0[k], independent[k]) for k in independent)
    rewind(model, theta0)
    for key, value in model.state_dict().items():
        assert torch.equal(value, independent[key]), key
        assert value.data_ptr() != theta0[key].data_ptr()


def test_gradient_accumulation_counts_optimizer_steps(setup):
    task, _, data = setup
    model, prunable, mask = fresh(setup)
    args = TrainArgs(
        batch_size=4, gradient_accumulation_steps=3, max_steps=5, learning_rate=1e-3, cpu=True
    )
    result = train(model, task, data, args, make_accelerator(args), prunable.params, mask)
    assert result.steps == 5 and len(result.losses) == 5
    assert [h["step"] for h in result.history] == [5]
    assert all((p.cpu()[~mask[n]] == 0).all() for n, p in prunable.params.items())


def test_tf32_is_a_setting_of_the_run():
    """``--tf32`` sets torch's process-wide switch for fp32 matrix products (on NVIDIA GPUs;
    a no-op elsewhere), and the default leaves them exact."""
    try:
        make_accelerator(replace(ARGS, tf32=True))
        assert torch.backends.cuda.matmul.allow_tf32
        make_accelerator(ARGS)
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


def test_the_optimizer_is_fused_where_torch_has_the_kernel():
    """Fused AdamW on the CPU (and CUDA: tests/test_cuda.py); elsewhere torch's default."""
    assert make_optimizer(torch.nn.Linear(4, 4), ARGS).defaults["fused"]
    assert not make_optimizer(torch.nn.Linear(4, 4, device="meta"), ARGS).defaults["fused"]
    assert make_optimizer(torch.nn.Linear(4, 4), ARGS, fused=False).defaults["fused"] is False


def test_weight_decay_and_warm_up_are_decided_as_the_trainer_decides():
    """Decay on the parameters Hugging Face's Trainer decays (not biases and norms, T5's
    2-D relative_attention_bias included); warm-up steps rounded up (0.25 × 10 is 3)."""
    from transformers import T5Config, T5ForConditionalGeneration, Trainer

    t5 = T5ForConditionalGeneration(
        T5Config(vocab_size=50, d_model=16, d_ff=32, num_layers=2, num_heads=2, d_kv=8)
    )
    optimizer = make_optimizer(t5, replace(ARGS, weight_decay=0.01))
    every = dict(t5.named_parameters(remove_duplicate=False))  # tied embeddings: one tensor
    theirs = {id(every[n]) for n in Trainer.get_decay_parameter_names(None, t5)}
    ours = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert ours == theirs
    assert lr_multipliers(replace(ARGS, warmup_ratio=0.25), 10)[:4] == pytest.approx(
        [0, 1 / 3, 2 / 3, 1]
    )
    noisy = lr_multipliers(replace(ARGS, warmup_ratio=0.07), 100)  # 7.000000000000001 in floats
    assert noisy[7] == 1.0 and noisy[6] < 1


def test_auto_precision_is_bf16_on_a_cpu_with_native_bf16_only():
    auto = replace(ARGS, mixed_precision="auto")
    assert resolve_precision(auto, {"avx2", "avx512f", "avx512_bf16"}) == "bf16"
    assert resolve_precision(auto, {"amx_bf16"}) == "bf16"
    assert resolve_precision(auto, {"avx2", "avx512f"}) == "no"
    assert resolve_precision(auto, set()) == "no"
    assert resolve_precision(replace(ARGS, mixed_precision="no"), {"avx512_bf16"}) == "no"
    assert resolve_precision(replace(ARGS, mixed_precision="bf16"), set()) == "bf16"


def test_a_process_trains_again_with_another_precision():
    """accelerate's state is process-wide and refuses another precision (or the CPU after a
    GPU, tested in test_cuda.py): each run gets what it asks for."""
    for precision in ("bf16", "no"):
        args = replace(ARGS, cpu=True, mixed_precision=precision)
        assert make_accelerator(args).mixed_precision == precision


def test_a_loss_that_is_no_longer_finite_stops_the_run_and_says_why(setup):
    """NaN weights would train on silently and give masks pruned from noise."""
    from polyticket.errors import UserError
    from polyticket.training import Callback

    class Poison(Callback):
        def on_train_start(self, model, total_steps):
            self.weight = next(p for n, p in model.named_parameters() if n.endswith("query.weight"))

        def after_step(self, step):
            if step == 2:
                with torch.no_grad():
                    self.weight.fill_(float("nan"))

    task, _, data = setup
    model, prunable, mask = fresh(setup)
    args = TrainArgs(batch_size=4, max_steps=6, learning_rate=1e-3, cpu=True)
    with pytest.raises(UserError, match=r"loss is nan at step 3 of 6 .* lower --learning-rate"):
        train(
            model, task, data, args, make_accelerator(args), prunable.params, callbacks=[Poison()]
        )
