"""Numba kernels of the vision layers: im2col/col2im (Convolution, Deconvolution) and the
pooling window kernels (Pooling, and LRN through average pooling).

All kernels take C-contiguous arrays and plain Python ints, so each compiles once per dtype.
The leading axes of every image array are parallel (num·channels planes).

- ``im2col(im (N,C,H,W), ..., col (C·kh·kw, N·oh·ow))``: col[(c·kh+i)·kw+j, (n·oh+y)·ow+x] =
  im[n, c, y·sh−ph+i·dh, x·sw−pw+j·dw], 0 outside the image (caffe/util/im2col.cpp, with
  the chunk's images side by side so that one GEMM serves them all).
- ``col2im(col, ..., im)``: the adjoint; **overwrites** im with the scattered sums.
- ``to_rows``: (N, A, D) → (A, N·D), the GEMM layout of a chunk's outputs; ``from_cols``:
  (G, N·D, A/G) → (N, A, D), the forward product's transposed output back to the blob's.
- ``pool_forward(x (P,H,W), kh, kw, sh, sw, ph, pw, is_max, top (P,PH,PW), mask)``:
  MAX scans the window clipped to the image with a strict ``>`` from −FLT_MAX (first maximum
  wins, mask = h·W+w, −1 for an empty window); AVE divides the in-image sum by the window size
  clipped to H+p/W+p only (padding counts, the ceil overflow does not), as pooling_layer.cpp.
- ``pool_backward(top_diff, mask, ..., bottom_diff)``: overwrites bottom_diff; MAX routes
  each top diff to its argmax, AVE spreads top_diff/pool_size over the window's in-image cells.

Call them through ``launch(kernel, work, *args)``: below ``PARALLEL_MIN`` element-operations
it runs the kernel on one thread, since waking the thread pool costs more than small work
(and far more when the cores are shared).

Their GPU twins (``im2col_gpu``, ``col2im_gpu``, ``pool_forward_gpu``, ``pool_backward_gpu``)
follow at the end: the same index maps on flat device arrays, batched over images; a pooled
window's value is one function for both (``_pool_window``). The GPU backward kernels gather
(one thread per bottom element, as Caffe's), so they need no atomics.
"""
import math

import numba
import numpy as np
from numba import cuda, njit, prange

FLT_MAX = float(np.finfo(np.float32).max)

PARALLEL_MIN = 1 << 17

_COL = {}


def launch(kernel, work, *args):
    """``kernel(*args)``, on one thread when ``work`` (element-operations) is small."""
    if work >= PARALLEL_MIN:
        return kernel(*args)
    n = numba.get_num_threads()
    if n == 1:
        return kernel(*args)
    numba.set_num_threads(1)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(n)


def col_buffer(n, dtype, name="col"):
    """A shared scratch buffer (one per name and dtype, as Caffe's per-process col buffer):
    a flat view of at least ``n`` elements, grown as needed and never shrunk."""
    dtype = np.dtype(dtype)
    buf = _COL.get((name, dtype))
    if buf is None or buf.size < n:
        _COL.pop((name, dtype), None)  # free the old one before allocating the larger
        buf = np.empty(max(int(n), 1), dtype)
        _COL[(name, dtype)] = buf
    return buf[:n]


@njit(inline="always")
def _x_range(j, pw, sw, dw, W, ow):
    """The output columns x whose input column x·sw − pw + j·dw lies inside [0, W): one
    range, so the copy loops need no bounds test (and vectorise when sw = 1)."""
    off = j * dw - pw
    lo = 0 if off >= 0 else (-off + sw - 1) // sw
    hi = (W - 1 - off) // sw + 1 if W - 1 - off >= 0 else 0
    return min(lo, ow), max(min(hi, ow), min(lo, ow)), off


@njit(inline="always")
def _u(i):
    # an unsigned index: Numba then emits no negative-index wrap test per element, which
    # kept these copy loops from vectorising (ToyHome conv2 at batch 96: col2im 25 -> 12 ms,
    # im2col 17 -> 9.5, at 1 thread)
    return np.uint64(i)


@njit(parallel=True, nogil=True, cache=True)
def im2col(im, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col):
    # images side by side: one GEMM then covers the whole chunk (one BLAS call, one sync);
    # one task per column row, written front to back, over flat views of both arrays.
    N, C, H, W = im.shape
    cd = oh * ow
    K = col.shape[1]
    imf = im.reshape(im.size)
    colf = col.reshape(col.size)
    for r in prange(C * kh * kw):
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        lo, hi, off = _x_range(j, pw, sw, dw, W, ow)
        for b in range(N):
            plane = (b * C + c) * H * W
            for y in range(oh):
                d = r * K + b * cd + y * ow
                h = y * sh - ph + i * dh
                if h < 0 or h >= H:
                    for x in range(ow):
                        colf[_u(d + x)] = 0
                    continue
                s = plane + h * W + off
                for x in range(lo):
                    colf[_u(d + x)] = 0
                if sw == 1:
                    for x in range(lo, hi):
                        colf[_u(d + x)] = imf[_u(s + x)]
                else:
                    for x in range(lo, hi):
                        colf[_u(d + x)] = imf[_u(s + x * sw)]
                for x in range(hi, ow):
                    colf[_u(d + x)] = 0


@njit(parallel=True, nogil=True, cache=True)
def col2im(col, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, im):
    N, C, H, W = im.shape
    cd = oh * ow
    K = col.shape[1]
    imf = im.reshape(im.size)
    colf = col.reshape(col.size)
    for t in prange(N * C):
        b = t // C
        c = t - b * C
        plane = t * H * W
        for q in range(H * W):
            imf[_u(plane + q)] = 0
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                lo, hi, off = _x_range(j, pw, sw, dw, W, ow)
                for y in range(oh):
                    h = y * sh - ph + i * dh
                    if h < 0 or h >= H:
                        continue
                    s = r * K + b * cd + y * ow
                    d = plane + h * W + off
                    if sw == 1:   # the sums keep their order (i, j, y)
                        for x in range(lo, hi):
                            imf[_u(d + x)] += colf[_u(s + x)]
                    else:
                        for x in range(lo, hi):
                            imf[_u(d + x * sw)] += colf[_u(s + x)]


@njit(parallel=True, nogil=True, cache=True)
def to_rows(src, dst):
    """(N, A, D) → (A, N·D): the layout of a GEMM over a chunk of images."""
    N, A, D = src.shape
    for t in prange(N * A):
        b = t // A
        a = t - b * A
        dst[a, b * D:(b + 1) * D] = src[b, a, :]


@njit(nogil=True, cache=True)
def from_cols(src, bias, dst):
    """(G, N·D, A/G) → (N, A, D), adding ``bias[a]`` (pass a 0-length bias for none): the
    forward product's output, which BLAS computes transposed (``_fwd_gemm``). Serial: it runs
    on the chunk workers, one thread each."""
    N, A, D = dst.shape
    og = src.shape[2]
    has_bias = bias.shape[0] > 0
    for b in range(N):
        for a in range(A):
            g = a // og
            r = a - g * og
            v = bias[a] if has_bias else 0
            for d in range(D):
                dst[b, a, d] = src[g, b * D + d, r] + v


def _pool_window(x, plane, H, W, hs, ws, kh, kw, ph, pw, is_max):
    """(value, argmax) of the window whose corner is (hs, ws), in the plane that starts at
    x[plane] of a flat x: MAX scans it clipped to the plane from −FLT_MAX with a strict ``>``
    (the first maximum wins; −1 for an empty window), AVE divides the in-plane sum by the window
    clipped to H+p / W+p. Written once, compiled for both devices (pool_forward, its GPU twin);
    unsigned indices: Numba then emits no negative-index wrap test."""
    # conditional expressions, not min/max: Numba 0.68 cannot type those in a device function
    if is_max:
        he = hs + kh if hs + kh < H else H
        we = ws + kw if ws + kw < W else W
        hs = hs if hs > 0 else 0
        ws = ws if ws > 0 else 0
        best = -FLT_MAX
        idx = -1
        for h in range(hs, he):
            for w in range(ws, we):
                v = x[np.uint64(plane + h * W + w)]
                if v > best:
                    best = v
                    idx = h * W + w
        return best, idx
    he = hs + kh if hs + kh < H + ph else H + ph
    we = ws + kw if ws + kw < W + pw else W + pw
    size = (he - hs) * (we - ws)
    hs = hs if hs > 0 else 0
    ws = ws if ws > 0 else 0
    he = he if he < H else H
    we = we if we < W else W
    acc = 0.0
    for h in range(hs, he):
        for w in range(ws, we):
            acc += x[np.uint64(plane + h * W + w)]
    return acc / size, -1


_pool_window_cpu = njit(inline="always")(_pool_window)
_pool_window_gpu = cuda.jit(device=True, inline=True)(_pool_window)


@njit(parallel=True, cache=True, error_model="numpy")
def pool_forward(x, kh, kw, sh, sw, ph, pw, is_max, top, mask):
    # flat views (ToyHome pool1 at batch 96: 9.2 -> 8.0 ms with the unsigned indices)
    P, H, W = x.shape
    PH, PW = top.shape[1], top.shape[2]
    xf = x.reshape(x.size)
    tf = top.reshape(top.size)
    mf = mask.reshape(mask.size)
    for p in prange(P):
        for i in range(PH):
            for j in range(PW):
                o = _u((p * PH + i) * PW + j)
                v, idx = _pool_window_cpu(xf, p * H * W, H, W, i * sh - ph, j * sw - pw, kh, kw,
                                          ph, pw, is_max)
                tf[o] = v
                if is_max:   # AVE passes a one-element mask
                    mf[o] = idx


@njit(parallel=True, cache=True, error_model="numpy")
def pool_backward(top_diff, mask, kh, kw, sh, sw, ph, pw, is_max, bottom_diff):
    # flat views and unsigned indices, as pool_forward (ToyHome pool1's MAX backward at batch
    # 96, 1 thread: 0.83 -> 0.40 ms)
    P, H, W = bottom_diff.shape
    PH, PW = top_diff.shape[1], top_diff.shape[2]
    bf = bottom_diff.reshape(bottom_diff.size)
    tf = top_diff.reshape(top_diff.size)
    mf = mask.reshape(mask.size)
    for p in prange(P):
        plane = p * H * W
        for q in range(H * W):
            bf[_u(plane + q)] = 0
        o0 = p * PH * PW
        if is_max:
            for o in range(PH * PW):
                idx = mf[_u(o0 + o)]
                if idx >= 0:
                    bf[_u(plane + idx)] += tf[_u(o0 + o)]
            continue
        for i in range(PH):
            for j in range(PW):
                hs = i * sh - ph
                ws = j * sw - pw
                he = min(hs + kh, H + ph)
                we = min(ws + kw, W + pw)
                g = tf[_u(o0 + i * PW + j)] / ((he - hs) * (we - ws))
                hs = max(hs, 0)
                ws = max(ws, 0)
                he = min(he, H)
                we = min(we, W)
                for h in range(hs, he):
                    for w in range(ws, we):
                        bf[_u(plane + h * W + w)] += g


_LRN_BLOCK = 2048  # pixels per parallel task of the LRN kernels


@njit(inline="always")
def _lrn_term(xf, yf, sf, dyf, i, forward):
    """Element i's term of the LRN window sum: x² forward, dy·y/s backward."""
    if forward:
        v = xf[i]
        return v * v
    return dyf[i] * yf[i] / sf[i]


@njit(parallel=True, cache=True, error_model="numpy")
def lrn_across(x, y, s, p, dy, size, alpha_n, k, beta, coeff, forward, out):
    """ACROSS_CHANNELS LRN of (N, C, D) planes, both ways over one window that slides over the
    channels (add the entering one, drop the leaving one, as lrn_layer.cpp). ``forward``:
    s = k + (α/n)·Σ_window x², p = s^−β, out = y = x·p (``y``, ``dy`` unread). Backward:
    out = dx = dy·p − coeff·x·Σ_window dy·y/s (coeff = 2αβ/n). Scalars in the arrays' dtype
    (float32 math, as Caffe's); flat views and unsigned indices so that the loops over a
    block of pixels vectorise (VGG_CNN_F norm1 at batch 16, 1 thread, tools/time: forward
    52.7 -> 5.2 ms, backward 20.3 -> 6.5 ms)."""
    N, C, D = x.shape
    r = (size - 1) // 2
    nb = (D + _LRN_BLOCK - 1) // _LRN_BLOCK
    xf, yf, sf, pf = x.reshape(x.size), y.reshape(y.size), s.reshape(s.size), p.reshape(p.size)
    dyf, of = dy.reshape(dy.size), out.reshape(out.size)
    one = np.ones(1, x.dtype)[0]
    for t in prange(N * nb):
        n = t // nb
        d0 = (t - n * nb) * _LRN_BLOCK
        L = min(D, d0 + _LRN_BLOCK) - d0
        base = n * C * D + d0
        acc = np.zeros(L, x.dtype)
        for c in range(-r, C):   # the window of channel c is complete once c + r is in
            if c + r < C:
                o = base + (c + r) * D
                for d in range(L):
                    acc[d] += _lrn_term(xf, yf, sf, dyf, _u(o + d), forward)
            if c < 0:
                continue
            if c - r - 1 >= 0:
                o = base + (c - r - 1) * D
                for d in range(L):
                    acc[d] -= _lrn_term(xf, yf, sf, dyf, _u(o + d), forward)
            o = base + c * D
            if not forward:
                for d in range(L):
                    i = _u(o + d)
                    of[i] = dyf[i] * pf[i] - coeff * xf[i] * acc[d]
                continue
            for d in range(L):
                sf[_u(o + d)] = k + alpha_n * acc[d]
            if beta == 0.75:   # AlexNet's β: v^−β as 1/(√v·√√v), ten times faster than pow
                for d in range(L):
                    i = _u(o + d)
                    q = math.sqrt(sf[i])
                    q = one / (q * math.sqrt(q))
                    pf[i] = q
                    of[i] = xf[i] * q
            else:
                for d in range(L):
                    i = _u(o + d)
                    q = sf[i] ** -beta
                    pf[i] = q
                    of[i] = xf[i] * q


# --- GPU twins (numba.cuda, grid-stride over flat arrays) ------------------------------------
# The same index maps as the CPU kernels above, batched over ``n`` images laid out one after
# the other: im (n, C, H, W), col (n, C·kh·kw, oh·ow) (one image's block after the other, for
# cuBLAS's strided-batched GEMM, where the CPU puts the images side by side); pooling planes
# (P, H, W).

@cuda.jit(device=True, inline=True)
def _imin(a, b):
    return a if a < b else b


@cuda.jit
def im2col_gpu(im, n, C, H, W, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col):
    total = n * C * kh * kw * oh * ow
    i = cuda.grid(1)
    while i < total:
        x = i % ow
        t = i // ow
        y = t % oh
        t = t // oh
        j = t % kw
        t = t // kw
        ki = t % kh
        t = t // kh            # t = b·C + c
        h = y * sh - ph + ki * dh
        w = x * sw - pw + j * dw
        if h >= 0 and h < H and w >= 0 and w < W:
            col[i] = im[(t * H + h) * W + w]
        else:
            col[i] = 0
        i += cuda.gridsize(1)


@cuda.jit
def col2im_gpu(col, n, C, H, W, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, im):
    # one thread per image element gathers every column entry that maps onto it (overwrites)
    total = n * C * H * W
    i = cuda.grid(1)
    while i < total:
        w = i % W
        t = i // W
        h = t % H
        t = t // H             # t = b·C + c
        acc = 0.0
        for ki in range(kh):
            hh = h + ph - ki * dh
            if hh >= 0 and hh % sh == 0:
                y = hh // sh
                if y < oh:
                    for j in range(kw):
                        ww = w + pw - j * dw
                        if ww >= 0 and ww % sw == 0:
                            x = ww // sw
                            if x < ow:
                                acc += col[((t * kh + ki) * kw + j) * oh * ow + y * ow + x]
        im[i] = acc
        i += cuda.gridsize(1)


@cuda.jit
def pool_forward_gpu(x, P, H, W, kh, kw, sh, sw, ph, pw, is_max, PH, PW, top, mask):
    total = P * PH * PW
    k = cuda.grid(1)
    while k < total:
        j = k % PW
        t = k // PW
        i = t % PH
        p = t // PH
        v, idx = _pool_window_gpu(x, p * H * W, H, W, i * sh - ph, j * sw - pw, kh, kw, ph,
                                  pw, is_max)
        top[k] = v
        if is_max:
            mask[k] = idx
        k += cuda.gridsize(1)


@cuda.jit
def pool_backward_gpu(top_diff, mask, P, H, W, kh, kw, sh, sw, ph, pw, is_max, PH, PW,
                      bottom_diff):
    # one thread per bottom element gathers from the windows that cover it (overwrites)
    total = P * H * W
    k = cuda.grid(1)
    while k < total:
        w = k % W
        t = k // W
        h = t % H
        p = t // H
        i0 = 0 if h + ph < kh else (h + ph - kh) // sh + 1
        i1 = _imin((h + ph) // sh + 1, PH)
        j0 = 0 if w + pw < kw else (w + pw - kw) // sw + 1
        j1 = _imin((w + pw) // sw + 1, PW)
        g = 0.0
        for i in range(i0, i1):
            for j in range(j0, j1):
                q = (p * PH + i) * PW + j
                if is_max:
                    if mask[q] == h * W + w:
                        g += top_diff[q]
                else:
                    hs = i * sh - ph
                    ws = j * sw - pw
                    he = _imin(hs + kh, H + ph)
                    we = _imin(ws + kw, W + pw)
                    g += top_diff[q] / ((he - hs) * (we - ws))
        bottom_diff[k] = g
        k += cuda.gridsize(1)
