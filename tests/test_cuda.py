"""On a CUDA device (skipped without one): training takes the accelerator's paths (bool
masks in one multi-tensor multiply, fused AdamW) and stays exact: pruned weights are zero after
training in fp32 and in bf16, and fp32 losses follow the CPU's.

Each run is its own process: a fresh CUDA state per run."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import tiny_bert

from polyticket.config import TrainArgs
from polyticket.training import make_accelerator, make_optimizer, resolve_precision

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

RUN = """
import json, sys
import torch
from polyticket.config import DataArgs, ModelArgs, TrainArgs
from polyticket.masks import Mask
from polyticket.models import load_tokenizer
from polyticket.models.families import find_prunable
from polyticket.pruning import random_prune
from polyticket.tasks.ner import NerTask
from polyticket.training import MaskEnforcer, make_accelerator, train

model_dir, train_file, eval_file, precision, cpu = sys.argv[1:]
args = TrainArgs(cpu=cpu == "cpu", mixed_precision=precision, learning_rate=1e-3, batch_size=8,
                 max_steps=12, eval_steps=12, max_grad_norm=1.0, seed=3)
model_args = ModelArgs(model=model_dir)
task = NerTask()
from pathlib import Path
data = task.prepare(DataArgs(train_file=Path(train_file), eval_file=Path(eval_file)),
                    load_tokenizer(model_args), 0)
model = task.build_model(model_args, data, seed=0)
prunable = find_prunable(model)
mask = random_prune(Mask.ones(prunable.shapes), 0.5, seed=1)
enforcer = MaskEnforcer(prunable.params, mask)
result = train(model, task, data, args, make_accelerator(args), prunable.params,
               callbacks=[enforcer])
print(json.dumps({
    "losses": result.losses,
    "device": next(model.parameters()).device.type,
    "storage": enforcer.storage,
    "pruned_nonzero": sum(int((p.detach().cpu()[~mask[n]] != 0).sum())
                          for n, p in prunable.params.items()),
}))
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("bert-no-dropout"), dropout=0.0)


def run(model_dir, conll_files, precision: str, device: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", RUN, str(model_dir), *map(str, conll_files), precision, device],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_cuda_training_uses_fused_paths_and_keeps_pruned_weights_zero(model_dir, conll_files):
    cpu = run(model_dir, conll_files, "no", "cpu")
    fp32 = run(model_dir, conll_files, "no", "cuda")
    bf16 = run(model_dir, conll_files, "bf16", "cuda")
    assert cpu["device"] == "cpu" and cpu["storage"] == "bool"
    for found in (fp32, bf16):
        assert found["device"] == "cuda" and found["storage"] == "bits"
        assert found["pruned_nonzero"] == 0
        assert len(found["losses"]) == 12
    assert fp32["losses"] == pytest.approx(cpu["losses"], rel=2e-3, abs=2e-4)
    assert bf16["losses"] == pytest.approx(cpu["losses"], rel=0.05, abs=0.02)


def test_the_optimizer_is_fused_on_cuda():
    assert make_optimizer(torch.nn.Linear(4, 4).cuda(), TrainArgs()).defaults["fused"]


def test_auto_precision_stays_fp32_on_cuda():
    """Sentence-length steps are launch-bound on a GPU: bf16 is no faster there."""
    args = TrainArgs(mixed_precision="auto")
    assert resolve_precision(args, {"avx512_bf16"}) == "no"


def test_one_process_trains_on_the_gpu_then_the_cpu_then_the_gpu():
    """accelerate keeps one device per process: asked for the CPU after the GPU it refuses,
    asked for the GPU after the CPU it stays on the CPU. Each run gets the device it asks for."""
    devices = [make_accelerator(TrainArgs(cpu=cpu)).device.type for cpu in (False, True, False)]
    assert devices == ["cuda", "cpu", "cuda"]
