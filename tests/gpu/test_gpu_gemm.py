"""gpu.gemm: every transpose, batching, broadcast and reduction, for both Numba kernels (the
register-tiled one the hardware uses and the one-thread-per-output one), against NumPy; the
reductions and elementwise helpers."""
import numpy as np
import pytest

from minicaffe import gpu


@pytest.mark.parametrize("kernel", ["tiled", "simple"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gemm(kernel, dtype):
    rng = np.random.default_rng(0)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    m, n, k, nb = 5, 9, 6, 2          # not multiples of the tile: edges are exercised
    for ta in (False, True):
        for tb in (False, True):
            A = rng.normal(size=(nb, k, m) if ta else (nb, m, k)).astype(dtype)
            B = rng.normal(size=(nb, n, k) if tb else (nb, k, n)).astype(dtype)
            C = rng.normal(size=(nb, m, n)).astype(dtype)
            opA = A.transpose(0, 2, 1) if ta else A
            opB = B.transpose(0, 2, 1) if tb else B
            a, b = gpu.to_device(A.ravel()), gpu.to_device(B.ravel())
            c = gpu.to_device(C.ravel())
            gpu.gemm(ta, tb, m, n, k, 0.5, a, b, 2.0, c, batch=nb, kernel=kernel)
            np.testing.assert_allclose(c.copy_to_host().reshape(nb, m, n),
                                       0.5 * opA @ opB + 2 * C, rtol=tol, atol=tol)
            c = gpu.to_device(C[0].ravel())
            gpu.gemm(ta, tb, m, n, k, 1.0, a, b, 1.0, c, batch=nb, reduce=True, kernel=kernel)
            np.testing.assert_allclose(c.copy_to_host().reshape(m, n),
                                       (opA @ opB).sum(0) + C[0], rtol=tol, atol=tol)
            c = gpu.to_device(np.full(nb * m * n, np.nan, dtype))   # beta = 0 ignores C
            gpu.gemm(ta, tb, m, n, k, 1.0, gpu.to_device(A[0].ravel()), b, 0.0, c, batch=nb,
                     stride_a=0, kernel=kernel)
            np.testing.assert_allclose(c.copy_to_host().reshape(nb, m, n), opA[0] @ opB,
                                       rtol=tol, atol=tol)


def test_reductions_and_elementwise():
    rng = np.random.default_rng(1)
    h = rng.normal(size=37)
    x = gpu.to_device(h)
    assert gpu.asum(x) == pytest.approx(np.abs(h).sum())
    assert gpu.sumsq(x) == pytest.approx(h @ h)
    assert gpu.dot(x, x) == pytest.approx(h @ h)
    assert gpu.total(x) == pytest.approx(h.sum())
    X = rng.normal(size=(3, 5, 4))
    out = gpu.to_device(np.ones(5))
    gpu.sum_odi(gpu.to_device(X.ravel()), 3, 5, 4, out, 2.0, 1.0)
    np.testing.assert_allclose(out.copy_to_host(), 2 * X.sum((0, 2)) + 1)
    y = gpu.to_device(np.ones(37))
    gpu.sign_axpy(0.5, x, y)
    gpu.add_bias(y, gpu.to_device(np.arange(37.0)), 1)
    np.testing.assert_allclose(y.copy_to_host(), 1 + 0.5 * np.sign(h) + np.arange(37.0))
    assert gpu.asum(gpu.empty(0, np.float32)) == 0.0
