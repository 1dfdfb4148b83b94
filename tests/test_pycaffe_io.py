"""pycaffe's caffe.io: Datum and BlobProto conversion, load_image / resize_image / oversample
(Pillow for scikit-image) and the Transformer, against NumPy written from pycaffe's code."""
import numpy as np
import pytest
from PIL import Image

import minicaffe as caffe
from minicaffe import io
from minicaffe.proto import caffe_pb2
from minicaffe.transformer import ImageReadError

# --- Datum and BlobProto -----------------------------------------------------------------------

def test_datum_round_trip_uint8_and_float():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    d = io.array_to_datum(arr, label=7)
    assert (d.channels, d.height, d.width, d.label) == (2, 3, 4, 7)
    assert d.data == arr.tobytes() and not d.float_data
    np.testing.assert_array_equal(io.datum_to_array(d), arr)
    f = np.linspace(-1, 1, 24).reshape(2, 3, 4)
    d = io.array_to_datum(f)
    assert not d.HasField("label") and not d.data   # no label given: none set
    np.testing.assert_allclose(io.datum_to_array(d), f, rtol=1e-6)


def test_encoded_datum_is_decoded_to_bgr(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 200   # red
    Image.fromarray(rgb).save(tmp_path / "r.png")
    d = caffe_pb2.Datum(encoded=True, data=(tmp_path / "r.png").read_bytes())
    chw = io.datum_to_array(d)
    assert chw.shape == (3, 2, 3) and (chw[2] == 200).all() and (chw[:2] == 0).all()


def test_datum_misuse():
    with pytest.raises(ValueError, match="3-D"):
        io.array_to_datum(np.ones((4, 4)))
    with pytest.raises(caffe.ArgumentError, match="holds 3 bytes, expected 4"):
        io.datum_to_array(caffe_pb2.Datum(channels=1, height=2, width=2, data=b"abc"))


def test_blobproto_without_shape_is_a_value_error():
    blob = caffe_pb2.BlobProto()
    blob.data.extend([0.0] * 100)
    with pytest.raises(ValueError, match="no shape"):
        io.blobproto_to_array(blob)
    with pytest.raises(caffe.ModelFileError):   # and a CaffeError the loaders name a file in
        io.blobproto_to_array(blob)
    scalar = caffe_pb2.BlobProto()
    scalar.data.append(123)
    assert io.blobproto_to_array(scalar) == 123


def test_blobprotovector_round_trip():
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((1, 2, 2, 2), np.float32)]
    back = io.blobprotovector_str_to_arraylist(io.arraylist_to_blobprotovector_str(arrays))
    for a, b in zip(arrays, back):
        np.testing.assert_array_equal(a, b)


# --- images ------------------------------------------------------------------------------------

def test_load_image_rgb_gray_alpha(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    img = io.load_image(str(tmp_path / "c.png"))
    assert img.dtype == np.float32 and img.shape == (5, 7, 3)
    np.testing.assert_allclose(img, rgb / 255.0, atol=1e-7)      # RGB order, [0, 1]
    gray = io.load_image(str(tmp_path / "c.png"), color=False)
    ref = (rgb / 255.0) @ np.array([0.2125, 0.7154, 0.0721])     # skimage's rgb2gray
    np.testing.assert_allclose(gray[:, :, 0], ref, atol=1e-6)
    assert gray.shape == (5, 7, 1)
    g = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    as_color = io.load_image(str(tmp_path / "g.png"))
    assert as_color.shape == (4, 4, 3)
    for k in range(3):
        np.testing.assert_allclose(as_color[:, :, k], g / 255.0, atol=1e-7)
    np.testing.assert_allclose(io.load_image(str(tmp_path / "g.png"), False)[:, :, 0], g / 255.0,
                               atol=1e-7)
    rgba = np.dstack([rgb, np.full((5, 7), 10, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_allclose(io.load_image(str(tmp_path / "a.png")), rgb / 255.0, atol=1e-7)
    with pytest.raises(ImageReadError, match="could not open or find"):
        io.load_image(str(tmp_path / "missing.png"))


def test_resize_image_nearest_and_bilinear_against_numpy():
    rng = np.random.default_rng(1)
    im = rng.random((3, 4, 2)).astype(np.float32)
    near = io.resize_image(im, (6, 8), interp_order=0)
    np.testing.assert_array_equal(near, im.repeat(2, 0).repeat(2, 1))   # exact 2x nearest
    # bilinear on a ramp, sampled at pixel centres x' = (x + 0.5)/2 - 0.5: linear inside
    ramp = np.tile(np.arange(8, dtype=np.float32)[None, :, None], (4, 1, 5))   # 5 channels
    up = io.resize_image(ramp, (4, 16))
    centres = (np.arange(16) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(up[2, 1:-1, 3], centres[1:-1], atol=1e-5)
    assert up.shape == (4, 16, 5) and up.dtype == np.float32
    const = io.resize_image(np.full((9, 9, 3), 0.25, np.float32), (4, 5))
    np.testing.assert_allclose(const, 0.25, atol=1e-6)
    # shrinking averages (anti-aliased, as skimage): a 2x2 checkerboard halves to its mean
    board = np.indices((8, 8)).sum(0) % 2
    np.testing.assert_allclose(io.resize_image(board[:, :, None].astype(np.float32), (4, 4)),
                               0.5, atol=0.13)
    with pytest.raises(caffe.ArgumentError, match="interp_order"):
        io.resize_image(im, (2, 2), interp_order=5)


def test_oversample_corners_centre_and_mirrors():
    rng = np.random.default_rng(2)
    ims = [rng.random((6, 7, 3)).astype(np.float32) for _ in range(2)]
    crops = io.oversample(ims, (4, 3))
    assert crops.shape == (20, 4, 3, 3)
    for i, im in enumerate(ims):
        starts = [(0, 0), (0, 4), (2, 0), (2, 4), (1, 2)]   # centre: ((6-4)//2, (7-3)//2)
        for j, (y, x) in enumerate(starts):
            np.testing.assert_array_equal(crops[10 * i + j], im[y:y + 4, x:x + 3])
            np.testing.assert_array_equal(crops[10 * i + 5 + j], im[y:y + 4, x:x + 3][:, ::-1])


# --- Transformer -------------------------------------------------------------------------------

def test_transformer_preprocess_and_deprocess_against_numpy():
    t = io.Transformer({"data": (2, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    mean = np.array([10.0, 20.0, 30.0])
    t.set_mean("data", mean)
    t.set_input_scale("data", 0.5)
    im = np.random.default_rng(3).random((4, 5, 3)).astype(np.float32)
    before = im.copy()
    out = t.preprocess("data", im)
    ref = ((im.transpose(2, 0, 1)[::-1] * 255) - mean[:, None, None]) * 0.5
    np.testing.assert_allclose(out, ref, rtol=1e-5)
    assert out.dtype == np.float32 and out.shape == (3, 4, 5)
    np.testing.assert_array_equal(im, before)   # the caller's image is not scaled in place
    np.testing.assert_allclose(t.deprocess("data", out[None]), im, atol=1e-5)


def test_transformer_resizes_images_and_means():
    t = io.Transformer({"data": (1, 1, 4, 6)})
    t.set_transpose("data", (2, 0, 1))
    t.set_mean("data", np.full((1, 8, 12), 0.5, np.float32))   # elementwise, resized to 4 x 6
    assert t.mean["data"].shape == (1, 4, 6)
    out = t.preprocess("data", np.ones((2, 3, 1), np.float32))
    np.testing.assert_allclose(out, 0.5, atol=1e-6)
    assert out.shape == (1, 4, 6)


def test_transformer_misuse():
    t = io.Transformer({"data": (1, 3, 4, 4)})
    with pytest.raises(caffe.ArgumentError, match="not one of the net inputs"):
        t.preprocess("image", np.zeros((4, 4, 3)))
    with pytest.raises(caffe.ArgumentError, match="3 axes"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(caffe.ArgumentError, match="3 channels"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(ValueError, match="2 mean values"):
        t.set_mean("data", np.zeros(2))
