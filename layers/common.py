"""Common layers: InnerProduct, Split, Silence, Eltwise, Concat, Slice, Flatten, Reshape,
ArgMax, Reduction, Tile, Embed, Parameter, Filter, BatchReindex.

GPU: every layer but ArgMax (no gradient, a sort; it runs its CPU code on a host copy) has
``forward_gpu`` / ``backward_gpu`` beside its CPU code; InnerProduct's products go through
``gpu.gemm``. Flatten and Reshape share memory, so they have nothing to do on either device.
"""
import numpy as np
from numba import cuda

from minicaffe import gpu
from minicaffe.errors import CaffeError
from minicaffe.fillers import fill
from minicaffe.kernels import elementwise, in_place
from minicaffe.layer import Layer, OneCode, register
from minicaffe.proto import caffe_pb2

_ELT = caffe_pb2.EltwiseParameter
_RED = caffe_pb2.ReductionParameter


@cuda.jit
def _slice_copy(small, big, outer, k, inner, big_dim, off, to_big):
    # big viewed as (outer, big_dim, inner), small as (outer, k, inner) = big[:, off:off+k, :]
    i = cuda.grid(1)
    n = outer * k * inner
    while i < n:
        o = i // (k * inner)
        j = (o * big_dim + off) * inner + i - o * k * inner
        if to_big:
            big[j] = small[i]
        else:
            small[i] = big[j]
        i += cuda.gridsize(1)


def slice_copy(small, big, outer, k, inner, big_dim, off, to_big):
    """Copy between ``small`` (outer, k, inner) and the slice [off, off + k) of axis 1 of
    ``big`` (outer, big_dim, inner): Concat, Slice, and the DAH nets' source/target halves."""
    n = outer * k * inner
    if n:
        _slice_copy[gpu.grid(n)](small, big, outer, k, inner, big_dim, off, to_big)


@in_place(2)
def _eltwise_max(y, mask, x, i_bottom, first):
    """Running max over the bottoms, y starting as bottom 0: bottom i replaces y where strictly
    greater; bottom 1 (``first``) unless bottom 0 is strictly greater (ties, NaN: bottom 1), as
    Caffe compares them."""
    take = not (y > x) if first else x > y
    return (x, i_bottom) if take else (y, mask)


@elementwise(loop=True)
def _eltwise_max_grad(dy, mask, i_bottom):
    return dy if mask == i_bottom else dy * 0


@elementwise
def _quotient_grad(y, x, dy):
    """PROD's backward without stable_prod_grad: dy·(y / x) (Caffe's, NaN where x = 0)."""
    return y / x * dy


@elementwise(loop=True)
def _reduction_grad(dy, x, coeff, op):
    """dx = coeff·dy·{1, sign(x), 2x} for SUM/MEAN (op 0), ASUM (1), SUMSQ (2); dy per row."""
    g = dy * coeff
    if op == 1:
        return g if x > 0 else (-g if x < 0 else g * 0)
    return x * (2 * g) if op == 2 else g


@cuda.jit
def _reduction_terms(x, op, out):
    # op 1: |x|, 2: x² (ASUM, SUMSQ), anything else: x
    i = cuda.grid(1)
    while i < x.size:
        v = x[i]
        if op == 1:
            out[i] = abs(v)
        elif op == 2:
            out[i] = v * v
        else:
            out[i] = v
        i += cuda.gridsize(1)


@cuda.jit
def _tile_fwd(x, tiles, inner, y):
    i = cuda.grid(1)
    while i < y.size:
        o = i // (tiles * inner)
        y[i] = x[o * inner + i % inner]
        i += cuda.gridsize(1)


@cuda.jit
def _tile_bwd(dy, tiles, inner, dx):
    i = cuda.grid(1)
    while i < dx.size:
        o = i // inner
        r = i - o * inner
        acc = dy[o * tiles * inner + r]
        for t in range(1, tiles):
            acc += dy[(o * tiles + t) * inner + r]
        dx[i] = acc
        i += cuda.gridsize(1)


@cuda.jit
def _rows_gather(src, rows, inner, dst):
    # dst viewed as (len(rows), inner) = src viewed as (N, inner) [rows]: Embed's lookup,
    # Filter's and BatchReindex's forward
    i = cuda.grid(1)
    while i < dst.size:
        m = i // inner
        dst[i] = src[rows[m] * inner + i - m * inner]
        i += cuda.gridsize(1)


@cuda.jit
def _embed_bwd(idx, dy, n_out, dw):
    i = cuda.grid(1)
    while i < dy.size:
        m = i // n_out
        cuda.atomic.add(dw, idx[m] * n_out + i - m * n_out, dy[i])
        i += cuda.gridsize(1)


@register("InnerProduct", "INNER_PRODUCT")
class InnerProductLayer(Layer):
    """InnerProduct: y = x·Wᵀ + b with W (N, K), or y = x·W + b with ``transpose`` (W (K, N)).

    Everything from ``axis`` (1) on is flattened to K, which must stay fixed across reshapes;
    the top is ``bottom.shape[:axis] + (N,)``. Backward: dW += dyᵀx, db += Σ dy, dx = dy·W.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.inner_product_param
        if not p.HasField("num_output"):
            raise CaffeError("InnerProduct layer %s: inner_product_param.num_output is required"
                             % self.name)
        if p.num_output <= 0:
            raise CaffeError("InnerProduct layer %s: inner_product_param.num_output must be > 0, "
                             "got %d" % (self.name, p.num_output))
        self.N = p.num_output
        self.bias_term = p.bias_term
        self.transpose = p.transpose
        self.axis = bottom[0].canonical_axis(p.axis)
        self.K = bottom[0].count(self.axis)
        if self.blobs:
            return
        w = self.make_blob((self.K, self.N) if self.transpose else (self.N, self.K))
        fill(w, p.weight_filler)
        self.blobs = [w]
        if self.bias_term:
            b = self.make_blob((self.N,))
            fill(b, p.bias_filler)
            self.blobs.append(b)

    def reshape(self, bottom, top):
        axis = bottom[0].canonical_axis(self.layer_param.inner_product_param.axis)
        k = bottom[0].count(axis)
        if k != self.K:
            raise self.shape_error("the input size from axis %d (bottom '%s')" % (
                axis, self.layer_param.bottom[0]), (k,), (self.K,))
        self.M = bottom[0].count(0, axis)
        top[0].reshape(bottom[0].shape[:axis] + (self.N,))

    def _w(self):
        w = self.blobs[0].data
        return w if self.transpose else w.T  # (K, N) view either way

    def forward_cpu(self, bottom, top):
        x = bottom[0].data.reshape(self.M, self.K)
        y = top[0].data.reshape(self.M, self.N)
        np.dot(x, self._w(), out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward_cpu(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.M, self.N)
        x = bottom[0].data.reshape(self.M, self.K)
        if self.param_propagate_down[0]:
            a, b = (x.T, dy) if self.transpose else (dy.T, x)
            w = self.blobs[0]
            if w.diff_is_zero:  # a fresh step: write the GEMM in place, no temporary
                np.dot(a, b, out=w.diff_overwrite())
            else:
                w.diff[...] += a @ b
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff[...] += dy.sum(axis=0)
        if propagate_down[0]:
            np.dot(dy, self._w().T, out=bottom[0].diff.reshape(self.M, self.K))

    def forward_gpu(self, bottom, top):
        x, y = bottom[0].gpu_data(False), top[0].gpu_data()
        w = self.blobs[0].gpu_data(False)
        # y (M×N) = x·Wᵀ, or x·W with transpose
        gpu.gemm(False, not self.transpose, self.M, self.N, self.K, 1.0, x, w, 0.0, y)
        if self.bias_term:
            gpu.add_bias(y, self.blobs[1].gpu_data(False), 1)

    def backward_gpu(self, top, propagate_down, bottom):
        dy, x = top[0].gpu_diff(False), bottom[0].gpu_data(False)
        if self.param_propagate_down[0]:
            dw = self.blobs[0].gpu_diff()
            if self.transpose:   # dW (K×N) += xᵀ·dy
                gpu.gemm(True, False, self.K, self.N, self.M, 1.0, x, dy, 1.0, dw)
            else:                # dW (N×K) += dyᵀ·x
                gpu.gemm(True, False, self.N, self.K, self.M, 1.0, dy, x, 1.0, dw)
        if self.bias_term and self.param_propagate_down[1]:
            gpu.sum_odi(dy, self.M, self.N, 1, self.blobs[1].gpu_diff(), 1.0, 1.0)
        if propagate_down[0]:
            w = self.blobs[0].gpu_data(False)
            gpu.gemm(False, self.transpose, self.M, self.K, self.N, 1.0, dy, w, 0.0,
                     bottom[0].gpu_diff())


@register("Split", "SPLIT")
class SplitLayer(Layer):
    """Split: every top shares the bottom's data; backward sums the tops' diffs."""
    exact_num_bottom = 1
    min_num_top = 1

    def reshape(self, bottom, top):
        for t in top:
            if t is bottom[0]:
                raise CaffeError("Split layer %s does not allow in-place computation" % self.name)
            t.reshape(bottom[0].shape)
            t.share_data(bottom[0])

    def forward_cpu(self, bottom, top):
        pass

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        d = bottom[0].diff
        if len(top) == 1:
            d[...] = top[0].diff
            return
        np.add(top[0].diff, top[1].diff, out=d)
        for t in top[2:]:
            d += t.diff

    def forward_gpu(self, bottom, top):
        pass

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        d = bottom[0].gpu_diff()
        if len(top) == 1:
            gpu.copy(top[0].gpu_diff(False), d)
            return
        gpu.add(top[0].gpu_diff(False), top[1].gpu_diff(False), d)
        for t in top[2:]:
            gpu.axpy(1.0, t.gpu_diff(False), d)


@register("Silence", "SILENCE")
class SilenceLayer(Layer):
    """Silence: consumes bottoms so they are not net outputs; backward writes zeros."""
    min_num_bottom = 1
    exact_num_top = 0

    def reshape(self, bottom, top):
        pass

    def forward_cpu(self, bottom, top):
        pass

    def backward_cpu(self, top, propagate_down, bottom):
        for b, p in zip(bottom, propagate_down):
            if p:
                b.diff[...] = 0

    def forward_gpu(self, bottom, top):
        pass

    def backward_gpu(self, top, propagate_down, bottom):
        for b, p in zip(bottom, propagate_down):
            if p:
                gpu.fill(b.gpu_diff(), 0.0)


def _blob_name(names, i, kind="bottom"):
    """``bottom[1] 'conv2'`` (the prototxt name when the layer has one)."""
    return "%s[%d] '%s'" % (kind, i, names[i]) if i < len(names) else "%s[%d]" % (kind, i)


@register("Eltwise", "ELTWISE")
class EltwiseLayer(Layer):
    """Eltwise: elementwise over ≥ 2 bottoms of one shape. ``eltwise_param``: operation
    (SUM default, PROD, MAX), coeff (none or one per bottom; not with PROD), stable_prod_grad
    (true).

    SUM: y = Σ cᵢ·xᵢ, dxᵢ = cᵢ·dy. PROD: y = Π xᵢ, dxᵢ = dy·Π_{j≠i} xⱼ (stable_prod_grad) or
    dy·y/xᵢ. MAX: y = max xᵢ, where bottoms 0 and 1 compare with ``a > b ? a : b`` (so a tie
    picks bottom 1) and later bottoms need a strict ``>``; dxᵢ = dy where i is the argmax, else 0.
    """
    min_num_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.eltwise_param
        if len(p.coeff) and len(p.coeff) != len(bottom):
            raise CaffeError("Eltwise layer %s: eltwise_param.coeff must be given once per bottom "
                             "blob or not at all (%d bottoms, %d coeff)"
                             % (self.name, len(bottom), len(p.coeff)))
        if p.operation == _ELT.PROD and len(p.coeff):
            raise CaffeError("Eltwise layer %s: eltwise_param.coeff is only allowed for "
                             "operation SUM, not PROD" % self.name)
        self.op = p.operation
        self.coeffs = list(p.coeff) if len(p.coeff) else [1.0] * len(bottom)
        self.stable_prod_grad = p.stable_prod_grad

    def reshape(self, bottom, top):
        names = self.layer_param.bottom
        for i in range(1, len(bottom)):
            if bottom[i].shape != bottom[0].shape:
                raise self.shape_error("%s (all bottoms must have the shape of %s %s)" % (
                    _blob_name(names, i), _blob_name(names, 0), bottom[0].shape),
                    bottom[i].shape, bottom[0].shape)
        top[0].reshape(bottom[0].shape)

    def forward_cpu(self, bottom, top):
        y = top[0].data
        xs = [b.data for b in bottom]
        if self.op == _ELT.PROD:
            np.multiply(xs[0], xs[1], out=y)
            for x in xs[2:]:
                y *= x
        elif self.op == _ELT.SUM:
            acc = xs[0] * self.coeffs[0]
            for c, x in zip(self.coeffs[1:], xs[1:]):
                acc += x if c == 1 else c * x
            np.copyto(y, acc)
        elif self.op == _ELT.MAX:
            self.mask = np.zeros(y.size, np.int32)
            yf = y.reshape(-1)
            np.copyto(yf, xs[0].reshape(-1))
            for i, x in enumerate(xs[1:], 1):
                _eltwise_max(yf, self.mask, x.reshape(-1), i, i == 1)
        else:
            raise CaffeError("Eltwise layer %s: unknown eltwise_param.operation %d"
                             % (self.name, self.op))

    def backward_cpu(self, top, propagate_down, bottom):
        dy = top[0].diff
        for i, b in enumerate(bottom):
            if not propagate_down[i]:
                continue
            dx = b.diff
            if self.op == _ELT.PROD:
                if self.stable_prod_grad:
                    others = [bottom[j].data for j in range(len(bottom)) if j != i]
                    g = others[0].copy()
                    for x in others[1:]:
                        g *= x
                    np.multiply(g, dy, out=dx)
                else:
                    _quotient_grad(top[0].data, b.data, dy, out=dx)
            elif self.op == _ELT.SUM:
                np.multiply(dy, self.coeffs[i], out=dx)
            else:
                _eltwise_max_grad(dy, self.mask.reshape(dy.shape), i, out=dx)

    def forward_gpu(self, bottom, top):
        y = top[0].gpu_data()
        xs = [b.gpu_data(False) for b in bottom]
        if self.op == _ELT.PROD:
            gpu.mul(xs[0], xs[1], y)
            for x in xs[2:]:
                gpu.mul(y, x, y)
        elif self.op == _ELT.SUM:
            gpu.axpby(self.coeffs[0], xs[0], 0.0, y)
            for c, x in zip(self.coeffs[1:], xs[1:]):
                gpu.axpy(c, x, y)
        elif self.op == _ELT.MAX:
            self._mask_dev = gpu.ensure(getattr(self, "_mask_dev", None), y.size, np.int32)
            gpu.copy(xs[0], y)
            gpu.fill(self._mask_dev, 0)
            for i, x in enumerate(xs[1:], 1):
                _eltwise_max.gpu(y, self._mask_dev, x, i, i == 1)
        else:
            self.forward_cpu(bottom, top)  # raises the unknown-operation error

    def backward_gpu(self, top, propagate_down, bottom):
        dy = top[0].gpu_diff(False)
        for i, b in enumerate(bottom):
            if not propagate_down[i]:
                continue
            dx = b.gpu_diff()
            if self.op == _ELT.PROD:
                if self.stable_prod_grad:
                    others = [bottom[j].gpu_data(False) for j in range(len(bottom)) if j != i]
                    gpu.copy(others[0], dx)
                    for x in others[1:]:
                        gpu.mul(dx, x, dx)
                    gpu.mul(dx, dy, dx)
                else:
                    _quotient_grad.gpu(top[0].gpu_data(False), b.gpu_data(False), dy, out=dx)
            elif self.op == _ELT.SUM:
                gpu.axpby(self.coeffs[i], dy, 0.0, dx)
            else:
                _eltwise_max_grad.gpu(dy, self._mask_dev, i, out=dx)


class _AxisParts(OneCode, Layer):
    """Concat and Slice: a whole blob and its parts along one axis. One copies the parts into
    the whole where the other copies the whole into the parts, forward and backward swapped;
    with a single part the top shares the bottom's data and diff and nothing is copied. The axis
    is ``<param>.axis``, or the deprecated ``<legacy>`` when that is set (both is an error)."""
    param, legacy = "", ""   # concat_param / concat_dim, slice_param / slice_dim

    def layer_setup(self, bottom, top):
        self._axis(bottom[0])

    def _axis(self, bottom):
        layer, param = self.layer_param, getattr(self.layer_param, self.param)
        if param.HasField("axis") and param.HasField(self.legacy):
            raise CaffeError("%s layer %s: either %s.axis or %s.%s should be specified; not both"
                             % (layer.type, layer.name, self.param, self.param, self.legacy))
        if param.HasField(self.legacy):
            axis = int(getattr(param, self.legacy))
            if axis >= bottom.num_axes:
                raise CaffeError("%s layer %s: %s.%s %d out of range for a %d-D bottom"
                                 % (layer.type, layer.name, self.param, self.legacy, axis,
                                    bottom.num_axes))
        else:
            axis = bottom.canonical_axis(param.axis)
        self.axis = axis
        return axis

    def _layout(self, bottom, top):
        self.outer = bottom[0].count(0, self.axis)   # the same for the whole and every part
        self.inner = bottom[0].count(self.axis + 1)
        if len(bottom) == len(top) == 1:
            top[0].share_data(bottom[0])
            top[0].share_diff(bottom[0])

    def _copy(self, whole, parts, diff, to_whole, on_gpu, wanted=None):
        """Copy ``data`` (or ``diff``) between ``whole`` and each of ``parts`` (``wanted``:
        the parts to copy, default all): into the whole, or out of it."""
        if len(parts) == 1:
            return
        field = ("gpu_" if on_gpu else "") + ("diff" if diff else "data")
        w = getattr(whole, field)(to_whole) if on_gpu else getattr(whole, field)
        dim = whole.shape[self.axis]
        if not on_gpu:
            w = w.reshape(self.outer, dim, self.inner)
        off = 0
        for i, p in enumerate(parts):
            k, s = p.shape[self.axis], slice(off, off + p.shape[self.axis])
            if wanted is None or wanted[i]:
                if on_gpu:
                    slice_copy(getattr(p, field)(not to_whole), w, self.outer, k, self.inner, dim,
                               off, to_whole)
                elif to_whole:
                    w[:, s, :] = getattr(p, field).reshape(self.outer, k, self.inner)
                else:
                    getattr(p, field).reshape(self.outer, k, self.inner)[...] = w[:, s, :]
            off += k


@register("Concat", "CONCAT")
class ConcatLayer(_AxisParts):
    """Concat: joins the bottoms along ``concat_param.axis`` (1; ``concat_dim``: see
    ``_AxisParts``). All other axes must match. Backward copies each bottom's slice of dy back.
    """
    min_num_bottom = 1
    exact_num_top = 1
    param, legacy = "concat_param", "concat_dim"

    def reshape(self, bottom, top):
        n = bottom[0].num_axes
        axis = self._axis(bottom[0])
        shape = list(bottom[0].shape)
        names = self.layer_param.bottom
        for i, b in enumerate(bottom[1:], 1):
            if b.num_axes != n or any(b.shape[j] != shape[j] for j in range(n) if j != axis):
                expected = tuple("*" if j == axis else d for j, d in enumerate(bottom[0].shape))
                raise self.shape_error("%s (all axes but the concat axis %d must match %s %s)"
                                       % (_blob_name(names, i), axis, _blob_name(names, 0),
                                          bottom[0].shape), b.shape, expected)
            shape[axis] += b.shape[axis]
        top[0].reshape(tuple(shape))
        self._layout(bottom, top)

    def forward_with(self, dev, bottom, top):
        self._copy(top[0], bottom, False, True, dev)

    def backward_with(self, dev, top, propagate_down, bottom):
        self._copy(top[0], bottom, True, False, dev, propagate_down)


@register("Slice", "SLICE")
class SliceLayer(_AxisParts):
    """Slice: splits the bottom along ``slice_param.axis`` (1; ``slice_dim``: see
    ``_AxisParts``) at ``slice_point``s (strictly increasing, one fewer than the tops) or into
    equal parts (the tops must divide the axis). Backward copies each top's diff into its
    slice."""
    exact_num_bottom = 1
    min_num_top = 1
    param, legacy = "slice_param", "slice_dim"

    def reshape(self, bottom, top):
        axis = self._axis(bottom[0])
        dim = bottom[0].shape[axis]
        points = list(self.layer_param.slice_param.slice_point)
        if points:
            if len(points) != len(top) - 1:
                raise CaffeError("Slice layer %s: slice_param.slice_point must be given %d times "
                                 "(number of tops - 1), got %d"
                                 % (self.name, len(top) - 1, len(points)))
            prev, sizes = 0, []
            for pt in points + [dim]:
                if pt <= prev:
                    raise CaffeError("Slice layer %s: slice_param.slice_point %s must be strictly "
                                     "increasing, positive and below the slice axis size %d "
                                     "(axis %d of bottom shape %s)"
                                     % (self.name, points, dim, axis, bottom[0].shape))
                sizes.append(pt - prev)
                prev = pt
        else:
            if dim % len(top):
                raise CaffeError("Slice layer %s: the number of top blobs (%d) should evenly "
                                 "divide the input slice axis %d of size %d (bottom shape %s); "
                                 "give slice_param.slice_point otherwise"
                                 % (self.name, len(top), axis, dim, bottom[0].shape))
            sizes = [dim // len(top)] * len(top)
        shape = list(bottom[0].shape)
        for t, k in zip(top, sizes):
            shape[axis] = k
            t.reshape(tuple(shape))
        self._layout(bottom, top)

    def forward_with(self, dev, bottom, top):
        self._copy(bottom[0], top, False, False, dev)

    def backward_with(self, dev, top, propagate_down, bottom):
        if propagate_down[0]:
            self._copy(bottom[0], top, True, True, dev)


@register("Flatten", "FLATTEN")
class FlattenLayer(Layer):
    """Flatten: merges axes ``flatten_param.axis`` (1) .. ``end_axis`` (−1) into one; the top
    shares the bottom's data and diff (no copy, so forward and backward do nothing). Not in
    place."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise CaffeError("Flatten layer %s does not allow in-place computation" % self.name)
        p = self.layer_param.flatten_param
        b = bottom[0]
        start, end = b.canonical_axis(p.axis), b.canonical_axis(p.end_axis)
        shape = b.shape[:start] + (b.count(start, end + 1),) + b.shape[end + 1:]
        top[0].reshape(shape)
        top[0].share_data(b)
        top[0].share_diff(b)

    def forward_cpu(self, bottom, top):
        pass

    def backward_cpu(self, top, propagate_down, bottom):
        pass

    forward_gpu, backward_gpu = forward_cpu, backward_cpu  # shared memory: nothing to do


@register("Reshape")
class ReshapeLayer(Layer):
    """Reshape: ``reshape_param.shape`` replaces axes [axis, axis + num_axes) of the bottom
    (axis 0, num_axes −1 = all; a negative axis counts from the end, −1 = after the last axis).
    A dim of 0 copies the bottom's dim at that position, one −1 is inferred from the count.
    The top shares data and diff. Not in place."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        if top[0] is bottom[0]:
            raise CaffeError("Reshape layer %s does not allow in-place computation" % self.name)
        dims = list(self.layer_param.reshape_param.shape.dim)
        self.copy_axes = [i for i, d in enumerate(dims) if d == 0]
        inferred = [i for i, d in enumerate(dims) if d == -1]
        if len(inferred) > 1:
            raise CaffeError("Reshape layer %s: reshape_param.shape %s contains multiple -1 dims; "
                             "at most one may be inferred" % (self.name, dims))
        if any(d < -1 for d in dims):
            raise CaffeError("Reshape layer %s: reshape_param.shape %s has a dim below -1"
                             % (self.name, dims))
        self.inferred_axis = inferred[0] if inferred else -1
        self.constant_count = int(np.prod([d for d in dims if d > 0], dtype=np.int64))

    def reshape(self, bottom, top):
        p = self.layer_param.reshape_param
        b = bottom[0]
        n = b.num_axes
        start = p.axis if p.axis >= 0 else n + p.axis + 1
        if not 0 <= start <= n:
            raise CaffeError("Reshape layer %s: reshape_param.axis %d out of range for a %d-D "
                             "bottom %s" % (self.name, p.axis, n, b.shape))
        if p.num_axes < -1:
            raise CaffeError("Reshape layer %s: reshape_param.num_axes must be >= 0, or -1 for "
                             "all, got %d" % (self.name, p.num_axes))
        end = n if p.num_axes == -1 else start + p.num_axes
        if end > n:
            raise CaffeError("Reshape layer %s: reshape_param axis + num_axes = %d is out of range "
                             "for a %d-D bottom %s" % (self.name, end, n, b.shape))
        dims = list(p.shape.dim)
        shape = list(b.shape[:start]) + dims + list(b.shape[end:])
        for i in self.copy_axes:
            if start + i >= n:
                raise CaffeError("Reshape layer %s: reshape_param.shape has a 0 at position %d but "
                                 "the bottom %s has no axis %d to copy"
                                 % (self.name, i, b.shape, start + i))
            shape[start + i] = b.shape[start + i]
        if self.inferred_axis >= 0:
            explicit = self.constant_count * b.count(0, start) * b.count(end)
            for i in self.copy_axes:
                explicit *= shape[start + i]
            if explicit == 0 or b.count() % explicit:
                raise self.shape_error("the bottom (count %d must be divisible by the product "
                                       "of the specified dims, %d, for reshape_param.shape %s)"
                                       % (b.count(), explicit, dims), b.shape, shape)
            shape[start + self.inferred_axis] = b.count() // explicit
        count = int(np.prod(shape, dtype=np.int64))
        if count != b.count():
            raise self.shape_error("the top (reshape_param.shape %s gives count %d, the bottom "
                                   "has %d)" % (dims, count, b.count()), shape, b.shape)
        top[0].reshape(tuple(shape))
        top[0].share_data(b)
        top[0].share_diff(b)

    def forward_cpu(self, bottom, top):
        pass

    def backward_cpu(self, top, propagate_down, bottom):
        pass

    forward_gpu, backward_gpu = forward_cpu, backward_cpu  # shared memory: nothing to do


@register("ArgMax", "ARGMAX")
class ArgMaxLayer(Layer):
    """ArgMax: indices of the ``top_k`` (1) largest values, with ``out_max_val`` (false) the
    values too. With ``axis`` set: along that axis, top shape = bottom's with that axis = top_k
    (values instead of indices when out_max_val). Without axis: over each sample's flattened
    data, top (N, 1 or 2, top_k) padded with 1s to the bottom's number of axes (≥ 3) as Caffe;
    channel 0 holds indices, channel 1 values. Equal values rank the higher index first (Caffe
    sorts (value, index) pairs descending). No backward."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.argmax_param
        if p.top_k < 1:
            raise CaffeError("ArgMax layer %s: argmax_param.top_k must not be less than 1, got %d"
                             % (self.name, p.top_k))
        self.top_k, self.out_max_val, self.has_axis = p.top_k, p.out_max_val, p.HasField("axis")

    def reshape(self, bottom, top):
        b = bottom[0]
        if self.has_axis:
            self.axis = b.canonical_axis(self.layer_param.argmax_param.axis)
            dim = b.shape[self.axis]
            shape = list(b.shape)
            shape[self.axis] = self.top_k
            self.outer, self.inner = b.count(0, self.axis), b.count(self.axis + 1)
        else:
            dim = b.count(1)
            shape = [1] * max(b.num_axes, 3)
            shape[0] = b.shape[0]
            shape[1] = 2 if self.out_max_val else 1
            shape[2] = self.top_k
            self.outer, self.inner = b.shape[0], 1
        if self.top_k > dim:
            raise CaffeError("ArgMax layer %s: argmax_param.top_k %d must be less than or equal to "
                             "the dimension %d of the %s (bottom shape %s)"
                             % (self.name, self.top_k, dim,
                                "axis" if self.has_axis else "flattened bottom per instance",
                                b.shape))
        self.dim = dim
        top[0].reshape(tuple(shape))

    def forward_cpu(self, bottom, top):
        x = bottom[0].data.reshape(self.outer, self.dim, self.inner)
        k = self.top_k
        # descending by value, ties by descending index: a stable sort of the reversed axis
        order = np.argsort(-x[:, ::-1, :], axis=1, kind="stable")[:, :k, :]
        idx = (self.dim - 1) - order
        if self.has_axis:
            out = np.take_along_axis(x, idx, 1) if self.out_max_val else idx
            top[0].data.reshape(self.outer, k, self.inner)[...] = out
        else:
            y = top[0].data.reshape(self.outer, -1, k)
            y[:, 0, :] = idx[:, :, 0]
            if self.out_max_val:
                y[:, 1, :] = np.take_along_axis(x, idx, 1)[:, :, 0]


@register("Reduction")
class ReductionLayer(Layer):
    """Reduction over all axes from ``reduction_param.axis`` (0) on; the top keeps the leading
    axes (a scalar for axis 0). operation SUM (default): Σx, ASUM: Σ|x|, SUMSQ: Σx², MEAN: Σx/n;
    each times ``coeff`` (1). Backward: dx = c·dy·{1, sign(x), 2x, 1/n}."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        self.op = self.layer_param.reduction_param.operation
        if self.op not in (_RED.SUM, _RED.ASUM, _RED.SUMSQ, _RED.MEAN):
            raise CaffeError("Reduction layer %s: unknown reduction_param.operation %d"
                             % (self.name, self.op))

    def reshape(self, bottom, top):
        b = bottom[0]
        axis = b.canonical_axis(self.layer_param.reduction_param.axis)
        top[0].reshape(b.shape[:axis])
        self.num, self.dim = b.count(0, axis), b.count(axis)
        self.coeff = self.layer_param.reduction_param.coeff
        if self.op == _RED.MEAN:
            self.coeff /= max(self.dim, 1)

    def forward_cpu(self, bottom, top):
        x = bottom[0].data.reshape(self.num, self.dim)
        if self.op in (_RED.SUM, _RED.MEAN):
            r = x.sum(axis=1)
        elif self.op == _RED.ASUM:
            r = np.abs(x).sum(axis=1)
        else:
            r = np.einsum("ij,ij->i", x, x)
        np.multiply(r, self.coeff, out=top[0].data.reshape(self.num))

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        _reduction_grad(top[0].diff.reshape(self.num, 1), bottom[0].data.reshape(self.num, self.dim),
                        self.coeff, self._gpu_op(), out=bottom[0].diff.reshape(self.num, self.dim))

    def _gpu_op(self):  # the formulas' op code
        return {_RED.ASUM: 1, _RED.SUMSQ: 2}.get(self.op, 0)

    def forward_gpu(self, bottom, top):
        x, y = bottom[0].gpu_data(False), top[0].gpu_data()
        op = self._gpu_op()
        if op:
            terms = gpu.scratch("reduction", x.size, x.dtype)
            _reduction_terms[gpu.grid(x.size)](x, op, terms)
            x = terms
        gpu.sum_odi(x, 1, self.num, self.dim, y, self.coeff, 0.0)  # a row sum per top element

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0] and self.dim:
            dx = bottom[0].gpu_diff()
            _reduction_grad.gpu(top[0].gpu_diff(False), bottom[0].gpu_data(False), self.coeff,
                                self._gpu_op(), out=dx, inner=self.dim)


@register("Tile")
class TileLayer(Layer):
    """Tile: repeats the block of axes from ``tile_param.axis`` (1) on ``tiles`` times (required,
    > 0), so top.shape[axis] = tiles·bottom.shape[axis]. Backward sums the copies' diffs."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        p = self.layer_param.tile_param
        if not p.HasField("tiles"):
            raise CaffeError("Tile layer %s: tile_param.tiles (the number of tiles) must be "
                             "specified" % self.name)
        if p.tiles <= 0:
            raise CaffeError("Tile layer %s: tile_param.tiles must be positive, got %d"
                             % (self.name, p.tiles))
        b = bottom[0]
        axis = b.canonical_axis(p.axis)
        self.tiles = p.tiles
        shape = list(b.shape)
        shape[axis] *= p.tiles
        top[0].reshape(tuple(shape))
        self.outer, self.inner = b.count(0, axis), b.count(axis)

    def forward_cpu(self, bottom, top):
        x = bottom[0].data.reshape(self.outer, 1, self.inner)
        top[0].data.reshape(self.outer, self.tiles, self.inner)[...] = x

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.outer, self.tiles, self.inner)
        np.sum(dy, axis=1, out=bottom[0].diff.reshape(self.outer, self.inner))

    def forward_gpu(self, bottom, top):
        y = top[0].gpu_data()
        if y.size:
            _tile_fwd[gpu.grid(y.size)](bottom[0].gpu_data(False), self.tiles, self.inner, y)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = bottom[0].gpu_diff()
            if dx.size:
                _tile_bwd[gpu.grid(dx.size)](top[0].gpu_diff(False), self.tiles, self.inner, dx)


@register("Embed")
class EmbedLayer(Layer):
    """Embed: a lookup table. ``embed_param``: num_output N, input_dim K (both required > 0),
    bias_term (true), weight_filler, bias_filler (constant 0 when unset). W is (K, N)
    (InnerProduct's transpose). The bottom holds integer indices in [0, K); top shape = bottom shape + (N,),
    y = W[index] + b. Backward: dW[index] += dy (repeated indices accumulate), db += Σ dy; the
    index bottom has no gradient (an error if asked for)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.embed_param
        if p.num_output <= 0:
            raise CaffeError("Embed layer %s: embed_param.num_output must be positive, got %d"
                             % (self.name, p.num_output))
        if p.input_dim <= 0:
            raise CaffeError("Embed layer %s: embed_param.input_dim must be positive, got %d"
                             % (self.name, p.input_dim))
        self.N, self.K, self.bias_term = p.num_output, p.input_dim, p.bias_term
        if self.blobs:
            return
        w = self.make_blob((self.K, self.N))
        fill(w, p.weight_filler)
        self.blobs = [w]
        if self.bias_term:
            b = self.make_blob((self.N,))
            fill(b, p.bias_filler)
            self.blobs.append(b)

    def reshape(self, bottom, top):
        self.M = bottom[0].count()
        top[0].reshape(bottom[0].shape + (self.N,))

    def _indices(self, bottom):
        x = bottom[0].cpu_data().reshape(-1)
        idx = x.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.K or not np.array_equal(idx, x)):
            bad = x[(idx < 0) | (idx >= self.K) | (idx != x)][0]
            raise CaffeError("Embed layer %s: bottom values must be integer indices in [0, %d) "
                             "(embed_param.input_dim), got %r" % (self.name, self.K, float(bad)))
        return idx

    def forward_cpu(self, bottom, top):
        idx = self._indices(bottom)
        y = top[0].data.reshape(self.M, self.N)
        np.take(self.blobs[0].data, idx, axis=0, out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise CaffeError("Embed layer %s: can't backpropagate to the index input (bottom 0)"
                             % self.name)
        dy = top[0].diff.reshape(self.M, self.N)
        if self.param_propagate_down[0]:
            np.add.at(self.blobs[0].diff, self._indices(bottom), dy)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff[...] += dy.sum(axis=0)

    def forward_gpu(self, bottom, top):
        # the indices are checked on a host copy (an index bottom is small), then uploaded
        self._idx_dev = gpu.to_device(self._indices(bottom).astype(np.int64))
        y = top[0].gpu_data()
        if y.size:
            _rows_gather[gpu.grid(y.size)](self.blobs[0].gpu_data(False), self._idx_dev, self.N, y)
        if self.bias_term:
            gpu.add_bias(y, self.blobs[1].gpu_data(False), 1)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.backward_cpu(top, propagate_down, bottom)  # raises: no gradient for indices
        dy = top[0].gpu_diff(False)
        if self.param_propagate_down[0] and dy.size:
            _embed_bwd[gpu.grid(dy.size)](self._idx_dev, dy, self.N, self.blobs[0].gpu_diff())
        if self.bias_term and self.param_propagate_down[1]:
            gpu.sum_odi(dy, self.M, self.N, 1, self.blobs[1].gpu_diff(), 1.0, 1.0)


# --- Parameter, Filter, BatchReindex ------------------------------------------------------------

@cuda.jit
def _rows_scatter(dy, order, begin, count, inner, dx):
    # dx row n = Σ dy rows order[begin[n] : begin[n] + count[n]] (0 for none): one thread per
    # element of dx, no atomics (batch_reindex_layer.cu's BRBackward)
    i = cuda.grid(1)
    while i < dx.size:
        n = i // inner
        r = i - n * inner
        acc = 0.0
        for k in range(begin[n], begin[n] + count[n]):
            acc += dy[order[k] * inner + r]
        dx[i] = acc
        i += cuda.gridsize(1)


def _scatter_plan(rows, n):
    """(order, begin, count) for ``_rows_scatter``: the top rows grouped by source row."""
    order = np.argsort(rows, kind="stable").astype(np.int64)
    count = np.bincount(rows, minlength=n).astype(np.int64)
    begin = (np.cumsum(count) - count).astype(np.int64)
    return order, begin, count


def rows_gather_gpu(src, rows_dev, inner, dst):
    if dst.size:
        _rows_gather[gpu.grid(dst.size)](src, rows_dev, inner, dst)


def rows_scatter_gpu(dy, rows, n, inner, dx):
    """dx (n, inner) = Σ over the top rows j with rows[j] = source row of dy[j] (0 elsewhere)."""
    if dx.size:
        order, begin, count = _scatter_plan(rows, n)
        _rows_scatter[gpu.grid(dx.size)](dy, gpu.to_device(order), gpu.to_device(begin),
                                         gpu.to_device(count), inner, dx)


@register("Parameter")
class ParameterLayer(Layer):
    """Parameter (parameter_layer.hpp): no bottom; one learnable blob of shape
    ``parameter_param.shape`` (zeros: Caffe fills it from a .caffemodel, not a filler) whose
    data the top shares. Backward: param diff += top diff. Deliberate difference: Caffe shares
    the diff too, so the consumer's backward *overwrites* the param diff; here the top keeps
    its own diff and backward accumulates it, as every other param diff (``iter_size``,
    shared weights)."""
    exact_num_bottom = 0
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        shape = tuple(int(d) for d in self.layer_param.parameter_param.shape.dim)
        if any(d < 0 for d in shape):
            raise CaffeError("Parameter layer %s: parameter_param.shape %s has a negative dim"
                             % (self.name, list(shape)))
        if self.blobs:
            if self.blobs[0].shape != shape:
                raise CaffeError("Parameter layer %s: the param blob has shape %s, "
                                 "parameter_param.shape is %s"
                                 % (self.name, self.blobs[0].shape, shape))
        else:
            self.blobs = [self.make_blob(shape)]

    def reshape(self, bottom, top):
        top[0].reshape(self.blobs[0].shape)
        top[0].share_data(self.blobs[0])

    def forward_cpu(self, bottom, top):
        pass

    def backward_cpu(self, top, propagate_down, bottom):
        if self.param_propagate_down and self.param_propagate_down[0]:
            self.blobs[0].diff[...] += top[0].diff

    def forward_gpu(self, bottom, top):
        self.blobs[0].gpu_data(False)  # the top (the same memory) is then on the device

    def backward_gpu(self, top, propagate_down, bottom):
        if self.param_propagate_down and self.param_propagate_down[0]:
            gpu.axpy(1.0, top[0].gpu_diff(False), self.blobs[0].gpu_diff())


@register("Filter")
class FilterLayer(Layer):
    """Filter (filter_layer.cpp): bottoms are k data blobs and a selector last, shape (N, 1, …);
    top i = the rows n of bottom i where selector[n] != 0, in order. The first reshape (setup)
    gives the tops bottom 0's N rows, as Caffe. Backward: dx = dy in the selected rows, 0 in
    the others; no gradient to the selector (an error if asked for; force_backward skips it)."""
    min_num_bottom = 2
    min_num_top = 1

    def layer_setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise CaffeError("Filter layer %s: needs one top per data bottom (bottoms minus the "
                             "selector): %d bottoms, %d tops" % (self.name, len(bottom), len(top)))
        self.first_reshape = True
        self.selector_index = len(bottom) - 1

    def allow_force_backward(self, bottom_index):
        return bottom_index != getattr(self, "selector_index", len(self.layer_param.bottom) - 1)

    def reshape(self, bottom, top):
        sel = bottom[-1]
        if any(d != 1 for d in sel.shape[1:]):
            raise CaffeError("Filter layer %s: selector blob dimensions must be singletons (1), "
                             "except the first; got shape %s" % (self.name, sel.shape))
        for i, b in enumerate(bottom[:-1]):
            if not b.shape or not sel.shape or b.shape[0] != sel.shape[0]:
                raise CaffeError("Filter layer %s: each bottom should have the same 0th dimension "
                                 "as the selector blob: bottom %d has shape %s, the selector %s"
                                 % (self.name, i, b.shape, sel.shape))
        self.rows = np.flatnonzero(sel.cpu_data().reshape(-1)).astype(np.int64)
        n = bottom[0].shape[0] if self.first_reshape else self.rows.size
        self.first_reshape = False
        for b, t in zip(bottom, top):
            t.reshape((n,) + b.shape[1:])

    def forward_cpu(self, bottom, top):
        for b, t in zip(bottom, top):
            x = b.data.reshape(b.shape[0], -1)
            np.take(x, self.rows, axis=0, out=t.data.reshape(self.rows.size, x.shape[1]))

    def _check_selector(self, propagate_down):
        if propagate_down[-1]:
            raise CaffeError("Filter layer %s cannot backpropagate to filter index inputs "
                             "(the selector, bottom %d)" % (self.name, len(propagate_down) - 1))

    def backward_cpu(self, top, propagate_down, bottom):
        self._check_selector(propagate_down)
        for b, t, p in zip(bottom, top, propagate_down):
            if p:
                dx = b.diff.reshape(b.shape[0], -1)
                dx[...] = 0
                dx[self.rows] = t.diff.reshape(self.rows.size, dx.shape[1])

    def forward_gpu(self, bottom, top):
        self._rows_dev = gpu.to_device(self.rows)
        for b, t in zip(bottom, top):
            rows_gather_gpu(b.gpu_data(False), self._rows_dev, b.count(1), t.gpu_data())

    def backward_gpu(self, top, propagate_down, bottom):
        self._check_selector(propagate_down)
        for b, t, p in zip(bottom, top, propagate_down):
            if p:
                rows_scatter_gpu(t.gpu_diff(False), self.rows, b.shape[0], b.count(1),
                                 b.gpu_diff())


@register("BatchReindex")
class BatchReindexLayer(Layer):
    """BatchReindex (batch_reindex_layer.cpp): top = bottom[0][indices], the indices a 1-D
    bottom[1] of values in [0, N) (repeats allowed); top shape (len(indices),) + bottom[0]'s
    other axes. Backward: dx[n] = Σ_{j: indices[j] = n} dy[j]; no gradient to the indices (an
    error if asked for; force_backward skips them)."""
    exact_num_bottom = 2
    exact_num_top = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def reshape(self, bottom, top):
        if bottom[1].num_axes != 1:
            raise CaffeError("BatchReindex layer %s: the index bottom must be 1-D, got shape %s"
                             % (self.name, bottom[1].shape))
        top[0].reshape(bottom[1].shape[:1] + bottom[0].shape[1:])

    def _indices(self, bottom):
        x = bottom[1].cpu_data()
        idx = x.astype(np.int64)
        n = bottom[0].shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = x[(idx < 0) | (idx >= n)][0]
            raise CaffeError("BatchReindex layer %s: index %r out of range [0, %d) (the batch "
                             "size of bottom 0)" % (self.name, float(bad), n))
        return idx

    def forward_cpu(self, bottom, top):
        self.rows = self._indices(bottom)
        x = bottom[0].data.reshape(bottom[0].shape[0], -1)
        np.take(x, self.rows, axis=0, out=top[0].data.reshape(self.rows.size, x.shape[1]))

    def _check_index(self, propagate_down):
        if propagate_down[1]:
            raise CaffeError("BatchReindex layer %s: cannot backprop to the index (bottom 1)"
                             % self.name)

    def backward_cpu(self, top, propagate_down, bottom):
        self._check_index(propagate_down)
        if propagate_down[0]:
            dx = bottom[0].diff.reshape(bottom[0].shape[0], -1)
            dx[...] = 0
            np.add.at(dx, self.rows, top[0].diff.reshape(self.rows.size, dx.shape[1]))

    def forward_gpu(self, bottom, top):
        self.rows = self._indices(bottom)
        rows_gather_gpu(bottom[0].gpu_data(False), gpu.to_device(self.rows), bottom[0].count(1),
                        top[0].gpu_data())

    def backward_gpu(self, top, propagate_down, bottom):
        self._check_index(propagate_down)
        if propagate_down[0]:
            b = bottom[0]
            rows_scatter_gpu(top[0].gpu_diff(False), self.rows, b.shape[0], b.count(1),
                             b.gpu_diff())
