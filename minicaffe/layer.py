"""Layer base class (Caffe's lifecycle) and the registry of layer types.

A layer subclass declares its arity as class attributes and fills in ``layer_setup``,
``reshape``, ``forward_cpu`` and ``backward_cpu`` (and, where it has kernels, ``forward_gpu`` /
``backward_gpu``; without them GPU mode runs the CPU code through the blobs' lazy sync).
Layers **overwrite** bottom diffs and **accumulate** param diffs, as in Caffe.
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

import numpy as np

from . import backend
from .blob import Blob, ShapeLike
from .errors import LayerTypeError, NetError, ShapeError

#: a caffe_pb2.LayerParameter (protoc's generated classes have no types)
LayerParameter = Any

_REGISTRY: Dict[str, Type[Layer]] = {}
_V1_NAMES: Dict[str, str] = {}

_L = TypeVar("_L", bound="Type[Layer]")


def register(type_name: str, *aliases: str) -> Callable[[_L], _L]:
    """Class decorator: ``@register("InnerProduct", "INNER_PRODUCT")``."""
    def deco(cls: _L) -> _L:
        for name in (type_name,) + aliases:
            if name in _REGISTRY and _REGISTRY[name] is not cls:
                raise ValueError("layer type %r registered twice" % name)
            _REGISTRY[name] = cls
        cls.type = type_name
        return cls
    return deco


def layer_types() -> List[str]:
    """The prototxt type strings that have a layer (sorted, aliases included)."""
    return sorted(_REGISTRY)


def layer_type_list() -> List[str]:
    """pycaffe's caffe.layer_type_list(): the registered types by their names (the V1 enum
    aliases left out), sorted."""
    return sorted({str(cls.type) for cls in _REGISTRY.values()})


def layer_class(type_name: str) -> Type[Layer]:
    try:
        return _REGISTRY[type_name]
    except KeyError:
        pass
    near = [t for t in _REGISTRY if t.lower() == type_name.lower()]
    near = near or difflib.get_close_matches(type_name, _REGISTRY, n=1, cutoff=0.7)
    hint = "; did you mean %r?" % near[0] if near else ""
    raise LayerTypeError("Unknown layer type: %r%s (known types: %s)"
                         % (type_name, hint, ", ".join(layer_types())))


def create_layer(layer_param: LayerParameter, phase: Optional[int] = None,
                 net_dir: Optional[str] = None) -> Layer:
    """The registry's factory (LayerRegistry::CreateLayer). ``net_dir``: the folder of the
    prototxt the layer comes from (Python layers import their module beside it)."""
    cls = layer_class(layer_param.type)
    return cls(layer_param, phase=phase, net_dir=net_dir)


class Layer:
    """Base class. ``self.blobs`` are the learnable (or state) blobs, ``self.layer_param`` the
    LayerParameter, ``self.phase`` TRAIN (0) or TEST (1)."""

    type: Optional[str] = None   # set by @register
    exact_num_bottom = -1
    min_num_bottom = -1
    max_num_bottom = -1
    exact_num_top = -1
    min_num_top = -1
    max_num_top = -1
    equal_num_bottom_top = False
    auto_top_blobs = False       # loss layers: missing tops are created anonymously
    default_loss_weight = 0.0    # LossLayer: 1 on top 0 when the prototxt gives none
    gradcheck_kink: Optional[Tuple[float, float]] = None  # (kink, kink_range) a finite-difference check should skip

    def __init__(self, layer_param: LayerParameter, phase: Optional[int] = None,
                 net_dir: Optional[str] = None) -> None:
        self.layer_param = layer_param
        self.name = layer_param.name
        self.net_dir = net_dir
        if phase is None:
            phase = layer_param.phase
        self.phase = int(phase)
        self.blobs: List[Blob] = []
        self.param_propagate_down: List[bool] = []
        self.loss_weights: List[float] = []
        self.iteration = 0
        self.dtype = np.dtype(np.float32)

    # --- lifecycle (Layer::SetUp) ------------------------------------------------------------
    def setup(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        self.check_blob_counts(bottom, top)
        if bottom:
            self.dtype = bottom[0].dtype
        elif top:
            self.dtype = top[0].dtype
        self.layer_setup(bottom, top)
        self.reshape(bottom, top)
        self.set_loss_weights(top)

    def layer_setup(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """One-time set-up: read params, create ``self.blobs``."""

    def reshape(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        raise NotImplementedError("%s must implement reshape" % type(self).__name__)

    def forward(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> float:
        """Reshape, run the mode's forward, return this layer's weighted loss."""
        self.reshape(bottom, top)
        for t, w in zip(top, self.loss_weights):
            if w:  # the loss weight lives in the top's diff (it may have been reallocated)
                t.set_diff(w)
        if backend.mode() == backend.GPU:
            self.forward_gpu(bottom, top)
        else:
            self.forward_cpu(bottom, top)
        loss = 0.0
        for t, w in zip(top, self.loss_weights):
            if w:
                loss += t.dot_data_diff()
        return loss

    def backward(self, top: Sequence[Blob], propagate_down: Sequence[bool], bottom: Sequence[Blob]) -> None:
        if backend.mode() == backend.GPU:
            self.backward_gpu(top, propagate_down, bottom)
        else:
            self.backward_cpu(top, propagate_down, bottom)

    def forward_cpu(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        raise NotImplementedError

    def backward_cpu(self, top: Sequence[Blob], propagate_down: Sequence[bool], bottom: Sequence[Blob]) -> None:
        """Layers without a gradient (data layers, Accuracy...) leave this as is."""

    def forward_gpu(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Without GPU kernels: the CPU code, on host copies made by the blobs' lazy sync."""
        self.forward_cpu(bottom, top)

    def backward_gpu(self, top: Sequence[Blob], propagate_down: Sequence[bool], bottom: Sequence[Blob]) -> None:
        self.backward_cpu(top, propagate_down, bottom)

    # --- hooks -------------------------------------------------------------------------------
    def allow_force_backward(self, bottom_index: int) -> bool:
        return True

    def get_state(self) -> Any:
        """JSON-able state that a snapshot must keep to resume exactly (data layers' position
        in their stream); None for stateless layers."""
        return None

    def set_state(self, state: Any) -> None:
        """Restore what ``get_state`` returned (None included: a failed restore puts every
        layer back this way)."""

    def set_iteration(self, iteration: int) -> None:
        """The solver hands the iteration count to every layer before each step."""
        self.iteration = int(iteration)

    # --- helpers -----------------------------------------------------------------------------
    def make_blob(self, shape: ShapeLike) -> Blob:
        return Blob(shape, self.dtype)

    def check_blob_counts(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        nb, nt, who = len(bottom), len(top), "%s Layer %s" % (self.type, self.name)
        if self.exact_num_bottom >= 0 and nb != self.exact_num_bottom:
            raise NetError("%s takes %d bottom blob(s) as input, got %d" % (who, self.exact_num_bottom, nb))
        if self.min_num_bottom >= 0 and nb < self.min_num_bottom:
            raise NetError("%s takes at least %d bottom blob(s) as input, got %d" % (who, self.min_num_bottom, nb))
        if self.max_num_bottom >= 0 and nb > self.max_num_bottom:
            raise NetError("%s takes at most %d bottom blob(s) as input, got %d" % (who, self.max_num_bottom, nb))
        if self.exact_num_top >= 0 and nt != self.exact_num_top:
            raise NetError("%s produces %d top blob(s) as output, got %d" % (who, self.exact_num_top, nt))
        if self.min_num_top >= 0 and nt < self.min_num_top:
            raise NetError("%s produces at least %d top blob(s) as output, got %d" % (who, self.min_num_top, nt))
        if self.max_num_top >= 0 and nt > self.max_num_top:
            raise NetError("%s produces at most %d top blob(s) as output, got %d" % (who, self.max_num_top, nt))
        if self.equal_num_bottom_top and nb != nt:
            raise NetError("%s needs as many top blobs as bottom blobs, got %d and %d" % (who, nb, nt))

    def needed_auto_tops(self) -> int:
        """How many tops a loss layer wants when the prototxt gives fewer (AutoTopBlobs)."""
        if not self.auto_top_blobs:
            return 0
        return max(self.min_num_top, self.exact_num_top)

    def set_loss_weights(self, top: Sequence[Blob]) -> None:
        weights = list(self.layer_param.loss_weight)
        if not weights and self.default_loss_weight:
            weights = [self.default_loss_weight] + [0.0] * (len(top) - 1)
        if weights and len(weights) != len(top):
            raise NetError("Layer %s: loss_weight must be unspecified or given once per top "
                           "blob (%d tops, %d loss_weight)" % (self.name, len(top), len(weights)))
        self.loss_weights = [float(w) for w in weights] or [0.0] * len(top)
        for t, w in zip(top, self.loss_weights):
            if w:
                t.diff[...] = w

    def shape_error(self, what: str, got: Sequence[Any], expected: Sequence[Any]) -> ShapeError:
        return ShapeError("%s Layer %s: %s has shape %s, expected %s"
                          % (self.type, self.name, what, tuple(got), tuple(expected)))

    def __repr__(self) -> str:
        return "<%s layer %r>" % (self.type, self.name)


class OneCode:
    """A mixin for a layer whose forward and backward are written once for both devices, as
    ``forward_with(dev, bottom, top)`` and ``backward_with(dev, top, propagate_down, bottom)``:
    ``dev`` is ``HOST`` on the CPU and ``DEVICE`` on the GPU (False and True; the recurrent
    layers put their host and device array operations there). Listed before the Layer base."""
    HOST: Any = False
    DEVICE: Any = True

    def forward_with(self, dev: Any, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        raise NotImplementedError

    def backward_with(self, dev: Any, top: Sequence[Blob], propagate_down: Sequence[bool],
                      bottom: Sequence[Blob]) -> None:
        """Without a gradient: nothing, as Layer.backward_cpu."""

    def forward_cpu(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        self.forward_with(self.HOST, bottom, top)

    def forward_gpu(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        self.forward_with(self.DEVICE, bottom, top)

    def backward_cpu(self, top: Sequence[Blob], propagate_down: Sequence[bool], bottom: Sequence[Blob]) -> None:
        self.backward_with(self.HOST, top, propagate_down, bottom)

    def backward_gpu(self, top: Sequence[Blob], propagate_down: Sequence[bool], bottom: Sequence[Blob]) -> None:
        self.backward_with(self.DEVICE, top, propagate_down, bottom)


class LossLayer(Layer):
    """Two bottoms (predictions, labels), one scalar top with default loss_weight 1."""
    exact_num_bottom = 2
    exact_num_top = 1
    auto_top_blobs = True
    default_loss_weight = 1.0

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 1

    def reshape(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise self.shape_error("label bottom %r" % self.layer_param.bottom[1],
                                   bottom[1].shape, bottom[0].shape[:1] + ("...",))
        top[0].reshape(())


class NeuronLayer(Layer):
    """One bottom, one top of the same shape; in-place allowed."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        top[0].reshape(bottom[0].shape)
