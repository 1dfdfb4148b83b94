"""Domain Adaptive Hashing losses (Venkateswara et al., CVPR 2017, supplement eqs 5–32).

MMDLoss (eqs 9–13), HashLoss (eqs 5, 15), EntropyLoss (eqs 6, 7, 25, 32), QuantizationLoss
(the ‖u − sgn u‖² term alone) and GradientScaler (DANN's gradient reversal). Defaults follow
the supplement's equations exactly; the authors' code's departures are opt-in parameters
(docs/dah.md, "DAH layers"). Every loss is a sum of closed-form GEMMs: no Python
loops over samples. The math lives in plain functions over NumPy arrays so the GPU path can
share it. sgn(0) is +1, and sgn is a constant in every gradient (supplement §1.2).

GPU: HashLoss and EntropyLoss run their GEMMs through ``gpu.gemm`` (EntropyLoss in float64, as
on the CPU) with elementwise / per-row kernels for the rest; MMDLoss computes the 4·Q squared
distances on the device, the tiny kernel sums and coefficients with the CPU's own function on
the host, and the gradients on the device; labels are checked on a host copy (n values).
"""
import math

import numpy as np
from numba import cuda

from minicaffe import backend, gpu
from minicaffe.errors import CaffeError
from minicaffe.kernels import elementwise
from minicaffe.layer import Layer, NeuronLayer, register
from minicaffe.proto import caffe_pb2


@elementwise(loop=True)
def _minus_sgn(u):
    """u − sgn(u) with sgn(0) = +1 (the quantisation residual; sgn is the constant target)."""
    return u - (1.0 if u >= 0 else -1.0)


@elementwise
def _pair_term(theta, s, similar_weight):
    """Eq 5's term of one pair: w·(log(1 + e^θ) − s·θ), w = similar_weight if s else 1;
    softplus stably as max(θ, 0) + log1p(e^−|θ|), max(θ, 0) = (θ + |θ|)/2."""
    w = 1.0 + (similar_weight - 1.0) * s
    return w * ((theta + abs(theta)) * 0.5 + math.log1p(math.exp(-abs(theta))) - s * theta)


@elementwise
def _pair_grad(theta, s, similar_weight):
    """Eq 15's pair factor dL/dθ = w·(σ(θ) − s), σ as ½·tanh(θ/2) + ½ (no overflow)."""
    w = 1.0 + (similar_weight - 1.0) * s
    return w * (0.5 * math.tanh(0.5 * theta) + 0.5 - s)


def logsumexp(a, axis):
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def _flat(blob, n=None):
    b = blob.data
    return b.reshape(b.shape[0], -1) if b.ndim else b.reshape(1, 1)


def _loss_weight(top):
    return float(top[0].cpu_diff().ravel()[0])


def _set_scalar(blob, value):
    gpu.fill(blob.gpu_data(), value)


def _labels(blob, n, layer, num_classes=None):
    lab = blob.cpu_data().ravel()
    if lab.size != n:
        raise layer.shape_error("label bottom (one label per sample)", blob.shape, (n,))
    li = lab.astype(np.int64)
    if np.any(li != lab):
        raise CaffeError("%s layer %s: labels must be integers" % (layer.type, layer.name))
    if num_classes is not None and li.size and (li.min() < 0 or li.max() >= num_classes):
        raise CaffeError("%s layer %s: labels must lie in [0, num_classes = %d), got %d"
                         % (layer.type, layer.name, num_classes,
                            li.min() if li.min() < 0 else li.max()))
    return li


# ------------------------------------------------------------------------------------------
# MK-MMD

def mmd_pair_distances(u, v):
    """Squared distances of the four pairs of each quadruple w_i = [u_2i-1, u_2i, v_2i-1, v_2i]
    (eq 10), over ⌊min(n_s, n_t)/2⌋ quadruples in batch order: (uu, vv, uv, vu), each (Q,)."""
    q = min(u.shape[0], v.shape[0]) // 2
    ua, ub = u[0:2 * q:2], u[1:2 * q:2]
    va, vb = v[0:2 * q:2], v[1:2 * q:2]
    d = [ua - ub, va - vb, ua - vb, ub - va]
    return d, [np.einsum("ij,ij->i", x, x) for x in d]


def mmd_mean_sq_distance(u, v):
    """Mean squared distance over all pairs i ≠ j of the concatenated batch (DAN's bandwidth),
    in O(n·d): Σ_ij ‖x_i − x_j‖² = 2n Σ‖x_i‖² − 2‖Σ x_i‖²."""
    x = np.concatenate([u, v], 0).astype(np.float64, copy=False)
    n = x.shape[0]
    if n < 2:
        return 1.0
    s = x.sum(0)
    total = 2 * n * np.einsum("ij,ij->", x, x) - 2 * s @ s
    return max(total / (n * n - n), 0.0)


def mmd_kernel_terms(sq, sigmas, dtype):
    """From the quadruples' squared distances ``sq`` = (uu, vv, uv, vu), each (Q,) with Q > 0:
    M of eq 11 with k_m(x, y) = exp(−‖x − y‖²/σ_m), β_m = 1/κ, and the gradient coefficients
    c_pair = Σ_m (2/σ_m)·k_m / (Qκ) (each (Q, 1), in ``dtype``), since
    dk_m(x,y)/dx = −(2/σ_m)·k_m(x,y)·(x − y). Shared by the CPU and GPU paths."""
    q = sq[0].shape[0]
    sig = np.asarray(sigmas, np.float64)
    kappa = len(sig)
    k = [np.exp(-np.outer(s, 1.0 / sig)) for s in sq]  # each (Q, κ)
    loss = (k[0] + k[1] - k[2] - k[3]).sum() / (q * kappa)
    c = [(kk * (2.0 / sig)).sum(1)[:, None] / (q * kappa) for kk in k]
    return float(loss), [x.astype(dtype, copy=False) for x in c]


def mmd_forward_backward(u, v, sigmas, want_grad=True):
    """Linear-time MK-MMD of eq 11 with k_m(x, y) = exp(−‖x − y‖²/σ_m), β_m = 1/κ:
    M = 1/(Qκ) Σ_m Σ_i [k(u_a,u_b) + k(v_a,v_b) − k(u_a,v_b) − k(u_b,v_a)], and its gradients
    (eqs 12, 13). Returns (M, dM/du, dM/dv)."""
    (duu, dvv, duv, dvu), sq = mmd_pair_distances(u, v)
    q = duu.shape[0]
    du, dv = np.zeros_like(u), np.zeros_like(v)
    if q == 0:
        return 0.0, du, dv
    loss, c = mmd_kernel_terms(sq, sigmas, u.dtype)
    if not want_grad:
        return loss, du, dv
    # eq 12: source gradients
    du[0:2 * q:2] = -c[0] * duu + c[2] * duv
    du[1:2 * q:2] = c[0] * duu + c[3] * dvu
    # eq 13: target gradients
    dv[0:2 * q:2] = -c[1] * dvv - c[3] * dvu
    dv[1:2 * q:2] = c[1] * dvv - c[2] * duv
    return loss, du, dv


@cuda.jit
def _mmd_distances(u, v, pu, pv, q, d, out):
    # out[p·Q + r] = ‖x − y‖² of pair p of quadruple r: (u_a, u_b), (v_a, v_b), (u_a, v_b),
    # (u_b, v_a) with a = 2r, b = 2r + 1 (eq 10) in the pairing's row orders pu, pv
    t = cuda.grid(1)
    while t < 4 * q:
        p = t // q
        r = t - p * q
        if p == 0:
            x, y, xa, ya = u, u, pu[2 * r], pu[2 * r + 1]
        elif p == 1:
            x, y, xa, ya = v, v, pv[2 * r], pv[2 * r + 1]
        elif p == 2:
            x, y, xa, ya = u, v, pu[2 * r], pv[2 * r + 1]
        else:
            x, y, xa, ya = u, v, pu[2 * r + 1], pv[2 * r]
        acc = 0.0
        for e in range(d):
            diff = x[xa * d + e] - y[ya * d + e]
            acc += diff * diff
        out[t] = acc
        t += cuda.gridsize(1)


@cuda.jit
def _mmd_grad(u, v, pu, pv, c, q, d, du, dv):
    # eqs 12–13 for quadruple r, feature e; c holds (c_uu, c_vv, c_uv, c_vu), each (Q,); the
    # pairing's rows are distinct, so each thread writes its own elements
    t = cuda.grid(1)
    while t < q * d:
        r = t // d
        e = t - r * d
        ua, ub = pu[2 * r] * d + e, pu[2 * r + 1] * d + e
        va, vb = pv[2 * r] * d + e, pv[2 * r + 1] * d + e
        duu = u[ua] - u[ub]
        dvv = v[va] - v[vb]
        duv = u[ua] - v[vb]
        dvu = u[ub] - v[va]
        cuu, cvv, cuv, cvu = c[r], c[q + r], c[2 * q + r], c[3 * q + r]
        du[ua] = -cuu * duu + cuv * duv
        du[ub] = cuu * duu + cvu * dvu
        dv[va] = -cvv * dvv - cvu * dvu
        dv[vb] = cvv * dvv - cuv * duv
        t += cuda.gridsize(1)


def _mmd_mean_sq_gpu(u, v, n_u, n_v, d):
    """``mmd_mean_sq_distance`` from device arrays: the sums in float64 on the device, d column
    sums copied back."""
    n = n_u + n_v
    if n < 2:
        return 1.0
    col = gpu.scratch("mmd_col", 2 * d, np.float64)
    gpu.sum_odi(u, n_u, d, 1, col[:d])
    gpu.sum_odi(v, n_v, d, 1, col[d:])
    s = col.copy_to_host()
    s = s[:d] + s[d:]
    total = 2 * n * (gpu.sumsq(u) + gpu.sumsq(v)) - 2 * s @ s
    return max(total / (n * n - n), 0.0)


@register("MMDLoss")
class MMDLossLayer(Layer):
    """MMDLoss — linear-time multi-kernel MMD (supplement eqs 9–11; gradients eqs 12–13).

    Bottoms: source features (n_s × …), target features (n_t × …), each flattened per sample;
    top: scalar (default loss_weight 1: γ of eq 8 is this layer's loss_weight).
    ``mmd_param`` (LayerParameter field 147, transfer-caffe's): ``kernel_num`` κ (5),
    ``kernel_mul`` (2.0), ``fix_gamma`` (false), ``sigma`` (explicit σ_m list, overrides the
    rest), ``bandwidth`` MEAN (DAN: mean squared distance over all pairs of the concatenated
    batch) or MEDIAN (the authors' DAH code: median of the estimator's 4·Q squared distances).
    Without ``sigma``: σ_m = σ_base·kernel_mul^(m − ⌊κ/2⌋), m = 0..κ−1, a constant in the
    gradient; ``fix_gamma`` freezes σ_base after the first batch. Quadruples are taken in batch
    order over ⌊min(n_s, n_t)/2⌋ pairs (``pairing: BATCH_ORDER``, eq 9), or from a random
    pairing drawn per batch (``pairing: RANDOM``, the authors' code — needed with DAH's
    class-ordered source batches, where batch order pairs images of the same class and the MMD
    would push them apart), the same in forward and backward, so the layer passes the gradient
    checker (transfer-caffe's does not). O(n·d) time and memory.
    """
    exact_num_bottom = 2
    exact_num_top = 1
    auto_top_blobs = True
    default_loss_weight = 1.0

    def layer_setup(self, bottom, top):
        p = self.layer_param.mmd_param
        if p.sigma:
            if any(s <= 0 for s in p.sigma):
                raise CaffeError("MMDLoss layer %s: mmd_param.sigma values must be > 0" % self.name)
        elif p.kernel_num < 1 or p.kernel_mul <= 0:
            raise CaffeError("MMDLoss layer %s: mmd_param needs kernel_num >= 1 and "
                             "kernel_mul > 0" % self.name)
        self.fixed_base = None

    def reshape(self, bottom, top):
        if bottom[0].count(1) != bottom[1].count(1):
            raise self.shape_error("target features '%s' (per sample)" % self.layer_param.bottom[1],
                                   bottom[1].shape, (bottom[1].shape[0],) + bottom[0].shape[1:])
        top[0].reshape(())

    def sigmas(self, sq, mean_sq):
        """σ_m from ``sq()``, the quadruples' squared distances (MEDIAN), or ``mean_sq()``, the
        mean squared distance over all pairs (MEAN); each is called only when needed."""
        p = self.layer_param.mmd_param
        if p.sigma:
            return np.array(p.sigma, np.float64)
        if self.fixed_base is not None:
            base = self.fixed_base
        else:
            if p.bandwidth == caffe_pb2.MMDParameter.MEDIAN:
                d = sq()
                base = float(np.median(np.concatenate(d))) if d[0].size else 1.0
            else:
                base = mean_sq()
            base = base if base > 0 else 1.0
            if p.fix_gamma:
                self.fixed_base = base
        m = np.arange(p.kernel_num) - p.kernel_num // 2
        return base * float(p.kernel_mul) ** m

    def _pairing(self, n_u, n_v):
        """Row orders for RANDOM pairing (drawn from the global generator, so a gradient check,
        which reseeds before every forward, sees the same pairs), or None for BATCH_ORDER."""
        if self.layer_param.mmd_param.pairing != caffe_pb2.MMDParameter.RANDOM:
            return None
        rng = backend.rng()
        return rng.permutation(n_u), rng.permutation(n_v)

    def forward_cpu(self, bottom, top):
        u, v = _flat(bottom[0]), _flat(bottom[1])
        self._perm = self._pairing(u.shape[0], v.shape[0])
        if self._perm is not None:
            u, v = u[self._perm[0]], v[self._perm[1]]
        self._sig = self.sigmas(lambda: mmd_pair_distances(u, v)[1],
                                lambda: mmd_mean_sq_distance(u, v))
        loss, self._du, self._dv = mmd_forward_backward(u, v, self._sig)
        if self._perm is not None:  # gradients back to the samples' own rows
            self._du[self._perm[0]] = self._du.copy()
            self._dv[self._perm[1]] = self._dv.copy()
        top[0].data[...] = loss

    def backward_cpu(self, top, propagate_down, bottom):
        w = _loss_weight(top)
        for i, g in ((0, self._du), (1, self._dv)):
            if propagate_down[i]:
                bottom[i].diff.reshape(g.shape)[...] = w * g

    def forward_gpu(self, bottom, top):
        u, v = bottom[0].gpu_data(False), bottom[1].gpu_data(False)
        n_u, n_v = (bottom[0].shape[0], bottom[1].shape[0]) if bottom[0].num_axes else (1, 1)
        d = u.size // max(n_u, 1)
        q = min(n_u, n_v) // 2
        self._perm = self._pairing(n_u, n_v)  # the CPU's draws from the global generator
        pu, pv = self._perm if self._perm is not None else (np.arange(n_u), np.arange(n_v))
        pu, pv = gpu.to_device(pu.astype(np.int64)), gpu.to_device(pv.astype(np.int64))
        dist = gpu.scratch("mmd_dist", 4 * q, np.float64)
        if q:
            _mmd_distances[gpu.grid(4 * q)](u, v, pu, pv, q, d, dist)
        sq = list(dist.copy_to_host().reshape(4, q))  # 4·Q numbers
        self._sig = self.sigmas(lambda: sq, lambda: _mmd_mean_sq_gpu(u, v, n_u, n_v, d))
        self._du_dev = gpu.ensure(getattr(self, "_du_dev", None), u.size, u.dtype)
        self._dv_dev = gpu.ensure(getattr(self, "_dv_dev", None), v.size, v.dtype)
        gpu.fill(self._du_dev, 0.0)
        gpu.fill(self._dv_dev, 0.0)
        loss = 0.0
        if q:
            loss, c = mmd_kernel_terms(sq, self._sig, u.dtype)
            c_dev = gpu.to_device(np.concatenate(c).ravel())
            if d:
                _mmd_grad[gpu.grid(q * d)](u, v, pu, pv, c_dev, q, d, self._du_dev,
                                           self._dv_dev)
        _set_scalar(top[0], loss)

    def backward_gpu(self, top, propagate_down, bottom):
        w = _loss_weight(top)
        for i, g in ((0, self._du_dev), (1, self._dv_dev)):
            if propagate_down[i]:
                gpu.axpby(w, g, 0.0, bottom[i].gpu_diff())

    def get_state(self):
        return None if self.fixed_base is None else {"fixed_base": self.fixed_base}

    def set_state(self, state):   # None: no base fixed yet (what get_state returned)
        self.fixed_base = None if state is None else state.get("fixed_base")


# ------------------------------------------------------------------------------------------
# Supervised hash loss

def hash_loss(u, labels, scale=1.0, similar_weight=1.0, quantization_weight=1.0):
    """Eq 5 over all ordered pairs (i, j), i = j included, with θ_ij = scale·u_iᵀu_j,
    s_ij = [label_i = label_j] and w_ij = similar_weight for similar pairs (1 otherwise):
    L = Σ_ij w_ij (log(1 + e^θ_ij) − s_ij θ_ij) + qw Σ_i ‖u_i − sgn(u_i)‖².
    Gradient (eq 15): dL/du_q = 2·scale·Σ_j w_qj (σ(θ_qj) − s_qj) u_j + 2 qw (u_q − sgn u_q).
    Returns (L, dL/du)."""
    s = (labels[:, None] == labels[None, :]).astype(u.dtype)
    theta = scale * (u @ u.T)
    r = _minus_sgn(u, out=np.empty_like(u))
    terms = _pair_term(theta, s, similar_weight, out=np.empty(theta.shape, np.float64))
    loss = float(terms.sum() + quantization_weight * (r * r).sum())
    g = _pair_grad(theta, s, similar_weight, out=theta)
    grad = (2.0 * scale) * (g @ u) + (2.0 * quantization_weight) * r
    return loss, grad.astype(u.dtype, copy=False)


@register("HashLoss")
class HashLossLayer(Layer):
    """HashLoss — supervised pairwise hash loss with quantisation (supplement eq 5;
    gradient eq 15).

    Bottoms: source codes u (n × d, flattened per sample), source labels (n); top: scalar
    (default loss_weight 1). ``hash_loss_param``: ``scale`` (1.0; the authors' code: 0.5 on
    θ = u_iᵀu_j), ``similar_weight`` (1.0; theirs 10), ``quantization_weight`` (1.0),
    ``normalization`` NONE (eq 5 as written) or BATCH_SIZE (÷ n).
    """
    gradcheck_kink = (0.0, 0.01)  # sgn(u) jumps at 0: checks skip |u| <= 0.01
    exact_num_bottom = 2
    exact_num_top = 1
    auto_top_blobs = True
    default_loss_weight = 1.0

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def reshape(self, bottom, top):
        if bottom[1].count() != bottom[0].shape[0]:
            raise self.shape_error("label bottom '%s'" % self.layer_param.bottom[1],
                                   bottom[1].shape, bottom[0].shape[:1])
        top[0].reshape(())

    def _norm(self, n):
        p = self.layer_param.hash_loss_param
        return float(max(n, 1)) if p.normalization == caffe_pb2.HashLossParameter.BATCH_SIZE else 1.0

    def forward_cpu(self, bottom, top):
        p = self.layer_param.hash_loss_param
        u = _flat(bottom[0])
        lab = _labels(bottom[1], u.shape[0], self)
        loss, self._grad = hash_loss(u, lab, p.scale, p.similar_weight, p.quantization_weight)
        top[0].data[...] = loss / self._norm(u.shape[0])

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise CaffeError("HashLoss layer %s cannot backpropagate to label inputs" % self.name)
        if propagate_down[0]:
            scale = _loss_weight(top) / self._norm(self._grad.shape[0])
            np.multiply(self._grad, scale, out=bottom[0].diff.reshape(self._grad.shape))

    def forward_gpu(self, bottom, top):
        p = self.layer_param.hash_loss_param
        n = bottom[0].shape[0] if bottom[0].num_axes else 1
        u = bottom[0].gpu_data(False)
        d = u.size // max(n, 1)
        lab = gpu.to_device(_labels(bottom[1], n, self).astype(np.int64))
        dt = u.dtype
        theta = gpu.scratch("hash_theta", n * n, dt)
        gpu.gemm(False, True, n, n, d, p.scale, u, u, 0.0, theta)       # θ = scale·U·Uᵀ
        s = gpu.scratch("hash_s", n * n, dt)
        if n:
            _same_label[gpu.grid(n * n)](lab, n, s)
        terms = _pair_term.gpu(theta, s, p.similar_weight,
                               out=gpu.scratch("loss_terms", n * n, np.float64))
        loss = gpu.total(terms)
        _pair_grad.gpu(theta, s, p.similar_weight, out=theta)                # θ → G
        r = _minus_sgn.gpu(u, out=gpu.scratch("hash_r", u.size, dt))
        loss += p.quantization_weight * gpu.sumsq(r)
        self._grad_dev = gpu.ensure(getattr(self, "_grad_dev", None), u.size, dt)
        # eq 15: 2·scale·G·U + 2·qw·(u − sgn u)
        gpu.gemm(False, False, n, d, n, 2.0 * p.scale, theta, u, 0.0, self._grad_dev)
        gpu.axpy(2.0 * p.quantization_weight, r, self._grad_dev)
        self._n = n
        _set_scalar(top[0], loss / self._norm(n))

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise CaffeError("HashLoss layer %s cannot backpropagate to label inputs" % self.name)
        if propagate_down[0]:
            scale = _loss_weight(top) / self._norm(self._n)
            gpu.axpby(scale, self._grad_dev, 0.0, bottom[0].gpu_diff())


@cuda.jit
def _same_label(lab, n, s):
    # s_ij = [label_i = label_j] over the n × n pairs (the host's labels[:, None] == labels)
    t = cuda.grid(1)
    while t < n * n:
        i = t // n
        s[t] = 1.0 if lab[i] == lab[t - i * n] else 0.0
        t += cuda.gridsize(1)


# ------------------------------------------------------------------------------------------
# Unsupervised entropy loss

def entropy_loss(v, u, labels, num_classes, scale=1.0, diversity=0.0):
    """Eq 7 with p_ij of eq 6: A_ik = scale·v_iᵀu_k, p_ij = Σ_{k∈j} e^A_ik / Σ_k e^A_ik,
    H = −(1/n_t) Σ_i Σ_j p_ij log p_ij (0·log 0 = 0; classes absent from the batch have
    p_ij = 0). With p̄_ik = e^A_ik / Σ_k' e^A_ik' and c(k) the class of source k,
    ∂H/∂A_ik = −(1/n_t)·p̄_ik·(log p_i,c(k) − Σ_j p_ij log p_ij), which gives the target
    gradient ∂H/∂v = scale·G·U (eq 32) and the source gradient ∂H/∂u = scale·Gᵀ·V (eq 25).

    ``diversity`` λ > 0 adds −λ·H(p̄) with p̄_j = (1/n_t) Σ_i p_ij, the entropy of the batch's
    mean prediction (information maximisation; not in the supplement): minimising H alone may
    put every target image in a few classes. Its ∂/∂A_ik = (λ/n_t)·p̄_ik·(log p̄_c(k) − d_i),
    d_i = Σ_j p_ij log p̄_j. All in log space with max subtraction. Returns (H, dH/dv, dH/du)."""
    nt = v.shape[0]
    a = scale * (v.astype(np.float64) @ u.astype(np.float64).T)            # (n_t, n_s)
    logz = logsumexp(a, 1)                                                   # (n_t,)
    onehot = np.zeros((u.shape[0], num_classes), bool)
    onehot[np.arange(u.shape[0]), labels] = True
    present = onehot.any(0)
    # log Σ_{k∈j} e^A_ik per present class, by a masked log-sum-exp
    logp = np.full((nt, num_classes), -np.inf)
    for j in np.flatnonzero(present):
        logp[:, j] = logsumexp(a[:, onehot[:, j]], 1) - logz
    p = np.exp(logp)
    plogp = np.where(p > 0, p * np.where(np.isfinite(logp), logp, 0.0), 0.0)
    h = -plogp.sum() / max(nt, 1)
    pbar = np.exp(a - logz[:, None])                                         # (n_t, n_s)
    ent = plogp.sum(1)                                                       # Σ_j p_ij log p_ij
    g = -(pbar * (logp[:, labels] - ent[:, None])) / max(nt, 1)              # ∂H/∂A
    if diversity and nt:
        pm = p.mean(0)                                                       # p̄_j
        lpm = np.log(np.where(pm > 0, pm, 1.0))                              # 0 for an absent j
        h += diversity * float((pm * lpm).sum())                             # − λ·H(p̄)
        d = (p * lpm).sum(1)
        g += diversity * pbar * (lpm[labels] - d[:, None]) / nt
    dv = scale * (g @ u.astype(np.float64))
    du = scale * (g.T @ v.astype(np.float64))
    return float(h), dv.astype(v.dtype, copy=False), du.astype(u.dtype, copy=False)


@register("EntropyLoss")
class EntropyLossLayer(Layer):
    """EntropyLoss — unsupervised target entropy loss (supplement eqs 6–7; gradients eq 25
    for the source codes, eq 32 for the target codes).

    Bottoms: target codes v (n_t × d), source codes u (n_s × d), source labels (n_s); top:
    scalar (default loss_weight 1: η of eq 8). ``entropy_loss_param``: ``num_classes`` C
    (required), ``scale`` (1.0, multiplies the inner products v_iᵀu_k), ``diversity_weight``
    λ (0: eq 7 exactly; λ > 0 subtracts λ·H(p̄), the entropy of the batch's mean prediction,
    see ``entropy_loss``). Target labels are never read. Stable for large-norm codes
    (log-sum-exp with max subtraction).
    """
    exact_num_bottom = 3
    exact_num_top = 1
    auto_top_blobs = True
    default_loss_weight = 1.0

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def layer_setup(self, bottom, top):
        p = self.layer_param.entropy_loss_param
        if not p.HasField("num_classes") or p.num_classes < 1:
            raise CaffeError("EntropyLoss layer %s: entropy_loss_param.num_classes is required"
                             % self.name)
        if p.diversity_weight < 0:
            raise CaffeError("EntropyLoss layer %s: entropy_loss_param.diversity_weight must be "
                             ">= 0, got %g" % (self.name, p.diversity_weight))

    def reshape(self, bottom, top):
        if bottom[0].count(1) != bottom[1].count(1):
            raise self.shape_error("source codes '%s' (per sample)" % self.layer_param.bottom[1],
                                   bottom[1].shape, (bottom[1].shape[0],) + bottom[0].shape[1:])
        if bottom[2].count() != bottom[1].shape[0]:
            raise self.shape_error("source label bottom '%s'" % self.layer_param.bottom[2],
                                   bottom[2].shape, bottom[1].shape[:1])
        top[0].reshape(())

    def forward_cpu(self, bottom, top):
        p = self.layer_param.entropy_loss_param
        v, u = _flat(bottom[0]), _flat(bottom[1])
        lab = _labels(bottom[2], u.shape[0], self, p.num_classes)
        h, self._dv, self._du = entropy_loss(v, u, lab, p.num_classes, p.scale, p.diversity_weight)
        top[0].data[...] = h

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise CaffeError("EntropyLoss layer %s cannot backpropagate to label inputs" % self.name)
        w = _loss_weight(top)
        for i, g in ((0, self._dv), (1, self._du)):
            if propagate_down[i]:
                np.multiply(g, w, out=bottom[i].diff.reshape(g.shape))

    def forward_gpu(self, bottom, top):
        p = self.layer_param.entropy_loss_param
        nt, ns = bottom[0].shape[0], bottom[1].shape[0]
        d = bottom[0].count(1)
        c = p.num_classes
        lab = gpu.to_device(_labels(bottom[2], ns, self, c).astype(np.int64))
        v, u = _as_f64(bottom[0].gpu_data(False), "ent_v"), _as_f64(bottom[1].gpu_data(False),
                                                                   "ent_u")
        a = gpu.scratch("ent_a", nt * ns, np.float64)
        gpu.gemm(False, True, nt, ns, d, p.scale, v, u, 0.0, a)        # A = scale·V·Uᵀ
        logz = gpu.scratch("ent_logz", nt, np.float64)
        logp = gpu.scratch("ent_logp", nt * c, np.float64)
        ent = gpu.scratch("ent_ent", nt, np.float64)
        lam = float(p.diversity_weight) if nt else 0.0
        lpm = gpu.scratch("ent_lpm", c, np.float64)        # log p̄_j (diversity only)
        dot = gpu.scratch("ent_dot", nt, np.float64)       # d_i = Σ_j p_ij log p̄_j
        if nt:
            _row_logsumexp[gpu.grid(nt)](a, ns, logz)
            _class_logp[gpu.grid(nt * c)](a, lab, logz, ns, c, logp)
            if lam:
                _class_mean_log[gpu.grid(c)](logp, nt, c, lpm)
            _row_entropy[gpu.grid(nt)](logp, c, ent, lpm, lam, dot)
        h = -gpu.total(ent) / max(nt, 1)
        if lam:   # + λ Σ_j p̄_j log p̄_j: C numbers, on the host
            lp = lpm.copy_to_host()[:c]
            h += lam * float(np.sum(np.where(lp < 0, np.exp(lp) * lp, 0.0)))
        if nt and ns:  # A → G = ∂H/∂A in place
            _entropy_grad[gpu.grid(nt * ns)](a, lab, logz, logp, ent, ns, c, 1.0 / max(nt, 1),
                                             lpm, lam, dot)
        self._dv_dev = gpu.ensure(getattr(self, "_dv_dev", None), nt * d, np.float64)
        self._du_dev = gpu.ensure(getattr(self, "_du_dev", None), ns * d, np.float64)
        gpu.gemm(False, False, nt, d, ns, p.scale, a, u, 0.0, self._dv_dev)  # eq 32
        gpu.gemm(True, False, ns, d, nt, p.scale, a, v, 0.0, self._du_dev)   # eq 25
        _set_scalar(top[0], h)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise CaffeError("EntropyLoss layer %s cannot backpropagate to label inputs" % self.name)
        w = _loss_weight(top)
        for i, g in ((0, self._dv_dev), (1, self._du_dev)):
            if propagate_down[i]:
                gpu.axpby(w, g, 0.0, bottom[i].gpu_diff())


def _as_f64(x, key):
    """x itself in float64, else a float64 copy (a scratch buffer)."""
    if x.dtype == np.float64:
        return x
    out = gpu.scratch(key, x.size, np.float64)
    gpu.copy(x, out)
    return out


@cuda.jit
def _row_logsumexp(a, cols, out):
    # log Σ_k e^{a_ik} with max subtraction (a non-finite max counts as 0, as ``logsumexp``)
    i = cuda.grid(1)
    while i < out.size:
        m = -math.inf
        for k in range(cols):
            if a[i * cols + k] > m:
                m = a[i * cols + k]
        if not math.isfinite(m):
            m = 0.0
        s = 0.0
        for k in range(cols):
            s += math.exp(a[i * cols + k] - m)
        out[i] = m + math.log(s) if s > 0 else -math.inf
        i += cuda.gridsize(1)


@cuda.jit
def _class_logp(a, lab, logz, ns, c, logp):
    # log p_ij = log Σ_{k ∈ class j} e^{A_ik} − log z_i (−inf for a class absent from the batch)
    t = cuda.grid(1)
    while t < logp.size:
        i = t // c
        j = t - i * c
        m = -math.inf
        for k in range(ns):
            if lab[k] == j and a[i * ns + k] > m:
                m = a[i * ns + k]
        if m == -math.inf:
            logp[t] = -math.inf
        else:
            if not math.isfinite(m):
                m = 0.0
            s = 0.0
            for k in range(ns):
                if lab[k] == j:
                    s += math.exp(a[i * ns + k] - m)
            logp[t] = m + math.log(s) - logz[i]
        t += cuda.gridsize(1)


@cuda.jit
def _class_mean_log(logp, nt, c, lpm):
    # log p̄_j = log (1/n_t) Σ_i p_ij; 0 for a class absent from the batch (p̄_j = 0)
    j = cuda.grid(1)
    while j < c:
        s = 0.0
        for i in range(nt):
            lp = logp[i * c + j]
            if math.isfinite(lp):
                s += math.exp(lp)
        lpm[j] = math.log(s / nt) if s > 0 else 0.0
        j += cuda.gridsize(1)


@cuda.jit
def _row_entropy(logp, c, ent, lpm, lam, dot):
    # Σ_j p_ij log p_ij (0·log 0 = 0); with the diversity term also d_i = Σ_j p_ij log p̄_j
    i = cuda.grid(1)
    while i < ent.size:
        acc = 0.0
        d = 0.0
        for j in range(c):
            lp = logp[i * c + j]
            pr = math.exp(lp)
            if pr > 0 and math.isfinite(lp):
                acc += pr * lp
                if lam != 0.0:
                    d += pr * lpm[j]
        ent[i] = acc
        dot[i] = d
        i += cuda.gridsize(1)


@cuda.jit
def _entropy_grad(a, lab, logz, logp, ent, ns, c, inv_nt, lpm, lam, dot):
    # ∂H/∂A_ik = −p̄_ik·(log p_{i,c(k)} − Σ_j p_ij log p_ij) / n_t, p̄_ik = e^{A_ik − log z_i};
    # the diversity term adds λ·p̄_ik·(log p̄_{c(k)} − d_i) / n_t
    t = cuda.grid(1)
    while t < a.size:
        i = t // ns
        k = t - i * ns
        pbar = math.exp(a[t] - logz[i])
        g = -(pbar * (logp[i * c + lab[k]] - ent[i])) * inv_nt
        if lam != 0.0:
            g += lam * pbar * (lpm[lab[k]] - dot[i]) * inv_nt
        a[t] = g
        t += cuda.gridsize(1)


# ------------------------------------------------------------------------------------------
# Quantisation loss alone

@register("QuantizationLoss")
class QuantizationLossLayer(Layer):
    """QuantizationLoss — Σ_i ‖u_i − sgn(u_i)‖² (the quantisation term of eq 5 on any codes;
    the authors' code also applies it to target codes). Gradient 2(u − sgn u), sgn constant.
    One bottom; scalar top (default loss_weight 1). ``quantization_loss_param.normalization``
    NONE (default) or BATCH_SIZE."""
    gradcheck_kink = (0.0, 0.01)  # sgn(u) jumps at 0: checks skip |u| <= 0.01
    exact_num_bottom = 1
    exact_num_top = 1
    auto_top_blobs = True
    default_loss_weight = 1.0

    def reshape(self, bottom, top):
        top[0].reshape(())

    def _norm(self, n):
        p = self.layer_param.quantization_loss_param
        return float(max(n, 1)) if p.normalization == caffe_pb2.QuantizationLossParameter.BATCH_SIZE else 1.0

    def forward_cpu(self, bottom, top):
        u = bottom[0].data
        self._r = _minus_sgn(u, out=np.empty_like(u))
        n = bottom[0].shape[0] if bottom[0].num_axes else 1
        top[0].data[...] = float((self._r * self._r).sum()) / self._norm(n)

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            n = bottom[0].shape[0] if bottom[0].num_axes else 1
            np.multiply(self._r, 2.0 * _loss_weight(top) / self._norm(n), out=bottom[0].diff)

    def forward_gpu(self, bottom, top):
        u = bottom[0].gpu_data(False)
        self._r_dev = gpu.ensure(getattr(self, "_r_dev", None), u.size, u.dtype)
        _minus_sgn.gpu(u, out=self._r_dev)
        n = bottom[0].shape[0] if bottom[0].num_axes else 1
        _set_scalar(top[0], gpu.sumsq(self._r_dev) / self._norm(n))

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            n = bottom[0].shape[0] if bottom[0].num_axes else 1
            gpu.axpby(2.0 * _loss_weight(top) / self._norm(n), self._r_dev, 0.0,
                      bottom[0].gpu_diff())


# ------------------------------------------------------------------------------------------
# Gradient reversal

def gradient_scaler_coeff(param, iteration):
    """λ_p = 2(u − l)/(1 + e^{−α p}) − (u − l) + l with p = min(1, iter/max_iter)."""
    lo, hi = param.lower_bound, param.upper_bound
    p = min(1.0, float(iteration) / param.max_iter) if param.max_iter > 0 else 1.0
    return 2.0 * (hi - lo) / (1.0 + np.exp(-param.alpha * p)) - (hi - lo) + lo


@register("GradientScaler")
class GradientScalerLayer(NeuronLayer):
    """GradientScaler — DANN's gradient reversal layer: y = x (data shared), dx = −λ_p·dy
    with λ_p of ``gradient_scaler_coeff``. ``gradient_scaler_param { lower_bound (0)
    upper_bound (1) alpha (10) max_iter (1) threshold_iter (0) }`` (field 149, Xlearn's); the
    gradient is 0 until the iteration reaches ``threshold_iter`` (in Xlearn only on the GPU;
    here on both). The solver hands the iteration over explicitly (``Net.set_iteration``)."""

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)
        if top[0] is not bottom[0]:
            top[0].share_data(bottom[0])

    def forward_cpu(self, bottom, top):
        pass

    def coeff(self):
        p = self.layer_param.gradient_scaler_param
        if self.iteration < p.threshold_iter:
            return 0.0
        return float(gradient_scaler_coeff(p, self.iteration))

    def gradcheck_scale(self):
        """The backward is −λ_p times the true gradient: what a finite-difference check
        must expect."""
        return -self.coeff()

    def backward_cpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.multiply(top[0].diff, -self.coeff(), out=bottom[0].diff)

    def forward_gpu(self, bottom, top):
        pass

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            gpu.axpby(-self.coeff(), top[0].gpu_diff(False), 0.0, bottom[0].gpu_diff())
