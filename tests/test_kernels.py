"""minicaffe.kernels: one formula for both devices — the CPU side against NumPy (the GPU side
runs in tests/gpu under the simulator)."""
import math

import numpy as np
import pytest

from minicaffe import kernels
from minicaffe.kernels import elementwise


@elementwise
def _affine_tanh(x, a, b):
    return math.tanh(x * a) + b


@elementwise(loop=True)
def _leaky(x, nu):
    return x if x > 0 else x * nu


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_expression_formula_is_numpy_on_the_cpu(dtype):
    x = np.random.RandomState(0).randn(5, 7).astype(dtype)
    out = np.empty_like(x)
    assert _affine_tanh(x, 0.5, 2.0, out=out) is out
    # Python floats become out's dtype first, so float32 is computed in float32 (as Caffe's Dtype)
    ref = np.tanh(x * dtype(0.5)) + dtype(2.0)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_branching_formula_is_a_compiled_loop(dtype):
    x = np.random.RandomState(1).randn(4, 3, 2).astype(dtype)
    x[0, 0, 0] = 0.0
    out = np.empty_like(x)
    _leaky(x, 0.25, out=out)
    np.testing.assert_array_equal(out, np.where(x > 0, x, x * dtype(0.25)))
    # per-channel parameters broadcast as in NumPy (PReLU's slopes)
    slope = np.array([0.0, 0.5, 2.0], dtype)[None, :, None]
    _leaky(x, slope, out=out)
    np.testing.assert_array_equal(out, np.where(x > 0, x, x * slope))


def test_in_place():
    x = np.linspace(-2, 2, 9, dtype=np.float32)
    ref = np.where(x > 0, x, x * np.float32(0.1))
    _leaky(x, 0.1, out=x)
    np.testing.assert_array_equal(x, ref)


def test_every_kernel_can_be_rebuilt_by_name():
    # the name the signature recorder stores, resolved in a process that never launched it
    k = kernels.rebuild("%s:AS" % _leaky.key)
    assert k is kernels.KERNELS["%s:AS" % _leaky.key]
    assert k is _leaky.kernel("AS") and k is not _leaky.kernel("AA")
    src = kernels._kernel_source(3, "ASA")
    assert "out[i] = f(a0[i], a1, a2[i])" in src


def test_arithmetic_is_numpys_ufunc_with_out():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[2.0], [4.0]], np.float32)
    for f, ref in [(kernels.add, a + b), (kernels.sub, a - b), (kernels.mul, a * b),
                   (kernels.div, a / b)]:
        out = np.empty_like(a)
        np.testing.assert_array_equal(f(a, b, out=out), ref)
    # the formula itself is what the GPU compiles
    assert kernels.mul.fn(3.0, 4.0) == 12.0 and kernels.div.fn(3.0, 4.0) == 0.75
