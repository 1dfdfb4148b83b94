"""Softmax, the losses and Accuracy: GPU = CPU (normalizations, ignore_label, loss weights),
finite differences in GPU mode, label errors raised as on the CPU."""
import numpy as np
import pytest
from gpu_helpers import compare, gauss, gradcheck_gpu

from minicaffe import backend
from minicaffe.blob import Blob
from minicaffe.errors import CaffeError
from minicaffe.gradcheck import make_layer


def labels(*shape, classes=3, seed=0):
    return np.random.default_rng(seed).integers(0, classes, shape).astype(float)


def test_softmax():
    compare('type: "Softmax"', [gauss(2, 3, 2)])
    compare('type: "Softmax" softmax_param { axis: 2 }', [gauss(2, 3, 2)], dtype=np.float32)
    gradcheck_gpu('type: "Softmax"', [gauss(2, 3, seed=1)])


@pytest.mark.parametrize("extra", ["", "loss_param { normalization: FULL }",
                                   "loss_param { ignore_label: 1 normalization: VALID }",
                                   "loss_param { normalization: BATCH_SIZE } loss_weight: 2.5",
                                   "loss_param { normalize: false }"])
def test_softmax_with_loss(extra):
    spec = 'type: "SoftmaxWithLoss" %s' % extra
    compare(spec, [gauss(2, 3, 2), labels(2, 2)], propagate_down=[True, False])


def test_softmax_with_loss_prob_top_and_gradient():
    compare('type: "SoftmaxWithLoss"', [gauss(3, 4), labels(3, classes=4)], n_tops=2,
            propagate_down=[True, False])
    gradcheck_gpu('type: "SoftmaxWithLoss"', [gauss(3, 4, seed=2), labels(3, classes=4)],
                  check_bottom=0)


def test_label_out_of_range_raises_as_on_cpu():
    backend.set_mode_gpu()
    layer = make_layer('type: "SoftmaxWithLoss"')
    x, lab = Blob((2, 3), np.float64), Blob((2,), np.float64)
    x.data[...] = gauss(2, 3)
    lab.data[...] = [0, 3]
    top = [Blob((), np.float64)]
    layer.setup([x, lab], top)
    with pytest.raises(CaffeError, match=r"label values must be in \[0, 3\), got 3"):
        layer.forward([x, lab], top)


@pytest.mark.parametrize("extra", ["", "loss_param { ignore_label: 1 }",
                                   "loss_param { normalization: FULL }"])
def test_sigmoid_cross_entropy(extra):
    spec = 'type: "SigmoidCrossEntropyLoss" %s' % extra
    t = np.random.default_rng(1).random((2, 3))
    t[0, 1] = 1.0
    compare(spec, [gauss(2, 3), t], propagate_down=[True, False])


def test_euclidean_contrastive():
    compare('type: "EuclideanLoss" loss_weight: 3', [gauss(3, 2), gauss(3, 2, seed=1)])
    sim = np.array([1, 0, 0, 1], float)
    a, b = gauss(4, 3), gauss(4, 3, seed=1) * 0.3
    for extra in ["margin: 4", "margin: 0.5 legacy_version: true", "margin: 3 legacy_version: true"]:
        compare('type: "ContrastiveLoss" contrastive_loss_param { %s }' % extra, [a, b, sim],
                propagate_down=[True, True, False])
    gradcheck_gpu('type: "ContrastiveLoss" contrastive_loss_param { margin: 4 }', [a, b, sim],
                  check_bottom=0)


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge(norm):
    compare('type: "HingeLoss" hinge_loss_param { norm: %s }' % norm,
            [gauss(3, 4), labels(3, classes=4)], propagate_down=[True, False])


def test_multinomial_infogain():
    p = np.random.default_rng(3).random((3, 4)) + 0.1
    compare('type: "MultinomialLogisticLoss"', [p, labels(3, classes=4)],
            propagate_down=[True, False])
    h = np.random.default_rng(4).random((3, 3))
    compare('type: "InfogainLoss"', [gauss(2, 3, 2), labels(2, 2), h],
            propagate_down=[True, False, False])
    compare('type: "InfogainLoss" loss_param { ignore_label: 2 }', [gauss(4, 3), labels(4), h],
            propagate_down=[True, False, False], n_tops=2)
    gradcheck_gpu('type: "InfogainLoss"', [gauss(3, 3, seed=5), labels(3), h], check_bottom=0)


@pytest.mark.parametrize("extra", ["", "accuracy_param { top_k: 2 }",
                                   "accuracy_param { ignore_label: 0 }"])
def test_accuracy(extra):
    x = gauss(5, 3)
    x[0] = 0.5  # ties count as wrong
    compare('type: "Accuracy" %s' % extra, [x, labels(5)], backward=False, n_tops=2)
