"""The ``dah_authors`` nets optimise the objective of the authors' MatConvNet code.

dah_paper_notes §2.4 (hemanthdv/da-hash, ``hash_entropy_loss.m``, ``vl_nnlinearMmdLoss.m``,
``cnn_train_dah.m``):

    J_code = (1/N) [ L_s + η·H + β·L_b + (γ/17) Σ_{l ∈ fc6, fc7, fc8} Σ_quads Σ_q h_q ]

written here in plain NumPy the way the code writes it (halves S1, S2, T1, T2, the
Kd1..Kd4 distances, exp(−q·d²/dm2), W = 10 on similar pairs, θ = ½uᵀu, H without 1/n_t)
and checked against one forward/backward of the shipped ToyHome net in float64: the net's
total loss equals J_code, and the gradients the net puts on the code blob and on the relu6,
relu7 and pre-BN fc8 features equal the gradient of J_code (finite differences, with dm2
and sgn(u) held constant as the code holds them).
"""
import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import backend, experiments, protoio
from minicaffe.datasets import lists, toyhome
from minicaffe.gradcheck import empty_tops, make_layer
from minicaffe.net import Net

GAMMA, ETA, BETA, SIM_W = 5000.0, 1.0, 1.0, 10.0
QS = 2.0 ** np.arange(-8, 9)                 # the code's 17 bandwidth multipliers


def softplus(x):
    return np.logaddexp(0.0, x)


def hash_cost(us, labels):
    """L_s: Σ_ij W_ij [log(1 + e^θ_ij) − s_ij θ_ij], θ = ½ u_iᵀu_j, all ordered pairs, i = j too."""
    s = (labels[:, None] == labels[None, :]).astype(float)
    theta = 0.5 * us @ us.T
    w = np.where(s > 0, SIM_W, 1.0)
    return float((w * (softplus(theta) - s * theta)).sum())


def quant_cost(u, b):
    """L_b over all N codes, b = sgn(u) (0 → +1) held as the code's constant target."""
    return float(((u - b) ** 2).sum())


def entropy_cost(ut, us, labels, num_classes):
    """H = −Σ_i Σ_j p_ij log p_ij, p_ij = Σ_{k∈j} e^{v_iᵀu_k} / Σ_k e^{v_iᵀu_k} (no 1/n_t)."""
    a = ut @ us.T
    a = a - a.max(1, keepdims=True)
    pbar = np.exp(a) / np.exp(a).sum(1, keepdims=True)
    p = np.stack([pbar[:, labels == j].sum(1) for j in range(num_classes)], 1)
    return float(-(p * np.log(p)).sum())


def mmd_halves(xs, xt, perm_s, perm_t):
    """The quadruples: S1, S2 (T1, T2) = odd and even members of a random ordering."""
    s, t = xs[perm_s], xt[perm_t]
    q = min(len(s), len(t)) // 2
    return s[0:2 * q:2], s[1:2 * q:2], t[0:2 * q:2], t[1:2 * q:2]


def mmd_sq(xs, xt, perm_s, perm_t):
    s1, s2, t1, t2 = mmd_halves(xs, xt, perm_s, perm_t)
    return [((a - b) ** 2).sum(1) for a, b in ((s1, s2), (s1, t2), (s2, t1), (t1, t2))]


def mmd_cost(xs, xt, perm_s, perm_t, dm2):
    """(γ/17) Σ_q Σ_i [K1 − K2 − K3 + K4], K_m = exp(−q·Kd_m/dm2), q ∈ 2^{−8..8}."""
    kd1, kd2, kd3, kd4 = mmd_sq(xs, xt, perm_s, perm_t)
    k = lambda d: np.exp(-np.outer(d, QS) / dm2)  # noqa: E731
    return GAMMA / 17.0 * float((k(kd1) - k(kd2) - k(kd3) + k(kd4)).sum())


def j_code(feats, code, labels, perms, dm2, b, num_classes):
    """J_code of §2.4. ``feats``: {layer: (N, D)} relu6, relu7, pre-BN fc8; ``code``: (N, d)
    tanh outputs, source first; ``perms``: {layer: (perm_s, perm_t)}; ``dm2``: {layer: median}."""
    n = code.shape[0]
    ns = n // 2
    us, ut = code[:ns], code[ns:]
    total = hash_cost(us, labels) + ETA * entropy_cost(ut, us, labels, num_classes) \
        + BETA * quant_cost(code, b)
    for l, x in feats.items():
        total += mmd_cost(x[:ns], x[ns:], perms[l][0], perms[l][1], dm2[l])
    return total / n


def mmd_pairings(rng_state, n_s, n_t, layers):
    """The pairings MMDLoss (``pairing: RANDOM``) draws from the global generator, in the
    layers' forward order: a permutation of the source rows, then of the target rows."""
    rng = np.random.default_rng()
    rng.bit_generator.state = rng_state
    return {l: (rng.permutation(n_s), rng.permutation(n_t)) for l in layers}


@pytest.fixture(scope="module")
def toy_lists(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("authors") / "toyhome")
    toyhome.generate(root, seed=0, per_class=4, size=40, classes=toyhome.CLASSES[:3])
    written = lists.write_lists(root, str(tmp_path_factory.mktemp("lists")))
    return root.rstrip("/") + "/", written


MMD_LAYERS = {"mmd_fc6": "fc6", "mmd_fc7": "fc7", "mmd_fc8": "fc8_hash"}


@pytest.fixture(scope="module")
def authors_step(toy_lists):
    """One forward/backward of the shipped ToyHome dah_authors net in float64, on a batch of
    3 classes × K = 4 source + 12 target images, and everything J_code needs from it."""
    root, written = toy_lists
    sp = experiments.configure("toyhome", "DAH_authors", source_list=written["Art"],
                               target_list=written["Clipart"], root=root, num_classes=3,
                               per_class=4, bits=16, snapshot_prefix="unused")
    backend.set_random_seed(7)
    net = Net(sp.net_param, caffe.TRAIN, dtype=np.float64)
    try:
        state = backend.rng_state()
        loss = net.forward_backward()
        blobs = {k: (v.data.copy(), v.diff.copy()) for k, v in net.blobs.items()}
        weights = {lp.name: list(lp.loss_weight) for lp in sp.net_param.layer if lp.loss_weight}
    finally:
        net.close()
    n = blobs["code"][0].shape[0]
    return dict(loss=loss, blobs=blobs, weights=weights, n=n,
                perms=mmd_pairings(state, n // 2, n // 2, MMD_LAYERS))


def _reference_inputs(step):
    b = step["blobs"]
    feats = {l: b[blob][0].reshape(step["n"], -1) for l, blob in MMD_LAYERS.items()}
    code = b["code"][0].reshape(step["n"], -1)
    labels = b["source_label"][0].astype(np.int64)
    ns = step["n"] // 2
    dm2 = {l: float(np.median(np.concatenate(mmd_sq(x[:ns], x[ns:], *step["perms"][l]))))
           for l, x in feats.items()}
    sgn = np.where(code >= 0, 1.0, -1.0)
    return feats, code, labels, dm2, sgn


def test_authors_loss_weights_follow_the_batch():
    """γ·Q/N on each MMDLoss, η·n_t/N on EntropyLoss: 1250 and 0.5 at ToyHome's 48 + 48, and
    recomputed by configure for another C·K (an odd n_s has ⌊n_s/2⌋ quadruples)."""
    assert experiments.authors_loss_weights(48, GAMMA, ETA) == (1250.0, 0.5)
    assert experiments.authors_loss_weights(325, GAMMA, ETA) == (GAMMA * 162 / 650, 0.5)
    shipped = protoio.read_net_param(
        experiments.family_file("toyhome", "dah_authors_train.prototxt"))
    w = {lp.name: list(lp.loss_weight) for lp in shipped.layer if lp.loss_weight}
    assert w == {"mmd_fc6": [1250.0], "mmd_fc7": [1250.0], "mmd_fc8": [1250.0],
                 "hash_loss": [0.5], "quant_all": [1.0], "entropy_loss": [0.5]}
    kw = dict(source_list="s", target_list="t", root="", snapshot_prefix="x")
    odd = experiments.configure("toyhome", "DAH_authors", num_classes=3, per_class=3, **kw)
    w = {lp.name: lp.loss_weight[0] for lp in odd.net_param.layer if lp.loss_weight}
    assert w["mmd_fc7"] == pytest.approx(GAMMA * 4 / 18) and w["entropy_loss"] == 0.5
    custom = experiments.configure("toyhome", "DAH_authors", num_classes=12, gamma=100, eta=0.1,
                                   **kw)
    w = {lp.name: lp.loss_weight[0] for lp in custom.net_param.layer if lp.loss_weight}
    assert w["mmd_fc6"] == pytest.approx(25.0) and w["entropy_loss"] == pytest.approx(0.05)
    # the other methods are untouched: gamma/eta are still the loss weights themselves
    dah = experiments.configure("toyhome", "DAH", num_classes=12, gamma=3, eta=2, **kw)
    w = {lp.name: lp.loss_weight[0] for lp in dah.net_param.layer if lp.loss_weight}
    assert w["mmd_fc6"] == 3 and w["entropy_loss"] == 2


def test_net_loss_is_j_code(authors_step):
    feats, code, labels, dm2, sgn = _reference_inputs(authors_step)
    assert authors_step["n"] == 24 and code.shape == (24, 16)
    assert sorted(labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    j = j_code(feats, code, labels, authors_step["perms"], dm2, sgn, 3)
    assert authors_step["loss"] == pytest.approx(j, rel=1e-9)
    # every term takes part (on this fresh net the MMD terms dominate: ~250 each against a hash
    # term of ~12 and an entropy term of ~0.4, the balance the code's weights give)
    ns = authors_step["n"] // 2
    parts = {l: mmd_cost(x[:ns], x[ns:], *authors_step["perms"][l], dm2[l]) / 24
             for l, x in feats.items()}
    parts["entropy"] = entropy_cost(code[ns:], code[:ns], labels, 3) / 24
    parts["hash"] = hash_cost(code[:ns], labels) / 24
    assert all(v > 1e-2 for v in parts.values()), parts
    quant = BETA * quant_cost(code, sgn) / 24
    assert sum(parts.values()) + quant == pytest.approx(j, rel=1e-12)
    # and each layer's weighted top is its term of J_code
    b = authors_step["blobs"]
    for l in MMD_LAYERS:
        assert float(b[l][0]) * 1250.0 == pytest.approx(parts[l], rel=1e-9)
    assert float(b["entropy_loss"][0]) * 0.5 == pytest.approx(parts["entropy"], rel=1e-9)


def _fd_check(f, x, g_net, rng, n_elems=25, eps=1e-6):
    """Central differences of f at ``n_elems`` random elements of x and along a random
    direction over all of x, against the net's gradient g_net."""
    flat = x.reshape(-1)
    g = g_net.reshape(-1)
    scale = np.abs(g).max()
    assert scale > 0
    for i in rng.choice(flat.size, size=min(n_elems, flat.size), replace=False):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        assert (fp - fm) / (2 * eps) == pytest.approx(g[i], rel=1e-5, abs=1e-6 * scale), i
    d = rng.standard_normal(flat.size)
    old = flat.copy()
    flat[...] = old + eps * d
    fp = f()
    flat[...] = old - eps * d
    fm = f()
    flat[...] = old
    assert (fp - fm) / (2 * eps) == pytest.approx(float(g @ d), rel=1e-5)


@pytest.mark.parametrize("what", ["code", "mmd_fc6", "mmd_fc7", "mmd_fc8"])
def test_net_gradients_are_those_of_j_code(authors_step, what):
    """The net's diff on ``code`` (all loss terms reach it directly) and on the slices of
    relu6 / relu7 / fc8 that the MMD layers read equal ∂J_code/∂(that blob)."""
    feats, code, labels, dm2, sgn = _reference_inputs(authors_step)
    perms, b = authors_step["perms"], authors_step["blobs"]
    f = lambda: j_code(feats, code, labels, perms, dm2, sgn, 3)  # noqa: E731
    rng = np.random.default_rng(3)
    if what == "code":
        x, g = code, b["code"][1].reshape(code.shape)
    else:
        top = {"mmd_fc6": "fc6", "mmd_fc7": "fc7", "mmd_fc8": "fc8"}[what]
        x = feats[what]
        g = np.concatenate([b[top + "_s"][1], b[top + "_t"][1]]).reshape(x.shape)
    _fd_check(f, x, g, rng)


def test_hash_gradient_vs_the_codes_diagonal_quirk():
    """The code's cost includes the i = j pairs but its gradient does not (σ(·) forced to 1 on
    the diagonal of gradSS = W∘½(σ(½UᵀU) − S)); HashLoss's gradient is the exact one of the
    cost. They differ by exactly the i = j terms' gradient, W_ii·(σ(½‖u_i‖²) − 1)·u_i, which
    only grows the codes' norms (like the quantisation term)."""
    rng = np.random.default_rng(0)
    u = np.tanh(rng.normal(size=(8, 6)))
    lab = np.array([0, 0, 1, 1, 1, 2, 2, 0], float)
    layer = make_layer('type: "HashLoss" hash_loss_param { scale: 0.5 similar_weight: 10 '
                       'quantization_weight: 0 }')
    bottom = [caffe.Blob(u.shape, np.float64), caffe.Blob(lab.shape, np.float64)]
    bottom[0].data[...] = u
    bottom[1].data[...] = lab
    top = empty_tops(1)
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    assert float(top[0].data) == pytest.approx(hash_cost(u, lab.astype(int)), rel=1e-12)
    top[0].diff[...] = 1.0
    layer.backward(top, [True, False], bottom)
    s = (lab[:, None] == lab[None, :]).astype(float)
    w = np.where(s > 0, SIM_W, 1.0)
    sig = 1.0 / (1.0 + np.exp(-0.5 * u @ u.T))
    np.fill_diagonal(sig, 1.0)                      # the code's quirk
    grad_ss = w * (0.5 * (sig - s))
    code_grad = (grad_ss + grad_ss.T) @ u           # l1·Us·(gradSS + gradSSᵀ), rows = samples
    diag = SIM_W * (1.0 / (1.0 + np.exp(-0.5 * (u * u).sum(1))) - 1.0)[:, None] * u
    np.testing.assert_allclose(bottom[0].diff, code_grad + diag, rtol=1e-10, atol=1e-12)
