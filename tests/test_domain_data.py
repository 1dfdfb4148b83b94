"""DomainData: K per class in class order, target batches over one epoch, determinism."""
import numpy as np
import pytest
from PIL import Image

import minicaffe as caffe


def make_lists(tmp_path, counts, n_target, size=6):
    """Images whose pixel value encodes (domain, class, index): R = index, G = class."""
    src, tgt = [], []
    for c, n in enumerate(counts):
        for i in range(n):
            p = tmp_path / ("s_%d_%d.png" % (c, i))
            Image.fromarray(np.full((size, size, 3), (i, c * 10, 0), np.uint8)).save(p)
            src.append("%s %d" % (p.name, c))
    for i in range(n_target):
        p = tmp_path / ("t %d.png" % i)          # a space in the name
        Image.fromarray(np.full((size, size, 3), (i, 200, 100), np.uint8)).save(p)
        tgt.append("%s %d" % (p.name, i % len(counts)))
    (tmp_path / "src.txt").write_text("\n".join(src) + "\n")
    (tmp_path / "tgt.txt").write_text("\n".join(tgt) + "\n")
    return str(tmp_path / "src.txt"), str(tmp_path / "tgt.txt")


NET = """
layer { name: "d" type: "DomainData" top: "sdata" top: "slabel" top: "tdata" top: "tlabel"
        domain_data_param { source: "%s" target_source: "%s" root_folder: "%s/"
                            per_class: %d num_classes: %d shuffle: %s } }
"""


def build(tmp_path, counts, n_target, k, shuffle="true"):
    s, t = make_lists(tmp_path, counts, n_target)
    return caffe.Net(NET % (s, t, tmp_path, k, len(counts), shuffle), caffe.TRAIN)


def test_batches_class_order_and_epoch(tmp_path):
    caffe.set_random_seed(5)
    net = build(tmp_path, [4, 2, 3], n_target=10, k=2)
    layer = net.layers[0]
    assert layer.batches_per_epoch == 2            # ceil(10 / (3·2))
    seen_t = []
    for _b in range(2):
        net.forward()
        lab = net.blobs["slabel"].data
        assert list(lab) == [0, 0, 1, 1, 2, 2]
        g = net.blobs["sdata"].data[:, 1, 0, 0]    # channel 1 is G (BGR order): the class
        assert list(g) == [0, 0, 10, 10, 20, 20]
        assert net.blobs["tdata"].shape == (6, 3, 6, 6)
        seen_t += list(net.blobs["tdata"].data[:, 2, 0, 0].astype(int))  # R = target index
    # one epoch covers every target image; the last batch is padded with the first ids
    assert set(seen_t) == set(range(10)) and len(seen_t) == 12
    assert layer.epoch == 1
    # class 1 has only 2 images but needs 2 batches × 2: its ids repeat within the epoch
    net.close()


def test_deterministic_under_seed_and_reshuffled(tmp_path):
    def run(seed, batches=4):
        caffe.set_random_seed(seed)
        net = build(tmp_path, [3, 3], n_target=8, k=2)
        out = []
        for _ in range(batches):
            net.forward()
            out.append(net.blobs["tdata"].data[:, 2, 0, 0].copy())
        net.close()
        return out
    a, b, c = run(1), run(1), run(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not np.array_equal(np.concatenate(a[:2]), np.concatenate(a[2:]))  # new epoch, new order


def test_state_roundtrip(tmp_path):
    caffe.set_random_seed(3)
    net = build(tmp_path, [3, 3], n_target=8, k=2)
    net.forward()
    state = net.layers[0].get_state()
    net.forward()
    nxt = net.blobs["tdata"].data.copy()
    net.layers[0].set_state(state)
    net.forward()
    assert np.array_equal(net.blobs["tdata"].data, nxt)
    net.close()


def test_errors(tmp_path):
    s, t = make_lists(tmp_path, [2, 2], 4)
    with pytest.raises(caffe.CaffeError, match="classes \\[2\\] have no source image"):
        caffe.Net(NET % (s, t, tmp_path, 2, 3, "true"), caffe.TRAIN)
    with pytest.raises(caffe.CaffeError, match="target_source"):
        caffe.Net('layer { name: "d" type: "DomainData" top: "a" top: "b" top: "c" '
                  'domain_data_param { source: "%s" } }' % s, caffe.TRAIN)


def test_decoded_images_are_cached_and_batches_unchanged(tmp_path, monkeypatch):
    """The image cache (MINICAFFE_IMAGE_CACHE_MB) decodes each image once; the batches equal
    those of a run that decodes every time (budget 0), with a mirror and crop drawn per item."""
    import minicaffe.layers.data as data_mod
    s, t = make_lists(tmp_path, [4, 2, 3], 10)
    net_text = (NET % (s, t, tmp_path, 2, 3, "true")).replace(
        'type: "DomainData"', 'type: "DomainData" transform_param { mirror: true crop_size: 4 }')
    decoded = []
    real = data_mod.read_image
    monkeypatch.setattr(data_mod, "read_image", lambda *a: decoded.append(a[0]) or real(*a))

    def run(budget):
        monkeypatch.setenv(data_mod.CACHE_ENV, budget)
        caffe.set_random_seed(3)
        net = caffe.Net(net_text, caffe.TRAIN)
        out = []
        for _ in range(6):                     # three epochs of 2 batches
            net.forward()
            out.append([net.blobs[b].data.copy() for b in ("sdata", "tdata")])
        net.close()
        return out
    decoded.clear()
    off = run("0")
    decodes_off = len(decoded)
    decoded.clear()
    on = run("")                               # the default budget
    assert len(decoded) == len(set(decoded)) == 9 + 10   # each image once
    assert decodes_off > 2 * len(decoded)
    for a, b in zip(off, on):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_image_cache_budget_and_bad_setting(tmp_path, monkeypatch):
    import minicaffe.layers.data as data_mod
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    cache = data_mod._ImageCache("layer 'd'", budget_mb=(8 * 8 * 3 * 1.5) / 2 ** 20)
    a = cache.read(str(img), 0, 0, True)
    assert not a.flags.writeable and cache.read(str(img), 0, 0, True) is a
    b = tmp_path / "b.png"
    Image.fromarray(np.ones((8, 8, 3), np.uint8)).save(b)
    assert cache.read(str(b), 0, 0, True) is not cache.read(str(b), 0, 0, True)  # over budget
    monkeypatch.setenv(data_mod.CACHE_ENV, "lots")
    s, t = make_lists(tmp_path, [2, 2], 4)
    with pytest.raises(caffe.CaffeError, match="MINICAFFE_IMAGE_CACHE_MB='lots' is not a number"):
        caffe.Net(NET % (s, t, tmp_path, 1, 2, "true"), caffe.TRAIN)
