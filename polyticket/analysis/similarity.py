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
  the analyses make the reference side (the dense model; the first language). Google's
  ``pwcca.py`` differs from this textbook form: it weights by the side with fewer neurons,
  on uncentred activations, builds the variates without whitening x, and reads x's
  activations in the branch that weights by y; its values differ from these in the third
  decimal and move when a constant is added to the activations.

CCA here whitens each side through the eigen-decomposition of its d × d covariance XᵀX
(computed once per representation, see :class:`Spectrum`); the singular values of Qxᵀ Qy of
the whitened bases are the canonical correlations. Directions with eigenvalues below 1e-10 of
the largest are dropped (rank deficiency: constant or redundant units, n ≤ d).

``epsilon`` adds a ridge λ = ε · (mean variance of the kept directions) to each covariance
(relative, so the result stays scale invariant), which shrinks the correlations of
low-variance directions; a representation compared with itself then scores below 1
(s² / (s² + λ) per direction), so values are comparable only at equal ε, and not with
Google's ``cca_core`` at the same ε (it scales the covariance by its largest entry before
adding ε·I).

CCA needs many more samples than dimensions: with n sentences, two subspaces of dimensions
r1 and r2 of the (n-1)-dimensional centred sample space share at least r1 + r2 - (n-1)
dimensions, so that many correlations are 1 whatever the representations are (PWCCA of 100
sentences of a 384-unit model is 1.000). Use several times more sentences than hidden units,
or a larger ``epsilon``, before reading SVCCA/PWCCA values; CKA has no such bias.

Public API: :func:`spectrum`, :func:`linear_cka`, :func:`cca`, :func:`svcca`,
:func:`pwcca_weights`, :func:`pwcca`, :data:`MEASURES`, :func:`similarity_rows`,
:func:`check_sample_size`, :func:`similarity` and :func:`format_similarity`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from polyticket.analysis.representations import DENSE, Inputs, Pooling, layer_table
from polyticket.errors import UserError

log = logging.getLogger("polyticket")

SVCCA_VARIANCE = 0.99


RANK_TOLERANCE = 1e-10  # eigenvalues of XᵀX below this fraction of the largest are noise


@dataclass(frozen=True)
class Spectrum:
    """A representation and the eigen-decomposition of its centred XᵀX (d × d), computed once
    and shared by every measure and comparison it takes part in: with n ≫ d it is the costly
    step, and a study compares the dense model's states with every mask's."""

    x: torch.Tensor  # (n, d) as given
    mean: torch.Tensor  # (d,) float64
    values: torch.Tensor  # (d,) eigenvalues (squared singular values), descending, ≥ 0
    vectors: torch.Tensor  # (d, d), columns matching ``values``

    def centred(self) -> torch.Tensor:
        return self.x.double() - self.mean


def spectrum(x: torch.Tensor | Spectrum) -> Spectrum:
    if isinstance(x, Spectrum):
        return x
    x = torch.as_tensor(x)
    mean = x.double().mean(0)
    centred = x.double() - mean
    values, vectors = torch.linalg.eigh(centred.T @ centred)
    return Spectrum(x, mean, values.flip(0).clamp(min=0), vectors.flip(1))


Representation = torch.Tensor | Spectrum


def linear_cka(x: Representation, y: Representation) -> float:
    """Linear CKA of two (n, d) representations; nan where one has no variance."""
    sx, sy = spectrum(x), spectrum(y)
    norms = sx.values.norm() * sy.values.norm()  # ||XᵀX||_F = sqrt(Σ λ²)
    if norms == 0:
        return float("nan")
    cx, cy = sx.centred(), sy.centred()
    if cx.shape[0] < min(cx.shape[1], cy.shape[1]):
        # The same ||YᵀX||²_F through the n × n Gram matrices: cheaper when n is small.
        cross = ((cx @ cx.T) * (cy @ cy.T)).sum()
    else:
        cross = (cy.T @ cx).square().sum()
    return (cross / norms).item()


@dataclass(frozen=True)
class CCA:
    correlations: torch.Tensor  # (r,) descending, in [0, 1]
    x_variates: torch.Tensor  # (n, r): x's canonical variates, orthonormalised, paired in order


def _whitened(sp: Spectrum, epsilon: float, variance: float | None) -> torch.Tensor:
    """X V (Λ + λI)^(-1/2) over the kept directions: an orthonormal (n, r) basis of the
    column space for ε = 0 (λ = ε · their mean variance); SVCCA keeps ``variance`` of it."""
    values = sp.values
    keep = int((values > values[0] * RANK_TOLERANCE).sum())
    if variance is not None and keep:
        explained = values.cumsum(0) / values.sum()
        keep = min(keep, int((explained < variance - 1e-12).sum()) + 1)
    values = values[:keep]
    ridge = epsilon * values.mean() if keep else 0.0
    return sp.centred() @ (sp.vectors[:, :keep] / (values + ridge).sqrt())


def cca(
    x: Representation, y: Representation, epsilon: float = 0.0, variance: float | None = None
) -> CCA:
    """Canonical correlations of (n, d1) and (n, d2), min(rank x, rank y) of them; with
    ``variance``, of the top singular directions explaining that share of each (SVCCA)."""
    sx, sy = spectrum(x), spectrum(y)
    if sx.x.shape[0] != sy.x.shape[0]:
        raise ValueError(f"x has {sx.x.shape[0]} rows, y has {sy.x.shape[0]}")
    qx, qy = _whitened(sx, epsilon, variance), _whitened(sy, epsilon, variance)
    left, correlations, _ = torch.linalg.svd(qx.T @ qy, full_matrices=False)
    variates = qx @ left[:, : len(correlations)]
    if epsilon > 0:  # with the ridge they are no longer orthonormal: Gram-Schmidt
        variates, _ = torch.linalg.qr(variates)
    return CCA(correlations.clamp(0, 1), variates)


def svcca(
    x: Representation, y: Representation, variance: float = SVCCA_VARIANCE, epsilon: float = 0.0
) -> float:
    """Mean canonical correlation after keeping ``variance`` of each side (SVD)."""
    correlations = cca(x, y, epsilon, variance).correlations
    return correlations.mean().item() if len(correlations) else float("nan")


def pwcca_weights(x: Representation, result: CCA) -> torch.Tensor:
    """α_i ∝ Σ_j |<h_i, x_j>|, summing to 1 (h_i: orthonormalised canonical variates of x)."""
    weights = (result.x_variates.T @ spectrum(x).centred()).abs().sum(1)
    return weights / weights.sum()


def pwcca(x: Representation, y: Representation, epsilon: float = 0.0) -> float:
    """Canonical correlations weighted by their share of ``x``."""
    result = cca(x, y, epsilon)
    if len(result.correlations) == 0:
        return float("nan")
    return (pwcca_weights(x, result) * result.correlations).sum().item()


Measure = Callable[[Representation, Representation, float], float]
MEASURES: dict[str, Measure] = {
    "cka": lambda x, y, epsilon: linear_cka(x, y),
    "svcca": lambda x, y, epsilon: svcca(x, y, epsilon=epsilon),
    "pwcca": pwcca,
}


Layers = Sequence[Representation]  # per layer: a (layers, n, hidden) tensor, or spectra


def _layer_rows(
    base: dict, x: Layers, y: Layers, measures: Sequence[str], epsilon: float
) -> list[dict]:
    """Rows of every layer and measure for two models' states of the same sentences."""
    return [
        {**base, "layer": layer, "measure": m, "value": MEASURES[m](x[layer], y[layer], epsilon)}
        for layer in range(len(x))
        for m in measures
    ]


def similarity_rows(
    label: str,
    states: Mapping[str, Layers],
    dense: Mapping[str, Layers] | None,
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


def check_sample_size(inputs: Inputs, measures: Sequence[str] = tuple(MEASURES)) -> None:
    """Refuse two sentences (centred, they span one direction: every measure is 1) and say
    when there are too few for CCA (the module's docstring: why)."""
    sentences, hidden = inputs.describe()["sentences"], inputs.model.config.hidden_size
    if sentences < 3:
        raise UserError(
            f"similarity needs at least 3 sentences, has {sentences}: two span one direction "
            "once centred, and every measure is 1"
        )
    if {"svcca", "pwcca"} & set(measures) and sentences < 5 * hidden:
        log.warning(
            "%d sentences for %d hidden units: SVCCA/PWCCA are biased towards 1 "
            "(use several times more sentences, or a larger epsilon)",
            sentences,
            hidden,
        )


def similarity(
    inputs: Inputs,
    pooling: Pooling = "mean",
    measures: Sequence[str] = tuple(MEASURES),
    epsilon: float = 0.0,
    batch_size: int = 32,
) -> list[dict]:
    """Rows (mask, comparison, languages, layer, measure, value): the dense model across
    languages, then each mask against the dense model and across languages."""
    check_sample_size(inputs, measures)
    rows: list[dict] = []
    dense = None
    for label, states in inputs.states(pooling, batch_size):
        spectra = {lang: [spectrum(layer) for layer in s] for lang, s in states.items()}
        rows += similarity_rows(label, spectra, dense, measures, epsilon)
        if label == DENSE:
            dense = spectra
    return rows


def format_similarity(rows: Iterable[dict]) -> str:
    """Per mask, comparison, languages and measure, the value of every layer on one line;
    a nan is explained under the table."""
    rows = list(rows)
    table = layer_table(
        "similarity per layer (L0 = embeddings)",
        rows,
        ("mask", "comparison", "languages", "measure"),
        lambda row: f"{row['value']:.3f}",
    )
    if any(row["value"] != row["value"] for row in rows):
        table += (
            "\nnan: a representation with no variance across sentences (the first token's "
            "embedding at L0 with --pooling cls is the same for every sentence)"
        )
    return table
