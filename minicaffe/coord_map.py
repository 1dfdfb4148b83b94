"""pycaffe's coord_map: how the spatial coordinates of two NetSpec tops relate, and ``crop``,
which writes the Crop layer that aligns one top to another (as FCN's nets do).

A map is (axis, a, b): output coordinate ``y = a·x + b`` for input coordinate ``x`` along every
axis from ``axis`` on; ``a`` and ``b`` are arrays with one value per spatial axis, or scalars
for an identity. Per layer type (``coord_map``):

- Convolution, Pooling, Im2col: ``a = 1/s``, ``b = (p - (k_eff - 1)/2)/s`` with stride s, pad p
  and the dilated kernel ``k_eff = (k - 1)·d + 1``;
- Deconvolution: ``a = s``, ``b = (k_eff - 1)/2 - p``;
- Crop: ``a = 1``, ``b = -offset`` on ``crop_param.axis - 1``;
- the pointwise layers of ``PASS_THROUGH_LAYERS``: the identity (None, 1, 0);
- any other type has no map (UndefinedMapException): the walk stops there.

``coord_map_from_to(top_from, top_to)`` walks back from both tops to a common bottom, composing
maps, and returns the map from ``top_to``'s coordinates to ``top_from``'s. The parameters are
read from the Functions' keyword arguments, given flat (``kernel_size=3``) or inside their
``*_param`` dict (pycaffe reads only the flat form, and ``convolution_param``).
"""
import numpy as np

from .errors import CaffeError
from .net_spec import layers as L

__all__ = ["PASS_THROUGH_LAYERS", "coord_map", "compose", "inverse", "coord_map_from_to",
           "crop", "conv_params", "crop_params", "UndefinedMapException",
           "AxisMismatchException", "UnconnectedTopsError", "CropError"]

# pycaffe's list, plus Clip, Swish (BVLC layers newer than it) and minicaffe's GradientScaler
PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Clip", "Dropout", "Eltwise",
                       "ELU", "Exp", "GradientScaler", "Log", "LRN", "MVN", "Power", "PReLU",
                       "ReLU", "Scale", "Sigmoid", "Split", "Swish", "TanH", "Threshold"]


class CoordMapError(CaffeError):
    """Tops whose coordinates cannot be related, or a crop that cannot be made."""


class UndefinedMapException(CoordMapError):
    """A layer type with no coordinate map (pycaffe's name)."""


class AxisMismatchException(CoordMapError):
    """Two maps along different axes (pycaffe's name)."""


class UnconnectedTopsError(CoordMapError, RuntimeError):
    """No common bottom reachable through mapped layers; also the RuntimeError pycaffe raises."""


class CropError(CoordMapError, AssertionError):
    """A crop with a scale other than 1, a negative or a fractional offset; also the
    AssertionError pycaffe raises (it uses ``assert``)."""


def _params(fn, message):
    return fn.params.get(message, fn.params)


def conv_params(fn):
    """(axis, stride, effective kernel size, pad) of a Convolution, Deconvolution, Im2col or
    Pooling Function, as arrays with one value per spatial axis (or one for all)."""
    p = _params(fn, "pooling_param" if fn.type_name == "Pooling" else "convolution_param")
    legacy = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"} & set(p)
    if legacy:
        raise CoordMapError("%s: coord_map does not read the _h/_w parameters (%s); give "
                            "kernel_size, stride and pad" % (fn.type_name, ", ".join(sorted(legacy))))
    if "kernel_size" not in p:
        raise CoordMapError("%s: coord_map needs its kernel_size" % fn.type_name)
    ks = np.array(p["kernel_size"], ndmin=1)
    dilation = np.array(p.get("dilation", 1), ndmin=1)
    return (p.get("axis", 1), np.array(p.get("stride", 1), ndmin=1), (ks - 1) * dilation + 1,
            np.array(p.get("pad", 0), ndmin=1))


def crop_params(fn):
    """(axis, offset) of a Crop Function; Caffe's defaults axis 2 and offset 0."""
    p = _params(fn, "crop_param")
    return p.get("axis", 2), np.array(p.get("offset", 0), ndmin=1)


def coord_map(fn):
    """The (axis, a, b) of one Function (see the module docstring)."""
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, ks, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (ks - 1) / 2) / stride
    if fn.type_name == "Deconvolution":
        axis, stride, ks, pad = conv_params(fn)
        return axis, stride, (ks - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset   # the map's axis is the last one not cropped
    raise UndefinedMapException("%s has no coordinate map" % fn.type_name)


def compose(base_map, next_map):
    """``next_map`` applied after ``base_map``: scales multiply, the further shift is scaled
    by the base scale."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is not None and ax2 is not None and ax1 != ax2:
        raise AxisMismatchException("cannot compose coordinate maps along axes %s and %s"
                                    % (ax1, ax2))
    return (ax2 if ax1 is None else ax1), a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The map back: ``x = (y - b)/a``."""
    ax, a, b = coord_map
    return ax, 1 / a, -b / a


def _mapped_bottoms(top):
    # a Crop's second bottom only gives the output size: its coordinates are not mapped
    inputs = top.fn.inputs
    return inputs[:1] if top.fn.type_name == "Crop" else inputs


def _walk_back(start, maps, stop=None):
    """Fill ``maps`` {top: map from ``start`` down to top} breadth-first; return the first top
    that is in ``stop`` (then the walk ends), or None."""
    frontier = [start]
    while frontier:
        top = frontier.pop(0)
        if stop is not None and top in stop:
            return top
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mapped_bottoms(top):
            maps[bottom] = compose(maps[top], step)
            frontier.append(bottom)
    return None


def coord_map_from_to(top_from, top_to):
    """The map from ``top_to``'s coordinates to ``top_from``'s, through their nearest common
    bottom (all paths between two tops are assumed to map alike, as in pycaffe)."""
    from_maps = {top_from: (None, 1, 0)}
    _walk_back(top_from, from_maps)
    to_maps = {top_to: (None, 1, 0)}
    common = _walk_back(top_to, to_maps, stop=from_maps)
    if common is None:
        raise UnconnectedTopsError("Could not compute map between tops; are they connected by "
                                   "spatial layers?")
    return compose(to_maps[common], inverse(from_maps[common]))


def crop(top_from, top_to):
    """A Crop layer (a Top) cutting ``top_from`` to ``top_to``'s size and alignment: axis and
    offsets from ``coord_map_from_to``. CropError when the scales differ or an offset is
    negative or fractional."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not np.all(a == 1):
        raise CropError("scale mismatch on crop (a = %s)" % a)
    if not np.all(b <= 0):
        raise CropError("cannot crop negative offset (b = %s)" % b)
    if not np.all(np.round(b) == b):
        raise CropError("cannot crop noninteger offset (b = %s)" % b)
    return L.Crop(top_from, top_to,
                  crop_param=dict(axis=ax + 1, offset=[int(v) for v in -np.round(b).ravel()]))
