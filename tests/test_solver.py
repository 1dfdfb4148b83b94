"""Solvers against hand computations, lr policies, iter_size, snapshots, determinism, tests."""
import math
import os

import numpy as np
import pytest
from google.protobuf import text_format

import minicaffe as caffe
from minicaffe.proto import caffe_pb2
from minicaffe.solver.lr_policy import learning_rate

X = np.array([[1.0, -2.0, 0.5], [0.3, 0.7, -1.1]], np.float32)

# loss = Σ y with y = xWᵀ + b: dW = 1·Σ_m x_m (each row), db = M. Weights start from a seeded
# gaussian, so W changes deterministically and the histories can be computed by hand.
LINEAR = """
name: "linear"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" loss_weight: 1
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.3 }
                              bias_filler { type: "constant" value: 0.5 } } }
"""


def make_solver(extra, net=LINEAR, cls=caffe.get_solver):
    p = caffe_pb2.SolverParameter()
    text_format.Merge(extra, p)
    text_format.Merge(net, p.net_param)
    p.random_seed = 3
    s = cls(p)
    if s.net.blobs["x"].shape == X.shape:
        s.net.blobs["x"].data[...] = X
    return s


def grads(w):
    gw = np.tile(X.sum(0), (2, 1)).astype(np.float64)
    gb = np.full(2, 2.0)
    return gw, gb


def run_reference(rule, p, w0, b0, steps, lr_at):
    w, b = w0.astype(np.float64), b0.astype(np.float64)
    hist = {k: [np.zeros_like(w), np.zeros_like(b)] for k in ("h", "v")}
    for it in range(steps):
        lr = lr_at(it)
        gw, gb = grads(w)
        gw = gw + p["wd"] * w          # decay_mult 1 on W, 0 on b
        for idx, (g, lrm) in enumerate(((gw, 1.0), (gb, 2.0))):
            step = rule(g, hist, idx, lr * lrm, it + 1)
            if idx == 0:
                w = w - step
            else:
                b = b - step
    return w, b


def sgd_ref(mu):
    def rule(g, hist, i, lr, t):
        hist["h"][i] = mu * hist["h"][i] + lr * g
        return hist["h"][i]
    return rule


def nesterov_ref(mu):
    def rule(g, hist, i, lr, t):
        old = hist["h"][i]
        hist["h"][i] = mu * old + lr * g
        return (1 + mu) * hist["h"][i] - mu * old
    return rule


def adagrad_ref(delta):
    def rule(g, hist, i, lr, t):
        hist["h"][i] = hist["h"][i] + g * g
        return lr * g / (np.sqrt(hist["h"][i]) + delta)
    return rule


def rmsprop_ref(decay, delta):
    def rule(g, hist, i, lr, t):
        hist["h"][i] = decay * hist["h"][i] + (1 - decay) * g * g
        return lr * g / (np.sqrt(hist["h"][i]) + delta)
    return rule


def adadelta_ref(mu, delta):
    def rule(g, hist, i, lr, t):
        hist["h"][i] = mu * hist["h"][i] + (1 - mu) * g * g
        u = g * np.sqrt((hist["v"][i] + delta) / (hist["h"][i] + delta))
        hist["v"][i] = mu * hist["v"][i] + (1 - mu) * u * u
        return lr * u
    return rule


def adam_ref(b1, b2, eps):
    def rule(g, hist, i, lr, t):
        hist["h"][i] = b1 * hist["h"][i] + (1 - b1) * g
        hist["v"][i] = b2 * hist["v"][i] + (1 - b2) * g * g
        return lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * hist["h"][i] / (np.sqrt(hist["v"][i]) + eps)
    return rule


CASES = [
    ('type: "SGD" momentum: 0.9', sgd_ref(0.9)),
    ('type: "Nesterov" momentum: 0.9', nesterov_ref(0.9)),
    ('type: "AdaGrad" delta: 1e-8', adagrad_ref(1e-8)),
    ('type: "RMSProp" rms_decay: 0.98 delta: 1e-8', rmsprop_ref(0.98, 1e-8)),
    ('type: "AdaDelta" momentum: 0.95 delta: 1e-6', adadelta_ref(0.95, 1e-6)),
    ('type: "Adam" momentum: 0.9 momentum2: 0.999 delta: 1e-8', adam_ref(0.9, 0.999, 1e-8)),
]


@pytest.mark.parametrize("spec,rule", CASES, ids=[c[0].split('"')[1] for c in CASES])
def test_update_rules_match_hand_computation(spec, rule):
    s = make_solver(spec + ' base_lr: 0.01 lr_policy: "fixed" weight_decay: 0.1 max_iter: 4')
    w0 = s.net.params["ip"][0].data.copy()
    b0 = s.net.params["ip"][1].data.copy()
    s.step(4)
    w, b = run_reference(rule, {"wd": 0.1}, w0, b0, 4, lambda it: 0.01)
    assert s.iter == 4
    assert np.allclose(s.net.params["ip"][0].data, w, rtol=1e-4, atol=1e-6)
    assert np.allclose(s.net.params["ip"][1].data, b, rtol=1e-4, atol=1e-6)
    assert not np.allclose(w, w0)


def test_l1_regularisation_and_lr_mult():
    s = make_solver('base_lr: 0.1 lr_policy: "fixed" weight_decay: 0.5 regularization_type: "L1"')
    w0 = s.net.params["ip"][0].data.copy()
    s.step(1)
    gw, _ = grads(w0)
    assert np.allclose(s.net.params["ip"][0].data, w0 - 0.1 * (gw + 0.5 * np.sign(w0)), atol=1e-6)
    assert np.allclose(s.net.params["ip"][1].data, 0.5 - 0.1 * 2 * 2.0)


def test_clip_gradients_before_normalisation():
    s = make_solver('base_lr: 1 lr_policy: "fixed" clip_gradients: 1 iter_size: 2')
    w0 = s.net.params["ip"][0].data.copy()
    s.step(1)
    gw, gb = grads(w0)
    gw, gb = 2 * gw, 2 * gb                    # two accumulated passes
    norm = np.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    scale = 1.0 / norm / 2                     # clip to 1, then divide by iter_size
    assert np.allclose(s.net.params["ip"][0].data, w0 - gw * scale, atol=1e-6)


def test_iter_size_equals_bigger_batch():
    net2 = LINEAR.replace("dim: 2 dim: 3", "dim: 4 dim: 3")
    a = make_solver('base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 iter_size: 2')
    b = make_solver('base_lr: 0.05 lr_policy: "fixed" momentum: 0.9', net=net2)  # Σ over 4 rows = 2× the gradient
    b.net.blobs["x"].data[...] = np.vstack([X, X])
    b.net.params["ip"][0].data[...] = a.net.params["ip"][0].data
    b.net.params["ip"][1].data[...] = a.net.params["ip"][1].data
    a.step(3)
    b.step(3)
    assert np.allclose(a.net.params["ip"][0].data, b.net.params["ip"][0].data, atol=1e-6)


class P:
    def __init__(self, **kw):
        self.__dict__.update(dict(base_lr=0.1, gamma=0.5, power=2.0, stepsize=10,
                                  max_iter=100, stepvalue=[3, 5, 20]), **kw)


@pytest.mark.parametrize("policy,it,expected", [
    ("fixed", 50, 0.1),
    ("step", 25, 0.1 * 0.5 ** 2),
    ("exp", 3, 0.1 * 0.5 ** 3),
    ("inv", 4, 0.1 * (1 + 0.5 * 4) ** -2.0),
    ("poly", 50, 0.1 * (1 - 0.5) ** 2),
    ("sigmoid", 12, 0.1 / (1 + math.exp(-0.5 * 2))),
])
def test_lr_policies(policy, it, expected):
    rate, _ = learning_rate(P(lr_policy=policy), it, 0)
    assert np.isclose(rate, expected)


def test_multistep_advances_one_step_per_call():
    p = P(lr_policy="multistep")
    step = 0
    rates = []
    for it in [0, 2, 10, 11, 12, 25]:
        r, step = learning_rate(p, it, step)
        rates.append(r)
    # at it=10 both stepvalues 3 and 5 are passed, but only one step is taken per call
    assert np.allclose(rates, [0.1, 0.1, 0.05, 0.025, 0.025, 0.0125])


def test_missing_or_unknown_policy_and_type():
    with pytest.raises(caffe.CaffeError, match="Unknown learning rate policy"):
        make_solver("base_lr: 0.1")
    with pytest.raises(caffe.CaffeError, match="Unknown learning rate policy: 'cosine'"):
        make_solver('base_lr: 0.1 lr_policy: "cosine"')
    with pytest.raises(caffe.CaffeError, match="Unknown solver type: 'Lion'"):
        make_solver('base_lr: 0.1 lr_policy: "fixed" type: "Lion"')
    with pytest.raises(caffe.CaffeError, match="Momentum cannot be used with AdaGrad"):
        make_solver('base_lr: 0.1 lr_policy: "fixed" type: "AdaGrad" momentum: 0.9')


def test_smoothed_loss_average():
    s = make_solver('base_lr: 0.0 lr_policy: "fixed" average_loss: 3')
    losses = []
    s.add_iteration_callback(lambda sv: losses.append(sv.smoothed_loss))
    s.step(5)
    assert np.allclose(losses, losses[0])  # lr 0: constant loss, constant average
    assert np.isclose(losses[0], float(s.net.blobs["y"].data.sum()), rtol=1e-5)


NOISY = """
name: "noisy"
layer { name: "d" type: "DummyData" top: "x" dummy_data_param { shape { dim: 4 dim: 3 } data_filler { type: "gaussian" } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "y" top: "y" }
layer { name: "ip2" type: "InnerProduct" bottom: "y" top: "z" loss_weight: 1
        inner_product_param { num_output: 1 weight_filler { type: "xavier" } } }
"""


def _noisy_solver(tmp_path, extra=""):
    p = caffe_pb2.SolverParameter()
    text_format.Merge('base_lr: 0.01 lr_policy: "step" gamma: 0.5 stepsize: 3 momentum: 0.9 '
                      'type: "Adam" random_seed: 11 max_iter: 8 snapshot_after_train: false ' + extra, p)
    text_format.Merge(NOISY, p.net_param)
    p.snapshot_prefix = str(tmp_path / "snap")
    return caffe.get_solver(p)


def test_same_seed_bit_identical(tmp_path):
    a = _noisy_solver(tmp_path)
    a.step(6)
    b = _noisy_solver(tmp_path)
    b.step(6)
    for x, y in zip(a.net.learnable_params, b.net.learnable_params):
        assert np.array_equal(x.data, y.data)


def test_snapshot_restore_reproduces_uninterrupted_run(tmp_path):
    full = _noisy_solver(tmp_path)
    full.step(8)
    part = _noisy_solver(tmp_path, "snapshot: 4")
    part.step(4)
    assert os.path.exists(str(tmp_path / "snap_iter_4.caffemodel"))
    assert os.path.exists(str(tmp_path / "snap_iter_4.solverstate"))
    caffe.set_random_seed(999)   # a fresh process would not share the generator
    resumed = _noisy_solver(tmp_path)
    resumed.restore(str(tmp_path / "snap_iter_4.solverstate"))
    assert resumed.iter == 4 and resumed.current_step == 1
    resumed.step(4)
    for x, y in zip(full.net.learnable_params, resumed.net.learnable_params):
        assert np.array_equal(x.data, y.data)


def test_solverstate_layout(tmp_path):
    s = _noisy_solver(tmp_path)
    s.step(2)
    model, state = s.snapshot()
    st = caffe_pb2.SolverState()
    st.ParseFromString(open(state, "rb").read())
    assert st.iter == 2 and st.learned_net == model
    # Adam: m for every learnable param, then v for every learnable param
    assert len(st.history) == 2 * len(s.net.learnable_params) == 8
    assert list(st.history[0].shape.dim) == [2, 3] and list(st.history[4].shape.dim) == [2, 3]
    assert np.allclose(np.array(st.history[4].data), s.history2[0].ravel())
    assert np.allclose(np.array(st.history[1].data), s.history[1].ravel())


def test_restore_rejects_other_solver_history(tmp_path):
    s = _noisy_solver(tmp_path)
    s.step(1)
    _, state = s.snapshot()
    p = caffe_pb2.SolverParameter()
    p.CopyFrom(s.param)
    p.type = "SGD"
    sgd = caffe.get_solver(p)
    with pytest.raises(caffe.ModelFileError, match="history"):
        sgd.restore(state)



def _solver_state(s):
    """Everything a restore may change, copied: weights, histories, iter, lr step, generator."""
    return ([b.data.copy() for b in s.net.learnable_params], [h.copy() for h in s.history + s.history2],
            s.iter, s.current_step, repr(caffe.backend.rng_state()))


def _assert_unchanged(s, before):
    after = _solver_state(s)
    assert all(np.array_equal(a, b) for a, b in zip(before[0], after[0]))
    assert all(np.array_equal(a, b) for a, b in zip(before[1], after[1]))
    assert before[2:] == after[2:]


def _corrupt(state, out, **fields):
    st = caffe_pb2.SolverState()
    st.ParseFromString(open(state, "rb").read())
    for k, v in fields.items():
        if k == "drop_history":
            del st.history[-1]
        else:
            setattr(st, k, v)
    open(out, "wb").write(st.SerializeToString())
    return out


@pytest.mark.parametrize("fields,message", [
    ({"minicaffe_state": b"\xff\xfe{"}, r"field 8001 \(minicaffe_state\) is not UTF-8"),
    ({"minicaffe_state": b"{not json"}, r"field 8001 \(minicaffe_state\) is not valid JSON"),
    ({"minicaffe_state": b"[1, 2]"}, r"must be a JSON object, got list"),
    ({"minicaffe_state": b'{"rng": 5}'}, r"'rng' must be a JSON object, got int"),
    ({"minicaffe_state": b'{"rng": {"bit_generator": "PCG64", "state": "x"}}'},
     r"the state for rng does not fit .*nothing was restored"),
    ({"minicaffe_state": b"[" * 100000}, r"is not valid JSON"),
    ({"iter": -5}, r"iter \(-5\) and current_step \(1\) must be >= 0"),
    ({"drop_history": True}, r"incorrect length of history blobs \(7 in the file"),
    ({"learned_net": "/nowhere/gone.caffemodel"}, r"the model it names, /nowhere/gone.caffemodel, is missing"),
])
def test_failed_restore_changes_nothing(tmp_path, fields, message):
    s = _noisy_solver(tmp_path, "snapshot: 4")
    s.step(4)
    _, state = s.last_snapshot
    bad = _corrupt(state, str(tmp_path / "bad.solverstate"), **fields)
    s.step(2)   # weights, histories, iter and the generator move on from the snapshot
    before = _solver_state(s)
    with pytest.raises(caffe.ModelFileError, match=message) as info:
        s.restore(bad)
    assert str(info.value).startswith(bad + ": ") and "\n" not in str(info.value)
    _assert_unchanged(s, before)
    s.restore(state)   # the good state still restores
    assert s.iter == 4


def test_restore_truncated_or_empty_file_changes_nothing(tmp_path):
    s = _noisy_solver(tmp_path, "snapshot: 2")
    s.step(2)
    _, state = s.last_snapshot
    data = open(state, "rb").read()
    s.step(1)
    before = _solver_state(s)
    cut = tmp_path / "cut.solverstate"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(caffe.ModelFileError, match="cut.solverstate: cannot decode %d bytes" % (len(data) // 2)):
        s.restore(str(cut))
    empty = tmp_path / "empty.solverstate"
    empty.write_bytes(b"")
    with pytest.raises(caffe.ModelFileError, match=r"empty.solverstate: the file is empty \(0 bytes\)"):
        s.restore(str(empty))
    _assert_unchanged(s, before)

def test_snapshot_schedule_and_after_train(tmp_path):
    s = _noisy_solver(tmp_path, "snapshot: 3")
    s.param.snapshot_after_train = True
    s.solve()
    files = sorted(os.listdir(str(tmp_path)))
    assert files == sorted(["snap_iter_3.caffemodel", "snap_iter_3.solverstate",
                            "snap_iter_6.caffemodel", "snap_iter_6.solverstate",
                            "snap_iter_8.caffemodel", "snap_iter_8.solverstate"])


TESTNET = """
name: "tn"
layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" loss_weight: 1
        inner_product_param { num_output: 1 weight_filler { type: "constant" value: 1 } } }
layer { name: "probe" type: "InnerProduct" bottom: "x" top: "only_test" include { phase: TEST }
        inner_product_param { num_output: 1 weight_filler { type: "constant" value: 2 } } }
"""


def test_test_nets_share_weights_and_phase(tmp_path, caplog):
    p = caffe_pb2.SolverParameter()
    text_format.Merge('base_lr: 0.1 lr_policy: "fixed" test_iter: 2 test_interval: 2 '
                      'max_iter: 2 display: 1 snapshot_after_train: false', p)
    text_format.Merge(TESTNET, p.net_param)
    s = caffe.get_solver(p)
    assert len(s.test_nets) == 1 and s.test_nets[0].phase == caffe.TEST
    assert "probe" in s.test_nets[0]._layer_names and "probe" not in s.net._layer_names
    s.net.blobs["x"].data[...] = 1
    s.test_nets[0].blobs["x"].data[...] = 1
    import logging
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        s.solve()
    # after 2 updates W = 1 - 2·0.1·2 = 0.6 and b = -0.4; the test net sees the train weights
    assert s.test_nets[0].params["ip"][0].shares_data_with(s.net.params["ip"][0])
    res = s.last_test_results[0]
    assert np.allclose(res["y"], 3 * 0.6 - 0.4, atol=1e-5)
    text = caplog.text
    assert "Iteration 0, Testing net (#0)" in text and "Iteration 2, Testing net (#0)" in text
    assert "Test net output #0: only_test = 6" in text
    assert "Test net output #2: y = 1.4 (* 1 = 1.4 loss)" in text
    assert "Optimization Done." in text and "Solving tn" in text
    assert "Iteration 1, lr = 0.1" in text


def test_test_iter_checks():
    p = caffe_pb2.SolverParameter()
    text_format.Merge('base_lr: 0.1 lr_policy: "fixed" test_iter: 2', p)
    text_format.Merge(TESTNET, p.net_param)
    with pytest.raises(caffe.CaffeError, match="test_interval"):
        caffe.get_solver(p)


def test_nan_loss_stops_with_layer_name(tmp_path):
    p = caffe_pb2.SolverParameter()
    text_format.Merge('base_lr: 1e30 lr_policy: "fixed" max_iter: 10 type: "SGD"', p)
    text_format.Merge(LINEAR.replace("std: 0.3", "std: 1e30"), p.net_param)
    p.snapshot_prefix = str(tmp_path / "nan")
    s = caffe.get_solver(p)
    s.net.blobs["x"].data[...] = X * 1e10
    with pytest.raises(caffe.solver.TrainingDiverged, match="iteration .*'ip'"):
        s.step(10)
    assert any(f.endswith(".caffemodel") for f in os.listdir(str(tmp_path)))


def test_pycaffe_solver_classes(tmp_path):
    path = tmp_path / "solver.prototxt"
    (tmp_path / "net.prototxt").write_text(LINEAR)
    path.write_text('net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\ntype: "Adam"\n')
    s = caffe.SGDSolver(str(path))       # resolved beside the solver file; type overridden
    assert s.type == "SGD" and s.param.snapshot_prefix == str(tmp_path / "solver")
    assert caffe.get_solver(str(path)).type == "Adam"
    assert caffe.AdamSolver(str(path)).type == "Adam"
    calls = []
    s.add_callback(lambda: calls.append("start"), lambda: calls.append("grad"))
    s.step(2)
    assert calls == ["start", "grad", "start", "grad"] and s.iter == 2


def test_iteration_reaches_layers():
    seen = []

    class Spy(caffe.Layer):
        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].shape)

        def forward(self, bottom, top):
            top[0].data[...] = bottom[0].data

        def backward(self, top, pd, bottom):
            bottom[0].diff[...] = top[0].diff

    import sys
    mod = type(sys)("mc_spy")
    mod.Spy = Spy
    sys.modules["mc_spy"] = mod
    try:
        net = LINEAR + """layer { name: "spy" type: "Python" bottom: "y" top: "z" python_param { module: "mc_spy" layer: "Spy" } }"""
        s = make_solver('base_lr: 0.1 lr_policy: "fixed"', net=net)
        layer = s.net.layer_dict["spy"]
        s.add_callback(on_gradients_ready=lambda: seen.append(layer.iteration))
        s.step(3)
        assert seen == [0, 1, 2]
    finally:
        del sys.modules["mc_spy"]


@pytest.mark.parametrize("text,message", [
    ("", "no net specified: give exactly one of net, net_param, train_net or train_net_param"),
    ("average_loss: 0", "average_loss must be >= 1, got 0"),
    ("iter_size: 0", "iter_size must be >= 1, got 0"),
    ("max_iter: -2", r"max_iter must be >= 0 \(0: never\), got -2"),
    ("snapshot: -1", r"snapshot must be >= 0 \(0: never\), got -1"),
    ("display: -1", r"display must be >= 0 \(0: never\), got -1"),
    ("test_iter: -3", "test_iter must be >= 0, got -3"),
    ("clip_gradients: -0.5", r"clip_gradients must be >= 0 .* or -1 \(the default: no clipping\), got -0.5"),
    ('lr_policy: "step" stepsize: 10 gamma: -0.1', "gamma must be >= 0 for lr_policy 'step', got -0.1"),
    ('lr_policy: "exp" gamma: -1', "gamma must be >= 0 for lr_policy 'exp', got -1"),
    ('lr_policy: "inv" gamma: -1', "gamma must be >= 0 for lr_policy 'inv', got -1"),
    ('lr_policy: "multistep" gamma: -1 stepvalue: 5', "gamma must be >= 0 for lr_policy 'multistep'"),
    ('lr_policy: "sigmoid" gamma: -1 stepsize: 5', "gamma must be >= 0 for lr_policy 'sigmoid'"),
    ('lr_policy: "sigmoid" gamma: 1', "lr_policy 'sigmoid' needs stepsize > 0, got 0"),
    ("test_iter: 5", r"test_iter must be specified for each test network \(0 test net\(s\) from "
                     r"test_net/test_net_param, 1 test_iter\)"),
])
def test_solver_values_caffe_rejects_name_file_and_field(tmp_path, text, message):
    (tmp_path / "net.prototxt").write_text(LINEAR)
    solver = tmp_path / "solver.prototxt"
    if text:
        base = {"lr_policy": 'lr_policy: "fixed"'}
        text = ('train_net: "%s" base_lr: 0.1 ' % (tmp_path / "net.prototxt") + text +
                ("" if "lr_policy" in text else " " + base["lr_policy"]))
    solver.write_text(text)
    with pytest.raises(caffe.CaffeError, match="^%s: %s" % (solver, message)):
        caffe.get_solver(str(solver))


def test_clip_gradients_default_minus_one_is_accepted(tmp_path):
    s = make_solver('base_lr: 0.1 lr_policy: "fixed" clip_gradients: -1')
    assert s.param.clip_gradients == -1


def test_snapshot_prefix_under_a_regular_file(tmp_path):
    (tmp_path / "solver.prototxt").write_text("")
    s = _noisy_solver(tmp_path)
    s.param.snapshot_prefix = str(tmp_path / "solver.prototxt" / "snaps" / "net")
    with pytest.raises(caffe.ModelFileError, match=r"^Cannot write snapshot %s: %s is a regular file, "
                       r"not a folder \(snapshot_prefix '%s'\)$" % (
                           tmp_path / "solver.prototxt" / "snaps" / "net_iter_0.caffemodel",
                           tmp_path / "solver.prototxt", s.param.snapshot_prefix)):
        s.snapshot()
    p = caffe_pb2.SolverParameter()
    p.CopyFrom(s.param)
    p.snapshot = 2    # checked before training, as Caffe's CheckSnapshotWritePermissions
    with pytest.raises(caffe.ModelFileError, match=r"net_iter_0.caffemodel: .*solver.prototxt is a "
                       r"regular file, not a folder"):
        caffe.get_solver(p)


def test_snapshot_removes_stale_temp_files_of_its_prefix(tmp_path):
    s = _noisy_solver(tmp_path)
    stale = [tmp_path / ".snap_iter_2.caffemodel.k1ll3d.tmp", tmp_path / ".snap_iter_2.solverstate.x.tmp"]
    other = tmp_path / ".other_iter_2.caffemodel.abc.tmp"
    for f in stale + [other]:
        f.write_bytes(b"half")
    s.step(1)
    s.snapshot()
    assert sorted(os.listdir(tmp_path)) == [".other_iter_2.caffemodel.abc.tmp",
                                           "snap_iter_1.caffemodel", "snap_iter_1.solverstate"]


def test_interrupted_pair_keeps_the_newest_complete_one(tmp_path, monkeypatch):
    s = _noisy_solver(tmp_path)
    s.step(2)
    s.snapshot()
    s.step(1)
    real = caffe.protoio.write_proto_binary

    def killed(path, msg):
        if path.endswith(".solverstate"):
            raise caffe.ModelFileError("Cannot write %s: No space left on device" % path)
        real(path, msg)
    monkeypatch.setattr(caffe.protoio, "write_proto_binary", killed)
    with pytest.raises(caffe.ModelFileError, match="snap_iter_3.solverstate: No space left"):
        s.snapshot()
    monkeypatch.undo()
    states = sorted(f for f in os.listdir(tmp_path) if f.endswith(".solverstate"))
    assert states == ["snap_iter_2.solverstate"]     # the newest state has its weights
    fresh = _noisy_solver(tmp_path)
    fresh.restore(str(tmp_path / "snap_iter_2.solverstate"))
    assert fresh.iter == 2
    os.remove(tmp_path / "snap_iter_2.caffemodel")
    with pytest.raises(caffe.ModelFileError, match=r"the model it names, %s, is missing"
                       % (tmp_path / "snap_iter_2.caffemodel")):
        fresh.restore(str(tmp_path / "snap_iter_2.solverstate"))


def test_ctrl_c_during_api_step_snapshots_then_raises(tmp_path):
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)   # Python's own, as in a script
    s = _noisy_solver(tmp_path)
    s.add_iteration_callback(lambda sv: sv.iter == 3 and os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt, match=r"stopped at iteration 4 after writing .*snap_iter_4.solverstate"):
        s.step(8)
    assert s.iter == 4
    assert sorted(os.listdir(tmp_path)) == ["snap_iter_4.caffemodel", "snap_iter_4.solverstate"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    s.step(3)   # the next step runs normally
    assert s.iter == 7


def test_ctrl_c_in_the_last_api_iteration_still_snapshots(tmp_path):
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    s = _noisy_solver(tmp_path)
    s.add_iteration_callback(lambda sv: sv.iter == 2 and os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt, match="stopped at iteration 2 after writing .*snap_iter_2.solverstate"):
        s.step(2)
    assert sorted(os.listdir(tmp_path)) == ["snap_iter_2.caffemodel", "snap_iter_2.solverstate"]


def test_corrupt_history_blob_names_the_file(tmp_path):
    s = _noisy_solver(tmp_path)
    s.step(1)
    _, state = s.snapshot()
    st = caffe_pb2.SolverState()
    st.ParseFromString(open(state, "rb").read())
    st.history[2].shape.dim[0] = 5     # ip2 weights: 5 × 2 described, 1 × 2 held
    bad = str(tmp_path / "bad.solverstate")
    open(bad, "wb").write(st.SerializeToString())
    before = _solver_state(s)
    with pytest.raises(caffe.ModelFileError, match=r"^%s: history blob 2: BlobProto of shape \(5, 2\) "
                       r"holds 2 values, expected 10$" % bad):
        s.restore(bad)
    _assert_unchanged(s, before)


def test_solve_logs_the_time_split_of_its_iterations(tmp_path, caplog):
    """forward / backward / update / test / snapshot seconds add up to about the solve's time
    and are logged once, after the iterations (tools/reproduce keeps them in each log)."""
    import logging
    import time

    from PIL import Image
    rng = np.random.default_rng(0)
    lines = []
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(tmp_path / ("%d.png" % i))
        lines.append("%d.png %d" % (i, i % 2))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "net.prototxt").write_text('''
layer { name: "d" type: "ImageData" top: "data" top: "label"
        image_data_param { source: "%s" root_folder: "%s/" batch_size: 4 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
''' % (tmp_path / "list.txt", tmp_path))
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt" base_lr: 0.01 lr_policy: "fixed" max_iter: 20 display: 0 '
        'test_interval: 10 test_iter: 1 test_initialization: false snapshot: 10 '
        'snapshot_prefix: "%s/snap"' % tmp_path)
    s = caffe.get_solver(str(tmp_path / "solver.prototxt"))
    t0 = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        s.solve()
    wall = time.perf_counter() - t0
    split = s.time_split
    assert set(split) == {"forward", "backward", "update", "test", "snapshot"}
    assert all(v > 0 for v in split.values()), split          # 2 tests, 2 snapshots ran
    assert sum(split.values()) <= wall
    assert 0 <= s.data_wait() <= split["forward"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Time split:")]
    assert len(lines) == 1 and "waiting for data" in lines[0]
    s.net.close()
