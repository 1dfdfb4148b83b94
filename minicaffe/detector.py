"""pycaffe's caffe.Detector: classifies windows of images (R-CNN style, Girshick et al. 2014).

Windows are (ymin, xmin, ymax, xmax) in pixels; each is cut out of the image (with
``context_pad`` pixels of context around it, the rest filled with the mean, as R-CNN's
feature extraction), warped to the net input and classified. Selective-search proposals
(``detect_selective_search``) come from the selective_search_ijcv_with_python package, which
runs the authors' MATLAB code: pycaffe needs MATLAB there too.
"""
import os

import numpy as np

from . import io
from .classifier import _transformer
from .errors import ArgumentError, CaffeError
from .net import TEST, Net


class Detector(Net):
    """``Detector(model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
    channel_swap=None, context_pad=None)``."""

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None, context_pad=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        if not self.inputs:
            raise ArgumentError("Detector: %s has no Input blob to feed windows to" % model_file)
        self.transformer = _transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """[{'filename', 'window', 'prediction'}] for an iterable of (image filename, list of
        windows), in that order; the prediction is the first output's row."""
        images_windows = [(f, list(ws)) for f, ws in images_windows]
        crops = []
        for filename, windows in images_windows:
            image = io.load_image(filename)
            crops.extend(self.crop(image, w) for w in windows)
        if not crops:
            return []
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, c) for c in crops])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        detections, i = [], 0
        for filename, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[i],
                                   "filename": filename})
                i += 1
        return detections

    def detect_selective_search(self, image_fnames):
        """``detect_windows`` over selective-search proposals (needs the
        selective_search_ijcv_with_python package and MATLAB, as in pycaffe)."""
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError:
            raise CaffeError("detect_selective_search needs the selective_search_ijcv_with_python "
                             "package and MATLAB (its proposals are MATLAB code); compute the "
                             "windows elsewhere and call detect_windows") from None
        image_fnames = [os.path.abspath(f) for f in image_fnames]   # MATLAB's working folder differs
        windows = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(zip(image_fnames, windows))

    def crop(self, im, window):
        """The (H, W, K) pixels of ``window`` = (ymin, xmin, ymax, xmax); with ``context_pad``,
        the window grown so that after warping ``context_pad`` pixels of the input are
        context, its part outside the image filled with the mean (R-CNN's warp)."""
        y0, x0, y1, x1 = (int(v) for v in window)
        if not self.context_pad:
            return im[y0:y1, x0:x1]
        crop_size = self.blobs[self.inputs[0]].width   # the input is square
        scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
        half_h, half_w = (y1 - y0 + 1) / 2.0, (x1 - x0 + 1) / 2.0
        center = np.array((y0 + half_h, x0 + half_w))
        box = np.round(np.tile(center, 2) + scale * np.array((-half_h, -half_w, half_h, half_w)))
        scale_h = crop_size / (box[2] - box[0] + 1)
        scale_w = crop_size / (box[3] - box[1] + 1)
        pad_y = int(round(max(0, -box[0]) * scale_h))   # the part of the box above the image
        pad_x = int(round(max(0, -box[1]) * scale_w))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0, [im_h, im_w, im_h, im_w])
        clip_h, clip_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        if clip_h <= 0 or clip_w <= 0:
            raise ArgumentError("window %s lies outside the %dx%d image" % (tuple(window), im_h, im_w))
        crop_h = min(int(round(clip_h * scale_h)), crop_size - pad_y)
        crop_w = min(int(round(clip_w * scale_w)), crop_size - pad_x)
        b = box.astype(int)
        context = io.resize_image(im[b[0]:b[2], b[1]:b[3]], (crop_h, crop_w))
        out = np.ones(self.crop_dims, np.float32) * self.crop_mean
        out[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context
        return out

    def configure_crop(self, context_pad):
        """The crop's (H, W, K) and, with ``context_pad``, the mean in image space (before
        the transpose, channel swap and raw scale) that fills the context outside images."""
        in_ = self.inputs[0]
        inv_transpose = np.argsort(self.transformer.transpose[in_])
        self.crop_dims = np.array(self.blobs[in_].shape[1:])[inv_transpose]
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, np.float32)
            return
        crop_mean = mean.copy().transpose(inv_transpose)
        swap = self.transformer.channel_swap.get(in_)
        if swap is not None:
            crop_mean = crop_mean[:, :, np.argsort(swap)]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean
