"""Neuron layers (elementwise, one bottom, one top, in-place allowed): ReLU."""
import numpy as np

from minicaffe.layer import NeuronLayer, register


@register("ReLU", "RELU")
class ReLULayer(NeuronLayer):
    """ReLU: y = max(x, 0) + ν·min(x, 0) (``negative_slope`` ν, 0).
    dx = dy·(1 if x > 0 else ν); the gradient at 0 is ν, as in Caffe. In place, x is the output,
    whose sign matches the input's for ν ≥ 0."""

    def forward_cpu(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        nu = self.layer_param.relu_param.negative_slope
        if nu == 0:
            np.maximum(x, 0, out=y)
        else:
            np.copyto(y, np.where(x > 0, x, x * np.asarray(nu, x.dtype)))

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, dy, dx = bottom[0].data, top[0].diff, bottom[0].diff
        nu = self.layer_param.relu_param.negative_slope
        np.multiply(dy, np.where(x > 0, 1, nu).astype(dx.dtype, copy=False), out=dx)
