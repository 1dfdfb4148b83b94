import os

import numpy as np
import pytest

import minicaffe as caffe

ZOO = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "zoo"))

# tests/gpu needs a CUDA device or the simulator (NUMBA_ENABLE_CUDASIM=1 before numba is
# imported): test_gpu_simulator.py runs it in a subprocess that sets MINICAFFE_GPU_TESTS=1.
collect_ignore = [] if os.environ.get("MINICAFFE_GPU_TESTS") == "1" else ["gpu"]


@pytest.fixture(autouse=True)
def _cpu_and_seed():
    caffe.set_mode_cpu()
    caffe.set_random_seed(1701)
    yield


@pytest.fixture
def tmpdir_path(tmp_path):
    return str(tmp_path)


def write(tmp_path, name, text):
    p = os.path.join(str(tmp_path), name)
    with open(p, "w") as f:
        f.write(text)
    return p


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)
