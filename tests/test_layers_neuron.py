"""Neuron layers: gradient checks (float64, Caffe's tolerances), forward values against NumPy
written from the formulas, in-place use, Dropout statistics and phases, edge cases."""
import math

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import backend
from minicaffe.blob import Blob
from minicaffe.errors import CaffeError, ShapeError
from minicaffe.gradcheck import GradientChecker, empty_tops, gaussian_blobs, make_layer
from minicaffe.layer import layer_class

SHAPE = (2, 3, 4, 5)


def bottom_for(kind, shape=SHAPE, dtype=np.float64):
    """Gaussian bottoms (seed 1701), made positive where the layer's domain needs it."""
    b = gaussian_blobs([shape], dtype=dtype)[0]
    if kind == "positive":       # Log, Power with fractional power: shift + scale·x > 0
        b.data[...] = np.abs(b.data) + 0.5
    return b


# (prototxt, bottom kind, GradientChecker args): Caffe's settings, kink at 0 where the
# function has one.
KINK0 = (1e-2, 1e-3, 1701, 0.0, 0.01)
GRAD_CASES = {
    "relu": ('type: "ReLU"', "gauss", KINK0),
    "relu_leaky": ('type: "ReLU" relu_param { negative_slope: 0.01 }', "gauss", KINK0),
    "elu": ('type: "ELU" elu_param { alpha: 0.5 }', "gauss", KINK0),
    "elu_default": ('type: "ELU"', "gauss", KINK0),
    "sigmoid": ('type: "Sigmoid"', "gauss", (1e-2, 1e-3, 1701, 0.0, 0.01)),
    "tanh": ('type: "TanH"', "gauss", (1e-2, 1e-3)),
    "absval": ('type: "AbsVal"', "gauss", KINK0),
    "power": ('type: "Power" power_param { power: 0.37 scale: 0.83 shift: 2.4 }', "positive",
              (1e-2, 1e-2)),
    "power_neg_shift": ('type: "Power" power_param { power: 0.37 scale: 0.83 shift: -0.2 }',
                        "positive", (1e-3, 1e-2)),
    "power_0": ('type: "Power" power_param { power: 0 scale: 0.83 shift: -2.4 }', "gauss",
                (1e-2, 1e-3)),
    "power_1": ('type: "Power" power_param { power: 1 scale: 0.83 shift: -2.4 }', "gauss",
                (1e-2, 1e-3)),
    "power_2": ('type: "Power" power_param { power: 2 scale: 0.34 shift: -2.4 }', "gauss",
                (1e-2, 1e-3)),
    "power_2_noshift": ('type: "Power" power_param { power: 2 scale: 0.5 }', "gauss",
                        (1e-2, 1e-3)),
    "power_3_noshift": ('type: "Power" power_param { power: 3 scale: -0.7 }', "gauss",
                        (1e-2, 1e-3)),
    "power_scale0": ('type: "Power" power_param { power: 0.37 scale: 0 shift: 1.5 }', "gauss",
                     (1e-2, 1e-3)),
    "exp": ('type: "Exp"', "gauss", (1e-2, 1e-3)),
    "exp_base2": ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 1 }', "gauss",
                  (1e-2, 1e-3)),
    "exp_e_shift": ('type: "Exp" exp_param { scale: -0.8 shift: 0.3 }', "gauss", (1e-2, 1e-3)),
    "log": ('type: "Log"', "positive", (1e-2, 1e-2)),
    "log_base2": ('type: "Log" log_param { base: 2 scale: 0.5 shift: 3 }', "gauss",
                  (1e-2, 1e-2)),
    "bnll": ('type: "BNLL"', "gauss", (1e-2, 1e-3)),
    "dropout": ('type: "Dropout"', "gauss", (1e-2, 1e-3)),
    "dropout_03": ('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', "gauss",
                   (1e-2, 1e-3)),
    "swish": ('type: "Swish"', "gauss", (1e-2, 1e-3)),
    "swish_beta": ('type: "Swish" swish_param { beta: 1.5 }', "gauss", (1e-2, 1e-3)),
    "clip": ('type: "Clip" clip_param { min: -1 max: 2 }', "gauss", (1e-2, 1e-3)),
}


def _clip_safe(bottom):
    """Keep inputs away from Clip's corners (±0.02), where finite differences straddle them."""
    d = bottom.data
    for c in (-1.0, 2.0):
        near = np.abs(d - c) < 0.02
        d[near] = c + 0.05


@pytest.mark.parametrize("case", sorted(GRAD_CASES))
def test_gradient_eltwise(case):
    text, kind, args = GRAD_CASES[case]
    layer = make_layer(text, phase=caffe.TRAIN)
    bottom = bottom_for(kind)
    if case == "clip":
        _clip_safe(bottom)
    c = GradientChecker(*args)
    c.check_gradient_eltwise(layer, [bottom], empty_tops(1))
    assert c.checked > 100


@pytest.mark.parametrize("shared", [False, True])
def test_prelu_gradient(shared):
    layer = make_layer('type: "PReLU" prelu_param { channel_shared: %s filler { type: "gaussian" '
                       '} }' % ("true" if shared else "false"))
    bottom = gaussian_blobs([(2, 3, 2, 3)])
    c = GradientChecker(1e-2, 1e-3, 1701, 0.0, 0.01)
    c.check_gradient_exhaustive(layer, bottom, empty_tops(1))
    assert layer.blobs[0].shape == (() if shared else (3,))
    assert c.checked > 0


# --- forward values against NumPy written from the formulas ------------------------------------

def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def f32(v):
    """A prototxt float as the layer sees it (FloatField: float32, as Caffe's ``float``)."""
    return float(np.float32(v))


REFERENCES = {
    "ReLU": ('type: "ReLU" relu_param { negative_slope: 0.1 }',
             lambda x: np.maximum(x, 0) + f32(0.1) * np.minimum(x, 0)),
    "ELU": ('type: "ELU" elu_param { alpha: 0.7 }',
            lambda x: np.where(x > 0, x, f32(0.7) * (np.exp(x) - 1))),
    "Sigmoid": ('type: "Sigmoid"', sigmoid),
    "TanH": ('type: "TanH"', lambda x: (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x))),
    "AbsVal": ('type: "AbsVal"', np.abs),
    "Power": ('type: "Power" power_param { power: 0.37 scale: 0.83 shift: 2.4 }',
              lambda x: (f32(2.4) + f32(0.83) * x) ** f32(0.37)),
    "Power2": ('type: "Power" power_param { power: 2 scale: -0.5 shift: 1 }',
               lambda x: (1 - 0.5 * x) ** 2),
    "Exp": ('type: "Exp" exp_param { base: 3 scale: 0.5 shift: -1 }',
            lambda x: 3.0 ** (-1 + 0.5 * x)),
    "ExpE": ('type: "Exp" exp_param { scale: 2 shift: 0.5 }', lambda x: np.exp(0.5 + 2 * x)),
    "Log": ('type: "Log" log_param { base: 10 scale: 2 shift: 5 }',
            lambda x: np.log(5 + 2 * x) / np.log(10)),
    "LogE": ('type: "Log" log_param { scale: 2 shift: 5 }', lambda x: np.log(5 + 2 * x)),
    "BNLL": ('type: "BNLL"', lambda x: np.log(1 + np.exp(x))),
    "Threshold": ('type: "Threshold" threshold_param { threshold: 0.25 }',
                  lambda x: (x > 0.25).astype(float)),
    "Swish": ('type: "Swish" swish_param { beta: 2 }', lambda x: x * sigmoid(2 * x)),
    "Clip": ('type: "Clip" clip_param { min: -0.5 max: 0.75 }',
             lambda x: np.array([max(-0.5, min(v, 0.75)) for v in x.ravel()]).reshape(x.shape)),
    "PReLU": ('type: "PReLU"', lambda x: np.where(x > 0, x, 0.25 * x)),
    "DropoutTest": ('type: "Dropout" phase: TEST', lambda x: x),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forward_matches_formula(name, dtype):
    text, ref = REFERENCES[name]
    layer = make_layer(text)
    bottom = gaussian_blobs([SHAPE], dtype=dtype)
    top = empty_tops(1, dtype)
    layer.setup(bottom, top)
    with np.errstate(invalid="ignore"):   # Log/Power of a negative base: NaN, as in Caffe
        layer.forward(bottom, top)
    x = bottom[0].data.astype(np.float64)
    assert top[0].shape == SHAPE and top[0].dtype == dtype
    with np.errstate(invalid="ignore"):
        want = ref(x)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(top[0].data, want, rtol=tol, atol=tol, equal_nan=True)


def test_prelu_per_channel_slopes_forward_backward():
    layer = make_layer('type: "PReLU"')
    bottom, top = gaussian_blobs([(2, 3, 2, 2)]), empty_tops(1)
    layer.setup(bottom, top)
    assert np.all(layer.blobs[0].data == 0.25)
    layer.blobs[0].data[...] = [0.1, -0.2, 0.5]
    layer.forward(bottom, top)
    x = bottom[0].data
    want = np.empty_like(x)
    for n in range(2):
        for c in range(3):
            a = layer.blobs[0].data[c]
            want[n, c] = np.where(x[n, c] > 0, x[n, c], a * x[n, c])
    np.testing.assert_allclose(top[0].data, want, rtol=1e-14)
    top[0].diff[...] = 1.0
    layer.blobs[0].diff[...] = 1.0          # slope diffs accumulate
    layer.backward(top, [True], bottom)
    da = [1.0 + x[:, c][x[:, c] <= 0].sum() for c in range(3)]
    np.testing.assert_allclose(layer.blobs[0].diff, da, rtol=1e-12)


def test_prelu_rejects_1d_bottom():
    layer = make_layer('type: "PReLU"')
    with pytest.raises(ShapeError, match=">= 2 axes"):
        layer.setup(gaussian_blobs([(4,)]), empty_tops(1))


# --- in place: top is the bottom blob ---------------------------------------------------------

IN_PLACE = ["relu", "relu_leaky", "elu", "sigmoid", "tanh", "power", "power_2", "power_1",
            "exp_base2", "log_base2", "bnll", "dropout", "swish", "clip"]


def _run(text, x, dy, in_place, phase=caffe.TRAIN):
    layer = make_layer(text, phase=phase)
    b = Blob(x.shape, np.float64)
    b.data[...] = x
    if in_place:
        top = [b]
    else:
        top = empty_tops(1)
    layer.setup([b], top)
    backend.set_random_seed(5)
    layer.forward([b], top)
    y = top[0].data.copy()
    top[0].diff[...] = dy
    layer.backward(top, [True], [b])
    pdiff = [p.diff.copy() for p in layer.blobs]
    return y, b.diff.copy(), pdiff


@pytest.mark.parametrize("case", IN_PLACE + ["prelu", "elu_negative_alpha"])
def test_in_place_matches_out_of_place(case):
    if case == "prelu":
        text, kind = 'type: "PReLU" prelu_param { filler { type: "gaussian" } }', "gauss"
    elif case == "elu_negative_alpha":
        text, kind = 'type: "ELU" elu_param { alpha: -0.5 }', "gauss"
    else:
        text, kind = GRAD_CASES[case][:2]
    x = bottom_for(kind).data.copy()
    dy = np.random.default_rng(3).normal(size=x.shape)
    backend.set_random_seed(9)
    y0, dx0, p0 = _run(text, x, dy, in_place=False)
    backend.set_random_seed(9)
    y1, dx1, p1 = _run(text, x, dy, in_place=True)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-13, atol=1e-300)
    for a, b in zip(p0, p1):
        np.testing.assert_allclose(b, a, rtol=1e-13)


def test_dropout_test_phase_in_place_is_identity():
    x = gaussian_blobs([SHAPE])[0].data.copy()
    y, dx, _ = _run('type: "Dropout"', x, 2 * x, in_place=True, phase=caffe.TEST)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(dx, 2 * x)


def test_absval_refuses_in_place():
    layer = make_layer('type: "AbsVal"')
    b = gaussian_blobs([SHAPE])
    with pytest.raises(CaffeError, match="does not allow in-place"):
        layer.setup(b, b)


# --- Dropout --------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.5, 0.2, 0.8])
def test_dropout_train_statistics(ratio):
    layer = make_layer('type: "Dropout" dropout_param { dropout_ratio: %g }' % ratio,
                       phase=caffe.TRAIN)
    bottom = [Blob((100, 1000), np.float32)]
    bottom[0].data[...] = 1.0 + np.random.default_rng(0).random((100, 1000))
    top = empty_tops(1, np.float32)
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    y, x = top[0].data, bottom[0].data
    kept = y != 0
    frac = kept.mean()
    assert abs(frac - (1 - ratio)) < 4 * math.sqrt(ratio * (1 - ratio) / kept.size)
    np.testing.assert_allclose(y[kept], x[kept] / (1 - ratio), rtol=1e-6)
    top[0].diff[...] = 3.0
    layer.backward(top, [True], bottom)
    dx = bottom[0].diff
    np.testing.assert_allclose(dx[kept], 3.0 / (1 - ratio), rtol=1e-6)
    assert np.all(dx[~kept] == 0)
    # a new forward draws a new mask; the same seed repeats it
    first = kept.copy()
    layer.forward(bottom, top)
    assert not np.array_equal(top[0].data != 0, first)
    caffe.set_random_seed(42)
    layer.forward(bottom, top)
    m1 = top[0].data.copy()
    caffe.set_random_seed(42)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, m1)


def test_dropout_test_phase_is_copy():
    layer = make_layer('type: "Dropout" dropout_param { dropout_ratio: 0.7 }', phase=caffe.TEST)
    bottom, top = gaussian_blobs([SHAPE]), empty_tops(1)
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, bottom[0].data)
    top[0].diff[...] = np.arange(120).reshape(SHAPE)
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, top[0].diff)


def test_dropout_phase_comes_from_net():
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 50 dim: 40 } } }
    layer { name: "drop" type: "Dropout" bottom: "x" top: "x" }
    """
    x = np.ones((50, 40), np.float32)
    out = caffe.Net(text, caffe.TEST).forward(x=x)
    np.testing.assert_array_equal(out["x"], x)
    out = caffe.Net(text, caffe.TRAIN).forward(x=x)
    assert set(np.unique(out["x"])) == {0.0, 2.0}


@pytest.mark.parametrize("ratio", [1.0, -0.1])
def test_dropout_bad_ratio(ratio):
    layer = make_layer('type: "Dropout" dropout_param { dropout_ratio: %g }' % ratio)
    with pytest.raises(CaffeError, match="dropout_ratio"):
        layer.setup(gaussian_blobs([SHAPE]), empty_tops(1))


# --- edge cases -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bnll_stable_at_large_inputs(dtype):
    layer = make_layer('type: "BNLL"')
    b = Blob((4,), dtype)
    b.data[...] = [100.0, -100.0, 0.0, 30.0]
    top = empty_tops(1, dtype)
    layer.setup([b], top)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow is fine
        layer.forward([b], top)
        top[0].diff[...] = 1.0
        layer.backward(top, [True], [b])
    y, dx = top[0].data, b.diff
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    np.testing.assert_allclose(y, [100.0, math.exp(-100.0), math.log(2.0), 30.0 + math.exp(-30)],
                               rtol=1e-6 if dtype == np.float32 else 1e-14,
                               atol=1e-43 if dtype == np.float32 else 0)  # float32 subnormal
    np.testing.assert_allclose(dx[[0, 2, 3]], [1.0, 0.5, 1.0], rtol=1e-6)
    if dtype == np.float64:
        np.testing.assert_allclose(dx[1], math.exp(-100.0), rtol=1e-12)
    else:
        assert 0 <= dx[1] < 1e-30


def test_threshold_has_no_gradient():
    layer = make_layer('type: "Threshold" threshold_param { threshold: -0.1 }')
    bottom, top = gaussian_blobs([SHAPE]), empty_tops(1)
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    assert set(np.unique(top[0].data)) == {0.0, 1.0}
    with pytest.raises(NotImplementedError, match="Threshold layer threshold: backward"):
        layer.backward(top, [True], bottom)
    with pytest.raises(CaffeError):
        layer.backward(top, [True], bottom)
    layer.backward(top, [False], bottom)     # nothing asked: nothing raised


def test_power_special_cases():
    x = gaussian_blobs([SHAPE])
    dy = np.random.default_rng(2).normal(size=SHAPE)
    cases = [  # (power, scale, shift, forward, dx)
        (0.0, 0.83, -2.4, np.ones(SHAPE), np.zeros(SHAPE)),
        (3.0, 0.0, -2.0, np.full(SHAPE, -8.0), np.zeros(SHAPE)),
        (0.5, 0.0, -2.0, np.full(SHAPE, np.nan), np.zeros(SHAPE)),
        (1.0, -1.5, 0.5, 0.5 - 1.5 * x[0].data, -1.5 * dy),
    ]
    for power, scale, shift, want_y, want_dx in cases:
        layer = make_layer('type: "Power" power_param { power: %g scale: %g shift: %g }'
                           % (power, scale, shift))
        top = empty_tops(1)
        layer.setup(x, top)
        with np.errstate(invalid="ignore"):
            layer.forward(x, top)
        np.testing.assert_allclose(top[0].data, want_y, rtol=1e-14, equal_nan=True)
        top[0].diff[...] = dy
        layer.backward(top, [True], x)
        np.testing.assert_allclose(x[0].diff, want_dx, rtol=1e-14)


def test_power_gradient_where_base_is_zero():
    # Caffe's y/(shift + scale·x) form gives NaN at shift + scale·x = 0; the limit is used here
    layer = make_layer('type: "Power" power_param { power: 3 scale: 2 shift: -1 }')
    b = Blob((3,), np.float64)
    b.data[...] = [0.5, 1.0, 0.0]
    top = empty_tops(1)
    layer.setup([b], top)
    layer.forward([b], top)
    top[0].diff[...] = 1.0
    layer.backward(top, [True], [b])
    np.testing.assert_allclose(b.diff, [0.0, 6.0, 6.0])


@pytest.mark.parametrize("text", ['type: "Exp" exp_param { base: -2 }',
                                  'type: "Log" log_param { base: 0 }',
                                  'type: "Log" log_param { base: 1 }'])
def test_bad_base(text):
    with pytest.raises(CaffeError, match="base"):
        make_layer(text).setup(gaussian_blobs([SHAPE]), empty_tops(1))


def test_clip_requires_min_and_max():
    with pytest.raises(CaffeError, match="clip_param.max is required"):
        make_layer('type: "Clip" clip_param { min: 0 }').setup(gaussian_blobs([SHAPE]),
                                                                 empty_tops(1))


def test_clip_gradient_passes_at_the_bounds():
    layer = make_layer('type: "Clip" clip_param { min: -1 max: 1 }')
    b = Blob((5,), np.float64)
    b.data[...] = [-2.0, -1.0, 0.0, 1.0, 2.0]
    top = empty_tops(1)
    layer.setup([b], top)
    layer.forward([b], top)
    np.testing.assert_array_equal(top[0].data, [-1, -1, 0, 1, 1])
    top[0].diff[...] = 1.0
    layer.backward(top, [True], [b])
    np.testing.assert_array_equal(b.diff, [0, 1, 1, 1, 0])


def test_propagate_down_false_leaves_bottom_diff():
    for text in ('type: "ELU"', 'type: "Sigmoid"', 'type: "Power" power_param { power: 2 }',
                 'type: "Dropout"', 'type: "BNLL"', 'type: "PReLU"'):
        layer = make_layer(text)
        bottom, top = gaussian_blobs([SHAPE]), empty_tops(1)
        layer.setup(bottom, top)
        layer.forward(bottom, top)
        bottom[0].diff[...] = 7.0
        top[0].diff[...] = 1.0
        layer.backward(top, [False], bottom)
        assert np.all(bottom[0].diff == 7.0), text


def test_v1_aliases():
    for v1, name in [("SIGMOID", "Sigmoid"), ("TANH", "TanH"), ("ABSVAL", "AbsVal"),
                     ("POWER", "Power"), ("EXP", "Exp"), ("BNLL", "BNLL"),
                     ("THRESHOLD", "Threshold"), ("DROPOUT", "Dropout"), ("RELU", "ReLU")]:
        assert layer_class(v1) is layer_class(name)
        assert layer_class(v1).type == name
    for name in ("PReLU", "ELU", "Log", "Swish", "Clip"):
        assert layer_class(name).type == name
