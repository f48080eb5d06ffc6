"""Representation similarity per layer: linear CKA, SVCCA and PWCCA (the paper's App. F).

Each measure compares two representations of the same n sentences, ``x`` (n, d1) and ``y``
(n, d2), rows aligned; it is 1 for a representation and itself.

- linear CKA (Kornblith et al., 2019): ||Yᵀ X||²_F / (||Xᵀ X||_F ||Yᵀ Y||_F) on centred columns;
  invariant to orthogonal transforms and isotropic scaling of either side.
- SVCCA (Raghu et al., 2017): each side reduced to the top singular directions that explain
  99% of its variance, then the mean of the canonical correlations.
- PWCCA (Morcos et al., 2018): the canonical correlations weighted by how much of ``x`` each
  canonical variate accounts for, α_i ∝ Σ_j |<h_i, x_j>| over the (centred) neurons x_j of
  ``x`` and the orthonormalised canonical variates h_i. Asymmetric: weighted by ``x``, which
  the analyses make the reference side (the dense model; the first language). (Google's
  ``pwcca.py`` weights by the side with fewer neurons, on uncentred activations.)

CCA here is the Björck-Golub method: orthonormal bases of both column spaces from SVDs, then
the singular values of Qxᵀ Qy are the canonical correlations. Directions with numerically zero
variance are dropped (rank deficiency). ``epsilon`` adds a ridge ε·(mean variance) to each
covariance matrix (relative, so the result stays scale invariant), which shrinks the
correlations of low-variance directions; a representation compared with itself then scores
below 1 (ρ = s² / (s² + λ) per direction), so values are comparable only at equal ε.

CCA needs many more samples than dimensions: with n sentences, two subspaces of dimensions
r1 and r2 of the (n-1)-dimensional centred sample space share at least r1 + r2 - (n-1)
dimensions, so that many correlations are 1 whatever the representations are (PWCCA of 100
sentences of a 384-unit model is 1.000). Use several times more sentences than hidden units,
or a larger ``epsilon``, before reading SVCCA/PWCCA values; CKA has no such bias.

Public API: :func:`linear_cka`, :func:`cca`, :func:`svcca`, :func:`pwcca_weights`,
:func:`pwcca`, :data:`MEASURES`, :func:`similarity_rows`, :func:`similarity` and
:func:`format_similarity`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from polyticket.analysis.representations import DENSE, Inputs, Pooling, layer_table

log = logging.getLogger("polyticket")

SVCCA_VARIANCE = 0.99


def _centred(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x).double()
    return x - x.mean(0, keepdim=True)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two (n, d) representations; nan where one has no variance."""
    x, y = _centred(x), _centred(y)
    if x.shape[0] < min(x.shape[1], y.shape[1]):
        # Same value through the n × n Gram matrices: cheaper when n is small.
        gx, gy = x @ x.T, y @ y.T
        cross, norm_x, norm_y = (gx * gy).sum(), gx.norm(), gy.norm()
    else:
        cross, norm_x, norm_y = (y.T @ x).square().sum(), (x.T @ x).norm(), (y.T @ y).norm()
    denominator = norm_x * norm_y
    return (cross / denominator).item() if denominator > 0 else float("nan")


@dataclass(frozen=True)
class CCA:
    correlations: torch.Tensor  # (r,) descending, in [0, 1]
    x_variates: torch.Tensor  # (n, r): x's canonical variates, paired with the correlations


def _basis(x: torch.Tensor, epsilon: float) -> torch.Tensor:
    """An (n, r) basis of the centred column space, whitened; ridge-shrunk with ``epsilon``."""
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    rank = int((s > s[0] * max(x.shape) * torch.finfo(s.dtype).eps).sum()) if len(s) else 0
    u, s = u[:, :rank], s[:rank]
    if epsilon == 0:
        return u
    # Whitening by (XᵀX + λI)^(-1/2) in the SVD basis; λ = ε · mean eigenvalue of XᵀX.
    ridge = epsilon * s.square().sum() / x.shape[1]
    return u * (s / (s.square() + ridge).sqrt())


def cca(x: torch.Tensor, y: torch.Tensor, epsilon: float = 0.0) -> CCA:
    """Canonical correlations of (n, d1) and (n, d2), min(rank x, rank y) of them."""
    x, y = _centred(x), _centred(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows, y has {y.shape[0]}")
    bx, by = _basis(x, epsilon), _basis(y, epsilon)
    left, correlations, _ = torch.linalg.svd(bx.T @ by, full_matrices=False)
    return CCA(correlations.clamp(0, 1), bx @ left[:, : len(correlations)])


def _top_directions(x: torch.Tensor, variance: float) -> torch.Tensor:
    """x projected on its fewest singular directions that explain ``variance`` of it."""
    x = _centred(x)
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    explained = s.square().cumsum(0) / s.square().sum()
    keep = int((explained < variance - 1e-12).sum()) + 1
    return u[:, :keep] * s[:keep]


def svcca(
    x: torch.Tensor, y: torch.Tensor, variance: float = SVCCA_VARIANCE, epsilon: float = 0.0
) -> float:
    """Mean canonical correlation after keeping ``variance`` of each side (SVD)."""
    if _centred(x).abs().max() == 0 or _centred(y).abs().max() == 0:
        return float("nan")
    result = cca(_top_directions(x, variance), _top_directions(y, variance), epsilon)
    return result.correlations.mean().item()


def pwcca_weights(x: torch.Tensor, result: CCA) -> torch.Tensor:
    """α_i ∝ Σ_j |<h_i, x_j>|, summing to 1 (h_i: orthonormalised canonical variates of x)."""
    h, _ = torch.linalg.qr(result.x_variates)
    weights = (h.T @ _centred(x)).abs().sum(1)
    return weights / weights.sum()


def pwcca(x: torch.Tensor, y: torch.Tensor, epsilon: float = 0.0) -> float:
    """Canonical correlations weighted by their share of ``x``."""
    result = cca(x, y, epsilon)
    if len(result.correlations) == 0:
        return float("nan")
    return (pwcca_weights(x, result) * result.correlations).sum().item()


Measure = Callable[[torch.Tensor, torch.Tensor, float], float]
MEASURES: dict[str, Measure] = {
    "cka": lambda x, y, epsilon: linear_cka(x, y),
    "svcca": lambda x, y, epsilon: svcca(x, y, epsilon=epsilon),
    "pwcca": pwcca,
}


def _layer_rows(
    base: dict, x: torch.Tensor, y: torch.Tensor, measures: Sequence[str], epsilon: float
) -> list[dict]:
    """Rows of every layer and measure for two (layers, n, hidden) state tensors."""
    return [
        {**base, "layer": layer, "measure": m, "value": MEASURES[m](x[layer], y[layer], epsilon)}
        for layer in range(len(x))
        for m in measures
    ]


def similarity_rows(
    label: str,
    states: Mapping[str, torch.Tensor],
    dense: Mapping[str, torch.Tensor] | None,
    measures: Sequence[str] = tuple(MEASURES),
    epsilon: float = 0.0,
) -> list[dict]:
    """One model's rows: against the dense model per language (unless it is the dense model),
    and across languages on the parallel sentences (each unordered pair once)."""
    rows = []
    if dense is not None:
        for language, x in dense.items():
            base = {"mask": label, "comparison": "dense", "languages": language}
            rows += _layer_rows(base, x, states[language], measures, epsilon)
    for a, b in itertools.combinations(states, 2):
        base = {"mask": label, "comparison": "cross-lingual", "languages": f"{a},{b}"}
        rows += _layer_rows(base, states[a], states[b], measures, epsilon)
    return rows


def similarity(
    inputs: Inputs,
    pooling: Pooling = "mean",
    measures: Sequence[str] = tuple(MEASURES),
    epsilon: float = 0.0,
    batch_size: int = 32,
) -> list[dict]:
    """Rows (mask, comparison, languages, layer, measure, value): the dense model across
    languages, then each mask against the dense model and across languages."""
    sentences, hidden = inputs.describe()["sentences"], inputs.model.config.hidden_size
    if {"svcca", "pwcca"} & set(measures) and sentences < 5 * hidden:
        log.warning(
            "%d sentences for %d hidden units: SVCCA/PWCCA are biased towards 1 "
            "(use several times more sentences, or a larger epsilon)",
            sentences,
            hidden,
        )
    rows: list[dict] = []
    dense = None
    for label, states in inputs.states(pooling, batch_size):
        rows += similarity_rows(label, states, dense, measures, epsilon)
        if label == DENSE:
            dense = states
    return rows


def format_similarity(rows: Iterable[dict]) -> str:
    """Per mask, comparison, languages and measure, the value of every layer on one line."""
    return layer_table(
        "similarity per layer (L0 = embeddings)",
        rows,
        ("mask", "comparison", "languages", "measure"),
        lambda row: f"{row['value']:.3f}",
    )
