"""Neuron layers (elementwise, one bottom, one top of the same shape, in-place allowed):
ReLU, PReLU, ELU, Sigmoid, TanH, AbsVal, Power, Exp, Log, BNLL, Threshold, Dropout, Swish, Clip.

In place (top is the bottom blob) the forward overwrites the input. Layers whose backward needs
the input keep a copy of it in that case (Caffe's PReLU ``bottom_memory_``); Caffe's Power,
Log, Clip and ELU (with α < 0) read the clobbered bottom instead, so here they are also right in
place. AbsVal refuses in-place use, as in Caffe.

Each formula is written once for both devices (``minicaffe.kernels.elementwise``), and a layer
that is one formula each way (``_FormulaLayer``) names its two formulas and their arguments, so
the same code runs them on the host arrays or the device ones. Dropout draws its mask from the
same host generator on both devices and uploads it, so both modes drop the same units.
"""
import math

import numpy as np
from numba import cuda

from minicaffe import backend, gpu, kernels
from minicaffe.errors import CaffeError, ShapeError
from minicaffe.fillers import fill
from minicaffe.kernels import elementwise
from minicaffe.layer import NeuronLayer, OneCode, register


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


class _FormulaLayer(OneCode, _KeepsInput):
    """A neuron layer that is one formula each way, run by the same code on both devices:
    ``y = forward_formula(x, *forward_args())`` and ``dx = backward_formula(dy, *reads,
    *backward_args())`` (the layer's parameters; the same by default), where ``reads`` names what the gradient
    reads: "x" the input as it was at forward time (kept when in place), "bottom" the bottom's
    data at backward time (the output when in place: ReLU, whose sign matches), "y" the output.
    ``backward_formula`` None: no gradient (backward with propagate_down raises)."""
    forward_formula = backward_formula = None
    reads = ("y",)

    def forward_args(self):
        return ()

    def backward_args(self):
        return self.forward_args()

    def forward_with(self, dev, bottom, top):
        if "x" in self.reads:
            x = (self._keep_input_gpu if dev else self._keep_input)(bottom, top)
        else:
            x = bottom[0].gpu_data(False) if dev else bottom[0].data
        y = top[0].gpu_data() if dev else top[0].data
        (self.forward_formula.gpu if dev else self.forward_formula)(x, *self.forward_args(), out=y)

    def backward_with(self, dev, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.backward_formula is None:
            raise NotImplementedCaffeError(
                "%s layer %s: backward is not implemented (the function has no gradient); keep "
                "it out of the backward pass (propagate_down: false)" % (self.type, self.name))
        dy, dx = _grads(top, bottom) if dev else (top[0].diff, bottom[0].diff)
        reads = [self._read(r, bottom, top, dev) for r in self.reads]
        (self.backward_formula.gpu if dev else self.backward_formula)(
            dy, *reads, *self.backward_args(), out=dx)

    def _read(self, what, bottom, top, dev):
        if what == "x":
            return self._input_gpu(bottom) if dev else self._input(bottom)
        blob = bottom[0] if what == "bottom" else top[0]
        return blob.gpu_data(False) if dev else blob.data


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
class ReLULayer(_FormulaLayer):
    """ReLU: y = max(x, 0) + ν·min(x, 0) (``negative_slope`` ν, 0).
    dx = dy·(1 if x > 0 else ν); the gradient at 0 is ν, as in Caffe. In place, x is the output,
    whose sign matches the input's for ν ≥ 0."""
    gradcheck_kink = (0.0, 0.01)  # not differentiable at 0: checks skip |x| <= 0.01
    forward_formula, backward_formula, reads = _relu, _relu_grad, ("bottom",)

    def forward_args(self):
        return (self.layer_param.relu_param.negative_slope,)


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
class ELULayer(_FormulaLayer):
    """ELU: y = x if x > 0 else α·(exp(x) − 1) (``elu_param.alpha`` α, 1).
    dx = dy·(1 if x > 0 else y + α)."""
    gradcheck_kink = (0.0, 0.01)  # not differentiable at 0: checks skip |x| <= 0.01
    forward_formula, backward_formula, reads = _elu, _elu_grad, ("x", "y")

    def forward_args(self):
        return (self.layer_param.elu_param.alpha,)


@register("Sigmoid", "SIGMOID")
class SigmoidLayer(_FormulaLayer):
    """Sigmoid: y = 1/(1 + exp(−x)), computed as ½·tanh(x/2) + ½. dx = dy·y·(1 − y)."""
    forward_formula, backward_formula = _sigmoid, _sigmoid_grad


@register("TanH", "TANH")
class TanHLayer(_FormulaLayer):
    """TanH: y = tanh(x). dx = dy·(1 − y²)."""
    forward_formula, backward_formula = _tanh, _tanh_grad


@register("AbsVal", "ABSVAL")
class AbsValLayer(_FormulaLayer):
    """AbsVal: y = |x|. dx = dy·sign(x) (0 at x = 0). No in-place computation (Caffe CHECKs)."""
    forward_formula, backward_formula, reads = _abs, _abs_grad, ("bottom",)
    gradcheck_kink = (0.0, 0.01)  # not differentiable at 0: checks skip |x| <= 0.01

    def reshape(self, bottom, top):
        if _in_place(bottom, top):
            raise CaffeError("AbsVal Layer %s does not allow in-place computation" % self.name)
        top[0].reshape(bottom[0].shape)


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
class ExpLayer(_FormulaLayer):
    """Exp: y = base^(shift + scale·x) (``exp_param`` base −1 meaning e, scale 1, shift 0),
    computed as base^shift · exp(ln(base)·scale·x). dx = dy·y·ln(base)·scale."""
    forward_formula, backward_formula = _exp, _exp_grad

    def layer_setup(self, bottom, top):
        p = self.layer_param.exp_param
        log_base = _log_base(self, p.base)
        self.inner_scale = log_base * p.scale
        if p.shift == 0:
            self.outer_scale = 1.0
        else:
            self.outer_scale = float(np.exp(p.shift)) if p.base == -1 else float(p.base) ** p.shift

    def forward_args(self):
        return (self.inner_scale, self.outer_scale)

    def backward_args(self):
        return (self.inner_scale,)


@register("Log")
class LogLayer(_FormulaLayer):
    """Log: y = log_base(shift + scale·x) (``log_param`` base −1 meaning e, scale 1, shift 0).
    dx = dy·scale / ((shift + scale·x)·ln(base)). base must be > 0 and ≠ 1."""
    forward_formula, backward_formula, reads = _log, _log_grad, ("x",)

    def layer_setup(self, bottom, top):
        p = self.layer_param.log_param
        log_base = _log_base(self, p.base)
        if log_base == 0 or not np.isfinite(log_base):
            raise CaffeError("Log layer %s: log_param.base %g gives 1/ln(base) = inf"
                             % (self.name, p.base))
        self.base_scale = 1.0 / log_base
        self.scale, self.shift = p.scale, p.shift
        self.backward_num_scale = p.scale / log_base

    def forward_args(self):
        return (self.scale, self.shift, self.base_scale)

    def backward_args(self):
        return (self.scale, self.shift, self.backward_num_scale)


@register("BNLL")
class BNLLLayer(_FormulaLayer):
    """BNLL: y = log(1 + exp(x)) (softplus), computed stably as logaddexp(0, x).
    dx = dy·σ(x) = dy·(1 − exp(−y)), evaluated from the output, so it is exact for large |x|
    and safe in place."""
    forward_formula, backward_formula = _bnll, _bnll_grad


@register("Threshold", "THRESHOLD")
class ThresholdLayer(_FormulaLayer):
    """Threshold: y = 1 if x > threshold else 0 (``threshold_param.threshold``, 0).
    It has no gradient: backward with propagate_down raises (Caffe's NOT_IMPLEMENTED)."""
    forward_formula = _threshold

    def forward_args(self):
        return (self.layer_param.threshold_param.threshold,)


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
class ClipLayer(_FormulaLayer):
    """Clip: y = max(min, min(x, max)) (``clip_param`` min and max, both required).
    dx = dy where min ≤ x ≤ max, else 0 (ties pass the gradient, as in Caffe)."""
    forward_formula, backward_formula, reads = _clip, _clip_grad, ("x",)

    def layer_setup(self, bottom, top):
        p = self.layer_param.clip_param
        for f in ("min", "max"):
            if not p.HasField(f):
                raise CaffeError("Clip layer %s: clip_param.%s is required" % (self.name, f))
        self.lo, self.hi = p.min, p.max

    def forward_args(self):
        return (self.lo, self.hi)
