"""minicaffe: a Caffe-compatible layer-graph framework in Python (NumPy + Numba).

``import minicaffe as caffe`` gives pycaffe's surface: ``caffe.Net``, ``caffe.TRAIN``,
``caffe.TEST``, ``caffe.Layer`` (the Python-layer base), the solvers, ``caffe.set_mode_cpu()``,
``caffe.set_mode_gpu()``, ``caffe.set_device()``, ``caffe.set_random_seed()``, ``caffe.io``,
``caffe.NetSpec``, ``caffe.params``, ``caffe.to_proto``, ``caffe.layer_type_list()``,
``caffe.Classifier``, ``caffe.Detector``, ``caffe.Timer``. One name differs: ``minicaffe.layers``
is the package of layer implementations, so pycaffe's NetSpec generator ``caffe.layers`` is
``minicaffe.net_spec.layers`` here. ``minicaffe.install_caffe_alias()`` (or ``python -m
minicaffe.pycaffe script.py``) makes ``import caffe`` itself give pycaffe's namespace, that
``caffe.layers`` included (``minicaffe.pycaffe``).
"""
import logging as _logging
import os as _os

# Idle compute threads must sleep, not spin: Numba's OpenMP threads spinning after each kernel
# keep the cores from OpenBLAS's threads, which run the GEMMs in between (2 threads: LeNet step
# 77 -> 37 ms, VGG_CNN_F 2.18 -> 1.02 s), and OpenBLAS's threads spinning after each product
# (2^28 cycles by default, ~0.1 s) keep them from the convolutions' chunk workers (ToyHome DAH
# net at 2 threads: 118 -> 100 ms a step). A value the user set wins; each is read when its
# library loads (libgomp at the first parallel kernel, OpenBLAS with numpy).
WAIT_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}
WAIT_DEFAULTED = tuple(k for k in WAIT_DEFAULTS if k not in _os.environ)  # tools/benchmark's
for _k in WAIT_DEFAULTED:                                                 # PyTorch runs
    _os.environ[_k] = WAIT_DEFAULTS[_k]                                   # without them
OMP_WAIT_POLICY_DEFAULTED = "OMP_WAIT_POLICY" in WAIT_DEFAULTED

# The compute threads follow the cores this process may use (affinity mask, cgroup CPU quota)
# unless the user set OMP_NUM_THREADS / OPENBLAS_ / MKL_ / NUMBA_NUM_THREADS: set here, before
# numpy and numba load and start their pools (minicaffe/threads.py).
from . import threads  # noqa: E402
threads.apply()

from . import backend, io  # noqa: F401
from .backend import Timer, set_device, set_mode_cpu, set_mode_gpu, set_random_seed  # noqa: F401
from .blob import Blob  # noqa: F401
from .errors import (ArgumentError, CaffeError, LayerTypeError, ModelFileError,  # noqa: F401
                     NetError, PrototxtError, ShapeError)
from .gradcheck import GradientChecker, GradientCheckError  # noqa: F401
from .layer import layer_type_list, layer_types, register  # noqa: F401
from .net import Net  # noqa: F401
from .net_spec import NetSpec, params, to_proto  # noqa: F401
from .proto import caffe_pb2  # noqa: F401
from . import layers as _layers  # noqa: F401  (registers every layer type)
from .layers.python import PyLayer as Layer  # noqa: F401
from .solver import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,  # noqa: F401
                     RMSPropSolver, SGDSolver, Solver, get_solver)
from .classifier import Classifier  # noqa: F401
from .detector import Detector  # noqa: F401
from .pycaffe import install_caffe_alias  # noqa: F401

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST

__version__ = "0.1.0"

_logging.getLogger("minicaffe").addHandler(_logging.NullHandler())
