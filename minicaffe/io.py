"""pycaffe's ``caffe.io``: arrays <-> BlobProto / Datum, mean files, and the image helpers of
pycaffe's scripts (``load_image``, ``resize_image``, ``oversample``, ``Transformer``).

Large blobs are written and read as raw packed bytes: building a repeated float field element
by element costs seconds on a 60 M-parameter model, a memcpy does not. Images go through
Pillow (pycaffe uses scikit-image): ``load_image`` gives the same float RGB in [0, 1].
"""


import numpy as np

from .errors import ArgumentError, CaffeError
from .proto import caffe_pb2

# the BlobProto conversions live with the proto files (protoio); caffe.io has them too
from .protoio import (  # noqa: F401
    BlobProtoShapeError,
    array_to_blobproto,
    array_to_blobproto_into,
    blobproto_bytes,
    blobproto_shape,
    blobproto_to_array,
    load_mean,
)
from .transformer import datum_to_array as _datum_to_array, open_image


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
