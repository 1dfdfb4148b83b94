"""Vision layers: Convolution, Deconvolution, Pooling, LRN, Crop.

Each layer: Caffe's gradient check in float64, forward values against a plain loop reference
written from the formula (caffe_semantics.md §4), and the edge cases of §8.
"""
import math

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.errors import CaffeError
from minicaffe.gradcheck import GradientChecker, empty_tops, gaussian_blobs, make_layer

FLT_MAX = float(np.finfo(np.float32).max)
GAUSS = 'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" }'


def run(text, shapes=None, bottom=None, ntop=1, dtype=np.float64):
    layer = make_layer(text)
    if bottom is None:
        bottom = gaussian_blobs(shapes, dtype=dtype)
    top = empty_tops(ntop, dtype)
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


def blob(a):
    b = caffe.Blob(np.shape(a), np.float64)
    b.data[...] = a
    return b


# --- references, straight from the formulas -------------------------------------------------
def conv_ref(x, w, b, stride, pad, dil, group):
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dil
    OH = (H + 2 * ph - (dh * (KH - 1) + 1)) // sh + 1
    OW = (W + 2 * pw - (dw * (KW - 1) + 1)) // sw + 1
    y = np.zeros((N, O, OH, OW))
    for n in range(N):
        for o in range(O):
            g = o // (O // group)
            for oy in range(OH):
                for ox in range(OW):
                    s = b[o] if b is not None else 0.0
                    for c in range(Cg):
                        for i in range(KH):
                            for j in range(KW):
                                h, v = oy * sh - ph + i * dh, ox * sw - pw + j * dw
                                if 0 <= h < H and 0 <= v < W:
                                    s += x[n, g * Cg + c, h, v] * w[o, c, i, j]
                    y[n, o, oy, ox] = s
    return y


def deconv_ref(x, w, b, stride, pad, dil, group):
    """Transposed convolution as a scatter: each input pixel adds x·W into the output."""
    N, C, H, W = x.shape
    _, Og, KH, KW = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dil
    OH = sh * (H - 1) + dh * (KH - 1) + 1 - 2 * ph
    OW = sw * (W - 1) + dw * (KW - 1) + 1 - 2 * pw
    y = np.zeros((N, Og * group, OH, OW))
    for n in range(N):
        for c in range(C):
            g = c // (C // group)
            for iy in range(H):
                for ix in range(W):
                    for o in range(Og):
                        for i in range(KH):
                            for j in range(KW):
                                h, v = iy * sh - ph + i * dh, ix * sw - pw + j * dw
                                if 0 <= h < OH and 0 <= v < OW:
                                    y[n, g * Og + o, h, v] += x[n, c, iy, ix] * w[c, o, i, j]
    if b is not None:
        y += b[None, :, None, None]
    return y


def pooled_size(H, k, s, p, ceil=True, clip=None):
    n = (math.ceil if ceil else math.floor)((H + 2 * p - k) / s) + 1
    if (p if clip is None else clip) > 0 and (n - 1) * s >= H + p:
        n -= 1
    return n


def pool_ref(x, k, s, p, mode, ceil=True):
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    N, C, H, W = x.shape
    PH = pooled_size(H, kh, sh, ph, ceil, clip=ph or pw)
    PW = pooled_size(W, kw, sw, pw, ceil, clip=ph or pw)
    y = np.zeros((N, C, PH, PW))
    mask = np.full((N, C, PH, PW), -1)
    for n in range(N):
        for c in range(C):
            for i in range(PH):
                for j in range(PW):
                    hs, ws = i * sh - ph, j * sw - pw
                    cells = [(h, v) for h in range(hs, hs + kh) for v in range(ws, ws + kw)
                             if 0 <= h < H and 0 <= v < W]
                    if mode == "MAX":
                        best = -FLT_MAX
                        for h, v in cells:
                            if x[n, c, h, v] > best:
                                best, mask[n, c, i, j] = x[n, c, h, v], h * W + v
                        y[n, c, i, j] = best
                    else:
                        size = (min(hs + kh, H + ph) - hs) * (min(ws + kw, W + pw) - ws)
                        y[n, c, i, j] = sum(x[n, c, h, v] for h, v in cells) / size
    return y, mask


def lrn_ref(x, size, alpha, beta, k, across):
    alpha, beta, k = (float(np.float32(v)) for v in (alpha, beta, k))  # proto floats
    N, C, H, W = x.shape
    r = (size - 1) // 2
    y = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    if across:
                        ss = sum(x[n, cc, h, w] ** 2 for cc in range(max(0, c - r), min(C, c + r + 1)))
                        scale = k + alpha / size * ss
                    else:
                        ss = sum(x[n, c, hh, ww] ** 2 for hh in range(max(0, h - r), min(H, h + r + 1))
                                 for ww in range(max(0, w - r), min(W, w + r + 1)))
                        scale = 1.0 + alpha / size ** 2 * ss
                    y[n, c, h, w] = x[n, c, h, w] * scale ** -beta
    return y


# --- Convolution ------------------------------------------------------------------------------
def test_conv_forward_group_rect_kernel_stride_pad_bias():
    text = ('type: "Convolution" name: "c" convolution_param { num_output: 4 group: 2 '
            'kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 2 %s } ' % GAUSS)
    layer, b, t = run(text, [(2, 4, 7, 6)])
    w, bias = layer.blobs[0].data, layer.blobs[1].data
    assert w.shape == (4, 2, 3, 2) and bias.shape == (4,)
    ref = conv_ref(b[0].data, w, bias, (2, 1), (1, 2), (1, 1), 2)
    assert t[0].shape == ref.shape == (2, 4, 4, 9)
    np.testing.assert_allclose(t[0].data, ref, rtol=1e-12, atol=1e-12)


def test_conv_forward_dilation_repeated_fields():
    text = ('type: "Convolution" convolution_param { num_output: 6 group: 2 kernel_size: 3 '
            'kernel_size: 2 stride: 2 pad: 1 dilation: 2 %s }' % GAUSS)
    layer, b, t = run(text, [(2, 4, 9, 8)])
    ref = conv_ref(b[0].data, layer.blobs[0].data, layer.blobs[1].data, (2, 2), (1, 1), (2, 2), 2)
    assert t[0].shape == ref.shape == (2, 6, 4, 4)
    np.testing.assert_allclose(t[0].data, ref, rtol=1e-12, atol=1e-12)
    # per-axis dilation
    text = text.replace("dilation: 2", "dilation: 1 dilation: 3")
    layer, b, t = run(text, [(2, 4, 9, 8)])
    ref = conv_ref(b[0].data, layer.blobs[0].data, layer.blobs[1].data, (2, 2), (1, 1), (1, 3), 2)
    np.testing.assert_allclose(t[0].data, ref, rtol=1e-12, atol=1e-12)


def test_conv_1x1_no_bias_float32_and_two_bottoms():
    text = ('type: "Convolution" convolution_param { num_output: 3 kernel_size: 1 bias_term: false '
            'weight_filler { type: "gaussian" } }')
    layer, b, t = run(text, [(2, 4, 3, 5), (2, 4, 3, 5)], ntop=2, dtype=np.float32)
    assert len(layer.blobs) == 1 and layer.blobs[0].dtype == np.float32
    for i in range(2):
        ref = conv_ref(b[i].data.astype(np.float64), layer.blobs[0].data.astype(np.float64),
                       None, (1, 1), (0, 0), (1, 1), 1)
        assert t[i].data.dtype == np.float32
        np.testing.assert_allclose(t[i].data, ref, rtol=1e-4, atol=1e-5)
    # float32 3x3 through the (separate) float32 column buffer
    layer, b, t = run('type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 pad: 1 %s }'
                      % GAUSS, [(1, 3, 4, 4)], dtype=np.float32)
    ref = conv_ref(b[0].data.astype(np.float64), layer.blobs[0].data.astype(np.float64),
                   layer.blobs[1].data.astype(np.float64), (1, 1), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(t[0].data, ref, rtol=1e-4, atol=1e-5)


def test_conv_1d_and_axis():
    layer, b, t = run('type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 '
                      'stride: 2 pad: 1 %s }' % GAUSS, [(2, 3, 7)])
    assert layer.blobs[0].shape == (2, 3, 3) and t[0].shape == (2, 2, 4)
    ref = conv_ref(b[0].data[:, :, None], layer.blobs[0].data[:, :, None], layer.blobs[1].data,
                   (1, 2), (0, 1), (1, 1), 1)[:, :, 0]
    np.testing.assert_allclose(t[0].data, ref, rtol=1e-12, atol=1e-12)
    # channel axis 2: leading axes are batch
    layer, b, t = run('type: "Convolution" convolution_param { num_output: 2 kernel_size: 2 axis: 2 %s }'
                      % GAUSS, [(2, 1, 3, 4, 4)])
    assert t[0].shape == (2, 1, 2, 3, 3)
    ref = conv_ref(b[0].data[:, 0], layer.blobs[0].data, layer.blobs[1].data, (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_allclose(t[0].data[:, 0], ref, rtol=1e-12, atol=1e-12)


def test_conv_gradient_exhaustive():
    layer = make_layer('type: "Convolution" convolution_param { num_output: 4 group: 2 kernel_size: 3 '
                       'stride: 2 pad: 1 dilation: 2 %s }' % GAUSS)
    c = GradientChecker(1e-2, 1e-3)
    c.check_gradient_exhaustive(layer, gaussian_blobs([(1, 4, 5, 4)]), empty_tops(1))
    assert c.checked > 0


def test_conv_gradient_rect_two_bottoms_and_1x1():
    layer = make_layer('type: "Convolution" convolution_param { num_output: 4 group: 2 kernel_h: 3 '
                       'kernel_w: 2 stride_h: 2 stride_w: 1 pad_w: 1 pad_h: 0 %s }' % GAUSS)
    bottom = gaussian_blobs([(2, 4, 6, 5), (2, 4, 6, 5)])
    GradientChecker(1e-2, 1e-3).check_gradient(layer, bottom, empty_tops(2))
    layer = make_layer('type: "Convolution" convolution_param { num_output: 3 kernel_size: 1 %s }' % GAUSS)
    GradientChecker(1e-2, 1e-3).check_gradient(layer, gaussian_blobs([(2, 4, 3, 3)]), empty_tops(1))


def test_conv_param_diffs_accumulate_bottom_diff_overwrites():
    layer, b, t = run('type: "Convolution" convolution_param { num_output: 2 kernel_size: 2 %s }'
                      % GAUSS, [(2, 3, 4, 4)])
    t[0].diff[...] = np.random.default_rng(0).normal(size=t[0].shape)
    b[0].diff[...] = 7.0
    layer.backward(t, [True], b)
    dw1, db1, dx1 = layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy(), b[0].diff.copy()
    layer.backward(t, [True], b)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * dw1)
    np.testing.assert_allclose(layer.blobs[1].diff, 2 * db1)
    np.testing.assert_allclose(b[0].diff, dx1)
    np.testing.assert_allclose(db1, t[0].diff.sum(axis=(0, 2, 3)))


def test_conv_shapes_and_errors():
    # AlexNet conv1: 227 -> 55 with k11 s4
    layer = make_layer('type: "Convolution" convolution_param { num_output: 2 kernel_size: 11 stride: 4 }')
    bottom, top = [caffe.Blob((1, 3, 227, 227))], empty_tops(1, np.float32)
    layer.setup(bottom, top)
    assert top[0].shape == (1, 2, 55, 55)
    assert np.all(layer.blobs[0].data == 0) and np.all(layer.blobs[1].data == 0)  # default fillers

    def setup(text, shape=(1, 6, 5, 5)):
        make_layer(text).setup([caffe.Blob(shape)], empty_tops(1, np.float32))

    with pytest.raises(CaffeError, match="conv_g.*group"):
        setup('name: "conv_g" type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 '
              'group: 4 }')
    with pytest.raises(CaffeError, match="conv_o.*num_output"):
        setup('name: "conv_o" type: "Convolution" convolution_param { num_output: 3 kernel_size: 3 '
              'group: 2 }')
    with pytest.raises(CaffeError, match="not both"):
        setup('type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3 }')
    with pytest.raises(CaffeError, match="once per"):
        setup('type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 kernel_size: 3 '
              'kernel_size: 3 }')
    with pytest.raises(CaffeError, match="num_output"):
        setup('type: "Convolution" convolution_param { kernel_size: 3 }')
    with pytest.raises(CaffeError, match="spatial"):
        setup('type: "Convolution" convolution_param { num_output: 2 kernel_size: 1 }', (1, 2, 3, 3, 3))
    with pytest.raises(CaffeError, match="2D"):
        setup('type: "Convolution" convolution_param { num_output: 2 kernel_h: 1 kernel_w: 1 }', (1, 2, 3))
    with pytest.raises(CaffeError):  # kernel larger than the padded input
        setup('type: "Convolution" convolution_param { num_output: 2 kernel_size: 7 }')


# --- Deconvolution ----------------------------------------------------------------------------
def test_deconv_forward_and_shape():
    text = ('type: "Deconvolution" convolution_param { num_output: 4 group: 2 kernel_h: 3 kernel_w: 2 '
            'stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 0 %s }' % GAUSS)
    layer, b, t = run(text, [(2, 6, 3, 4)])
    assert layer.blobs[0].shape == (6, 2, 3, 2)
    ref = deconv_ref(b[0].data, layer.blobs[0].data, layer.blobs[1].data, (2, 3), (1, 0), (1, 1), 2)
    assert t[0].shape == ref.shape == (2, 4, 2 * 2 + 3 - 2, 3 * 3 + 2)
    np.testing.assert_allclose(t[0].data, ref, rtol=1e-12, atol=1e-12)
    text = ('type: "Deconvolution" convolution_param { num_output: 2 kernel_size: 3 stride: 2 '
            'pad: 1 dilation: 2 %s }' % GAUSS)
    layer, b, t = run(text, [(1, 3, 3, 3)])
    ref = deconv_ref(b[0].data, layer.blobs[0].data, layer.blobs[1].data, (2, 2), (1, 1), (2, 2), 1)
    assert t[0].shape == (1, 2, 7, 7)
    np.testing.assert_allclose(t[0].data, ref, rtol=1e-12, atol=1e-12)


def test_deconv_gradient():
    layer = make_layer('type: "Deconvolution" convolution_param { num_output: 4 group: 2 kernel_size: 3 '
                       'stride: 2 pad: 1 %s }' % GAUSS)
    c = GradientChecker(1e-2, 1e-3)
    c.check_gradient_exhaustive(layer, gaussian_blobs([(1, 2, 2, 3)]), empty_tops(1))
    layer = make_layer('type: "Deconvolution" convolution_param { num_output: 3 kernel_h: 2 kernel_w: 3 '
                       'stride: 1 dilation: 2 %s }' % GAUSS)
    GradientChecker(1e-2, 1e-3).check_gradient(layer, gaussian_blobs([(2, 2, 3, 4)]), empty_tops(1))
    layer = make_layer('type: "Deconvolution" convolution_param { num_output: 3 kernel_size: 1 %s }' % GAUSS)
    GradientChecker(1e-2, 1e-3).check_gradient(layer, gaussian_blobs([(2, 2, 3, 3)]), empty_tops(1))


# --- Pooling ----------------------------------------------------------------------------------
POOL_CASES = [  # (kernel, stride, pad, H, W, round_mode)
    ((3, 3), (2, 2), (0, 0), 6, 7, "CEIL"),    # ceil overflow on both axes
    ((2, 3), (2, 1), (1, 1), 5, 4, "CEIL"),    # pad clipping (H: 4 -> 3 windows)
    ((3, 3), (2, 2), (1, 1), 4, 4, "CEIL"),    # AVE divisor at the borders and overflow
    ((3, 2), (2, 2), (0, 1), 5, 5, "FLOOR"),
    ((2, 2), (1, 1), (1, 0), 3, 4, "CEIL"),    # pad on one axis clips both
]


def pool_text(mode, k, s, p, rnd="CEIL"):
    return ('type: "Pooling" pooling_param { pool: %s kernel_h: %d kernel_w: %d stride_h: %d '
            'stride_w: %d pad_h: %d pad_w: %d round_mode: %s }' % ((mode,) + k + s + p + (rnd,)))


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
def test_pool_forward_against_reference(mode):
    for k, s, p, H, W, rnd in POOL_CASES:
        layer, b, t = run(pool_text(mode, k, s, p, rnd), [(2, 2, H, W)])
        ref, mask = pool_ref(b[0].data, k, s, p, mode, rnd == "CEIL")
        assert t[0].shape == ref.shape, (k, s, p, H, W)
        np.testing.assert_allclose(t[0].data, ref, rtol=1e-13, atol=1e-13)
        if mode == "MAX":
            np.testing.assert_array_equal(layer.mask.reshape(mask.shape), mask)


def test_pool_hand_values():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    # AVE k3 s2 p1 on 4x4 -> 3x3 (ceil); corner divisor 9 (padding counts), last window 2x2 -> 4
    _, _, t = run(pool_text("AVE", (3, 3), (2, 2), (1, 1)), bottom=[blob(x)])
    assert t[0].shape == (1, 1, 3, 3)
    assert t[0].data[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 9)
    assert t[0].data[0, 0, 2, 2] == pytest.approx(15 / 4)
    assert t[0].data[0, 0, 1, 1] == pytest.approx(x[0, 0, 1:4, 1:4].sum() / 9)
    # ceil overflow without pad: 5 -> 3 windows, the last covers 1 cell and divides by 1
    x5 = np.arange(25.0).reshape(1, 1, 5, 5)
    _, _, t = run(pool_text("AVE", (2, 2), (2, 2), (0, 0)), bottom=[blob(x5)])
    assert t[0].shape == (1, 1, 3, 3) and t[0].data[0, 0, 2, 2] == 24.0
    assert t[0].data[0, 0, 0, 2] == pytest.approx((4 + 9) / 2)
    _, _, t = run(pool_text("AVE", (2, 2), (2, 2), (0, 0), "FLOOR"), bottom=[blob(x5)])
    assert t[0].shape == (1, 1, 2, 2)
    # pad clipping: 5 + 2 - 2 over stride 2 -> ceil 4 windows, the 4th starts at H + p: dropped
    _, _, t = run(pool_text("MAX", (2, 2), (2, 2), (1, 1)), bottom=[blob(x5)])
    assert t[0].shape == (1, 1, 3, 3)
    # no pad, no clipping: the last window lies past the image (Caffe: -FLT_MAX, mask -1)
    layer, b, t = run(pool_text("MAX", (1, 1), (3, 3), (0, 0)), bottom=[blob(x5)])
    assert t[0].shape == (1, 1, 3, 3)
    assert t[0].data[0, 0, 2, 2] == -FLT_MAX and layer.mask[0, 2, 2] == -1
    t[0].diff[...] = 1
    layer.backward(t, [True], b)
    assert b[0].diff.sum() == 4 and b[0].diff[0, 0, 3, 3] == 1


def test_pool_max_ties_first_wins_and_mask_top():
    x = np.zeros((1, 2, 4, 4))
    x[0, 1] = [[1, 3, 3, 0], [3, 2, 0, 3], [5, 5, 1, 1], [5, 5, 1, 1]]
    layer, b, t = run('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }',
                      bottom=[blob(x)], ntop=2)
    assert t[1].dtype == np.float64 and t[1].shape == (1, 2, 2, 2)
    np.testing.assert_array_equal(t[1].data[0, 0], [[0, 2], [8, 10]])   # all-zero: first cell
    np.testing.assert_array_equal(t[1].data[0, 1], [[1, 2], [8, 10]])
    np.testing.assert_array_equal(t[0].data[0, 1], [[3, 3], [5, 1]])
    t[0].diff[...] = np.arange(1.0, 9.0).reshape(1, 2, 2, 2)
    b[0].diff[...] = 9
    layer.backward(t, [True], b)
    exp = np.zeros((2, 16))
    exp[0, [0, 2, 8, 10]] = [1, 2, 3, 4]
    exp[1, [1, 2, 8, 10]] = [5, 6, 7, 8]
    np.testing.assert_array_equal(b[0].diff.reshape(2, 16), exp)
    with pytest.raises(CaffeError):  # AVE allows one top only
        run('type: "Pooling" pooling_param { pool: AVE kernel_size: 2 }', [(1, 1, 4, 4)], ntop=2)


def test_pool_global():
    for mode, fn in (("MAX", np.max), ("AVE", np.mean)):
        _, b, t = run('type: "Pooling" pooling_param { pool: %s global_pooling: true }' % mode,
                      [(2, 3, 4, 5)])
        assert t[0].shape == (2, 3, 1, 1)
        np.testing.assert_allclose(t[0].data[..., 0, 0], fn(b[0].data, axis=(2, 3)), rtol=1e-13)


def test_pool_gradients():
    shape = [(2, 2, 5, 4)]
    for k, s, p, H, W, rnd in POOL_CASES[:3]:
        text = pool_text("MAX", k, s, p, rnd)
        GradientChecker(1e-4, 1e-2).check_gradient_exhaustive(make_layer(text), gaussian_blobs([(1, 2, H, W)]),
                                                               empty_tops(1))
        text = pool_text("AVE", k, s, p, rnd)
        GradientChecker(1e-2, 1e-2).check_gradient_exhaustive(make_layer(text), gaussian_blobs([(1, 2, H, W)]),
                                                               empty_tops(1))
    # with the mask top (its gradient is zero)
    layer = make_layer('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }')
    GradientChecker(1e-4, 1e-2).check_gradient(layer, gaussian_blobs(shape), empty_tops(2))
    layer = make_layer('type: "Pooling" pooling_param { pool: AVE global_pooling: true }')
    GradientChecker(1e-2, 1e-2).check_gradient(layer, gaussian_blobs(shape), empty_tops(1))


def test_pool_shapes_and_errors():
    def top_shape(text, shape):
        layer, top = make_layer(text), empty_tops(1, np.float32)
        layer.setup([caffe.Blob(shape)], top)
        return top[0].shape
    # AlexNet pool1: 55 -> 27 (k3 s2, ceil); GoogLeNet pool1 112 -> 56; inception pool k3 s1 p1
    assert top_shape('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }',
                     (1, 2, 55, 55)) == (1, 2, 27, 27)
    assert top_shape('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }',
                     (1, 2, 112, 112)) == (1, 2, 56, 56)
    assert top_shape('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 }',
                     (1, 2, 28, 28)) == (1, 2, 28, 28)
    # with pad and stride 2, Caffe's ceil keeps a last window starting inside the image
    assert top_shape('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }',
                     (1, 2, 112, 112)) == (1, 2, 57, 57)
    assert top_shape('type: "Pooling" pooling_param { pool: AVE kernel_size: 7 stride: 1 }',
                     (1, 2, 7, 7)) == (1, 2, 1, 1)
    with pytest.raises(CaffeError, match="p1.*pad"):
        top_shape('name: "p1" type: "Pooling" pooling_param { pool: MAX kernel_size: 2 pad: 2 }', (1, 1, 5, 5))
    with pytest.raises(CaffeError, match="4 axes"):
        top_shape('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 }', (1, 5, 5))
    with pytest.raises(CaffeError, match="kernel"):
        top_shape('type: "Pooling" pooling_param { pool: MAX }', (1, 1, 5, 5))
    with pytest.raises(CaffeError, match="global_pooling"):
        top_shape('type: "Pooling" pooling_param { pool: MAX global_pooling: true kernel_size: 2 }',
                  (1, 1, 5, 5))
    with pytest.raises(CaffeError, match="pad"):
        top_shape('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 pad: 1 pad_h: 1 pad_w: 1 }',
                  (1, 1, 5, 5))
    layer = make_layer('name: "sp" type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 }')
    bottom, top = gaussian_blobs([(1, 1, 4, 4)]), empty_tops(1)
    layer.setup(bottom, top)
    with pytest.raises(CaffeError, match="sp.*STOCHASTIC"):
        layer.forward(bottom, top)


# --- LRN --------------------------------------------------------------------------------------
@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn_forward(region):
    text = ('type: "LRN" lrn_param { local_size: 3 alpha: 0.7 beta: 0.6 k: 2.0 norm_region: %s }'
            % region)
    _, b, t = run(text, [(2, 5, 4, 3)])
    ref = lrn_ref(b[0].data, 3, 0.7, 0.6, 2.0, region == "ACROSS_CHANNELS")
    np.testing.assert_allclose(t[0].data, ref, rtol=1e-12, atol=1e-14)
    _, b, t = run('type: "LRN" lrn_param { norm_region: %s }' % region, [(1, 7, 5, 5)])  # defaults
    ref = lrn_ref(b[0].data, 5, 1.0, 0.75, 1.0, region == "ACROSS_CHANNELS")
    np.testing.assert_allclose(t[0].data, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn_gradient(region):
    text = ('type: "LRN" lrn_param { local_size: 3 alpha: 0.9 beta: 0.75 k: 1.5 norm_region: %s }'
            % region)
    c = GradientChecker(1e-2, 1e-2)
    c.check_gradient_exhaustive(make_layer(text), gaussian_blobs([(1, 4, 3, 3)]), empty_tops(1))
    assert c.checked > 0
    GradientChecker(1e-2, 1e-2).check_gradient(
        make_layer('type: "LRN" lrn_param { norm_region: %s }' % region),
        gaussian_blobs([(2, 7, 3, 3)]), empty_tops(1))


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 2e-6)])
def test_lrn_across_many_pixel_blocks(dtype, tol):
    """The fused ACROSS_CHANNELS kernel splits the pixels into blocks: check a plane larger
    than one block, forward and backward, against the reference and its analytic gradient;
    in float32 (its scalars then float32, as Caffe's) to float32 precision."""
    x = np.random.default_rng(5).normal(size=(2, 6, 50, 50))  # 2500 pixels > one block
    layer, b, t = run('type: "LRN" lrn_param { local_size: 5 alpha: 0.8 beta: 0.75 k: 1.2 }', [x.shape],
                      dtype=dtype)
    b[0].data[...] = x
    x = b[0].data.astype(np.float64)
    layer.forward(b, t)
    np.testing.assert_allclose(t[0].data, lrn_ref(x, 5, 0.8, 0.75, 1.2, True), rtol=tol / 100
                               if dtype == np.float64 else tol)
    t[0].diff[...] = np.random.default_rng(6).normal(size=x.shape)
    dy = t[0].diff.astype(np.float64)
    layer.backward(t, [True], b)
    # dx = dy·s^-β − (2αβ/n)·x·Σ_window dy·y/s (α, k as the proto's floats hold them)
    a, k = float(np.float32(0.8)), float(np.float32(1.2))
    sq = np.pad(x * x, ((0, 0), (2, 2), (0, 0), (0, 0)))
    s = k + a / 5 * sum(sq[:, i:i + 6] for i in range(5))
    y = x * s ** -0.75
    r = np.pad(dy * y / s, ((0, 0), (2, 2), (0, 0), (0, 0)))
    ref = dy * s ** -0.75 - 2 * a * 0.75 / 5 * x * sum(r[:, i:i + 6] for i in range(5))
    np.testing.assert_allclose(b[0].diff, ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_lrn_errors():
    with pytest.raises(CaffeError, match="norm1.*local_size"):
        run('name: "norm1" type: "LRN" lrn_param { local_size: 4 }', [(1, 5, 3, 3)])
    with pytest.raises(CaffeError, match="4 axes"):
        run('type: "LRN"', [(5, 3, 3)])


# --- Crop -------------------------------------------------------------------------------------
def test_crop_forward_backward():
    x = gaussian_blobs([(2, 3, 6, 7)])[0]
    ref = caffe.Blob((2, 3, 4, 4), np.float64)
    for param, sl in (("", np.s_[:, :, 0:4, 0:4]),
                      ("offset: 1", np.s_[:, :, 1:5, 1:5]),
                      ("offset: 2 offset: 3", np.s_[:, :, 2:6, 3:7]),
                      ("axis: 1 offset: 0 offset: 1 offset: 2", np.s_[:, 0:3, 1:5, 2:6])):
        layer, b, t = run('type: "Crop" crop_param { %s }' % param, bottom=[x, ref])
        np.testing.assert_array_equal(t[0].data, x.data[sl])
        t[0].diff[...] = 1 + np.arange(t[0].count()).reshape(t[0].shape)
        x.diff[...] = 5
        layer.backward(t, [True, False], [x, ref])
        exp = np.zeros(x.shape)
        exp[sl] = t[0].diff
        np.testing.assert_array_equal(x.diff, exp)
    layer = make_layer('type: "Crop" crop_param { axis: 1 offset: 1 }')
    ref3 = caffe.Blob((1, 2, 3, 3), np.float64)
    _, _, t = run('type: "Crop" crop_param { axis: 1 offset: 1 }', bottom=[x, ref3])
    assert t[0].shape == (2, 2, 3, 3)  # axis 0 keeps bottom[0]'s size
    GradientChecker(1e-2, 1e-3).check_gradient_exhaustive(layer, [x, ref3], empty_tops(1), check_bottom=0)
    with pytest.raises(CaffeError, match="out of"):
        run('type: "Crop" crop_param { offset: 3 }', bottom=[x, ref])
    with pytest.raises(CaffeError, match="offset"):
        run('type: "Crop" crop_param { offset: 1 offset: 1 offset: 1 }', bottom=[x, ref])


# --- the parallel kernels ----------------------------------------------------------------------
def test_parallel_path_matches_serial(monkeypatch):
    """Large work runs the kernels on the thread pool: the same numbers as one thread."""
    from minicaffe.layers import im2col as kernels
    cases = [('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 2 %s }'
              % GAUSS, (2, 16, 24, 24)),
             ('type: "Deconvolution" convolution_param { num_output: 4 kernel_size: 4 stride: 2 %s }'
              % GAUSS, (2, 16, 12, 12)),
             ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }', (2, 16, 40, 40)),
             ('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }', (2, 16, 40, 40)),
             ('type: "LRN" lrn_param { norm_region: WITHIN_CHANNEL }', (2, 16, 40, 40)),
             ('type: "LRN" lrn_param { norm_region: ACROSS_CHANNELS }', (2, 16, 50, 50))]
    for text, shape in cases:
        results = []
        for par_min in (1, 1 << 60):
            monkeypatch.setattr(kernels, "PARALLEL_MIN", par_min)
            caffe.set_random_seed(3)
            layer, b, t = run(text, [shape])
            t[0].diff[...] = np.random.default_rng(1).normal(size=t[0].shape)
            layer.backward(t, [True], b)
            results.append([t[0].data.copy(), b[0].diff.copy()] + [p.diff.copy() for p in layer.blobs])
        for a, s in zip(*results):
            np.testing.assert_allclose(a, s, rtol=1e-12, atol=1e-12)


def test_chunk_workers_give_the_bits_of_one(monkeypatch):
    """Convolution and Deconvolution share their images' chunks among threads.map_chunks'
    workers; with small chunks (several waves of CPU_WAVE) two workers give exactly the top,
    the bottom diff and the accumulated weight diff of one."""
    import numba

    from minicaffe import threads
    from minicaffe.layers import vision
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba's pool has one thread here (NUMBA_NUM_THREADS=1): one worker only")
    monkeypatch.setattr(vision, "CPU_COL_LIMIT", 1500)
    seen = set()
    real = threads.map_chunks

    def spy(fn, items):
        return real(lambda w, item: (seen.add(w), fn(w, item))[1], items)
    monkeypatch.setattr(threads, "map_chunks", spy)
    cases = [('type: "Convolution" convolution_param { num_output: 6 kernel_size: 3 pad: 1 '
              'stride: 2 group: 2 %s }' % GAUSS, (20, 4, 11, 9)),
             ('type: "Deconvolution" convolution_param { num_output: 4 kernel_size: 3 stride: 2 '
              '%s }' % GAUSS, (20, 6, 5, 5))]
    before = numba.get_num_threads()
    try:
        for text, shape in cases:
            results = []
            for n in (1, 2):
                numba.set_num_threads(n)
                caffe.set_random_seed(3)
                layer, b, t = run(text, [shape])
                assert len(layer._chunks(vision.CPU_COL_LIMIT, vision.CPU_WAVE)) > vision.CPU_WAVE
                t[0].diff[...] = np.random.default_rng(1).normal(size=t[0].shape)
                layer.backward(t, [True], b)
                layer.backward(t, [True], b)   # the weight diff accumulates across calls
                results.append([t[0].data.copy(), b[0].diff.copy()]
                               + [p.diff.copy() for p in layer.blobs])
            for a, s in zip(*results):
                np.testing.assert_array_equal(a, s)
    finally:
        numba.set_num_threads(before)
    assert seen == {0, 1}


# --- Im2col ----------------------------------------------------------------------------------
def _im2col_reference(x, kh, kw, sh, sw, ph, pw, dh, dw):
    n, c, h, w = x.shape
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    out = np.zeros((n, c * kh * kw, oh, ow))
    for b in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    for yy in range(oh):
                        for xx in range(ow):
                            hh, ww = yy * sh - ph + i * dh, xx * sw - pw + j * dw
                            if 0 <= hh < h and 0 <= ww < w:
                                out[b, (ch * kh + i) * kw + j, yy, xx] = x[b, ch, hh, ww]
    return out


IM2COL = ('type: "Im2col" convolution_param { kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 '
          'pad_h: 1 pad_w: 0 }')
IM2COL_DIL = 'type: "Im2col" convolution_param { kernel_size: 2 stride: 1 pad: 1 dilation: 2 }'


@pytest.mark.parametrize("spec, args", [(IM2COL, (2, 3, 2, 1, 1, 0, 1, 1)),
                                        (IM2COL_DIL, (2, 2, 1, 1, 1, 1, 2, 2))])
def test_im2col_forward_backward_reference(spec, args):
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 6))
    layer = make_layer(spec)
    bottom = gaussian_blobs([x.shape])
    bottom[0].data[...] = x
    top = empty_tops(1)
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    ref = _im2col_reference(x, *args)
    assert top[0].shape == ref.shape
    np.testing.assert_array_equal(top[0].data, ref)
    # backward is the adjoint: <im2col(x), dy> = <x, col2im(dy)>
    dy = np.random.default_rng(1).normal(size=ref.shape)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(np.vdot(bottom[0].diff, x), np.vdot(dy, ref), rtol=1e-12)


def test_im2col_gradient_and_1d():
    for spec in (IM2COL, IM2COL_DIL):
        checker = GradientChecker(1e-2, 1e-3)
        checker.check_gradient(make_layer(spec), gaussian_blobs([(2, 2, 4, 5)]), empty_tops(1))
        assert checker.checked > 0
    layer = make_layer('type: "Im2col" convolution_param { kernel_size: 3 pad: 1 }')
    bottom, top = gaussian_blobs([(2, 2, 5)]), empty_tops(1)
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    ref = _im2col_reference(bottom[0].data[:, :, None, :], 1, 3, 1, 1, 0, 1, 1, 1)
    assert top[0].shape == (2, 6, 5)
    np.testing.assert_array_equal(top[0].data, ref[:, :, 0, :])


def test_im2col_errors_name_the_layer():
    with pytest.raises(CaffeError, match="Im2col layer i2c: .*kernel"):
        make_layer('type: "Im2col" name: "i2c" convolution_param { kernel_size: 0 }').setup(
            gaussian_blobs([(1, 1, 3, 3)]), empty_tops(1))
    with pytest.raises(CaffeError, match="Im2col"):
        make_layer('type: "Im2col" name: "i2c" convolution_param { kernel_size: 5 }').setup(
            gaussian_blobs([(1, 1, 3, 3)]), empty_tops(1))


# --- SPP -------------------------------------------------------------------------------------
def spp_ref(x, height, mode):
    """Per level l: pool_ref with spp_layer.cpp's window (kernel ceil(H/2^l), pad
    (kernel·2^l − H + 1) // 2, stride kernel), flattened and joined along axis 1."""
    N, C, H, W = x.shape
    parts = []
    for level in range(height):
        bins = 2 ** level
        kh, kw = -(-H // bins), -(-W // bins)
        ph, pw = (kh * bins - H + 1) // 2, (kw * bins - W + 1) // 2
        y, _ = pool_ref(x, (kh, kw), (kh, kw), (ph, pw), mode)
        assert y.shape[2:] == (bins, bins)
        parts.append(y.reshape(N, -1))
    return np.concatenate(parts, axis=1)


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
@pytest.mark.parametrize("H, W", [(8, 8), (7, 9), (6, 7)])
def test_spp_forward_backward_reference(mode, H, W):
    spec = 'type: "SPP" spp_param { pyramid_height: 3 pool: %s }' % mode
    layer, b, t = run(spec, [(2, 3, H, W)])
    ref = spp_ref(b[0].data, 3, mode)
    assert t[0].shape == (2, 3 * 21)
    np.testing.assert_allclose(t[0].data, ref, rtol=1e-13, atol=1e-13)
    # the backward is the sum of the levels' pooling backwards
    dy = np.random.default_rng(5).normal(size=t[0].shape)
    t[0].diff[...] = dy
    layer.backward(t, [True], b)
    want = np.zeros(b[0].shape)
    off = 0
    for level in range(3):
        pool = make_layer(layer.pooling_param(level, H, W))
        pb = gaussian_blobs([b[0].shape])
        pb[0].data[...] = b[0].data
        pt = empty_tops(1)
        pool.setup(pb, pt)
        pool.forward(pb, pt)
        n = pt[0].count(1)
        pt[0].diff[...] = dy[:, off:off + n].reshape(pt[0].shape)
        pool.backward(pt, [True], pb)
        want += pb[0].diff
        off += n
    np.testing.assert_allclose(b[0].diff, want, rtol=1e-12, atol=1e-14)


def test_spp_single_level_and_reshape():
    layer, b, t = run('type: "SPP" spp_param { pyramid_height: 1 pool: AVE }', [(2, 3, 4, 5)])
    assert t[0].shape == (2, 3, 1, 1)
    np.testing.assert_allclose(t[0].data[:, :, 0, 0], b[0].data.mean(axis=(2, 3)), rtol=1e-13)
    layer = make_layer('type: "SPP" spp_param { pyramid_height: 2 }')
    bottom, top = gaussian_blobs([(1, 2, 4, 4)]), empty_tops(1)
    layer.setup(bottom, top)
    bottom[0].reshape((1, 2, 6, 5))  # a new size rebuilds the pyramid
    bottom[0].data[...] = np.random.default_rng(2).normal(size=(1, 2, 6, 5))
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, spp_ref(bottom[0].data, 2, "MAX"), rtol=1e-13)


def test_spp_gradient():
    for mode in ("MAX", "AVE"):
        checker = GradientChecker(1e-4, 1e-2)  # test_spp_layer.cpp's
        checker.check_gradient(make_layer('type: "SPP" spp_param { pyramid_height: 2 pool: %s }'
                                          % mode), gaussian_blobs([(2, 2, 5, 4)]), empty_tops(1))
        assert checker.checked == 80


def test_spp_errors_name_the_layer():
    with pytest.raises(CaffeError, match="SPP layer spp: spp_param.pyramid_height"):
        run('type: "SPP" name: "spp"', [(1, 1, 4, 4)])
    with pytest.raises(CaffeError, match="SPP layer spp: pyramid level 2 of a 3×5 bottom: "
                                         "Pooling layer spp/pool2: .*pad"):
        run('type: "SPP" name: "spp" spp_param { pyramid_height: 3 }', [(1, 1, 3, 5)])
    with pytest.raises(CaffeError, match="SPP Layer spp: .*4 axes"):
        run('type: "SPP" name: "spp" spp_param { pyramid_height: 2 }', [(1, 4, 4)])
