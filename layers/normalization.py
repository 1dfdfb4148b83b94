"""Normalization layers: BatchNorm, Scale, Bias, MVN.

BatchNorm only normalises; the learned γ/β of batch normalisation are a following
``Scale { bias_term: true }`` layer, as in Caffe.

GPU: the per-channel (or per-row) statistics are ``gpu.sum_odi`` reductions, the rest
elementwise kernels beside each layer; the same formulas in the same order as the CPU code.
"""
import math

import numpy as np
from numba import cuda

from minicaffe import gpu
from minicaffe.errors import CaffeError, ShapeError
from minicaffe.fillers import fill
from minicaffe.kernels import add, div, elementwise, mul, sub
from minicaffe.layer import Layer, register


def _in_place(bottom, top):
    return top[0] is bottom[0] or top[0].shares_data_with(bottom[0])


@cuda.jit
def _bn_stats(mean, var, run_mean, run_var, run_s, maf, correction, eps, std):
    # running sums (s ← λs + 1, mean ← λ·mean + μ, var ← λ·var + m/(m−1)·σ²), then √(σ² + ε)
    c = cuda.grid(1)
    if c == 0:
        run_s[0] = run_s[0] * maf + 1
    while c < mean.size:
        run_mean[c] = run_mean[c] * maf + mean[c]
        run_var[c] = run_var[c] * maf + var[c] * correction
        std[c] = math.sqrt(var[c] + eps)
        c += cuda.gridsize(1)


@cuda.jit
def _bn_global(run_mean, run_var, f, eps, mean, std):
    c = cuda.grid(1)
    while c < mean.size:
        mean[c] = run_mean[c] * f
        std[c] = math.sqrt(run_var[c] * f + eps)
        c += cuda.gridsize(1)


@elementwise
def _bn_grad(dy, y, mdy, mdyy, std):
    """BatchNorm's batch-stats backward: (dy − mean(dy) − y·mean(dy·y)) / std, the two means and
    std per channel (broadcast)."""
    return (dy - mdy - y * mdyy) / std


@cuda.jit
def _mvn_scale(sigma_sq, eps, sigma, s):
    # per row: σ = √(mean of y²) (sigma_sq holds it on entry), s = σ + eps
    r = cuda.grid(1)
    while r < s.size:
        v = math.sqrt(sigma_sq[r])
        sigma[r] = v
        s[r] = v + eps
        r += cuda.gridsize(1)


@elementwise(loop=True)
def _mvn_grad(dy, mdy, y, mdyy, sigma, s):
    """MVN's backward with variance normalisation: (dy − mean(dy) − y·(s/σ)·mean(dy·y)) / s per
    row (s = σ + eps; s/σ taken as 1 where σ = 0, a constant row)."""
    ratio = s / (sigma if sigma > 0 else s)
    return (dy - mdy - y * (ratio * mdyy)) / s


@register("BatchNorm")
class BatchNormLayer(Layer):
    """BatchNorm: y = (x − μ_c) / sqrt(σ²_c + eps), statistics per channel (axis 1; a 1-D
    bottom is one channel) over the batch and spatial axes (m = N·H·W values).

    ``batch_norm_param``: use_global_stats (unset: false in TRAIN, true in TEST),
    moving_average_fraction λ (0.999), eps (1e-5).
    Three state blobs, never learned: running mean sum (C,), running variance sum (C,) and the
    scale factor s (1,). Each TRAIN forward updates them as Caffe:
    s ← λ·s + 1, mean ← λ·mean + μ, var ← λ·var + m/(m − 1)·σ² (biased batch σ², m > 1).
    With global stats μ = mean/s, σ² = var/s (0 when s = 0).
    Set-up appends ``param { lr_mult: 0 }`` for each blob the prototxt leaves unspecified, and
    rejects a non-zero lr_mult ("Cannot configure batch normalization statistics as layer
    parameters"), so no solver updates them.
    Backward, batch stats: dx = (dy − mean(dy) − y·mean(dy·y)) / sqrt(σ² + eps), the means per
    channel over N·H·W. Global stats: dx = dy / sqrt(σ² + eps).
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.batch_norm_param
        self.maf = p.moving_average_fraction
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") \
            else self.phase == 1
        self.eps = p.eps
        if bottom[0].num_axes == 0:
            raise ShapeError("BatchNorm Layer %s: the bottom needs at least 1 axis" % self.name)
        self.channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        if not self.blobs:
            self.blobs = [self.make_blob((self.channels,)), self.make_blob((self.channels,)),
                          self.make_blob((1,))]
            for b in self.blobs:
                b.data[...] = 0
        params = self.layer_param.param
        for i in range(len(self.blobs)):
            if len(params) == i:
                params.add().lr_mult = 0.0
            elif params[i].lr_mult != 0:
                raise CaffeError("BatchNorm layer %s: param %d has lr_mult %g; Cannot configure "
                                 "batch normalization statistics as layer parameters (lr_mult "
                                 "must be 0)" % (self.name, i, params[i].lr_mult))
        self.param_propagate_down = [False] * len(self.blobs)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        c = 1 if len(shape) == 1 else (shape[1] if shape else None)
        if c != self.channels:
            raise self.shape_error("bottom channels (axis 1)", (c,), (self.channels,))
        if not _in_place(bottom, top):
            top[0].reshape(shape)

    def _view(self, a):
        n = a.shape[0]
        return a.reshape(n, self.channels, -1 if n and self.channels else 0)

    def forward_cpu(self, bottom, top):
        x = self._view(bottom[0].data)
        if self.use_global_stats:
            s = self.blobs[2].data.reshape(-1)[0]
            f = 0.0 if s == 0 else 1.0 / s
            mean = self.blobs[0].data * f
            var = self.blobs[1].data * f
            xc = sub(x, mean[None, :, None], out=np.empty_like(x))
        else:
            mean = x.mean(axis=(0, 2))
            xc = sub(x, mean[None, :, None], out=np.empty_like(x))
            var = np.mean(xc * xc, axis=(0, 2))
            m = x.size // self.channels
            self.blobs[2].data[...] *= self.maf
            self.blobs[2].data[...] += 1
            rm, rv = self.blobs[0].data, self.blobs[1].data
            rm *= self.maf
            rm += mean
            rv *= self.maf
            rv += var * (m / (m - 1.0) if m > 1 else 1.0)
        self.std = np.sqrt(var + self.eps)
        self.x_norm = div(xc, self.std[None, :, None], out=xc)
        np.copyto(self._view(top[0].data), xc)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = self._view(top[0].diff)
        std = self.std[None, :, None]
        dx = self._view(bottom[0].diff)
        if self.use_global_stats:
            div(dy, std, out=dx)
            return
        y = self.x_norm
        _bn_grad(dy, y, dy.mean(axis=(0, 2), keepdims=True),
                 np.mean(dy * y, axis=(0, 2), keepdims=True), std, out=dx)

    def _dims(self, blob):
        n = blob.shape[0]
        c = self.channels
        inner = blob.count() // max(1, n * c)
        return n, c, inner

    def forward_gpu(self, bottom, top):
        x, y = bottom[0].gpu_data(False), top[0].gpu_data()
        n, c, inner = self._dims(bottom[0])
        dt = x.dtype
        mean = gpu.scratch("bn_mean", c, dt)
        self._std_dev = gpu.ensure(getattr(self, "_std_dev", None), c, dt)
        if self.use_global_stats:
            s = float(self.blobs[2].cpu_data().reshape(-1)[0])  # one element
            f = 0.0 if s == 0 else 1.0 / s
            _bn_global[gpu.grid(c)](self.blobs[0].gpu_data(False), self.blobs[1].gpu_data(False),
                                    f, self.eps, mean, self._std_dev)
        else:
            m = x.size // c
            gpu.sum_odi(x, n, c, inner, mean, 1.0 / max(m, 1))
        xc = sub.gpu(x, mean, out=gpu.scratch("bn_xc", x.size, dt), inner=inner)
        if not self.use_global_stats:
            var = gpu.scratch("bn_var", c, dt)
            sq = gpu.scratch("bn_sq", x.size, dt)
            gpu.mul(xc, xc, sq)
            gpu.sum_odi(sq, n, c, inner, var, 1.0 / max(m, 1))
            _bn_stats[gpu.grid(c)](mean, var, self.blobs[0].gpu_data(), self.blobs[1].gpu_data(),
                                   self.blobs[2].gpu_data(), self.maf,
                                   m / (m - 1.0) if m > 1 else 1.0, self.eps, self._std_dev)
        self._xnorm_dev = gpu.ensure(getattr(self, "_xnorm_dev", None), x.size, dt)
        div.gpu(xc, self._std_dev, out=self._xnorm_dev, inner=inner)
        gpu.copy(self._xnorm_dev, y)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].gpu_diff(False), bottom[0].gpu_diff()
        n, c, inner = self._dims(bottom[0])
        if self.use_global_stats:
            div.gpu(dy, self._std_dev, out=dx, inner=inner)
            return
        m = dy.size // c
        y = self._xnorm_dev
        mdy = gpu.scratch("bn_mdy", c, dy.dtype)
        mdyy = gpu.scratch("bn_mdyy", c, dy.dtype)
        prod = gpu.scratch("bn_sq", dy.size, dy.dtype)
        gpu.sum_odi(dy, n, c, inner, mdy, 1.0 / max(m, 1))
        gpu.mul(dy, y, prod)
        gpu.sum_odi(prod, n, c, inner, mdyy, 1.0 / max(m, 1))
        _bn_grad.gpu(dy, y, mdy, mdyy, self._std_dev, out=dx, inner=inner)


# --- Scale and Bias: a blob broadcast over bottom[0] from ``axis`` -------------------------------

def _param_shape(layer, what, b0, axis, num_axes):
    """The shape of a learned scale/bias blob: bottom[0]'s axes [axis, axis + num_axes)
    (−1: to the end)."""
    axis = b0.canonical_axis(axis)
    if num_axes < -1:
        raise CaffeError("%s layer %s: %s.num_axes must be non-negative, or -1 to extend to the "
                         "end of bottom[0], got %d" % (layer.type, layer.name,
                                                      layer.type.lower() + "_param", num_axes))
    if num_axes >= 0 and b0.num_axes < axis + num_axes:
        raise ShapeError("%s Layer %s: %s blob's shape extends past bottom[0]'s shape %s when "
                         "applied starting with bottom[0] axis = %d (num_axes %d)"
                         % (layer.type, layer.name, what, b0.shape, axis, num_axes))
    return b0.shape[axis:] if num_axes == -1 else b0.shape[axis:axis + num_axes]


def _broadcast_dims(layer, what, b0, pshape, axis):
    """(outer, dim, inner) for a blob of shape ``pshape`` applied to bottom[0] from ``axis``
    (axis 0 when the blob is a scalar, as Caffe)."""
    k = len(pshape)
    axis = 0 if k == 0 else b0.canonical_axis(axis)
    if b0.num_axes < axis + k or tuple(b0.shape[axis:axis + k]) != tuple(pshape):
        raise ShapeError("%s Layer %s: %s blob of shape %s does not match bottom[0]'s shape %s "
                         "from axis %d" % (layer.type, layer.name, what, tuple(pshape), b0.shape,
                                           axis))
    return b0.count(0, axis), int(np.prod(pshape, dtype=np.int64)), b0.count(axis + k)


def _sum_outer_inner(a, dims):
    o, d, i = dims
    return a.reshape(o, d, i).sum(axis=(0, 2))


@register("Scale")
class ScaleLayer(Layer):
    """Scale: y = x ⊙ s (+ b), s broadcast over bottom[0] from ``scale_param.axis`` (1).

    With one bottom s is a learned blob of shape bottom.shape[axis : axis + num_axes]
    (``num_axes`` 1; −1 = to the end; 0 = a scalar), filled by ``filler`` (default constant 1).
    With two bottoms s is bottom[1] (any shape matching bottom[0] from ``axis``) and no scale blob
    is created. ``bias_term`` (false) adds a learned bias blob (last in ``blobs``, filled by
    ``bias_filler``, default constant 0) of the scale's shape: Caffe's internal Bias layer.
    Backward: ds = Σ_{outer, inner} dy·x (accumulated for the blob, overwritten for bottom[1]),
    db += Σ dy, dx = dy ⊙ s. In place, the input is kept for ds.
    """
    min_num_bottom = 1
    max_num_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.scale_param
        if len(bottom) == 1 and not self.blobs:
            s = self.make_blob(_param_shape(self, "scale", bottom[0], p.axis, p.num_axes))
            if p.HasField("filler"):
                fill(s, p.filler)
            else:
                s.data[...] = 1
            self.blobs = [s]
        self.bias_id = None
        if p.bias_term:
            if len(self.blobs) + len(bottom) < 3:
                nax = bottom[1].num_axes if len(bottom) > 1 else p.num_axes
                b = self.make_blob(_param_shape(self, "bias", bottom[0], p.axis, nax))
                fill(b, p.bias_filler)
                self.blobs.append(b)
            self.bias_id = len(self.blobs) - 1
        self.param_propagate_down = [True] * len(self.blobs)
        self._saved = None

    def _scale(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        axis = self.layer_param.scale_param.axis
        self.dims = _broadcast_dims(self, "scale", bottom[0], self._scale(bottom).shape, axis)
        if self.bias_id is not None:
            self.bias_dims = _broadcast_dims(self, "bias", bottom[0],
                                             self.blobs[self.bias_id].shape, axis)
        if not _in_place(bottom, top):
            top[0].reshape(bottom[0].shape)

    def forward_cpu(self, bottom, top):
        o, d, i = self.dims
        x = bottom[0].data.reshape(o, d, i)
        self._saved = x.copy() if _in_place(bottom, top) else None
        mul(x, self._scale(bottom).data.reshape(1, d, 1), out=top[0].data.reshape(o, d, i))
        if self.bias_id is not None:
            bo, bd, bi = self.bias_dims
            y = top[0].data.reshape(bo, bd, bi)
            y += self.blobs[self.bias_id].data.reshape(1, bd, 1)

    def backward_cpu(self, top, propagate_down, bottom):
        o, d, i = self.dims
        dy = top[0].diff
        if self.bias_id is not None and self.param_propagate_down[self.bias_id]:
            b = self.blobs[self.bias_id]
            b.diff[...] += _sum_outer_inner(dy, self.bias_dims).reshape(b.shape)
        two = len(bottom) > 1
        s = self._scale(bottom)
        if (two and propagate_down[1]) or (not two and self.param_propagate_down[0]):
            x = self._saved if self._saved is not None else bottom[0].data
            g = _sum_outer_inner(dy.reshape(o, d, i) * x.reshape(o, d, i), self.dims)
            if two:
                s.diff[...] = g.reshape(s.shape)
            else:
                s.diff[...] += g.reshape(s.shape)
        if propagate_down[0]:
            mul(dy.reshape(o, d, i), s.data.reshape(1, d, 1), out=bottom[0].diff.reshape(o, d, i))

    def forward_gpu(self, bottom, top):
        o, d, i = self.dims
        x = bottom[0].gpu_data(False)
        if _in_place(bottom, top):
            self._saved_dev = gpu.ensure(getattr(self, "_saved_dev", None), x.size, x.dtype)
            gpu.copy(x, self._saved_dev)
        else:
            self._saved_dev = None
        y = top[0].gpu_data()
        mul.gpu(x, self._scale(bottom).gpu_data(False), out=y, inner=i)
        if self.bias_id is not None:
            gpu.add_bias(y, self.blobs[self.bias_id].gpu_data(False), self.bias_dims[2])

    def backward_gpu(self, top, propagate_down, bottom):
        o, d, i = self.dims
        dy = top[0].gpu_diff(False)
        if self.bias_id is not None and self.param_propagate_down[self.bias_id]:
            bo, bd, bi = self.bias_dims
            gpu.sum_odi(dy, bo, bd, bi, self.blobs[self.bias_id].gpu_diff(), 1.0, 1.0)
        two = len(bottom) > 1
        s = self._scale(bottom)
        if (two and propagate_down[1]) or (not two and self.param_propagate_down[0]):
            x = self._saved_dev if self._saved_dev is not None else bottom[0].gpu_data(False)
            prod = gpu.scratch("scale_prod", dy.size, dy.dtype)
            gpu.mul(dy, x, prod)
            gpu.sum_odi(prod, o, d, i, s.gpu_diff(), 1.0, 0.0 if two else 1.0)
        if propagate_down[0]:
            dx = bottom[0].gpu_diff()
            mul.gpu(dy, s.gpu_data(False), out=dx, inner=i)


@register("Bias")
class BiasLayer(Layer):
    """Bias: y = x + b, b broadcast over bottom[0] from ``bias_param.axis`` (1).

    With one bottom b is a learned blob of shape bottom.shape[axis : axis + num_axes]
    (``num_axes`` 1; −1 = to the end; 0 = a scalar), filled by ``filler`` (default constant 0).
    With two bottoms b is bottom[1] and no blob is created.
    Backward: db = Σ_{outer, inner} dy (accumulated for the blob, overwritten for bottom[1]),
    dx = dy.
    """
    min_num_bottom = 1
    max_num_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.bias_param
        if len(bottom) == 1 and not self.blobs:
            b = self.make_blob(_param_shape(self, "bias", bottom[0], p.axis, p.num_axes))
            fill(b, p.filler)
            self.blobs = [b]
        self.param_propagate_down = [True] * len(self.blobs)

    def _bias(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        self.dims = _broadcast_dims(self, "bias", bottom[0], self._bias(bottom).shape,
                                    self.layer_param.bias_param.axis)
        if not _in_place(bottom, top):
            top[0].reshape(bottom[0].shape)

    def forward_cpu(self, bottom, top):
        o, d, i = self.dims
        add(bottom[0].data.reshape(o, d, i), self._bias(bottom).data.reshape(1, d, 1),
            out=top[0].data.reshape(o, d, i))

    def backward_cpu(self, top, propagate_down, bottom):
        dy = top[0].diff
        if propagate_down[0] and not _in_place(bottom, top):
            np.copyto(bottom[0].diff, dy)
        two = len(bottom) > 1
        b = self._bias(bottom)
        if (two and propagate_down[1]) or (not two and self.param_propagate_down[0]):
            g = _sum_outer_inner(dy, self.dims).reshape(b.shape)
            if two:
                b.diff[...] = g
            else:
                b.diff[...] += g

    def forward_gpu(self, bottom, top):
        o, d, i = self.dims
        y = top[0].gpu_data()
        add.gpu(bottom[0].gpu_data(False), self._bias(bottom).gpu_data(False), out=y, inner=i)

    def backward_gpu(self, top, propagate_down, bottom):
        dy = top[0].gpu_diff(False)
        if propagate_down[0] and not _in_place(bottom, top):
            gpu.copy(dy, bottom[0].gpu_diff())
        two = len(bottom) > 1
        if (two and propagate_down[1]) or (not two and self.param_propagate_down[0]):
            o, d, i = self.dims
            gpu.sum_odi(dy, o, d, i, self._bias(bottom).gpu_diff(), 1.0, 0.0 if two else 1.0)


@register("MVN")
class MVNLayer(Layer):
    """MVN: per sample and channel (or per sample with ``across_channels``, false),
    y = x − mean(x), then, with ``normalize_variance`` (true), y /= (std(x) + eps)
    (``eps`` 1e-9 added to the standard deviation, not the variance; std is the biased one).

    As in Caffe the top is reshaped through the legacy accessors to 4-D
    (num, channels, height, width), so the bottom may have at most 4 axes.
    Backward (exact for any eps): with s = σ + eps,
    dx = (dy − mean(dy) − y·mean(dy·y)·s/σ) / s; Caffe drops the factor s/σ (≈ 1 + eps/σ).
    Without variance normalisation dx = dy − mean(dy).
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) > 4:
            raise ShapeError("MVN Layer %s: Cannot use legacy accessors on Blobs with > 4 axes "
                             "(bottom shape %s)" % (self.name, shape))
        legacy = tuple(shape) + (1,) * (4 - len(shape))
        top[0].reshape(legacy)
        p = self.layer_param.mvn_param
        self.num = legacy[0] if p.across_channels else legacy[0] * legacy[1]
        self.dim = bottom[0].count() // self.num if self.num else 0

    def forward_cpu(self, bottom, top):
        p = self.layer_param.mvn_param
        x = bottom[0].data.reshape(self.num, self.dim)
        y = x - x.mean(axis=1, keepdims=True)
        if p.normalize_variance:
            self.sigma = np.sqrt(np.mean(y * y, axis=1, keepdims=True))
            self.s = self.sigma + p.eps
            y /= self.s
            self.y = y
        np.copyto(top[0].data.reshape(self.num, self.dim), y)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.num, self.dim)
        dx = bottom[0].diff.reshape(self.num, self.dim)
        mdy = dy.mean(axis=1, keepdims=True)
        if self.layer_param.mvn_param.normalize_variance:
            _mvn_grad(dy, mdy, self.y, np.mean(dy * self.y, axis=1, keepdims=True), self.sigma,
                      self.s, out=dx)
        else:
            sub(dy, mdy, out=dx)

    def forward_gpu(self, bottom, top):
        p = self.layer_param.mvn_param
        x, y = bottom[0].gpu_data(False), top[0].gpu_data()
        num, dim, dt = self.num, self.dim, x.dtype
        mean = gpu.scratch("mvn_mean", num, dt)
        gpu.sum_odi(x, 1, num, dim, mean, 1.0 / max(dim, 1))  # row means
        xc = sub.gpu(x, mean, out=gpu.scratch("mvn_xc", x.size, dt), inner=dim)
        if p.normalize_variance:
            sq = gpu.scratch("mvn_sq", x.size, dt)
            gpu.mul(xc, xc, sq)
            var = gpu.scratch("mvn_var", num, dt)
            gpu.sum_odi(sq, 1, num, dim, var, 1.0 / max(dim, 1))
            self._sigma_dev = gpu.ensure(getattr(self, "_sigma_dev", None), num, dt)
            self._s_dev = gpu.ensure(getattr(self, "_s_dev", None), num, dt)
            _mvn_scale[gpu.grid(num)](var, p.eps, self._sigma_dev, self._s_dev)
            self._y_dev = gpu.ensure(getattr(self, "_y_dev", None), x.size, dt)
            div.gpu(xc, self._s_dev, out=self._y_dev, inner=dim)
            gpu.copy(self._y_dev, y)
        else:
            gpu.copy(xc, y)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        nv = self.layer_param.mvn_param.normalize_variance
        dy, dx = top[0].gpu_diff(False), bottom[0].gpu_diff()
        num, dim, dt = self.num, self.dim, dy.dtype
        mdy = gpu.scratch("mvn_mdy", num, dt)
        gpu.sum_odi(dy, 1, num, dim, mdy, 1.0 / max(dim, 1))
        if not nv:
            sub.gpu(dy, mdy, out=dx, inner=dim)
            return
        y = self._y_dev
        prod = gpu.scratch("mvn_sq", dy.size, dt)
        gpu.mul(dy, y, prod)
        mdyy = gpu.scratch("mvn_mdyy", num, dt)
        gpu.sum_odi(prod, 1, num, dim, mdyy, 1.0 / max(dim, 1))
        _mvn_grad.gpu(dy, mdy, y, mdyy, self._sigma_dev, self._s_dev, out=dx, inner=dim)
