"""Softmax, the losses and Accuracy: Softmax, SoftmaxWithLoss, SigmoidCrossEntropyLoss,
EuclideanLoss, ContrastiveLoss, HingeLoss, MultinomialLogisticLoss, InfogainLoss, Accuracy.

GPU: one thread per position (or element) writes its loss term, the terms are summed
(``gpu.total``, partial sums added on the host in float64) and the scalar is written to the top
on the device. A label out of range sets a device flag; the layer then reruns its CPU code,
which raises the CPU's error.
"""
import math

import numpy as np
from numba import cuda

from minicaffe import gpu
from minicaffe.errors import CaffeError
from minicaffe.kernels import elementwise, in_place
from minicaffe.layer import Layer, LossLayer, register
from minicaffe.proto import caffe_pb2
from minicaffe.protoio import blobproto_to_array, read_blob_proto

FLT_MIN = np.float32(np.finfo(np.float32).tiny)
_FLT_MIN = float(FLT_MIN)
_NORM = caffe_pb2.LossParameter


def _set_scalar(blob, value):
    """A loss value into its top, on the device."""
    gpu.fill(blob.gpu_data(), value)


def _loss_weight(top):
    return float(top[0].cpu_diff().ravel()[0])


def _flag():
    f = gpu.scratch("label_flag", 1, np.int32)
    gpu.fill(f, 0)
    return f


def _raised(flag):
    return bool(flag.copy_to_host()[0])


@cuda.jit(device=True)
def _counted_label(label, k, channels, has_ignore, ignore, valid, bad):
    """Position k's label, or -1 where it is ignored (``valid[k]`` 0) or out of range (``bad``
    set; the host raises): the prologue of the per-position loss and accuracy kernels."""
    lab = int(label[k])
    valid[k] = 0
    if has_ignore and lab == ignore:
        return -1
    valid[k] = 1
    if lab < 0 or lab >= channels:
        bad[0] = 1
        return -1
    return lab


@cuda.jit(device=True)
def _channel0(k, channels, inner):
    """Flat index of channel 0 at position k (outer index k // inner) of an (outer, channels,
    inner) array."""
    o = k // inner
    return o * channels * inner + k - o * inner


@cuda.jit
def _softmax_fwd(x, outer, channels, inner, y):
    k = cuda.grid(1)
    while k < outer * inner:
        base = _channel0(k, channels, inner)
        m = x[base]
        for c in range(1, channels):
            v = x[base + c * inner]
            if v > m:
                m = v
        s = 0.0
        for c in range(channels):
            e = math.exp(x[base + c * inner] - m)
            y[base + c * inner] = e
            s += e
        for c in range(channels):
            y[base + c * inner] /= s
        k += cuda.gridsize(1)


@cuda.jit
def _softmax_bwd(y, dy, outer, channels, inner, dx):
    k = cuda.grid(1)
    while k < outer * inner:
        base = _channel0(k, channels, inner)
        dot = 0.0
        for c in range(channels):
            dot += dy[base + c * inner] * y[base + c * inner]
        for c in range(channels):
            j = base + c * inner
            dx[j] = y[j] * (dy[j] - dot)
        k += cuda.gridsize(1)


def softmax_gpu(x, outer, channels, inner, y):
    if outer * inner:
        _softmax_fwd[gpu.grid(outer * inner)](x, outer, channels, inner, y)


@cuda.jit
def _pick_log_loss(prob, label, outer, channels, inner, has_ignore, ignore, floor, loss, valid,
                   bad):
    # per position: −log max(p[label], floor), 0 where ignored; valid = 1/0; bad label → flag
    k = cuda.grid(1)
    while k < outer * inner:
        loss[k] = 0
        lab = _counted_label(label, k, channels, has_ignore, ignore, valid, bad)
        if lab >= 0:
            pr = prob[_channel0(k, channels, inner) + lab * inner]
            loss[k] = -math.log(pr if pr > floor else floor)
        k += cuda.gridsize(1)


@cuda.jit
def _softmax_loss_bwd(prob, label, outer, channels, inner, has_ignore, ignore, scale, dx):
    j = cuda.grid(1)
    while j < dx.size:
        i = j % inner
        t = j // inner
        c = t % channels
        o = t // channels
        lab = int(label[o * inner + i])
        if has_ignore and lab == ignore:
            dx[j] = 0
        else:
            dx[j] = (prob[j] - (1 if c == lab else 0)) * scale
        j += cuda.gridsize(1)


@in_place(2)
def _sigmoid_ce(loss, valid, x, t, has_ignore, ignore):
    """Per element (loss, valid): x·[x ≥ 0] − x·t + log(1 + e^−|x|) and 1, or (0, 0) where
    int(t) is the ignore label."""
    if has_ignore and int(t) == ignore:
        return 0.0, 0.0
    return (x if x >= 0 else 0.0) - x * t + math.log1p(math.exp(-abs(x))), 1.0


@elementwise(loop=True)
def _sigmoid_ce_grad(x, t, has_ignore, ignore, scale):
    """(σ(x) − t)·scale, σ as ½·tanh(x/2) + ½; 0 where ignored."""
    if has_ignore and int(t) == ignore:
        return x * 0
    return (math.tanh(0.5 * x) * 0.5 + 0.5 - t) * scale


@in_place(2)
def _contrastive(loss, coef, dist_sq, sim, margin, legacy):
    """Per pair (loss term, gradient factor): similar (d, 1); dissimilar max(margin − √d, 0)²
    and −(margin − √d)/(√d + 1e-4) while the hinge is active (legacy: max(margin − d, 0), −1)."""
    if int(sim) != 0:
        return dist_sq, 1.0
    if legacy:
        md = margin - dist_sq
        return (md, -1.0) if md > 0 else (0.0, 0.0)
    dist = math.sqrt(dist_sq)
    md = margin - dist
    return (md * md, -md / (dist + 1e-4)) if md > 0 else (0.0, 0.0)


@elementwise
def _row_scale(x, coef, alpha):
    return x * (alpha * coef)


@cuda.jit
def _hinge(x, label, dim, margin, bad):
    # margin = max(0, 1 + s·x) with s = −1 at the label, +1 elsewhere
    i = cuda.grid(1)
    while i < x.size:
        lab = int(label[i // dim])
        if lab < 0 or lab >= dim:
            bad[0] = 1
        s = -1 if i % dim == lab else 1
        m = 1 + s * x[i]
        margin[i] = m if m > 0 else 0.0
        i += cuda.gridsize(1)


@cuda.jit
def _hinge_bwd(margin, label, dim, l2, scale, dx):
    i = cuda.grid(1)
    while i < dx.size:
        s = -1 if i % dim == int(label[i // dim]) else 1
        m = margin[i]
        if l2:
            dx[i] = s * m * scale
        else:
            dx[i] = (s if m > 0 else 0) * scale
        i += cuda.gridsize(1)


@cuda.jit
def _multinomial(p, label, dim, loss, bad):
    r = cuda.grid(1)
    while r < loss.size:
        lab = int(label[r])
        if lab < 0 or lab >= dim:
            bad[0] = 1
            loss[r] = 0
        else:
            pr = p[r * dim + lab]
            loss[r] = -math.log(pr if pr > 1e-20 else 1e-20)
        r += cuda.gridsize(1)


@cuda.jit
def _multinomial_bwd(p, label, dim, scale, dx):
    i = cuda.grid(1)
    while i < dx.size:
        r = i // dim
        lab = int(label[r])
        pr = p[i] if p[i] > 1e-20 else 1e-20
        dx[i] = scale / pr if i - r * dim == lab else 0
        i += cuda.gridsize(1)


@cuda.jit
def _infogain(prob, label, h, outer, channels, inner, has_ignore, ignore, loss, valid, bad):
    k = cuda.grid(1)
    while k < outer * inner:
        loss[k] = 0
        lab = _counted_label(label, k, channels, has_ignore, ignore, valid, bad)
        if lab >= 0:
            base = _channel0(k, channels, inner)
            acc = 0.0
            for c in range(channels):
                pr = prob[base + c * inner]
                acc += h[lab * channels + c] * math.log(pr if pr > 1e-20 else 1e-20)
            loss[k] = -acc
        k += cuda.gridsize(1)


@cuda.jit
def _infogain_bwd(prob, label, h, outer, channels, inner, has_ignore, ignore, scale, dx):
    j = cuda.grid(1)
    while j < dx.size:
        i = j % inner
        t = j // inner
        c = t % channels
        o = t // channels
        lab = int(label[o * inner + i])
        if has_ignore and lab == ignore:
            dx[j] = 0
        else:
            row = 0.0
            for cc in range(channels):
                row += h[lab * channels + cc]
            dx[j] = (prob[j] * row - h[lab * channels + c]) * scale
        j += cuda.gridsize(1)


@cuda.jit
def _accuracy(x, label, outer, channels, inner, top_k, has_ignore, ignore, correct, valid, bad):
    k = cuda.grid(1)
    while k < outer * inner:
        correct[k] = 0
        lab = _counted_label(label, k, channels, has_ignore, ignore, valid, bad)
        if lab >= 0:
            base = _channel0(k, channels, inner)
            v = x[base + lab * inner]
            better = -1
            for c in range(channels):
                if x[base + c * inner] >= v:
                    better += 1
            if better < top_k:
                correct[k] = 1
        k += cuda.gridsize(1)


@cuda.jit
def _per_class_accuracy(label, correct, valid, positions, out):
    c = cuda.grid(1)
    while c < out.size:
        seen = 0
        hits = 0
        for k in range(positions):
            if valid[k] != 0 and int(label[k]) == c:
                seen += 1
                hits += correct[k]
        out[c] = hits / seen if seen > 0 else 0
        c += cuda.gridsize(1)


def _ignore(layer):
    return (layer.ignore_label is not None,
            int(layer.ignore_label) if layer.ignore_label is not None else 0)


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

    def _oci(self, blob):
        return blob.count(0, self.axis), blob.shape[self.axis], blob.count(self.axis + 1)

    def forward_gpu(self, bottom, top):
        softmax_gpu(bottom[0].gpu_data(False), *self._oci(bottom[0]), top[0].gpu_data())

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            o, c, i = self._oci(bottom[0])
            if o * i:
                _softmax_bwd[gpu.grid(o * i)](top[0].gpu_data(False), top[0].gpu_diff(False),
                                              o, c, i, bottom[0].gpu_diff())


def normalizer(loss_param, outer, inner, valid_count, default=_NORM.VALID):
    """LossLayer::GetNormalizer, with the legacy ``normalize`` bool; ``default`` is the mode
    when neither is set (VALID; SigmoidCrossEntropyLoss uses BATCH_SIZE)."""
    if loss_param.HasField("normalization"):
        mode = loss_param.normalization
    elif loss_param.HasField("normalize"):
        mode = _NORM.VALID if loss_param.normalize else _NORM.BATCH_SIZE
    else:
        mode = default
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

    def forward_gpu(self, bottom, top):
        c = self.prob.shape[self.axis]
        prob = self.prob.gpu_data()
        softmax_gpu(bottom[0].gpu_data(False), self.outer, c, self.inner, prob)
        n = self.outer * self.inner
        loss, valid = gpu.scratch("loss_terms", n, np.float64), gpu.scratch("valid", n, np.float64)
        bad = _flag()
        if n:
            _pick_log_loss[gpu.grid(n)](prob, bottom[1].gpu_data(False), self.outer, c,
                                        self.inner, *_ignore(self), _FLT_MIN, loss, valid, bad)
        if _raised(bad):
            return self.forward_cpu(bottom, top)  # raises the CPU's label error
        self.valid_count = int(round(gpu.total(valid))) if self.ignore_label is not None else -1
        norm = normalizer(self.layer_param.loss_param, self.outer, self.inner, self.valid_count)
        _set_scalar(top[0], gpu.total(loss) / norm)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise CaffeError("SoftmaxWithLoss layer %s cannot backpropagate to label inputs"
                             % self.name)
        if not propagate_down[0]:
            return
        norm = normalizer(self.layer_param.loss_param, self.outer, self.inner, self.valid_count)
        dx = bottom[0].gpu_diff()
        if dx.size:
            _softmax_loss_bwd[gpu.grid(dx.size)](self.prob.gpu_data(False),
                                                 bottom[1].gpu_data(False), self.outer,
                                                 self.prob.shape[self.axis], self.inner,
                                                 *_ignore(self), _loss_weight(top) / norm, dx)


KLOG_THRESHOLD = 1e-20


def _legacy(blob, i):
    """Caffe's num()/channels()/height()/width(): shape[i], or 1 past the last axis."""
    return blob.shape[i] if i < blob.num_axes else 1


def _labels(blob):
    """Integer labels (static_cast<int>, i.e. truncation) as a flat int64 array."""
    return blob.data.reshape(-1).astype(np.int64)


def _name(layer, i):
    names = layer.layer_param.bottom
    return "'%s'" % names[i] if i < len(names) else "%d" % i


def _check_range(layer, lab, num_classes, valid=None):
    v = lab if valid is None else lab[valid]
    if v.size and (v.min() < 0 or v.max() >= num_classes):
        bad = v.min() if v.min() < 0 else v.max()
        raise CaffeError("%s layer %s: label values must be in [0, %d), got %d"
                         % (layer.type, layer.name, num_classes, bad))


def _no_label_backward(layer, propagate_down, index=1, what="label"):
    if len(propagate_down) > index and propagate_down[index]:
        raise CaffeError("%s layer %s cannot backpropagate to %s inputs (bottom %d)"
                         % (layer.type, layer.name, what, index))


@register("SigmoidCrossEntropyLoss", "SIGMOID_CROSS_ENTROPY_LOSS")
class SigmoidCrossEntropyLossLayer(LossLayer):
    """SigmoidCrossEntropyLoss: targets t (same count as the scores x, values in [0, 1]).
    loss = Σ [x·(x ≥ 0) − x·t + log(1 + e^{−|x|})] / normalizer (the stable form of
    −Σ t·log σ(x) + (1 − t)·log(1 − σ(x))), skipping targets with int(t) == ignore_label.
    ``loss_param.normalization`` defaults to BATCH_SIZE here (BVLC master; the legacy
    ``normalize: true`` means VALID). dx = (σ(x) − t)·loss_weight / normalizer, 0 where ignored.
    """

    def layer_setup(self, bottom, top):
        lp = self.layer_param.loss_param
        self.ignore_label = lp.ignore_label if lp.HasField("ignore_label") else None

    def reshape(self, bottom, top):
        LossLayer.reshape(self, bottom, top)
        if bottom[0].count() != bottom[1].count():
            raise self.shape_error("target bottom %s (inputs must have the same count %d)" % (
                _name(self, 1), bottom[0].count()), bottom[1].shape, bottom[0].shape)
        self.outer, self.inner = bottom[0].shape[0], bottom[0].count(1)

    def forward_cpu(self, bottom, top):
        x = bottom[0].data.reshape(-1)
        loss, valid = np.empty(x.size), np.empty(x.size)
        _sigmoid_ce(loss, valid, x, bottom[1].data.reshape(-1), *_ignore(self))
        self._norm = normalizer(self.layer_param.loss_param, self.outer, self.inner,
                                int(round(valid.sum())), default=_NORM.BATCH_SIZE)
        top[0].data[...] = loss.sum() / self._norm

    def backward_cpu(self, top, propagate_down, bottom):
        _no_label_backward(self, propagate_down)
        if not propagate_down[0]:
            return
        _sigmoid_ce_grad(bottom[0].data, bottom[1].data.reshape(bottom[0].shape), *_ignore(self),
                         top[0].cpu_diff().ravel()[0] / self._norm, out=bottom[0].diff)

    def forward_gpu(self, bottom, top):
        x = bottom[0].gpu_data(False)
        loss, valid = (gpu.scratch("loss_terms", x.size, np.float64),
                       gpu.scratch("valid", x.size, np.float64))
        _sigmoid_ce.gpu(loss, valid, x, bottom[1].gpu_data(False), *_ignore(self))
        count = int(round(gpu.total(valid)))
        self._norm = normalizer(self.layer_param.loss_param, self.outer, self.inner, count,
                                default=_NORM.BATCH_SIZE)
        _set_scalar(top[0], gpu.total(loss) / self._norm)

    def backward_gpu(self, top, propagate_down, bottom):
        _no_label_backward(self, propagate_down)
        if propagate_down[0]:
            _sigmoid_ce_grad.gpu(bottom[0].gpu_data(False), bottom[1].gpu_data(False),
                                 *_ignore(self), _loss_weight(top) / self._norm,
                                 out=bottom[0].gpu_diff())


@register("EuclideanLoss", "EUCLIDEAN_LOSS")
class EuclideanLossLayer(LossLayer):
    """EuclideanLoss: loss = Σ‖a − b‖² / (2N) over the N samples (bottoms with equal count(1)).
    da = w·(a − b)/N, db = −w·(a − b)/N; both bottoms may be forced to backward."""

    def allow_force_backward(self, bottom_index):
        return True

    def reshape(self, bottom, top):
        LossLayer.reshape(self, bottom, top)
        if bottom[0].count(1) != bottom[1].count(1):
            raise self.shape_error("bottom %s (inputs must have the same dimension)"
                                   % _name(self, 1), bottom[1].shape, bottom[0].shape)

    def forward_cpu(self, bottom, top):
        self._diff = bottom[0].data.reshape(-1) - bottom[1].data.reshape(-1)
        top[0].data[...] = np.dot(self._diff, self._diff) / bottom[0].shape[0] / 2.0

    def backward_cpu(self, top, propagate_down, bottom):
        w = top[0].cpu_diff().ravel()[0]
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                alpha = sign * w / bottom[i].shape[0]
                np.multiply(self._diff, alpha, out=bottom[i].diff.reshape(-1))

    def forward_gpu(self, bottom, top):
        a = bottom[0].gpu_data(False)
        self._diff_dev = gpu.ensure(getattr(self, "_diff_dev", None), a.size, a.dtype)
        gpu.axpby(1.0, a, 0.0, self._diff_dev)
        gpu.axpy(-1.0, bottom[1].gpu_data(False), self._diff_dev)
        _set_scalar(top[0], gpu.sumsq(self._diff_dev) / bottom[0].shape[0] / 2.0)

    def backward_gpu(self, top, propagate_down, bottom):
        w = _loss_weight(top)
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                gpu.axpby(sign * w / bottom[i].shape[0], self._diff_dev, 0.0, bottom[i].gpu_diff())


@register("ContrastiveLoss", "CONTRASTIVE_LOSS")
class ContrastiveLossLayer(LossLayer):
    """ContrastiveLoss: bottoms a, b (N, C[, 1, 1]) and sim (N[, 1, 1, 1]). With d = ‖a − b‖²:
    similar pairs (int(sim) ≠ 0) add d, dissimilar ones max(margin − √d, 0)²
    (``legacy_version``: max(margin − d, 0)); loss = Σ / (2N). ``contrastive_loss_param``:
    margin (1), legacy_version (false).
    Backward (α = ±w/N for a/b): similar α·(a − b); dissimilar, when the hinge is active,
    −α·(margin − √d)/(√d + 1e-4)·(a − b) (Caffe's 1e-4 guard), legacy −α·(a − b); else 0.
    sim gets no gradient."""
    exact_num_bottom = 3

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        LossLayer.reshape(self, bottom, top)
        a, b, s = bottom
        if _legacy(a, 1) != _legacy(b, 1) or a.shape[0] != b.shape[0] \
                or any(_legacy(x, i) != 1 for x in (a, b) for i in (2, 3)):
            raise self.shape_error("bottom %s (a and b must be (N, C, 1, 1) alike)"
                                   % _name(self, 1), b.shape, a.shape)
        if any(_legacy(s, i) != 1 for i in (1, 2, 3)) or s.shape[0] != a.shape[0]:
            raise self.shape_error("similarity bottom %s" % _name(self, 2), s.shape,
                                   (a.shape[0], 1, 1, 1))

    def forward_cpu(self, bottom, top):
        p = self.layer_param.contrastive_loss_param
        n = bottom[0].shape[0]
        self._diff = bottom[0].data.reshape(n, -1) - bottom[1].data.reshape(n, -1)
        self._dist_sq = np.einsum("ij,ij->i", self._diff, self._diff)
        loss, self._coef = np.empty(n), np.empty(n)
        _contrastive(loss, self._coef, self._dist_sq.astype(np.float64),
                     bottom[2].data.reshape(n), p.margin, bool(p.legacy_version))
        top[0].data[...] = loss.sum() / n / 2.0

    def backward_cpu(self, top, propagate_down, bottom):
        _no_label_backward(self, propagate_down, 2, "similarity")
        w = top[0].cpu_diff().ravel()[0]
        n = bottom[0].shape[0]
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                _row_scale(self._diff, self._coef[:, None], sign * w / n,
                           out=bottom[i].diff.reshape(n, -1))

    def forward_gpu(self, bottom, top):
        p = self.layer_param.contrastive_loss_param
        n = bottom[0].shape[0]
        a = bottom[0].gpu_data(False)
        dim = a.size // max(n, 1)
        self._diff_dev = gpu.ensure(getattr(self, "_diff_dev", None), a.size, a.dtype)
        gpu.axpby(1.0, a, 0.0, self._diff_dev)
        gpu.axpy(-1.0, bottom[1].gpu_data(False), self._diff_dev)
        sq = gpu.scratch("contrastive_sq", a.size, a.dtype)
        gpu.mul(self._diff_dev, self._diff_dev, sq)
        dist_sq = gpu.scratch("contrastive_d", n, np.float64)
        gpu.sum_odi(sq, 1, n, dim, dist_sq)
        loss = gpu.scratch("loss_terms", n, np.float64)
        self._coef_dev = gpu.ensure(getattr(self, "_coef_dev", None), n, np.float64)
        _contrastive.gpu(loss, self._coef_dev, dist_sq, bottom[2].gpu_data(False), p.margin,
                         bool(p.legacy_version))
        _set_scalar(top[0], gpu.total(loss) / n / 2.0)

    def backward_gpu(self, top, propagate_down, bottom):
        _no_label_backward(self, propagate_down, 2, "similarity")
        w = _loss_weight(top)
        n = bottom[0].shape[0]
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                dx = bottom[i].gpu_diff()
                _row_scale.gpu(self._diff_dev, self._coef_dev, sign * w / n, out=dx,
                               inner=dx.size // n)


@register("HingeLoss", "HINGE_LOSS")
class HingeLossLayer(LossLayer):
    """HingeLoss (one-vs-all): scores x (N, D), labels l. With s_nj = −1 for j = l_n and +1
    otherwise, m_nj = max(0, 1 + s_nj·x_nj); loss = Σ m / N (``hinge_loss_param.norm`` L1,
    default) or Σ m² / N (L2). Backward: dx = w·s·[m > 0]/N (L1) or 2w·s·m/N (L2)."""

    def reshape(self, bottom, top):
        LossLayer.reshape(self, bottom, top)
        if bottom[1].count() != bottom[0].shape[0]:
            raise self.shape_error("label bottom %s (one label per sample)" % _name(self, 1),
                                   bottom[1].shape, (bottom[0].shape[0],))

    def forward_cpu(self, bottom, top):
        n = bottom[0].shape[0]
        x = bottom[0].data.reshape(n, -1)
        lab = _labels(bottom[1])
        _check_range(self, lab, x.shape[1])
        self._sign = np.ones_like(x)
        self._sign[np.arange(n), lab] = -1
        self._margin = np.maximum(0.0, 1.0 + self._sign * x)
        norm = self.layer_param.hinge_loss_param.norm
        if norm == caffe_pb2.HingeLossParameter.L1:
            loss = self._margin.sum()
        elif norm == caffe_pb2.HingeLossParameter.L2:
            loss = np.dot(self._margin.ravel(), self._margin.ravel())
        else:
            raise CaffeError("HingeLoss layer %s: unknown hinge_loss_param.norm %d"
                             % (self.name, norm))
        top[0].data[...] = loss / n

    def backward_cpu(self, top, propagate_down, bottom):
        _no_label_backward(self, propagate_down)
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        w = top[0].cpu_diff().ravel()[0]
        dx = bottom[0].diff.reshape(n, -1)
        if self.layer_param.hinge_loss_param.norm == caffe_pb2.HingeLossParameter.L1:
            np.multiply(self._sign * (self._margin > 0), w / n, out=dx)
        else:
            np.multiply(self._sign * self._margin, 2.0 * w / n, out=dx)

    def forward_gpu(self, bottom, top):
        norm = self.layer_param.hinge_loss_param.norm
        if norm not in (caffe_pb2.HingeLossParameter.L1, caffe_pb2.HingeLossParameter.L2):
            return self.forward_cpu(bottom, top)  # raises
        n = bottom[0].shape[0]
        x = bottom[0].gpu_data(False)
        self._margin_dev = gpu.ensure(getattr(self, "_margin_dev", None), x.size, x.dtype)
        bad = _flag()
        l2 = norm == caffe_pb2.HingeLossParameter.L2
        _hinge[gpu.grid(x.size)](x, bottom[1].gpu_data(False), x.size // n, self._margin_dev,
                                 bad)
        if _raised(bad):
            return self.forward_cpu(bottom, top)  # raises the CPU's label error
        loss = gpu.sumsq(self._margin_dev) if l2 else gpu.total(self._margin_dev)
        _set_scalar(top[0], loss / n)

    def backward_gpu(self, top, propagate_down, bottom):
        _no_label_backward(self, propagate_down)
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        w = _loss_weight(top)
        l2 = self.layer_param.hinge_loss_param.norm == caffe_pb2.HingeLossParameter.L2
        dx = bottom[0].gpu_diff()
        _hinge_bwd[gpu.grid(dx.size)](self._margin_dev, bottom[1].gpu_data(False), dx.size // n,
                                      l2, (2.0 * w if l2 else w) / n, dx)


@register("MultinomialLogisticLoss", "MULTINOMIAL_LOGISTIC_LOSS")
class MultinomialLogisticLossLayer(LossLayer):
    """MultinomialLogisticLoss: bottom 0 holds probabilities p (N, D), bottom 1 labels (N[,1,1,1]).
    loss = −Σ log max(p[n, l_n], 1e-20) / N; dp[n, l_n] = −w / (N·max(p[n, l_n], 1e-20)),
    0 elsewhere."""

    def reshape(self, bottom, top):
        LossLayer.reshape(self, bottom, top)
        if any(_legacy(bottom[1], i) != 1 for i in (1, 2, 3)):
            raise self.shape_error("label bottom %s" % _name(self, 1), bottom[1].shape,
                                   (bottom[0].shape[0], 1, 1, 1))

    def _picked(self, bottom):
        n = bottom[0].shape[0]
        p = bottom[0].data.reshape(n, -1)
        lab = _labels(bottom[1])
        _check_range(self, lab, p.shape[1])
        return n, lab, np.maximum(p[np.arange(n), lab], KLOG_THRESHOLD)

    def forward_cpu(self, bottom, top):
        n, _, prob = self._picked(bottom)
        top[0].data[...] = -np.log(prob).sum() / n

    def backward_cpu(self, top, propagate_down, bottom):
        _no_label_backward(self, propagate_down)
        if not propagate_down[0]:
            return
        n, lab, prob = self._picked(bottom)
        dx = bottom[0].diff.reshape(n, -1)
        dx[...] = 0
        dx[np.arange(n), lab] = -top[0].cpu_diff().ravel()[0] / n / prob

    def forward_gpu(self, bottom, top):
        n = bottom[0].shape[0]
        p = bottom[0].gpu_data(False)
        loss, bad = gpu.scratch("loss_terms", n, np.float64), _flag()
        _multinomial[gpu.grid(n)](p, bottom[1].gpu_data(False), p.size // n, loss, bad)
        if _raised(bad):
            return self.forward_cpu(bottom, top)  # raises the CPU's label error
        _set_scalar(top[0], gpu.total(loss) / n)

    def backward_gpu(self, top, propagate_down, bottom):
        _no_label_backward(self, propagate_down)
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        dx = bottom[0].gpu_diff()
        _multinomial_bwd[gpu.grid(dx.size)](bottom[0].gpu_data(False), bottom[1].gpu_data(False),
                                            dx.size // n, -_loss_weight(top) / n, dx)


@register("InfogainLoss", "INFOGAIN_LOSS")
class InfogainLossLayer(LossLayer):
    """InfogainLoss (BVLC master: it applies a softmax itself). Bottoms: scores x, labels l and
    optionally the infogain matrix H (C, C), else H is read from ``infogain_loss_param.source``
    (a BlobProto file). p = softmax(x) along ``infogain_loss_param.axis`` (1);
    loss = −Σ_positions Σ_c H[l, c]·log max(p_c, 1e-20) / normalizer (``loss_param``
    normalization, default VALID; ``normalize`` is refused as in Caffe; ignore_label skipped).
    dx_c = w·(p_c·Σ_c' H[l, c'] − H[l, c]) / normalizer. An optional second top gives p.
    Only bottom 0 takes a gradient (Caffe would let force_backward reach H and then abort)."""
    exact_num_bottom = -1
    min_num_bottom = 2
    max_num_bottom = 3
    exact_num_top = -1
    min_num_top = 1
    max_num_top = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def layer_setup(self, bottom, top):
        lp = self.layer_param.loss_param
        self.ignore_label = lp.ignore_label if lp.HasField("ignore_label") else None
        if lp.HasField("normalize"):
            raise CaffeError('InfogainLoss layer %s: loss_param.normalize is deprecated; use '
                             '"normalization"' % self.name)
        self.H = None
        if len(bottom) < 3:
            p = self.layer_param.infogain_loss_param
            if not p.HasField("source"):
                raise CaffeError("InfogainLoss layer %s: infogain_loss_param.source (the "
                                 "infogain matrix H) must be specified when there is no third "
                                 "bottom" % self.name)
            self.H = blobproto_to_array(read_blob_proto(p.source)).astype(self.dtype)

    def reshape(self, bottom, top):
        LossLayer.reshape(self, bottom, top)
        self.axis = bottom[0].canonical_axis(self.layer_param.infogain_loss_param.axis)
        self.outer = bottom[0].count(0, self.axis)
        self.inner = bottom[0].count(self.axis + 1)
        self.C = bottom[0].shape[self.axis]
        if bottom[1].count() != self.outer * self.inner:
            raise self.shape_error("label bottom %s (count must equal outer*inner = %d)"
                                   % (_name(self, 1), self.outer * self.inner),
                                   bottom[1].shape, (self.outer * self.inner,))
        h = self.H if len(bottom) < 3 else bottom[2].data
        if h.size != self.C * self.C:
            raise self.shape_error("the infogain matrix H (must be %dx%d)" % (self.C, self.C),
                                   h.shape, (self.C, self.C))
        if not hasattr(self, "prob") or self.prob.dtype != bottom[0].dtype:
            self.prob = self.make_blob(bottom[0].shape)
        self.prob.reshape(bottom[0].shape)
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)
            top[1].share_data(self.prob)

    def _setup_terms(self, bottom):
        h = (self.H if len(bottom) < 3 else bottom[2].data).reshape(self.C, self.C)
        lab = bottom[1].data.reshape(self.outer, self.inner).astype(np.int64)
        valid = np.ones(lab.shape, bool) if self.ignore_label is None else lab != self.ignore_label
        _check_range(self, lab, self.C, valid)
        lab = np.where(valid, lab, 0)
        return h, lab, valid

    def forward_cpu(self, bottom, top):
        softmax(bottom[0].data, self.axis, self.prob.data)
        p = self.prob.data.reshape(self.outer, self.C, self.inner)
        h, lab, valid = self._setup_terms(bottom)
        hl = h[lab]                                    # (outer, inner, C): H[l, :]
        logp = np.log(np.maximum(p, KLOG_THRESHOLD)).transpose(0, 2, 1)
        loss = -(hl * logp).sum(axis=2)[valid].sum()
        self._count = int(valid.sum())
        norm = normalizer(self.layer_param.loss_param, self.outer, self.inner, self._count)
        top[0].data[...] = loss / norm

    def backward_cpu(self, top, propagate_down, bottom):
        _no_label_backward(self, propagate_down)
        _no_label_backward(self, propagate_down, 2, "infogain")
        if not propagate_down[0]:
            return
        p = self.prob.data.reshape(self.outer, self.C, self.inner)
        h, lab, valid = self._setup_terms(bottom)
        rows = h.sum(axis=1)[lab]                      # (outer, inner)
        g = p * rows[:, None, :] - h[lab].transpose(0, 2, 1)
        g *= valid[:, None, :]
        norm = normalizer(self.layer_param.loss_param, self.outer, self.inner, self._count)
        np.multiply(g, top[0].cpu_diff().ravel()[0] / norm,
                    out=bottom[0].diff.reshape(self.outer, self.C, self.inner))

    def _h_gpu(self, bottom):
        if len(bottom) > 2:
            return bottom[2].gpu_data(False)
        if getattr(self, "_h_dev", None) is None:
            self._h_dev = gpu.to_device(self.H.ravel())
        return self._h_dev

    def forward_gpu(self, bottom, top):
        prob = self.prob.gpu_data()
        softmax_gpu(bottom[0].gpu_data(False), self.outer, self.C, self.inner, prob)
        n = self.outer * self.inner
        loss, valid = gpu.scratch("loss_terms", n, np.float64), gpu.scratch("valid", n, np.float64)
        bad = _flag()
        if n:
            _infogain[gpu.grid(n)](prob, bottom[1].gpu_data(False), self._h_gpu(bottom),
                                   self.outer, self.C, self.inner, *_ignore(self), loss, valid,
                                   bad)
        if _raised(bad):
            return self.forward_cpu(bottom, top)  # raises the CPU's label error
        self._count = int(round(gpu.total(valid)))
        norm = normalizer(self.layer_param.loss_param, self.outer, self.inner, self._count)
        _set_scalar(top[0], gpu.total(loss) / norm)

    def backward_gpu(self, top, propagate_down, bottom):
        _no_label_backward(self, propagate_down)
        _no_label_backward(self, propagate_down, 2, "infogain")
        if not propagate_down[0]:
            return
        norm = normalizer(self.layer_param.loss_param, self.outer, self.inner, self._count)
        dx = bottom[0].gpu_diff()
        if dx.size:
            _infogain_bwd[gpu.grid(dx.size)](self.prob.gpu_data(False), bottom[1].gpu_data(False),
                                             self._h_gpu(bottom), self.outer, self.C, self.inner,
                                             *_ignore(self), _loss_weight(top) / norm, dx)


@register("Accuracy", "ACCURACY")
class AccuracyLayer(Layer):
    """Accuracy: scores (.., C at ``accuracy_param.axis`` (1), ..) and labels (outer·inner of
    them). A position is correct iff #{c : score_c ≥ score_label} − 1 < ``top_k`` (1), so ties
    count as wrong (constant scores give 0). Labels equal to ``ignore_label`` are skipped;
    accuracy = correct / counted (0 if none). An optional second top gives the per-class
    accuracy (C,) (0 for classes that do not occur). top_k ≤ C is checked. No backward."""
    exact_num_bottom = 2
    min_num_top = 1
    max_num_top = 2

    def layer_setup(self, bottom, top):
        p = self.layer_param.accuracy_param
        self.top_k = p.top_k
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None

    def reshape(self, bottom, top):
        classes = bottom[0].count() // max(bottom[1].count(), 1)
        if self.top_k > classes:
            raise CaffeError("Accuracy layer %s: accuracy_param.top_k %d must be less than or "
                             "equal to the number of classes %d" % (self.name, self.top_k, classes))
        self.axis = bottom[0].canonical_axis(self.layer_param.accuracy_param.axis)
        self.outer = bottom[0].count(0, self.axis)
        self.inner = bottom[0].count(self.axis + 1)
        self.C = bottom[0].shape[self.axis]
        if self.outer * self.inner != bottom[1].count():
            raise self.shape_error(
                "label bottom %s (the number of labels must match the number of predictions, "
                "outer*inner = %d, with values in 0..%d)" % (_name(self, 1),
                                                            self.outer * self.inner, self.C - 1),
                bottom[1].shape, (self.outer * self.inner,))
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self.C,))

    def forward_cpu(self, bottom, top):
        x = bottom[0].data.reshape(self.outer, self.C, self.inner)
        lab = bottom[1].data.reshape(self.outer, self.inner).astype(np.int64)
        valid = np.ones(lab.shape, bool) if self.ignore_label is None else lab != self.ignore_label
        _check_range(self, lab, self.C, valid)
        lab = np.where(valid, lab, 0)
        true = np.take_along_axis(x, lab[:, None, :], axis=1)
        better = (x >= true).sum(axis=1) - 1           # the label itself counts once
        correct = (better < self.top_k) & valid
        count = int(valid.sum())
        top[0].data[...] = correct.sum() / count if count else 0.0
        if len(top) > 1:
            seen = np.bincount(lab[valid], minlength=self.C)
            hits = np.bincount(lab[correct], minlength=self.C)
            top[1].data[...] = np.where(seen > 0, hits / np.maximum(seen, 1), 0.0)

    def forward_gpu(self, bottom, top):
        n = self.outer * self.inner
        label = bottom[1].gpu_data(False)
        correct, valid = gpu.scratch("correct", n, np.float64), gpu.scratch("valid", n, np.float64)
        bad = _flag()
        if n:
            _accuracy[gpu.grid(n)](bottom[0].gpu_data(False), label, self.outer, self.C,
                                   self.inner, self.top_k, *_ignore(self), correct, valid, bad)
        if _raised(bad):
            return self.forward_cpu(bottom, top)  # raises the CPU's label error
        count = int(round(gpu.total(valid)))
        _set_scalar(top[0], gpu.total(correct) / count if count else 0.0)
        if len(top) > 1:
            _per_class_accuracy[gpu.grid(self.C)](label, correct, valid, n, top[1].gpu_data())
