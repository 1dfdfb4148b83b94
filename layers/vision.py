"""Vision layers: Convolution, Deconvolution, Pooling, LRN, Crop, Im2col, SPP (kernels in
``im2col.py``; SPP is built from Split, Pooling, Flatten and Concat layers).

CPU and GPU alike, Convolution and Deconvolution run im2col / col2im over chunks of images
with one GEMM per group and chunk (CPU: the chunk's columns side by side, one BLAS call; GPU:
a strided-batched ``gpu.gemm``, cuBLAS through CuPy when installed); Pooling and LRN use the pooling
kernels' GPU twins; Crop copies through an index map. STOCHASTIC pooling raises in both modes.
"""
import math

import numpy as np
from numba import cuda

from minicaffe import gpu, threads
from minicaffe.errors import CaffeError
from minicaffe.fillers import fill
from minicaffe.layer import Layer, register
from minicaffe.proto import caffe_pb2

from .common import ConcatLayer, FlattenLayer, SplitLayer
from .im2col import (
    col2im,
    col2im_gpu,
    col_buffer,
    from_cols,
    im2col,
    im2col_gpu,
    launch,
    lrn_across,
    pool_backward,
    pool_backward_gpu,
    pool_forward,
    pool_forward_gpu,
    to_rows,
)

GPU_COL_LIMIT = 1 << 27  # elements of the device column buffer: images are processed in chunks
# and of the host one: 4 MiB of float32, so a chunk's columns are still in cache when its
# GEMM reads them (ToyHome conv2 at batch 96, 1 thread: forward 21 -> 17 ms, backward 50 -> 32
# against one 39 MB chunk); a layer whose one image needs more runs an image a chunk, as Caffe
CPU_COL_LIMIT = 1 << 20
# the CPU chunks run at once at most (a wave; each keeps its dW part until the wave is summed
# in chunk order), and the fewest a batch is cut into, so that each chunk worker gets some
CPU_WAVE = 8
_NO_BIAS = {np.dtype(t): np.zeros(0, t) for t in (np.float32, np.float64)}

_NO_MASK = np.zeros((1, 1, 1), np.int32)


def _error(layer, msg):
    return CaffeError("%s layer %s: %s" % (layer.type, layer.name, msg))


class _BaseConvolutionLayer(Layer):
    """Shared by Convolution and Deconvolution (base_conv_layer.cpp).

    ``conv_in``/``conv_out`` channels are (C, num_output) for Convolution and swapped for
    Deconvolution; the weight is (conv_out, conv_in/group, *kernel). ``_fwd_gemm`` is
    im2col + W·col, ``_bwd_gemm`` is Wᵀ·out + col2im, ``_weight_part`` is one chunk's
    (out·colᵀ)ᵀ (``_add_part`` sums them into dW in chunk order), each per group and chunk of
    images, through a column buffer per chunk worker (``_gpu`` twins below). 1-D spatial
    inputs run as 2-D with a height of 1; other spatial ranks raise.
    """
    min_num_bottom = 1
    min_num_top = 1
    equal_num_bottom_top = True
    reverse = False

    def _per_axis(self, p, name, hname, wname, default, nsp):
        if hname and (p.HasField(hname) or p.HasField(wname)):
            if nsp != 2:
                raise _error(self, "convolution_param.%s & %s can only be used for 2D "
                                   "convolution (%d spatial axes)" % (hname, wname, nsp))
            if len(getattr(p, name)):
                raise _error(self, "convolution_param: either %s or %s/%s should be "
                                   "specified; not both" % (name, hname, wname))
            return [int(getattr(p, hname)), int(getattr(p, wname))]
        vals = [int(v) for v in getattr(p, name)]
        if not vals and default is not None:
            return [default] * nsp
        if len(vals) not in (1, nsp):
            raise _error(self, "convolution_param.%s must be specified once, or once per "
                               "spatial dimension (%s specified %d times; %d spatial dims)"
                         % (name, name, len(vals), nsp))
        return vals * nsp if len(vals) == 1 else vals

    def layer_setup(self, bottom, top):
        p, nsp, kernel, stride, pad, dilation = _conv_geometry(self, bottom, "convolution is")
        self.kernel_shape = tuple(kernel)
        if nsp == 1:
            kernel, stride, pad, dilation = [1] + kernel, [1] + stride, [0] + pad, [1] + dilation
        (self.kh, self.kw), (self.sh, self.sw) = kernel, stride
        (self.ph, self.pw), (self.dh, self.dw) = pad, dilation
        self.stride, self.pad, self.dilation = stride[-nsp:], pad[-nsp:], dilation[-nsp:]
        self.is_1x1 = kernel == [1, 1] and stride == [1, 1] and pad == [0, 0]

        self.channels = bottom[0].shape[self.channel_axis]
        self.num_output = int(p.num_output)
        self.group = int(p.group)
        if self.num_output <= 0:
            raise _error(self, "convolution_param.num_output must be > 0, got %d" % self.num_output)
        if self.group <= 0:
            raise _error(self, "convolution_param.group must be > 0, got %d" % self.group)
        if self.channels % self.group:
            raise _error(self, "the input channels (%d) must be a multiple of "
                               "convolution_param.group (%d)" % (self.channels, self.group))
        if self.num_output % self.group:
            raise _error(self, "convolution_param.num_output (%d) must be a multiple of "
                               "convolution_param.group (%d)" % (self.num_output, self.group))
        if self.reverse:
            self.conv_out, self.conv_in = self.channels, self.num_output
        else:
            self.conv_out, self.conv_in = self.num_output, self.channels
        self.bias_term = p.bias_term
        wshape = (self.conv_out, self.conv_in // self.group) + self.kernel_shape
        self.kernel_dim = math.prod(wshape[1:])
        if self.blobs:
            expect = [wshape] + ([(self.num_output,)] if self.bias_term else [])
            got = [b.shape for b in self.blobs]
            if len(got) != len(expect) or any(tuple(g) != e for g, e in zip(got, expect)):
                raise _error(self, "incorrect weight blobs: expected shapes %s, got %s"
                             % (expect, got))
        else:
            w = self.make_blob(wshape)
            fill(w, p.weight_filler)
            self.blobs = [w]
            if self.bias_term:
                b = self.make_blob((self.num_output,))
                fill(b, p.bias_filler)
                self.blobs.append(b)
        self.param_propagate_down = [True] * len(self.blobs)

    def compute_output_shape(self, in_shape):
        raise NotImplementedError

    def reshape(self, bottom, top):
        b0 = bottom[0]
        if b0.num_axes != self.num_axes:
            raise self.shape_error("bottom (num_axes may not change)", b0.shape,
                                   ("%d axes" % self.num_axes,))
        ca = self.channel_axis
        if b0.shape[ca] != self.channels:
            raise self.shape_error("bottom[0] (input size incompatible with the convolution "
                                   "kernel: channels on axis %d)" % ca,
                                   b0.shape, b0.shape[:ca] + (self.channels, "..."))
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != b0.shape:
                raise self.shape_error("bottom[%d] (all bottoms must have bottom[0]'s shape)" % i,
                                       b.shape, b0.shape)
        self.num = b0.count(0, ca)
        in_sp = tuple(b0.shape[ca + 1:])
        out_sp = self.compute_output_shape(in_sp)
        if any(o <= 0 for o in out_sp):
            raise self.shape_error("output (kernel %s, stride %s, pad %s, dilation %s on input %s)"
                                   % (self.kernel_shape, tuple(self.stride), tuple(self.pad),
                                      tuple(self.dilation), in_sp), out_sp, ("positive sizes",))
        for t in top:
            t.reshape(b0.shape[:ca] + (self.num_output,) + out_sp)
        two_d = (lambda s: (1,) + s) if self.num_spatial_axes == 1 else (lambda s: s)
        # the im2col image is the conv input (bottom) or, for deconvolution, the top
        im_sp, col_sp = (out_sp, in_sp) if self.reverse else (in_sp, out_sp)
        self.im_hw = two_d(im_sp)
        self.col_hw = two_d(col_sp)
        self.col_dim = math.prod(col_sp)

    # --- forward and backward: Convolution's, and with ``reverse`` Deconvolution's, the same
    # three products with bottom and top swapped (one's forward is the other's input gradient).
    # ``im`` is the im2col side (conv: the bottom, deconv: the top), ``out`` the column side -----
    def forward_cpu(self, bottom, top):
        bias = self.blobs[1].data if self.bias_term and not self.reverse else None
        for b, t in zip(bottom, top):
            im, out = self._views(b.data, t.data)
            for _ in self._cpu_chunks(self._forward_chunk, im, out, bias):
                pass
            if self.reverse:
                self._add_bias(t)

    def _forward_chunk(self, w, slot, n0, n, im, out, bias):
        if self.reverse:
            self._bwd_gemm(out, im, n0, n, w)              # top = col2im(Wᵀ·bottom)
        else:
            self._fwd_gemm(im, out, n0, n, w, bias=bias)   # top = W·im2col(bottom) + b, one pass

    def backward_cpu(self, top, propagate_down, bottom):
        dw = self.param_propagate_down[0]
        for i, (t, b) in enumerate(zip(top, bottom)):
            self._bias_backward(t)
            if not (dw or propagate_down[i]):
                continue
            im, out = self._views(b.data, t.diff)
            dx = self._views(b.diff, t.diff)[int(self.reverse)] if propagate_down[i] else None
            for part in self._cpu_chunks(self._backward_chunk, im, out, dx, dw):
                if part is not None:
                    self._add_part(part)

    def _backward_chunk(self, w, slot, n0, n, im, out, dx, dw):
        if self.reverse:  # im is dy, out is x
            part, col = self._weight_part(im, out, n0, n, w, slot) if dw else (None, None)
            if dx is not None:
                self._fwd_gemm(im, dx, n0, n, w, col)  # dx = W·im2col(dy), reusing im2col(dy)
            return part
        rows = self._rows(out, n0, n, w)  # dy's rows, shared by both products
        part = self._weight_part(im, out, n0, n, w, slot, rows)[0] if dw else None
        if dx is not None:
            self._bwd_gemm(out, dx, n0, n, w, rows)  # dx = col2im(Wᵀ·dy)
        return part

    def forward_gpu(self, bottom, top):
        for b, t in zip(bottom, top):
            x, y = b.gpu_data(False), t.gpu_data()
            for n0, n in self._chunks(GPU_COL_LIMIT):
                (self._bwd_gemm_gpu if self.reverse else self._fwd_gemm_gpu)(x, y, n0, n)
            self._add_bias_gpu(t)

    def backward_gpu(self, top, propagate_down, bottom):
        dw = self.param_propagate_down[0]
        for i, (t, b) in enumerate(zip(top, bottom)):
            self._bias_backward_gpu(t)
            if not (dw or propagate_down[i]):
                continue
            x, dy = b.gpu_data(False), t.gpu_diff(False)
            dx = b.gpu_diff() if propagate_down[i] else None
            im, out = (dy, x) if self.reverse else (x, dy)
            for n0, n in self._chunks(GPU_COL_LIMIT):
                col = self._weight_gemm_gpu(im, out, n0, n) if dw else None
                if dx is not None and self.reverse:
                    self._fwd_gemm_gpu(dy, dx, n0, n, col)  # reusing im2col(dy)
                elif dx is not None:
                    self._bwd_gemm_gpu(dy, dx, n0, n)

    # --- GEMM helpers over a chunk of images [n0, n0 + n): ``im`` (num, conv_in, H, W) and
    # ``out`` (num, conv_out, col_dim) views. The chunk's columns sit side by side, so each
    # group is one BLAS call for the whole chunk (a call per image paid a thread-pool sync
    # each: 0.4x PyTorch on LeNet at 2 threads). On the CPU the chunks are shared among
    # threads.map_chunks' workers, each with its own buffers (``w``) ----------------------------
    def _chunks(self, limit, least=1):
        """Image ranges (n0, n) whose columns fit in ``limit`` elements (CPU_ or GPU_COL_LIMIT),
        at least ``least`` of them when the batch has the images. Fixed by the shapes alone,
        never by the thread count, so dW sums its chunks in the same order on any count."""
        per = max(1, self.kernel_dim * self.group * self.col_dim)
        step = max(1, min(self.num, limit // per, -(-self.num // least)))
        return [(n0, min(step, self.num - n0)) for n0 in range(0, self.num, step)]

    def _cpu_chunks(self, fn, *args):
        """``fn(w, slot, n0, n, *args)`` for every CPU chunk, in waves of CPU_WAVE chunks shared
        among the chunk workers; yields the results in chunk order (a wave's before the next
        starts, so its ``slot`` buffers are free again)."""
        chunks = self._chunks(CPU_COL_LIMIT, CPU_WAVE)
        for s in range(0, len(chunks), CPU_WAVE):
            yield from threads.map_chunks(lambda w, c: fn(w, c[0], *c[1], *args),
                                          list(enumerate(chunks[s:s + CPU_WAVE])))

    def _groups(self):
        og, kd = self.conv_out // self.group, self.kernel_dim
        return [(slice(g * og, (g + 1) * og), slice(g * kd, (g + 1) * kd))
                for g in range(self.group)]

    def _col_buf(self, n, dtype, w):
        """Worker ``w``'s column buffer as (group·kernel_dim, n·col_dim)."""
        k = self.kernel_dim * self.group
        return col_buffer(k * n * self.col_dim, dtype, "col%d" % w).reshape(k, n * self.col_dim)

    def _rows_buf(self, n, dtype, w):
        """Worker ``w``'s output-rows buffer as (conv_out, n·col_dim)."""
        return col_buffer(self.conv_out * n * self.col_dim, dtype, "rows%d" % w).reshape(
            self.conv_out, n * self.col_dim)

    def _col(self, im, n0, n, w):
        col = self._col_buf(n, im.dtype, w)
        im2col(im[n0:n0 + n], self.kh, self.kw, self.ph, self.pw, self.sh, self.sw, self.dh,
               self.dw, self.col_hw[0], self.col_hw[1], col)
        return col

    def _rows(self, out, n0, n, w):
        """``out`` images [n0, n0 + n) as (conv_out, n·col_dim)."""
        rows = self._rows_buf(n, out.dtype, w)
        to_rows(out[n0:n0 + n], rows)
        return rows

    def _fwd_gemm(self, im, out, n0, n, w, col=None, bias=None):
        """out = W·im2col(im) (+ bias), which BLAS computes as colᵀ·Wᵀ, the long side as its
        rows: faster for these few-row weights (ToyHome conv2, a chunk at 1 thread: 1.1 ->
        0.7 ms); ``from_cols`` transposes it into ``out`` with the bias."""
        if col is None:
            col = self._col(im, n0, n, w)
        og = self.conv_out // self.group
        prod = self._rows_buf(n, out.dtype, w).reshape(self.group, n * self.col_dim, og)
        wt = self.blobs[0].data.reshape(self.conv_out, self.kernel_dim)
        for g, (so, sk) in enumerate(self._groups()):
            np.dot(col[sk].T, wt[so].T, out=prod[g])
        from_cols(prod, _NO_BIAS[out.dtype] if bias is None else bias, out[n0:n0 + n])

    def _bwd_gemm(self, out, im, n0, n, w, rows=None):
        """im = col2im(Wᵀ·out) (overwrites)."""
        if rows is None:
            rows = self._rows(out, n0, n, w)
        wt = self.blobs[0].data.reshape(self.conv_out, self.kernel_dim)
        col = self._col_buf(n, im.dtype, w)
        for so, sk in self._groups():
            np.dot(wt[so].T, rows[so], out=col[sk])
        col2im(col, self.kh, self.kw, self.ph, self.pw, self.sh, self.sw, self.dh, self.dw,
               self.col_hw[0], self.col_hw[1], im[n0:n0 + n])

    def _weight_part(self, im, out, n0, n, w, slot, rows=None):
        """(one chunk's dWᵀ = im2col(im)·outᵀ per group in ``slot``'s buffer, the column
        buffer): the transposed product is the faster one here too (conv2: 1.05 -> 0.69 ms)."""
        col = self._col(im, n0, n, w)
        if rows is None:
            rows = self._rows(out, n0, n, w)
        og = self.conv_out // self.group
        part = col_buffer(self.conv_out * self.kernel_dim, im.dtype, "dw%d" % slot).reshape(
            self.group, self.kernel_dim, og)
        for g, (so, sk) in enumerate(self._groups()):
            np.dot(col[sk], rows[so].T, out=part[g])
        return part, col

    def _add_part(self, part):
        """dW += one chunk's part (transposed back), called in chunk order: the same sums on
        any thread count (a fresh step's first part is copied in)."""
        w = self.blobs[0]
        part = part.transpose(0, 2, 1)
        if w.diff_is_zero:
            w.diff_overwrite().reshape(part.shape)[...] = part
        else:
            w.diff.reshape(part.shape)[...] += part

    def _views(self, bottom_arr, top_arr):
        """(num, conv_in, H, W) image views and (num, conv_out, col_dim) output views."""
        if self.reverse:
            return (top_arr.reshape((self.num, self.conv_in) + self.im_hw),
                    bottom_arr.reshape(self.num, self.conv_out, self.col_dim))
        return (bottom_arr.reshape((self.num, self.conv_in) + self.im_hw),
                top_arr.reshape(self.num, self.conv_out, self.col_dim))

    def _add_bias(self, t):
        if self.bias_term:
            y = t.data.reshape(self.num, self.num_output, -1)
            y += self.blobs[1].data[:, None]

    def _bias_backward(self, t):
        if self.bias_term and self.param_propagate_down[1]:
            dy = t.diff.reshape(self.num, self.num_output, -1)
            self.blobs[1].diff[...] += dy.sum(axis=(0, 2))

    # --- the same GEMMs on the device, over chunks of images (``im`` (num, conv_in, H, W) and
    # ``out`` (num, conv_out, col_dim) flat device arrays) -------------------------------------
    def _im_size(self):
        return self.conv_in * self.im_hw[0] * self.im_hw[1]

    def _col_gpu(self, im, n0, n, dtype):
        """im2col of images [n0, n0 + n) (a view of ``im`` itself for 1×1 kernels)."""
        isz = self._im_size()
        if self.is_1x1:
            return im[n0 * isz:(n0 + n) * isz]
        col = gpu.scratch("col", n * self.kernel_dim * self.group * self.col_dim, dtype)
        im2col_gpu[gpu.grid(col.size)](im[n0 * isz:(n0 + n) * isz], n, self.conv_in,
                                       self.im_hw[0], self.im_hw[1], self.kh, self.kw, self.ph,
                                       self.pw, self.sh, self.sw, self.dh, self.dw,
                                       self.col_hw[0], self.col_hw[1], col)
        return col

    def _gemm_groups(self, which, w, col, out, n, dw=None):
        """Per group, batched over n images: ``fwd`` out = W·col, ``bwd`` col = Wᵀ·out,
        ``weight`` dW += Σ_n out·colᵀ."""
        og, kd, cd = self.conv_out // self.group, self.kernel_dim, self.col_dim
        ocs, ccs = self.conv_out * cd, self.group * kd * cd  # per-image strides
        for g in range(self.group):
            wg = (dw if which == "weight" else w)[g * og * kd:]
            cg, outg = col[g * kd * cd:], out[g * og * cd:]
            if which == "fwd":
                gpu.gemm(False, False, og, cd, kd, 1.0, wg, cg, 0.0, outg, batch=n,
                         stride_a=0, stride_b=ccs, stride_c=ocs)
            elif which == "bwd":
                gpu.gemm(True, False, kd, cd, og, 1.0, wg, outg, 0.0, cg, batch=n,
                         stride_a=0, stride_b=ocs, stride_c=ccs)
            else:
                gpu.gemm(False, True, og, kd, cd, 1.0, outg, cg, 1.0, wg, batch=n,
                         stride_a=ocs, stride_b=ccs, reduce=True)

    def _fwd_gemm_gpu(self, im, out, n0, n, col=None):
        if col is None:
            col = self._col_gpu(im, n0, n, out.dtype)
        osz = self.conv_out * self.col_dim
        self._gemm_groups("fwd", self.blobs[0].gpu_data(False), col,
                          out[n0 * osz:(n0 + n) * osz], n)

    def _bwd_gemm_gpu(self, out, im, n0, n):
        osz, isz = self.conv_out * self.col_dim, self._im_size()
        dest = im[n0 * isz:(n0 + n) * isz]
        col = dest if self.is_1x1 else \
            gpu.scratch("col", n * self.kernel_dim * self.group * self.col_dim, im.dtype)
        self._gemm_groups("bwd", self.blobs[0].gpu_data(False), col,
                          out[n0 * osz:(n0 + n) * osz], n)
        if not self.is_1x1:
            col2im_gpu[gpu.grid(dest.size)](col, n, self.conv_in, self.im_hw[0], self.im_hw[1],
                                            self.kh, self.kw, self.ph, self.pw, self.sh,
                                            self.sw, self.dh, self.dw, self.col_hw[0],
                                            self.col_hw[1], dest)

    def _weight_gemm_gpu(self, im, out, n0, n):
        col = self._col_gpu(im, n0, n, out.dtype)
        osz = self.conv_out * self.col_dim
        self._gemm_groups("weight", None, col, out[n0 * osz:(n0 + n) * osz], n,
                          dw=self.blobs[0].gpu_diff())
        return col

    def _add_bias_gpu(self, t):
        if self.bias_term:
            gpu.add_bias(t.gpu_data(), self.blobs[1].gpu_data(False),
                         t.count() // max(1, self.num * self.num_output))

    def _bias_backward_gpu(self, t):
        if self.bias_term and self.param_propagate_down[1]:
            gpu.sum_odi(t.gpu_diff(False), self.num, self.num_output,
                        t.count() // max(1, self.num * self.num_output),
                        self.blobs[1].gpu_diff(), 1.0, 1.0)


def _conv_geometry(layer, bottom, what):
    """convolution_param's channel axis and per-spatial-axis kernel, stride, pad and dilation
    (checked, Caffe's CHECKs as one-line errors), for Convolution/Deconvolution and Im2col;
    sets the layer's channel_axis, num_axes and num_spatial_axes."""
    p = layer.layer_param.convolution_param
    layer.channel_axis = bottom[0].canonical_axis(p.axis)
    layer.num_axes = bottom[0].num_axes
    nsp = layer.num_axes - layer.channel_axis - 1
    if nsp not in (1, 2):
        raise _error(layer, "only 1-D and 2-D spatial %s supported (bottom shape %s with channel "
                            "axis %d has %d spatial axes)"
                     % (what, bottom[0].shape, layer.channel_axis, nsp))
    layer.num_spatial_axes = nsp
    per_axis = _BaseConvolutionLayer._per_axis
    kernel = per_axis(layer, p, "kernel_size", "kernel_h", "kernel_w", None, nsp)
    stride = per_axis(layer, p, "stride", "stride_h", "stride_w", 1, nsp)
    pad = per_axis(layer, p, "pad", "pad_h", "pad_w", 0, nsp)
    dilation = per_axis(layer, p, "dilation", None, None, 1, nsp)
    if any(k <= 0 for k in kernel):
        raise _error(layer, "convolution_param kernel dimensions must be nonzero, got %s" % kernel)
    if any(s <= 0 for s in stride):
        raise _error(layer, "convolution_param stride dimensions must be nonzero, got %s" % stride)
    if any(d <= 0 for d in dilation):
        raise _error(layer, "convolution_param dilation must be nonzero, got %s" % dilation)
    return p, nsp, kernel, stride, pad, dilation


@register("Convolution", "CONVOLUTION")
class ConvolutionLayer(_BaseConvolutionLayer):
    """Convolution (cross-correlation, im2col + GEMM), one top per bottom with shared weights.

    convolution_param: num_output (required), bias_term (true), kernel_size / stride (1) /
    pad (0) / dilation (1) once or per spatial axis, or kernel_h/w, stride_h/w, pad_h/w (2-D
    only, not mixed with the repeated forms), group (1), axis (1, the channel axis),
    weight_filler / bias_filler (constant 0). W is (num_output, C/group, kh, kw), b is
    (num_output,). Output size: floor((in + 2p − (d(k−1)+1))/s) + 1 (a negative numerator,
    a kernel larger than the padded input, raises instead of following C's truncation).
    Group g maps channels [g·C/G, (g+1)·C/G) to outputs [g·O/G, (g+1)·O/G).
    Forward: y[n] = W·im2col(x[n]) + b. Backward: dW += dy·colᵀ, db += Σ dy,
    dx = col2im(Wᵀ·dy) (overwrite).
    """

    def compute_output_shape(self, in_shape):
        out = []
        for i, k, s, p, d in zip(in_shape, self.kernel_shape, self.stride, self.pad, self.dilation):
            num = i + 2 * p - (d * (k - 1) + 1)
            out.append(num // s + 1 if num >= 0 else 0)
        return tuple(out)


@register("Deconvolution", "DECONVOLUTION")
class DeconvolutionLayer(_BaseConvolutionLayer):
    """Deconvolution (transposed convolution): Convolution's forward and backward swapped.

    convolution_param as Convolution. W is (C_in, num_output/group, kh, kw), b (num_output,).
    Output size: s(in − 1) + d(k − 1) + 1 − 2p. Forward: y[n] = col2im(Wᵀ·x[n]) + b.
    Backward: dW += x[n]·im2col(dy[n])ᵀ, db += Σ dy, dx[n] = W·im2col(dy[n]) (overwrite).
    """
    reverse = True

    def compute_output_shape(self, in_shape):
        return tuple(s * (i - 1) + d * (k - 1) + 1 - 2 * p for i, k, s, p, d in
                     zip(in_shape, self.kernel_shape, self.stride, self.pad, self.dilation))


@register("Pooling", "POOLING")
class PoolingLayer(Layer):
    """Pooling over the H×W planes of a 4-D (N, C, H, W) bottom (pooling_layer.cpp).

    pooling_param: pool (MAX, AVE; STOCHASTIC raises on CPU as in Caffe), kernel_size or
    kernel_h+kernel_w, stride (1) or stride_h+stride_w, pad (0) or pad_h+pad_w,
    global_pooling (false: kernel = H×W, pad 0, stride 1), round_mode (CEIL, or FLOOR).
    Output: ceil|floor((H + 2p − k)/s) + 1, then, only when a pad is nonzero, one less if the
    last window would start at or beyond H + p. pad < kernel. MAX: strict ``>`` from −FLT_MAX
    over the clipped window (the first maximum in row-major order wins); the argmax h·W + w
    goes to an int32 mask or, with a second top, to top[1] as floats; backward:
    dx[mask] += dy. AVE: in-image sum / ((min(hs+k, H+p) − hs)·(min(ws+k, W+p) − ws)), so the
    padding counts in the divisor but the ceil overflow does not; backward spreads dy / size.
    """
    exact_num_bottom = 1
    min_num_top = 1
    max_num_top = 1

    def __init__(self, layer_param, phase=None, net_dir=None):
        super().__init__(layer_param, phase, net_dir)
        p = layer_param.pooling_param
        self.max_num_top = 2 if p.pool == p.MAX else 1

    @property
    def gradcheck_hint(self):
        """Why a finite-difference check of this layer can fail although its backward is right
        (``minicaffe.gradcheck.kink_hint``), or None."""
        p = self.layer_param.pooling_param
        if p.pool != p.MAX:
            return None
        return ("MAX pooling sends a window's gradient to its one maximum; where inputs tie or "
                "lie within the stepsize of each other (the zeros after a ReLU), x + h and x - h "
                "pick different maxima, so the finite difference disagrees with a correct backward "
                "(BVLC's pooling tests feed random inputs, which have no ties)")

    def layer_setup(self, bottom, top):
        p = self.layer_param.pooling_param
        self.pool = p.pool
        if p.pool not in (p.MAX, p.AVE, p.STOCHASTIC):
            raise _error(self, "unknown pooling_param.pool %d" % p.pool)
        if p.round_mode not in (p.CEIL, p.FLOOR):
            raise _error(self, "unknown pooling_param.round_mode %d" % p.round_mode)
        has = p.HasField
        self.global_pooling = p.global_pooling
        if self.global_pooling:
            if has("kernel_size") or has("kernel_h") or has("kernel_w"):
                raise _error(self, "with global_pooling: true, the filter size (kernel_size, "
                                   "kernel_h, kernel_w) cannot be specified")
            self.kh = self.kw = 0
        else:
            if has("kernel_size") == (has("kernel_h") and has("kernel_w")):
                if has("kernel_size"):
                    raise _error(self, "the filter size is pooling_param.kernel_size OR "
                                       "kernel_h and kernel_w; not both")
                raise _error(self, "pooling_param.kernel_size is required (for non-square "
                                   "filters both kernel_h and kernel_w)")
            if has("kernel_size"):
                self.kh = self.kw = p.kernel_size
            else:
                self.kh, self.kw = p.kernel_h, p.kernel_w
            if self.kh <= 0 or self.kw <= 0:
                raise _error(self, "pooling_param filter dimensions cannot be zero")
        for name in ("pad", "stride"):
            if not ((not has(name) and has(name + "_h") and has(name + "_w"))
                    or (not has(name + "_h") and not has(name + "_w"))):
                raise _error(self, "pooling_param.%s is %s OR %s_h and %s_w (both required)"
                             % (name, name, name, name))
        if has("pad_h"):
            self.ph, self.pw = p.pad_h, p.pad_w
        else:
            self.ph = self.pw = p.pad
        if has("stride_h"):
            self.sh, self.sw = p.stride_h, p.stride_w
        else:
            self.sh = self.sw = p.stride
        if self.sh <= 0 or self.sw <= 0:
            raise _error(self, "pooling_param stride must be nonzero")
        if self.global_pooling and (self.ph or self.pw or self.sh != 1 or self.sw != 1):
            raise _error(self, "with global_pooling: true, only pad = 0 and stride = 1 are allowed")
        if self.ph or self.pw:
            if p.pool not in (p.MAX, p.AVE):
                raise _error(self, "pooling_param.pad is implemented only for MAX and AVE pooling")
            if self.ph >= self.kh or self.pw >= self.kw:
                raise _error(self, "pooling_param.pad (%d, %d) must be smaller than the kernel "
                                   "(%d, %d)" % (self.ph, self.pw, self.kh, self.kw))
        self.mask = None

    def reshape(self, bottom, top):
        p = self.layer_param.pooling_param
        b = bottom[0]
        if b.num_axes != 4:
            raise self.shape_error("bottom (Pooling input must have 4 axes: num, channels, "
                                   "height, width)", b.shape, ("N", "C", "H", "W"))
        n, c, h, w = b.shape
        if self.global_pooling:
            self.kh, self.kw = h, w
        rnd = np.ceil if p.round_mode == p.CEIL else np.floor
        ph_ = int(rnd(np.float32(h + 2 * self.ph - self.kh) / np.float32(self.sh))) + 1
        pw_ = int(rnd(np.float32(w + 2 * self.pw - self.kw) / np.float32(self.sw))) + 1
        if self.ph or self.pw:
            if (ph_ - 1) * self.sh >= h + self.ph:
                ph_ -= 1
            if (pw_ - 1) * self.sw >= w + self.pw:
                pw_ -= 1
        if ph_ <= 0 or pw_ <= 0:
            raise self.shape_error("output (kernel (%d, %d), stride (%d, %d), pad (%d, %d))"
                                   % (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw),
                                   (n, c, ph_, pw_), ("positive sizes",))
        self.pooled = (ph_, pw_)
        top[0].reshape((n, c, ph_, pw_))
        if len(top) > 1:
            top[1].reshape((n, c, ph_, pw_))
        if self.pool == p.MAX and (self.mask is None or self.mask.shape != (n * c, ph_, pw_)):
            self.mask = np.empty((n * c, ph_, pw_), np.int32)

    def _args(self):
        return (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw,
                self.pool == self.layer_param.pooling_param.MAX)

    def _planes(self, a, hw):
        return a.reshape((-1,) + hw)

    def forward_cpu(self, bottom, top):
        p = self.layer_param.pooling_param
        if self.pool == p.STOCHASTIC:
            raise _error(self, "STOCHASTIC pooling is not implemented on the CPU (Caffe has it "
                               "on the GPU only)")
        x = self._planes(bottom[0].data, bottom[0].shape[2:])
        y = self._planes(top[0].data, self.pooled)
        is_max = self.pool == p.MAX
        launch(pool_forward, y.size * self.kh * self.kw, x, *self._args(), y,
               self.mask if is_max else _NO_MASK)
        if is_max and len(top) > 1:
            top[1].data.reshape(self.mask.shape)[...] = self.mask

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        p = self.layer_param.pooling_param
        if self.pool == p.STOCHASTIC:
            raise _error(self, "STOCHASTIC pooling is not implemented on the CPU")
        mask = _NO_MASK
        if self.pool == p.MAX:
            mask = self.mask
            if len(top) > 1:  # Caffe reads the argmax back from the mask top
                mask = top[1].data.reshape(self.mask.shape).astype(np.int32)
        dy = self._planes(top[0].diff, self.pooled)
        dx = self._planes(bottom[0].diff, bottom[0].shape[2:])
        launch(pool_backward, dy.size * self.kh * self.kw + dx.size, dy, mask, *self._args(), dx)

    def _gpu_args(self, bottom):
        n, c, h, w = bottom[0].shape
        kh, kw, sh, sw, ph, pw, is_max = self._args()
        return (n * c, h, w, kh, kw, sh, sw, ph, pw, is_max) + self.pooled

    def forward_gpu(self, bottom, top):
        p = self.layer_param.pooling_param
        if self.pool == p.STOCHASTIC:
            return self.forward_cpu(bottom, top)  # raises, as on the CPU
        y = top[0].gpu_data()
        is_max = self.pool == p.MAX
        self._mask_dev = gpu.ensure(getattr(self, "_mask_dev", None), y.size if is_max else 1,
                                    np.int32)
        pool_forward_gpu[gpu.grid(y.size)](bottom[0].gpu_data(False), *self._gpu_args(bottom),
                                           y, self._mask_dev)
        if is_max and len(top) > 1:
            gpu.copy(self._mask_dev, top[1].gpu_data())

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        p = self.layer_param.pooling_param
        if self.pool == p.STOCHASTIC:
            return self.backward_cpu(top, propagate_down, bottom)  # raises
        mask = self._mask_dev
        if self.pool == p.MAX and len(top) > 1:  # Caffe reads the argmax back from the mask top
            mask = top[1].gpu_data(False)
        dx = bottom[0].gpu_diff()
        pool_backward_gpu[gpu.grid(dx.size)](top[0].gpu_diff(False), mask,
                                             *self._gpu_args(bottom), dx)


@register("LRN", "LRN")
class LRNLayer(Layer):
    """Local response normalisation of a 4-D (N, C, H, W) bottom (lrn_layer.cpp).

    lrn_param: local_size n (5, odd), alpha α (1), beta β (0.75), k (1), norm_region
    (ACROSS_CHANNELS, or WITHIN_CHANNEL).
    ACROSS_CHANNELS: s = k + (α/n)·Σ_{|c'−c| ≤ (n−1)/2} x_{c'}² (zero-padded channels).
    WITHIN_CHANNEL: s = 1 + (α/n²)·Σ_{n×n window, pad (n−1)/2} x² (k ignored; Caffe's
    Split/Power/AVE-Pool/Power/Eltwise chain, whose pool divisor is always n²).
    y = x·s^(−β). Backward (both): dx = dy·s^(−β) − (2αβ/m)·x·Σ_window dy·y/s with
    m = n or n², the window sum being over the same symmetric box. On the CPU, ACROSS_CHANNELS
    is one fused kernel each way sliding the channel window (s^−β cached from the forward);
    WITHIN_CHANNEL, and both on the GPU, take the box sums from the AVE pooling kernel
    (divisor exactly m here; the channel window is an (n × 1) pool over (C, H·W) planes).
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.lrn_param
        self.size = int(p.local_size)
        if self.size % 2 != 1:
            raise _error(self, "lrn_param.local_size must be odd, got %d" % self.size)
        if p.norm_region not in (p.ACROSS_CHANNELS, p.WITHIN_CHANNEL):
            raise _error(self, "unknown lrn_param.norm_region %d" % p.norm_region)
        self.across = p.norm_region == p.ACROSS_CHANNELS
        self.alpha, self.beta, self.k = float(p.alpha), float(p.beta), float(p.k)
        self.scale = None

    def reshape(self, bottom, top):
        b = bottom[0]
        if b.num_axes != 4:
            raise self.shape_error("bottom (LRN input must have 4 axes: num, channels, height, "
                                   "width)", b.shape, ("N", "C", "H", "W"))
        top[0].reshape(b.shape)
        if self.scale is None or self.scale.shape != b.shape or self.scale.dtype != b.dtype:
            self.scale = np.empty(b.shape, b.dtype)
            self.scale_pow = np.empty(b.shape, b.dtype)  # s^-β, kept for the backward

    def _box_mean(self, a, out):
        """out = the mean of ``a`` over the zero-padded LRN window (divisor n or n²)."""
        n, c, h, w = a.shape
        r = (self.size - 1) // 2
        if self.across:
            launch(pool_forward, a.size * self.size, a.reshape(n, c, h * w), self.size, 1, 1, 1,
                   r, 0, False, out.reshape(n, c, h * w), _NO_MASK)
        else:
            launch(pool_forward, a.size * self.size ** 2, a.reshape(n * c, h, w), self.size,
                   self.size, 1, 1, r, r, False, out.reshape(n * c, h, w), _NO_MASK)

    def _across(self, forward, x, y, dy, out):
        """ACROSS_CHANNELS in one fused pass each way (``im2col.lrn_across``; no temporaries),
        its scalars in the data's dtype."""
        f = x.dtype.type
        planes = self._planes(x, y, self.scale, self.scale_pow, dy, out)
        launch(lrn_across, x.size * self.size, *planes[:5], self.size, f(self.alpha / self.size),
               f(self.k), f(self.beta), f(2.0 * self.alpha * self.beta / self.size), forward,
               planes[5])

    def _planes(self, *arrays):
        n, c = arrays[0].shape[:2]
        return [a.reshape(n, c, -1) for a in arrays]

    def forward_cpu(self, bottom, top):
        x, y, s = bottom[0].data, top[0].data, self.scale
        if self.across:
            self._across(True, x, y, x, y)
            return
        self._box_mean(x * x, s)
        s *= self.alpha
        s += 1.0
        np.power(s, -self.beta, out=self.scale_pow)
        np.multiply(x, self.scale_pow, out=y)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, y, dy, s = bottom[0].data, top[0].data, top[0].diff, self.scale
        dx = bottom[0].diff
        if self.across:
            self._across(False, x, y, dy, dx)
            return
        ratio = dy * y / s
        acc = np.empty_like(ratio)
        self._box_mean(ratio, acc)
        acc *= x
        acc *= 2.0 * self.alpha * self.beta
        np.multiply(dy, self.scale_pow, out=dx)
        dx -= acc

    def _box_mean_gpu(self, a, out, shape):
        n, c, h, w = shape
        r = (self.size - 1) // 2
        no_mask = gpu.scratch("no_mask", 1, np.int32)
        if self.across:
            pool_forward_gpu[gpu.grid(out.size)](a, n, c, h * w, self.size, 1, 1, 1, r, 0,
                                                 False, c, h * w, out, no_mask)
        else:
            pool_forward_gpu[gpu.grid(out.size)](a, n * c, h, w, self.size, self.size, 1, 1, r,
                                                 r, False, h, w, out, no_mask)

    def forward_gpu(self, bottom, top):
        x, y = bottom[0].gpu_data(False), top[0].gpu_data()
        self._scale_dev = gpu.ensure(getattr(self, "_scale_dev", None), x.size, x.dtype)
        sq = gpu.scratch("lrn", x.size, x.dtype)
        gpu.mul(x, x, sq)
        self._box_mean_gpu(sq, self._scale_dev, bottom[0].shape)
        _lrn_fwd[gpu.grid(x.size)](x, self._scale_dev, self.alpha,
                                   self.k if self.across else 1.0, self.beta, y)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, y, dy = bottom[0].gpu_data(False), top[0].gpu_data(False), top[0].gpu_diff(False)
        s, dx = self._scale_dev, bottom[0].gpu_diff()
        ratio = gpu.scratch("lrn", x.size, x.dtype)
        _lrn_ratio[gpu.grid(x.size)](dy, y, s, ratio)
        acc = gpu.scratch("lrn_acc", x.size, x.dtype)
        self._box_mean_gpu(ratio, acc, bottom[0].shape)
        _lrn_bwd[gpu.grid(x.size)](dy, s, x, acc, self.beta, 2.0 * self.alpha * self.beta, dx)


@register("Crop")
class CropLayer(Layer):
    """Crop bottom[0] to bottom[1]'s shape on the axes from crop_param.axis (2) on.

    crop_param.offset: none (0), one for every cropped axis, or one per axis from ``axis``;
    bottom[0].shape[i] − offset ≥ bottom[1].shape[i]. y = x[offsets : offsets + shape].
    Backward: dx = 0, then dx[crop] = dy; bottom[1] only gives a shape (its diff is zeroed).
    """
    exact_num_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.crop_param
        nd = bottom[0].num_axes
        self.start_axis = bottom[0].canonical_axis(p.axis)
        if len(p.offset) > 1 and self.start_axis + len(p.offset) != nd:
            raise _error(self, "the number of crop_param.offset values (%d) must equal the "
                               "number of axes from crop_param.axis %d on (%d)"
                         % (len(p.offset), self.start_axis, nd - self.start_axis))

    def reshape(self, bottom, top):
        p = self.layer_param.crop_param
        a, b = bottom[0], bottom[1]
        nd = a.num_axes
        if b.num_axes < nd:
            raise self.shape_error("bottom[1] (the crop reference needs as many axes as "
                                   "bottom[0])", b.shape, a.shape)
        shape, self.slices = [], []
        for i in range(nd):
            off, size = 0, a.shape[i]
            if i >= self.start_axis:
                size = b.shape[i]
                if len(p.offset) == 1:
                    off = int(p.offset[0])
                elif len(p.offset) > 1:
                    off = int(p.offset[i - self.start_axis])
                if a.shape[i] - off < size:
                    raise self.shape_error("the crop for axis %d (size %d at offset %d) is out of "
                                           "bounds of bottom[0]" % (i, size, off), a.shape,
                                           b.shape)
            shape.append(size)
            self.slices.append(slice(off, off + size))
        self.slices = tuple(self.slices)
        top[0].reshape(tuple(shape))

    def forward_cpu(self, bottom, top):
        top[0].data[...] = bottom[0].data[self.slices]

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = bottom[0].diff
            dx[...] = 0
            dx[self.slices] = top[0].diff
        if propagate_down[1]:
            bottom[1].diff[...] = 0

    def _index_map(self, bottom, top):
        """(top shape, bottom strides, offsets) as small device arrays, kept per shape."""
        key = (bottom[0].shape, top[0].shape, tuple(s.start for s in self.slices))
        if getattr(self, "_map_key", None) != key:
            shape = np.array(top[0].shape or (1,), np.int64)
            strides = np.array([bottom[0].count(i + 1) for i in range(bottom[0].num_axes)]
                               or [1], np.int64)
            offs = np.array([s.start for s in self.slices] or [0], np.int64)
            self._map = tuple(gpu.to_device(a) for a in (shape, strides, offs))
            self._map_key = key
        return self._map

    def forward_gpu(self, bottom, top):
        y = top[0].gpu_data()
        if y.size:
            _crop_copy[gpu.grid(y.size)](bottom[0].gpu_data(False), y,
                                         *self._index_map(bottom, top), True)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = bottom[0].gpu_diff()
            gpu.fill(dx, 0.0)
            dy = top[0].gpu_diff(False)
            if dy.size:
                _crop_copy[gpu.grid(dy.size)](dx, dy, *self._index_map(bottom, top), False)
        if propagate_down[1]:
            gpu.fill(bottom[1].gpu_diff(), 0.0)


@cuda.jit
def _crop_copy(big, small, shape, strides, offs, to_small):
    # small[i] <-> big at (coords of i in the top's shape) + offsets
    i = cuda.grid(1)
    while i < small.size:
        rem = i
        j = 0
        for a in range(shape.size - 1, -1, -1):
            c = rem % shape[a]
            rem //= shape[a]
            j += (c + offs[a]) * strides[a]
        if to_small:
            small[i] = big[j]
        else:
            big[j] = small[i]
        i += cuda.gridsize(1)


@cuda.jit
def _lrn_fwd(x, s, alpha, k, beta, y):
    # s = k + α·mean(x²) over the window (s holds the mean on entry), y = x·s^(−β)
    i = cuda.grid(1)
    while i < y.size:
        v = s[i] * alpha + k
        s[i] = v
        y[i] = x[i] * math.pow(v, -beta)
        i += cuda.gridsize(1)


@cuda.jit
def _lrn_ratio(dy, y, s, out):
    i = cuda.grid(1)
    while i < out.size:
        out[i] = dy[i] * y[i] / s[i]
        i += cuda.gridsize(1)


@cuda.jit
def _lrn_bwd(dy, s, x, acc, beta, coeff, dx):
    i = cuda.grid(1)
    while i < dx.size:
        dx[i] = dy[i] * math.pow(s[i], -beta) - acc[i] * x[i] * coeff
        i += cuda.gridsize(1)


@register("Im2col", "IM2COL")
class Im2colLayer(Layer):
    """Im2col (im2col_layer.cpp): the convolution's column matrix as a blob. convolution_param:
    kernel_size / stride (1) / pad (0) / dilation (1), once or per spatial axis, or
    kernel_h/w, stride_h/w, pad_h/w (2-D), axis (1, the channel axis); 1-D and 2-D spatial
    inputs. Top (N, C·kh·kw, H_out, W_out) with H_out = (H + 2p − (d(k−1)+1))/s + 1 (floor):
    y[n, (c·kh + i)·kw + j, y, x] = x[n, c, y·sh − ph + i·dh, x·sw − pw + j·dw], 0 in the
    padding. Backward: dx = col2im(dy), the sum over every window position a pixel is in.
    Both devices run im2col.py's im2col / col2im (and their GPU twins)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p, nsp, kernel, stride, pad, dilation = _conv_geometry(self, bottom, "inputs are")
        self.spatial = (kernel, stride, pad, dilation)
        if nsp == 1:
            kernel, stride, pad, dilation = [1] + kernel, [1] + stride, [0] + pad, [1] + dilation
        (self.kh, self.kw), (self.sh, self.sw) = kernel, stride
        (self.ph, self.pw), (self.dh, self.dw) = pad, dilation

    def reshape(self, bottom, top):
        b = bottom[0]
        ca = self.channel_axis
        if b.num_axes != self.num_axes:
            raise self.shape_error("bottom (num_axes may not change)", b.shape,
                                   ("%d axes" % self.num_axes,))
        kernel, stride, pad, dilation = self.spatial
        in_sp = b.shape[ca + 1:]
        out_sp = []
        for i, k, s, p, d in zip(in_sp, kernel, stride, pad, dilation):
            num = i + 2 * p - (d * (k - 1) + 1)
            out_sp.append(num // s + 1 if num >= 0 else 0)
        if any(o <= 0 for o in out_sp):
            raise self.shape_error("output (kernel %s, stride %s, pad %s, dilation %s on input %s)"
                                   % (tuple(kernel), tuple(stride), tuple(pad), tuple(dilation),
                                      tuple(in_sp)), tuple(out_sp), ("positive sizes",))
        self.num, self.C = b.count(0, ca), b.shape[ca]
        top[0].reshape(b.shape[:ca] + (self.C * math.prod(kernel),) + tuple(out_sp))
        two_d = (lambda s: (1,) + tuple(s)) if self.num_spatial_axes == 1 else tuple
        self.im_hw, self.col_hw = two_d(in_sp), two_d(out_sp)

    def _args(self):
        return (self.kh, self.kw, self.ph, self.pw, self.sh, self.sw, self.dh, self.dw,
                self.col_hw[0], self.col_hw[1])

    def _views(self, im, col):
        k, cd = self.C * self.kh * self.kw, self.col_hw[0] * self.col_hw[1]
        return im.reshape((self.num, self.C) + self.im_hw), col.reshape(self.num, k, cd)

    def forward_cpu(self, bottom, top):
        x, y = self._views(bottom[0].data, top[0].data)
        for n in range(self.num):
            launch(im2col, y[n].size, x[n:n + 1], *self._args(), y[n])

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx, dy = self._views(bottom[0].diff, top[0].diff)
            for n in range(self.num):
                launch(col2im, dy[n].size, dy[n], *self._args(), dx[n:n + 1])

    def _gpu_args(self):
        return (self.num, self.C) + self.im_hw + self._args()

    def forward_gpu(self, bottom, top):
        y = top[0].gpu_data()
        if y.size:
            im2col_gpu[gpu.grid(y.size)](bottom[0].gpu_data(False), *self._gpu_args(), y)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = bottom[0].gpu_diff()
            if dx.size:
                col2im_gpu[gpu.grid(dx.size)](top[0].gpu_diff(False), *self._gpu_args(), dx)


@register("SPP")
class SPPLayer(Layer):
    """SPP, spatial pyramid pooling (spp_layer.cpp), of a 4-D (N, C, H, W) bottom. spp_param:
    pyramid_height L (required, ≥ 1), pool (MAX default, AVE; STOCHASTIC raises as Pooling
    does). Level l < L pools into 2^l × 2^l bins with GetPoolingParam's window: kernel
    k = ceil(H / 2^l), pad (k·2^l − H + 1) // 2, stride k (likewise along W). As Caffe, it is
    a small net of existing layers: Split → one Pooling per level → Flatten → Concat, so the
    top is (N, C·Σ_l 4^l); with L = 1 it is the one Pooling layer alone, top (N, C, 1, 1).
    Forward and backward are those layers' (their GPU code in GPU mode); a level whose pad
    reaches its kernel (a bottom smaller than 2^l) fails as Caffe's Pooling check does, with
    this layer's name. The layers are rebuilt when the bottom's shape changes."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.spp_param
        if p.pyramid_height < 1:
            raise _error(self, "spp_param.pyramid_height must be at least 1, got %d"
                         % p.pyramid_height)
        if p.pool not in (p.MAX, p.AVE, p.STOCHASTIC):
            raise _error(self, "unknown spp_param.pool %d" % p.pool)
        self.height = int(p.pyramid_height)
        self.built_for = None

    def pooling_param(self, level, h, w):
        """The LayerParameter of level ``level``'s Pooling layer (GetPoolingParam)."""
        bins = 2 ** level
        lp = caffe_pb2.LayerParameter(name="%s/pool%d" % (self.name, level), type="Pooling")
        lp.phase = self.phase
        q = lp.pooling_param
        for axis, size in (("h", h), ("w", w)):
            k = -(-size // bins)
            setattr(q, "kernel_" + axis, k)
            setattr(q, "stride_" + axis, k)
            setattr(q, "pad_" + axis, (k * bins - size + 1) // 2)
        q.pool = self.layer_param.spp_param.pool  # SPP's enum has Pooling's values
        return lp

    def _sub(self, cls, kind):
        return cls(caffe_pb2.LayerParameter(name="%s/%s" % (self.name, kind), type=cls.type),
                   phase=self.phase)

    def _build(self, bottom, top):
        _, _, h, w = bottom[0].shape
        if h <= 0 or w <= 0:
            raise self.shape_error("bottom (input dimensions cannot be zero)", bottom[0].shape,
                                   ("N", "C", "H > 0", "W > 0"))
        self.pools = [PoolingLayer(self.pooling_param(level, h, w), phase=self.phase)
                      for level in range(self.height)]
        level = 0
        try:
            if self.height == 1:
                self.pools[0].setup(bottom, top)
            else:
                self.split = self._sub(SplitLayer, "split")
                self.split_tops = [self.make_blob(()) for _ in range(self.height)]
                self.split.setup(bottom, self.split_tops)
                self.pooled = [self.make_blob(()) for _ in range(self.height)]
                self.flats = [self._sub(FlattenLayer, "flatten%d" % i) for i in range(self.height)]
                self.flat_tops = [self.make_blob(()) for _ in range(self.height)]
                for level in range(self.height):
                    self.pools[level].setup([self.split_tops[level]], [self.pooled[level]])
                    self.flats[level].setup([self.pooled[level]], [self.flat_tops[level]])
                self.concat = self._sub(ConcatLayer, "concat")
                self.concat.setup(self.flat_tops, top)
        except CaffeError as e:
            raise _error(self, "pyramid level %d of a %d×%d bottom: %s" % (level, h, w, e)) from e
        self.built_for = bottom[0].shape

    def reshape(self, bottom, top):
        b = bottom[0]
        if b.num_axes != 4:
            raise self.shape_error("bottom (input must have 4 axes: num, channels, height, "
                                   "width)", b.shape, ("N", "C", "H", "W"))
        if b.shape != self.built_for:
            self._build(bottom, top)
        elif self.height == 1:
            self.pools[0].reshape(bottom, top)
        else:
            self.split.reshape(bottom, self.split_tops)
            for i in range(self.height):
                self.pools[i].reshape([self.split_tops[i]], [self.pooled[i]])
                self.flats[i].reshape([self.pooled[i]], [self.flat_tops[i]])
            self.concat.reshape(self.flat_tops, top)

    def forward_cpu(self, bottom, top):
        # each inner layer's forward runs its own device's code
        if self.height == 1:
            self.pools[0].forward(bottom, top)
            return
        self.split.forward(bottom, self.split_tops)
        for i in range(self.height):
            self.pools[i].forward([self.split_tops[i]], [self.pooled[i]])
            self.flats[i].forward([self.pooled[i]], [self.flat_tops[i]])
        self.concat.forward(self.flat_tops, top)

    def backward_cpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.height == 1:
            self.pools[0].backward(top, propagate_down, bottom)
            return
        self.concat.backward(top, [True] * self.height, self.flat_tops)
        for i in range(self.height):
            self.flats[i].backward([self.flat_tops[i]], [True], [self.pooled[i]])
            self.pools[i].backward([self.pooled[i]], [True], [self.split_tops[i]])
        self.split.backward(self.split_tops, [True], bottom)

    forward_gpu, backward_gpu = forward_cpu, backward_cpu  # the inner layers dispatch
