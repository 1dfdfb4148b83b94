"""Python layers, exactly as pycaffe: ``type: "Python"``, ``python_param { module layer
param_str }``; the class subclasses ``caffe.Layer`` and defines setup/reshape/forward/backward."""
import importlib
import os
import sys

from minicaffe.errors import NetError
from minicaffe.layer import Layer, register


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


def _import(module_name, layer_name, net_dir=None):
    added = []
    for d in (os.getcwd(), net_dir):
        if d and d not in sys.path:
            sys.path.insert(0, d)
            added.append(d)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise NetError("Python layer %s: cannot import module '%s' (%s); put its directory on "
                       "PYTHONPATH" % (layer_name, module_name, exc)) from None
    finally:
        for d in added:
            sys.path.remove(d)
    return module


@register("Python", "PYTHON")
class PythonLayer(Layer):
    """Runs a user's ``caffe.Layer`` subclass. Param blobs it adds with ``self.blobs.add_blob``
    are the layer's learnable blobs (saved, shared and updated like any other)."""

    def __init__(self, layer_param, phase=None):
        super().__init__(layer_param, phase)
        p = layer_param.python_param
        if not p.module or not p.layer:
            raise NetError("Python layer %s: python_param needs both 'module' and 'layer'"
                           % self.name)
        module = _import(p.module, self.name)
        cls = getattr(module, p.layer, None)
        if cls is None:
            raise NetError("Python layer %s: module '%s' has no class '%s'"
                           % (self.name, p.module, p.layer))
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
