"""Blob memory: the pending zero-fill of cleared parameter diffs, and the in-place weight GEMMs
that use it (a fresh step writes the gradient, later passes add to it)."""
import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.gradcheck import empty_tops, gaussian_blobs, make_layer


def test_cleared_diff_reads_as_zeros_and_shared_diffs_follow():
    a = caffe.Blob((3, 4))
    a.diff[...] = 7
    b = caffe.Blob((3, 4))
    b.share_diff(a)
    a.set_diff(0)
    assert a.diff_is_zero and b.diff_is_zero
    np.testing.assert_array_equal(b.cpu_diff(), 0)  # any read materialises the zeros
    assert not a.diff_is_zero
    a.diff[...] = 5
    a.set_diff(0)
    out = a.diff_overwrite()  # a writer that fills every element skips the zero-fill
    assert not a.diff_is_zero
    out[...] = 2
    np.testing.assert_array_equal(b.diff, 2)
    a.set_diff(3)  # other constants are written at once
    np.testing.assert_array_equal(a.cpu_diff(), 3)


def test_cleared_diff_of_a_blob_never_touched_before():
    a = caffe.Blob((2, 2))
    a.set_diff(0)
    np.testing.assert_array_equal(a.diff, 0)
    a.reshape(5, 5)  # growing drops the pending fill with the memory
    assert not a.diff_is_zero
    np.testing.assert_array_equal(a.diff, 0)


@pytest.mark.parametrize("text, shape", [
    ('type: "InnerProduct" inner_product_param { num_output: 5 weight_filler { type: "gaussian" } }',
     (4, 3, 2, 2)),
    ('type: "InnerProduct" inner_product_param { num_output: 5 transpose: true '
     'weight_filler { type: "gaussian" } }', (4, 6)),
    ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 2 '
     'weight_filler { type: "gaussian" } }', (3, 4, 5, 5)),
    ('type: "Deconvolution" convolution_param { num_output: 4 kernel_size: 2 stride: 2 '
     'weight_filler { type: "gaussian" } }', (3, 4, 3, 3)),
])
def test_weight_gradient_in_place_then_accumulated(text, shape):
    """After set_diff(0) the first backward writes dW in place; a second backward without
    clearing (iter_size > 1) adds: exactly twice the first, and equal to the same pass over
    explicitly zeroed memory."""
    caffe.set_random_seed(2)
    layer = make_layer(text)
    bottom, top = gaussian_blobs([shape]), empty_tops(1)
    layer.setup(bottom, top)
    layer.param_propagate_down = [True] * len(layer.blobs)  # as Net sets it
    layer.forward(bottom, top)
    top[0].diff[...] = np.random.default_rng(3).normal(size=top[0].shape)
    w = layer.blobs[0]
    w.diff[...] = 123.0  # garbage the pending fill must hide
    w.set_diff(0)
    layer.backward(top, [True], bottom)
    once = w.diff.copy()
    assert np.abs(once).sum() > 0
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(w.diff, 2 * once, rtol=1e-12)
    w.diff[...] = 0  # the plain accumulate path from real zeros
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(w.diff, once, rtol=1e-12)
