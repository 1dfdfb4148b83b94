"""Weight fillers (include/caffe/filler.hpp), drawing from the global generator.

An unspecified filler is ``constant`` 0, as in Caffe. fan_in = count / shape[0],
fan_out = count / shape[1]; xavier is U(±sqrt(3/n)) and msra N(0, sqrt(2/n)) with n chosen by
``variance_norm`` (FAN_IN default, so Caffe's xavier is *not* Glorot unless AVERAGE).
"""
import numpy as np

from . import backend
from .errors import CaffeError
from .proto import caffe_pb2


def _fans(shape):
    count = int(np.prod(shape)) if shape else 1
    fan_in = count // shape[0] if len(shape) > 0 and shape[0] else count
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else count
    return fan_in, fan_out


def _n(param, shape):
    fan_in, fan_out = _fans(shape)
    vn = param.variance_norm
    if vn == caffe_pb2.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if vn == caffe_pb2.FillerParameter.FAN_OUT:
        return float(fan_out)
    return float(fan_in)


def _check(param):
    """Values numpy would refuse with a bare ValueError, or divide by: as CaffeErrors naming the
    filler's field (the net adds the file and the layer)."""
    kind = param.type
    if kind == "gaussian" and param.std < 0:
        raise CaffeError("gaussian filler: std must be >= 0, got %g" % param.std)
    if kind == "uniform" and param.min > param.max:
        raise CaffeError("uniform filler: min (%g) must be <= max (%g)" % (param.min, param.max))


def fill(blob, param):
    """Fill ``blob.data`` according to a FillerParameter (``param`` may be None: constant 0)."""
    data = blob.data
    shape = blob.shape
    if param is None:
        data[...] = 0
        return blob
    kind = param.type
    _check(param)
    if not data.size:
        return blob   # nothing to draw (and xavier/msra's fan would be 0)
    rng = backend.rng()
    if kind == "constant":
        data[...] = param.value
    elif kind == "uniform":
        data[...] = rng.uniform(param.min, param.max, shape)
    elif kind == "gaussian":
        data[...] = rng.normal(param.mean, param.std, shape)
        if param.sparse >= 0:
            if len(shape) < 2:
                raise CaffeError("gaussian filler: sparse needs a blob with at least 2 axes")
            p = param.sparse / float(shape[0])
            data *= rng.random(shape) < p
    elif kind == "xavier":
        s = np.sqrt(3.0 / _n(param, shape))
        data[...] = rng.uniform(-s, s, shape)
    elif kind == "msra":
        data[...] = rng.normal(0.0, np.sqrt(2.0 / _n(param, shape)), shape)
    elif kind == "positive_unitball":
        flat = data.reshape(shape[0] if shape else 1, -1)
        flat[...] = rng.uniform(0.0, 1.0, flat.shape)
        flat /= flat.sum(axis=1, keepdims=True)
    elif kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise CaffeError("bilinear filler needs a 4-D blob with square kernels, got %s" % (shape,))
        k = shape[3]
        f = np.ceil(k / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        x = np.arange(k)
        w = 1 - np.abs(x / f - c)
        data[...] = np.outer(w, w)
    else:
        raise CaffeError("Unknown filler type %r (known: constant, uniform, gaussian, xavier, "
                         "msra, positive_unitball, bilinear)" % kind)
    return blob


