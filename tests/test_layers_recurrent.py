"""RNN, LSTM, LSTMUnit: NumPy references in Caffe's parameter layout, Caffe's test_lstm_layer /
test_rnn_layer checks (full sequence = one step at a time), finite differences, errors, and a
net that trains, saves a .caffemodel and loads it again."""
import numpy as np
import pytest
from google.protobuf import text_format

import minicaffe as caffe
from minicaffe.blob import Blob
from minicaffe.errors import CaffeError, NetError, ShapeError
from minicaffe.gradcheck import GradientChecker, empty_tops, make_layer
from minicaffe.proto import caffe_pb2

H = 3
FILLERS = 'weight_filler { type: "gaussian" std: 0.2 } bias_filler { type: "gaussian" std: 0.1 }'


def spec(kind, expose=False, num_output=H):
    return ('type: "%s" recurrent_param { num_output: %d %s %s }'
            % (kind, num_output, "expose_hidden: true" if expose else "", FILLERS))


def blob(a):
    a = np.asarray(a, np.float64)
    b = Blob(a.shape, np.float64)
    b.data[...] = a
    return b


def run(layer, bottom, n_tops):
    top = empty_tops(n_tops)
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return top


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def ref_lstm(x, cont, w_xc, b_c, w_hc, w_static=None, x_static=None, h0=None, c0=None):
    """Caffe's unrolled LSTM, straight from lstm_layer.cpp / lstm_unit_layer.cpp: gates
    (i, f, o, g) = W_xc x_t + b_c [+ W_xc_static x_static] + W_hc (cont_t h_{t-1})."""
    T, N = cont.shape
    hid = w_hc.shape[1]
    h = np.zeros((N, hid)) if h0 is None else h0.reshape(N, hid)
    c = np.zeros((N, hid)) if c0 is None else c0.reshape(N, hid)
    out = []
    for t in range(T):
        g = x[t].reshape(N, -1) @ w_xc.T + b_c + (cont[t][:, None] * h) @ w_hc.T
        if w_static is not None:
            g = g + x_static.reshape(N, -1) @ w_static.T
        i, f, o, gg = (g[:, k * hid:(k + 1) * hid] for k in range(4))
        f = np.where(cont[t][:, None] == 0, 0.0, cont[t][:, None] * sigmoid(f))
        c = f * c + sigmoid(i) * np.tanh(gg)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.array(out), h, c


def ref_rnn(x, cont, w_xh, b_h, w_hh, w_ho, b_o, w_static=None, x_static=None, h0=None):
    T, N = cont.shape
    h = np.zeros((N, w_hh.shape[0])) if h0 is None else h0.reshape(N, -1)
    out = []
    for t in range(T):
        a = x[t].reshape(N, -1) @ w_xh.T + b_h + (cont[t][:, None] * h) @ w_hh.T
        if w_static is not None:
            a = a + x_static.reshape(N, -1) @ w_static.T
        h = np.tanh(a)
        out.append(np.tanh(h @ w_ho.T + b_o))
    return np.array(out), h


def _cont(T, N, zeros=((0, None),)):
    c = np.ones((T, N))
    for t, n in zeros:
        c[t, slice(None) if n is None else n] = 0
    return c


RNG = np.random.default_rng(5)
X = RNG.uniform(-1, 1, (4, 2, 2, 2))     # T = 4, N = 2, K = 4
XS = RNG.uniform(-1, 1, (2, 3))         # x_static, K_static = 3
CONT = _cont(4, 2, ((0, None), (2, 1)))  # starts at t = 0; stream 1 starts again at t = 2


# --- parameters: Caffe's order and shapes ------------------------------------------------------

def test_param_layout_is_caffes():
    lstm = make_layer(spec("LSTM"))
    run(lstm, [blob(X), blob(CONT)], 1)
    assert [b.shape for b in lstm.blobs] == [(12, 4), (12,), (12, 3)]   # W_xc, b_c, W_hc
    lstm = make_layer(spec("LSTM"))
    run(lstm, [blob(X), blob(CONT), blob(XS)], 1)
    assert [b.shape for b in lstm.blobs] == [(12, 4), (12,), (12, 3), (12, 3)]  # + W_xc_static
    rnn = make_layer(spec("RNN"))
    top = run(rnn, [blob(X), blob(CONT), blob(XS)], 1)
    # W_xh, b_h, W_xh_static, W_hh, W_ho, b_o
    assert [b.shape for b in rnn.blobs] == [(3, 4), (3,), (3, 3), (3, 3), (3, 3), (3,)]
    assert top[0].shape == (4, 2, 3)


# --- forward values against the NumPy references -------------------------------------------------

@pytest.mark.parametrize("static", [False, True])
def test_lstm_forward_matches_reference(static):
    layer = make_layer(spec("LSTM"))
    bottom = [blob(X), blob(CONT)] + ([blob(XS)] if static else [])
    top = run(layer, bottom, 1)
    p = [b.data for b in layer.blobs]
    kw = dict(w_static=p[2], x_static=XS) if static else {}
    ref, h_t, c_t = ref_lstm(X, CONT, p[0], p[1], p[-1], **kw)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-12)
    # without exposed states the next forward starts from h_T, c_T (RecurrentLayer::Forward)
    cont = np.ones((4, 2))
    layer.forward(bottom[:1] + [blob(cont)] + bottom[2:], top)
    ref2, _, _ = ref_lstm(X, cont, p[0], p[1], p[-1], h0=h_t, c0=c_t, **kw)
    np.testing.assert_allclose(top[0].data, ref2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("static", [False, True])
def test_rnn_forward_matches_reference(static):
    layer = make_layer(spec("RNN"))
    bottom = [blob(X), blob(CONT)] + ([blob(XS)] if static else [])
    top = run(layer, bottom, 1)
    p = [b.data for b in layer.blobs]
    kw = dict(w_static=p[2], x_static=XS) if static else {}
    ref, h_t = ref_rnn(X, CONT, p[0], p[1], *p[-3:], **kw)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-12)
    cont = np.ones((4, 2))
    layer.forward(bottom[:1] + [blob(cont)] + bottom[2:], top)
    ref2, _ = ref_rnn(X, cont, p[0], p[1], *p[-3:], h0=h_t, **kw)
    np.testing.assert_allclose(top[0].data, ref2, rtol=1e-12, atol=1e-12)


def test_exposed_states_are_inputs_and_outputs():
    h0, c0 = RNG.normal(size=(1, 2, H)), RNG.normal(size=(1, 2, H))
    layer = make_layer(spec("LSTM", expose=True))
    cont = np.ones((4, 2))
    top = run(layer, [blob(X), blob(cont), blob(XS), blob(h0), blob(c0)], 3)
    p = [b.data for b in layer.blobs]
    ref, h_t, c_t = ref_lstm(X, cont, p[0], p[1], p[3], p[2], XS, h0, c0)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(top[1].data, h_t[None], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(top[2].data, c_t[None], rtol=1e-12, atol=1e-12)
    rnn = make_layer(spec("RNN", expose=True))
    top = run(rnn, [blob(X), blob(cont), blob(h0)], 2)   # no x_static: 3 bottoms = x, cont, h_0
    p = [b.data for b in rnn.blobs]
    ref, h_t = ref_rnn(X, cont, *p, h0=h0)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(top[1].data, h_t[None], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_full_sequence_equals_one_step_at_a_time(kind):
    """Caffe's TestForward: T steps in one batch = T forwards of one step (the state carries);
    with cont 0 on every step only the first step agrees."""
    x = np.random.default_rng(1).normal(size=(3, 3, 3, 2))
    cont = _cont(3, 3)
    caffe.set_random_seed(1701)
    full = run(make_layer(spec(kind, num_output=7)), [blob(x), blob(cont)], 1)[0].data.copy()
    for zero, same in ((False, (True, True, True)), (True, (True, False, False))):
        caffe.set_random_seed(1701)
        layer = make_layer(spec(kind, num_output=7))
        top = empty_tops(1)
        bottom = [blob(x[:1]), blob(np.zeros((1, 3)))]
        layer.setup(bottom, top)
        for t in range(3):
            bottom[0].data[...] = x[t:t + 1]
            bottom[1].data[...] = 0 if zero or t == 0 else 1
            layer.forward(bottom, top)
            assert np.allclose(top[0].data[0], full[t], atol=1e-12) == same[t], t


def test_lstm_caffe_layout_by_hand():
    """Blobs set in Caffe's layout: W_xc rows are the gates i, f, o, g; check one unit by hand."""
    layer = make_layer(spec("LSTM", num_output=1))
    x = np.array([[[0.5]], [[-1.0]]])          # T = 2, N = 1, K = 1
    cont = np.array([[0.0], [1.0]])
    bottom = [blob(x), blob(cont)]
    top = empty_tops(1)
    layer.setup(bottom, top)
    wx, b, wh = np.array([[1.0], [2.0], [-1.0], [0.5]]), np.array([0.1, -0.2, 0.3, 0.0]), \
        np.array([[0.4], [-0.3], [0.2], [1.5]])
    for blob_, v in zip(layer.blobs, (wx, b, wh)):
        blob_.data[...] = v
    layer.forward(bottom, top)
    h, c = 0.0, 0.0
    for t in range(2):
        z = wx[:, 0] * x[t, 0, 0] + b + wh[:, 0] * cont[t, 0] * h
        i, f, o, g = sigmoid(z[0]), sigmoid(z[1]), sigmoid(z[2]), np.tanh(z[3])
        c = cont[t, 0] * f * c + i * g
        h = o * np.tanh(c)
        assert top[0].data[t, 0, 0] == pytest.approx(h, abs=1e-14)


# --- gradients -------------------------------------------------------------------------------------

def _bottoms(kind, static, expose):
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (2, 2, 3))
    cont = np.array([[0.0, 0.0], [1.0, 0.0]]) if not expose else np.array([[1.0, 0.0], [1.0, 1.0]])
    b = [blob(x), blob(cont)] + ([blob(rng.uniform(-1, 1, (2, 2, 2)))] if static else [])
    n = (2 if kind == "LSTM" else 1) if expose else 0
    return b + [blob(rng.uniform(-1, 1, (1, 2, H))) for _ in range(n)], n


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static,expose", [(False, False), (True, False), (True, True)])
def test_gradient(kind, static, expose):
    """Finite differences on x, x_static and the parameters. With exposed states the objective
    is the output top's alone: as in Caffe, h_T/c_T's diffs do not enter backward (next test)."""
    bottom, n = _bottoms(kind, static, expose)
    for cb in [0] + ([2] if static else []):
        layer, top = make_layer(spec(kind, expose)), empty_tops(1 + n)
        checker = GradientChecker(1e-2, 1e-3)
        if not expose:
            checker.check_gradient_exhaustive(layer, bottom, top, check_bottom=cb)
            continue
        layer.setup(bottom, top)
        layer.reshape(bottom, top)
        for j in range(top[0].count()):
            checker.check_gradient_single(layer, bottom, top, check_bottom=cb, top_id=0, top_data_id=j)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_exposed_states_get_and_give_no_gradient_as_caffe(kind):
    """Caffe's RecurrentLayer shares only the data of h_0/c_0 and h_T/c_T with the exposed
    blobs: the h_T/c_T top diffs change nothing and the h_0/c_0 bottoms get zeros."""
    bottom, n = _bottoms(kind, True, True)
    layer = make_layer(spec(kind, True))
    top = run(layer, bottom, 1 + n)
    layer.param_propagate_down = [True] * len(layer.blobs)
    rng = np.random.default_rng(5)
    top[0].diff[...] = rng.normal(size=top[0].shape)
    grads = []
    for scale in (0.0, 1.0):
        for t in top[1:]:
            t.diff[...] = scale * rng.normal(size=t.shape)
        for b in layer.blobs + bottom:
            b.diff[...] = 7.0                      # stale values: overwritten (bottoms), reset here
        for b in layer.blobs:
            b.diff[...] = 0.0
        layer.backward(top, [True, False, True] + [True] * n, bottom)
        grads.append([b.diff.copy() for b in layer.blobs + [bottom[0], bottom[2]]])
        for h in bottom[3:]:
            assert not np.any(h.diff)
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)
    assert all(np.abs(g).sum() > 0 for g in grads[0])


def test_no_gradient_to_cont_and_param_diffs_accumulate():
    layer = make_layer(spec("LSTM"))
    bottom = [blob(X), blob(CONT)]
    top = run(layer, bottom, 1)
    layer.param_propagate_down = [True] * 3
    top[0].diff[...] = 1.0
    layer.backward(top, [True, False], bottom)
    once = [b.diff.copy() for b in layer.blobs]
    layer.backward(top, [True, False], bottom)
    for b, d in zip(layer.blobs, once):
        np.testing.assert_allclose(b.diff, 2 * d)
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)
    with pytest.raises(CaffeError, match="LSTM Layer .*sequence indicators"):
        layer.backward(top, [True, True], bottom)


# --- LSTMUnit ------------------------------------------------------------------------------------

def _unit_bottoms(cont):
    rng = np.random.default_rng(2)
    return [blob(rng.uniform(-1, 1, (1, 3, H))), blob(rng.uniform(-1, 1, (1, 3, 4 * H))),
            blob(np.array([cont], np.float64))]


def test_lstm_unit_forward_matches_reference():
    bottom = _unit_bottoms([1.0, 0.0, 1.0])
    top = run(make_layer('type: "LSTMUnit"'), bottom, 2)
    c_prev, g, cont = bottom[0].data[0], bottom[1].data[0], bottom[2].data[0][:, None]
    i, f, o, gg = (g[:, k * H:(k + 1) * H] for k in range(4))
    c = cont * sigmoid(f) * c_prev + sigmoid(i) * np.tanh(gg)
    np.testing.assert_allclose(top[0].data[0], c, rtol=1e-12)
    np.testing.assert_allclose(top[1].data[0], sigmoid(o) * np.tanh(c), rtol=1e-12)


@pytest.mark.parametrize("cont", [[0.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
def test_lstm_unit_gradient(cont):
    for cb in (0, 1):
        GradientChecker(1e-2, 1e-3).check_gradient_exhaustive(
            make_layer('type: "LSTMUnit"'), _unit_bottoms(cont), empty_tops(2), check_bottom=cb)


def test_lstm_unit_errors():
    bottom = _unit_bottoms([1.0, 0.0, 1.0])
    with pytest.raises(ShapeError, match="LSTMUnit Layer .*bottom\\[1\\].*expected \\(1, 3, 12\\)"):
        run(make_layer('type: "LSTMUnit"'), bottom[:1] + [blob(np.zeros((1, 3, 5)))] + bottom[2:], 2)
    with pytest.raises(ShapeError, match="bottom\\[2\\]"):
        run(make_layer('type: "LSTMUnit"'), bottom[:2] + [blob(np.zeros((1, 2)))], 2)
    layer = make_layer('type: "LSTMUnit"')
    top = run(layer, bottom, 2)
    with pytest.raises(CaffeError, match="sequence indicators"):
        layer.backward(top, [True, True, True], bottom)


# --- errors that name the layer ---------------------------------------------------------------------

def test_errors():
    ok = [blob(X), blob(CONT)]
    with pytest.raises(CaffeError, match="LSTM Layer .*num_output must be > 0, got 0"):
        run(make_layer(spec("LSTM", num_output=0)), ok, 1)
    with pytest.raises(ShapeError, match="RNN Layer .*cont .*\\(4, 2\\), got \\(4, 3\\)"):
        run(make_layer(spec("RNN")), [blob(X), blob(np.ones((4, 3)))], 1)
    with pytest.raises(ShapeError, match="LSTM Layer .*cont .*got \\(8,\\)"):
        run(make_layer(spec("LSTM")), [blob(X), blob(np.ones(8))], 1)
    with pytest.raises(ShapeError, match="at least 2 axes"):
        run(make_layer(spec("LSTM")), [blob(np.ones(4)), blob(np.ones((4, 1)))], 1)
    with pytest.raises(ShapeError, match="x_static .*\\(2, \\.\\.\\.\\)"):
        run(make_layer(spec("LSTM")), ok + [blob(np.ones((3, 3)))], 1)
    with pytest.raises(ShapeError, match="initial state bottom\\[3\\] .*\\(1, 2, 3\\)"):
        run(make_layer(spec("LSTM", expose=True)), ok + [blob(np.ones((1, 2, 3))), blob(np.ones((1, 2, 4)))], 3)
    with pytest.raises(NetError, match="LSTM Layer .*at least 4 bottom"):
        run(make_layer(spec("LSTM", expose=True)), ok, 3)
    with pytest.raises(NetError, match="RNN Layer .*produces 2 top"):
        run(make_layer(spec("RNN", expose=True)), ok + [blob(np.ones((1, 2, 3)))], 1)
    layer = make_layer(spec("LSTM"))
    top = run(layer, ok, 1)
    with pytest.raises(ShapeError, match="number of timesteps changed from 4 to 3"):
        layer.forward([blob(X[:3]), blob(CONT[:3])], top)
    # a new number of streams is fine, and starts from zeros
    layer.forward([blob(X[:, :1]), blob(CONT[:, :1])], top)
    assert top[0].shape == (4, 1, H)


# --- in a net: train, save, load ------------------------------------------------------------------

NET = """
name: "seq"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 3 dim: 2 dim: 4 } } }
layer { name: "cont" type: "Input" top: "cont" input_param { shape { dim: 3 dim: 2 } } }
layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 3 dim: 2 dim: 2 } } }
layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
        recurrent_param { num_output: 5 weight_filler { type: "uniform" min: -0.3 max: 0.3 }
                          bias_filler { type: "constant" value: 0.1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "h" top: "y"
        inner_product_param { num_output: 2 axis: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "target" top: "loss" }
"""


def _feed(net):
    rng = np.random.default_rng(9)
    net.blobs["x"].data[...] = rng.normal(size=(3, 2, 4))
    net.blobs["cont"].data[...] = _cont(3, 2)
    net.blobs["target"].data[...] = rng.normal(size=(3, 2, 2))


def test_net_trains_saves_and_loads(tmp_path):
    p = caffe_pb2.SolverParameter()
    text_format.Merge('base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 max_iter: 3', p)
    text_format.Merge(NET, p.net_param)
    p.random_seed = 3
    solver = caffe.get_solver(p)
    _feed(solver.net)
    before = [b.data.copy() for b in solver.net.params["lstm"]]
    solver.step(3)
    after = solver.net.params["lstm"]
    assert [b.shape for b in after] == [(20, 4), (20,), (20, 5)]
    assert all(not np.array_equal(a, b.data) for a, b in zip(before, after))
    path = str(tmp_path / "lstm.caffemodel")
    solver.net.save(path)
    saved = caffe_pb2.NetParameter()
    saved.ParseFromString(open(path, "rb").read())
    lstm = [lay for lay in saved.layer if lay.name == "lstm"][0]
    assert [tuple(b.shape.dim) for b in lstm.blobs] == [(20, 4), (20,), (20, 5)]
    net = caffe.Net(NET, caffe.TEST, weights=path)
    _feed(net)
    solver.net.forward()
    net.forward()
    np.testing.assert_array_equal(net.blobs["h"].data, solver.net.blobs["h"].data)
    np.testing.assert_array_equal(net.blobs["y"].data, solver.net.blobs["y"].data)
    # a model file written in Caffe's layout by hand (as Caffe would save it) loads too
    rng = np.random.default_rng(4)
    hand = caffe_pb2.NetParameter()
    layer = hand.layer.add(name="lstm", type="LSTM")
    arrays = [rng.normal(size=s) * 0.3 for s in [(20, 4), (20,), (20, 5)]]
    for a in arrays:
        bp = layer.blobs.add()
        bp.shape.dim.extend(a.shape)
        bp.data.extend(a.ravel().astype(np.float32))
    hand_path = str(tmp_path / "hand.caffemodel")
    with open(hand_path, "wb") as f:
        f.write(hand.SerializeToString())
    net.copy_from(hand_path)
    net.forward()
    w = [a.astype(np.float32).astype(np.float64) for a in arrays]
    ref, _, _ = ref_lstm(net.blobs["x"].data.astype(np.float64), _cont(3, 2), w[0], w[1], w[2])
    np.testing.assert_allclose(net.blobs["h"].data, ref, rtol=1e-5, atol=1e-6)


EXPOSED_NET = """
name: "exposed"
force_backward: true
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 } } }
layer { name: "cont" type: "Input" top: "cont" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "h0" type: "Input" top: "h0" input_param { shape { dim: 1 dim: 3 dim: 5 } } }
layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 2 dim: 3 dim: 5 } } }
layer { name: "rnn" type: "RNN" bottom: "x" bottom: "cont" bottom: "h0" top: "o" top: "hT"
        recurrent_param { num_output: 5 expose_hidden: true weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "o" bottom: "target" top: "loss" }
"""


def test_exposed_states_in_a_net():
    """h_0 in, h_T out as extra blobs of a net; force_backward gives x its diff, h_0 a zero one
    (Caffe shares only the states' data) and never touches cont (allow_force_backward)."""
    net = caffe.Net(EXPOSED_NET, caffe.TRAIN)
    rng = np.random.default_rng(0)
    for name in ("x", "h0", "target"):
        net.blobs[name].data[...] = rng.normal(size=net.blobs[name].shape)
    net.blobs["cont"].data[...] = 1
    net.forward()
    p = [b.data.astype(np.float64) for b in net.params["rnn"]]
    ref, h_t = ref_rnn(net.blobs["x"].data, np.ones((2, 3)), *p, h0=net.blobs["h0"].data)
    np.testing.assert_allclose(net.blobs["o"].data, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.blobs["hT"].data[0], h_t, rtol=1e-5, atol=1e-6)
    net.backward()
    assert np.abs(net.blobs["x"].diff).sum() > 0 and not np.any(net.blobs["h0"].diff)   # as Caffe
    assert not np.any(net.blobs["cont"].diff)
