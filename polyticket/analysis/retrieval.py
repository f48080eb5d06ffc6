"""Parallel-sentence retrieval per layer with each sub-network as a feature extractor (Fig. 7).

As the original code's ``helpers/semantic_analysis.py``: sentence vectors L2-normalised, exact
k-nearest neighbours (inner product = cosine) both ways, each source's k forward candidates
scored by the margin of Artetxe & Schwenk (2019), and the best-scoring candidate taken as the
predicted translation. Accuracy is the fraction of sources whose prediction is their gold line
(the original reports a percentage). Neighbour search is exact, in torch: an n × n similarity
matrix per layer, fine for the few thousand sentences of a test set.

Public API: :func:`margin_scores`, :func:`retrieval_accuracy`, :func:`retrieval_rows`,
:func:`retrieve` and :func:`format_retrieval`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F

from polyticket.analysis.representations import Inputs, Pooling, layer_table
from polyticket.errors import UserError

Margin = Literal["ratio", "distance", "absolute"]
MARGINS: tuple[str, ...] = ("ratio", "distance", "absolute")
K = 5  # neighbours, as the paper and the original code


def margin_scores(
    source: torch.Tensor, target: torch.Tensor, k: int = K, margin: Margin = "ratio"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward candidates of each source and their margin scores, both (n_source, k').

    ``source`` and ``target`` are (n, hidden) sentence vectors, normalised here; k' = min(k, n).
    ``ratio``: cos / ((fwd_mean[i] + bwd_mean[j]) / 2); ``distance``: cos minus that mean;
    ``absolute``: cos alone. fwd_mean[i] is the mean cosine of source i's k nearest targets,
    bwd_mean[j] the mean cosine of target j's k nearest sources.
    """
    if margin not in MARGINS:
        raise UserError(f"unknown margin {margin!r}: use one of {', '.join(MARGINS)}")
    x = F.normalize(source.double(), dim=-1)
    y = F.normalize(target.double(), dim=-1)
    cos = x @ y.T
    forward, candidates = cos.topk(min(k, cos.shape[1]), dim=1)
    if margin == "absolute":
        return candidates, forward
    backward_mean = cos.topk(min(k, cos.shape[0]), dim=0).values.mean(0)
    mean = (forward.mean(1, keepdim=True) + backward_mean[candidates]) / 2
    return candidates, forward / mean if margin == "ratio" else forward - mean


def retrieval_accuracy(
    source: torch.Tensor, target: torch.Tensor, k: int = K, margin: Margin = "ratio"
) -> float:
    """Fraction of sources whose best-scoring candidate is the target on the same line."""
    candidates, scores = margin_scores(source, target, k, margin)
    predicted = candidates.gather(1, scores.argmax(1, keepdim=True)).squeeze(1)
    return (predicted == torch.arange(len(source))).double().mean().item()


def retrieval_rows(
    label: str, states: Mapping[str, torch.Tensor], k: int = K, margin: Margin = "ratio"
) -> list[dict]:
    """One row per ordered language pair (both directions) and layer, for one model.

    ``states``: per language, (layers, sentences, hidden) as :func:`encode` returns.
    """
    return [
        {
            "mask": label,
            "src": src,
            "tgt": tgt,
            "layer": layer,
            "accuracy": retrieval_accuracy(states[src][layer], states[tgt][layer], k, margin),
        }
        for src, tgt in itertools.permutations(states, 2)
        for layer in range(len(states[src]))
    ]


def retrieve(
    inputs: Inputs,
    pooling: Pooling = "mean",
    k: int = K,
    margin: Margin = "ratio",
    batch_size: int = 32,
) -> list[dict]:
    """Rows (mask, src, tgt, layer, accuracy) for the dense model, then each mask."""
    rows = []
    for label, states in inputs.states(pooling, batch_size):
        rows += retrieval_rows(label, states, k, margin)
    return rows


def format_retrieval(rows: Iterable[dict]) -> str:
    """Per mask and direction, the accuracy (%) of every layer on one line."""
    rows = [{**row, "pair": f"{row['src']}→{row['tgt']}"} for row in rows]
    return layer_table(
        "retrieval accuracy (%) per layer (L0 = embeddings)",
        rows,
        ("mask", "pair"),
        lambda row: f"{100 * row['accuracy']:.1f}",
    )
