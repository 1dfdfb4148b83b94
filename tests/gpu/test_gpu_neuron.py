"""Neuron layers: GPU = CPU (float64 and float32, in place too) and finite differences in GPU
mode."""
import numpy as np
import pytest
from gpu_helpers import compare, gauss, gradcheck_gpu

SHAPE = (2, 3, 2, 2)

CASES = {
    "relu": ('type: "ReLU"', "gauss"),
    "relu_leaky": ('type: "ReLU" relu_param { negative_slope: 0.1 }', "gauss"),
    "prelu": ('type: "PReLU" prelu_param { filler { type: "gaussian" } }', "gauss"),
    "prelu_shared": ('type: "PReLU" prelu_param { channel_shared: true }', "gauss"),
    "elu": ('type: "ELU" elu_param { alpha: 0.5 }', "gauss"),
    "sigmoid": ('type: "Sigmoid"', "gauss"),
    "tanh": ('type: "TanH"', "gauss"),
    "absval": ('type: "AbsVal"', "gauss"),
    "power": ('type: "Power" power_param { power: 0.37 scale: 0.83 shift: 2.4 }', "positive"),
    "power_1": ('type: "Power" power_param { power: 1 scale: 0.83 shift: -2.4 }', "gauss"),
    "power_2": ('type: "Power" power_param { power: 2 scale: 0.34 shift: -2.4 }', "gauss"),
    "power_scale0": ('type: "Power" power_param { power: 0.37 scale: 0 shift: 1.5 }', "gauss"),
    "exp": ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 1 }', "gauss"),
    "log": ('type: "Log" log_param { base: 2 scale: 0.5 shift: 3 }', "gauss"),
    "bnll": ('type: "BNLL"', "gauss"),
    "swish": ('type: "Swish" swish_param { beta: 1.5 }', "gauss"),
    "clip": ('type: "Clip" clip_param { min: -0.5 max: 0.6 }', "gauss"),
    "dropout": ('type: "Dropout" dropout_param { dropout_ratio: 0.4 }', "gauss"),
}
IN_PLACE = ["relu", "prelu", "elu", "sigmoid", "power", "log", "swish", "clip", "dropout"]


def _x(kind, seed=0):
    x = gauss(*SHAPE, seed=seed)
    return np.abs(x) + 0.5 if kind == "positive" else x


@pytest.mark.parametrize("name", sorted(CASES))
def test_gpu_equals_cpu(name):
    spec, kind = CASES[name]
    compare(spec, [_x(kind)])


@pytest.mark.parametrize("name", IN_PLACE)
def test_gpu_equals_cpu_in_place(name):
    spec, kind = CASES[name]
    compare(spec, [_x(kind)], in_place=True)


@pytest.mark.parametrize("name", ["relu", "prelu", "tanh", "dropout"])
def test_gpu_equals_cpu_float32(name):
    spec, kind = CASES[name]
    compare(spec, [_x(kind)], dtype=np.float32)


def test_dropout_test_phase_and_threshold():
    compare(CASES["dropout"][0], [_x("gauss")], phase=1)
    compare('type: "Threshold" threshold_param { threshold: 0.2 }', [_x("gauss")],
            backward=False)


@pytest.mark.parametrize("name", ["relu_leaky", "prelu", "elu", "sigmoid", "power", "log",
                                  "bnll", "swish", "dropout"])
def test_gradient_in_gpu_mode(name):
    spec, kind = CASES[name]
    gradcheck_gpu(spec, [_x(kind, seed=3)], threshold=1e-2 if kind == "positive" else 1e-3)
