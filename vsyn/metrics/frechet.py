"""Fréchet distance between two Gaussians, in float64, the way FID/FVD define it.

    FD = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr( (S1 S2)^{1/2} )

The trace term is computed with `scipy.linalg.sqrtm` (the pytorch-fid / StyleGAN-V convention) and cross-checked
against the eigenvalue form tr( (S1^{1/2} S2 S1^{1/2})^{1/2} ), which only needs symmetric eigendecompositions and
is what the TF-GAN/VideoGPT SVD route computes. Both are equal in exact arithmetic because S1 S2 is similar to
S1^{1/2} S2 S1^{1/2}. Why both: sqrtm of a product of rank-deficient covariances (N < feature dim, or constant
features) can come back non-finite or complex (method.md §3.3 pitfall 7); the eigen form does not, so a
disagreement is a loud signal rather than a silently wrong number.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import linalg

log = logging.getLogger(__name__)


class FrechetError(ValueError):
    """The matrix square root could not be computed to a trustworthy real value."""


@dataclass(frozen=True)
class FrechetResult:
    value: float  # FD with the sqrtm trace term: the reported number
    value_eig: float  # FD with the eigenvalue trace term: the cross-check
    mean_term: float  # ||mu1 - mu2||^2
    trace_term: float  # tr(S1) + tr(S2) - 2 tr sqrt(S1 S2) (sqrtm)
    offset: float  # eps added to both diagonals when sqrtm was not finite (0.0 when not needed)
    max_imag: float  # largest |imag| on the diagonal of sqrtm's result (discarded)


def _check(mu: np.ndarray, sigma: np.ndarray, which: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise FrechetError(f"{which}: covariance shape {sigma.shape} does not fit mean shape {mu.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise FrechetError(f"{which}: mean or covariance holds NaN/inf (features overflowed?)")
    return mu, sigma


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root by eigendecomposition; tiny negative eigenvalues (round-off) are clipped to 0."""
    sym = (sigma + sigma.T) / 2
    w, v = np.linalg.eigh(sym)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product_eig(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrt(S1 S2) via tr sqrt(S1^{1/2} S2 S1^{1/2}): symmetric PSD all the way, exact for singular inputs."""
    a = _psd_sqrt(sigma1)
    m = a @ sigma2 @ a
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6,
                             imag_atol: float = 1e-3) -> tuple[float, float, float]:
    """tr sqrtm(S1 S2) with pytorch-fid's safeguards. Returns (trace, offset used, max |imag| discarded)."""
    offset = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm warns on singular input; the checks below decide
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = eps
            log.warning("sqrtm(S1 S2) is not finite (rank-deficient covariances); adding %g to the diagonals", eps)
            eye = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + eye) @ (sigma2 + eye))
    if not np.isfinite(covmean).all():
        raise FrechetError("sqrtm(S1 S2) is not finite even with a diagonal offset")
    max_imag = 0.0
    if np.iscomplexobj(covmean):
        max_imag = float(np.abs(np.diagonal(covmean).imag).max())
        if max_imag > imag_atol:
            raise FrechetError(
                f"sqrtm(S1 S2) has an imaginary diagonal component of {max_imag:.3g} (> {imag_atol:g}): the "
                f"covariances are too far from PSD (too few samples for the feature dimension?) or SciPy's sqrtm "
                f"misbehaves (SciPy 1.12 regression, scipy#20178)"
            )
        covmean = covmean.real
    return float(np.trace(covmean)), offset, max_imag


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                     eps: float = 1e-6, imag_atol: float = 1e-3, rtol: float = 1e-3) -> FrechetResult:
    """FD between N(mu1, S1) and N(mu2, S2); float64 throughout.

    Warns when the sqrtm and eigen forms disagree by more than `rtol` relative to the larger of |FD| and
    tr(S1)+tr(S2) (the scale of the cancelling terms); both values are returned so the card can record them.
    """
    mu1, sigma1 = _check(mu1, sigma1, "first")
    mu2, sigma2 = _check(mu2, sigma2, "second")
    if mu1.shape != mu2.shape:
        raise FrechetError(f"feature dimensions differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    diff = mu1 - mu2
    mean_term = float(diff @ diff)
    traces = float(np.trace(sigma1) + np.trace(sigma2))
    tr_sqrtm, offset, max_imag = trace_sqrt_product_sqrtm(sigma1, sigma2, eps=eps, imag_atol=imag_atol)
    tr_eig = trace_sqrt_product_eig(sigma1, sigma2)
    value = mean_term + traces - 2 * tr_sqrtm
    value_eig = mean_term + traces - 2 * tr_eig
    scale = max(abs(value), traces, 1e-12)
    if abs(value - value_eig) > rtol * scale:
        log.warning("Fréchet distance: sqrtm form %.6g vs eigen form %.6g disagree (scale %.3g)", value, value_eig, scale)
    return FrechetResult(value=value, value_eig=value_eig, mean_term=mean_term, trace_term=traces - 2 * tr_sqrtm,
                         offset=offset, max_imag=max_imag)
