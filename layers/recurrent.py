"""Recurrent layers: RNN, LSTM (Caffe's RecurrentLayer machinery) and LSTMUnit.

Caffe builds an unrolled net of T copies of InnerProduct / Scale / Eltwise / LSTMUnit layers
(``recurrent_layer.cpp``, ``lstm_layer.cpp``, ``rnn_layer.cpp``); here the same function is a
loop over t with one GEMM per step, and the per-element math (gates, tanh) is one formula per
term (``minicaffe.kernels``), evaluated on NumPy views on the host and called as device
functions from two indexing-only kernels on the GPU. The algorithm itself is written once
(``_Recurrent.forward_with`` / ``backward_with``) over a small set of array operations that
``_HOST`` and ``_DEVICE`` implement, so the CPU and GPU paths are the same code.

Bottoms: x (T × N × ...), cont (T × N), optional x_static (N × ...), and with
``recurrent_param.expose_hidden`` the initial states (RNN: h_0; LSTM: h_0, c_0, each
1 × N × num_output), as in ``RecurrentLayer::LayerSetUp``: x_static is present when there are
more than 2 + (number of exposed states) bottoms, and comes before the states.
"""
import math

import numpy as np
from numba import cuda

from minicaffe import gpu
from minicaffe.errors import CaffeError, ShapeError
from minicaffe.fillers import fill
from minicaffe.kernels import elementwise, mul
from minicaffe.layer import Layer, OneCode, register

# --- the per-element formulas (σ(x) = ½·tanh(x/2) + ½, Caffe's 1/(1 + e^(−x))) -----------------


@elementwise
def _lstm_c(xi, xf, xg, c_prev, cont):
    """c_t = cont·σ(f)·c_{t−1} + σ(i)·tanh(g)."""
    return cont * (0.5 * math.tanh(0.5 * xf) + 0.5) * c_prev + \
        (0.5 * math.tanh(0.5 * xi) + 0.5) * math.tanh(xg)


@elementwise
def _lstm_h(xo, c):
    """h_t = σ(o)·tanh(c_t)."""
    return (0.5 * math.tanh(0.5 * xo) + 0.5) * math.tanh(c)


@elementwise
def _lstm_dc_term(dc, dh, xo, c):
    """∂E/∂c_t in full: the cell's own diff plus the path through h_t."""
    t = math.tanh(c)
    return dc + dh * (0.5 * math.tanh(0.5 * xo) + 0.5) * (1 - t * t)


@elementwise
def _lstm_di(dct, xi, xg):
    s = 0.5 * math.tanh(0.5 * xi) + 0.5
    return dct * math.tanh(xg) * s * (1 - s)


@elementwise
def _lstm_df(dct, xf, c_prev, cont):
    s = 0.5 * math.tanh(0.5 * xf) + 0.5
    return cont * dct * c_prev * s * (1 - s)


@elementwise
def _lstm_do(dh, xo, c):
    s = 0.5 * math.tanh(0.5 * xo) + 0.5
    return dh * math.tanh(c) * s * (1 - s)


@elementwise
def _lstm_dg(dct, xi, xg):
    t = math.tanh(xg)
    return dct * (0.5 * math.tanh(0.5 * xi) + 0.5) * (1 - t * t)


@elementwise
def _lstm_dc_prev(dct, xf, cont):
    return cont * (0.5 * math.tanh(0.5 * xf) + 0.5) * dct


@elementwise(ufunc=np.tanh)
def _tanh(x):
    return math.tanh(x)


@elementwise
def _tanh_grad(dy, y):
    return dy * (1 - y * y)


_c_dev, _h_dev, _dct_dev = _lstm_c.device, _lstm_h.device, _lstm_dc_term.device
_di_dev, _df_dev, _do_dev, _dg_dev = _lstm_di.device, _lstm_df.device, _lstm_do.device, _lstm_dg.device
_dcp_dev = _lstm_dc_prev.device


@cuda.jit
def _unit_fwd(g, c_prev, cont, hid, c, h):
    # element i = (n, d) of the N × H states; the gates of row n are g[n, 0:4H] = (i, f, o, g)
    i = cuda.grid(1)
    while i < c.size:
        n = i // hid
        b = n * 4 * hid + i - n * hid
        cv = _c_dev(g[b], g[b + hid], g[b + 3 * hid], c_prev[i], cont[n])
        c[i] = cv
        h[i] = _h_dev(g[b + 2 * hid], cv)
        i += cuda.gridsize(1)


@cuda.jit
def _unit_bwd(g, c_prev, c, cont, dc, dh, hid, dg, dc_prev):
    i = cuda.grid(1)
    while i < c.size:
        n = i // hid
        b = n * 4 * hid + i - n * hid
        xi, xf, xo, xg = g[b], g[b + hid], g[b + 2 * hid], g[b + 3 * hid]
        dct = _dct_dev(dc[i], dh[i], xo, c[i])
        dg[b] = _di_dev(dct, xi, xg)
        dg[b + hid] = _df_dev(dct, xf, c_prev[i], cont[n])
        dg[b + 2 * hid] = _do_dev(dh[i], xo, c[i])
        dg[b + 3 * hid] = _dg_dev(dct, xi, xg)
        dc_prev[i] = _dcp_dev(dct, xf, cont[n])
        i += cuda.gridsize(1)


# --- the array operations the algorithm needs, on flat arrays, for each device ---------------

class _Host:
    """Flat NumPy views of the blobs' host memory."""

    @staticmethod
    def data(blob, mutable=True):
        return blob.data.reshape(-1)

    @staticmethod
    def diff(blob, mutable=True):
        return blob.diff.reshape(-1)

    @staticmethod
    def gemm(ta, tb, m, n, k, alpha, a, b, beta, c):
        """c (m×n) = alpha·op(a)·op(b) + beta·c, row-major, as caffe_cpu_gemm."""
        a = a[:m * k].reshape(k, m).T if ta else a[:m * k].reshape(m, k)
        b = b[:k * n].reshape(n, k).T if tb else b[:k * n].reshape(k, n)
        c = c[:m * n].reshape(m, n)
        if beta == 0 and alpha == 1:
            np.dot(a, b, out=c)
        else:
            c *= beta
            c += alpha * (a @ b)

    @staticmethod
    def scale_rows(x, s, inner, out):
        """out (rows × inner) = x · s[row]."""
        np.multiply(x.reshape(-1, inner), s.reshape(-1, 1), out=out.reshape(-1, inner))

    @staticmethod
    def add_rows(x, b):
        """x (rows × b.size) += b."""
        x.reshape(-1, b.size)[...] += b

    @staticmethod
    def sum_rows(x, rows, cols, out, beta):
        """out (cols) = Σ_r x[r, :] + beta·out."""
        s = x[:rows * cols].reshape(rows, cols).sum(axis=0)
        if beta:
            out += s
        else:
            out[...] = s

    @staticmethod
    def add(a, b, out):
        np.add(a, b, out=out)

    @staticmethod
    def copy(src, dst):
        dst[...] = src

    @staticmethod
    def fill(x, value):
        x[...] = value

    @staticmethod
    def apply(formula, *args, out):
        formula(*args, out=out)

    @staticmethod
    def unit_fwd(g, c_prev, cont, hid, c, h):
        g = g.reshape(-1, 4, hid)
        ct = cont.reshape(-1, 1)
        c2 = c.reshape(-1, hid)
        _lstm_c(g[:, 0], g[:, 1], g[:, 3], c_prev.reshape(-1, hid), ct, out=c2)
        _lstm_h(g[:, 2], c2, out=h.reshape(-1, hid))

    @staticmethod
    def unit_bwd(g, c_prev, c, cont, dc, dh, hid, dg, dc_prev):
        g, dg = g.reshape(-1, 4, hid), dg.reshape(-1, 4, hid)
        c, c_prev, dh = c.reshape(-1, hid), c_prev.reshape(-1, hid), dh.reshape(-1, hid)
        ct = cont.reshape(-1, 1)
        dct = _lstm_dc_term(dc.reshape(-1, hid), dh, g[:, 2], c, out=np.empty_like(c))
        _lstm_di(dct, g[:, 0], g[:, 3], out=dg[:, 0])
        _lstm_df(dct, g[:, 1], c_prev, ct, out=dg[:, 1])
        _lstm_do(dh, g[:, 2], c, out=dg[:, 2])
        _lstm_dg(dct, g[:, 0], g[:, 3], out=dg[:, 3])
        _lstm_dc_prev(dct, g[:, 1], ct, out=dc_prev.reshape(-1, hid))


class _Device:
    """Flat device arrays (``Blob.gpu_data``); the same operations as ``_Host``."""

    @staticmethod
    def data(blob, mutable=True):
        return blob.gpu_data(mutable)

    @staticmethod
    def diff(blob, mutable=True):
        return blob.gpu_diff(mutable)

    @staticmethod
    def gemm(ta, tb, m, n, k, alpha, a, b, beta, c):
        gpu.gemm(ta, tb, m, n, k, alpha, a, b, beta, c)

    @staticmethod
    def scale_rows(x, s, inner, out):
        mul.gpu(x, s, out=out, inner=inner)

    @staticmethod
    def add_rows(x, b):
        gpu.add_bias(x, b, 1)

    @staticmethod
    def sum_rows(x, rows, cols, out, beta):
        gpu.sum_odi(x, rows, cols, 1, out, 1.0, beta)

    @staticmethod
    def add(a, b, out):
        gpu.add(a, b, out)

    @staticmethod
    def copy(src, dst):
        gpu.copy(src, dst)

    @staticmethod
    def fill(x, value):
        gpu.fill(x, value)

    @staticmethod
    def apply(formula, *args, out):
        formula.gpu(*args, out=out)

    @staticmethod
    def unit_fwd(g, c_prev, cont, hid, c, h):
        if c.size:
            _unit_fwd[gpu.grid(c.size)](g, c_prev, cont, hid, c, h)

    @staticmethod
    def unit_bwd(g, c_prev, c, cont, dc, dh, hid, dg, dc_prev):
        if c.size:
            _unit_bwd[gpu.grid(c.size)](g, c_prev, c, cont, dc, dh, hid, dg, dc_prev)


_HOST, _DEVICE = _Host(), _Device()


def _bottom_label(layer, i):
    """The label "bottom[i] 'name'" for messages (a layer built outside a net has no names)."""
    names = layer.layer_param.bottom
    return "bottom[%d] '%s'" % (i, names[i]) if i < len(names) else "bottom[%d]" % i


# --- the Recurrent machinery -----------------------------------------------------------------

class _OneCode(OneCode, Layer):
    """The layers of this module write forward and backward once (``OneCode``) over array
    operations: ``dev`` is _HOST or _DEVICE."""
    HOST, DEVICE = _HOST, _DEVICE


class _Recurrent(_OneCode):
    """What RNN and LSTM share (Caffe's RecurrentLayer): the bottoms and tops, the input
    transform W·x_t + b (+ W_static·x_static), the loop over t with h_{t−1} scaled by cont_t
    before the recurrent product, and the carried state.

    Without ``expose_hidden`` the initial state of a forward is the final state of the previous
    one (zeros at first), as Caffe copies h_T (and c_T) into h_0 (c_0); a 0 in cont starts a
    sequence afresh. Gradients stop at h_0 then (truncated back-propagation through time).

    With ``expose_hidden``, as in Caffe (which shares only the *data* of h_0/c_0 and h_T/c_T
    with the exposed blobs): the diffs of the h_T/c_T tops are ignored and the h_0/c_0 bottoms
    get a zero gradient, so a net's gradients equal Caffe's (and its exposed states serve
    step-by-step inference, as there).

    A subclass gives ``_param_shapes`` and the steps that differ: ``_hidden`` (the blob holding
    h_1 … h_T), ``_begin`` / ``_step`` / ``_finish`` / ``_finals`` (forward), ``_seed_diffs`` /
    ``_step_back`` (backward).
    """
    n_states = 1      # recurrent state blobs: RNN h; LSTM h, c
    gates = 1         # rows of the pre-activation per hidden unit: RNN 1, LSTM 4 (i, f, o, g)

    def __init__(self, layer_param, phase=None, net_dir=None):
        super().__init__(layer_param, phase, net_dir)
        self.exposed = self.n_states if layer_param.recurrent_param.expose_hidden else 0
        self.min_num_bottom = 2 + self.exposed   # RecurrentLayer::MinBottomBlobs
        self.max_num_bottom = 3 + self.exposed
        self.exact_num_top = 1 + self.exposed

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def _who(self):
        return "%s Layer %s" % (self.type, self.name)

    def layer_setup(self, bottom, top):
        p = self.layer_param.recurrent_param
        if p.num_output <= 0:
            raise CaffeError("%s: recurrent_param.num_output must be > 0, got %d"
                             % (self._who(), p.num_output))
        self._check_x(bottom)
        self.T = bottom[0].shape[0]
        self.H = int(p.num_output)
        self.G = self.gates * self.H
        self.static = len(bottom) > 2 + self.exposed
        self.K = bottom[0].count(2)
        self.Ks = bottom[2].count(1) if self.static else 0
        if not self.blobs:
            self.blobs = self._make_params(p)
        self._state = [self.make_blob((1, 0, self.H)) for _ in range(self.n_states)]
        self._pre = self.make_blob((0,))       # pre-activations (data) and their diffs
        self._hc = self.make_blob((0,))        # cont_t·h_{t−1}, the recurrent product's input
        self._dh = self.make_blob((0,))        # diff: ∂E/∂h_t gathered over the loop
        self._tmp = self.make_blob((0,))       # data: N·H, diff: N·G scratch

    def _make_params(self, p):
        """The blobs in the order they appear in Caffe's unrolled net, filled in that order."""
        out = []
        for shape, filler in self._param_shapes(p):
            b = self.make_blob(shape)
            fill(b, filler)
            out.append(b)
        return out

    def _check_x(self, bottom):
        x, cont = bottom[0], bottom[1]
        if len(x.shape) < 2:
            raise ShapeError("%s: %s must have at least 2 axes -- (#timesteps, #streams, ...), "
                             "got shape %s" % (self._who(), _bottom_label(self, 0), x.shape))
        if cont.shape != x.shape[:2]:
            raise ShapeError("%s: cont (%s) must have shape (#timesteps, #streams) = %s, got %s"
                             % (self._who(), _bottom_label(self, 1), x.shape[:2], cont.shape))

    def reshape(self, bottom, top):
        self._check_x(bottom)
        x = bottom[0]
        if x.shape[0] != self.T:
            raise ShapeError("%s: input number of timesteps changed from %d to %d"
                             % (self._who(), self.T, x.shape[0]))
        if x.count(2) != self.K:
            raise self.shape_error("the input size per timestep of %s" % _bottom_label(self, 0),
                                   (x.count(2),), (self.K,))
        self.N = N = x.shape[1]
        if self.static:
            s = bottom[2]
            if len(s.shape) < 1 or s.shape[0] != N or s.count(1) != self.Ks:
                raise ShapeError("%s: x_static (%s) must have shape (%d, ...) with %d values per "
                                 "stream, got %s" % (self._who(), _bottom_label(self, 2), N, self.Ks, s.shape))
        state_shape = (1, N, self.H)
        for j in range(self.exposed):
            b = bottom[2 + self.static + j]
            if b.shape != state_shape:
                raise ShapeError("%s: initial state %s must have shape %s, got %s"
                                 % (self._who(), _bottom_label(self, 2 + self.static + j), state_shape, b.shape))
        for s in self._state:
            if s.shape != state_shape:   # a new batch size starts from zeros
                s.reshape(state_shape)
                s.data[...] = 0
        T, H, G = self.T, self.H, self.G
        top[0].reshape((T, N, H))
        for t in top[1:]:
            t.reshape(state_shape)
        self._pre.reshape((T, N, G))
        self._hc.reshape((T, N, H))
        self._dh.reshape((T, N, H))
        self._tmp.reshape((N, G))
        self._reshape_more(T, N, H)

    def _reshape_more(self, T, N, H):
        pass

    def _initial(self, ops, bottom, j):
        """Initial state j (h_0, c_0): the exposed bottom, or the carried state."""
        if self.exposed:
            return ops.data(bottom[2 + self.static + j], False)
        return ops.data(self._state[j], False)

    # Param indices: input weights, bias, [static weights], recurrent weights, (RNN: W_ho, b_o)
    @property
    def _rec(self):
        return 2 + self.static

    def forward_with(self, ops, bottom, top):
        T, N, H, G, K = self.T, self.N, self.H, self.G, self.K
        NH, NG = N * H, N * G
        w = [ops.data(b, False) for b in self.blobs]
        x, cont = ops.data(bottom[0], False), ops.data(bottom[1], False)
        pre, hc = ops.data(self._pre), ops.data(self._hc)
        # the input transform for all timesteps at once (x_transform): W·x_t + b
        ops.gemm(False, True, T * N, G, K, 1.0, x, w[0], 0.0, pre)
        ops.add_rows(pre, w[1])
        if self.static:  # W_static·x_static, the same for every t
            s = ops.data(self._tmp)[:NG]
            ops.gemm(False, True, N, G, self.Ks, 1.0, ops.data(bottom[2], False), w[2], 0.0, s)
            ops.add_rows(pre, s)
        hs = self._hidden(ops, top)
        h0 = self._initial(ops, bottom, 0)
        self._begin(ops, bottom)
        for t in range(T):
            h_prev = h0 if t == 0 else hs[(t - 1) * NH: t * NH]
            ops.scale_rows(h_prev, cont[t * N: (t + 1) * N], H, out=hc[t * NH: (t + 1) * NH])
            pre_t = pre[t * NG: (t + 1) * NG]
            ops.gemm(False, True, N, G, H, 1.0, hc[t * NH: (t + 1) * NH], w[self._rec], 1.0, pre_t)
            self._step(ops, t, pre_t, cont[t * N: (t + 1) * N], hs[t * NH: (t + 1) * NH])
        self._finish(ops, top, hs)
        finals = self._finals(ops, hs)
        for j, final in enumerate(finals):
            if self.exposed:
                ops.copy(final, ops.data(top[1 + j]))
            else:
                ops.copy(final, ops.data(self._state[j]))

    def backward_with(self, ops, top, propagate_down, bottom):
        if propagate_down[1]:
            raise CaffeError("%s: cannot backpropagate to the sequence indicators (cont, %s)"
                             % (self._who(), _bottom_label(self, 1)))
        T, N, H, G, K = self.T, self.N, self.H, self.G, self.K
        NH, NG = N * H, N * G
        ppd = self.param_propagate_down
        w = [ops.data(b, False) for b in self.blobs]
        x, cont = ops.data(bottom[0], False), ops.data(bottom[1], False)
        pre, dpre = ops.data(self._pre, False), ops.diff(self._pre)
        hc, dh = ops.data(self._hc, False), ops.diff(self._dh)
        hs = self._hidden(ops, top, False)
        dhc = ops.data(self._tmp)[:NH]
        self._seed_diffs(ops, top, hs, dh)   # dh = ∂E/∂h_t from the output top (not h_T's)
        for j in range(self.exposed):        # h_0, c_0: no gradient, as Caffe
            if propagate_down[2 + self.static + j]:
                ops.fill(ops.diff(bottom[2 + self.static + j]), 0.0)
        for t in range(T - 1, -1, -1):
            cont_t = cont[t * N: (t + 1) * N]
            self._step_back(ops, t, pre[t * NG: (t + 1) * NG], cont_t, hs[t * NH: (t + 1) * NH],
                            dh[t * NH: (t + 1) * NH], dpre[t * NG: (t + 1) * NG])
            # through h_conted_{t−1} = cont_t·h_{t−1} and W_hh / W_hc
            if t > 0:
                ops.gemm(False, False, N, H, G, 1.0, dpre[t * NG: (t + 1) * NG], w[self._rec], 0.0, dhc)
                ops.scale_rows(dhc, cont_t, H, out=dhc)
                prev = dh[(t - 1) * NH: t * NH]
                ops.add(prev, dhc, out=prev)
        db = [ops.diff(b) if ppd[i] else None for i, b in enumerate(self.blobs)]
        if ppd[self._rec]:
            ops.gemm(True, False, G, H, T * N, 1.0, dpre, hc, 1.0, db[self._rec])
        if ppd[0]:
            ops.gemm(True, False, G, K, T * N, 1.0, dpre, x, 1.0, db[0])
        if ppd[1]:
            ops.sum_rows(dpre, T * N, G, db[1], 1.0)
        if propagate_down[0]:
            ops.gemm(False, False, T * N, K, G, 1.0, dpre, w[0], 0.0, ops.diff(bottom[0]))
        if self.static and (ppd[2] or propagate_down[2]):
            ds = ops.diff(self._tmp)[:NG]
            ops.sum_rows(dpre, T, NG, ds, 0.0)
            xs = ops.data(bottom[2], False)
            if ppd[2]:
                ops.gemm(True, False, G, self.Ks, N, 1.0, ds, xs, 1.0, db[2])
            if propagate_down[2]:
                ops.gemm(False, False, N, self.Ks, G, 1.0, ds, w[2], 0.0, ops.diff(bottom[2]))


@register("RNN")
class RNNLayer(_Recurrent):
    """RNN (rnn_layer.cpp): h_t = tanh(W_hh·(cont_t·h_{t−1}) + W_xh·x_t + b_h [+ W_xh_static·
    x_static]), o_t = tanh(W_ho·h_t + b_o); top o (T × N × num_output), with ``expose_hidden``
    also h_T. ``recurrent_param``: num_output (required, > 0), weight_filler, bias_filler
    (debug_info has no effect).

    Blobs, in Caffe's order: W_xh (H × K), b_h (H), [W_xh_static (H × K_static)], W_hh (H × H),
    W_ho (H × H), b_o (H), with K = x.count(2), K_static = x_static.count(1).
    Backward: dz_o = do·(1 − o²), dh_t = W_hoᵀ dz_o,t + cont_{t+1}·W_hhᵀ dz_{t+1},
    dz_t = dh_t·(1 − h_t²); dW_ho += Σ dz_o h_tᵀ, dW_hh += Σ dz_t (cont_t h_{t−1})ᵀ,
    dW_xh += Σ dz_t x_tᵀ, dx_t = W_xhᵀ dz_t, and the biases sum their dz.
    """

    def _param_shapes(self, p):
        H, wf, bf = self.H, p.weight_filler, p.bias_filler
        shapes = [((H, self.K), wf), ((H,), bf)]
        if self.static:
            shapes.append(((H, self.Ks), wf))
        return shapes + [((H, H), wf), ((H, H), wf), ((H,), bf)]

    def _reshape_more(self, T, N, H):
        if not hasattr(self, "_h"):
            self._h = self.make_blob((0,))
        self._h.reshape((T, N, H))

    def _hidden(self, ops, top, mutable=True):
        return ops.data(self._h, mutable)

    def _begin(self, ops, bottom):
        pass

    def _step(self, ops, t, pre_t, cont_t, h_t):
        ops.apply(_tanh, pre_t, out=h_t)

    def _finish(self, ops, top, hs):
        T, N, H = self.T, self.N, self.H
        o = ops.data(top[0])
        w_ho, b_o = ops.data(self.blobs[self._rec + 1], False), ops.data(self.blobs[self._rec + 2], False)
        ops.gemm(False, True, T * N, H, H, 1.0, hs, w_ho, 0.0, o)
        ops.add_rows(o, b_o)
        ops.apply(_tanh, o, out=o)

    def _finals(self, ops, hs):
        NH = self.N * self.H
        return [hs[(self.T - 1) * NH: self.T * NH]]

    def _seed_diffs(self, ops, top, hs, dh):
        T, N, H = self.T, self.N, self.H
        i_ho = self._rec + 1
        dzo = ops.diff(self._h)   # dz_o = do·(1 − o²), kept in the hidden blob's diff
        ops.apply(_tanh_grad, ops.diff(top[0], False), ops.data(top[0], False), out=dzo)
        if self.param_propagate_down[i_ho]:
            ops.gemm(True, False, H, H, T * N, 1.0, dzo, hs, 1.0, ops.diff(self.blobs[i_ho]))
        if self.param_propagate_down[i_ho + 1]:
            ops.sum_rows(dzo, T * N, H, ops.diff(self.blobs[i_ho + 1]), 1.0)
        ops.gemm(False, False, T * N, H, H, 1.0, dzo, ops.data(self.blobs[i_ho], False), 0.0, dh)

    def _step_back(self, ops, t, pre_t, cont_t, h_t, dh_t, dpre_t):
        ops.apply(_tanh_grad, dh_t, h_t, out=dpre_t)


@register("LSTM")
class LSTMLayer(_Recurrent):
    """LSTM (lstm_layer.cpp, lstm_unit_layer.cpp): the gate pre-activations
    [i; f; o; g]_t = W_hc·(cont_t·h_{t−1}) + W_xc·x_t + b_c [+ W_xc_static·x_static] (4H rows in
    that order), then c_t = cont_t·σ(f)·c_{t−1} + σ(i)·tanh(g), h_t = σ(o)·tanh(c_t), as
    LSTMUnit. Top h (T × N × num_output), with ``expose_hidden`` also h_T and c_T (bottoms
    h_0 and c_0 then, in that order). ``recurrent_param`` as for RNN. Nothing is clipped.

    Blobs, in Caffe's order: W_xc (4H × K), b_c (4H), [W_xc_static (4H × K_static)],
    W_hc (4H × H). Backward: LSTMUnit's per-step gradients (``_lstm_d*``; for a cont of 0 or 1
    they equal Caffe's CPU code, for other values they are the derivative of the forward, as
    Caffe's GPU code computes), then the same products as RNN.
    """
    n_states = 2
    gates = 4

    def _param_shapes(self, p):
        G, wf = self.G, p.weight_filler
        shapes = [((G, self.K), wf), ((G,), p.bias_filler)]
        if self.static:
            shapes.append(((G, self.Ks), wf))
        return shapes + [((G, self.H), wf)]

    def _reshape_more(self, T, N, H):
        if not hasattr(self, "_c"):
            self._c = self.make_blob((0,))
        self._c.reshape((T + 1, N, H))    # c_0 … c_T (data); the running ∂E/∂c (diff)

    def _hidden(self, ops, top, mutable=True):
        return ops.data(top[0], mutable)

    def _begin(self, ops, bottom):
        ops.copy(self._initial(ops, bottom, 1), ops.data(self._c)[:self.N * self.H])

    def _step(self, ops, t, pre_t, cont_t, h_t):
        NH = self.N * self.H
        c = ops.data(self._c)
        ops.unit_fwd(pre_t, c[t * NH: (t + 1) * NH], cont_t, self.H, c[(t + 1) * NH: (t + 2) * NH], h_t)

    def _finish(self, ops, top, hs):
        pass

    def _finals(self, ops, hs):
        T, NH = self.T, self.N * self.H
        return [hs[(T - 1) * NH: T * NH], ops.data(self._c, False)[T * NH: (T + 1) * NH]]

    def _seed_diffs(self, ops, top, hs, dh):
        ops.copy(ops.diff(top[0], False), dh)
        ops.fill(ops.diff(self._c)[:self.N * self.H], 0.0)   # c_T's top diff is ignored (Caffe)

    def _step_back(self, ops, t, pre_t, cont_t, h_t, dh_t, dpre_t):
        NH = self.N * self.H
        c, dc = ops.data(self._c, False), ops.diff(self._c)[:NH]
        ops.unit_bwd(pre_t, c[t * NH: (t + 1) * NH], c[(t + 1) * NH: (t + 2) * NH], cont_t, dc,
                     dh_t, self.H, dpre_t, dc)


@register("LSTMUnit")
class LSTMUnitLayer(_OneCode):
    """LSTMUnit (lstm_unit_layer.cpp): bottoms c_prev (1 × N × H), x (1 × N × 4H, the gate
    pre-activations i, f, o, g), cont (1 × N); tops c, h (1 × N × H):
    c = cont·σ(f)·c_prev + σ(i)·tanh(g), h = σ(o)·tanh(c). Backward to c_prev and x (the
    LSTM layer's per-step formulas); none to cont.
    """
    exact_num_bottom = 3
    exact_num_top = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        who = "LSTMUnit Layer %s" % self.name
        n = bottom[0].shape[1] if len(bottom[0].shape) > 1 else -1
        self.H = bottom[0].shape[2] if len(bottom[0].shape) == 3 else -1
        want = [(1, n, self.H), (1, n, 4 * self.H), (1, n)]
        for i, (b, shape) in enumerate(zip(bottom, want)):
            if b.shape != shape or self.H < 0:
                raise ShapeError("%s: %s has shape %s, expected %s (c_prev 1 × N × H, x 1 × N × "
                                 "4H, cont 1 × N)" % (who, _bottom_label(self, i), b.shape, shape))
        top[0].reshape(bottom[0].shape)
        top[1].reshape(bottom[0].shape)

    def forward_with(self, ops, bottom, top):
        ops.unit_fwd(ops.data(bottom[1], False), ops.data(bottom[0], False), ops.data(bottom[2], False),
                     self.H, ops.data(top[0]), ops.data(top[1]))

    def backward_with(self, ops, top, propagate_down, bottom):
        if propagate_down[2]:
            raise CaffeError("LSTMUnit Layer %s: cannot backpropagate to the sequence indicators "
                             "(cont, %s)" % (self.name, _bottom_label(self, 2)))
        if not (propagate_down[0] or propagate_down[1]):
            return
        ops.unit_bwd(ops.data(bottom[1], False), ops.data(bottom[0], False), ops.data(top[0], False),
                     ops.data(bottom[2], False), ops.diff(top[0], False), ops.diff(top[1], False),
                     self.H, ops.diff(bottom[1]), ops.diff(bottom[0]))
