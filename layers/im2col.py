"""Numba kernels of the vision layers: im2col/col2im (Convolution, Deconvolution) and the
pooling window kernels (Pooling, and LRN through average pooling).

All kernels take C-contiguous arrays and plain Python ints, so each compiles once per dtype.
The leading axis of every image array is parallel (channels, or num·channels planes).

- ``im2col(im (C,H,W), ..., col (C·kh·kw, oh·ow))``: col[(c·kh+i)·kw+j, y·ow+x] =
  im[c, y·sh−ph+i·dh, x·sw−pw+j·dw], 0 outside the image (caffe/util/im2col.cpp).
- ``col2im(col, ..., im)``: the adjoint; **overwrites** im with the scattered sums.
- ``pool_forward(x (P,H,W), kh, kw, sh, sw, ph, pw, is_max, top (P,PH,PW), mask)``:
  MAX scans the window clipped to the image with a strict ``>`` from −FLT_MAX (first maximum
  wins, mask = h·W+w, −1 for an empty window); AVE divides the in-image sum by the window size
  clipped to H+p/W+p only (padding counts, the ceil overflow does not), as pooling_layer.cpp.
- ``pool_backward(top_diff, mask, ..., bottom_diff)``: overwrites bottom_diff; MAX routes
  each top diff to its argmax, AVE spreads top_diff/pool_size over the window's in-image cells.

Call them through ``launch(kernel, work, *args)``: below ``PARALLEL_MIN`` element-operations
it runs the kernel on one thread, since waking the thread pool costs more than small work
(and far more when the cores are shared).
"""
import numba
import numpy as np
from numba import njit, prange

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


def col_buffer(n, dtype):
    """The shared column buffer (one per dtype, as Caffe's per-process col buffer): a flat
    view of at least ``n`` elements, grown as needed and never shrunk."""
    dtype = np.dtype(dtype)
    buf = _COL.get(dtype)
    if buf is None or buf.size < n:
        buf = np.empty(max(int(n), 1), dtype)
        _COL[dtype] = buf
    return buf[:n]


@njit(parallel=True, cache=True)
def im2col(im, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col):
    C, H, W = im.shape
    for c in prange(C):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for y in range(oh):
                    h = y * sh - ph + i * dh
                    base = y * ow
                    if h < 0 or h >= H:
                        for x in range(ow):
                            col[r, base + x] = 0
                    else:
                        for x in range(ow):
                            w = x * sw - pw + j * dw
                            if w >= 0 and w < W:
                                col[r, base + x] = im[c, h, w]
                            else:
                                col[r, base + x] = 0


@njit(parallel=True, cache=True)
def col2im(col, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, im):
    C, H, W = im.shape
    for c in prange(C):
        for h in range(H):
            for w in range(W):
                im[c, h, w] = 0
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for y in range(oh):
                    h = y * sh - ph + i * dh
                    if h < 0 or h >= H:
                        continue
                    base = y * ow
                    for x in range(ow):
                        w = x * sw - pw + j * dw
                        if w >= 0 and w < W:
                            im[c, h, w] += col[r, base + x]


@njit(parallel=True, cache=True, error_model="numpy")
def pool_forward(x, kh, kw, sh, sw, ph, pw, is_max, top, mask):
    P, H, W = x.shape
    PH, PW = top.shape[1], top.shape[2]
    for p in prange(P):
        for i in range(PH):
            for j in range(PW):
                hs = i * sh - ph
                ws = j * sw - pw
                if is_max:
                    he = min(hs + kh, H)
                    we = min(ws + kw, W)
                    hs = max(hs, 0)
                    ws = max(ws, 0)
                    best = -FLT_MAX
                    idx = -1
                    for h in range(hs, he):
                        for w in range(ws, we):
                            v = x[p, h, w]
                            if v > best:
                                best = v
                                idx = h * W + w
                    top[p, i, j] = best
                    mask[p, i, j] = idx
                else:
                    he = min(hs + kh, H + ph)
                    we = min(ws + kw, W + pw)
                    size = (he - hs) * (we - ws)
                    hs = max(hs, 0)
                    ws = max(ws, 0)
                    he = min(he, H)
                    we = min(we, W)
                    s = 0.0
                    for h in range(hs, he):
                        for w in range(ws, we):
                            s += x[p, h, w]
                    top[p, i, j] = s / size


@njit(parallel=True, cache=True, error_model="numpy")
def pool_backward(top_diff, mask, kh, kw, sh, sw, ph, pw, is_max, bottom_diff):
    P, H, W = bottom_diff.shape
    PH, PW = top_diff.shape[1], top_diff.shape[2]
    for p in prange(P):
        for h in range(H):
            for w in range(W):
                bottom_diff[p, h, w] = 0
        for i in range(PH):
            for j in range(PW):
                g = top_diff[p, i, j]
                if is_max:
                    idx = mask[p, i, j]
                    if idx >= 0:
                        bottom_diff[p, idx // W, idx % W] += g
                else:
                    hs = i * sh - ph
                    ws = j * sw - pw
                    he = min(hs + kh, H + ph)
                    we = min(ws + kw, W + pw)
                    g = g / ((he - hs) * (we - ws))
                    hs = max(hs, 0)
                    ws = max(ws, 0)
                    he = min(he, H)
                    we = min(we, W)
                    for h in range(hs, he):
                        for w in range(ws, we):
                            bottom_diff[p, h, w] += g
