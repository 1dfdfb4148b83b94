"""pycaffe's caffe.Classifier: a TEST-phase Net that classifies (H, W, K) images."""
import numpy as np

from . import io
from .errors import ArgumentError
from .net import TEST, Net


def _transformer(net, mean, input_scale, raw_scale, channel_swap):
    """The Transformer of ``net``'s first input: HxWxK images → KxHxW, then the options."""
    in_ = net.inputs[0]
    t = io.Transformer({in_: net.blobs[in_].shape})
    t.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        t.set_mean(in_, mean)
    if input_scale is not None:
        t.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        t.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        t.set_channel_swap(in_, channel_swap)
    return t


class Classifier(Net):
    """``Classifier(model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
    raw_scale=None, channel_swap=None)``: images are resized to ``image_dims`` (default: the
    input's H, W), then cropped to the input size: the centre, or the 4 corners, the centre and
    their mirrors averaged (``oversample``). The preprocessing options are
    ``caffe.io.Transformer``'s."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None,
                 input_scale=None, raw_scale=None, channel_swap=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        if not self.inputs:
            raise ArgumentError("Classifier: %s has no Input blob to feed images to" % model_file)
        self.transformer = _transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[self.inputs[0]].shape[2:])
        self.image_dims = np.array(image_dims if image_dims is not None else self.crop_dims)

    def predict(self, inputs, oversample=True):
        """(N, classes) of the first output for a list of (H, W, K) images: the mean over
        the 10 crops of each (``oversample``), or its centre crop."""
        if not len(inputs):
            raise ArgumentError("predict: no images given")
        h, w = (int(d) for d in self.image_dims)
        images = np.stack([io.resize_image(im, (h, w)) for im in inputs])
        if oversample:
            crops = io.oversample(images, self.crop_dims)
        else:
            ch, cw = (int(d) for d in self.crop_dims)
            y, x = (h - ch) // 2, (w - cw) // 2
            crops = images[:, y:y + ch, x:x + cw]
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, c) for c in crops])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape(len(predictions) // 10, 10, -1).mean(1)
        return predictions
