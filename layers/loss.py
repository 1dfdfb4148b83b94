"""Softmax and the classification losses: Softmax, SoftmaxWithLoss."""
import numpy as np

from minicaffe.errors import CaffeError
from minicaffe.layer import Layer, LossLayer, register
from minicaffe.proto import caffe_pb2

FLT_MIN = np.float32(np.finfo(np.float32).tiny)
_NORM = caffe_pb2.LossParameter


def softmax(x, axis, out):
    """Numerically stable softmax along ``axis`` (max subtracted) into ``out``."""
    np.subtract(x, x.max(axis=axis, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)
    return out


@register("Softmax", "SOFTMAX")
class SoftmaxLayer(Layer):
    """Softmax along ``softmax_param.axis`` (1): y = exp(x - max) / Σ exp(x - max).
    Backward: dx = y ⊙ (dy − Σ_axis dy ⊙ y)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        self.axis = bottom[0].canonical_axis(self.layer_param.softmax_param.axis)
        top[0].reshape(bottom[0].shape)

    def forward_cpu(self, bottom, top):
        softmax(bottom[0].data, self.axis, top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y, dy = top[0].data, top[0].diff
        dot = (dy * y).sum(axis=self.axis, keepdims=True)
        np.multiply(y, dy - dot, out=bottom[0].diff)


def normalizer(loss_param, outer, inner, valid_count):
    """LossLayer::GetNormalizer, with the legacy ``normalize`` bool."""
    if loss_param.HasField("normalization"):
        mode = loss_param.normalization
    elif loss_param.HasField("normalize"):
        mode = _NORM.VALID if loss_param.normalize else _NORM.BATCH_SIZE
    else:
        mode = _NORM.VALID
    if mode == _NORM.FULL:
        n = outer * inner
    elif mode == _NORM.VALID:
        n = outer * inner if valid_count < 0 else valid_count
    elif mode == _NORM.BATCH_SIZE:
        n = outer
    else:
        n = 1
    return max(1.0, float(n))


@register("SoftmaxWithLoss", "SOFTMAX_LOSS")
class SoftmaxWithLossLayer(LossLayer):
    """SoftmaxWithLoss: loss = −Σ log max(p[label], FLT_MIN) / normalizer over the
    ``outer × inner`` positions, skipping ``ignore_label``; normalization FULL, VALID (default),
    BATCH_SIZE or NONE. dx = (p − onehot)·loss_weight / normalizer (0 at ignored positions).
    A second top gives the probabilities; its loss weights default to [1, 0] (the fix of BVLC
    issue #2968)."""
    exact_num_top = -1
    min_num_top = 1
    max_num_top = 2

    def layer_setup(self, bottom, top):
        lp = self.layer_param.loss_param
        self.ignore_label = lp.ignore_label if lp.HasField("ignore_label") else None

    def reshape(self, bottom, top):
        self.axis = bottom[0].canonical_axis(self.layer_param.softmax_param.axis)
        self.outer = bottom[0].count(0, self.axis)
        self.inner = bottom[0].count(self.axis + 1)
        if bottom[1].count() != self.outer * self.inner:
            raise self.shape_error(
                "label bottom '%s' (count %d must equal outer*inner = %d)" % (
                    self.layer_param.bottom[1], bottom[1].count(), self.outer * self.inner),
                bottom[1].shape, (self.outer * self.inner,))
        top[0].reshape(())
        if not hasattr(self, "prob") or self.prob.dtype != bottom[0].dtype:
            self.prob = self.make_blob(bottom[0].shape)
        self.prob.reshape(bottom[0].shape)
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)
            top[1].share_data(self.prob)

    def _prob3(self):
        c = self.prob.shape[self.axis]
        return self.prob.data.reshape(self.outer, c, self.inner)

    def forward_cpu(self, bottom, top):
        softmax(bottom[0].data, self.axis, self.prob.data)
        p = self._prob3()
        label = bottom[1].data.reshape(self.outer, self.inner).astype(np.int64)
        valid = np.ones(label.shape, bool) if self.ignore_label is None else label != self.ignore_label
        c = p.shape[1]
        lab = np.where(valid, label, 0)
        if lab.size and (lab.min() < 0 or lab.max() >= c):
            raise CaffeError("SoftmaxWithLoss layer %s: label values must be in [0, %d), got %d"
                             % (self.name, c, lab.max() if lab.max() >= c else lab.min()))
        picked = np.take_along_axis(p, lab[:, None, :], axis=1)[:, 0, :]
        loss = -np.log(np.maximum(picked, FLT_MIN))[valid].sum()
        self.valid_count = int(valid.sum()) if self.ignore_label is not None else -1
        norm = normalizer(self.layer_param.loss_param, self.outer, self.inner, self.valid_count)
        top[0].data[...] = loss / norm
        self._valid, self._lab = valid, lab

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise CaffeError("SoftmaxWithLoss layer %s cannot backpropagate to label inputs"
                             % self.name)
        if not propagate_down[0]:
            return
        dx = bottom[0].diff.reshape(self.outer, -1, self.inner)
        np.copyto(dx, self._prob3())
        idx = self._lab[:, None, :]
        np.put_along_axis(dx, idx, np.take_along_axis(dx, idx, 1) - 1, 1)
        dx *= self._valid[:, None, :]
        norm = normalizer(self.layer_param.loss_param, self.outer, self.inner, self.valid_count)
        dx *= top[0].cpu_diff().ravel()[0] / norm
