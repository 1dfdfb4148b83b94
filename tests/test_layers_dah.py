"""DAH layers: finite differences in float64, loop references of the supplement's equations,
loss_weight scaling and invariants."""
import math
import os
import re

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.gradcheck import GradientChecker, empty_tops, gaussian_blobs, make_layer
from minicaffe.layers.dah import gradient_scaler_coeff


def blob(arr, dtype=np.float64):
    b = caffe.Blob(np.shape(arr), dtype)
    b.data[...] = arr
    return b


def run(layer, bottom):
    top = empty_tops(1)
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return float(top[0].data), top


# ---------------------------------------------------------------------------- MMD

def mmd_loop(u, v, sigmas):
    """Eq 11 written as loops."""
    q = min(len(u), len(v)) // 2
    k = lambda x, y, s: math.exp(-float(np.sum((x - y) ** 2)) / s)  # noqa: E731
    tot = 0.0
    for s in sigmas:
        for i in range(q):
            a, b = 2 * i, 2 * i + 1
            tot += k(u[a], u[b], s) + k(v[a], v[b], s) - k(u[a], v[b], s) - k(u[b], v[a], s)
    return tot / (q * len(sigmas))


MMD_CASES = [
    ('mmd_param { sigma: 1 sigma: 4 sigma: 16 }', (6, 4), (6, 4)),
    ('mmd_param { sigma: 2 }', (7, 3), (5, 3)),                  # odd, n_s != n_t
    ('mmd_param { sigma: 0.5 sigma: 3 }', (4, 1), (4, 1)),       # d = 1
    ('mmd_param { kernel_num: 5 kernel_mul: 2 fix_gamma: true }', (6, 2, 2), (6, 2, 2)),
    ('mmd_param { kernel_num: 3 bandwidth: MEDIAN fix_gamma: true }', (8, 5), (8, 5)),
    ('mmd_param { sigma: 1 sigma: 4 pairing: RANDOM }', (6, 3), (7, 3)),
]


@pytest.mark.parametrize("param,ss,ts", MMD_CASES)
def test_mmd_gradient(param, ss, ts):
    layer = make_layer('type: "MMDLoss" ' + param)
    c = GradientChecker(1e-3, 1e-3)
    c.check_gradient_exhaustive(layer, gaussian_blobs([ss, ts]), empty_tops(1))
    assert c.checked > 0


def test_mmd_gradient_d128():
    layer = make_layer('type: "MMDLoss" mmd_param { sigma: 64 sigma: 256 }')
    c = GradientChecker(1e-3, 1e-3, samples=40)
    c.check_gradient(layer, gaussian_blobs([(4, 128), (4, 128)]), empty_tops(1))


def test_mmd_value_matches_loops_and_bandwidths():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(6, 3)), rng.normal(size=(5, 3)) + 1
    loss, _ = run(make_layer('type: "MMDLoss" mmd_param { sigma: 1 sigma: 3 }'), [blob(u), blob(v)])
    assert np.isclose(loss, mmd_loop(u, v, [1, 3]))
    # MEAN: σ_base = mean squared distance over all pairs i ≠ j of the concatenated batch
    x = np.vstack([u, v])
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    base = d.sum() / (len(x) ** 2 - len(x))
    loss, _ = run(make_layer('type: "MMDLoss" mmd_param { kernel_num: 3 kernel_mul: 2 }'),
                  [blob(u), blob(v)])
    assert np.isclose(loss, mmd_loop(u, v, [base / 2, base, base * 2]))
    # MEDIAN: over the estimator's 4·Q squared distances
    q = 2
    sq = [((u[2 * i] - u[2 * i + 1]) ** 2).sum() for i in range(q)] + \
         [((v[2 * i] - v[2 * i + 1]) ** 2).sum() for i in range(q)] + \
         [((u[2 * i] - v[2 * i + 1]) ** 2).sum() for i in range(q)] + \
         [((u[2 * i + 1] - v[2 * i]) ** 2).sum() for i in range(q)]
    med = float(np.median(sq))
    loss, _ = run(make_layer('type: "MMDLoss" mmd_param { kernel_num: 1 bandwidth: MEDIAN }'),
                  [blob(u), blob(v)])
    assert np.isclose(loss, mmd_loop(u, v, [med]))


def test_mmd_identical_batches_is_zero_and_fix_gamma_freezes():
    u = np.random.default_rng(1).normal(size=(6, 4))
    loss, _ = run(make_layer('type: "MMDLoss"'), [blob(u), blob(u.copy())])
    assert abs(loss) < 1e-12
    layer = make_layer('type: "MMDLoss" mmd_param { kernel_num: 1 fix_gamma: true }')
    run(layer, [blob(u), blob(u + 1)])
    first = layer.fixed_base
    top = empty_tops(1)
    layer.reshape([blob(3 * u), blob(u)], top)
    layer.forward([blob(3 * u), blob(u)], top)
    assert layer.fixed_base == first
    assert layer.get_state() == {"fixed_base": first}


def test_mmd_loss_weight_scales_gradient():
    b = gaussian_blobs([(4, 3), (4, 3)])
    l1 = make_layer('type: "MMDLoss" mmd_param { sigma: 2 }')
    l2 = make_layer('type: "MMDLoss" loss_weight: 5 mmd_param { sigma: 2 }')
    t1, t2 = empty_tops(1), empty_tops(1)
    for l, t in ((l1, t1), (l2, t2)):
        l.setup(b, t)
    loss1 = l1.forward(b, t1)
    l1.backward(t1, [True, True], b)
    g1 = b[0].diff.copy()
    loss2 = l2.forward(b, t2)
    l2.backward(t2, [True, True], b)
    assert np.isclose(loss2, 5 * loss1)
    assert np.allclose(b[0].diff, 5 * g1)


# ---------------------------------------------------------------------------- hash loss

def hash_loop(u, lab, scale=1.0, sw=1.0, qw=1.0):
    n = len(u)
    tot = 0.0
    for i in range(n):
        for j in range(n):
            s = 1.0 if lab[i] == lab[j] else 0.0
            th = scale * float(u[i] @ u[j])
            w = sw if s else 1.0
            tot += w * (math.log1p(math.exp(th)) - s * th)
    b = np.where(u >= 0, 1.0, -1.0)
    return tot + qw * float(((u - b) ** 2).sum())


HASH_CASES = [
    ('', (6, 4), [0, 1, 0, 2, 1, 1]),
    ('hash_loss_param { scale: 0.5 similar_weight: 10 }', (5, 3), [1, 1, 0, 0, 1]),
    ('hash_loss_param { quantization_weight: 0.3 normalization: BATCH_SIZE }', (4, 1), [0, 0, 1, 1]),
]


@pytest.mark.parametrize("param,shape,labels", HASH_CASES)
def test_hash_gradient_and_value(param, shape, labels):
    layer = make_layer('type: "HashLoss" ' + param)
    u = gaussian_blobs([shape], std=0.5)[0]
    u.data[...] = np.where(np.abs(u.data) < 0.05, 0.3, u.data)  # keep away from the sgn kink
    lab = blob(np.array(labels, float))
    c = GradientChecker(1e-3, 1e-3)
    c.check_gradient_exhaustive(layer, [u, lab], empty_tops(1), check_bottom=0)
    p = layer.layer_param.hash_loss_param
    loss, _ = run(make_layer('type: "HashLoss" ' + param), [u, lab])
    ref = hash_loop(u.data.reshape(shape[0], -1), labels, p.scale, p.similar_weight, p.quantization_weight)
    if p.normalization == caffe.caffe_pb2.HashLossParameter.BATCH_SIZE:
        ref /= shape[0]
    assert np.isclose(loss, ref)


def test_hash_gradient_d128_large_norm():
    layer = make_layer('type: "HashLoss"')
    u = gaussian_blobs([(5, 128)], std=3.0)[0]  # θ up to ~1e3: softplus must not overflow
    lab = blob(np.array([0, 1, 0, 1, 2], float))
    loss, _ = run(layer, [u, lab])
    assert np.isfinite(loss)
    GradientChecker(1e-3, 1e-3, samples=30).check_gradient(
        make_layer('type: "HashLoss"'), [u, lab], empty_tops(1), check_bottom=0)


def test_hash_minimal_when_class_codes_agree():
    lab = np.array([0, 0, 1, 1], float)
    agree = np.array([[1, 1, -1], [1, 1, -1], [-1, 1, 1], [-1, 1, 1]], float)
    mixed = np.array([[1, 1, -1], [-1, 1, 1], [1, 1, -1], [-1, 1, 1]], float)
    l_agree, _ = run(make_layer('type: "HashLoss"'), [blob(agree), blob(lab)])
    l_mixed, _ = run(make_layer('type: "HashLoss"'), [blob(mixed), blob(lab)])
    assert l_agree < l_mixed


# ---------------------------------------------------------------------------- entropy loss

def entropy_loop(v, u, lab, C, scale=1.0):
    nt = len(v)
    tot = 0.0
    for i in range(nt):
        e = [math.exp(scale * float(v[i] @ u[k])) for k in range(len(u))]
        z = sum(e)
        for j in range(C):
            pij = sum(e[k] for k in range(len(u)) if lab[k] == j) / z
            if pij > 0:
                tot += pij * math.log(pij)
    return -tot / nt


ENT_CASES = [
    (4, (5, 3), (6, 3), [0, 0, 1, 1, 2, 3], 1.0),
    (3, (3, 2), (4, 2), [0, 0, 2, 2], 1.0),        # class 1 absent from the batch
    (2, (4, 1), (4, 1), [0, 1, 0, 1], 0.5),        # d = 1, scale
]


@pytest.mark.parametrize("lam", [0.0, 0.7])
@pytest.mark.parametrize("C,vs,us,labels,scale", ENT_CASES)
def test_entropy_gradient_and_value(C, vs, us, labels, scale, lam):
    """Eq 7 (λ = 0), and with the diversity term H − λ·H(p̄) (not in the supplement): values
    against the loops, gradients by finite differences."""
    param = ('type: "EntropyLoss" entropy_loss_param { num_classes: %d scale: %g diversity_weight: %g }'
             % (C, scale, lam))
    v, u = gaussian_blobs([vs, us])
    lab = blob(np.array(labels, float))
    c = GradientChecker(1e-3, 1e-3)
    c.check_gradient_exhaustive(make_layer(param), [v, u, lab], empty_tops(1), check_bottom=0)
    c.check_gradient_exhaustive(make_layer(param), [v, u, lab], empty_tops(1), check_bottom=1)
    loss, _ = run(make_layer(param), [v, u, lab])
    want = entropy_loop(v.data, u.data, labels, C, scale)
    assert 0 <= want <= math.log(C) + 1e-12
    assert np.isclose(loss, want + lam * diversity_loop(v.data, u.data, labels, C, scale))


def diversity_loop(v, u, lab, C, scale=1.0):
    """Σ_j p̄_j log p̄_j = −H(p̄), p̄_j the mean over the target rows of p_ij (eq 6)."""
    pm = [0.0] * C
    for i in range(len(v)):
        e = [math.exp(scale * float(v[i] @ u[k])) for k in range(len(u))]
        for j in range(C):
            pm[j] += sum(e[k] for k in range(len(u)) if lab[k] == j) / sum(e) / len(v)
    return sum(p * math.log(p) for p in pm if p > 0)


@pytest.mark.parametrize("C,vs,us,labels,scale", ENT_CASES)
def test_entropy_diversity_zero_is_eq_7_and_negative_is_refused(C, vs, us, labels, scale):
    v, u = gaussian_blobs([vs, us])
    lab = blob(np.array(labels, float))
    plain = 'type: "EntropyLoss" entropy_loss_param { num_classes: %d scale: %g }' % (C, scale)
    runs = [run(make_layer(p), [v, u, lab]) for p in (plain, plain.replace("}", "diversity_weight: 0 }"))]
    assert runs[0][0] == runs[1][0]
    with pytest.raises(caffe.CaffeError, match="diversity_weight"):
        run(make_layer(plain.replace("}", "diversity_weight: -1 }")), [v, u, lab])


def test_entropy_diversity_spreads_the_target_over_classes():
    """Every target row sure of class 0: H is ~0 but H(p̄) too, so the diversity term is ~0 at
    its worst (−λ·0) and its gradient pushes the rows apart; spread rows score lower."""
    u = blob(np.array([[4.0, 0], [0, 4.0]]))
    lab = blob(np.array([0.0, 1.0]))
    param = 'type: "EntropyLoss" entropy_loss_param { num_classes: 2 diversity_weight: 1 }'
    same, _ = run(make_layer(param), [blob(np.array([[3.0, 0], [3.0, 0]])), u, lab])
    spread, _ = run(make_layer(param), [blob(np.array([[3.0, 0], [0, 3.0]])), u, lab])
    assert spread < same and np.isclose(spread + math.log(2), entropy_loop(
        np.array([[3.0, 0], [0, 3.0]]), u.data, [0, 1], 2), atol=1e-9)


def test_entropy_large_norm_128d_stable():
    v, u = gaussian_blobs([(4, 128), (6, 128)], std=10.0)  # inner products ~ 1e4
    lab = blob(np.array([0, 1, 2, 0, 1, 2], float))
    param = 'type: "EntropyLoss" entropy_loss_param { num_classes: 3 }'
    loss, _ = run(make_layer(param), [v, u, lab])
    assert np.isfinite(loss) and 0 <= loss <= math.log(3)
    layer = make_layer(param)
    top = empty_tops(1)
    layer.setup([v, u, lab], top)
    layer.forward([v, u, lab], top)
    layer.backward(top, [True, True, False], [v, u, lab])
    assert np.all(np.isfinite(v.diff)) and np.all(np.isfinite(u.diff))
    small_v, small_u = gaussian_blobs([(3, 128), (6, 128)], std=0.1)
    GradientChecker(1e-3, 1e-3, samples=30).check_gradient(
        make_layer(param), [small_v, small_u, lab], empty_tops(1), check_bottom=0)


def test_entropy_needs_num_classes_and_valid_labels():
    with pytest.raises(caffe.CaffeError, match="num_classes"):
        run(make_layer('type: "EntropyLoss"'), gaussian_blobs([(2, 2), (2, 2)]) + [blob([0.0, 1.0])])
    with pytest.raises(caffe.CaffeError, match=r"\[0, num_classes = 2\)"):
        run(make_layer('type: "EntropyLoss" entropy_loss_param { num_classes: 2 }'),
            gaussian_blobs([(2, 2), (2, 2)]) + [blob([0.0, 5.0])])


# ---------------------------------------------------------------------------- quantisation

def test_quantization_loss():
    u = gaussian_blobs([(3, 4)])[0]
    u.data[...] = np.where(np.abs(u.data) < 0.05, 0.2, u.data)
    GradientChecker(1e-3, 1e-3).check_gradient_exhaustive(
        make_layer('type: "QuantizationLoss"'), [u], empty_tops(1))
    loss, _ = run(make_layer('type: "QuantizationLoss" quantization_loss_param { normalization: BATCH_SIZE }'), [u])
    b = np.where(u.data >= 0, 1, -1)
    assert np.isclose(loss, ((u.data - b) ** 2).sum() / 3)
    zero, _ = run(make_layer('type: "QuantizationLoss"'), [blob(np.zeros((2, 2)))])
    assert np.isclose(zero, 4.0)  # sgn(0) = +1


# ---------------------------------------------------------------------------- gradient reversal

def test_gradient_scaler_schedule_and_backward():
    p = caffe.caffe_pb2.GradientScalerParameter(lower_bound=0, upper_bound=1, alpha=10, max_iter=100)
    assert gradient_scaler_coeff(p, 0) == 0.0
    assert np.isclose(gradient_scaler_coeff(p, 50), 2 / (1 + math.exp(-5)) - 1)
    assert np.isclose(gradient_scaler_coeff(p, 500), 2 / (1 + math.exp(-10)) - 1)
    layer = make_layer('type: "GradientScaler" gradient_scaler_param { max_iter: 100 threshold_iter: 10 }')
    x = gaussian_blobs([(2, 3)])
    top = empty_tops(1)
    layer.setup(x, top)
    layer.forward(x, top)
    assert np.array_equal(top[0].data, x[0].data) and top[0].shares_data_with(x[0])
    top[0].diff[...] = 1.0
    layer.set_iteration(5)              # before threshold_iter: no gradient
    layer.backward(top, [True], x)
    assert np.all(x[0].diff == 0)
    layer.set_iteration(50)
    layer.backward(top, [True], x)
    assert np.allclose(x[0].diff, -(2 / (1 + math.exp(-5)) - 1))


def test_gradient_scaler_identity_gradcheck_when_coeff_is_minus_one():
    # l = u = -1 makes λ = -1, so backward is +dy: the finite-difference check then applies
    layer = make_layer('type: "GradientScaler" gradient_scaler_param { lower_bound: -1 upper_bound: -1 }')
    GradientChecker(1e-2, 1e-3).check_gradient_exhaustive(layer, gaussian_blobs([(2, 3)]), empty_tops(1))


# ---------------------------------------------------------------------------- all four in a net

DAH_NET = """
name: "dah_toy"
layer { name: "in" type: "Input" top: "src" top: "tgt" top: "label"
        input_param { shape { dim: 6 dim: 5 } shape { dim: 6 dim: 5 } shape { dim: 6 } } }
layer { name: "fc_s" type: "InnerProduct" bottom: "src" top: "hs" param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "fc_t" type: "InnerProduct" bottom: "tgt" top: "ht" param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "tanh_s" type: "Python" bottom: "hs" top: "us" python_param { module: "mc_dah_tanh" layer: "Tanh" } }
layer { name: "tanh_t" type: "Python" bottom: "ht" top: "ut" python_param { module: "mc_dah_tanh" layer: "Tanh" } }
layer { name: "mmd" type: "MMDLoss" bottom: "hs" bottom: "ht" top: "mmd" loss_weight: 0.5 mmd_param { sigma: 2 sigma: 8 } }
layer { name: "hash" type: "HashLoss" bottom: "us" bottom: "label" top: "hash" }
layer { name: "ent" type: "EntropyLoss" bottom: "ut" bottom: "us" bottom: "label" top: "ent"
        entropy_loss_param { num_classes: 3 } }
layer { name: "grl" type: "GradientScaler" bottom: "ht" top: "ht_rev" gradient_scaler_param { max_iter: 10 } }
layer { name: "dom" type: "InnerProduct" bottom: "ht_rev" top: "dom" loss_weight: 0.1
        inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 0.1 } } }
"""


class _Tanh(caffe.Layer):
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = np.tanh(bottom[0].data)

    def backward(self, top, pd, bottom):
        bottom[0].diff[...] = top[0].diff * (1 - top[0].data ** 2)


@pytest.fixture
def tanh_module():
    import sys
    mod = type(sys)("mc_dah_tanh")
    mod.Tanh = _Tanh
    sys.modules["mc_dah_tanh"] = mod
    yield
    del sys.modules["mc_dah_tanh"]


def test_dah_net_trains(tanh_module):
    from google.protobuf import text_format
    p = caffe.caffe_pb2.SolverParameter()
    text_format.Merge('base_lr: 0.05 lr_policy: "fixed" momentum: 0.9 max_iter: 30 random_seed: 1', p)
    text_format.Merge(DAH_NET, p.net_param)
    s = caffe.get_solver(p)
    rng = np.random.default_rng(0)
    s.net.blobs["src"].data[...] = rng.normal(size=(6, 5))
    s.net.blobs["tgt"].data[...] = rng.normal(size=(6, 5)) + 0.5
    s.net.blobs["label"].data[...] = [0, 0, 1, 1, 2, 2]
    first = s.net.forward_prefilled()
    s.step(30)
    last = s.net.forward_prefilled()
    assert last < first
    assert s.net.layer_dict["grl"].iteration == 29



# ---------------------------------------------------------------------------- the shipped demo

DEMO = os.path.join(os.path.dirname(__file__), "..", "prototxt", "dah_layers")


def test_demo_trains_under_tools_train(tmp_path, monkeypatch, capsys):
    from minicaffe.commands import train
    monkeypatch.chdir(tmp_path)   # the solver's net path resolves beside the solver file
    assert train.main(["--solver", os.path.join(DEMO, "solver.prototxt")]) == 0
    err = capsys.readouterr().err
    hash_losses = [float(x) for x in re.findall(r"Train net output #\d+: hash_loss = ([0-9.e+-]+)", err)]
    assert len(hash_losses) == 10 and hash_losses[-1] < 0.2 * hash_losses[0]
    assert "Optimization Done." in err


def test_demo_passes_tools_gradcheck(capsys):
    from minicaffe.commands import gradcheck
    assert gradcheck.main(["--model", os.path.join(DEMO, "train.prototxt"), "--samples", "15"]) == 0
    out = capsys.readouterr().out
    for name in ("mmd_fc", "hash_loss", "entropy", "grl"):
        assert re.search(r"^%s +\w+ +[1-9]\d* +ok$" % name, out, re.M), name


def test_mmd_random_pairing_is_a_permuted_batch_order():
    rng = np.random.default_rng(4)
    u, v = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    caffe.set_random_seed(9)
    loss, _ = run(make_layer('type: "MMDLoss" mmd_param { sigma: 2 pairing: RANDOM }'), [blob(u), blob(v)])
    caffe.set_random_seed(9)
    pu, pv = caffe.backend.rng().permutation(6), caffe.backend.rng().permutation(6)
    assert np.isclose(loss, mmd_loop(u[pu], v[pv], [2]))
