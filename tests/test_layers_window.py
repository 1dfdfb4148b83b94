"""WindowData against a NumPy reference written from window_data_layer.cpp's load_batch.

Small PNGs (Pillow) and a window file in tmp_path. The deterministic geometry (warp and
square, context_pad 0 and 16, the padding, mirroring, the mean indexing) is checked exactly
on files with one foreground and one background window, so every batch is known; the random
parts (which window, mirror) by their counts, labels and reproducibility under a seed.
"""
import math

import numpy as np
import pytest
from PIL import Image

import minicaffe as caffe
from minicaffe.errors import CaffeError
from minicaffe.gradcheck import empty_tops, make_layer
from minicaffe.io import array_to_blobproto
from minicaffe.transformer import resize_linear

SIZES = [(40, 50), (30, 36)]     # (H, W) of image 0 and image 1
FG_BOX, BG_BOX = (5, 6, 30, 25), (10, 2, 35, 29)


def rgb(k):
    h, w = SIZES[k]
    return np.random.default_rng(k).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def windows(tmp_path):
    """Image 0 holds the foreground window (class 2), image 1 the background one; a third
    window (overlap between the thresholds) is dropped."""
    for k in range(2):
        Image.fromarray(rgb(k)).save(str(tmp_path / ("img%d.png" % k)))
    text = ("# 0\nimg0.png\n3\n40\n50\n2\n2 0.8 %d %d %d %d\n4 0.4 1 1 8 8\n"
            "# 1\nimg1.png\n3 30 36\n1\n5 0.1 %d %d %d %d\n" % (FG_BOX + BG_BOX))
    (tmp_path / "windows.txt").write_text(text)
    return str(tmp_path / "windows.txt"), str(tmp_path) + "/"


def window_layer(source, root, batch=4, crop=64, extra="", transform="", phase=caffe.TRAIN):
    text = ('type: "WindowData" name: "win" top: "data" top: "label" window_data_param { '
            'source: "%s" root_folder: "%s" batch_size: %d fg_threshold: 0.5 bg_threshold: 0.3 '
            'fg_fraction: 0.5 %s } transform_param { crop_size: %d %s }'
            % (source, root, batch, extra, crop, transform))
    layer = make_layer(text, phase=phase)
    tops = empty_tops(2, np.float32)
    layer.setup([], tops)
    return layer, tops


def c_round(x):
    x = float(x)
    return int(math.floor(x + 0.5)) if x >= 0 else int(math.ceil(x - 0.5))


def reference(k, box, crop, context_pad, square=False, mirror=False, mean=None, scale=1.0):
    """load_batch for one window of image k, in float32 as Caffe's Dtype arithmetic."""
    f = np.float32
    img = rgb(k)[:, :, ::-1]
    rows, cols = img.shape[:2]
    x1, y1, x2, y2 = box
    size_h = size_w = crop
    pad_h = pad_w = 0
    if context_pad > 0 or square:
        cs = f(crop) / f(crop - 2 * context_pad)
        hh, hw = f(y2 - y1 + 1) / f(2), f(x2 - x1 + 1) / f(2)
        cx, cy = f(x1) + hw, f(y1) + hh
        if square:
            if hh > hw:
                hw = hh
            else:
                hh = hw
        x1, x2 = c_round(cx - hw * cs), c_round(cx + hw * cs)
        y1, y2 = c_round(cy - hh * cs), c_round(cy + hh * cs)
        uh, uw = y2 - y1 + 1, x2 - x1 + 1
        px1, py1, px2 = max(0, -x1), max(0, -y1), max(0, x2 - cols + 1)
        py2 = max(0, y2 - rows + 1)
        x1, x2, y1, y2 = x1 + px1, x2 - px2, y1 + py1, y2 - py2
        sx, sy = f(crop) / f(uw), f(crop) / f(uh)
        size_w, size_h = c_round(f(x2 - x1 + 1) * sx), c_round(f(y2 - y1 + 1) * sy)
        px1, px2, py1 = c_round(f(px1) * sx), c_round(f(px2) * sx), c_round(f(py1) * sy)
        pad_h, pad_w = py1, (px2 if mirror else px1)
        if pad_h + size_h > crop:
            size_h = crop - pad_h
        if pad_w + size_w > crop:
            size_w = crop - pad_w
    warped = resize_linear(np.ascontiguousarray(img[y1:y2 + 1, x1:x2 + 1]), size_h, size_w)
    if mirror:
        warped = warped[:, ::-1]
    out = np.zeros((3, crop, crop), np.float32)
    mean_off = 0 if mean is None else (mean.shape[2] - crop) // 2
    for h in range(warped.shape[0]):
        for w in range(warped.shape[1]):
            for c in range(3):
                pixel = f(warped[h, w, c])
                if mean is None:
                    out[c, h + pad_h, w + pad_w] = pixel * f(scale)
                else:
                    m = mean[c, h + mean_off + pad_h, w + mean_off + pad_w]
                    out[c, h + pad_h, w + pad_w] = (pixel - f(m)) * f(scale)
    return out


@pytest.mark.parametrize("mode,context_pad", [("warp", 0), ("warp", 16), ("square", 0),
                                              ("square", 16)])
def test_geometry_matches_caffe(windows, mode, context_pad):
    layer, (data, label) = window_layer(*windows, extra='context_pad: %d crop_mode: "%s"'
                                        % (context_pad, mode))
    assert data.shape == (4, 3, 64, 64) and label.shape == (4,)
    for _ in range(2):
        layer.forward([], [data, label])
        np.testing.assert_array_equal(label.data, [0, 0, 2, 2])   # background first
        bg = reference(1, BG_BOX, 64, context_pad, mode == "square")
        fg = reference(0, FG_BOX, 64, context_pad, mode == "square")
        for i, want in enumerate([bg, bg, fg, fg]):
            np.testing.assert_array_equal(data.data[i], want)
    if context_pad:   # the grown windows leave the image: zero padding inside the crop
        assert (data.data[0] == 0).all(axis=0).any()
    layer.close()


def test_mirror_flips_window_and_padding(windows):
    caffe.set_random_seed(5)
    layer, (data, label) = window_layer(*windows, extra="context_pad: 16", transform="mirror: true")
    seen = set()
    for _ in range(4):
        layer.forward([], [data, label])
        for i, (k, box) in enumerate([(1, BG_BOX)] * 2 + [(0, FG_BOX)] * 2):
            plain, flipped = (reference(k, box, 64, 16, mirror=m) for m in (False, True))
            if np.array_equal(data.data[i], flipped):
                seen.add(True)
            else:
                np.testing.assert_array_equal(data.data[i], plain)
                seen.add(False)
    assert seen == {True, False}
    layer.close()


def test_mean_file_mean_value_and_scale(windows, tmp_path):
    mean = np.random.default_rng(3).uniform(0, 255, (3, 70, 68)).astype(np.float32)
    mean_path = tmp_path / "mean.binaryproto"
    mean_path.write_bytes(array_to_blobproto(mean[None]).SerializeToString())
    layer, (data, label) = window_layer(*windows, extra="context_pad: 16 scale: 0.5",
                                        transform='mean_file: "%s"' % mean_path)
    layer.forward([], [data, label])
    np.testing.assert_allclose(data.data[0], reference(1, BG_BOX, 64, 16, mean=mean, scale=0.5),
                               rtol=0, atol=1e-4)
    np.testing.assert_allclose(data.data[3], reference(0, FG_BOX, 64, 16, mean=mean, scale=0.5),
                               rtol=0, atol=1e-4)
    layer.close()
    layer, (data, label) = window_layer(*windows, extra="scale: 2",
                                        transform="mean_value: 10 mean_value: 20 mean_value: 30")
    layer.forward([], [data, label])
    img = reference(0, FG_BOX, 64, 0)
    want = (img - np.array([10, 20, 30], np.float32)[:, None, None]) * 2
    np.testing.assert_array_equal(data.data[2], want)
    layer.close()


def test_sampling_counts_labels_seed_and_cache(tmp_path):
    Image.fromarray(rgb(0)).save(str(tmp_path / "img0.png"))
    lines = ["# 0", "img0.png", "3 40 50", "7"]
    lines += ["%d 0.9 %d 2 %d 20" % (c, c, c + 15) for c in (1, 2, 3)]       # fg, classes 1-3
    lines += ["9 0.05 %d 5 %d 30" % (x, x + 10) for x in (0, 10, 20, 30)]  # bg
    (tmp_path / "w.txt").write_text("\n".join(lines) + "\n")

    def batches(seed, extra=""):
        caffe.set_random_seed(seed)
        layer, (data, label) = window_layer(str(tmp_path / "w.txt"), str(tmp_path) + "/",
                                            batch=10, crop=16,
                                            extra="fg_fraction: 0.25 " + extra)
        out = []
        for _ in range(5):
            layer.forward([], [data, label])
            out.append((data.data.copy(), label.data.copy()))
        layer.close()
        return out
    a = batches(1)
    for _, lab in a:   # int(10 * 0.25) = 2 foreground windows, after 8 background ones
        assert (lab[:8] == 0).all() and set(lab[8:]) <= {1, 2, 3}
    assert len({int(v) for _, lab in a for v in lab[8:]}) > 1
    b, c = batches(1), batches(2)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c))
    cached = batches(1, "cache_images: true")
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, cached))


def test_shard_and_state(windows):
    def stream(layer, tops, n):
        out = []
        for _ in range(n):
            layer.forward([], tops)
            out.append(tops[0].data.copy())
        return out
    caffe.set_random_seed(8)
    layer, tops = window_layer(*windows, batch=2, crop=16, transform="mirror: true")
    full = stream(layer, tops, 6)
    layer.close()
    caffe.set_random_seed(8)
    layer, tops = window_layer(*windows, batch=2, crop=16, transform="mirror: true")
    layer.set_shard(1, 2)
    np.testing.assert_array_equal(np.array(stream(layer, tops, 3)), np.array(full[1::2]))
    layer.close()
    caffe.set_random_seed(8)
    layer, tops = window_layer(*windows, batch=2, crop=16, transform="mirror: true")
    stream(layer, tops, 2)
    state = layer.get_state()
    assert layer.position == {"offset": 2}
    layer.close()
    caffe.set_random_seed(0)
    layer, tops = window_layer(*windows, batch=2, crop=16, transform="mirror: true")
    layer.set_state(state)
    np.testing.assert_array_equal(np.array(stream(layer, tops, 4)), np.array(full[2:]))
    layer.close()


def _error(source, root="", extra="", transform="crop_size: 16"):
    text = ('type: "WindowData" name: "win" top: "data" top: "label" window_data_param { '
            'source: "%s" root_folder: "%s" batch_size: 2 %s } transform_param { %s }'
            % (source, root, extra, transform))
    with pytest.raises(CaffeError) as info:
        layer = make_layer(text)
        tops = empty_tops(2, np.float32)
        layer.setup([], tops)
        try:
            layer.forward([], tops)
        finally:
            layer.close()
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("WindowData layer win: "), msg
    return msg


def test_errors_name_the_layer_and_the_file(windows, tmp_path, caplog):
    source, root = windows
    assert "failed to open window file %s" % (tmp_path / "no.txt") in _error(str(tmp_path / "no.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("")
    assert "window file %s is empty" % bad in _error(str(bad))
    bad.write_text("# 0\nimg0.png\n3 40 x\n")
    assert "window file %s line 3: expected width, got 'x'" % bad in _error(str(bad), root)
    bad.write_text("0\nimg0.png\n")
    assert "line 1: expected '# image_index', got '0'" in _error(str(bad), root)
    bad.write_text("# 0\nimg0.png\n3 40 50\n2\n1 0.9 1 1 5 5\n")
    assert "line 5: ended where a class index was expected" in _error(str(bad), root)
    bad.write_text("# 0\nimg0.png\n3 40 50\n1\n0 0.9 1 1 5 5\n")
    assert "line 5: a foreground window" in _error(str(bad), root)
    bad.write_text("# 0\nimg0.png\n3 40 50\n1\n1 0.9 1 1 5 5\n")
    assert "has no background (overlap < bg_threshold 0.5) window" in _error(str(bad), root)
    bad.write_text("# 0\nimg0.png\n1 40 50\n2\n1 0.9 1 1 5 5\n0 0.1 1 1 5 5\n")
    assert "image %simg0.png has 1 channels" % root in _error(str(bad), root)
    bad.write_text("# 3\nimg0.png\n3 40 50\n2\n1 0.9 1 1 5 5\n0 0.1 1 1 5 5\n")
    assert "line 5: image index 3 is not one of the 1 images" in _error(str(bad), root)
    bad.write_text("# 0\nmissing.png\n3 40 50\n2\n1 0.9 1 1 5 5\n0 0.1 1 1 5 5\n")
    msg = _error(str(bad), root)
    assert "window file %s line 2: could not open or find image %smissing.png" % (bad, root) in msg
    msg = _error(str(bad), root, extra="cache_images: true")
    assert "line 2: could not open or find file %smissing.png" % root in msg
    bad.write_text("# 0\nimg0.png\n3 40 50\n2\n1 0.9 45 1 60 5\n0 0.1 45 1 60 5\n")
    assert "line 6: window (45, 1, 60, 5) does not fit its image" in _error(str(bad), root)
    msg = _error(source, root, extra="crop_size: 16", transform="mirror: true")
    assert "transform_param.crop_size must be positive (window_data_param.crop_size" in msg
    assert "crop_mode must be" in _error(source, root, extra='crop_mode: "fit"')
    layer, _ = window_layer(source, root, crop=16, extra="mirror: true")
    layer.close()
    assert "window_data_param.mirror ignored" in caplog.text
    assert "specify either 1 mean_value or as many as channels: 3" in _error(
        source, root, transform="crop_size: 16 mean_value: 1 mean_value: 2")


def test_v1_window_data_net_upgrades(windows, caplog):
    """The upgrade moves crop_size, mirror, mean_file and scale into transform_param; Caffe's
    load_batch still reads window_data_param.scale, so the moved scale is ignored (warned)."""
    source, root = windows
    net = caffe.Net("""
    layers { name: "win" type: WINDOW_DATA top: "data" top: "label"
             window_data_param { source: "%s" root_folder: "%s" batch_size: 2 crop_size: 32
                                 fg_threshold: 0.5 bg_threshold: 0.3 fg_fraction: 0.5
                                 context_pad: 8 scale: 3 } }
    """ % (source, root), caffe.TEST)
    assert "transform_param.scale 3 is ignored" in caplog.text
    out = net.forward()
    np.testing.assert_array_equal(out["label"], [0, 2])
    np.testing.assert_array_equal(out["data"][1], reference(0, FG_BOX, 32, 8))
    net.layers[0].close()
