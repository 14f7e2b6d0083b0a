from __future__ import annotations

import numpy as np
import pytest

from rsnflow.ica import (
    bic_order,
    fastica,
    match_components,
    migp,
    migp_precision,
    normalise_subject,
    regress_maps,
    subject_pca,
)


def _sources(rng: np.random.Generator, k: int, v: int) -> np.ndarray:
    return rng.laplace(size=(k, v))  # super-Gaussian, like sparse spatial maps


def test_fastica_unmixes_whitened_mixtures() -> None:
    rng = np.random.default_rng(0)
    s = _sources(rng, 8, 20_000)
    x = rng.standard_normal((8, 8)) @ s
    x -= x.mean(1, keepdims=True)
    vals, vecs = np.linalg.eigh(np.cov(x))
    z = (vecs / np.sqrt(vals)).T @ x
    res = fastica(z, seed=3)
    assert res.converged
    m = match_components(s, res.sources)
    assert np.abs(m.r).min() > 0.98
    again = fastica(z, seed=3)
    np.testing.assert_array_equal(res.sources, again.sources)


def test_migp_spans_the_group_subspace() -> None:
    rng = np.random.default_rng(1)
    maps = rng.standard_normal((5, 3000))
    subjects = [
        rng.standard_normal((40, 5)) @ maps + 0.1 * rng.standard_normal((40, 3000)) for _ in range(12)
    ]
    pca = migp(iter(subjects), dim=20)
    assert pca.rows.shape == (20, 3000)
    # The kept rows are orthogonal, their squared norms the eigenvalues, strongest first.
    gram = pca.rows.astype(np.float64) @ pca.rows.T.astype(np.float64)
    np.testing.assert_allclose(gram, np.diag(pca.eigenvalues), atol=1e-4 * pca.eigenvalues[0])
    assert np.all(np.diff(pca.eigenvalues) <= 0)
    # The true maps lie in the span of the reduced rows (small residual after projection).
    q, _ = np.linalg.qr(pca.rows.T.astype(np.float64))
    resid = maps.T - q @ (q.T @ maps.T)
    assert np.linalg.norm(resid) / np.linalg.norm(maps) < 0.05


def test_bic_order_finds_the_signal_count() -> None:
    rng = np.random.default_rng(2)
    v = 20_000
    x = rng.standard_normal((6, 60)).T @ (3 * rng.standard_normal((6, v))) + rng.standard_normal((60, v))
    eig = np.linalg.svd(x - x.mean(1, keepdims=True), compute_uv=False) ** 2 / v
    assert bic_order(eig, v) == 6
    # the null directions of demeaned float32 data come out of rounding, not as 0: they change nothing
    assert bic_order(np.concatenate([eig[:-2], eig[0] * np.array([1.2e-9, 3.9e-10])]), v) == 6


def test_normalise_subject() -> None:
    x = np.random.default_rng(3).normal(5, 2, (50, 10)).astype(np.float32)
    x[:, 3] = 7.0  # a constant voxel
    n = normalise_subject(x)
    np.testing.assert_allclose(n.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(np.delete(n.std(0), 3), 1, atol=1e-4)
    assert not n[:, 3].any()


def test_migp_of_one_array_is_its_pca() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 120)).T @ (3 * rng.standard_normal((6, 4000)))
    x += rng.standard_normal((120, 4000))
    x -= x.mean(1, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    pca = migp([x], dim=120)
    np.testing.assert_allclose(pca.eigenvalues, s**2, rtol=1e-5, atol=1e-6 * s[0] ** 2)
    w = pca.whitened(10)
    np.testing.assert_allclose(w.var(1), 1.0, rtol=1e-4)
    # Same eigenmaps up to sign.
    np.testing.assert_allclose(np.abs((w * vt[:10]).sum(1)) / np.sqrt(4000), 1.0, atol=1e-5)


def test_migp_streaming_matches_the_pca_of_the_whole_stack() -> None:
    # Eight reductions of 60-row subjects at dim 40 against one PCA of all 480 rows.
    rng = np.random.default_rng(6)
    maps = rng.laplace(size=(8, 5000)) * np.linspace(4, 1, 8)[:, None]
    subjects = [rng.standard_normal((60, 8)) @ maps + rng.standard_normal((60, 5000)) for _ in range(8)]
    streamed = migp(iter(subjects), dim=40)
    whole = migp([np.concatenate(subjects)], dim=480)
    np.testing.assert_allclose(streamed.eigenvalues[:8], whole.eigenvalues[:8], rtol=0.01)
    overlap = np.abs(streamed.whitened(8) @ whole.whitened(8).T) / 5000
    assert np.linalg.svd(overlap, compute_uv=False).min() > 0.99  # same 8-dimensional subspace


def test_migp_in_bfloat16_keeps_the_float32_subspace() -> None:
    """bf16 intermediate products: the same leading eigenvalues and eigenmaps; one array is exact."""
    rng = np.random.default_rng(6)
    maps = rng.laplace(size=(8, 5000)) * np.linspace(4, 1, 8)[:, None]
    subjects = [rng.standard_normal((60, 8)) @ maps + rng.standard_normal((60, 5000)) for _ in range(8)]
    exact = migp(iter(subjects), dim=40)
    fast = migp(iter(subjects), dim=40, precision="bfloat16")
    np.testing.assert_allclose(fast.eigenvalues[:8], exact.eigenvalues[:8], rtol=0.005)
    overlap = np.abs(fast.whitened(8) @ exact.whitened(8).T) / 5000
    assert np.linalg.svd(overlap, compute_uv=False).min() > 0.995  # streaming itself: > 0.99
    assert not np.array_equal(fast.rows, exact.rows)  # the products did run in bf16
    # A single reduction is the last one, which is float32 whatever the precision.
    one = migp([subjects[0]], dim=60, precision="bfloat16")
    np.testing.assert_array_equal(one.rows, migp([subjects[0]], dim=60).rows)
    with pytest.raises(ValueError, match="unknown MIGP precision 'float16'"):
        migp(iter(subjects), dim=40, precision="float16")


def test_migp_precision_resolves_auto() -> None:
    assert migp_precision("float32") == "float32"
    assert migp_precision("bfloat16") == "bfloat16"
    assert migp_precision("auto", "cpu") in ("float32", "bfloat16")


def test_subject_pca_whitens_the_leading_subspace() -> None:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((7, 90)).T @ (rng.laplace(size=(7, 3000)) * np.geomspace(8, 1, 7)[:, None])
    x = normalise_subject(x + rng.standard_normal((90, 3000)))
    rows = subject_pca(x, dim=7)
    # Orthogonal rows, each of unit variance over voxels: every direction weighs the same.
    np.testing.assert_allclose(rows.astype(np.float64) @ rows.T / 3000, np.eye(7), atol=1e-4)
    # ... spanning the 7 strongest eigenmaps of the subject.
    vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)[2][:7]
    overlap = np.linalg.svd(vt @ rows.T / np.sqrt(3000), compute_uv=False)
    np.testing.assert_allclose(overlap, 1.0, atol=1e-4)


def test_subject_pca_stops_at_the_rank() -> None:
    # Demeaning each voxel over time leaves 20 volumes 19 directions; the null one is not whitened.
    x = normalise_subject(np.random.default_rng(10).standard_normal((20, 500)))
    rows = subject_pca(x, dim=100)
    assert rows.shape == (19, 500)
    assert np.isfinite(rows).all()
    np.testing.assert_allclose((rows.astype(np.float64) ** 2).mean(1), 1.0, rtol=1e-4)
    assert subject_pca(np.zeros((20, 500), np.float32), dim=10).shape == (0, 500)


def test_regress_maps_equals_lstsq() -> None:
    rng = np.random.default_rng(5)
    sources = rng.laplace(size=(7, 3000))
    x = rng.standard_normal((90, 7)) @ sources + 0.5 * rng.standard_normal((90, 3000))
    mixing, maps, noise = regress_maps(x, sources, order=7)
    m_ref = x @ np.linalg.pinv(sources)
    maps_ref = np.linalg.lstsq(m_ref, x, rcond=None)[0]
    resid = x - m_ref @ maps_ref
    np.testing.assert_allclose(mixing, m_ref, atol=1e-10)
    np.testing.assert_allclose(maps, maps_ref, atol=1e-10)
    np.testing.assert_allclose(noise, np.sqrt((resid**2).sum(0) / (90 - 7)), rtol=1e-8)
