"""pycaffe's ``caffe.io``: arrays <-> BlobProto / Datum, mean files, and the image helpers of
pycaffe's scripts (``load_image``, ``resize_image``, ``oversample``, ``Transformer``).

Large blobs are written and read as raw packed bytes: building a repeated float field element
by element costs seconds on a 60 M-parameter model, a memcpy does not. Images go through
Pillow (pycaffe uses scikit-image): ``load_image`` gives the same float RGB in [0, 1].
"""

import math
import os

import numpy as np

from .errors import ArgumentError, CaffeError, ModelFileError
from .proto import caffe_pb2
from .transformer import datum_to_array as _datum_to_array, open_image

_F_NUM, _F_CHANNELS, _F_HEIGHT, _F_WIDTH = 1, 2, 3, 4
_F_DATA, _F_DIFF, _F_SHAPE, _F_DDATA, _F_DDIFF = 5, 6, 7, 8, 9


def _varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ModelFileError("truncated varint in a BlobProto")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _packed(field, raw):
    return _varint(field << 3 | 2) + _varint(len(raw)) + raw


def blobproto_bytes(data, diff=None):
    """The wire bytes of a BlobProto holding ``data`` (and ``diff``) with its shape.

    float32 arrays go to data/diff (fields 5/6), float64 to double_data/double_diff (8/9),
    as Blob<double>::ToProto does.
    """
    data = np.asarray(data)
    dims = b"".join(_varint(int(d)) for d in data.shape)
    out = [_packed(_F_SHAPE, _packed(1, dims) if dims else b"")]
    double = data.dtype == np.float64
    fd, ff = (_F_DDATA, _F_DDIFF) if double else (_F_DATA, _F_DIFF)
    dt = "<f8" if double else "<f4"
    out.append(_packed(fd, np.ascontiguousarray(data, dtype=dt).tobytes()))
    if diff is not None:
        out.append(_packed(ff, np.ascontiguousarray(diff, dtype=dt).tobytes()))
    return b"".join(out)


def array_to_blobproto_into(data, proto, diff=None):
    proto.Clear()
    proto.MergeFromString(blobproto_bytes(data, diff))
    return proto


def array_to_blobproto(arr, diff=None):
    """pycaffe's caffe.io.array_to_blobproto: an N-d array → BlobProto (shape + data)."""
    return array_to_blobproto_into(arr, caffe_pb2.BlobProto(), diff)


def _decode_blobproto(raw):
    """Parse BlobProto wire bytes: (shape, legacy dims, {field: ndarray})."""
    pos, n = 0, len(raw)
    legacy, dims, arrays = {}, None, {}
    while pos < n:
        key, pos = _read_varint(raw, pos)
        field, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _read_varint(raw, pos)
            if field in (_F_NUM, _F_CHANNELS, _F_HEIGHT, _F_WIDTH):
                legacy[field] = val - (1 << 64) if val >= 1 << 63 else val
        elif wt == 2:
            ln, pos = _read_varint(raw, pos)
            chunk = raw[pos:pos + ln]
            if len(chunk) != ln:
                raise ModelFileError("truncated BlobProto")
            pos += ln
            if field == _F_SHAPE:
                dims = dims or []
                p = 0
                while p < ln:  # BlobShape: dim=1, packed or not
                    k, p = _read_varint(chunk, p)
                    if k >> 3 == 1 and k & 7 == 2:
                        l2, p = _read_varint(chunk, p)
                        end = p + l2
                        while p < end:
                            v, p = _read_varint(chunk, p)
                            dims.append(v)
                    elif k >> 3 == 1 and k & 7 == 0:
                        v, p = _read_varint(chunk, p)
                        dims.append(v)
                    else:
                        raise ModelFileError("unexpected field in BlobShape")
            elif field in (_F_DATA, _F_DIFF, _F_DDATA, _F_DDIFF):
                dt = "<f8" if field in (_F_DDATA, _F_DDIFF) else "<f4"
                arr = np.frombuffer(chunk, dtype=dt)
                arrays.setdefault(field, []).append(arr)
        elif wt == 5:  # unpacked float
            arrays.setdefault(field, []).append(np.frombuffer(raw[pos:pos + 4], "<f4"))
            pos += 4
        elif wt == 1:  # unpacked double
            arrays.setdefault(field, []).append(np.frombuffer(raw[pos:pos + 8], "<f8"))
            pos += 8
        else:
            raise ModelFileError("unsupported wire type %d in a BlobProto" % wt)
    arrays = {k: (v[0] if len(v) == 1 else np.concatenate(v)) for k, v in arrays.items()}
    return dims, legacy, arrays


def blobproto_shape(proto):
    """The shape a BlobProto describes (legacy num/channels/height/width → 4-D)."""
    if proto.HasField("num") or proto.HasField("channels") or proto.HasField("height") \
            or proto.HasField("width"):
        return (proto.num, proto.channels, proto.height, proto.width)
    return tuple(int(d) for d in proto.shape.dim)


def blobproto_to_array(blob, return_diff=False):
    """pycaffe's caffe.io.blobproto_to_array: data (or diff) reshaped to the blob's shape.

    Float data wins over double data as in Blob::FromProto; the result is float32 for float
    data and float64 for double data.
    """
    dims, legacy, arrays = _decode_blobproto(blob.SerializeToString())
    shape = blobproto_shape(blob)
    fields = (_F_DIFF, _F_DDIFF) if return_diff else (_F_DATA, _F_DDATA)
    arr = arrays.get(fields[0])
    if arr is None:
        arr = arrays.get(fields[1])
    count = math.prod(shape)
    if arr is None:
        if count == 0:
            return np.zeros(shape, np.float32)
        raise ModelFileError("BlobProto has no %s" % ("diff" if return_diff else "data"))
    if arr.size != count:
        raise BlobProtoShapeError("BlobProto of shape %s holds %d values, expected %d%s"
                                  % (shape, arr.size, count, "" if shape else
                                     " (it has no shape: set shape.dim or num/channels/"
                                     "height/width)"))
    return arr.reshape(shape)


class BlobProtoShapeError(ModelFileError, ValueError):
    """A BlobProto whose values do not fill its shape (one without a shape holding more than
    one value included); also a ValueError, which pycaffe raises there."""


def load_mean(path):
    """A mean .binaryproto → array (C, H, W) (the batch axis of a 4-D mean dropped)."""
    from .protoio import read_blob_proto
    try:
        arr = blobproto_to_array(read_blob_proto(path))
    except ModelFileError as exc:
        if str(exc).startswith(os.fspath(path)):
            raise
        raise ModelFileError("%s: %s" % (os.fspath(path), exc)) from None
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def arraylist_to_blobprotovector_str(arraylist):
    """A list of arrays → the bytes of a BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    for arr in arraylist:
        vec.blobs.add().MergeFromString(blobproto_bytes(arr))
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(s):
    """The bytes of a BlobProtoVector → a list of arrays."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(s)
    return [blobproto_to_array(b) for b in vec.blobs]




# --- Datum ------------------------------------------------------------------------------------

def array_to_datum(arr, label=None):
    """pycaffe's array_to_datum: a (C, H, W) array → Datum. uint8 goes to ``data`` (bytes),
    any other dtype to ``float_data``; ``label`` is set only when given."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ArgumentError("array_to_datum: expected a 3-D (C, H, W) array, got shape %s"
                            % (arr.shape,))
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float32).ravel())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum):
    """pycaffe's datum_to_array: (C, H, W), uint8 from ``data``, float32 from ``float_data``
    (pycaffe: float64); an encoded datum is decoded (BGR, as Caffe's data layer reads it).
    The label is ``datum.label``."""
    try:
        return _datum_to_array(datum)
    except CaffeError as exc:
        raise ArgumentError("datum_to_array: %s" % exc) from None


# --- images (pycaffe's scripts: float HxWxK, RGB in [0, 1]) -----------------------------------

# skimage's rgb2gray weights (ITU-R BT.709), which pycaffe's load_image(color=False) uses
_GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], np.float32)
_INTEGER_RANGE = {"1": 1.0, "L": 255.0, "P": 255.0, "I;16": 65535.0, "I;16L": 65535.0,
                  "I;16B": 65535.0, "I;16N": 65535.0, "I": 2.0 ** 31 - 1}


def load_image(filename, color=True):
    """pycaffe's load_image: float32 in [0, 1], (H, W, 3) RGB when ``color`` (gray replicated,
    alpha dropped), else (H, W, 1) intensity (colour converted with skimage's rgb2gray
    weights). ImageReadError (a CaffeError) when the file is missing or does not decode."""
    img = open_image(filename, filename)
    if img.mode in ("LA", "La", "PA"):
        img = img.convert("L" if img.mode != "PA" else "RGB")
    if img.mode in _INTEGER_RANGE and img.mode != "P":
        gray = np.asarray(img, np.float32) / np.float32(_INTEGER_RANGE[img.mode])
        out = gray[:, :, None]
        return np.repeat(out, 3, axis=2) if color else out
    if img.mode == "F":
        out = np.asarray(img, np.float32)[:, :, None]
        return np.repeat(out, 3, axis=2) if color else out
    rgb = np.asarray(img.convert("RGB"), np.float32) / np.float32(255)
    return rgb if color else (rgb @ _GRAY_WEIGHTS)[:, :, None]


_RESAMPLE = {0: "NEAREST", 1: "BILINEAR", 2: "BICUBIC", 3: "BICUBIC"}


def resize_image(im, new_dims, interp_order=1):
    """pycaffe's resize_image: (H, W, K) → (new_dims[0], new_dims[1], K) float32, each channel
    resampled by Pillow (``interp_order`` 0 nearest, 1 bilinear, 2 or 3 bicubic; shrinking
    filters over the source pixels it covers, as skimage's anti-aliased resize)."""
    from PIL import Image
    im = np.asarray(im, np.float32)
    if im.ndim != 3:
        raise ArgumentError("resize_image: expected an (H, W, K) array, got shape %s"
                            % (im.shape,))
    h, w = (int(d) for d in new_dims)
    if h <= 0 or w <= 0:
        raise ArgumentError("resize_image: new_dims must be positive, got %s" % (tuple(new_dims),))
    if interp_order not in _RESAMPLE:
        raise ArgumentError("resize_image: interp_order must be 0, 1, 2 or 3, got %r"
                            % (interp_order,))
    if im.shape[:2] == (h, w):
        return im.copy()
    resample = getattr(Image, _RESAMPLE[interp_order])
    out = np.empty((h, w, im.shape[2]), np.float32)
    for k in range(im.shape[2]):   # mode "F": one float32 channel, no rounding to 8 bits
        chan = Image.fromarray(np.ascontiguousarray(im[:, :, k]))
        out[:, :, k] = np.asarray(chan.resize((w, h), resample))
    return out


def oversample(images, crop_dims):
    """pycaffe's oversample: the 4 corner crops and the centre crop of each (H, W, K) image,
    then the same 5 mirrored left-right: (10·N, crop_h, crop_w, K) float32."""
    images = [np.asarray(im) for im in images]
    if not images:
        raise ArgumentError("oversample: no images given")
    h, w = images[0].shape[:2]
    ch, cw = (int(d) for d in crop_dims)
    if ch > h or cw > w:
        raise ArgumentError("oversample: crop %dx%d is larger than the images (%dx%d)"
                            % (ch, cw, h, w))
    corners = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]
    crops = np.empty((10 * len(images), ch, cw, images[0].shape[2]), np.float32)
    for i, im in enumerate(images):
        for j, (y, x) in enumerate(corners):
            crops[10 * i + j] = im[y:y + ch, x:x + cw]
        crops[10 * i + 5:10 * i + 10] = crops[10 * i:10 * i + 5, :, ::-1]
    return crops


# --- pycaffe's Transformer ---------------------------------------------------------------------

class Transformer:
    """pycaffe's caffe.io.Transformer: turns an (H, W, K) image into a net input (K, H, W)
    and back. ``inputs``: {input name: blob shape (N, K, H, W)}. ``preprocess`` applies, in
    order: float32, resize to the input's (H, W), transpose, channel swap, × raw_scale,
    − mean, × input_scale; ``deprocess`` undoes them."""

    def __init__(self, inputs):
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose, self.channel_swap = {}, {}
        self.raw_scale, self.mean, self.input_scale = {}, {}, {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise ArgumentError("%s is not one of the net inputs: %s" % (in_, sorted(self.inputs)))

    def preprocess(self, in_, data):
        """(H', W', K) → (K, H, W) float32 for input ``in_``."""
        self._check_input(in_)
        x = np.array(data, np.float32)   # a copy: the scaling below never writes into data
        in_dims = self.inputs[in_][2:]
        if x.shape[:2] != in_dims:
            x = resize_image(x, in_dims)
        if in_ in self.transpose:
            x = x.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            x = x[list(self.channel_swap[in_])]
        if in_ in self.raw_scale:
            x = x * np.float32(self.raw_scale[in_])
        if in_ in self.mean:
            x = x - self.mean[in_]
        if in_ in self.input_scale:
            x = x * np.float32(self.input_scale[in_])
        return np.ascontiguousarray(x, np.float32)

    def deprocess(self, in_, data):
        """The inverse of ``preprocess`` (without the resize), on a squeezed copy of ``data``."""
        self._check_input(in_)
        x = np.array(data, np.float32).squeeze()
        if in_ in self.input_scale:
            x = x / np.float32(self.input_scale[in_])
        if in_ in self.mean:
            x = x + self.mean[in_]
        if in_ in self.raw_scale:
            x = x / np.float32(self.raw_scale[in_])
        if in_ in self.channel_swap:
            x = x[np.argsort(self.channel_swap[in_])]
        if in_ in self.transpose:
            x = x.transpose(np.argsort(self.transpose[in_]))
        return x

    def set_transpose(self, in_, order):
        """The axis order that makes an image the input's (K, H, W): (2, 0, 1) for HxWxK."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ArgumentError("set_transpose: the order %s must have %d axes, one per axis of "
                                "an item of input %s" % (tuple(order), len(self.inputs[in_]) - 1,
                                                         in_))
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_, order):
        """The channel order after the transpose: (2, 1, 0) turns RGB into Caffe's BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise ArgumentError("set_channel_swap: the order %s must name the %d channels of "
                                "input %s" % (tuple(order), self.inputs[in_][1], in_))
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_, scale):
        """× scale before the mean: 255 for models trained on [0, 255] images (CaffeNet)."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """The mean to subtract: per channel (K,), or (K, H, W) / (H, W) elementwise, resized
        to the input's (H, W) when it differs."""
        self._check_input(in_)
        mean = np.asarray(mean, np.float32)
        channels, dims = self.inputs[in_][1], self.inputs[in_][1:]
        if mean.ndim == 1:
            if mean.shape[0] != channels:
                raise ArgumentError("set_mean: %d mean values for input %s, which has %d "
                                    "channels" % (mean.shape[0], in_, channels))
            mean = mean[:, None, None]
        else:
            if mean.ndim == 2:
                mean = mean[None]
            if mean.ndim != 3:
                raise ArgumentError("set_mean: the mean must be (K,), (H, W) or (K, H, W), "
                                    "got shape %s" % (mean.shape,))
            if mean.shape != dims:
                mean = resize_image(mean.transpose(1, 2, 0), dims[1:]).transpose(2, 0, 1)
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """× scale after the mean (and every other step)."""
        self._check_input(in_)
        self.input_scale[in_] = scale
