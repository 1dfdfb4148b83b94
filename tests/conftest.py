import os

import numpy as np
import pytest

import minicaffe as caffe

# tests/gpu needs a CUDA device or the simulator (NUMBA_ENABLE_CUDASIM=1 before numba is
# imported): test_gpu_simulator.py runs it in a subprocess that sets MINICAFFE_GPU_TESTS=1.
collect_ignore = [] if os.environ.get("MINICAFFE_GPU_TESTS") == "1" else ["gpu"]

# Integration tests (setup.cfg's `integration` marker): these modules as a whole run tools,
# reproduce/train/benchmark or a test suite in subprocesses, or train nets end to end; a
# module that mixes both marks its own with @pytest.mark.integration. Every other test is a
# unit test: `python -m pytest -m "not integration"` runs those alone.
# tests/test_markers.py checks that every module named here exists.
INTEGRATION_MODULES = (
    "test_benchmark.py",
    "test_gpu_simulator.py",
    "test_pycaffe_suite.py",
    "test_reproduce.py",
    "test_reproduce_jobs.py",
    "test_tools_help.py",
    "test_tools_train.py",
    "test_toyhome_by_hand.py",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if os.path.basename(str(item.fspath)) in INTEGRATION_MODULES:
            item.add_marker(pytest.mark.integration)


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
