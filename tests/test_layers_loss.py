"""Loss layers and Accuracy: SigmoidCrossEntropyLoss, EuclideanLoss, ContrastiveLoss, HingeLoss,
MultinomialLogisticLoss, InfogainLoss, Accuracy.

Gradient checks in float64 with Caffe's tolerances (check_bottom = 0 where bottom 1 is a label),
forward values against plain NumPy loops written from the formulas, and the quirks.
"""
import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.errors import CaffeError, ShapeError
from minicaffe.gradcheck import GradientChecker, empty_tops, gaussian_blobs, make_layer
from minicaffe.io import array_to_blobproto


def blob(arr):
    arr = np.asarray(arr, np.float64)
    b = caffe.Blob(arr.shape, np.float64)
    b.data[...] = arr
    return b


def labels(shape, high, seed=0):
    return blob(np.random.default_rng(seed).integers(0, high, shape))


def forward(layer, bottom, ntop=1):
    top = empty_tops(ntop)
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return top


# --- SigmoidCrossEntropyLoss -------------------------------------------------------------------
def _sce_ref(x, t, ignore=None):
    loss, n = 0.0, 0
    for xi, ti in zip(x.ravel(), t.ravel()):
        if ignore is not None and int(ti) == ignore:
            continue
        s = 1 / (1 + np.exp(-xi))
        loss -= ti * np.log(s) + (1 - ti) * np.log(1 - s)
        n += 1
    return loss, n


def test_sigmoid_cross_entropy_forward_normalizations():
    x = gaussian_blobs([(4, 3, 2)], std=2.0)[0]
    t = blob(np.random.default_rng(1).random((4, 3, 2)))
    total, _ = _sce_ref(x.data, t.data)
    top = forward(make_layer('type: "SigmoidCrossEntropyLoss"'), [x, t])
    assert np.isclose(top[0].data, total / 4)          # default: BATCH_SIZE (BVLC master)
    for mode, norm in (("FULL", 24), ("VALID", 24), ("BATCH_SIZE", 4), ("NONE", 1)):
        top = forward(make_layer('type: "SigmoidCrossEntropyLoss" loss_param { normalization: %s }'
                                 % mode), [x, t])
        assert np.isclose(top[0].data, total / norm)
    top = forward(make_layer('type: "SigmoidCrossEntropyLoss" loss_param { normalize: true }'),
                  [x, t])
    assert np.isclose(top[0].data, total / 24)


def test_sigmoid_cross_entropy_ignore_label_and_gradient():
    x = gaussian_blobs([(2, 3, 2, 2)])[0]
    t = labels((2, 3, 2, 2), 3, seed=2)                # 0, 1 targets; 2 is ignored
    text = ('type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: 2 normalization: VALID }')
    total, count = _sce_ref(x.data, t.data, ignore=2)
    assert 0 < count < 24
    top = forward(make_layer(text), [x, t])
    assert np.isclose(top[0].data, total / count)
    c = GradientChecker(1e-2, 1e-2, 1701)
    c.check_gradient_exhaustive(make_layer(text), [x, t], empty_tops(1), check_bottom=0)
    assert c.checked > 0
    t01 = blob(np.random.default_rng(3).random((2, 3, 2, 2)))
    GradientChecker(1e-2, 1e-2, 1701).check_gradient_exhaustive(
        make_layer('type: "SIGMOID_CROSS_ENTROPY_LOSS"'), [x, t01], empty_tops(1),
        check_bottom=0)


def test_sigmoid_cross_entropy_extreme_inputs_finite():
    x = blob([[100.0, -100.0, 100.0, -100.0]])
    t = blob([[1.0, 0.0, 0.0, 1.0]])
    layer = make_layer('type: "SigmoidCrossEntropyLoss"')
    top = forward(layer, [x, t])
    assert np.isfinite(top[0].data) and np.isclose(top[0].data, 200.0)
    layer.backward(top, [True, False], [x, t])
    assert np.all(np.isfinite(x.diff))
    np.testing.assert_allclose(x.diff, [[0.0, 0.0, 1.0, -1.0]], atol=1e-12)
    with pytest.raises(CaffeError, match="label"):
        layer.backward(top, [True, True], [x, t])


# --- EuclideanLoss -----------------------------------------------------------------------------
def test_euclidean_forward_and_gradient_both_bottoms():
    bottom = gaussian_blobs([(4, 3, 1, 2), (4, 6)])
    layer = make_layer('type: "EuclideanLoss"')
    top = forward(layer, bottom)
    d = bottom[0].data.reshape(4, -1) - bottom[1].data
    assert np.isclose(top[0].data, sum((d[i] ** 2).sum() for i in range(4)) / 4 / 2)
    assert layer.allow_force_backward(0) and layer.allow_force_backward(1)
    GradientChecker(1e-2, 1e-2, 1701).check_gradient_exhaustive(
        make_layer('type: "EUCLIDEAN_LOSS"'), bottom, empty_tops(1))
    top[0].diff[...] = 3.0
    layer.backward(top, [True, True], bottom)
    np.testing.assert_allclose(bottom[0].diff.reshape(4, -1), 3 * d / 4)
    np.testing.assert_allclose(bottom[1].diff, -3 * d / 4)


# --- ContrastiveLoss ---------------------------------------------------------------------------
def _contrastive_bottoms(n=24, c=2):
    rng = np.random.default_rng(5)
    return [blob(rng.uniform(-1, 1, (n, c, 1, 1))), blob(rng.uniform(-1, 1, (n, c, 1, 1))),
            blob(rng.integers(0, 2, (n, 1, 1, 1)))]


@pytest.mark.parametrize("legacy", ["false", "true"])
def test_contrastive_forward_and_gradient(legacy):
    text = ('type: "ContrastiveLoss" contrastive_loss_param { margin: 1 legacy_version: %s }'
            % legacy)
    bottom = _contrastive_bottoms()
    top = forward(make_layer(text), bottom)
    a, b, s = (x.data.reshape(24, -1) for x in bottom)
    loss, hinge_active = 0.0, 0
    for i in range(24):
        d = ((a[i] - b[i]) ** 2).sum()
        if int(s[i, 0]):
            loss += d
        elif legacy == "true":
            loss += max(1 - d, 0.0)
        else:
            loss += max(1 - np.sqrt(d), 0.0) ** 2
            hinge_active += np.sqrt(d) < 1
    assert np.isclose(top[0].data, loss / 24 / 2)
    if legacy == "false":
        assert 0 < hinge_active < 24           # both sides of the margin are exercised
    for check in (0, 1):
        GradientChecker(1e-2, 1e-2, 1701).check_gradient_exhaustive(
            make_layer(text), bottom, empty_tops(1), check_bottom=check)
    layer = make_layer('type: "CONTRASTIVE_LOSS"')
    assert layer.allow_force_backward(1) and not layer.allow_force_backward(2)


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_backward_matches_formula(legacy):
    # the gradients are O(1/N), below the checker's absolute floor: compare them exactly
    text = ('type: "ContrastiveLoss" contrastive_loss_param { margin: 1.5 legacy_version: %s }'
            % str(legacy).lower())
    bottom = _contrastive_bottoms(n=8, c=3)
    layer = make_layer(text)
    top = forward(layer, bottom)
    top[0].diff[...] = 2.0
    layer.backward(top, [True, True, False], bottom)
    a, b, s = (x.data.reshape(8, -1) for x in bottom)
    for i in range(8):
        d = a[i] - b[i]
        dist = np.sqrt((d ** 2).sum())
        if int(s[i, 0]):
            g = d
        elif legacy:
            g = -d if 1.5 - dist ** 2 > 0 else 0 * d
        else:
            g = -(1.5 - dist) / (dist + 1e-4) * d if 1.5 - dist > 0 else 0 * d
        np.testing.assert_allclose(bottom[0].diff.reshape(8, -1)[i], 2.0 * g / 8, rtol=1e-12)
        np.testing.assert_allclose(bottom[1].diff.reshape(8, -1)[i], -2.0 * g / 8, rtol=1e-12)


# --- HingeLoss ---------------------------------------------------------------------------------
def _hinge_ref(x, lab, norm):
    loss = 0.0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            m = max(0.0, 1 + (-x[i, j] if j == lab[i] else x[i, j]))
            loss += m if norm == "L1" else m * m
    return loss / x.shape[0]


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_forward_and_gradient(norm):
    text = 'type: "HingeLoss" hinge_loss_param { norm: %s }' % norm
    x = gaussian_blobs([(6, 5, 1, 1)])[0]
    lab = labels((6,), 5, seed=4)
    top = forward(make_layer(text), [x, lab])
    assert np.isclose(top[0].data, _hinge_ref(x.data.reshape(6, 5), lab.data.astype(int), norm))
    checker = (GradientChecker(1e-2, 2e-3, 1701, 1, 0.01) if norm == "L1"
               else GradientChecker(1e-2, 1e-2, 1701))
    checker.check_gradient_exhaustive(make_layer(text), [x, lab], empty_tops(1), check_bottom=0)


# --- MultinomialLogisticLoss -------------------------------------------------------------------
def test_multinomial_logistic_forward_and_gradient():
    rng = np.random.default_rng(6)
    p = rng.uniform(0, 1, (6, 5))
    p /= p.sum(1, keepdims=True)                      # positive_unitball, as Caffe's test
    p[0, :] = 0.0                                     # clipped at 1e-20
    lab = labels((6, 1, 1, 1), 5, seed=7)
    top = forward(make_layer('type: "MultinomialLogisticLoss"'), [blob(p), lab])
    ref = -sum(np.log(max(p[i, int(lab.data.ravel()[i])], 1e-20)) for i in range(6)) / 6
    assert np.isclose(top[0].data, ref)
    assert np.isfinite(top[0].data)
    good = blob(p[1:])
    GradientChecker(1e-2, 2e-2, 1701, 0, 0.05).check_gradient_exhaustive(
        make_layer('type: "MULTINOMIAL_LOGISTIC_LOSS"'), [good, labels((5,), 5, seed=8)],
        empty_tops(1), check_bottom=0)
    with pytest.raises(ShapeError):
        make_layer('type: "MultinomialLogisticLoss"').setup([good, blob(np.zeros((5, 2)))],
                                                            empty_tops(1))
    with pytest.raises(CaffeError, match="label values"):
        forward(make_layer('type: "MultinomialLogisticLoss"'), [good, blob([0, 1, 2, 3, 5])])


# --- InfogainLoss ------------------------------------------------------------------------------
def _infogain_ref(x, lab, H, ignore=None):
    loss, count = 0.0, 0
    for i in range(x.shape[0]):
        z = np.exp(x[i] - x[i].max())
        p = z / z.sum()
        if ignore is not None and lab[i] == ignore:
            continue
        loss -= sum(H[lab[i], c] * np.log(max(p[c], 1e-20)) for c in range(x.shape[1]))
        count += 1
    return loss, count


def test_infogain_forward_gradient_and_source(tmp_path):
    rng = np.random.default_rng(9)
    x = gaussian_blobs([(6, 4)])[0]
    lab = labels((6,), 4, seed=10)
    H = rng.uniform(0, 1, (4, 4))
    top = forward(make_layer('type: "InfogainLoss"'), [x, lab, blob(H)], ntop=2)
    loss, count = _infogain_ref(x.data, lab.data.astype(int), H)
    assert np.isclose(top[0].data, loss / count)
    np.testing.assert_allclose(top[1].data.sum(1), 1.0)
    GradientChecker(1e-4, 2e-2, 1701).check_gradient_exhaustive(
        make_layer('type: "InfogainLoss"'), [x, lab, blob(H)], empty_tops(1), check_bottom=0)
    path = str(tmp_path / "H.binaryproto")
    with open(path, "wb") as f:
        f.write(array_to_blobproto(H.reshape(1, 1, 4, 4).astype(np.float32)).SerializeToString())
    text = ('type: "INFOGAIN_LOSS" infogain_loss_param { source: "%s" } '
            'loss_param { ignore_label: 1 }' % path)
    top = forward(make_layer(text), [x, lab])
    loss, count = _infogain_ref(x.data, lab.data.astype(int), H.astype(np.float32), ignore=1)
    assert np.isclose(top[0].data, loss / count, rtol=1e-6)
    GradientChecker(1e-4, 2e-2, 1701).check_gradient_exhaustive(
        make_layer(text), [x, lab], empty_tops(1), check_bottom=0)
    with pytest.raises(CaffeError, match="source"):
        make_layer('type: "InfogainLoss"').setup([x, lab], empty_tops(1))


# --- Accuracy ----------------------------------------------------------------------------------
def _acc_ref(x, lab, k, ignore=None):
    correct = count = 0
    per_hit, per_seen = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for i in range(x.shape[0]):
        if ignore is not None and lab[i] == ignore:
            continue
        better = sum(x[i, c] >= x[i, lab[i]] for c in range(x.shape[1]))
        ok = better - 1 < k
        correct += ok
        count += 1
        per_seen[lab[i]] += 1
        per_hit[lab[i]] += ok
    return correct / count, np.where(per_seen > 0, per_hit / np.maximum(per_seen, 1), 0)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_accuracy_top_k_and_per_class(k):
    x = gaussian_blobs([(40, 5)])[0]
    lab = labels((40,), 5, seed=11)
    top = forward(make_layer('type: "Accuracy" accuracy_param { top_k: %d }' % k), [x, lab], 2)
    acc, per = _acc_ref(x.data, lab.data.astype(int), k)
    assert 0 < acc <= 1 and np.isclose(top[0].data, acc)
    assert top[1].shape == (5,)
    np.testing.assert_allclose(top[1].data, per)


def test_accuracy_ties_count_as_wrong_and_ignore_label():
    lab = blob([0, 1, 2, 1])
    const = blob(np.ones((4, 3)))
    top = forward(make_layer('type: "ACCURACY"'), [const, lab])
    assert top[0].data == 0.0                             # constant scores: every label tied
    top = forward(make_layer('type: "Accuracy" accuracy_param { top_k: 3 }'), [const, lab])
    assert top[0].data == 1.0                             # better - 1 = 2 < 3
    x = blob([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]])
    top = forward(make_layer('type: "Accuracy" accuracy_param { ignore_label: 1 }'), [x, lab], 2)
    assert np.isclose(top[0].data, 1 / 2)                 # labels 0 (right) and 2 (wrong)
    np.testing.assert_allclose(top[1].data, [1.0, 0.0, 0.0])
    top = forward(make_layer('type: "Accuracy" accuracy_param { ignore_label: 7 }'),
                  [x, blob([7, 7, 7, 7])])
    assert top[0].data == 0.0                             # nothing counted
    with pytest.raises(CaffeError, match="top_k"):
        make_layer('type: "Accuracy" accuracy_param { top_k: 4 }').setup([x, lab], empty_tops(1))
    with pytest.raises(ShapeError):
        make_layer('type: "Accuracy"').setup([x, blob([0, 1])], empty_tops(1))


def test_accuracy_spatial_axis():
    x = gaussian_blobs([(2, 4, 3, 2)])[0]
    lab = labels((2, 1, 3, 2), 4, seed=12)
    top = forward(make_layer('type: "Accuracy" accuracy_param { axis: 1 }'), [x, lab])
    xs = x.data.transpose(0, 2, 3, 1).reshape(-1, 4)
    acc, _ = _acc_ref(xs, lab.data.reshape(-1).astype(int), 1)
    assert np.isclose(top[0].data, acc)


def test_accuracy_and_euclidean_in_a_net(tmp_path):
    proto = tmp_path / "net.prototxt"
    proto.write_text("""
        force_backward: true
        layer { name: "in" type: "Input" top: "x" top: "y" top: "x2"
                input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } shape { dim: 4 dim: 3 } } }
        layer { name: "acc" type: "Accuracy" bottom: "x" bottom: "y" top: "acc" }
        layer { name: "l2" type: "EuclideanLoss" bottom: "x" bottom: "x2" top: "l2" }
    """)
    net = caffe.Net(str(proto), caffe.TEST)
    net.blobs["x"].data[...] = np.eye(4, 3)
    net.blobs["y"].data[...] = [0, 1, 2, 0]        # row 3 is all zeros: a tie, so wrong
    net.blobs["x2"].data[...] = 0
    out = net.forward()
    assert np.isclose(out["acc"], 0.75)
    assert np.isclose(out["l2"], 3 / 4 / 2)
    net.backward()                                 # Accuracy has no backward: a no-op
    np.testing.assert_allclose(net.blobs["x2"].diff, -np.eye(4, 3) / 4)
