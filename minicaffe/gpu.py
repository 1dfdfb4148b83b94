"""GPU helpers shared by the layers' GPU code: launch configuration, elementwise kernels,
reductions, scratch buffers and the matrix product.

Everything here works on **flat** Numba device arrays (what ``Blob.gpu_data()`` returns) and
plain Python numbers. Importing this module imports ``numba.cuda`` but touches no driver; the
kernels compile on first use. Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, tests)
the launch sizes shrink, since the simulator runs every GPU thread as a Python thread.

Matrix products (``gemm``) go through cuBLAS via CuPy when it is installed (``cupy.asarray``
of a Numba device array is zero-copy), else through a register-tiled Numba kernel.
``MINICAFFE_GEMM=numba`` forces the Numba kernel.
"""
import os

import numpy as np
from numba import cuda, float32, float64

from . import kernels
from .kernels import MAX_BLOCKS, SIM, THREADS, grid  # noqa: F401  (the launch configuration)


def blocks_for(n):
    """(blocks, threads) with one block per item (reductions), capped; the kernels stride."""
    return max(1, min(MAX_BLOCKS if SIM else 65535, int(n))), THREADS


# --- device memory ---------------------------------------------------------------------------

_SCRATCH = {}


def scratch(key, n, dtype):
    """A cached device buffer of at least ``n`` elements (flat view of exactly ``n``), one per
    ``(key, dtype)``: temporaries that would otherwise be allocated on every call."""
    dtype = np.dtype(dtype)
    buf = _SCRATCH.get((key, dtype))
    if buf is None or buf.size < n:
        buf = cuda.device_array(max(int(n), 1), dtype)
        _SCRATCH[(key, dtype)] = buf
    return buf[:n]


def ensure(buf, n, dtype):
    """``buf`` when it holds exactly ``n`` elements of ``dtype``, else a new device buffer: a
    layer's device state (masks, saved inputs) kept across forward and backward."""
    dtype = np.dtype(dtype)
    if buf is None or buf.size != n or buf.dtype != dtype:
        buf = cuda.device_array(max(int(n), 0), dtype)
    return buf


def empty(n, dtype):
    return cuda.device_array(max(int(n), 0), np.dtype(dtype))


def zeros(n, dtype):
    a = empty(n, dtype)
    fill(a, 0.0)
    return a


def to_device(host):
    return cuda.to_device(np.ascontiguousarray(host))


# --- elementwise -----------------------------------------------------------------------------

@cuda.jit
def _fill(x, v):
    i = cuda.grid(1)
    while i < x.size:
        x[i] = v
        i += cuda.gridsize(1)


@cuda.jit
def _copy(src, dst):
    i = cuda.grid(1)
    while i < dst.size:
        dst[i] = src[i]
        i += cuda.gridsize(1)


@cuda.jit
def _axpby(a, x, b, y):
    # y = a·x + b·y (b == 0 ignores y)
    i = cuda.grid(1)
    while i < y.size:
        if b == 0:
            y[i] = a * x[i]
        else:
            y[i] = a * x[i] + b * y[i]
        i += cuda.gridsize(1)


@cuda.jit
def _scale(x, a):
    i = cuda.grid(1)
    while i < x.size:
        x[i] = x[i] * a
        i += cuda.gridsize(1)


@cuda.jit
def _sign_axpy(a, x, y):
    # y += a·sign(x)  (L1 weight decay)
    i = cuda.grid(1)
    while i < y.size:
        v = x[i]
        if v > 0:
            y[i] += a
        elif v < 0:
            y[i] -= a
        i += cuda.gridsize(1)


def fill(x, value):
    if x.size:
        _fill[grid(x.size)](x, value)


def copy(src, dst):
    """dst[:] = src (same size, device to device)."""
    if dst.size:
        _copy[grid(dst.size)](src, dst)


def axpby(a, x, b, y):
    """y = a·x + b·y; with b = 0, y is only written."""
    if y.size:
        _axpby[grid(y.size)](a, x, b, y)


def axpy(a, x, y):
    axpby(a, x, 1.0, y)


def scale(x, a):
    if x.size and a != 1:
        _scale[grid(x.size)](x, a)


def add(a, b, out):
    kernels.add.gpu(a, b, out=out)


def mul(a, b, out):
    kernels.mul.gpu(a, b, out=out)


def sign_axpy(a, x, y):
    if y.size:
        _sign_axpy[grid(y.size)](a, x, y)


def add_bias(x, b, inner):
    """x viewed as (outer, b.size, inner) += b[None, :, None]."""
    kernels.add.gpu(x, b, out=x, inner=inner)


# --- reductions ------------------------------------------------------------------------------
# Each block reduces a grid-stride share through shared memory; the per-block partials are
# summed on the host in float64, so the result does not depend on scheduling.

@cuda.jit
def _partial(x, y, mode, out):
    # mode 0: Σx, 1: Σ|x|, 2: Σx², 3: Σx·y
    sh = cuda.shared.array(THREADS, float64)
    t = cuda.threadIdx.x
    acc = 0.0
    i = cuda.grid(1)
    while i < x.size:
        v = x[i]
        if mode == 1:
            acc += abs(v)
        elif mode == 2:
            acc += v * v
        elif mode == 3:
            acc += v * y[i]
        else:
            acc += v
        i += cuda.gridsize(1)
    sh[t] = acc
    cuda.syncthreads()
    s = THREADS // 2
    while s > 0:
        if t < s:
            sh[t] += sh[t + s]
        cuda.syncthreads()
        s //= 2
    if t == 0:
        out[cuda.blockIdx.x] = sh[0]


def _reduce(x, y, mode):
    if x.size == 0:
        return 0.0
    blocks, threads = grid(x.size)
    out = scratch("partial", blocks, np.float64)
    _partial[blocks, threads](x, x if y is None else y, mode, out)
    return float(out.copy_to_host().sum())


def asum(x):
    return _reduce(x, None, 1)


def total(x):
    return _reduce(x, None, 0)


def sumsq(x):
    return _reduce(x, None, 2)


def dot(x, y):
    return _reduce(x, y, 3)


@cuda.jit
def _sum_odi(x, outer, dim, inner, alpha, beta, out):
    # out[d] = alpha·Σ_{o,i} x[o, d, i] + beta·out[d]; one block per d (grid-strided)
    sh = cuda.shared.array(THREADS, float64)
    t = cuda.threadIdx.x
    d = cuda.blockIdx.x
    n = outer * inner
    while d < dim:
        acc = 0.0
        j = t
        while j < n:
            o = j // inner
            acc += x[(o * dim + d) * inner + j - o * inner]
            j += THREADS
        sh[t] = acc
        cuda.syncthreads()
        s = THREADS // 2
        while s > 0:
            if t < s:
                sh[t] += sh[t + s]
            cuda.syncthreads()
            s //= 2
        if t == 0:
            if beta == 0:
                out[d] = alpha * sh[0]
            else:
                out[d] = alpha * sh[0] + beta * out[d]
        cuda.syncthreads()
        d += cuda.gridDim.x


def sum_odi(x, outer, dim, inner, out, alpha=1.0, beta=0.0):
    """out[d] = alpha·Σ_{o, i} x[o, d, i] + beta·out[d] for x viewed as (outer, dim, inner):
    bias gradients, per-channel statistics, row sums (outer = 1)."""
    if dim == 0:
        return
    _sum_odi[blocks_for(dim)](x, outer, dim, inner, alpha, beta, out)


# --- matrix products -------------------------------------------------------------------------
# C[b] = alpha·op(A[b])·op(B[b]) + beta·C[b], or with reduce: C = alpha·Σ_b op(A[b])·op(B[b])
# + beta·C. Operands are flat arrays addressed through strides (in elements), so a transpose
# is a swap of strides and a batch stride of 0 broadcasts a matrix (the weights).

GEMM_T = 2 if SIM else 16       # threads per block side
GEMM_R = 4                      # outputs per thread per side
GEMM_BK = 4 if SIM else 16      # depth of a shared tile
GEMM_BM = GEMM_T * GEMM_R       # output tile side


def _make_gemm(nbtype):
    @cuda.jit
    def kernel(a, b, c, m, n, k, nbatch, sab, sam, sak, sbb, sbk, sbn, scb, alpha, beta,
               reduce):
        As = cuda.shared.array((GEMM_BK, GEMM_BM), nbtype)
        Bs = cuda.shared.array((GEMM_BK, GEMM_BM), nbtype)
        acc = cuda.local.array((GEMM_R, GEMM_R), nbtype)
        ar = cuda.local.array(GEMM_R, nbtype)
        br = cuda.local.array(GEMM_R, nbtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * GEMM_T + tx
        col0 = cuda.blockIdx.x * GEMM_BM
        row0 = cuda.blockIdx.y * GEMM_BM
        z = cuda.blockIdx.z
        for i in range(GEMM_R):
            for j in range(GEMM_R):
                acc[i, j] = 0
        b_lo, b_hi = z, z + 1
        if reduce:
            b_lo, b_hi = 0, nbatch
        for bi in range(b_lo, b_hi):
            for k0 in range(0, k, GEMM_BK):
                e = tid
                while e < GEMM_BM * GEMM_BK:
                    r = e // GEMM_BK
                    kk = e - r * GEMM_BK
                    gm = row0 + r
                    gk = k0 + kk
                    if gm < m and gk < k:
                        As[kk, r] = a[bi * sab + gm * sam + gk * sak]
                    else:
                        As[kk, r] = 0
                    e += GEMM_T * GEMM_T
                e = tid
                while e < GEMM_BM * GEMM_BK:
                    kk = e // GEMM_BM
                    cc = e - kk * GEMM_BM
                    gk = k0 + kk
                    gn = col0 + cc
                    if gk < k and gn < n:
                        Bs[kk, cc] = b[bi * sbb + gk * sbk + gn * sbn]
                    else:
                        Bs[kk, cc] = 0
                    e += GEMM_T * GEMM_T
                cuda.syncthreads()
                for kk in range(GEMM_BK):
                    for i in range(GEMM_R):
                        ar[i] = As[kk, ty + i * GEMM_T]
                    for j in range(GEMM_R):
                        br[j] = Bs[kk, tx + j * GEMM_T]
                    for i in range(GEMM_R):
                        for j in range(GEMM_R):
                            acc[i, j] += ar[i] * br[j]
                cuda.syncthreads()
        for i in range(GEMM_R):
            row = row0 + ty + i * GEMM_T
            if row < m:
                for j in range(GEMM_R):
                    col = col0 + tx + j * GEMM_T
                    if col < n:
                        idx = z * scb + row * n + col
                        if beta == 0:
                            c[idx] = alpha * acc[i, j]
                        else:
                            c[idx] = alpha * acc[i, j] + beta * c[idx]
    return kernel


_GEMM = {np.dtype(np.float32): _make_gemm(float32), np.dtype(np.float64): _make_gemm(float64)}


@cuda.jit
def _gemm_simple(a, b, c, m, n, k, nbatch, sab, sam, sak, sbb, sbk, sbn, scb, alpha, beta,
                 reduce):
    # one thread per output element, the same operands and semantics as the tiled kernel
    nz = 1 if reduce else nbatch
    t = cuda.grid(1)
    while t < nz * m * n:
        z = t // (m * n)
        r = t - z * m * n
        i = r // n
        j = r - i * n
        b_lo, b_hi = z, z + 1
        if reduce:
            b_lo, b_hi = 0, nbatch
        acc = 0.0
        for bi in range(b_lo, b_hi):
            for kk in range(k):
                acc += a[bi * sab + i * sam + kk * sak] * b[bi * sbb + kk * sbk + j * sbn]
        idx = z * scb + r
        if beta == 0:
            c[idx] = alpha * acc
        else:
            c[idx] = alpha * acc + beta * c[idx]
        t += cuda.gridsize(1)


# The simulator runs shared and local arrays about a hundred times slower than plain loads, so
# there the products use the one-thread-per-output kernel; tests/gpu/test_gpu_gemm.py runs the
# tiled kernel under the simulator explicitly, and both compile for the device.
GEMM_KERNEL = "simple" if SIM else "tiled"

_cupy = {"checked": False, "module": None}


def cupy_module():
    """CuPy when it is installed and usable with real hardware, else None."""
    if not _cupy["checked"]:
        _cupy["checked"] = True
        if not SIM and os.environ.get("MINICAFFE_GEMM", "").lower() != "numba":
            try:
                import cupy
                _cupy["module"] = cupy
            except Exception:  # not installed, or no matching CUDA runtime
                _cupy["module"] = None
    return _cupy["module"]


def _strides(trans, rows, cols):
    """(row stride, col stride) of op(X) for a row-major X stored as (rows, cols) or, with
    trans, as (cols, rows)."""
    return (1, rows) if trans else (cols, 1)


def gemm(trans_a, trans_b, m, n, k, alpha, a, b, beta, c, batch=1, stride_a=None,
         stride_b=None, stride_c=None, reduce=False, kernel=None):
    """Caffe's caffe_gpu_gemm on flat row-major arrays, optionally batched:
    C[i] (m×n) = alpha·op(A[i]) (m×k)·op(B[i]) (k×n) + beta·C[i] for i < batch, where
    A[i] starts at i·stride_a (default m·k; 0 repeats one matrix) and likewise B and C; with
    ``reduce`` C (one matrix) = alpha·Σ_i op(A[i])·op(B[i]) + beta·C. beta = 0 never reads C.
    ``kernel`` forces the Numba kernel: "tiled" or "simple" (default: cuBLAS when CuPy is
    installed, else ``GEMM_KERNEL``)."""
    if m == 0 or n == 0:
        return
    stride_a = m * k if stride_a is None else stride_a
    stride_b = k * n if stride_b is None else stride_b
    stride_c = (0 if reduce else m * n) if stride_c is None else stride_c
    sam, sak = _strides(trans_a, m, k)
    sbk, sbn = _strides(trans_b, k, n)
    if k == 0:
        if reduce:
            scale(c[:m * n], beta) if beta else fill(c[:m * n], 0.0)
        else:
            for i in range(batch):
                part = c[i * stride_c: i * stride_c + m * n]
                scale(part, beta) if beta else fill(part, 0.0)
        return
    cp = cupy_module() if kernel is None else None
    if cp is not None:
        _cupy_gemm(cp, a, b, c, m, n, k, batch, stride_a, sam, sak, stride_b, sbk, sbn,
                   stride_c, alpha, beta, reduce)
        return
    if (kernel or GEMM_KERNEL) == "simple":
        work = (1 if reduce else batch) * m * n
        _gemm_simple[grid(work)](a, b, c, m, n, k, batch, stride_a, sam, sak, stride_b, sbk,
                                 sbn, stride_c, alpha, beta, bool(reduce))
        return
    kern = _GEMM[np.dtype(c.dtype)]
    zdim = 1 if reduce else batch
    g = (-(-n // GEMM_BM), -(-m // GEMM_BM), zdim)
    kern[g, (GEMM_T, GEMM_T)](a, b, c, m, n, k, batch, stride_a, sam, sak, stride_b, sbk,
                              sbn, stride_c, alpha, beta, bool(reduce))


def _cupy_gemm(cp, a, b, c, m, n, k, batch, sab, sam, sak, sbb, sbk, sbn, scb, alpha, beta,
               reduce):
    isz = np.dtype(c.dtype).itemsize
    st = cp.lib.stride_tricks.as_strided
    A = st(cp.asarray(a), (batch, m, k), (sab * isz, sam * isz, sak * isz))
    B = st(cp.asarray(b), (batch, k, n), (sbb * isz, sbk * isz, sbn * isz))
    cc = cp.asarray(c)
    if reduce:
        # Σ_i A_i·B_i = [A_0 … A_{b-1}] · [B_0; …; B_{b-1}]: one GEMM over a k·batch depth
        prod = cp.matmul(A.transpose(1, 0, 2).reshape(m, batch * k), B.reshape(batch * k, n))
        C = cc[:m * n].reshape(m, n)
    else:
        C = st(cc, (batch, m, n), (scb * isz, n * isz, isz))
        if alpha == 1 and beta == 0 and (scb == m * n or batch == 1):
            cp.matmul(A, B, out=C)
            return
        prod = cp.matmul(A, B)
    if beta == 0:
        cp.multiply(prod, alpha, out=C)
    else:
        C *= beta
        C += prod if alpha == 1 else alpha * prod


def synchronize():
    cuda.synchronize()
