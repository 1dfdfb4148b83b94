"""The data transformer (Caffe's DataTransformer) and the image I/O the data layers share.

``DataTransformer(transform_param, phase)`` turns one image or array into a float CHW array:

- crop (``crop_size``): a random offset ``Rand(H - crop + 1)``, ``Rand(W - crop + 1)`` in TRAIN,
  the centre ``(H - crop) / 2`` in TEST;
- mirror: when ``mirror: true`` each item is flipped left-right with p = 0.5 in **both**
  phases (Caffe has no phase check there);
- ``out = (x - mean) * scale``, mean from ``mean_file`` (a full-size BlobProto indexed at the
  crop offset, before the mirror) or ``mean_value`` (once, or once per channel; both is an
  error).

The random draws per item are made in Caffe's order (mirror, then h_off, then w_off) from the
transformer's own generator, seeded from ``backend.rng()`` when the transformer is built (as
Caffe's InitRand seeds from caffe_rng_rand()), so a prefetch thread can draw them without
touching the global generator and results depend only on ``caffe.set_random_seed``.

Images are decoded with Pillow into uint8 HWC arrays in **BGR** order (Caffe reads through
OpenCV). ``resize_linear`` reproduces OpenCV's default ``cv::resize`` (INTER_LINEAR, 11-bit
fixed-point weights) in NumPy: Pillow's own bilinear ``resize`` filters over a wider support
when shrinking, which OpenCV's INTER_LINEAR does not.
"""
import io as _io
import os

import numpy as np

from . import backend
from .errors import CaffeError
from .protoio import load_mean

TRAIN, TEST = 0, 1

_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


class ImageReadError(CaffeError):
    """An image that is missing or cannot be decoded."""


# --- image I/O --------------------------------------------------------------------------------

def _pil():
    from PIL import Image
    return Image


def _to_array(img, is_color):
    """A decoded PIL image → uint8 HWC: BGR (is_color True), 1 channel (False), or the file's
    own (None: cv::IMREAD_ANYCOLOR, gray stays gray). Gray from colour follows OpenCV's
    imread: libjpeg's own grayscale output for JPEG (``open_image`` asks for it), libpng's
    rgb_to_gray weights for PNG, cv::cvtColor's for the other formats."""
    if is_color is None:
        is_color = img.mode not in _GRAY_MODES
    if is_color:
        return np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1])
    if img.mode in _GRAY_MODES:
        return np.asarray(img.convert("L"))[:, :, None].copy()
    rgb = np.asarray(img.convert("RGB")).astype(np.int32)
    r, g, b = rgb[:, :, 0], rgb[:, :, 1], rgb[:, :, 2]
    if img.format == "PNG":
        gray = (9797 * r + 19234 * g + 3737 * b) >> 15
    else:
        gray = (4899 * r + 9617 * g + 1868 * b + 8192) >> 14
    return gray.astype(np.uint8)[:, :, None]


def open_image(fp, what, is_color=True):
    """Decode the image at ``fp`` (a path or a file object; ``what`` names it in errors) with
    Pillow; ImageReadError when it is missing or does not decode."""
    Image = _pil()
    try:
        img = Image.open(fp)
        if is_color is False and img.format == "JPEG" and img.mode != "CMYK":
            img.draft("L", img.size)  # decode straight to gray, as OpenCV's JPEG reader does
        img.load()
        return img
    except FileNotFoundError:
        raise ImageReadError("could not open or find image %s" % what) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError("could not decode image %s (%s)" % (what, exc)) from None


def read_image(path, height=0, width=0, is_color=True):
    """ReadImageToCVMat: the image at ``path`` as uint8 HWC (BGR, or 1 channel when
    ``is_color`` is false; native channels when it is None), resized to (height, width) with
    ``resize_linear`` when both are > 0. Raises ImageReadError."""
    if os.path.isdir(path):
        raise ImageReadError("could not open image %s: it is a directory" % path)
    arr = _to_array(open_image(path, path, is_color), is_color)
    if height > 0 and width > 0:
        arr = resize_linear(arr, height, width)
    return arr


def decode_image(data, is_color=None, what="<encoded datum>"):
    """cv::imdecode of encoded bytes (PNG, JPEG, ...) → uint8 HWC (see ``read_image``)."""
    return _to_array(open_image(_io.BytesIO(bytes(data)), what, is_color), is_color)


_ENCODE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "bmp": "BMP", "tif": "TIFF",
                   "tiff": "TIFF", "ppm": "PPM", "pgm": "PPM", "pbm": "PPM", "webp": "WEBP"}


def encode_image(arr, encode_type):
    """cv::imencode: a uint8 HWC BGR (or 1-channel) array → bytes of ``encode_type``
    (png, jpg, ...). JPEG uses quality 95, OpenCV's default."""
    fmt = _ENCODE_FORMATS.get(encode_type.lower().lstrip("."))
    if fmt is None:
        raise CaffeError("unsupported encode_type %r (use one of: %s)"
                         % (encode_type, ", ".join(sorted(_ENCODE_FORMATS))))
    Image = _pil()
    if arr.shape[2] == 1:
        img = Image.fromarray(np.ascontiguousarray(arr[:, :, 0]), "L")
    else:
        img = Image.fromarray(np.ascontiguousarray(arr[:, :, ::-1]), "RGB")
    buf = _io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _linear_taps(src, dst, clamp_weights):
    """OpenCV's INTER_LINEAR source indices and 11-bit weights along one axis. Outside the
    image the indices are clamped; along x the weight is reset to (1, 0) there as well, along
    y it is not (cv::resize treats the axes differently)."""
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = f - s.astype(np.float32)
    if clamp_weights:
        lo, hi = s < 0, s >= src - 1
        f[lo | hi] = 0
        s[lo] = 0
        s[hi] = src - 1
    w1 = np.rint(f * np.float32(2048)).astype(np.int64)
    w0 = np.rint((np.float32(1) - f) * np.float32(2048)).astype(np.int64)
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), w0, w1


def resize_linear(img, height, width):
    """cv::resize(img, (width, height)) with INTER_LINEAR on a uint8 HWC image, in OpenCV's
    fixed-point arithmetic (11-bit weights; a horizontal pass, then a vertical pass that
    rounds each term), edge pixels replicated."""
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img.copy()
    sx, sx1, a0, a1 = _linear_taps(w, width, True)
    sy, sy1, b0, b1 = _linear_taps(h, height, False)
    src = img.astype(np.int64)
    rows = src[:, sx] * a0[None, :, None] + src[:, sx1] * a1[None, :, None]
    out = (((b0[:, None, None] * (rows[sy] >> 4)) >> 16)
           + ((b1[:, None, None] * (rows[sy1] >> 4)) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def read_image_list(source, what="list file"):
    """An ImageData list file → [(path, label, line_number)]: each line is "path label", split
    at the LAST space (so paths may contain spaces); blank lines are skipped."""
    try:
        with open(source, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise CaffeError("%s %s does not exist" % (what, source)) from None
    except IsADirectoryError:
        raise CaffeError("%s %s is a directory, not a file" % (what, source)) from None
    except OSError as exc:
        raise CaffeError("cannot read %s %s: %s" % (what, source, exc.strerror or exc)) from None
    text = raw.decode("utf-8", errors="surrogateescape")
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.rstrip()
        if not line.strip():
            continue
        path, sep, label = line.rpartition(" ")
        if not sep or not path:
            raise CaffeError("%s %s line %d: expected \"path label\", got %r"
                             % (what, source, lineno, line))
        try:
            label = int(label)
        except ValueError:
            raise CaffeError("%s %s line %d: the label %r is not an integer"
                             % (what, source, lineno, label)) from None
        entries.append((path, label, lineno))
    return entries


# --- the transformer --------------------------------------------------------------------------

class DataTransformer:
    """Caffe's DataTransformer for one layer. ``who`` names the layer in error messages."""

    def __init__(self, param, phase, who="Data layer"):
        self.param = param
        self.phase = int(phase)
        self.who = who
        self.crop_size = int(param.crop_size)
        self.do_mirror = bool(param.mirror)
        self.scale = float(param.scale)
        self.force_color = bool(param.force_color)
        self.force_gray = bool(param.force_gray)
        if self.force_color and self.force_gray:
            raise CaffeError("%s: transform_param cannot set both force_color and force_gray"
                             % who)
        self.mean = None
        self.mean_values = [float(v) for v in param.mean_value]
        if param.mean_file:
            if self.mean_values:
                raise CaffeError("%s: transform_param cannot specify mean_file and mean_value at "
                                 "the same time" % who)
            try:
                mean = np.asarray(load_mean(param.mean_file), dtype=np.float32)
            except CaffeError as exc:
                raise CaffeError("%s: transform_param mean_file: %s" % (who, exc)) from None
            if mean.ndim == 2:
                mean = mean[None]
            if mean.ndim != 3:
                raise CaffeError("%s: mean_file %s has shape %s, expected (C, H, W) or "
                                 "(1, C, H, W)" % (who, param.mean_file, mean.shape))
            self.mean = mean
        self.rng = None
        if self.needs_rand:  # InitRand: one draw from the global generator, at set-up
            self.rng = np.random.default_rng(int(backend.rng().integers(0, 2 ** 63)))

    @property
    def needs_rand(self):
        return self.do_mirror or (self.phase == TRAIN and self.crop_size > 0)

    @property
    def is_color(self):
        """How to decode encoded data: True (force_color), False (force_gray), None (native)."""
        return True if self.force_color else (False if self.force_gray else None)

    def infer_shape(self, shape):
        """The (C, H', W') a (C, H, W) input becomes (InferBlobShape)."""
        c, h, w = shape
        if self.crop_size:
            if h < self.crop_size or w < self.crop_size:
                raise CaffeError("%s: crop_size %d is larger than the input (%d x %d)"
                                 % (self.who, self.crop_size, h, w))
            return (c, self.crop_size, self.crop_size)
        return (c, h, w)

    def draw(self, shape):
        """The random decisions for one item of (C, H, W) ``shape``: (mirror, h_off, w_off),
        drawn in Caffe's order (mirror first)."""
        _, h, w = shape
        mirror = bool(self.do_mirror and self.rng.integers(2))
        h_off = w_off = 0
        if self.crop_size:
            if self.phase == TRAIN:
                h_off = int(self.rng.integers(h - self.crop_size + 1))
                w_off = int(self.rng.integers(w - self.crop_size + 1))
            else:
                h_off, w_off = (h - self.crop_size) // 2, (w - self.crop_size) // 2
        return mirror, h_off, w_off

    def apply(self, x, out, mirror, h_off, w_off):
        """out[...] = (crop(x) - crop(mean)) * scale, flipped when ``mirror``; x is (C, H, W)."""
        c, h, w = x.shape
        oc, oh, ow = self.infer_shape(x.shape)
        if out.shape != (oc, oh, ow):
            raise CaffeError("%s: the output has shape %s, the transformed input %s"
                             % (self.who, tuple(out.shape), (oc, oh, ow)))
        cols = slice(w_off + ow - 1, w_off - 1 if w_off else None, -1) if mirror \
            else slice(w_off, w_off + ow)
        src = x[:, h_off:h_off + oh, cols]
        dt = out.dtype
        if self.mean is not None:
            if self.mean.shape != (c, h, w):
                raise CaffeError("%s: mean_file %s has shape %s but the input is %s (the mean "
                                 "must have the input's full size)"
                                 % (self.who, self.param.mean_file, self.mean.shape, (c, h, w)))
            np.subtract(src, self.mean[:, h_off:h_off + oh, cols], out=out, dtype=dt)
        elif self.mean_values:
            if len(self.mean_values) not in (1, c):
                raise CaffeError("%s: specify either 1 mean_value or as many as channels: %d "
                                 "(got %d)" % (self.who, c, len(self.mean_values)))
            mv = np.asarray(self.mean_values, dtype=dt)
            mv = np.broadcast_to(mv, (c,)).reshape(c, 1, 1)
            np.subtract(src, mv, out=out, dtype=dt)
        else:
            out[...] = src
        if self.scale != 1:
            np.multiply(out, dt.type(self.scale), out=out)
        return out

    def transform(self, x, out=None, dtype=np.float32, hwc=False):
        """Draw and apply one item: ``x`` is a (C, H, W) array, or a uint8 (H, W, C) image
        when ``hwc``. Returns ``out`` (allocated when None)."""
        x = np.asarray(x)
        if hwc:
            if x.ndim == 2:
                x = x[:, :, None]
            x = x.transpose(2, 0, 1)
        if x.ndim != 3:
            raise CaffeError("%s: expected a (C, H, W) input, got shape %s" % (self.who, x.shape))
        if out is None:
            out = np.empty(self.infer_shape(x.shape), dtype)
        return self.apply(x, out, *self.draw(x.shape))

    def datum_to_array(self, datum, what="datum"):
        """``datum_to_array`` with this layer's force_color/force_gray; errors name the layer."""
        try:
            return datum_to_array(datum, self.is_color, what)
        except ImageReadError:
            raise
        except CaffeError as exc:
            raise CaffeError("%s: %s" % (self.who, exc)) from None


def datum_to_array(datum, is_color=None, what="datum"):
    """A Datum's values as (C, H, W): an encoded image decoded to uint8 CHW (BGR; ``is_color``
    as in ``read_image``), raw ``data`` as uint8 CHW, or ``float_data`` as float32."""
    if datum.encoded:
        return decode_image(datum.data, is_color, what).transpose(2, 0, 1)
    shape = (datum.channels, datum.height, datum.width)
    n = shape[0] * shape[1] * shape[2]
    if n <= 0:
        raise CaffeError("%s has no channels/height/width" % what)
    if datum.data:
        if len(datum.data) != n:
            raise CaffeError("%s holds %d bytes, expected %d (%d x %d x %d)"
                             % ((what, len(datum.data), n) + shape))
        return np.frombuffer(datum.data, np.uint8).reshape(shape)
    if len(datum.float_data) != n:
        raise CaffeError("%s holds %d float_data values, expected %d"
                         % (what, len(datum.float_data), n))
    return np.asarray(datum.float_data, np.float32).reshape(shape)
