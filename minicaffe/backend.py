"""The one module that knows about devices.

It holds the global mode (CPU or GPU, as ``Caffe::mode()``), the device id, the random
number generator (``Caffe::rng_stream``), and the host <-> device copies used by the blobs'
lazy sync. Importing it never touches a GPU or a driver: CUDA is probed only when GPU mode is
asked for, and a missing CUDA raises one clear error that says what to install.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict

import numpy as np
from numpy.typing import NDArray

from .errors import CaffeError
from .proto import caffe_pb2

CPU, GPU = "CPU", "GPU"
_log = logging.getLogger("minicaffe")

_state: Dict[str, Any] = {"mode": CPU, "device": 0, "rng": np.random.default_rng(), "seed": None}
_cuda: Dict[str, Any] = {"checked": False, "module": None, "why": ""}


class GPUUnavailableError(CaffeError):
    """GPU mode was asked for where no usable CUDA device exists."""


def simulator_enabled() -> bool:
    """True when Numba's CUDA simulator runs GPU kernels on the CPU (tests)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"


def cuda() -> Any:
    """numba.cuda when a device (or the simulator) is usable, else raise GPUUnavailableError."""
    if not _cuda["checked"]:
        _cuda["checked"] = True
        try:
            from numba import cuda as nc
            if nc.is_available():
                _cuda["module"] = nc
            else:
                _cuda["why"] = "numba found no CUDA driver or device"
        except Exception as exc:  # broken toolkit installs raise all sorts of things
            _cuda["why"] = "numba.cuda could not be imported: %s" % exc
    if _cuda["module"] is None:
        raise GPUUnavailableError(
            "GPU mode needs a CUDA device: %s. Install the GPU extra "
            "(pip install 'minicaffe[gpu]'; numba-cuda and the CUDA toolkit wheels) on a "
            "machine with an NVIDIA driver, or run on the CPU (omit --gpu / "
            "solver_mode: CPU). NUMBA_ENABLE_CUDASIM=1 runs the kernels in Numba's "
            "simulator for testing." % _cuda["why"])
    return _cuda["module"]


def gpu_available() -> bool:
    try:
        cuda()
        return True
    except GPUUnavailableError:
        return False


def set_mode_cpu() -> None:
    _state["mode"] = CPU


def set_mode_gpu() -> None:
    cuda()  # fail here, at the user's request, not in the middle of a forward pass
    _state["mode"] = GPU


def set_device(device_id: int) -> None:
    device_id = int(device_id)
    if device_id < 0:
        raise CaffeError("device id must be >= 0, got %d" % device_id)
    _state["device"] = device_id
    if _state["mode"] == GPU or _cuda["module"] is not None:
        nc = cuda()
        if not simulator_enabled():
            n = len(nc.gpus)
            if device_id >= n:
                raise GPUUnavailableError("no CUDA device %d (this machine has %d)" % (device_id, n))
            nc.select_device(device_id)


def mode() -> str:
    return _state["mode"]


def device() -> int:
    return _state["device"]


def set_random_seed(seed: int) -> None:
    """Seed the global generator (Caffe::set_random_seed); fillers, dropout and shuffles use it."""
    _state["seed"] = int(seed)
    _state["rng"] = np.random.default_rng(int(seed))


def rng() -> np.random.Generator:
    """The global np.random.Generator."""
    return _state["rng"]


def rng_state() -> Dict[str, Any]:
    return _state["rng"].bit_generator.state


def set_rng_state(state: Dict[str, Any]) -> None:
    _state["rng"].bit_generator.state = state


# --- host <-> device copies: the blobs' lazy head calls these ---------------------------------

def to_device(host_array: NDArray[Any], device_array: Any = None) -> Any:
    """Copy a host array to the device (into device_array when it has the same size)."""
    nc = cuda()
    if device_array is not None and device_array.size == host_array.size:
        device_array.copy_to_device(host_array.reshape(device_array.shape))
        return device_array
    return nc.to_device(host_array)


def to_host(device_array: Any, host_array: NDArray[Any]) -> NDArray[Any]:
    """Copy a device array into an existing host array."""
    device_array.copy_to_host(host_array.reshape(device_array.shape))
    return host_array


def synchronize() -> None:
    """Wait for the device's queued work (timings); a no-op in CPU mode."""
    if _state["mode"] == GPU:
        cuda().synchronize()


class Timer:
    """pycaffe's caffe.Timer (util/benchmark.hpp): ``start()``, ``stop()``, ``ms`` (the last
    start-to-stop interval, or up to now while running; 0 before the first start). In GPU
    mode it waits for the device's queued work at start and stop, as Caffe's CUDA events
    time it."""

    def __init__(self) -> None:
        self._start = 0.0   # perf_counter() at start()
        self._elapsed = 0.0
        self.running = False

    def start(self) -> None:
        synchronize()
        self._start = time.perf_counter()
        self.running = True

    def stop(self) -> None:
        if self.running:
            synchronize()
            self._elapsed = time.perf_counter() - self._start
            self.running = False

    @property
    def ms(self) -> float:
        if self.running:
            self.stop()   # as Caffe's MilliSeconds()
        return 1000.0 * self._elapsed

    @property
    def seconds(self) -> float:
        return self.ms / 1000.0


def select_device(gpu: Any, solver_param: Any = None, local_rank: Any = None) -> None:
    """--gpu N wins; else an explicit solver_mode: GPU (the proto default is ignored, as Caffe).
    A solver file that asks for GPU on a machine without one falls back to the CPU with a
    warning (every public solver file says solver_mode: GPU); --gpu without a GPU is an error.
    One rank of a data-parallel job (``local_rank``: its index on its machine) takes GPU
    ``local_rank`` for ``--gpu all``, the ``local_rank``-th id of a list, a single id as
    given, and ``device_id + local_rank`` for solver_mode: GPU."""
    if gpu is not None and gpu != "" and local_rank is not None:
        ids = str(gpu).split(",")
        if ids[0] == "all":
            ids = [str(local_rank)]
        elif len(ids) > 1:
            if local_rank >= len(ids):
                raise CaffeError("--gpu %s lists %d GPUs but this machine runs at least %d ranks "
                                 "(one GPU per rank)" % (gpu, len(ids), local_rank + 1))
            ids = [ids[local_rank]]
        gpu = ids[0]
    if gpu is not None and gpu != "":
        ids = str(gpu).split(",")
        if ids[0] == "all":
            ids = ["0"]
        if len(ids) > 1:
            _log.warning("Multi-GPU training runs on one process here; using GPU %s "
                         "(see docs/mpi.md for MPI data-parallel training)", ids[0])
        try:
            dev = int(ids[0])
        except ValueError:
            raise CaffeError("--gpu must be a device id or 'all', got %r" % gpu) from None
        set_mode_gpu()
        set_device(dev)
        _log.info("Using GPU %d", dev)
        return
    if solver_param is not None and solver_param.HasField("solver_mode") and \
            solver_param.solver_mode == caffe_pb2.SolverParameter.GPU:
        if gpu_available():
            dev = solver_param.device_id + (local_rank or 0)
            set_mode_gpu()
            set_device(dev)
            _log.info("Using GPU %d", dev)
            return
        _log.warning("The solver asks for solver_mode: GPU but no CUDA device is usable; "
                     "training on the CPU")
    set_mode_cpu()
    _log.info("Use CPU.")
