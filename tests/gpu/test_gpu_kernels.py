"""minicaffe.kernels on the device: the kernel built from a formula gives the host's values,
arrays indexed and scalars broadcast, for every pattern of array/scalar arguments."""
import math

import numpy as np
from numba import cuda

from minicaffe.kernels import elementwise


@elementwise
def _fma_tanh(x, a, b):
    return math.tanh(x * a) + b


@elementwise(loop=True)
def _pick(x, lo, hi):
    return lo if x < 0 else hi


def test_device_kernel_equals_host_for_each_pattern():
    rs = np.random.RandomState(0)
    x = rs.randn(37).astype(np.float32)
    a = (rs.rand(37) + 0.5).astype(np.float32)
    dx, da = cuda.to_device(x), cuda.to_device(a)
    for args_host, args_dev in [((x, 0.5, 1.0), (dx, 0.5, 1.0)), ((x, a, 1.0), (dx, da, 1.0)),
                                ((x, a, a), (dx, da, da))]:
        ref = _fma_tanh(*args_host, out=np.empty_like(x))
        out = cuda.device_array(x.size, np.float32)
        _fma_tanh.gpu(*args_dev, out=out)
        np.testing.assert_allclose(out.copy_to_host(), ref, rtol=1e-6, atol=1e-6)
    out = cuda.device_array(x.size, np.float32)
    _pick.gpu(dx, -1.0, 2.0, out=out)
    np.testing.assert_array_equal(out.copy_to_host(), np.where(x < 0, -1, 2).astype(np.float32))


def test_empty_output_launches_nothing():
    out = cuda.device_array(0, np.float32)
    assert _pick.gpu(cuda.device_array(0, np.float32), 0.0, 1.0, out=out) is out


def test_a_shorter_array_is_broadcast_along_inner():
    # x viewed as (outer 2, channels 3, inner 4); s per channel: x[o, c, i] * s[c]
    rs = np.random.RandomState(1)
    x = rs.randn(2, 3, 4).astype(np.float32)
    s = rs.randn(3).astype(np.float32)
    out = cuda.device_array(x.size, np.float32)
    from minicaffe import kernels
    kernels.mul.gpu(cuda.to_device(x.ravel()), cuda.to_device(s), out=out, inner=4)
    np.testing.assert_allclose(out.copy_to_host().reshape(x.shape), x * s[None, :, None],
                               rtol=1e-6)
