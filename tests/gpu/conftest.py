"""GPU-path tests: every layer's GPU forward/backward against its CPU code, finite differences
in GPU mode, the blobs' host/device sync, the solver in both modes.

They need a CUDA device or Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` set before numba
is imported). The main suite runs them in a subprocess (``tests/test_gpu_simulator.py``);
by hand: ``NUMBA_ENABLE_CUDASIM=1 python -m pytest -q tests/gpu`` (on a GPU machine without
the variable, they run on the hardware).
"""
import os

import pytest

from minicaffe import backend

if os.environ.get("MINICAFFE_KERNEL_SIGNATURES") and backend.simulator_enabled():
    from kernel_signatures import install_recorder
    install_recorder(os.environ["MINICAFFE_KERNEL_SIGNATURES"])


def pytest_collection_modifyitems(config, items):
    if backend.gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device or NUMBA_ENABLE_CUDASIM=1 (set before "
                                   "numba is imported)")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def _back_to_cpu():
    yield
    backend.set_mode_cpu()
