"""The GPU path, from the CPU-only suite.

``tests/gpu`` (every layer's GPU forward/backward against its CPU code, finite differences in
GPU mode, the blobs' device sync, the solver in both modes) runs in a subprocess under Numba's
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` must be set before numba is imported, hence the
separate process); on a machine with a CUDA GPU it runs on the hardware instead. The kernels'
argument types seen there are then compiled to PTX for a real device (sm_90) when libNVVM can be
found (no GPU or driver needed), since the simulator never type-checks a kernel.
"""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
GPU_TESTS = os.path.join(HERE, "gpu")


def _real_gpu():
    """A usable CUDA device, probed in a child so this process never initialises CUDA."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    code = "from numba import cuda; import sys; sys.exit(0 if cuda.is_available() else 1)"
    try:
        return subprocess.run([sys.executable, "-c", code], env=env, timeout=120,
                              capture_output=True).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="module")
def gpu_suite(tmp_path_factory):
    sigs = str(tmp_path_factory.mktemp("kernels") / "signatures.json")
    env = dict(os.environ, MINICAFFE_GPU_TESTS="1", MINICAFFE_KERNEL_SIGNATURES=sigs)
    real = _real_gpu()
    if real:
        env.pop("NUMBA_ENABLE_CUDASIM", None)
    else:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           GPU_TESTS], env=env, capture_output=True, text=True, timeout=1500)
    return proc, sigs, real


def test_gpu_suite(gpu_suite):
    proc, _, real = gpu_suite
    tail = (proc.stdout[-6000:] + "\n" + proc.stderr[-3000:])
    assert proc.returncode == 0, tail
    last = proc.stdout.strip().splitlines()[-1]
    assert " passed" in last, tail
    if not real:  # under the simulator everything runs (a skip there means no simulator)
        assert "skipped" not in last, tail


def test_kernels_compile_for_the_device(gpu_suite):
    proc, sigs, real = gpu_suite
    if real:
        pytest.skip("the kernels ran on the hardware")
    if proc.returncode != 0 or not os.path.exists(sigs):
        pytest.skip("the simulator run failed (see test_gpu_suite)")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    tool = os.path.join(GPU_TESTS, "kernel_signatures.py")
    if subprocess.run([sys.executable, tool, "available"], env=env,
                      capture_output=True).returncode != 0:
        pytest.skip("no libNVVM to compile with (the CUDA toolkit or the nvidia-nvvm wheel)")
    with open(sigs) as f:
        assert len(json.load(f)) > 50
    out = subprocess.run([sys.executable, tool, "compile", sigs], env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]


def test_gpu_mode_without_cuda_is_one_clear_error():
    """Importing never needs CUDA; asking for GPU mode without it says what to install."""
    code = ("import minicaffe as caffe\n"
            "try:\n"
            "    caffe.set_mode_gpu()\n"
            "except caffe.backend.GPUUnavailableError as e:\n"
            "    print('ERROR', e)\n")
    env = dict(os.environ, NUMBA_DISABLE_CUDA="1")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ERROR GPU mode needs a CUDA device" in out.stdout
    assert "pip install 'minicaffe[gpu]'" in out.stdout
