"""Common layers: Eltwise, Concat, Slice, Flatten, Reshape, ArgMax, Reduction, Tile, Embed.

Each layer: a float64 gradient check with Caffe's tolerances, forward values against plain
NumPy written from the formula, and the quirks of caffe_semantics.md §4/§8.
"""
import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.errors import CaffeError, ShapeError
from minicaffe.gradcheck import GradientChecker, empty_tops, gaussian_blobs, make_layer


def run(layer, bottom, top):
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return top


def blob(arr):
    arr = np.asarray(arr, np.float64)
    b = caffe.Blob(arr.shape, np.float64)
    b.data[...] = arr
    return b


# --- Eltwise -----------------------------------------------------------------------------------
def test_eltwise_sum_coeff_forward_and_gradient():
    layer = make_layer('type: "Eltwise" eltwise_param { operation: SUM coeff: 1 coeff: -0.5 '
                       'coeff: 2 }')
    bottom = gaussian_blobs([(2, 3, 4, 5)] * 3)
    top = run(layer, bottom, empty_tops(1))
    a, b, c = (x.data for x in bottom)
    np.testing.assert_allclose(top[0].data, a - 0.5 * b + 2 * c, rtol=1e-12)
    checker = GradientChecker(1e-2, 1e-3)
    checker.check_gradient_eltwise(make_layer(layer.layer_param), bottom, empty_tops(1))
    assert checker.checked == 3 * 120 * 120


def test_eltwise_sum_default_coeff():
    bottom = gaussian_blobs([(2, 3)] * 2)
    top = run(make_layer('type: "Eltwise"'), bottom, empty_tops(1))
    np.testing.assert_allclose(top[0].data, bottom[0].data + bottom[1].data)


@pytest.mark.parametrize("stable", ["true", "false"])
def test_eltwise_prod_forward_and_gradient(stable):
    text = 'type: "Eltwise" eltwise_param { operation: PROD stable_prod_grad: %s }' % stable
    bottom = gaussian_blobs([(2, 3, 4, 5)] * 3)
    top = run(make_layer(text), bottom, empty_tops(1))
    np.testing.assert_allclose(top[0].data, bottom[0].data * bottom[1].data * bottom[2].data)
    GradientChecker(1e-2, 1e-3).check_gradient_eltwise(make_layer(text), bottom, empty_tops(1))


def test_eltwise_max_forward_and_gradient():
    text = 'type: "Eltwise" eltwise_param { operation: MAX }'
    bottom = gaussian_blobs([(2, 3, 4, 5)] * 3)
    layer = make_layer(text)
    top = run(layer, bottom, empty_tops(1))
    stack = np.stack([b.data for b in bottom])
    np.testing.assert_array_equal(top[0].data, stack.max(0))
    top[0].diff[...] = np.arange(120).reshape(2, 3, 4, 5)
    layer.backward(top, [True] * 3, bottom)
    arg = stack.argmax(0)
    for i, b in enumerate(bottom):
        np.testing.assert_array_equal(b.diff, np.where(arg == i, top[0].diff, 0))
    GradientChecker(1e-4, 1e-3).check_gradient_eltwise(make_layer(text), bottom, empty_tops(1))


def test_eltwise_max_ties_pick_later_bottom_then_strict():
    layer = make_layer('type: "Eltwise" eltwise_param { operation: MAX }')
    x = np.array([[1.0, 2.0, 3.0]])
    bottom = [blob(x), blob(x), blob([[1.0, 0.0, 5.0]])]
    top = run(layer, bottom, empty_tops(1))
    np.testing.assert_array_equal(top[0].data, [[1.0, 2.0, 5.0]])
    top[0].diff[...] = 1
    layer.backward(top, [True] * 3, bottom)
    # a tie between bottoms 0 and 1 goes to bottom 1; bottom 2 needs a strict ">"
    np.testing.assert_array_equal(bottom[0].diff, [[0, 0, 0]])
    np.testing.assert_array_equal(bottom[1].diff, [[1, 1, 0]])
    np.testing.assert_array_equal(bottom[2].diff, [[0, 0, 1]])


def test_eltwise_errors():
    with pytest.raises(ShapeError) as e:
        lp = make_layer('type: "Eltwise" name: "e" bottom: "a" bottom: "b"')
        lp.setup(gaussian_blobs([(2, 3), (2, 4)]), empty_tops(1))
    msg = str(e.value)
    assert "'a'" in msg and "'b'" in msg and "(2, 3)" in msg and "(2, 4)" in msg
    with pytest.raises(CaffeError, match="coeff"):
        make_layer('type: "Eltwise" eltwise_param { coeff: 1 }').setup(
            gaussian_blobs([(2, 3)] * 2), empty_tops(1))
    with pytest.raises(CaffeError, match="coeff"):
        make_layer('type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 2 }').setup(
            gaussian_blobs([(2, 3)] * 2), empty_tops(1))


# --- Concat / Slice ----------------------------------------------------------------------------
def test_concat_forward_and_gradient():
    bottom = gaussian_blobs([(2, 3, 2, 3), (2, 5, 2, 3)])
    top = run(make_layer('type: "Concat"'), bottom, empty_tops(1))
    np.testing.assert_array_equal(top[0].data, np.concatenate([b.data for b in bottom], 1))
    GradientChecker(1e-2, 1e-2).check_gradient(make_layer('type: "Concat"'), bottom,
                                               empty_tops(1))
    b0 = gaussian_blobs([(2, 3, 2, 3), (4, 3, 2, 3)])
    layer = make_layer('type: "Concat" concat_param { axis: 0 }')
    top = run(layer, b0, empty_tops(1))
    np.testing.assert_array_equal(top[0].data, np.concatenate([b.data for b in b0], 0))
    GradientChecker(1e-2, 1e-2).check_gradient(layer, b0, empty_tops(1))


def test_concat_backward_writes_only_the_bottoms_asked_for():
    bottom = gaussian_blobs([(2, 3, 2), (2, 1, 2), (2, 2, 2)])
    layer = make_layer('type: "Concat"')
    top = run(layer, bottom, empty_tops(1))
    top[0].diff[...] = np.arange(top[0].count()).reshape(top[0].shape)
    for b in bottom:
        b.diff[...] = -7
    layer.backward(top, [True, False, True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, top[0].diff[:, :3])
    np.testing.assert_array_equal(bottom[1].diff, np.full((2, 1, 2), -7.0))
    np.testing.assert_array_equal(bottom[2].diff, top[0].diff[:, 4:])


def test_concat_dim_wins_over_default_axis_and_both_is_an_error():
    bottom = gaussian_blobs([(2, 3, 2), (1, 3, 2)])
    top = run(make_layer('type: "Concat" concat_param { concat_dim: 0 }'), bottom, empty_tops(1))
    assert top[0].shape == (3, 3, 2)
    np.testing.assert_array_equal(top[0].data, np.concatenate([b.data for b in bottom], 0))
    with pytest.raises(CaffeError, match="not both"):
        make_layer('type: "Concat" concat_param { axis: 1 concat_dim: 0 }').setup(
            bottom, empty_tops(1))


def test_concat_shape_mismatch_and_single_bottom_shares():
    with pytest.raises(ShapeError, match=r"\(2, 4, 4\)"):
        make_layer('type: "Concat"').setup(gaussian_blobs([(2, 3, 3), (2, 4, 4)]), empty_tops(1))
    bottom = gaussian_blobs([(2, 3)])
    top = run(make_layer('type: "Concat"'), bottom, empty_tops(1))
    assert top[0].shares_data_with(bottom[0])
    np.testing.assert_array_equal(top[0].data, bottom[0].data)


def test_slice_points_forward_and_gradient():
    text = 'type: "Slice" slice_param { axis: 1 slice_point: 1 slice_point: 4 }'
    bottom = gaussian_blobs([(2, 6, 2, 2)])
    top = run(make_layer(text), bottom, empty_tops(3))
    x = bottom[0].data
    for t, ref in zip(top, (x[:, :1], x[:, 1:4], x[:, 4:])):
        np.testing.assert_array_equal(t.data, ref)
    GradientChecker(1e-2, 1e-3).check_gradient_exhaustive(make_layer(text), bottom,
                                                          empty_tops(3))


def test_slice_even_split_and_slice_dim():
    bottom = gaussian_blobs([(4, 3, 2)])
    top = run(make_layer('type: "Slice" slice_param { slice_dim: 0 }'), bottom, empty_tops(2))
    np.testing.assert_array_equal(top[0].data, bottom[0].data[:2])
    np.testing.assert_array_equal(top[1].data, bottom[0].data[2:])
    GradientChecker(1e-2, 1e-3).check_gradient_eltwise(
        make_layer('type: "Slice" slice_param { axis: -1 }'), gaussian_blobs([(2, 2)]),
        empty_tops(1))


@pytest.mark.parametrize("param,ntop,match", [
    ("", 2, "evenly divide"),                                    # 3 channels, 2 tops
    ("slice_point: 2 slice_point: 1", 3, "strictly increasing"),
    ("slice_point: 1", 3, "slice_point must be given 2 times"),
    ("slice_point: 3", 2, "strictly increasing"),                # at the end of the axis
    ("slice_point: 0", 2, "strictly increasing"),
    ("axis: 1 slice_dim: 1", 3, "not both"),
])
def test_slice_invalid_points(param, ntop, match):
    with pytest.raises(CaffeError, match=match):
        make_layer('type: "Slice" slice_param { %s }' % param).setup(
            gaussian_blobs([(2, 3, 2)]), empty_tops(ntop))


# --- Flatten / Reshape -------------------------------------------------------------------------
def test_flatten_shapes_share_and_gradient():
    bottom = gaussian_blobs([(2, 3, 4, 5)])
    top = run(make_layer('type: "Flatten"'), bottom, empty_tops(1))
    assert top[0].shape == (2, 60)
    assert top[0].shares_data_with(bottom[0])
    np.testing.assert_array_equal(top[0].data, bottom[0].data.reshape(2, 60))
    top = run(make_layer('type: "Flatten" flatten_param { axis: 1 end_axis: 2 }'), bottom,
              empty_tops(1))
    assert top[0].shape == (2, 12, 5)
    top = run(make_layer('type: "Flatten" flatten_param { axis: 0 end_axis: -2 }'), bottom,
              empty_tops(1))
    assert top[0].shape == (24, 5)
    GradientChecker(1e-2, 1e-2).check_gradient_eltwise(make_layer('type: "Flatten"'), bottom,
                                                       empty_tops(1))
    with pytest.raises(CaffeError, match="in-place"):
        make_layer('type: "Flatten"').setup(bottom, bottom)


@pytest.mark.parametrize("param,shape", [
    ("shape { dim: 0 dim: -1 }", (2, 60)),
    ("shape { dim: 0 dim: 3 dim: -1 dim: 5 }", (2, 3, 4, 5)),
    ("shape { dim: 6 dim: 0 dim: 0 dim: 1 }", None),             # count mismatch → error
    ("shape { dim: -1 dim: 0 dim: 2 }", (20, 3, 2)),
    ("axis: 1 num_axes: 1 shape { dim: 1 dim: 3 dim: 1 }", (2, 1, 3, 1, 4, 5)),
    ("axis: -1 shape { dim: 1 }", (2, 3, 4, 5, 1)),
    ("axis: 0 num_axes: 0 shape { dim: 1 }", (1, 2, 3, 4, 5)),
    ("axis: 2 num_axes: 2 shape { dim: 0 dim: -1 }", (2, 3, 4, 5)),
])
def test_reshape_zero_and_minus_one(param, shape):
    bottom = gaussian_blobs([(2, 3, 4, 5)])
    layer = make_layer('type: "Reshape" reshape_param { %s }' % param)
    if shape is None:
        with pytest.raises(ShapeError):
            layer.setup(bottom, empty_tops(1))
        return
    top = run(layer, bottom, empty_tops(1))
    assert top[0].shape == shape
    np.testing.assert_array_equal(top[0].data.ravel(), bottom[0].data.ravel())
    assert top[0].shares_data_with(bottom[0])


def test_reshape_errors_and_gradient():
    bottom = gaussian_blobs([(2, 3, 4, 5)])
    with pytest.raises(CaffeError, match="multiple -1"):
        make_layer('type: "Reshape" reshape_param { shape { dim: -1 dim: -1 } }').setup(
            bottom, empty_tops(1))
    with pytest.raises(ShapeError, match="divisible"):
        make_layer('type: "Reshape" reshape_param { shape { dim: 7 dim: -1 } }').setup(
            bottom, empty_tops(1))
    with pytest.raises(CaffeError, match="no axis"):
        make_layer('type: "Reshape" reshape_param { axis: 3 shape { dim: 0 dim: 0 } }').setup(
            bottom, empty_tops(1))
    GradientChecker(1e-2, 1e-2).check_gradient_eltwise(
        make_layer('type: "Reshape" reshape_param { shape { dim: 0 dim: -1 dim: 5 } }'),
        bottom, empty_tops(1))


# --- ArgMax ------------------------------------------------------------------------------------
def _ref_topk(v, k):
    """Caffe: sort (value, index) pairs descending; equal values rank the higher index first."""
    pairs = sorted(((val, j) for j, val in enumerate(v)), reverse=True)[:k]
    return [j for _, j in pairs], [val for val, _ in pairs]


def test_argmax_without_axis():
    x = gaussian_blobs([(3, 2, 4, 2)])
    top = run(make_layer('type: "ArgMax"'), x, empty_tops(1))
    assert top[0].shape == (3, 1, 1, 1)
    np.testing.assert_array_equal(top[0].data.ravel(), x[0].data.reshape(3, -1).argmax(1))
    top = run(make_layer('type: "ArgMax" argmax_param { top_k: 3 out_max_val: true }'), x,
              empty_tops(1))
    assert top[0].shape == (3, 2, 3, 1)
    for n in range(3):
        idx, val = _ref_topk(x[0].data[n].ravel(), 3)
        np.testing.assert_array_equal(top[0].data[n, 0, :, 0], idx)
        np.testing.assert_array_equal(top[0].data[n, 1, :, 0], val)
    top = run(make_layer('type: "ArgMax" argmax_param { top_k: 2 }'), gaussian_blobs([(4, 5)]),
              empty_tops(1))
    assert top[0].shape == (4, 1, 2)


def test_argmax_with_axis_and_ties():
    x = gaussian_blobs([(2, 5, 3)])
    top = run(make_layer('type: "ArgMax" argmax_param { axis: 1 top_k: 2 }'), x, empty_tops(1))
    assert top[0].shape == (2, 2, 3)
    top_v = run(make_layer('type: "ArgMax" argmax_param { axis: 1 top_k: 2 out_max_val: true }'),
                x, empty_tops(1))
    for n in range(2):
        for w in range(3):
            idx, val = _ref_topk(x[0].data[n, :, w], 2)
            np.testing.assert_array_equal(top[0].data[n, :, w], idx)
            np.testing.assert_array_equal(top_v[0].data[n, :, w], val)
    tie = [blob([[1.0, 3.0, 3.0, 0.0, 3.0]])]
    top = run(make_layer('type: "ArgMax" argmax_param { top_k: 3 }'), tie, empty_tops(1))
    np.testing.assert_array_equal(top[0].data.ravel(), [4, 2, 1])
    with pytest.raises(CaffeError, match="top_k"):
        make_layer('type: "ArgMax" argmax_param { axis: 1 top_k: 6 }').setup(x, empty_tops(1))


# --- Reduction / Tile --------------------------------------------------------------------------
@pytest.mark.parametrize("op,axis,coeff", [("SUM", 0, 1.0), ("SUM", 1, 2.0), ("MEAN", 2, -0.5),
                                           ("ASUM", 1, 1.0), ("SUMSQ", 2, 0.5), ("MEAN", -1, 1)])
def test_reduction_forward_and_gradient(op, axis, coeff):
    text = 'type: "Reduction" reduction_param { operation: %s axis: %d coeff: %g }' % (
        op, axis, coeff)
    bottom = gaussian_blobs([(2, 3, 4)])
    top = run(make_layer(text), bottom, empty_tops(1))
    x = bottom[0].data
    ax = axis % 3
    flat = x.reshape(x.shape[:ax] + (-1,))
    ref = {"SUM": flat.sum(-1), "MEAN": flat.mean(-1), "ASUM": np.abs(flat).sum(-1),
           "SUMSQ": (flat ** 2).sum(-1)}[op] * coeff
    assert top[0].shape == x.shape[:ax]
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12)
    GradientChecker(1e-2, 2e-3).check_gradient_exhaustive(make_layer(text), bottom,
                                                          empty_tops(1))


@pytest.mark.parametrize("axis,tiles", [(1, 3), (0, 2), (-1, 2)])
def test_tile_forward_and_gradient(axis, tiles):
    text = 'type: "Tile" tile_param { axis: %d tiles: %d }' % (axis, tiles)
    bottom = gaussian_blobs([(2, 3, 2)])
    top = run(make_layer(text), bottom, empty_tops(1))
    x = bottom[0].data
    ax = axis % 3
    ref = np.tile(x.reshape(x.shape[:ax] + (1, -1)), [1] * ax + [tiles, 1]).reshape(
        x.shape[:ax] + (-1,) + x.shape[ax + 1:])
    np.testing.assert_array_equal(top[0].data, ref)
    GradientChecker(1e-2, 1e-2).check_gradient_exhaustive(make_layer(text), bottom,
                                                          empty_tops(1))
    with pytest.raises(CaffeError, match="tiles"):
        make_layer('type: "Tile"').setup(bottom, empty_tops(1))


# --- Embed -------------------------------------------------------------------------------------
EMBED = ('type: "Embed" embed_param { num_output: 4 input_dim: 5 bias_term: %s '
         'weight_filler { type: "uniform" min: -10 max: 10 } '
         'bias_filler { type: "uniform" min: -10 max: 10 } }')


@pytest.mark.parametrize("bias", ["true", "false"])
def test_embed_forward_and_gradient(bias):
    layer = make_layer(EMBED % bias)
    idx = blob([[4.0, 2.0], [2.0, 3.0]])
    top = run(layer, [idx], empty_tops(1))
    assert top[0].shape == (2, 2, 4)
    w = layer.blobs[0].data
    assert w.shape == (5, 4)
    ref = w[idx.data.astype(int)] + (layer.blobs[1].data if bias == "true" else 0)
    np.testing.assert_array_equal(top[0].data, ref)
    GradientChecker(1e-2, 1e-3).check_gradient_exhaustive(
        make_layer(EMBED % bias), [idx], empty_tops(1), check_bottom=-2)


def test_embed_repeated_indices_accumulate_and_errors():
    layer = make_layer(EMBED % "true")
    idx = blob([1.0, 1.0, 3.0])
    top = run(layer, [idx], empty_tops(1))
    layer.param_propagate_down = [True, True]
    for b in layer.blobs:
        b.diff[...] = 1.0                      # param diffs accumulate
    top[0].diff[...] = np.arange(12.0).reshape(3, 4)
    layer.backward(top, [False], [idx])
    ref = np.ones((5, 4))
    ref[1] += top[0].diff[0] + top[0].diff[1]
    ref[3] += top[0].diff[2]
    np.testing.assert_array_equal(layer.blobs[0].diff, ref)
    np.testing.assert_array_equal(layer.blobs[1].diff, 1 + top[0].diff.sum(0))
    with pytest.raises(CaffeError, match="backpropagate"):
        layer.backward(top, [True], [idx])
    for bad in (5.0, -1.0, 1.5):
        with pytest.raises(CaffeError, match="input_dim"):
            layer.forward([blob([bad])], empty_tops(1))


# --- Parameter -------------------------------------------------------------------------------
PARAM = 'type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }'


def test_parameter_top_is_the_blob_and_backward_accumulates():
    layer = make_layer(PARAM)
    top = empty_tops(1)
    layer.setup([], top)
    assert [b.shape for b in layer.blobs] == [(2, 3)] and top[0].shape == (2, 3)
    w = np.arange(6.0).reshape(2, 3)
    layer.blobs[0].data[...] = w
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, w)
    layer.param_propagate_down = [True]
    layer.blobs[0].diff[...] = 0.5
    top[0].diff[...] = w
    layer.backward(top, [], [])
    np.testing.assert_array_equal(layer.blobs[0].diff, w + 0.5)


def test_parameter_gradient():
    layer = make_layer(PARAM)
    layer.setup([], empty_tops(1))
    layer.blobs[0].data[...] = np.random.default_rng(3).normal(size=(2, 3))
    checker = GradientChecker(1e-2, 1e-3)
    checker.check_gradient(layer, [], empty_tops(1))
    assert checker.checked == 6


PARAM_NET = """
layer { name: "t" type: "Input" top: "t" input_param { shape { dim: 1 dim: 3 } } }
layer { name: "w" type: "Parameter" top: "w" parameter_param { shape { dim: 1 dim: 3 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "w" bottom: "t" top: "loss" }
"""


def test_parameter_in_a_net_accumulates_its_diff():
    net = caffe.Net(PARAM_NET, caffe.TRAIN)
    w = net.params["w"][0]
    w.data[...] = [[1.0, 2.0, -1.0]]
    t = np.array([[0.5, 0.0, 1.0]], np.float32)
    net.forward(t=t)
    np.testing.assert_allclose(net.blobs["w"].data, w.data)
    net.backward()
    net.backward()  # a second backward adds on (iter_size), as for every param
    np.testing.assert_allclose(w.diff, 2 * (w.data - t), rtol=1e-6)


# --- Filter ----------------------------------------------------------------------------------
def test_filter_forward_backward_reference():
    x = np.random.default_rng(0).normal(size=(5, 2, 3))
    y = np.random.default_rng(1).normal(size=(5, 4))
    sel = np.array([0, 1, 0, 2.5, 1]).reshape(5, 1)
    layer = make_layer('type: "Filter"')
    bottom = [blob(x), blob(y), blob(sel)]
    top = empty_tops(2)
    layer.setup(bottom, top)
    assert top[0].shape == (5, 2, 3)  # the first reshape keeps every row, as Caffe
    layer.forward(bottom, top)
    keep = [1, 3, 4]
    np.testing.assert_array_equal(top[0].data, x[keep])
    np.testing.assert_array_equal(top[1].data, y[keep])
    dy = np.random.default_rng(2).normal(size=(3, 4))
    top[1].diff[...] = dy
    layer.backward(top, [False, True, False], bottom)
    want = np.zeros((5, 4))
    want[keep] = dy
    np.testing.assert_array_equal(bottom[1].diff, want)


def test_filter_gradient():
    bottom = gaussian_blobs([(4, 3), (4, 2, 2)]) + [blob(np.array([[1.0], [0], [1], [1]]))]
    for i in (0, 1):
        checker = GradientChecker(1e-2, 1e-3)
        checker.check_gradient(make_layer('type: "Filter"'), bottom, empty_tops(2), i)
        assert checker.checked > 0


def test_filter_errors_name_the_layer():
    layer = make_layer('type: "Filter" name: "f"')
    with pytest.raises(CaffeError, match="Filter layer f: .*singletons"):
        layer.setup([blob(np.zeros((2, 3))), blob(np.zeros((2, 2)))], empty_tops(1))
    with pytest.raises(CaffeError, match="Filter layer f: .*0th dimension"):
        make_layer('type: "Filter" name: "f"').setup(
            [blob(np.zeros((3, 3))), blob(np.zeros((2, 1)))], empty_tops(1))
    with pytest.raises(CaffeError, match="Filter layer f: .*one top per data bottom"):
        make_layer('type: "Filter" name: "f"').setup(
            [blob(np.zeros((2, 3))), blob(np.zeros((2, 1)))], empty_tops(2))
    bottom, top = [blob(np.zeros((2, 3))), blob(np.ones((2, 1)))], empty_tops(1)
    layer = make_layer('type: "Filter" name: "f"')
    run(layer, bottom, top)
    with pytest.raises(CaffeError, match="Filter layer f cannot backpropagate"):
        layer.backward(top, [True, True], bottom)
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)


# --- BatchReindex ----------------------------------------------------------------------------
def test_batch_reindex_forward_backward_reference():
    x = np.random.default_rng(0).normal(size=(4, 2, 3))
    idx = np.array([2, 0, 2, 3, 2.0])
    layer = make_layer('type: "BatchReindex"')
    bottom = [blob(x), blob(idx)]
    top = run(layer, bottom, empty_tops(1))
    np.testing.assert_array_equal(top[0].data, x[[2, 0, 2, 3, 2]])
    dy = np.random.default_rng(1).normal(size=(5, 2, 3))
    top[0].diff[...] = dy
    layer.backward(top, [True, False], bottom)
    want = np.zeros_like(x)
    for j, n in enumerate([2, 0, 2, 3, 2]):
        want[n] += dy[j]
    np.testing.assert_allclose(bottom[0].diff, want, rtol=1e-14)


def test_batch_reindex_gradient():
    bottom = gaussian_blobs([(4, 3)]) + [blob(np.array([3.0, 1, 1, 0, 3, 3]))]
    checker = GradientChecker(1e-2, 1e-3)
    checker.check_gradient(make_layer('type: "BatchReindex"'), bottom, empty_tops(1), 0)
    assert checker.checked == 12


def test_batch_reindex_errors():
    for bad in (4.0, -1.0):
        with pytest.raises(CaffeError, match=r"BatchReindex layer br: index .* out of range "
                                             r"\[0, 4\)"):
            run(make_layer('type: "BatchReindex" name: "br"'),
                [blob(np.zeros((4, 2))), blob(np.array([0.0, bad]))], empty_tops(1))
    with pytest.raises(CaffeError, match="BatchReindex layer br: the index bottom must be 1-D"):
        run(make_layer('type: "BatchReindex" name: "br"'),
            [blob(np.zeros((4, 2))), blob(np.zeros((2, 1)))], empty_tops(1))
    layer = make_layer('type: "BatchReindex" name: "br"')
    bottom, top = [blob(np.zeros((4, 2))), blob(np.array([1.0]))], empty_tops(1)
    run(layer, bottom, top)
    with pytest.raises(CaffeError, match="BatchReindex layer br: cannot backprop to the index"):
        layer.backward(top, [True, True], bottom)
