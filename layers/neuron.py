"""Neuron layers (elementwise, one bottom, one top of the same shape, in-place allowed):
ReLU, PReLU, ELU, Sigmoid, TanH, AbsVal, Power, Exp, Log, BNLL, Threshold, Dropout, Swish, Clip.

In place (top is the bottom blob) the forward overwrites the input. Layers whose backward needs
the input keep a copy of it in that case (Caffe's PReLU ``bottom_memory_``); Caffe's Power,
Log, Clip and ELU (with α < 0) read the clobbered bottom instead, so here they are also right in
place. AbsVal refuses in-place use, as in Caffe.

GPU: each layer's ``forward_gpu`` / ``backward_gpu`` launch the elementwise kernels defined
beside it (grid-stride loops over the flat blob); Dropout draws its mask from the same host
generator as on the CPU and uploads it, so both modes drop the same units.
"""
import math

import numpy as np
from numba import cuda

from minicaffe import backend, gpu, kernels
from minicaffe.errors import CaffeError, ShapeError
from minicaffe.fillers import fill
from minicaffe.kernels import elementwise
from minicaffe.layer import NeuronLayer, register


class NotImplementedCaffeError(CaffeError, NotImplementedError):
    """Caffe's NOT_IMPLEMENTED (a layer without a gradient asked for one)."""


def _in_place(bottom, top):
    return top[0] is bottom[0] or top[0].shares_data_with(bottom[0])


class _KeepsInput(NeuronLayer):
    """Base for neuron layers whose backward reads the input x: in place, forward keeps a copy."""

    _saved = None

    def _keep_input(self, bottom, top):
        """Call at the start of forward_cpu; returns x (still intact)."""
        x = bottom[0].data
        if _in_place(bottom, top):
            if self._saved is None or self._saved.shape != x.shape or self._saved.dtype != x.dtype:
                self._saved = np.empty_like(x)
            np.copyto(self._saved, x)
        else:
            self._saved = None
        return x

    def _input(self, bottom):
        """x as it was at forward time (the copy when computed in place)."""
        return bottom[0].data if self._saved is None else self._saved

    _saved_dev = None

    def _keep_input_gpu(self, bottom, top):
        """The device twin of ``_keep_input``: returns x on the device."""
        x = bottom[0].gpu_data(False)
        if _in_place(bottom, top):
            self._saved_dev = gpu.ensure(self._saved_dev, x.size, x.dtype)
            gpu.copy(x, self._saved_dev)
        else:
            self._saved_dev = None
        return x

    def _input_gpu(self, bottom):
        return bottom[0].gpu_data(False) if self._saved_dev is None else self._saved_dev


def _io(bottom, top):
    """(x, y) on the device for a forward: x read-only, y written."""
    return bottom[0].gpu_data(False), top[0].gpu_data()


def _grads(top, bottom):
    """(dy, dx) on the device for a backward."""
    return top[0].gpu_diff(False), bottom[0].gpu_diff()


# --- the per-element math, once for both devices (minicaffe.kernels) --------------------------
# Arguments: gradients first (dy), then what the formula reads; out= is where it goes.

@elementwise(loop=True)
def _relu(x, nu):
    return x if x > 0 else x * nu


@elementwise(loop=True)
def _relu_grad(dy, x, nu):
    return dy if x > 0 else dy * nu


@elementwise(loop=True)
def _prelu_slope_grad(dy, x):
    """dy·x where x ≤ 0: PReLU's per-element slope-gradient terms (summed per channel)."""
    return dy * x if x <= 0 else dy * 0


@elementwise(loop=True)
def _elu(x, alpha):
    return x if x > 0 else alpha * math.expm1(x)


@elementwise(loop=True)
def _elu_grad(dy, x, y, alpha):
    return dy if x > 0 else dy * (y + alpha)


@elementwise
def _sigmoid(x):
    """σ(x) = ½·tanh(x/2) + ½ (Caffe's form: no overflow for any x)."""
    return 0.5 * math.tanh(0.5 * x) + 0.5


@elementwise
def _sigmoid_grad(dy, y):
    return dy * y * (1 - y)


@elementwise
def _tanh(x):
    return math.tanh(x)


@elementwise
def _tanh_grad(dy, y):
    return dy * (1 - y * y)


@elementwise
def _abs(x):
    return abs(x)


@elementwise(loop=True)
def _abs_grad(dy, x):
    return dy if x > 0 else (-dy if x < 0 else dy * 0)


@elementwise
def _power(x, power, scale, shift):
    t = x * scale + shift
    return t if power == 1 else math.pow(t, power)


@elementwise
def _power_grad(dy, x, power, scale, shift, diff_scale):
    t = x * scale + shift
    if power != 2:
        t = math.pow(t, power - 1)
    return dy * (t * diff_scale)


@elementwise
def _exp(x, inner_scale, outer_scale):
    return math.exp(x * inner_scale) * outer_scale


@elementwise
def _exp_grad(dy, y, inner_scale):
    return y * dy * inner_scale


@elementwise
def _log(x, scale, shift, base_scale):
    return math.log(x * scale + shift) * base_scale


@elementwise
def _log_grad(dy, x, scale, shift, num_scale):
    return dy * (num_scale / (x * scale + shift))


@elementwise
def _bnll(x):
    """softplus, stably: max(x, 0) + log(1 + exp(−|x|)), with max(x, 0) = (x + |x|)/2."""
    return (x + abs(x)) * 0.5 + math.log1p(math.exp(-abs(x)))


@elementwise
def _bnll_grad(dy, y):
    return dy * -math.expm1(-y)


@elementwise
def _threshold(x, threshold):
    return x > threshold


@elementwise
def _scaled_sigmoid(x, beta):
    return 0.5 * math.tanh(0.5 * (x * beta)) + 0.5


@elementwise
def _swish_grad(dy, y, sig, beta):
    by = y * beta
    return dy * (by + sig * (1 - by))


@elementwise(loop=True)
def _clip(x, lo, hi):
    t = hi if x > hi else x
    return lo if t < lo else t


@elementwise(loop=True)
def _clip_grad(dy, x, lo, hi):
    return dy if x >= lo and x <= hi else dy * 0


_relu_dev, _relu_grad_dev, _prelu_terms_dev = _relu.device, _relu_grad.device, _prelu_slope_grad.device


@cuda.jit
def _prelu_fwd(x, a, channels, inner, y):
    # the channel of element i is (i // inner) % channels: indexing only; the math is _relu's
    i = cuda.grid(1)
    while i < y.size:
        y[i] = _relu_dev(x[i], a[(i // inner) % channels])
        i += cuda.gridsize(1)


@cuda.jit
def _prelu_bwd(x, dy, a, channels, inner, want_dx, da_terms, dx):
    i = cuda.grid(1)
    while i < x.size:
        g = dy[i]
        da_terms[i] = _prelu_terms_dev(g, x[i])
        if want_dx:
            dx[i] = _relu_grad_dev(g, x[i], a[(i // inner) % channels])
        i += cuda.gridsize(1)


@register("ReLU", "RELU")
class ReLULayer(NeuronLayer):
    """ReLU: y = max(x, 0) + ν·min(x, 0) (``negative_slope`` ν, 0).
    dx = dy·(1 if x > 0 else ν); the gradient at 0 is ν, as in Caffe. In place, x is the output,
    whose sign matches the input's for ν ≥ 0."""
    gradcheck_kink = (0.0, 0.01)  # not differentiable at 0: checks skip |x| <= 0.01

    def forward_cpu(self, bottom, top):
        _relu(bottom[0].data, self.layer_param.relu_param.negative_slope, out=top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            _relu_grad(top[0].diff, bottom[0].data, self.layer_param.relu_param.negative_slope,
                       out=bottom[0].diff)

    def forward_gpu(self, bottom, top):
        x, y = _io(bottom, top)
        _relu.gpu(x, self.layer_param.relu_param.negative_slope, out=y)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy, dx = _grads(top, bottom)
            _relu_grad.gpu(dy, bottom[0].gpu_data(False), self.layer_param.relu_param.negative_slope,
                           out=dx)


@register("PReLU")
class PReLULayer(_KeepsInput):
    """PReLU: y = max(x, 0) + a_c·min(x, 0) with one learned slope a_c per channel (axis 1), or
    a single one (0-D blob) with ``prelu_param.channel_shared`` (false). ``filler`` defaults to
    constant 0.25. The bottom needs at least 2 axes.
    Backward: da_c += Σ_{x in channel c, x ≤ 0} dy·x (accumulates); dx = dy·(1 if x > 0 else a_c).
    In place, a copy of the input is kept for the backward (as Caffe's ``bottom_memory_``)."""
    gradcheck_kink = (0.0, 0.01)  # not differentiable at 0: checks skip |x| <= 0.01

    def _check_axes(self, bottom):
        if bottom[0].num_axes < 2:
            raise ShapeError("PReLU Layer %s: the bottom needs >= 2 axes (N, C, ...), got shape %s"
                             % (self.name, bottom[0].shape))

    def layer_setup(self, bottom, top):
        self._check_axes(bottom)
        p = self.layer_param.prelu_param
        self.channel_shared = p.channel_shared
        channels = bottom[0].shape[1]
        if not self.blobs:
            a = self.make_blob(() if self.channel_shared else (channels,))
            if p.HasField("filler"):
                fill(a, p.filler)
            else:
                a.data[...] = 0.25
            self.blobs = [a]
        want = 1 if self.channel_shared else channels
        if self.blobs[0].count() != want:
            raise ShapeError("PReLU Layer %s: the slope blob has %d element(s), expected %d (%s)"
                             % (self.name, self.blobs[0].count(), want,
                                "channel_shared" if self.channel_shared else "one per channel"))
        self.param_propagate_down = [True]

    def reshape(self, bottom, top):
        self._check_axes(bottom)
        if not self.channel_shared and bottom[0].shape[1] != self.blobs[0].count():
            raise self.shape_error("bottom channels (axis 1)", (bottom[0].shape[1],),
                                   (self.blobs[0].count(),))
        top[0].reshape(bottom[0].shape)

    def _slope(self, x):
        a = self.blobs[0].data
        if self.channel_shared:
            return a.reshape(())
        return a.reshape((1, -1) + (1,) * (x.ndim - 2))

    def forward_cpu(self, bottom, top):
        x = self._keep_input(bottom, top)
        _relu(x, self._slope(x), out=top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        x, dy = self._input(bottom), top[0].diff
        if self.param_propagate_down and self.param_propagate_down[0]:
            g = _prelu_slope_grad(dy, x, out=np.empty_like(dy))
            da = self.blobs[0].diff
            if self.channel_shared:
                da += g.sum()
            else:
                axes = (0,) + tuple(range(2, x.ndim))
                da += g.sum(axis=axes)
        if propagate_down[0]:
            _relu_grad(dy, x, self._slope(x), out=bottom[0].diff)

    def _channels_inner(self, bottom):
        if self.channel_shared:
            return 1, 1
        return bottom[0].shape[1], bottom[0].count(2)

    def forward_gpu(self, bottom, top):
        x = self._keep_input_gpu(bottom, top)
        y = top[0].gpu_data()
        c, inner = self._channels_inner(bottom)
        _prelu_fwd[gpu.grid(y.size)](x, self.blobs[0].gpu_data(False), c, inner, y)

    def backward_gpu(self, top, propagate_down, bottom):
        want_da = bool(self.param_propagate_down and self.param_propagate_down[0])
        if not (want_da or propagate_down[0]):
            return
        x, dy = self._input_gpu(bottom), top[0].gpu_diff(False)
        c, inner = self._channels_inner(bottom)
        terms = gpu.scratch("prelu", x.size, x.dtype)
        # dx may be dy itself (in place): each element reads dy before writing dx
        dx = bottom[0].gpu_diff() if propagate_down[0] else terms
        _prelu_bwd[gpu.grid(x.size)](x, dy, self.blobs[0].gpu_data(False), c, inner,
                                     bool(propagate_down[0]), terms, dx)
        if want_da:
            n = bottom[0].shape[0]
            if self.channel_shared:
                gpu.sum_odi(terms, 1, 1, x.size, self.blobs[0].gpu_diff(), 1.0, 1.0)
            else:
                gpu.sum_odi(terms, n, c, inner, self.blobs[0].gpu_diff(), 1.0, 1.0)


@register("ELU")
class ELULayer(_KeepsInput):
    """ELU: y = x if x > 0 else α·(exp(x) − 1) (``elu_param.alpha`` α, 1).
    dx = dy·(1 if x > 0 else y + α)."""
    gradcheck_kink = (0.0, 0.01)  # not differentiable at 0: checks skip |x| <= 0.01

    def forward_cpu(self, bottom, top):
        x = self._keep_input(bottom, top)
        alpha = self.layer_param.elu_param.alpha
        _elu(x, alpha, out=top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, y, dy = self._input(bottom), top[0].data, top[0].diff
        alpha = self.layer_param.elu_param.alpha
        _elu_grad(dy, x, y, alpha, out=bottom[0].diff)

    def forward_gpu(self, bottom, top):
        x = self._keep_input_gpu(bottom, top)
        y = top[0].gpu_data()
        _elu.gpu(x, self.layer_param.elu_param.alpha, out=y)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x, y = self._input_gpu(bottom), top[0].gpu_data(False)
            dy, dx = _grads(top, bottom)
            _elu_grad.gpu(dy, x, y, self.layer_param.elu_param.alpha, out=dx)


@register("Sigmoid", "SIGMOID")
class SigmoidLayer(NeuronLayer):
    """Sigmoid: y = 1/(1 + exp(−x)), computed as ½·tanh(x/2) + ½. dx = dy·y·(1 − y)."""

    def forward_cpu(self, bottom, top):
        _sigmoid(bottom[0].data, out=top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            _sigmoid_grad(top[0].diff, top[0].data, out=bottom[0].diff)

    def forward_gpu(self, bottom, top):
        x, y = _io(bottom, top)
        _sigmoid.gpu(x, out=y)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy, dx = _grads(top, bottom)
            _sigmoid_grad.gpu(dy, top[0].gpu_data(False), out=dx)


@register("TanH", "TANH")
class TanHLayer(NeuronLayer):
    """TanH: y = tanh(x). dx = dy·(1 − y²)."""

    def forward_cpu(self, bottom, top):
        _tanh(bottom[0].data, out=top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            _tanh_grad(top[0].diff, top[0].data, out=bottom[0].diff)

    def forward_gpu(self, bottom, top):
        x, y = _io(bottom, top)
        _tanh.gpu(x, out=y)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy, dx = _grads(top, bottom)
            _tanh_grad.gpu(dy, top[0].gpu_data(False), out=dx)


@register("AbsVal", "ABSVAL")
class AbsValLayer(NeuronLayer):
    """AbsVal: y = |x|. dx = dy·sign(x) (0 at x = 0). No in-place computation (Caffe CHECKs)."""
    gradcheck_kink = (0.0, 0.01)  # not differentiable at 0: checks skip |x| <= 0.01

    def reshape(self, bottom, top):
        if _in_place(bottom, top):
            raise CaffeError("AbsVal Layer %s does not allow in-place computation" % self.name)
        top[0].reshape(bottom[0].shape)

    def forward_cpu(self, bottom, top):
        _abs(bottom[0].data, out=top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            _abs_grad(top[0].diff, bottom[0].data, out=bottom[0].diff)

    def forward_gpu(self, bottom, top):
        x, y = _io(bottom, top)
        _abs.gpu(x, out=y)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy, dx = _grads(top, bottom)
            _abs_grad.gpu(dy, bottom[0].gpu_data(False), out=dx)


@register("Power", "POWER")
class PowerLayer(_KeepsInput):
    """Power: y = (shift + scale·x)^power (``power_param`` power 1, scale 1, shift 0).

    Caffe's special cases: with diff_scale = power·scale = 0 the input is ignored and
    y = 1 if power = 0 else shift^power, dx = 0; with power = 1, dx = scale·dy.
    Otherwise dx = dy·power·scale·(shift + scale·x)^(power − 1). (Caffe evaluates this last one
    as diff_scale·y/(shift + scale·x), which is NaN where shift + scale·x = 0; the direct form
    gives the limit there.)"""

    def layer_setup(self, bottom, top):
        p = self.layer_param.power_param
        self.power, self.scale, self.shift = p.power, p.scale, p.shift
        self.diff_scale = self.power * self.scale

    def forward_cpu(self, bottom, top):
        y = top[0].data
        if self.diff_scale == 0:
            y[...] = 1.0 if self.power == 0 else np.power(np.float64(self.shift), self.power)
            return
        x = self._keep_input(bottom, top) if self.power != 1 else bottom[0].data
        _power(x, self.power, self.scale, self.shift, out=y)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx, dy = bottom[0].diff, top[0].diff
        if self.diff_scale == 0:
            dx[...] = 0
        elif self.power == 1:
            np.multiply(dy, self.diff_scale, out=dx)
        else:
            _power_grad(dy, self._input(bottom), self.power, self.scale, self.shift,
                        self.diff_scale, out=dx)

    def forward_gpu(self, bottom, top):
        y = top[0].gpu_data()
        if self.diff_scale == 0:
            gpu.fill(y, 1.0 if self.power == 0 else np.power(np.float64(self.shift), self.power))
            return
        x = self._keep_input_gpu(bottom, top) if self.power != 1 else bottom[0].gpu_data(False)
        _power.gpu(x, self.power, self.scale, self.shift, out=y)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = _grads(top, bottom)
        if self.diff_scale == 0:
            gpu.fill(dx, 0.0)
        elif self.power == 1:
            gpu.axpby(self.diff_scale, dy, 0.0, dx)
        else:
            _power_grad.gpu(dy, self._input_gpu(bottom), self.power, self.scale, self.shift,
                            self.diff_scale, out=dx)


def _log_base(layer, base):
    """ln(base), with base −1 meaning e (exactly 1); CaffeError for base ≤ 0 or ln(base) ±inf/0
    where the caller divides by it."""
    if base == -1:
        return 1.0
    if not base > 0:
        raise CaffeError("%s layer %s: %s.base must be strictly positive (or -1 for e), got %g"
                         % (layer.type, layer.name, layer.type.lower() + "_param", base))
    return float(np.log(base))


@register("Exp", "EXP")
class ExpLayer(NeuronLayer):
    """Exp: y = base^(shift + scale·x) (``exp_param`` base −1 meaning e, scale 1, shift 0),
    computed as base^shift · exp(ln(base)·scale·x). dx = dy·y·ln(base)·scale."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.exp_param
        log_base = _log_base(self, p.base)
        self.inner_scale = log_base * p.scale
        if p.shift == 0:
            self.outer_scale = 1.0
        else:
            self.outer_scale = float(np.exp(p.shift)) if p.base == -1 else float(p.base) ** p.shift

    def forward_cpu(self, bottom, top):
        _exp(bottom[0].data, self.inner_scale, self.outer_scale, out=top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            _exp_grad(top[0].diff, top[0].data, self.inner_scale, out=bottom[0].diff)

    def forward_gpu(self, bottom, top):
        x, y = _io(bottom, top)
        _exp.gpu(x, self.inner_scale, self.outer_scale, out=y)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy, dx = _grads(top, bottom)
            _exp_grad.gpu(dy, top[0].gpu_data(False), self.inner_scale, out=dx)


@register("Log")
class LogLayer(_KeepsInput):
    """Log: y = log_base(shift + scale·x) (``log_param`` base −1 meaning e, scale 1, shift 0).
    dx = dy·scale / ((shift + scale·x)·ln(base)). base must be > 0 and ≠ 1."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.log_param
        log_base = _log_base(self, p.base)
        if log_base == 0 or not np.isfinite(log_base):
            raise CaffeError("Log layer %s: log_param.base %g gives 1/ln(base) = inf"
                             % (self.name, p.base))
        self.base_scale = 1.0 / log_base
        self.scale, self.shift = p.scale, p.shift
        self.backward_num_scale = p.scale / log_base

    def forward_cpu(self, bottom, top):
        x = self._keep_input(bottom, top)
        _log(x, self.scale, self.shift, self.base_scale, out=top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            _log_grad(top[0].diff, self._input(bottom), self.scale, self.shift,
                      self.backward_num_scale, out=bottom[0].diff)

    def forward_gpu(self, bottom, top):
        x = self._keep_input_gpu(bottom, top)
        _log.gpu(x, self.scale, self.shift, self.base_scale, out=top[0].gpu_data())

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy, dx = _grads(top, bottom)
            _log_grad.gpu(dy, self._input_gpu(bottom), self.scale, self.shift,
                          self.backward_num_scale, out=dx)


@register("BNLL")
class BNLLLayer(NeuronLayer):
    """BNLL: y = log(1 + exp(x)) (softplus), computed stably as logaddexp(0, x).
    dx = dy·σ(x) = dy·(1 − exp(−y)), evaluated from the output, so it is exact for large |x|
    and safe in place."""

    def forward_cpu(self, bottom, top):
        _bnll(bottom[0].data, out=top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            _bnll_grad(top[0].diff, top[0].data, out=bottom[0].diff)

    def forward_gpu(self, bottom, top):
        x, y = _io(bottom, top)
        _bnll.gpu(x, out=y)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy, dx = _grads(top, bottom)
            _bnll_grad.gpu(dy, top[0].gpu_data(False), out=dx)


@register("Threshold", "THRESHOLD")
class ThresholdLayer(NeuronLayer):
    """Threshold: y = 1 if x > threshold else 0 (``threshold_param.threshold``, 0).
    It has no gradient: backward with propagate_down raises (Caffe's NOT_IMPLEMENTED)."""

    def forward_cpu(self, bottom, top):
        _threshold(bottom[0].data, self.layer_param.threshold_param.threshold, out=top[0].data)

    def forward_gpu(self, bottom, top):
        x, y = _io(bottom, top)
        _threshold.gpu(x, self.layer_param.threshold_param.threshold, out=y)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise NotImplementedCaffeError(
                "Threshold layer %s: backward is not implemented (the step function has no "
                "gradient); keep it out of the backward pass (propagate_down: false)" % self.name)


@register("Dropout", "DROPOUT")
class DropoutLayer(NeuronLayer):
    """Dropout (``dropout_param.dropout_ratio`` r, 0.5; 0 ≤ r < 1).
    TRAIN: mask ~ Bernoulli(1 − r) from ``backend.rng()``, y = x·mask/(1 − r),
    dx = dy·mask/(1 − r). TEST: y = x, dx = dy. The phase is the layer's (from the net)."""

    def layer_setup(self, bottom, top):
        r = self.layer_param.dropout_param.dropout_ratio
        if not 0 <= r < 1:
            raise CaffeError("Dropout layer %s: dropout_param.dropout_ratio must be in [0, 1), "
                             "got %g" % (self.name, r))
        self.ratio = float(r)
        self.scale = 1.0 / (1.0 - self.ratio)
        self.mask = None

    def forward_cpu(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        if self.phase == 0:
            self.mask = backend.rng().random(x.shape) < (1.0 - self.ratio)
            np.multiply(x, self.mask, out=y)
            y *= self.scale
        elif not _in_place(bottom, top):
            np.copyto(y, x)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.phase == 0:
            np.multiply(dy, self.mask, out=dx)
            dx *= self.scale
        elif not _in_place(bottom, top):
            np.copyto(dx, dy)

    def forward_gpu(self, bottom, top):
        x, y = _io(bottom, top)
        if self.phase == 0:
            # the CPU's mask from the same generator, uploaded as mask/(1 − r)
            self.mask = backend.rng().random(bottom[0].shape) < (1.0 - self.ratio)
            scaled = self.mask.ravel().astype(x.dtype) * x.dtype.type(self.scale)
            self._mask_dev = gpu.ensure(getattr(self, "_mask_dev", None), y.size, x.dtype)
            self._mask_dev.copy_to_device(scaled)
            gpu.mul(x, self._mask_dev, y)
        elif not _in_place(bottom, top):
            gpu.copy(x, y)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = _grads(top, bottom)
        if self.phase == 0:
            gpu.mul(dy, self._mask_dev, dx)
        elif not _in_place(bottom, top):
            gpu.copy(dy, dx)


@register("Swish")
class SwishLayer(NeuronLayer):
    """Swish: y = x·σ(βx) (``swish_param.beta`` β, 1).
    dx = dy·(β·y + σ(βx)·(1 − β·y)); σ(βx) is kept from the forward, so in place is fine."""

    def forward_cpu(self, bottom, top):
        x = bottom[0].data
        self.sig = _scaled_sigmoid(x, self.layer_param.swish_param.beta, out=np.empty_like(x))
        kernels.mul(x, self.sig, out=top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            _swish_grad(top[0].diff, top[0].data, self.sig, self.layer_param.swish_param.beta,
                        out=bottom[0].diff)

    def forward_gpu(self, bottom, top):
        x, y = _io(bottom, top)
        self._sig_dev = gpu.ensure(getattr(self, "_sig_dev", None), y.size, x.dtype)
        _scaled_sigmoid.gpu(x, self.layer_param.swish_param.beta, out=self._sig_dev)
        kernels.mul.gpu(x, self._sig_dev, out=y)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy, dx = _grads(top, bottom)
            _swish_grad.gpu(dy, top[0].gpu_data(False), self._sig_dev,
                            self.layer_param.swish_param.beta, out=dx)


@register("Clip")
class ClipLayer(_KeepsInput):
    """Clip: y = max(min, min(x, max)) (``clip_param`` min and max, both required).
    dx = dy where min ≤ x ≤ max, else 0 (ties pass the gradient, as in Caffe)."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.clip_param
        for f in ("min", "max"):
            if not p.HasField(f):
                raise CaffeError("Clip layer %s: clip_param.%s is required" % (self.name, f))
        self.lo, self.hi = p.min, p.max

    def forward_cpu(self, bottom, top):
        _clip(self._keep_input(bottom, top), self.lo, self.hi, out=top[0].data)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            _clip_grad(top[0].diff, self._input(bottom), self.lo, self.hi, out=bottom[0].diff)

    def forward_gpu(self, bottom, top):
        x = self._keep_input_gpu(bottom, top)
        _clip.gpu(x, self.lo, self.hi, out=top[0].gpu_data())

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy, dx = _grads(top, bottom)
            _clip_grad.gpu(dy, self._input_gpu(bottom), self.lo, self.hi, out=dx)
