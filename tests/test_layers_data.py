"""Data layers (MemoryData, ImageData, Data), the DataTransformer and convert_imageset.

Images are small PNGs written by Pillow in tmp_path with known pixel values; expected values
are written straight from Caffe's formulas. The OpenCV golden values in test_resize_* come from
cv2.resize (OpenCV 4.10, INTER_LINEAR) on the same input.
"""
import gc
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

import minicaffe as caffe
from minicaffe.commands import convert_imageset
from minicaffe.errors import CaffeError
from minicaffe.gradcheck import empty_tops, make_layer
from minicaffe.proto import caffe_pb2
from minicaffe.transformer import DataTransformer, read_image, resize_linear

H, W = 6, 8
TOOL = os.path.join(os.path.dirname(__file__), "..", "tools", "convert_imageset")

try:
    import lmdb  # noqa: F401
    HAVE_LMDB = True
except ImportError:
    HAVE_LMDB = False
needs_lmdb = pytest.mark.skipif(not HAVE_LMDB, reason="the optional lmdb package is not "
                                "installed (pip install lmdb) - Data layer / LMDB not tested")


def rgb_image(i):
    """An H x W RGB image, distinct per i: R = 10 i + x, G = 20 y + 3 i, B = 200 - 7 x - y."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([10 * i + x, 20 * y + 3 * i, 200 - 7 * x - y], -1).astype(np.uint8)


def bgr_chw(rgb):
    return rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)


def make_list(tmp_path, n=5, name="list.txt", sub="imgs", fname="img {}.png", extra=""):
    d = tmp_path / sub
    d.mkdir(exist_ok=True)
    lines = []
    for i in range(n):
        f = fname.format(i)
        Image.fromarray(rgb_image(i)).save(str(d / f))
        lines.append("%s %d" % (f, i))
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n" + extra)
    return str(p), str(d) + "/"


def image_layer(source, root, batch=2, phase=caffe.TEST, extra="", transform=""):
    text = ('type: "ImageData" name: "img" image_data_param { source: "%s" root_folder: "%s" '
            'batch_size: %d %s } %s' % (source, root, batch, extra,
                                        "transform_param { %s }" % transform if transform else ""))
    layer = make_layer(text, phase=phase)
    tops = empty_tops(2, np.float32)
    layer.setup([], tops)
    return layer, tops


def run(layer, tops, n):
    out = []
    for _ in range(n):
        layer.forward([], tops)
        out.append((tops[0].data.copy(), tops[1].data.copy()))
    return out


@pytest.fixture
def images(tmp_path):
    return make_list(tmp_path)


# --- ImageData ---------------------------------------------------------------------------------

def test_imagedata_bgr_values_labels_and_space_in_path(images):
    layer, tops = image_layer(*images, batch=3)
    (data, label), = run(layer, tops, 1)
    assert data.shape == (3, 3, H, W) and data.dtype == np.float32
    assert label.shape == (3,) and label.tolist() == [0, 1, 2]
    for i in range(3):
        np.testing.assert_array_equal(data[i], bgr_chw(rgb_image(i)))
    layer.close()


def test_imagedata_pure_red_is_channel_2(tmp_path):
    red = np.zeros((H, W, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(str(tmp_path / "red.png"))
    (tmp_path / "l.txt").write_text("red.png 7\n")
    layer, tops = image_layer(str(tmp_path / "l.txt"), str(tmp_path) + "/", batch=1)
    (data, label), = run(layer, tops, 1)
    assert (data[0, 2] == 255).all() and (data[0, :2] == 0).all()
    assert label.tolist() == [7]
    layer.close()


def test_imagedata_root_folder_is_a_prefix_and_blank_lines(tmp_path):
    src, root = make_list(tmp_path, n=2, fname="p_{}.png")
    (tmp_path / "l2.txt").write_text("\n  \nimgs/p_1.png 4\n\n")
    layer, tops = image_layer(str(tmp_path / "l2.txt"), str(tmp_path) + "/", batch=1)
    (data, label), = run(layer, tops, 1)
    np.testing.assert_array_equal(data[0], bgr_chw(rgb_image(1)))
    assert label.tolist() == [4]
    layer.close()


def test_imagedata_wraps_around_and_counts_epochs(images):
    layer, tops = image_layer(*images, batch=3)
    batches = run(layer, tops, 3)
    assert [b[1].tolist() for b in batches] == [[0, 1, 2], [3, 4, 0], [1, 2, 3]]
    np.testing.assert_array_equal(batches[1][0][2], bgr_chw(rgb_image(0)))
    assert layer.epoch == 1 and layer.line_id == 4
    layer.close()


def test_imagedata_is_color_false_gives_one_channel(images):
    layer, tops = image_layer(*images, batch=1, extra="is_color: false")
    (data, _), = run(layer, tops, 1)
    assert data.shape == (1, 1, H, W)
    rgb = rgb_image(0).astype(np.int64)
    # OpenCV's imread(IMREAD_GRAYSCALE) of a PNG: libpng's rgb_to_gray weights, truncated
    gray = (9797 * rgb[..., 0] + 19234 * rgb[..., 1] + 3737 * rgb[..., 2]) >> 15
    np.testing.assert_array_equal(data[0, 0], gray)
    layer.close()


def test_imagedata_resize_matches_opencv(images):
    layer, tops = image_layer(*images, batch=1, extra="new_height: 4 new_width: 5")
    (data, _), = run(layer, tops, 1)
    assert data.shape == (1, 3, 4, 5)
    np.testing.assert_array_equal(data[0], resize_linear(rgb_image(0)[:, :, ::-1], 4, 5)
                                  .transpose(2, 0, 1))
    layer.close()


def test_resize_linear_opencv_golden():
    img = ((np.arange(H * W * 3).reshape(H, W, 3) * 37) % 256).astype(np.uint8)
    up = [[0, 65, 146, 215, 110, 132, 155, 50, 119, 95, 9],
          [60, 126, 165, 153, 141, 129, 116, 104, 91, 79, 69],
          [140, 180, 176, 109, 159, 123, 87, 137, 70, 83, 149],
          [220, 159, 139, 181, 107, 118, 129, 54, 96, 163, 229],
          [172, 162, 149, 137, 125, 113, 100, 88, 75, 115, 181],
          [124, 164, 160, 93, 143, 107, 71, 121, 54, 67, 133],
          [204, 143, 123, 165, 91, 102, 113, 38, 80, 147, 213],
          [156, 146, 133, 121, 109, 97, 84, 72, 147, 175, 165],
          [88, 154, 153, 59, 140, 92, 45, 126, 206, 182, 97]]
    down = [[[63, 183, 130, 78, 63], [186, 171, 118, 66, 186], [148, 108, 106, 105, 110],
             [136, 96, 94, 112, 155]],
            [[81, 41, 167, 115, 100], [69, 202, 155, 103, 88], [140, 145, 143, 142, 102],
             [128, 133, 131, 130, 90]],
            [[118, 78, 76, 152, 137], [106, 66, 160, 140, 125], [120, 105, 180, 179, 139],
             [108, 93, 168, 167, 127]]]
    np.testing.assert_array_equal(resize_linear(img, 9, 11)[:, :, 0], up)
    np.testing.assert_array_equal(resize_linear(img, 4, 5).transpose(2, 0, 1), down)


def test_resize_linear_against_plain_reference():
    """cv::resize INTER_LINEAR written as loops straight from OpenCV's resize.cpp."""
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (5, 7, 2), dtype=np.uint8)
    S = np.float32(2048)  # INTER_RESIZE_COEF_SCALE; weights are rounded float32 products
    for oh, ow in ((9, 4), (3, 10), (2, 2)):
        ref = np.zeros((oh, ow, 2), np.int64)
        for dy in range(oh):
            fy = np.float32((dy + 0.5) * (1.0 / (oh / 5)) - 0.5)
            sy = int(np.floor(fy))
            fy = np.float32(fy - np.float32(sy))
            b = [int(np.rint((1 - fy) * S)), int(np.rint(fy * S))]
            for dx in range(ow):
                fx = np.float32((dx + 0.5) * (1.0 / (ow / 7)) - 0.5)
                sx = int(np.floor(fx))
                fx = np.float32(fx - np.float32(sx))
                if sx < 0:
                    fx, sx = np.float32(0), 0
                if sx >= 6:
                    fx, sx = np.float32(0), 6
                a = [int(np.rint((1 - fx) * S)), int(np.rint(fx * S))]
                for c in range(2):
                    rows = []
                    for k in range(2):
                        r = min(max(sy + k, 0), 4)
                        rows.append(int(img[r, sx, c]) * a[0]
                                    + int(img[r, min(sx + 1, 6), c]) * a[1])
                    ref[dy, dx, c] = (((b[0] * (rows[0] >> 4)) >> 16)
                                      + ((b[1] * (rows[1] >> 4)) >> 16) + 2) >> 2
        np.testing.assert_array_equal(resize_linear(img, oh, ow), ref)


def test_imagedata_centre_crop_test_phase(images):
    layer, tops = image_layer(*images, batch=2, transform="crop_size: 4")
    (data, _), = run(layer, tops, 1)
    assert data.shape == (2, 3, 4, 4)
    h_off, w_off = (H - 4) // 2, (W - 4) // 2
    for i in range(2):
        np.testing.assert_array_equal(data[i], bgr_chw(rgb_image(i))[:, h_off:h_off + 4,
                                                                      w_off:w_off + 4])
    layer.close()


def _find_window(item, full, crop):
    for ho in range(full.shape[1] - crop + 1):
        for wo in range(full.shape[2] - crop + 1):
            if np.array_equal(item, full[:, ho:ho + crop, wo:wo + crop]):
                return ho, wo
    raise AssertionError("the item is no crop of its image")


def test_imagedata_random_crop_train_phase(images):
    layer, tops = image_layer(*images, batch=5, phase=caffe.TRAIN, transform="crop_size: 4")
    offsets = set()
    for data, label in run(layer, tops, 4):
        for item, lab in zip(data, label):
            offsets.add(_find_window(item, bgr_chw(rgb_image(int(lab))), 4))
    assert len(offsets) > 3
    assert all(0 <= ho <= H - 4 and 0 <= wo <= W - 4 for ho, wo in offsets)
    layer.close()


@pytest.mark.parametrize("phase", [caffe.TRAIN, caffe.TEST])
def test_imagedata_mirror_is_random_in_both_phases(images, phase):
    layer, tops = image_layer(*images, batch=5, phase=phase, transform="mirror: true")
    flips = []
    for data, label in run(layer, tops, 4):
        for item, lab in zip(data, label):
            img = bgr_chw(rgb_image(int(lab)))
            if np.array_equal(item, img[:, :, ::-1]):
                flips.append(True)
            else:
                np.testing.assert_array_equal(item, img)
                flips.append(False)
    assert 0 < sum(flips) < len(flips)
    layer.close()


def test_imagedata_mean_value_and_scale_exact(images):
    layer, tops = image_layer(*images, batch=1, transform="mean_value: 104 mean_value: 117 "
                              "mean_value: 123.5 scale: 0.017")
    (data, _), = run(layer, tops, 1)
    x = bgr_chw(rgb_image(0))
    mean = np.array([104, 117, 123.5], np.float32).reshape(3, 1, 1)
    np.testing.assert_array_equal(data[0], (x - mean) * np.float32(0.017))
    layer.close()


def test_imagedata_single_mean_value_is_replicated(images):
    layer, tops = image_layer(*images, batch=1, transform="mean_value: 100")
    (data, _), = run(layer, tops, 1)
    np.testing.assert_array_equal(data[0], bgr_chw(rgb_image(0)) - 100)
    layer.close()


def test_imagedata_mean_file_with_crop_and_mirror(images, tmp_path):
    mean = np.random.default_rng(0).uniform(0, 255, (1, 3, H, W)).astype(np.float32)
    from minicaffe.io import array_to_blobproto
    from minicaffe.protoio import write_proto_binary
    mpath = str(tmp_path / "mean.binaryproto")
    write_proto_binary(mpath, array_to_blobproto(mean))
    layer, tops = image_layer(*images, batch=4, transform='crop_size: 4 scale: 0.5 '
                              'mean_file: "%s"' % mpath)
    (data, _), = run(layer, tops, 1)
    x = bgr_chw(rgb_image(0))
    ref = (x[:, 1:5, 2:6] - mean[0, :, 1:5, 2:6]) * np.float32(0.5)
    np.testing.assert_array_equal(data[0], ref)
    layer.close()
    # mirror flips after the mean is taken at the source position
    t = caffe_pb2.TransformationParameter(crop_size=4, mean_file=mpath, mirror=True)
    tr = DataTransformer(t, caffe.TEST)
    out = np.empty((3, 4, 4), np.float32)
    tr.apply(x, out, True, 1, 2)
    np.testing.assert_array_equal(out, (x[:, 1:5, 2:6] - mean[0, :, 1:5, 2:6])[:, :, ::-1])


def test_transformer_bad_params(tmp_path):
    t = caffe_pb2.TransformationParameter(mean_file="m.binaryproto", mean_value=[1.0])
    with pytest.raises(CaffeError, match="mean_file and mean_value"):
        DataTransformer(t, caffe.TEST)
    t = caffe_pb2.TransformationParameter(mean_value=[1.0, 2.0])
    with pytest.raises(CaffeError, match="1 mean_value or as many as channels: 3"):
        DataTransformer(t, caffe.TEST).transform(np.zeros((3, 4, 4), np.uint8))
    t = caffe_pb2.TransformationParameter(crop_size=5)
    with pytest.raises(CaffeError, match="crop_size 5"):
        DataTransformer(t, caffe.TEST).transform(np.zeros((3, 4, 4), np.uint8))
    t = caffe_pb2.TransformationParameter(force_color=True, force_gray=True)
    with pytest.raises(CaffeError, match="force_color and force_gray"):
        DataTransformer(t, caffe.TEST)


def _labels(n_batches, images, seed, phase=caffe.TRAIN, transform=""):
    caffe.set_random_seed(seed)
    layer, tops = image_layer(*images, batch=5, phase=phase, extra="shuffle: true",
                              transform=transform)
    out = run(layer, tops, n_batches)
    layer.close()
    return out


def test_imagedata_shuffle_deterministic_and_reshuffled_per_epoch(images):
    a = _labels(3, images, 11, transform="crop_size: 3 mirror: true")
    b = _labels(3, images, 11, transform="crop_size: 3 mirror: true")
    for (da, la), (db, lb) in zip(a, b):
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(da, db)
    epochs = [la.tolist() for _, la in a]
    assert all(sorted(e) == [0, 1, 2, 3, 4] for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # a new order each epoch
    c = _labels(3, images, 12)
    assert [lc.tolist() for _, lc in c] != epochs


def test_imagedata_state_restores_position_and_rng(images):
    caffe.set_random_seed(3)
    layer, tops = image_layer(*images, batch=3, phase=caffe.TRAIN, extra="shuffle: true",
                              transform="crop_size: 3 mirror: true")
    run(layer, tops, 2)
    state = layer.data_state()
    assert layer.position == {"epoch": 1, "line_id": 1}
    first = run(layer, tops, 3)
    layer.set_data_state(state)
    again = run(layer, tops, 3)
    for (d1, l1), (d2, l2) in zip(first, again):
        np.testing.assert_array_equal(l1, l2)
        np.testing.assert_array_equal(d1, d2)
    layer.close()


def test_imagedata_missing_image_names_list_line_and_path(tmp_path):
    src, root = make_list(tmp_path, n=3, extra="\nnot there.png 9\n")
    layer, tops = image_layer(src, root, batch=2)
    run(layer, tops, 1)
    with pytest.raises(CaffeError) as err:
        run(layer, tops, 1)
    msg = str(err.value)
    assert src in msg and "line 5" in msg and "not there.png" in msg
    layer.close()


def test_imagedata_batch_of_mixed_sizes_is_an_error(tmp_path):
    src, root = make_list(tmp_path, n=1)
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(root + "small.png")
    with open(src, "a") as f:
        f.write("small.png 1\n")
    layer, tops = image_layer(src, root, batch=2)
    with pytest.raises(CaffeError, match=r"ImageData layer img: .*list.txt line 2 \(small.png\)"
                                         r": the input has shape \(3, 5, 5\)"):
        run(layer, tops, 1)
    layer.close()


def test_imagedata_undecodable_image_at_setup(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    (tmp_path / "l.txt").write_text("bad.png 1\n")
    with pytest.raises(CaffeError) as err:
        image_layer(str(tmp_path / "l.txt"), str(tmp_path) + "/", batch=1)
    assert "l.txt line 1" in str(err.value) and "bad.png" in str(err.value)


def test_imagedata_list_errors(tmp_path):
    with pytest.raises(CaffeError, match="nope.txt"):
        image_layer(str(tmp_path / "nope.txt"), "", batch=1)
    (tmp_path / "l.txt").write_text("a.png 1\nnolabel.png\n")
    with pytest.raises(CaffeError, match=r"l.txt line 2"):
        image_layer(str(tmp_path / "l.txt"), "", batch=1)
    (tmp_path / "l3.txt").write_text("a.png x\n")
    with pytest.raises(CaffeError, match=r"l3.txt line 1.*not an integer"):
        image_layer(str(tmp_path / "l3.txt"), "", batch=1)
    src, root = make_list(tmp_path, n=1)
    with pytest.raises(CaffeError, match="new_height and new_width"):
        image_layer(src, root, extra="new_height: 3")


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name.startswith("minicaffe-prefetch")]


def test_prefetch_thread_is_daemon_and_stops(images):
    before = len(_prefetch_threads())
    layer, tops = image_layer(*images, batch=2)
    threads = _prefetch_threads()
    assert len(threads) == before + 1 and all(t.daemon for t in threads)
    run(layer, tops, 1)
    layer.close()
    assert len(_prefetch_threads()) == before
    layer, tops = image_layer(*images, batch=2)
    run(layer, tops, 1)
    del layer, tops
    gc.collect()
    assert len(_prefetch_threads()) == before


def test_imagedata_in_a_net_is_deterministic(images, tmp_path):
    net_text = """
    layer { name: "d" type: "ImageData" top: "data" top: "label"
            image_data_param { source: "%s" root_folder: "%s" batch_size: 2 shuffle: true }
            transform_param { crop_size: 5 mirror: true } }
    """ % images

    def go():
        caffe.set_random_seed(7)
        net = caffe.Net(net_text, caffe.TRAIN)
        out = [(net.forward()["data"].copy(), net.blobs["label"].data.copy()) for _ in range(4)]
        net.layers[0].close()
        return out
    for (d1, l1), (d2, l2) in zip(go(), go()):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(l1, l2)


# --- MemoryData --------------------------------------------------------------------------------

MEM_NET = """
layer { name: "md" type: "MemoryData" top: "data" top: "label"
        memory_data_param { batch_size: 2 channels: 3 height: 4 width: 5 } %s }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 } }
"""


def test_memorydata_batches_and_wraps():
    net = caffe.Net(MEM_NET % "", caffe.TEST)
    data = np.random.default_rng(0).normal(size=(6, 3, 4, 5)).astype(np.float32)
    labels = np.arange(6, dtype=np.float32)
    net.set_input_arrays(data, labels)
    for k in (0, 1, 2, 0):
        net.forward()
        np.testing.assert_array_equal(net.blobs["data"].data, data[2 * k:2 * k + 2])
        assert net.blobs["label"].data.shape == (2,)
        np.testing.assert_array_equal(net.blobs["label"].data, labels[2 * k:2 * k + 2])
    md = net.layers[0]
    with pytest.raises(CaffeError, match="divide"):
        md.set_batch_size(4)
    md.set_batch_size(3)  # position is item 2 after four batches of 2
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[2:5])
    md.set_batch_size(2)
    net.set_input_arrays(data[:2].copy(), labels[:2].reshape(2, 1, 1, 1).copy())
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[:2])


def test_memorydata_set_input_arrays_errors():
    net = caffe.Net(MEM_NET % "", caffe.TEST)
    data = np.zeros((4, 3, 4, 5), np.float32)
    labels = np.zeros(4, np.float32)
    with pytest.raises(CaffeError, match="multiple of batch size"):
        net.set_input_arrays(data[:3].copy(), labels[:3].copy())
    with pytest.raises(CaffeError, match="float32"):
        net.set_input_arrays(data.astype(np.float64), labels)
    with pytest.raises(CaffeError, match="contiguous"):
        net.set_input_arrays(np.zeros((4, 5, 4, 3), np.float32).transpose(0, 3, 2, 1), labels)
    with pytest.raises(CaffeError, match="shape"):
        net.set_input_arrays(np.zeros((4, 3, 5, 4), np.float32), labels)
    with pytest.raises(CaffeError, match="same first dimension"):
        net.set_input_arrays(data, np.zeros(2, np.float32))
    with pytest.raises(CaffeError, match="reset"):
        net.forward()
    other = caffe.Net('layer { name: "i" type: "Input" top: "x" input_param { shape { dim: 1 } } }',
                      caffe.TEST)
    with pytest.raises(CaffeError, match="MemoryData"):
        other.set_input_arrays(data, labels)
    with pytest.raises(CaffeError, match="positive"):
        make_layer('type: "MemoryData" memory_data_param { batch_size: 2 channels: 3 height: 4 }'
                   ).setup([], empty_tops(2, np.float32))


def test_memorydata_applies_transform():
    net = caffe.Net(MEM_NET % "transform_param { scale: 0.5 mean_value: 1 crop_size: 2 }",
                    caffe.TEST)
    data = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    net.set_input_arrays(data, np.array([3, 4], np.float32))
    net.forward()
    assert net.blobs["data"].data.shape == (2, 3, 2, 2)
    np.testing.assert_array_equal(net.blobs["data"].data,
                                  (data[:, :, 1:3, 1:3] - 1) * np.float32(0.5))


# --- convert_imageset and the Data layer ------------------------------------------------------

def convert(tmp_path, src, root, db, *flags):
    path = str(tmp_path / db)
    assert convert_imageset.main(list(flags) + [root, src, path]) == 0
    return path


def data_layer(db, batch, transform="", phase=caffe.TEST):
    layer = make_layer('type: "Data" name: "db" data_param { source: "%s" batch_size: %d '
                       'backend: LMDB } %s' % (db, batch, "transform_param { %s }" % transform
                                               if transform else ""), phase=phase)
    tops = empty_tops(2, np.float32)
    layer.setup([], tops)
    return layer, tops


@needs_lmdb
@pytest.mark.parametrize("flags", [(), ("--encoded",), ("-encode_type=jpg",)])
def test_data_layer_matches_imagedata(images, tmp_path, flags):
    db = convert(tmp_path, images[0], images[1], "db", *flags)
    transform = "crop_size: 4 mean_value: 10 mean_value: 20 mean_value: 30 scale: 0.25"
    dl, dtops = data_layer(db, 3, transform)
    il, itops = image_layer(*images, batch=3, transform=transform)
    for (dd, dlab), (idata, ilab) in zip(run(dl, dtops, 3), run(il, itops, 3)):
        np.testing.assert_array_equal(dlab, ilab)
        if "-encode_type=jpg" in flags:  # lossy: close, not equal
            assert np.abs(dd - idata).max() <= 4 * 0.25
        else:
            np.testing.assert_array_equal(dd, idata)
    assert dl.epoch == 1 and dl.offset == 9
    dl.close()
    il.close()


@needs_lmdb
def test_convert_imageset_keys_gray_resize_flags(images, tmp_path):
    db = convert(tmp_path, images[0], images[1], "db", "-gray", "-resize_height=3",
                 "--resize_width", "4")
    import lmdb
    env = lmdb.open(db, readonly=True, lock=False)
    with env.begin() as txn:
        keys = [k.decode() for k, _ in txn.cursor()]
        datum = caffe_pb2.Datum.FromString(txn.get(keys[0].encode()))
    env.close()
    assert keys == ["%08d_img %d.png" % (i, i) for i in range(5)]
    assert (datum.channels, datum.height, datum.width, datum.label) == (1, 3, 4, 0)
    dl, dtops = data_layer(db, 5)
    il, itops = image_layer(*images, batch=5, extra="is_color: false new_height: 3 new_width: 4")
    (dd, dlab), = run(dl, dtops, 1)
    (idata, ilab), = run(il, itops, 1)
    np.testing.assert_array_equal(dd, idata)
    np.testing.assert_array_equal(dlab, ilab)
    dl.close()
    il.close()


@needs_lmdb
def test_data_layer_float_datum_and_force_gray(tmp_path):
    import lmdb
    path = str(tmp_path / "fdb")
    env = lmdb.open(path, map_size=1 << 22)
    vals = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    png = tmp_path / "c.png"
    Image.fromarray(rgb_image(2)).save(str(png))
    with env.begin(write=True) as txn:
        d = caffe_pb2.Datum(channels=2, height=3, width=4, label=5)
        d.float_data.extend(vals.ravel().tolist())
        txn.put(b"0", d.SerializeToString())
    env.close()
    dl, tops = data_layer(path, 2, "scale: 2")
    (data, label), = run(dl, tops, 1)
    np.testing.assert_array_equal(data, np.stack([vals * np.float32(2)] * 2))
    assert label.tolist() == [5, 5]
    dl.close()
    # an encoded datum with force_gray decodes to one channel
    path = str(tmp_path / "edb")
    env = lmdb.open(path, map_size=1 << 22)
    with env.begin(write=True) as txn:
        txn.put(b"0", caffe_pb2.Datum(data=png.read_bytes(), encoded=True,
                                      label=1).SerializeToString())
    env.close()
    dl, tops = data_layer(path, 1, "force_gray: true")
    (data, _), = run(dl, tops, 1)
    np.testing.assert_array_equal(data[0], read_image(str(png), is_color=False).transpose(2, 0, 1))
    dl.close()


def test_data_layer_leveldb_and_missing_lmdb(tmp_path, monkeypatch):
    lp = make_layer('type: "Data" name: "db" data_param { source: "%s" batch_size: 1 }'
                    % (tmp_path / "x"))
    with pytest.raises(CaffeError, match="LevelDB is not supported.*convert_imageset"):
        lp.setup([], empty_tops(2, np.float32))
    monkeypatch.setitem(sys.modules, "lmdb", None)
    with pytest.raises(CaffeError, match="pip install lmdb"):
        data_layer(str(tmp_path / "x"), 1)
    assert convert_imageset.main([str(tmp_path), str(tmp_path / "l"), str(tmp_path / "d")]) == 2


@needs_lmdb
def test_data_layer_missing_db(tmp_path):
    with pytest.raises(CaffeError, match="does not exist"):
        data_layer(str(tmp_path / "nodb"), 1)


def test_convert_imageset_bad_args_exit_2(tmp_path, capsys):
    src, root = make_list(tmp_path, n=1)
    cases = [[], [root, src], ["--bogus", root, src, "db"], ["-resize_height=x", root, src, "db"],
             ["--backend", "leveldb", root, src, str(tmp_path / "db")],
             ["--shuffle=maybe", root, src, "db"],
             [root, str(tmp_path / "missing.txt"), str(tmp_path / "db2")]]
    if HAVE_LMDB:
        cases.append([root, src, str(tmp_path)])  # the DB already exists
    for argv in cases:
        assert convert_imageset.main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) >= 1 and err[-1].startswith("convert_imageset: error:"), (argv, err)
        assert "Traceback" not in "\n".join(err)
    assert not os.path.exists(str(tmp_path / "db2"))


@pytest.mark.integration
def test_convert_imageset_tool_is_executable(tmp_path):
    assert os.access(TOOL, os.X_OK)
    r = subprocess.run([sys.executable, TOOL, "-resize_height=1"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
