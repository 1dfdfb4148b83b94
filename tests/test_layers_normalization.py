"""Normalization layers: BatchNorm, Scale, Bias, MVN. Gradient checks in float64 with Caffe's
tolerances, forward values against NumPy written from the formulas, running statistics,
parameter layouts and in-place use."""
import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.blob import Blob
from minicaffe.errors import CaffeError, ShapeError
from minicaffe.gradcheck import GradientChecker, empty_tops, gaussian_blobs, make_layer

MAF, EPS = 0.999, float(np.float32(1e-5))  # proto floats, as the layer reads them


def blob(a, dtype=np.float64):
    a = np.asarray(a, dtype)
    b = Blob(a.shape, dtype)
    b.data[...] = a
    return b


def bn_reference(x, mean, var, eps=EPS):
    """y[n, c, ...] = (x − mean_c) / sqrt(var_c + eps), one channel at a time."""
    y = np.empty_like(x)
    for c in range(x.shape[1]):
        y[:, c] = (x[:, c] - mean[c]) / np.sqrt(var[c] + eps)
    return y


def channel_stats(x):
    """Per-channel batch mean and biased variance over N and the spatial axes."""
    v = [x[:, c].ravel() for c in range(x.shape[1])]
    return np.array([a.mean() for a in v]), np.array([((a - a.mean()) ** 2).mean() for a in v])


# --- BatchNorm ------------------------------------------------------------------------------

def test_batchnorm_gradient_train():
    layer = make_layer('type: "BatchNorm"', phase=caffe.TRAIN)
    c = GradientChecker(1e-2, 1e-4)  # Caffe's BatchNormLayerTest settings
    c.check_gradient_exhaustive(layer, gaussian_blobs([(4, 2, 3, 2)]), empty_tops(1))
    assert c.checked > 0 and not layer.use_global_stats


def test_batchnorm_gradient_global_stats():
    # The statistics blobs get no gradient (Caffe's neither), but with global stats the output
    # depends on them, so GradientChecker (which always checks params) does not apply: central
    # differences on the bottom only, same step and tolerance.
    layer = make_layer('type: "BatchNorm"', phase=caffe.TEST)
    bottom, top = gaussian_blobs([(2, 3, 2, 2)]), empty_tops(1)
    layer.setup(bottom, top)
    layer.blobs[0].data[...] = [0.5, -1.0, 2.0]
    layer.blobs[1].data[...] = [1.0, 3.0, 0.25]
    layer.blobs[2].data[...] = 2.0
    assert layer.use_global_stats

    def objective():
        layer.forward(bottom, top)
        return 0.5 * float(np.sum(top[0].data ** 2))

    objective()
    top[0].diff[...] = top[0].data
    layer.backward(top, [True], bottom)
    computed = bottom[0].diff.copy().ravel()
    flat, h = bottom[0].data.reshape(-1), 1e-2
    for k in range(flat.size):
        orig = flat[k]
        flat[k] = orig + h
        pos = objective()
        flat[k] = orig - h
        neg = objective()
        flat[k] = orig
        est = (pos - neg) / (2 * h)
        assert abs(computed[k] - est) <= 1e-3 * max(abs(computed[k]), abs(est), 1.0)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (6, 4), (7,)])
def test_batchnorm_train_forward_matches_formula(shape):
    layer = make_layer('type: "BatchNorm"')
    bottom, top = gaussian_blobs([shape]), empty_tops(1)
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    x = bottom[0].data
    x4 = x.reshape(shape[0], 1) if len(shape) == 1 else x
    mean, var = channel_stats(x4)
    want = bn_reference(x4, mean, var).reshape(shape)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-12)
    assert top[0].shape == shape
    assert [b.shape for b in layer.blobs] == [(len(mean),), (len(mean),), (1,)]


def test_batchnorm_running_statistics_and_test_phase():
    shape = (3, 2, 2, 3)
    m = 3 * 2 * 3
    x1, x2 = gaussian_blobs([shape, shape])
    x2.data[...] = 2.0 * x2.data + 1.0
    layer = make_layer('type: "BatchNorm"', phase=caffe.TRAIN)
    top = empty_tops(1)
    layer.setup([x1], top)
    assert all(np.all(b.data == 0) for b in layer.blobs)
    layer.forward([x1], top)
    layer.forward([x2], top)
    mu1, v1 = channel_stats(x1.data)
    mu2, v2 = channel_stats(x2.data)
    maf = float(np.float32(MAF))        # the proto field is a float
    corr = m / (m - 1.0)
    np.testing.assert_allclose(layer.blobs[2].data, [maf * 1.0 + 1.0], rtol=1e-14)
    np.testing.assert_allclose(layer.blobs[0].data, maf * mu1 + mu2, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].data, maf * corr * v1 + corr * v2, rtol=1e-12)
    # the second forward normalised with x2's own statistics
    np.testing.assert_allclose(top[0].data, bn_reference(x2.data, mu2, v2), rtol=1e-12,
                               atol=1e-12)

    # TEST phase (use_global_stats defaults to true): stored sums / scale factor, no update
    test = make_layer('type: "BatchNorm"', phase=caffe.TEST)
    x3 = gaussian_blobs([shape], seed=7)
    top3 = empty_tops(1)
    test.setup(x3, top3)
    for mine, theirs in zip(test.blobs, layer.blobs):
        mine.data[...] = theirs.data
    saved = [b.data.copy() for b in test.blobs]
    test.forward(x3, top3)
    sf = test.blobs[2].data[0]
    want = bn_reference(x3[0].data, test.blobs[0].data / sf, test.blobs[1].data / sf)
    np.testing.assert_allclose(top3[0].data, want, rtol=1e-12, atol=1e-12)
    for b, s in zip(test.blobs, saved):
        np.testing.assert_array_equal(b.data, s)
    # its gradient is just a rescaling
    top3[0].diff[...] = 1.0
    test.backward(top3, [True], x3)
    var = test.blobs[1].data / sf
    np.testing.assert_allclose(x3[0].diff, np.broadcast_to(
        (1 / np.sqrt(var + EPS))[None, :, None, None], shape), rtol=1e-12)


def test_batchnorm_use_global_stats_overrides_phase():
    shape = (2, 3, 2, 2)
    x = gaussian_blobs([shape])
    layer = make_layer('type: "BatchNorm" batch_norm_param { use_global_stats: true }',
                       phase=caffe.TRAIN)
    top = empty_tops(1)
    layer.setup(x, top)
    layer.forward(x, top)   # scale factor 0: mean = var = 0
    np.testing.assert_allclose(top[0].data, x[0].data / np.sqrt(EPS), rtol=1e-12)
    assert np.all(layer.blobs[2].data == 0)

    layer = make_layer('type: "BatchNorm" batch_norm_param { use_global_stats: false '
                       'moving_average_fraction: 0.5 eps: 0.1 }', phase=caffe.TEST)
    layer.setup(x, top)
    layer.forward(x, top)
    mean, var = channel_stats(x[0].data)
    np.testing.assert_allclose(top[0].data, bn_reference(x[0].data, mean, var, eps=0.1),
                               rtol=1e-6)
    layer.forward(x, top)
    np.testing.assert_allclose(layer.blobs[2].data, [1.5])
    np.testing.assert_allclose(layer.blobs[0].data, 1.5 * mean, rtol=1e-12)


def test_batchnorm_statistics_are_never_learned():
    layer = make_layer('type: "BatchNorm"')
    layer.setup(gaussian_blobs([(2, 3, 2, 2)]), empty_tops(1))
    assert [p.lr_mult for p in layer.layer_param.param] == [0, 0, 0]
    layer.setup(gaussian_blobs([(2, 3, 2, 2)]), empty_tops(1))   # idempotent
    assert len(layer.layer_param.param) == 3

    layer = make_layer('type: "BatchNorm" param { lr_mult: 0 decay_mult: 0 }')
    layer.setup(gaussian_blobs([(2, 3, 2, 2)]), empty_tops(1))
    assert [p.lr_mult for p in layer.layer_param.param] == [0, 0, 0]
    assert layer.layer_param.param[0].decay_mult == 0

    layer = make_layer('type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 1 }')
    with pytest.raises(CaffeError, match="Cannot configure batch normalization statistics"):
        layer.setup(gaussian_blobs([(2, 3, 2, 2)]), empty_tops(1))


def test_batchnorm_in_a_net_has_zero_lr():
    net = caffe.Net("""
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 4 dim: 3 dim: 2 } } }
    layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" }
    layer { name: "sc" type: "Scale" bottom: "x" top: "x" scale_param { bias_term: true } }
    """, caffe.TRAIN)
    assert net.params_lr == [0, 0, 0, 1, 1]
    assert net.layer_dict["bn"].param_propagate_down == [False] * 3
    x = np.random.default_rng(0).normal(size=(4, 3, 2)).astype(np.float32)
    out = net.forward(x=x)["x"]
    mean, var = channel_stats(x.astype(np.float64))
    np.testing.assert_allclose(out, bn_reference(x.astype(np.float64), mean, var), atol=1e-5)
    np.testing.assert_allclose(net.params["bn"][2].data, [1.0])


def test_batchnorm_in_place_matches():
    x = gaussian_blobs([(3, 2, 2, 3)])[0].data.copy()
    dy = np.random.default_rng(4).normal(size=x.shape)
    res = []
    for in_place in (False, True):
        layer = make_layer('type: "BatchNorm"')
        b = blob(x)
        top = [b] if in_place else empty_tops(1)
        layer.setup([b], top)
        layer.forward([b], top)
        y = top[0].data.copy()
        top[0].diff[...] = dy
        layer.backward(top, [True], [b])
        res.append((y, b.diff.copy(), [p.data.copy() for p in layer.blobs]))
    np.testing.assert_allclose(res[1][0], res[0][0], rtol=1e-14)
    np.testing.assert_allclose(res[1][1], res[0][1], rtol=1e-12, atol=1e-15)
    for a, b in zip(res[0][2], res[1][2]):
        np.testing.assert_array_equal(a, b)


def test_batchnorm_float32_and_channel_check():
    layer = make_layer('type: "BatchNorm"')
    x = gaussian_blobs([(4, 3, 5)], dtype=np.float32)
    top = empty_tops(1, np.float32)
    layer.setup(x, top)
    layer.forward(x, top)
    assert top[0].dtype == np.float32 and layer.blobs[0].dtype == np.float32
    mean, var = channel_stats(x[0].data.astype(np.float64))
    np.testing.assert_allclose(top[0].data, bn_reference(x[0].data.astype(np.float64), mean, var),
                               atol=2e-5)
    x[0].reshape((4, 2, 5))
    with pytest.raises(ShapeError, match="channels"):
        layer.forward(x, top)


# --- Scale ----------------------------------------------------------------------------------

SB = (2, 3, 2, 2)
GAUSS = 'filler { type: "gaussian" }'

# (scale_param body, learned scale shape)
SCALE_PARAM_CASES = [
    ("", (3,)),
    ("num_axes: -1", (3, 2, 2)),
    ("num_axes: 0", ()),
    ("axis: 0 num_axes: 2", (2, 3)),
    ("axis: -1", (2,)),
    ("axis: 0 num_axes: -1", SB),
    ("axis: 2 num_axes: 2", (2, 2)),
]


def pad_to(param, axis, ndim):
    """Reshape a scale/bias blob to broadcast against an ndim array from ``axis``."""
    p = np.asarray(param)
    return p.reshape((1,) * axis + p.shape + (1,) * (ndim - axis - p.ndim))


def _axis(body):
    for tok in body.split("axis:")[1:2]:
        return int(tok.split()[0])
    return 1


@pytest.mark.parametrize("body,shape", SCALE_PARAM_CASES)
def test_scale_param_gradient_and_forward(body, shape):
    layer = make_layer('type: "Scale" scale_param { %s %s }' % (body, GAUSS))
    bottom, top = gaussian_blobs([SB]), empty_tops(1)
    c = GradientChecker(1e-2, 1e-3)
    c.check_gradient_exhaustive(layer, bottom, top)
    assert [b.shape for b in layer.blobs] == [shape]
    layer.forward(bottom, top)
    axis = 0 if shape == () else _axis(body) % 4
    want = bottom[0].data * pad_to(layer.blobs[0].data, axis, 4)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-14)


def test_scale_bias_term_gradient_and_forward():
    layer = make_layer('type: "Scale" scale_param { axis: 1 num_axes: 2 bias_term: true %s '
                       'bias_filler { type: "gaussian" } }' % GAUSS)
    bottom, top = gaussian_blobs([SB]), empty_tops(1)
    GradientChecker(1e-2, 1e-3).check_gradient_exhaustive(layer, bottom, top)
    s, b = layer.blobs
    assert s.shape == b.shape == (3, 2)
    layer.forward(bottom, top)
    want = np.empty(SB)
    for n in range(2):
        for c in range(3):
            for h in range(2):
                want[n, c, h] = bottom[0].data[n, c, h] * s.data[c, h] + b.data[c, h]
    np.testing.assert_allclose(top[0].data, want, rtol=1e-14)


# (second bottom's shape, scale_param body)
SCALE_BOTTOM_CASES = [((3,), ""), ((3, 2), ""), (SB, "axis: 0"), ((), ""), ((2, 3), "axis: 0"),
                      ((2,), "axis: -1"),
                      ((3,), "bias_term: true bias_filler { type: 'gaussian' }")]


@pytest.mark.parametrize("sshape,body", SCALE_BOTTOM_CASES)
def test_scale_two_bottoms(sshape, body):
    layer = make_layer('type: "Scale" scale_param { %s }' % body.replace("'", '"'))
    bottom = gaussian_blobs([SB, sshape])
    top = empty_tops(1)
    c = GradientChecker(1e-2, 1e-3)
    c.check_gradient_exhaustive(layer, bottom, top)
    bias = "bias_term" in body
    assert [b.shape for b in layer.blobs] == ([sshape] if bias else [])
    layer.forward(bottom, top)
    axis = 0 if sshape == () else _axis(body) % 4
    want = bottom[0].data * pad_to(bottom[1].data, axis, 4)
    if bias:
        want = want + pad_to(layer.blobs[0].data, axis, 4)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-14)


def test_scale_defaults_identity_and_diff_accumulation():
    layer = make_layer('type: "Scale" scale_param { bias_term: true }')
    bottom, top = gaussian_blobs([SB]), empty_tops(1)
    layer.setup(bottom, top)
    assert np.all(layer.blobs[0].data == 1) and np.all(layer.blobs[1].data == 0)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, bottom[0].data)
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    ds, db = layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy()
    np.testing.assert_allclose(ds, bottom[0].data.sum(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(db, [8.0, 8.0, 8.0])
    layer.backward(top, [True], bottom)            # param diffs accumulate
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * ds, rtol=1e-14)
    np.testing.assert_allclose(layer.blobs[1].diff, 2 * db, rtol=1e-14)

    two = make_layer('type: "Scale"')
    bottom2 = gaussian_blobs([SB, (3,)])
    two.setup(bottom2, top)
    two.forward(bottom2, top)
    two.backward(top, [True, True], bottom2)
    first = bottom2[1].diff.copy()
    two.backward(top, [True, True], bottom2)       # a bottom diff is overwritten
    np.testing.assert_array_equal(bottom2[1].diff, first)


@pytest.mark.parametrize("two_bottoms", [False, True])
def test_scale_in_place_matches(two_bottoms):
    text = 'type: "Scale" scale_param { bias_term: true %s bias_filler { type: "gaussian" } }' \
        % GAUSS
    x = gaussian_blobs([SB])[0].data.copy()
    s = np.array([0.5, -2.0, 1.5])
    dy = np.random.default_rng(5).normal(size=SB)
    res = []
    for in_place in (False, True):
        caffe.set_random_seed(3)
        layer = make_layer(text)
        b0 = blob(x)
        bottom = [b0, blob(s)] if two_bottoms else [b0]
        top = [b0] if in_place else empty_tops(1)
        layer.setup(bottom, top)
        layer.forward(bottom, top)
        y = top[0].data.copy()
        top[0].diff[...] = dy
        layer.backward(top, [True] * len(bottom), bottom)
        res.append([y] + [b.diff.copy() for b in bottom + layer.blobs])
    for a, b in zip(*res):
        np.testing.assert_allclose(b, a, rtol=1e-13)


def test_scale_shape_errors():
    with pytest.raises(ShapeError):
        make_layer('type: "Scale"').setup(gaussian_blobs([SB, (4,)]), empty_tops(1))
    with pytest.raises(ShapeError, match="extends past"):
        make_layer('type: "Scale" scale_param { axis: 2 num_axes: 3 }').setup(
            gaussian_blobs([SB]), empty_tops(1))
    with pytest.raises(CaffeError, match="num_axes"):
        make_layer('type: "Scale" scale_param { num_axes: -2 }').setup(
            gaussian_blobs([SB]), empty_tops(1))
    layer = make_layer('type: "Scale"')
    bottom, top = gaussian_blobs([SB]), empty_tops(1)
    layer.setup(bottom, top)
    bottom[0].reshape((2, 4, 2, 2))
    with pytest.raises(ShapeError):
        layer.forward(bottom, top)


# --- Bias -----------------------------------------------------------------------------------

BIAS_PARAM_CASES = [("", (3,)), ("num_axes: 0", ()), ("axis: 0 num_axes: -1", SB),
                    ("axis: 2 num_axes: -1", (2, 2))]


@pytest.mark.parametrize("body,shape", BIAS_PARAM_CASES)
def test_bias_param_gradient_and_forward(body, shape):
    layer = make_layer('type: "Bias" bias_param { %s %s }' % (body, GAUSS))
    bottom, top = gaussian_blobs([SB]), empty_tops(1)
    GradientChecker(1e-2, 1e-3).check_gradient_exhaustive(layer, bottom, top)
    assert [b.shape for b in layer.blobs] == [shape]
    layer.forward(bottom, top)
    axis = 0 if shape == () else _axis(body) % 4
    want = bottom[0].data + pad_to(layer.blobs[0].data, axis, 4)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-14)


@pytest.mark.parametrize("bshape,body", [((3,), ""), ((3, 2), ""), (SB, "axis: 0"), ((), ""),
                                         ((2, 3), "axis: 0")])
def test_bias_two_bottoms(bshape, body):
    layer = make_layer('type: "Bias" bias_param { %s }' % body)
    bottom, top = gaussian_blobs([SB, bshape]), empty_tops(1)
    GradientChecker(1e-2, 1e-3).check_gradient_exhaustive(layer, bottom, top)
    assert layer.blobs == []
    layer.forward(bottom, top)
    axis = 0 if bshape == () else _axis(body) % 4
    np.testing.assert_allclose(top[0].data, bottom[0].data + pad_to(bottom[1].data, axis, 4),
                               rtol=1e-14)


def test_bias_default_filler_in_place_and_accumulation():
    layer = make_layer('type: "Bias"')
    x = gaussian_blobs([SB])[0]
    orig = x.data.copy()
    layer.setup([x], [x])
    assert np.all(layer.blobs[0].data == 0)
    layer.blobs[0].data[...] = [1.0, 2.0, 3.0]
    layer.forward([x], [x])
    np.testing.assert_allclose(x.data, orig + pad_to([1.0, 2.0, 3.0], 1, 4))
    x.diff[...] = 1.0
    layer.backward([x], [True], [x])
    layer.backward([x], [True], [x])
    np.testing.assert_array_equal(x.diff, 1.0)
    np.testing.assert_allclose(layer.blobs[0].diff, [16.0, 16.0, 16.0])


# --- MVN ------------------------------------------------------------------------------------

def mvn_reference(x4, normalize_variance=True, across_channels=False, eps=1e-9):
    y = np.empty_like(x4)
    groups = [(n, slice(None)) for n in range(x4.shape[0])] if across_channels else \
        [(n, c) for n in range(x4.shape[0]) for c in range(x4.shape[1])]
    for n, c in groups:
        v = x4[n, c]
        d = v - v.mean()
        if normalize_variance:
            d = d / (np.sqrt((d ** 2).mean()) + eps)
        y[n, c] = d
    return y


MVN_CASES = [(True, False, None), (False, False, None), (True, True, None), (False, True, None),
             (True, False, 0.5)]


@pytest.mark.parametrize("nv,across,eps", MVN_CASES)
def test_mvn_gradient_and_forward(nv, across, eps):
    text = 'type: "MVN" mvn_param { normalize_variance: %s across_channels: %s %s }' % (
        str(nv).lower(), str(across).lower(), "" if eps is None else "eps: %g" % eps)
    layer = make_layer(text)
    bottom, top = gaussian_blobs([(2, 3, 2, 3)]), empty_tops(1)
    c = GradientChecker(1e-2, 1e-3)   # exact gradient, even with a large eps
    c.check_gradient_exhaustive(layer, bottom, top)
    layer.forward(bottom, top)
    e = float(np.float32(1e-9 if eps is None else eps))
    want = mvn_reference(bottom[0].data, nv, across, e)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-12)


def test_mvn_legacy_4d_top_and_errors():
    layer = make_layer('type: "MVN"')
    bottom, top = gaussian_blobs([(3, 5)]), empty_tops(1)
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    assert top[0].shape == (3, 5, 1, 1)                 # Caffe's Reshape(num, channels, h, w)
    np.testing.assert_allclose(top[0].data.reshape(3, 5), 0.0)   # one value per (n, c): 0
    layer = make_layer('type: "MVN" mvn_param { across_channels: true }')
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    x = bottom[0].data
    want = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + float(np.float32(1e-9)))
    np.testing.assert_allclose(top[0].data.reshape(3, 5), want, rtol=1e-12)
    with pytest.raises(ShapeError, match="> 4 axes"):
        make_layer('type: "MVN"').setup(gaussian_blobs([(2, 2, 2, 2, 2)]), empty_tops(1))


def test_mvn_constant_input_has_finite_gradient_and_in_place_matches():
    layer = make_layer('type: "MVN"')
    b = blob(np.ones((2, 2, 3, 3)))
    top = empty_tops(1)
    layer.setup([b], top)
    layer.forward([b], top)
    assert np.all(top[0].data == 0)
    top[0].diff[...] = np.random.default_rng(1).normal(size=(2, 2, 3, 3))
    layer.backward(top, [True], [b])
    assert np.all(np.isfinite(b.diff))

    x = gaussian_blobs([(2, 3, 2, 3)])[0].data.copy()
    dy = np.random.default_rng(2).normal(size=x.shape)
    res = []
    for in_place in (False, True):
        layer = make_layer('type: "MVN"')
        b = blob(x)
        top = [b] if in_place else empty_tops(1)
        layer.setup([b], top)
        layer.forward([b], top)
        y = top[0].data.copy()
        top[0].diff[...] = dy
        layer.backward(top, [True], [b])
        res.append((y, b.diff.copy()))
    np.testing.assert_allclose(res[1][0], res[0][0], rtol=1e-14)
    np.testing.assert_allclose(res[1][1], res[0][1], rtol=1e-12, atol=1e-14)
