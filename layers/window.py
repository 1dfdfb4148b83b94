"""WindowData: R-CNN's batches of image windows (window_data_layer.cpp), read on the prefetch
thread of the other image data layers."""
import logging

import numpy as np

from minicaffe import backend
from minicaffe.errors import CaffeError
from minicaffe.layer import register
from minicaffe.transformer import DataTransformer, ImageReadError, decode_image, read_image, resize_linear

from .data import _file_tokens, _PrefetchingDataLayer, _rng_state, _set_rng_state, _ShardedStream

log = logging.getLogger("minicaffe")


def read_window_file(path, root_folder, fg_threshold, bg_threshold, who):
    """The window file → (images, fg, bg). ``images``: [(root_folder + path, (C, H, W), line)]
    in file order; ``fg`` / ``bg``: windows (image index, label, overlap, x1, y1, x2, y2).
    A window with overlap >= fg_threshold is foreground (its label must be > 0); one with
    overlap < bg_threshold is background (label and overlap forced to 0); others are dropped.
    Overlaps compare in float32, as Caffe's floats."""
    toks = _file_tokens(path, who, "window file")
    if not toks:
        raise CaffeError("%s: window file %s is empty" % (who, path))
    pos = [0]

    def take(kind, what):
        if pos[0] >= len(toks):
            line = toks[-1][1]
            raise CaffeError("%s: window file %s line %d: ended where %s was expected"
                             % (who, path, line, what))
        tok, line = toks[pos[0]]
        pos[0] += 1
        try:
            return kind(tok), line
        except ValueError:
            raise CaffeError("%s: window file %s line %d: expected %s, got %r"
                             % (who, path, line, what, tok)) from None

    fg_t, bg_t = np.float32(fg_threshold), np.float32(bg_threshold)
    images, fg, bg = [], [], []
    while pos[0] < len(toks):
        tag, line = take(str, "'#'")
        if tag != "#":
            raise CaffeError("%s: window file %s line %d: expected '# image_index', got %r"
                             % (who, path, line, tag))
        index, _ = take(int, "an image index")
        image, line = take(str, "an image path")
        shape = tuple(take(int, what)[0] for what in ("channels", "height", "width"))
        images.append((root_folder + image, shape, line, index))
        num, _ = take(int, "the number of windows")
        for _ in range(num):
            label, wline = take(int, "a class index")
            overlap = np.float32(take(float, "an overlap")[0])
            x1, y1, x2, y2 = (take(int, c)[0] for c in ("x1", "y1", "x2", "y2"))
            if overlap >= fg_t:
                if label <= 0:
                    raise CaffeError("%s: window file %s line %d: a foreground window (overlap "
                                     "%g >= fg_threshold %g) needs a class index > 0, got %d"
                                     % (who, path, wline, overlap, fg_t, label))
                fg.append((index, label, float(overlap), x1, y1, x2, y2, wline))
            elif overlap < bg_t:
                bg.append((index, 0, 0.0, x1, y1, x2, y2, wline))
    for win in fg + bg:
        if not 0 <= win[0] < len(images):
            raise CaffeError("%s: window file %s line %d: image index %d is not one of the %d "
                             "images (Caffe looks images up by their position in the file)"
                             % (who, path, win[7], win[0], len(images)))
    return images, fg, bg


def _round(x):
    """C's round(): half away from zero (x - trunc(x) is exact)."""
    r = np.trunc(x)
    if abs(x - r) >= 0.5:
        r += np.sign(x)
    return int(r)


def window_geometry(box, img_hw, crop_size, context_pad, square, mirror, dtype=np.float32):
    """WindowDataLayer::load_batch's crop: the image region (x1, y1, x2, y2) to cut (inclusive),
    the (height, width) to warp it to and where it goes in the crop_size square (pad_h, pad_w),
    computed in the net's ``dtype`` as Caffe's Dtype arithmetic."""
    x1, y1, x2, y2 = box
    rows, cols = img_hw
    f = np.dtype(dtype).type
    out_h = out_w = crop_size
    pad_h = pad_w = 0
    if context_pad > 0 or square:
        context_scale = f(crop_size) / f(crop_size - 2 * context_pad)
        half_h, half_w = f(f(y2 - y1 + 1) / 2.0), f(f(x2 - x1 + 1) / 2.0)
        cx, cy = f(x1) + half_w, f(y1) + half_h
        if square:
            half_h = half_w = max(half_h, half_w)
        x1, x2 = _round(cx - half_w * context_scale), _round(cx + half_w * context_scale)
        y1, y2 = _round(cy - half_h * context_scale), _round(cy + half_h * context_scale)
        unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
        px1, py1 = max(0, -x1), max(0, -y1)
        px2, py2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
        x1, x2, y1, y2 = x1 + px1, x2 - px2, y1 + py1, y2 - py2
        scale_x, scale_y = f(crop_size) / f(unclipped_w), f(crop_size) / f(unclipped_h)
        out_w = _round(f(x2 - x1 + 1) * scale_x)
        out_h = _round(f(y2 - y1 + 1) * scale_y)
        px1, px2 = _round(f(px1) * scale_x), _round(f(px2) * scale_x)
        py1 = _round(f(py1) * scale_y)
        pad_h = py1
        pad_w = px2 if mirror else px1   # the padding is mirrored too
        out_h = min(out_h, crop_size - pad_h)
        out_w = min(out_w, crop_size - pad_w)
    return (x1, y1, x2, y2), (out_h, out_w), (pad_h, pad_w)


class _WindowSource(_ShardedStream):
    """WindowData's reader (runs on the prefetch thread): one generator for the window and
    mirror draws (Caffe's prefetch_rng_), the images (decoded per window, or their bytes cached
    at set-up), the batches made so far."""

    def __init__(self, who, p, images, fg, bg, crop_size, mirror, mean, mean_values, dtype,
                 cache, seed):
        self.who, self.source, self.images, self.fg, self.bg = who, p.source, images, fg, bg
        self.batch_size, self.crop_size, self.mirror = int(p.batch_size), crop_size, mirror
        self.context_pad, self.square = int(p.context_pad), p.crop_mode == "square"
        self.scale = np.dtype(dtype).type(p.scale)
        self.mean, self.mean_values, self.dtype, self.cache = mean, mean_values, dtype, cache
        num_fg = int(np.float32(self.batch_size) * np.float32(p.fg_fraction))
        self.num_samples = (self.batch_size - num_fg, num_fg)   # background first
        self.rng = np.random.default_rng(seed)
        self.batches = 0

    def _draw(self):
        """The window and mirror draws of one batch: [(window, mirror)], bg then fg."""
        out = []
        for is_fg, n in enumerate(self.num_samples):
            wins = self.fg if is_fg else self.bg
            for _ in range(n):
                win = wins[int(self.rng.integers(2 ** 32)) % len(wins)]
                out.append((win, bool(self.mirror and int(self.rng.integers(2 ** 32)) % 2)))
        return out

    def _image(self, index, line):
        path = self.images[index][0]
        try:
            if self.cache is not None:
                return decode_image(self.cache[index], True, path)
            return read_image(path, 0, 0, True)
        except ImageReadError as exc:
            raise CaffeError("%s: window file %s line %d: %s"
                             % (self.who, self.source, line, exc)) from None

    def _paste(self, out, win, mirror):
        img = self._image(win[0], self.images[win[0]][2])
        rows, cols = img.shape[:2]
        (x1, y1, x2, y2), (h, w), (pad_h, pad_w) = window_geometry(
            win[3:7], (rows, cols), self.crop_size, self.context_pad, self.square, mirror,
            self.dtype)
        if not (0 <= x1 <= x2 < cols and 0 <= y1 <= y2 < rows) or h <= 0 or w <= 0:
            raise CaffeError("%s: window file %s line %d: window (%d, %d, %d, %d) does not fit "
                             "its image %s (%d x %d)" % (self.who, self.source, win[7], *win[3:7],
                                                         self.images[win[0]][0], cols, rows))
        warped = resize_linear(img[y1:y2 + 1, x1:x2 + 1], h, w)
        if mirror:
            warped = warped[:, ::-1]
        x = warped.transpose(2, 0, 1).astype(self.dtype)
        if self.mean is not None:
            off = (self.mean.shape[2] - self.crop_size) // 2
            x = x - self.mean[:, off + pad_h:off + pad_h + h, off + pad_w:off + pad_w + w]
        elif self.mean_values is not None:
            x = x - self.mean_values
        out[:, pad_h:pad_h + h, pad_w:pad_w + w] = x * self.scale

    def read_batch(self):
        c = self.crop_size
        data = np.zeros((self.batch_size, 3, c, c), self.dtype)
        labels = np.empty(self.batch_size, self.dtype)
        for i, (win, mirror) in enumerate(self._draw()):
            self._paste(data[i], win, mirror)
            labels[i] = win[1]
        self.batches += 1
        return data, labels

    def skip_batch(self):
        self._draw()
        self.batches += 1

    def get_state(self):
        return {"offset": self.batches, "rng": _rng_state(self.rng)}

    def set_state(self, s):
        self.batches = int(s.get("offset", 0))
        _set_rng_state(self.rng, s.get("rng"))


@register("WindowData", "WINDOW_DATA")
class WindowDataLayer(_PrefetchingDataLayer):
    """WindowData (R-CNN; deprecated in Caffe): batches of windows cut from images, warped to
    crop_size x crop_size. Tops: data (batch_size, 3, crop_size, crop_size) and label.

    window_data_param: source (the window file: repeated ``# image_index``, image path,
    channels, height, width, num_windows, then num_windows lines ``class_index overlap x1 y1
    x2 y2``, 0-based inclusive pixel boxes), batch_size, fg_threshold (0.5), bg_threshold
    (0.5), fg_fraction (0.25), context_pad (0), crop_mode ("warp" or "square"), scale (1),
    cache_images (false: keep the image files' bytes in memory), root_folder (a prefix of every
    image path). From transform_param (where Caffe's upgrade puts V1's fields): crop_size
    (required), mirror, mean_file or mean_value.

    Each batch: int(batch_size · fg_fraction) foreground windows (overlap >= fg_threshold,
    label the class) after batch_size minus that many background ones (overlap < bg_threshold,
    label 0), each drawn uniformly (a 32-bit draw modulo the count), then a mirror draw when
    mirror is on, in both phases. The window is grown by context_pad pixels of context on each
    side of the warped crop (``square`` first makes it the tightest enclosing square), clipped
    to the image, cut, warped with OpenCV's INTER_LINEAR (``resize_linear``), flipped, and
    pasted at the clipped part's offset into a zero crop; values are ``(pixel - mean) * scale``
    (the mean file indexed at ((W_mean - crop_size) / 2 + pad), unmirrored; the padding stays
    0). Images are read in colour (BGR). The draws come from one generator seeded from
    ``backend.rng()`` at set-up, so ``caffe.set_random_seed`` reproduces the batches.

    Deliberate Caffe quirks kept: ``scale`` is read from window_data_param (transform_param's
    scale, where the V1 upgrade moves it, is ignored, as Caffe's load_batch ignores it); the
    images are looked up by the index after '#', as positions in the file.
    """
    exact_num_top = 2
    min_num_top = max_num_top = -1

    def _open_source(self):
        p = self.layer_param.window_data_param
        t = self.layer_param.transform_param
        who = "WindowData layer %s" % self.name
        if not p.source:
            raise CaffeError("%s: window_data_param.source (the window file) is not set" % who)
        if p.batch_size <= 0:
            raise CaffeError("%s: window_data_param.batch_size must be positive" % who)
        crop_size = int(t.crop_size)
        if crop_size <= 0:
            hint = (" (window_data_param.crop_size is the V1 field; a V2 net sets it in "
                    "transform_param)" if p.crop_size else "")
            raise CaffeError("%s: transform_param.crop_size must be positive%s" % (who, hint))
        if 2 * int(p.context_pad) >= crop_size:
            raise CaffeError("%s: context_pad %d leaves no room in crop_size %d"
                             % (who, p.context_pad, crop_size))
        if p.crop_mode not in ("warp", "square"):
            raise CaffeError("%s: crop_mode must be \"warp\" or \"square\", got %r"
                             % (who, p.crop_mode))
        v1 = [f for f in ("mirror", "mean_file") if p.HasField(f)]
        if v1:
            log.warning("%s: window_data_param.%s ignored, as Caffe ignores it in a V2 net (the "
                        "upgrade of V1 nets moves it to transform_param): set it in "
                        "transform_param", who, " and ".join(v1))
        if t.scale != 1:
            log.warning("%s: transform_param.scale %g is ignored: WindowData scales by "
                        "window_data_param.scale (%g), as Caffe's load_batch", who, t.scale, p.scale)
        transformer = DataTransformer(t, self.phase, who)  # BaseDataLayer's (mean, InitRand)
        images, fg, bg = read_window_file(p.source, p.root_folder, p.fg_threshold,
                                          p.bg_threshold, who)
        for path, shape, line, _ in images:
            if shape[0] != 3:
                raise CaffeError("%s: window file %s line %d: image %s has %d channels; "
                                 "WindowData reads images in colour (3 channels)"
                                 % (who, p.source, line, path, shape[0]))
        for wins, what in ((fg, "foreground (overlap >= fg_threshold %g)" % p.fg_threshold),
                           (bg, "background (overlap < bg_threshold %g)" % p.bg_threshold)):
            if not wins:
                raise CaffeError("%s: window file %s has no %s window" % (who, p.source, what))
        mean = mean_values = None
        dt = self.dtype
        if transformer.mean is not None:
            mean = transformer.mean.astype(dt)
            off = (mean.shape[2] - crop_size) // 2
            if mean.shape[0] != 3 or off < 0 or mean.shape[1] < off + crop_size:
                raise CaffeError("%s: mean_file %s has shape %s; WindowData needs 3 channels and "
                                 "at least crop_size %d (centred on the width's margin)"
                                 % (who, t.mean_file, mean.shape, crop_size))
        elif transformer.mean_values:
            if len(transformer.mean_values) not in (1, 3):
                raise CaffeError("%s: specify either 1 mean_value or as many as channels: 3 "
                                 "(got %d)" % (who, len(transformer.mean_values)))
            mean_values = np.broadcast_to(np.asarray(transformer.mean_values, dt), (3,))
            mean_values = mean_values.reshape(3, 1, 1)
        cache = None
        if p.cache_images:
            cache = []
            for path, _, line, _ in images:
                try:
                    with open(path, "rb") as f:
                        cache.append(f.read())
                except OSError as exc:
                    raise CaffeError("%s: window file %s line %d: could not open or find file "
                                     "%s (%s)" % (who, p.source, line, path,
                                                  exc.strerror or exc)) from None
        seed = int(backend.rng().integers(0, 2 ** 63))  # prefetch_rng_: crop_size > 0 always
        src = _WindowSource(who, p, images, fg, bg, crop_size, bool(t.mirror), mean,
                            mean_values, dt, cache, seed)
        return src, int(p.batch_size), (3, crop_size, crop_size)

    @property
    def position(self):
        return {"offset": self._state["offset"]}
