"""Python layers, exactly as pycaffe: ``type: "Python"``, ``python_param { module layer
param_str }``; the class subclasses ``caffe.Layer`` and defines setup/reshape/forward/backward.

A prototxt with a Python layer runs code: the module is imported (from PYTHONPATH, then
beside the prototxt, then the current directory) and the named class instantiated; a name
that is not a ``caffe.Layer`` subclass (``module: "os" layer: "system"``) is refused.
"""
import importlib
import importlib.machinery
import logging
import os
import sys

from minicaffe.errors import NetError
from minicaffe.layer import Layer, register

log = logging.getLogger("minicaffe")


class BlobVec(list):
    """``self.blobs`` of a Python layer: a list with pycaffe's ``add_blob(*shape)``."""

    def __init__(self, owner):
        super().__init__()
        self._owner = owner

    def add_blob(self, *shape):
        self.append(self._owner._wrapper.make_blob(shape))
        return self[-1]


class PyLayer:
    """pycaffe's ``caffe.Layer``: subclass it and override ``setup(bottom, top)``,
    ``reshape(bottom, top)``, ``forward(bottom, top)``, ``backward(top, propagate_down,
    bottom)``. ``self.param_str``, ``self.phase``, ``self.blobs`` are set before ``setup``."""

    def __init__(self, layer_param=None):
        self.layer_param = layer_param
        self.param_str = layer_param.python_param.param_str if layer_param is not None else ""
        self.phase = int(layer_param.phase) if layer_param is not None else 0
        self.blobs = BlobVec(self)
        self._wrapper = None

    @property
    def type(self):
        return "Python"

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


def _search_path(net_dir):
    """Where a Python layer's module is looked for, in order: ``sys.path`` as Python has it
    (PYTHONPATH, installed packages) without the current directory, then the prototxt's own
    folder, then the current directory."""
    cwd = os.getcwd()
    here = {"", ".", cwd}
    dirs = [d for d in sys.path if d not in here and os.path.abspath(d) != cwd]
    return dirs + [d for d in (net_dir, cwd) if d]


def _import(module_name, layer_name, net_dir=None):
    """Import ``module_name`` for the Python layer ``layer_name`` (see ``_search_path``). When
    the module is in both the prototxt's folder and the current directory, the prototxt's
    wins and a warning names both."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    top = module_name.split(".")[0]
    found = []
    for d in _search_path(net_dir):
        spec = importlib.machinery.PathFinder.find_spec(top, [d])
        if spec is not None:
            found.append((d, spec.origin or d))
    if not found:   # built-in, or found by an import hook (editable installs): as Python does
        try:
            return importlib.import_module(module_name)
        except ImportError:
            raise NetError("Python layer %s: cannot import module '%s': not on PYTHONPATH, "
                           "beside the prototxt (%s) or in the current directory (%s)"
                           % (layer_name, module_name, net_dir or "-", os.getcwd())) from None
    where, origin = found[0]
    others = [o for _, o in found[1:] if os.path.realpath(o) != os.path.realpath(origin)]
    if others:
        log.warning("Python layer %s: module '%s' is imported from %s; %s also has one, "
                    "which is not used", layer_name, module_name, origin, others[0])
    sys.path.insert(0, where)
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise NetError("Python layer %s: cannot import module '%s' from %s (%s)"
                       % (layer_name, module_name, origin, exc)) from None
    finally:
        sys.path.remove(where)


@register("Python", "PYTHON")
class PythonLayer(Layer):
    """Runs a user's ``caffe.Layer`` subclass. Param blobs it adds with ``self.blobs.add_blob``
    are the layer's learnable blobs (saved, shared and updated like any other)."""

    def __init__(self, layer_param, phase=None, net_dir=None):
        super().__init__(layer_param, phase, net_dir)
        p = layer_param.python_param
        if not p.module or not p.layer:
            raise NetError("Python layer %s: python_param needs both 'module' and 'layer'"
                           % self.name)
        module = _import(p.module, self.name, net_dir)
        cls = getattr(module, p.layer, None)
        if cls is None:
            raise NetError("Python layer %s: module '%s' has no class '%s'"
                           % (self.name, p.module, p.layer))
        if not (isinstance(cls, type) and issubclass(cls, PyLayer)):
            raise NetError("Python layer %s: %s.%s is not a caffe.Layer subclass (it is %s); "
                           "refusing to call it" % (self.name, p.module, p.layer,
                                                    type(cls).__name__))
        self.impl = cls(layer_param)
        if not isinstance(getattr(self.impl, "blobs", None), BlobVec):
            self.impl.blobs = BlobVec(self.impl)
        self.impl._wrapper = self
        self.impl.param_str = p.param_str
        self.impl.phase = self.phase

    def layer_setup(self, bottom, top):
        self.impl.setup(bottom, top)
        self.blobs = self.impl.blobs

    def reshape(self, bottom, top):
        self.impl.reshape(bottom, top)

    def forward_cpu(self, bottom, top):
        self.impl.forward(bottom, top)

    def backward_cpu(self, top, propagate_down, bottom):
        self.impl.backward(top, propagate_down, bottom)
