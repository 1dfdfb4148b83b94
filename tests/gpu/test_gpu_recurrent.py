"""Recurrent layers: GPU = CPU (values, bottom diffs, param diffs), finite differences in GPU
mode."""
import numpy as np
import pytest
from gpu_helpers import compare, gauss, gradcheck_gpu

FILLERS = 'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.2 }'


def spec(kind, expose=False):
    return ('type: "%s" recurrent_param { num_output: 3 %s %s }'
            % (kind, "expose_hidden: true" if expose else "", FILLERS))


CONT = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0]])   # T = 3, N = 2


@pytest.mark.parametrize("kind,states", [("LSTM", 2), ("RNN", 1)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_recurrent(kind, states, dtype):
    compare(spec(kind), [gauss(3, 2, 4), CONT], propagate_down=[True, False], dtype=dtype)
    compare(spec(kind), [gauss(3, 2, 2, 2), CONT, gauss(2, 3, seed=1)],
            propagate_down=[True, False, True], dtype=dtype)
    h = [gauss(1, 2, 3, seed=5 + i) for i in range(states)]
    compare(spec(kind, True), [gauss(3, 2, 4), np.ones((3, 2)), gauss(2, 3, seed=1)] + h,
            propagate_down=[True, False, True] + [True] * states, n_tops=1 + states, dtype=dtype)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_recurrent_gradient(kind):
    x, xs = gauss(2, 2, 3, seed=2), gauss(2, 2, seed=3)
    cont = np.array([[0.0, 0.0], [1.0, 0.0]])
    # a sample of each blob's elements: every forward under the simulator is slow
    gradcheck_gpu(spec(kind), [x, cont, xs], check_bottom=0, samples=5)
    gradcheck_gpu(spec(kind), [x, cont, xs], check_bottom=2, samples=5)
    # exposed states carry no gradient, as in Caffe: test_recurrent compares their zeros


@pytest.mark.parametrize("cont", [[0.0, 1.0, 1.0], [0.5, 0.0, 1.0]])
def test_lstm_unit(cont):
    bottom = [gauss(1, 3, 2), gauss(1, 3, 8, seed=1), np.array([cont])]
    compare('type: "LSTMUnit"', bottom, propagate_down=[True, True, False], n_tops=2)
    compare('type: "LSTMUnit"', bottom, propagate_down=[True, True, False], n_tops=2,
            dtype=np.float32)
    gradcheck_gpu('type: "LSTMUnit"', bottom, check_bottom=1, n_tops=2)
