"""pycaffe's ``caffe`` package, on minicaffe: an existing pycaffe program runs unchanged.

This module is the ``caffe`` namespace as BVLC's ``python/caffe/__init__.py`` builds it:
``caffe.Net``, the solvers, ``caffe.layers`` / ``caffe.params`` (the NetSpec generators),
``caffe.NetSpec``, ``caffe.to_proto``, ``caffe.io``, ``caffe.Classifier``, ``caffe.Detector``,
``caffe.Timer``, ``caffe.layer_type_list()``, ``caffe.TRAIN`` / ``TEST`` and the mode, seed and
log functions. Opt in, either way:

    python -m minicaffe.pycaffe script.py [ARGS...]      # also: -m MODULE [ARGS...], -c CODE
    import minicaffe; minicaffe.install_caffe_alias()   # then `import caffe` anywhere

``install_caffe_alias`` registers ``caffe`` and its submodules (``caffe.proto``,
``caffe.proto.caffe_pb2``, ``caffe.io``, ``caffe.draw``, ``caffe.net_spec``, ``caffe.coord_map``,
``caffe.classifier``, ``caffe.detector``, ``caffe.pycaffe``) in ``sys.modules``. It never
shadows a real pycaffe: when ``import caffe`` would find one (``importlib.util.find_spec``), or
another module ``caffe`` is already imported, it refuses with a one-line CaffeError.

Why a separate namespace: in minicaffe, ``minicaffe.layers`` is the package of layer
implementations; pycaffe's ``caffe.layers`` is the NetSpec generator. Here ``caffe.layers`` is
pycaffe's; with ``import minicaffe as caffe`` use ``from minicaffe.net_spec import layers as L``.

What differs from pycaffe: ``Blob.count`` is minicaffe's method ``count()`` (pycaffe: a
property); NCCL is absent (``has_nccl()`` is False; ``minicaffe.parallel`` trains data-parallel);
``detect_selective_search`` needs the MATLAB tool as in pycaffe.
"""
import importlib.util
import logging
import sys

from .. import classifier, coord_map, detector, draw, io, net_spec, proto  # noqa: F401  (caffe.<submodule>)
from ..backend import Timer, set_device, set_mode_cpu, set_mode_gpu, set_random_seed  # noqa: F401
from ..classifier import Classifier  # noqa: F401
from ..detector import Detector  # noqa: F401
from ..errors import ArgumentError, CaffeError
from ..glog import setup_logging
from ..layer import layer_type_list  # noqa: F401
from ..layers.python import PyLayer as Layer  # noqa: F401
from ..net import Net  # noqa: F401
from ..net_spec import NetSpec, layers, params, to_proto  # noqa: F401
from ..proto import caffe_pb2
from ..solver import AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver, SGDSolver, get_solver  # noqa: F401

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST
__version__ = "1.0.0"   # the pycaffe API this namespace follows (minicaffe.__version__ is ours)

_GLOG_LEVELS = {0: "INFO", 1: "WARNING", 2: "ERROR", 3: "FATAL"}


def init_log(level=0, stderr=True):
    """pycaffe's caffe.init_log: minicaffe's log in glog format on stderr from ``level`` up
    (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL). minicaffe always logs to stderr."""
    if level not in _GLOG_LEVELS:
        raise ArgumentError("init_log: level must be 0 (INFO) to 3 (FATAL), got %r" % (level,))
    setup_logging(_GLOG_LEVELS[level])


def log(message):
    """pycaffe's caffe.log: one INFO line in minicaffe's log."""
    logging.getLogger("minicaffe").info("%s", message)


# pycaffe's multi-GPU bookkeeping: one solver, no NCCL (minicaffe.parallel is data-parallel)
_solvers = {"count": 1, "rank": 0, "multiprocess": False}


def solver_count():
    return _solvers["count"]


def set_solver_count(count):
    _solvers["count"] = int(count)


def solver_rank():
    return _solvers["rank"]


def set_solver_rank(rank):
    _solvers["rank"] = int(rank)


def set_multiprocess(value):
    _solvers["multiprocess"] = bool(value)


def has_nccl():
    return False


class NCCL:
    """pycaffe's NCCL wrapper; minicaffe has no NCCL (``has_nccl()`` is False)."""

    def __init__(self, *args, **kwargs):
        raise CaffeError("minicaffe has no NCCL (caffe.has_nccl() is False); for data-parallel "
                         "training use minicaffe.parallel.DataParallel")


def _aliases():
    this = sys.modules[__name__]
    return {"caffe": this, "caffe.pycaffe": this, "caffe.proto": proto,
            "caffe.proto.caffe_pb2": caffe_pb2, "caffe.io": io, "caffe.draw": draw,
            "caffe.net_spec": net_spec, "caffe.coord_map": coord_map,
            "caffe.classifier": classifier, "caffe.detector": detector}


def install_caffe_alias():
    """Make ``import caffe`` (and its submodules) give this namespace; returns it. Calling it
    again does nothing. Refuses (CaffeError) when a real pycaffe is importable or another
    ``caffe`` module is already imported: the user's pycaffe is never shadowed."""
    aliases = _aliases()
    current = sys.modules.get("caffe")
    if current is aliases["caffe"]:
        return current
    if current is not None:
        raise CaffeError("a module 'caffe' is already imported (%s); not replacing it with "
                         "minicaffe's pycaffe alias" % (getattr(current, "__file__", None) or current))
    spec = importlib.util.find_spec("caffe")
    if spec is not None:
        where = spec.origin or ", ".join(spec.submodule_search_locations or []) or "?"
        raise CaffeError("pycaffe is installed (%s): `import caffe` gives it, so minicaffe's alias "
                         "is not installed (use `import minicaffe as caffe` for minicaffe)" % where)
    sys.modules.update(aliases)
    return aliases["caffe"]
