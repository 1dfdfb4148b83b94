"""The DAH layers: GPU = CPU (all bandwidth modes, the authors' variants), finite differences
in GPU mode."""
import numpy as np
import pytest
from gpu_helpers import compare, gauss, gradcheck_gpu


def labels(n, classes, seed=0):
    return np.random.default_rng(seed).integers(0, classes, n).astype(float)


@pytest.mark.parametrize("params", ["sigma: 1 sigma: 4", "kernel_num: 3 bandwidth: MEDIAN",
                                    "kernel_num: 5 kernel_mul: 2 bandwidth: MEAN",
                                    "kernel_num: 3 bandwidth: MEDIAN pairing: RANDOM"])
def test_mmd(params):
    spec = 'type: "MMDLoss" loss_weight: 1.5 mmd_param { %s }' % params
    compare(spec, [gauss(5, 3), gauss(4, 3, seed=1) + 0.5])
    compare(spec, [gauss(4, 2, 2), gauss(6, 2, 2, seed=1)], dtype=np.float32)


def test_mmd_fix_gamma_and_gradient():
    compare('type: "MMDLoss" mmd_param { fix_gamma: true }', [gauss(4, 3), gauss(4, 3, seed=2)])
    gradcheck_gpu('type: "MMDLoss" mmd_param { sigma: 1 sigma: 4 }',
                  [gauss(4, 3, seed=3), gauss(4, 3, seed=4)])
    gradcheck_gpu('type: "MMDLoss" mmd_param { sigma: 1 sigma: 4 pairing: RANDOM }',
                  [gauss(5, 3, seed=3), gauss(4, 3, seed=4)])


HASH = ['type: "HashLoss"',
        'type: "HashLoss" hash_loss_param { scale: 0.5 similar_weight: 10 '
        'quantization_weight: 0.3 normalization: BATCH_SIZE } loss_weight: 2']


@pytest.mark.parametrize("spec", HASH)
def test_hash(spec):
    compare(spec, [gauss(5, 4), labels(5, 3)], propagate_down=[True, False])
    compare(spec, [gauss(5, 4), labels(5, 3)], propagate_down=[True, False], dtype=np.float32)


def test_hash_gradient():
    gradcheck_gpu(HASH[1], [gauss(4, 3, seed=5), labels(4, 2)], check_bottom=0)


@pytest.mark.parametrize("params", ["num_classes: 3", "num_classes: 5 scale: 0.7",
                                    "num_classes: 5 diversity_weight: 0.6"])   # class 3, 4 absent
def test_entropy(params):
    spec = 'type: "EntropyLoss" loss_weight: 0.8 entropy_loss_param { %s }' % params
    compare(spec, [gauss(3, 4), gauss(5, 4, seed=1), labels(5, 3)],
            propagate_down=[True, True, False])
    compare(spec, [gauss(3, 4), gauss(5, 4, seed=1), labels(5, 3)],
            propagate_down=[True, True, False], dtype=np.float32)


def test_entropy_large_codes_and_gradient():
    compare('type: "EntropyLoss" entropy_loss_param { num_classes: 2 }',
            [gauss(3, 4) * 30, gauss(4, 4, seed=1) * 30, labels(4, 2)],
            propagate_down=[True, True, False])
    gradcheck_gpu('type: "EntropyLoss" entropy_loss_param { num_classes: 2 }',
                  [gauss(3, 3, seed=6), gauss(4, 3, seed=7), labels(4, 2)], check_bottom=0)
    gradcheck_gpu('type: "EntropyLoss" entropy_loss_param { num_classes: 2 }',
                  [gauss(3, 3, seed=6), gauss(4, 3, seed=7), labels(4, 2)], check_bottom=1)


def test_quantization_and_gradient_scaler():
    compare('type: "QuantizationLoss" quantization_loss_param { normalization: BATCH_SIZE }',
            [gauss(3, 4)])
    gradcheck_gpu('type: "QuantizationLoss"', [gauss(3, 2, seed=8)])
    spec = ('type: "GradientScaler" gradient_scaler_param { lower_bound: 0 upper_bound: 1 '
            'alpha: 10 max_iter: 100 }')
    compare(spec, [gauss(2, 3)], iteration=30)


def test_entropy_diversity_gradient():
    gradcheck_gpu('type: "EntropyLoss" entropy_loss_param { num_classes: 3 diversity_weight: 0.8 }',
                  [gauss(4, 3, seed=6), gauss(5, 3, seed=7), labels(5, 3)], check_bottom=0)
