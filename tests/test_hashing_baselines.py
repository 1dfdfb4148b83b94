"""Unsupervised hashing baselines (ITQ, K-means hashing, BA, UH-BDNN) on small Gaussian
clusters: objectives go down, codes are balanced {-1, +1} and retrieve far better than random
codes; plus references for the pieces (PCA, Procrustes, the binary Z-step, BDNN gradients)."""
import itertools

import numpy as np
import pytest

from minicaffe.hashing import (
    BDNN,
    ITQ,
    KMH,
    BinaryAutoencoder,
    bdnn as bdnn_module,
    binarize,
    itq as itq_module,
    mean_average_precision,
    pca,
)
from minicaffe.hashing.ba import solve_binary_codes

N_BITS = 16
FAST = {"BDNN": dict(n_outer=4, n_steps=30)}
FITS = {"ITQ": ITQ.fit, "KMH": KMH.fit, "BA": BinaryAutoencoder.fit, "BDNN": BDNN.fit}


def clusters(seed=0, n=300, dim=32, classes=10):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    return rng.normal(size=(classes, dim))[labels] + rng.normal(size=(n, dim)), labels


@pytest.fixture(scope="module")
def data():
    return clusters()


@pytest.fixture(scope="module")
def models(data):
    x, _ = data
    return {name: fit(x, N_BITS, seed=0, **FAST.get(name, {})) for name, fit in FITS.items()}


@pytest.fixture(scope="module")
def random_map(data):
    _, y = data
    codes = binarize(np.random.default_rng(9).normal(size=(len(y), N_BITS)))
    return mean_average_precision(codes, y, codes, y, exclude_self=True)


@pytest.mark.parametrize("name", list(FITS))
def test_codes_shape_values_balance(name, models, data):
    x, _ = data
    b = models[name].encode(x)
    assert b.shape == (len(x), N_BITS)
    assert set(np.unique(b)) <= {-1, 1}
    assert np.all(np.abs(b.mean(axis=0)) <= 0.6)
    np.testing.assert_array_equal(models[name].encode(x[:17]), b[:17])     # per-row encoder


@pytest.mark.parametrize("name", list(FITS))
def test_beats_random_codes(name, models, data, random_map):
    x, y = data
    b = models[name].encode(x)
    m = mean_average_precision(b, y, b, y, exclude_self=True)
    assert random_map < 0.15
    assert m > random_map + 0.35, (name, m, random_map)


@pytest.mark.parametrize("name", ["ITQ", "KMH", "BDNN"])
def test_objective_non_increasing(name, models):
    h = np.asarray(models[name].history)
    assert len(h) >= 2
    assert np.all(np.diff(h) <= 1e-9 * np.abs(h[:-1])), h
    assert h[-1] < h[0]


def test_ba_objective_decreases_for_fixed_mu(models):
    ba = models["BA"]
    h, mu = np.asarray(ba.history), np.asarray(ba.mu_history)
    assert len(h) == len(mu) >= 2 and np.all(np.diff(mu) >= 0)
    same = np.diff(mu) == 0
    assert same.any()
    assert np.all(np.diff(h)[same] <= 1e-9 * np.abs(h[:-1][same]))
    assert np.any(np.diff(h)[same] < 0)


@pytest.mark.parametrize("name", list(FITS))
def test_deterministic_given_seed(name, data):
    x, _ = data
    x = x[:120]
    kw = dict(FAST.get(name, {}), seed=3)
    first, second = FITS[name](x, 8, **kw), FITS[name](x, 8, **kw)
    np.testing.assert_array_equal(first.encode(x), second.encode(x))


def test_itq_is_sign_of_rotated_pca(models, data):
    x, _ = data
    itq = models["ITQ"]
    r = itq.rotation
    np.testing.assert_allclose(r.T @ r, np.eye(N_BITS), atol=1e-10)
    v = (x - x.mean(axis=0)) @ itq.components
    np.testing.assert_array_equal(itq.encode(x), binarize(v @ r))
    assert len(itq.history) == 50
    b = binarize(v @ r)                          # ITQ's objective at the returned R
    assert np.sum((b - v @ r) ** 2) <= itq.history[-1] + 1e-6


def test_pca_exact_paths_and_randomized_agree(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 5)) @ np.diag([5, 4, 3, 0.5, 0.1]) @ rng.normal(size=(5, 40))
    for data in (x, x[:, :30].T.copy()):                 # n > D and n < D: both exact paths
        mean, comp, var = pca(data, 3)
        np.testing.assert_allclose(comp.T @ comp, np.eye(3), atol=1e-10)
        cov = np.cov(data, rowvar=False)
        w = np.linalg.eigvalsh(cov)[::-1][:3]
        np.testing.assert_allclose(var, w, rtol=1e-8)
        np.testing.assert_allclose(np.diag(comp.T @ cov @ comp), w, rtol=1e-8)
    exact = pca(x, 3)[1]
    monkeypatch.setattr(itq_module, "_EXACT_PCA_LIMIT", 10)
    approx = pca(x, 3)[1]
    np.testing.assert_allclose(approx, exact, atol=1e-6)


def test_kmh_product_space_with_uneven_bits(data):
    x, y = data
    kmh = KMH.fit(x, 10, bits_per_subspace=4, n_iter=10)              # subspaces of 4, 3, 3 bits
    assert [c.shape[0] for c in kmh.centres] == [16, 8, 8]
    b = kmh.encode(x)
    assert b.shape == (len(x), 10) and set(np.unique(b)) <= {-1, 1}
    with pytest.raises(ValueError):
        KMH.fit(x, 16, bits_per_subspace=9)


def brute_force_codes(x, a, c, h, mu):
    bits = a.shape[1]
    best = []
    cands = np.array(list(itertools.product([-1.0, 1.0], repeat=bits)))
    for xi, hi in zip(x, h):
        obj = np.sum((xi - cands @ a.T - c) ** 2, 1) + mu * np.sum((cands - hi) ** 2, 1)
        best.append(obj.min())
    return np.array(best)


def coded(x, a, c, z, h, mu):
    return np.sum((x - z @ a.T - c) ** 2, 1) + mu * np.sum((z - h) ** 2, 1)


def test_binary_z_step():
    rng = np.random.default_rng(2)
    x, c = rng.normal(size=(40, 6)), rng.normal(size=6)
    h, z0 = binarize(rng.normal(size=(40, 4))), binarize(rng.normal(size=(40, 4)))
    # General decoder: never worse than either start.
    a = rng.normal(size=(6, 4))
    z = solve_binary_codes(x, a, c, h, 0.3, z0)
    assert set(np.unique(z)) <= {-1, 1}
    assert np.all(coded(x, a, c, z, h, 0.3) <= coded(x, a, c, z0, h, 0.3) + 1e-12)
    assert np.all(coded(x, a, c, z, h, 0.3) <= coded(x, a, c, h, h, 0.3) + 1e-12)
    # Orthogonal decoder columns: the bits decouple and coordinate descent is exact.
    a = np.linalg.qr(rng.normal(size=(6, 4)))[0] * [3, 2, 1, 0.5]
    z = solve_binary_codes(x, a, c, h, 0.3, z0)
    np.testing.assert_allclose(coded(x, a, c, z, h, 0.3), brute_force_codes(x, a, c, h, 0.3))


def test_ba_decoder_reconstructs(models, data):
    x, _ = data
    ba = models["BA"]
    err = np.sum((x - ba.decode(ba.encode(x))) ** 2)
    assert err < 0.8 * np.sum((x - x.mean(axis=0)) ** 2)


def test_bdnn_encoder_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    x, b = rng.normal(size=(12, 5)), binarize(rng.normal(size=(12, 3))).astype(float)
    p = {"W1": rng.normal(size=(4, 5)), "c1": rng.normal(size=4),
         "W2": rng.normal(size=(3, 4)), "c2": rng.normal(size=3)}
    lam = (0.1, 0.5, 0.3, 0.2)
    _, grads = bdnn_module._encoder_terms(p, x, b, lam)
    eps = 1e-6
    for k in p:
        num = np.zeros_like(p[k])
        for idx in np.ndindex(p[k].shape):
            plus, minus = dict(p), dict(p)
            plus[k], minus[k] = p[k].copy(), p[k].copy()
            plus[k][idx] += eps
            minus[k][idx] -= eps
            num[idx] = (bdnn_module._encoder_terms(plus, x, b, lam)[0]
                        - bdnn_module._encoder_terms(minus, x, b, lam)[0]) / (2 * eps)
        np.testing.assert_allclose(grads[k], num, rtol=1e-5, atol=1e-7, err_msg=k)
