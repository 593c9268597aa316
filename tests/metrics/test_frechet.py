"""Exact tests of the Fréchet distance against closed forms (not smoke tests)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from vsyn.metrics import frechet as fr
from vsyn.metrics.frechet import FrechetError, frechet_distance, trace_sqrt_product_eig
from vsyn.metrics.utils import MomentAccumulator, feature_stats


def closed_form(mu1, a, mu2, b):
    """FD for covariances with a common eigenbasis and eigenvalues a, b: ||mu1-mu2||^2 + sum (sqrt a - sqrt b)^2."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))


def test_identical_gaussians_give_zero():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((40, 40))
    s = m @ m.T / 40
    mu = rng.standard_normal(40)
    res = frechet_distance(mu, s, mu, s)
    assert abs(res.value) < 1e-9 and abs(res.value_eig) < 1e-9


def test_one_dimensional():
    res = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]]))
    assert res.value == pytest.approx(9.0 + (2.0 - 3.0) ** 2, abs=1e-12)


def test_diagonal_covariances_match_closed_form():
    rng = np.random.default_rng(1)
    d = 64
    a, b = rng.uniform(0.1, 5.0, d), rng.uniform(0.1, 5.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    res = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    expected = closed_form(mu1, a, mu2, b)
    assert res.value == pytest.approx(expected, rel=1e-10, abs=1e-10)
    assert res.value_eig == pytest.approx(expected, rel=1e-10, abs=1e-10)
    assert res.mean_term == pytest.approx(float(np.sum((mu1 - mu2) ** 2)), rel=1e-14)


def test_commuting_covariances_match_closed_form():
    rng = np.random.default_rng(2)
    d = 50
    q = ortho_group.rvs(d, random_state=3)
    a, b = rng.uniform(0.01, 3.0, d), rng.uniform(0.01, 3.0, d)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    res = frechet_distance(mu1, s1, mu2, s2)
    expected = closed_form(mu1, a, mu2, b)
    assert res.value == pytest.approx(expected, rel=1e-8)
    assert res.value_eig == pytest.approx(expected, rel=1e-8)


def test_rank_deficient_covariances_match_closed_form():
    """Rank 5 of 32 on both sides (N < feature dim): the case that breaks naive sqrtm; the offset guard and the eigen
    form must both stay on the closed form."""
    rng = np.random.default_rng(4)
    d = 32
    q = ortho_group.rvs(d, random_state=5)
    a = np.zeros(d)
    b = np.zeros(d)
    a[:5] = rng.uniform(0.5, 2.0, 5)
    b[3:8] = rng.uniform(0.5, 2.0, 5)  # overlapping, different supports
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    res = frechet_distance(mu1, s1, mu2, s2)
    expected = closed_form(mu1, a, mu2, b)
    assert np.isfinite(res.value)
    # zero eigenvalues come back as ~1e-16 and their square roots as ~1e-8 each: hence abs 1e-6, not 1e-12
    assert res.value_eig == pytest.approx(expected, rel=1e-9, abs=1e-6)
    assert res.value == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_rank_deficient_from_few_samples():
    """Empirical covariances of N=10 samples in 64-d: singular; sqrtm and eigen forms must agree."""
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((10, 64)), rng.standard_normal((10, 64)) + 0.3
    mu1, s1 = feature_stats(x)
    mu2, s2 = feature_stats(y)
    res = frechet_distance(mu1, s1, mu2, s2)
    assert res.value == pytest.approx(res.value_eig, rel=1e-4)


def test_non_commuting_against_eigen_form_and_product_eigenvalues():
    """Random SPD pair: sqrtm form == eigen form == sum of sqrt(eigenvalues of S1 S2) (a third, independent route)."""
    rng = np.random.default_rng(7)
    d = 40
    m1, m2 = rng.standard_normal((d, 2 * d)), rng.standard_normal((d, 2 * d))
    s1, s2 = m1 @ m1.T / d, m2 @ m2.T / d + 0.1 * np.eye(d)
    ev = np.linalg.eigvals(s1 @ s2)
    assert np.abs(ev.imag).max() < 1e-8
    tr_ref = float(np.sqrt(np.clip(ev.real, 0, None)).sum())
    assert trace_sqrt_product_eig(s1, s2) == pytest.approx(tr_ref, rel=1e-10)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    res = frechet_distance(mu1, s1, mu2, s2)
    expected = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_ref)
    assert res.value == pytest.approx(expected, rel=1e-9)
    assert res.value_eig == pytest.approx(expected, rel=1e-9)


def test_symmetric_in_its_arguments():
    rng = np.random.default_rng(8)
    m1, m2 = rng.standard_normal((16, 30)), rng.standard_normal((16, 30))
    s1, s2 = m1 @ m1.T, m2 @ m2.T
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    assert frechet_distance(mu1, s1, mu2, s2).value == pytest.approx(frechet_distance(mu2, s2, mu1, s1).value, rel=1e-9)


def test_non_psd_input_raises_imaginary_part_error():
    with pytest.raises(FrechetError, match="imaginary"):
        frechet_distance(np.zeros(2), np.diag([-1.0, 1.0]), np.zeros(2), np.eye(2))


def test_non_finite_sqrtm_retries_with_offset(monkeypatch):
    calls = []
    real_sqrtm = fr.linalg.sqrtm

    def flaky(a):
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(fr.linalg, "sqrtm", flaky)
    a, b = np.array([1.0, 4.0]), np.array([9.0, 16.0])
    res = frechet_distance(np.zeros(2), np.diag(a), np.zeros(2), np.diag(b), eps=1e-6)
    assert len(calls) == 2 and res.offset == 1e-6
    assert res.value == pytest.approx(closed_form(0, a, 0, b), abs=1e-4)


def test_shape_and_nan_checks():
    with pytest.raises(FrechetError):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(FrechetError):
        frechet_distance(np.zeros(2), np.array([[np.nan, 0], [0, 1]]), np.zeros(2), np.eye(2))


@pytest.mark.parametrize("ddof", [0, 1])
def test_moment_accumulator_equals_np_cov(ddof):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((257, 12)) * 3 + 5
    acc = MomentAccumulator(12)
    for chunk in np.array_split(x, 7):
        acc.update(chunk)
    mu, sigma = acc.finalize(ddof)
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False, ddof=ddof), rtol=1e-10, atol=1e-12)
    mu2, sigma2 = feature_stats(x, ddof)
    np.testing.assert_allclose(sigma2, np.cov(x, rowvar=False, ddof=ddof), rtol=1e-12, atol=1e-12)
