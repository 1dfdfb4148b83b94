"""Blob memory: the pending zero-fill of cleared parameter diffs, and the in-place weight GEMMs
that use it (a fresh step writes the gradient, later passes add to it)."""
import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import protoio
from minicaffe.gradcheck import empty_tops, gaussian_blobs, make_layer
from minicaffe.proto import caffe_pb2


def test_cleared_diff_reads_as_zeros_and_shared_diffs_follow():
    a = caffe.Blob((3, 4))
    a.diff[...] = 7
    b = caffe.Blob((3, 4))
    b.share_diff(a)
    a.clear_diff_lazily()
    assert a.diff_is_zero and b.diff_is_zero
    np.testing.assert_array_equal(b.cpu_diff(), 0)  # any read materialises the zeros
    assert not a.diff_is_zero
    a.diff[...] = 5
    a.clear_diff_lazily()
    out = a.diff_overwrite()  # a writer that fills every element skips the zero-fill
    assert not a.diff_is_zero
    out[...] = 2
    np.testing.assert_array_equal(b.diff, 2)
    a.set_diff(3)  # other constants are written at once
    np.testing.assert_array_equal(a.cpu_diff(), 3)


def test_cleared_diff_of_a_blob_never_touched_before():
    a = caffe.Blob((2, 2))
    a.clear_diff_lazily()
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
    """After clear_diff_lazily() the first backward writes dW in place; a second backward without
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
    w.clear_diff_lazily()
    layer.backward(top, [True], bottom)
    once = w.diff.copy()
    assert np.abs(once).sum() > 0
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(w.diff, 2 * once, rtol=1e-12)
    w.diff[...] = 0  # the plain accumulate path from real zeros
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(w.diff, once, rtol=1e-12)


CLEAR_NET = """
layer { name: "in" type: "Input" top: "x" top: "label"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_clear_param_diffs_zeroes_arrays_taken_before():
    """pycaffe's view semantics: ``d = net.params[n][0].diff`` then ``clear_param_diffs()``
    leaves ``d`` all zeros; a backward after it accumulates onto what the user wrote there."""
    net = caffe.Net(CLEAR_NET, caffe.TRAIN)
    net.blobs["x"].data[...] = np.random.default_rng(0).normal(size=(4, 3))
    net.blobs["label"].data[...] = [0, 1, 2, 3]
    net.forward()
    net.backward()
    w, b = (net.params["ip"][i].diff for i in range(2))
    assert np.abs(w).sum() > 0 and np.abs(b).sum() > 0
    net.clear_param_diffs()
    np.testing.assert_array_equal(w, 0)
    np.testing.assert_array_equal(b, 0)
    net.backward()
    once = w.copy()
    net.clear_param_diffs()
    w[...] = 1.0   # the user's value: the next backward adds to it
    net.backward()
    np.testing.assert_allclose(w, once + 1.0, rtol=1e-6)


def test_solver_lazy_clear_leaves_no_stale_array():
    """The solver clears lazily, yet after a step an array taken before it holds that step's
    diff, as the blob reports it (every pending fill was written or overwritten)."""
    sp = caffe_pb2.SolverParameter()
    sp.net_param.CopyFrom(protoio.read_net_param(CLEAR_NET + """
    layer { name: "frozen" type: "InnerProduct" bottom: "x" top: "f" param { lr_mult: 0 }
            param { lr_mult: 0 } inner_product_param { num_output: 2 } }
    layer { name: "silence" type: "Silence" bottom: "f" }"""))
    sp.base_lr, sp.lr_policy, sp.momentum, sp.display = 0.1, "fixed", 0.9, 0
    solver = caffe.SGDSolver(sp)
    net = solver.net
    net.blobs["x"].data[...] = np.random.default_rng(1).normal(size=(4, 3))
    net.blobs["label"].data[...] = [0, 1, 2, 3]
    views = [blob.diff for blob in net.learnable_params]
    views[2][...] = 7.0   # garbage in the frozen layer's diff: the step's clear must zero it
    solver.step(2)
    for view, blob in zip(views, net.learnable_params):
        assert not blob.diff_is_zero
        np.testing.assert_array_equal(view, blob.diff)
    np.testing.assert_array_equal(views[2], 0)
    assert np.abs(views[0]).sum() > 0
