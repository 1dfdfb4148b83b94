"""HDF5Data and HDF5Output against NumPy references, on .h5 files h5py writes in tmp_path.

The first test is BVLC's test_hdf5data_layer.cpp TestRead on the files of its
generate_sample_data.py (the second gzip-compressed with uint8 labels); the shuffle reference
is HDF5DataLayer::Next written out in NumPy on the layer's generator.
"""
import numpy as np
import pytest
from google.protobuf import text_format

import minicaffe as caffe
from minicaffe import backend
from minicaffe.errors import CaffeError
from minicaffe.gradcheck import empty_tops, make_layer
from minicaffe.proto import caffe_pb2

h5py = pytest.importorskip("h5py")

ROWS, COLS, HT, WD = 10, 8, 6, 5
TOTAL = ROWS * COLS * HT * WD


@pytest.fixture
def sample(tmp_path, monkeypatch):
    """Caffe's sample_data.h5 and sample_data_2_gzip.h5, listed by paths relative to the cwd."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    data = np.arange(TOTAL, dtype=np.float32).reshape(ROWS, COLS, HT, WD)
    label = (1 + np.arange(ROWS)[:, None]).astype(np.float32)
    with h5py.File(tmp_path / "d" / "sample_data.h5", "w") as f:
        f["data"], f["label"], f["label2"] = data, label, label + 1
    with h5py.File(tmp_path / "d" / "sample_data_2_gzip.h5", "w") as f:
        f.create_dataset("data", data=data + TOTAL, compression="gzip", compression_opts=1)
        f.create_dataset("label", data=label, compression="gzip", dtype="uint8")
        f.create_dataset("label2", data=label + 1, compression="gzip", dtype="uint8")
    (tmp_path / "list.txt").write_text("d/sample_data.h5\nd/sample_data_2_gzip.h5\n")
    return "list.txt"


def hdf5_layer(source, tops=("data", "label"), batch=5, extra="", phase=caffe.TRAIN,
               dtype=np.float32):
    text = ('type: "HDF5Data" name: "h5" %s hdf5_data_param { source: "%s" batch_size: %d %s }'
            % (" ".join('top: "%s"' % t for t in tops), source, batch, extra))
    layer = make_layer(text, phase=phase)
    t = empty_tops(len(tops), dtype)
    layer.setup([], t)
    return layer, t


def write_h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f[k] = v


def test_caffe_testread(sample):
    for dtype in (np.float32, np.float64):
        layer, (data, label, label2) = hdf5_layer(sample, ("data", "label", "label2"),
                                                  dtype=dtype)
        assert data.shape == (5, COLS, HT, WD) and label.shape == (5, 1) == label2.shape
        size = COLS * HT * WD
        for it in range(10):
            layer.forward([], [data, label, label2])
            label_offset = 1 + (0 if it % 2 == 0 else 5)
            data_offset = 0 if it % 2 == 0 else 5 * size
            file_offset = 0 if it % 4 < 2 else TOTAL
            np.testing.assert_array_equal(label.data[:, 0], label_offset + np.arange(5))
            np.testing.assert_array_equal(label2.data[:, 0], label_offset + 1 + np.arange(5))
            np.testing.assert_array_equal(
                data.data.reshape(-1), file_offset + data_offset + np.arange(5 * size))
            assert data.data.dtype == dtype


def test_rows_run_through_files_and_wrap(tmp_path):
    a = np.arange(3 * 2, dtype=np.float32).reshape(3, 2)
    b = 100 + np.arange(4 * 2, dtype=np.float32).reshape(4, 2)
    write_h5(tmp_path / "a.h5", x=a, y=np.arange(3, dtype=np.int32))
    write_h5(tmp_path / "b.h5", x=b, y=10 + np.arange(4, dtype=np.int64))
    lst = tmp_path / "l.txt"
    lst.write_text("%s   %s\n\n" % (tmp_path / "a.h5", tmp_path / "b.h5"))  # tokens, not lines
    layer, (x, y) = hdf5_layer(str(lst), ("x", "y"), batch=5)
    rows_x, rows_y = np.concatenate([a, b]), np.concatenate([np.arange(3), 10 + np.arange(4)])
    for it in range(6):
        layer.forward([], [x, y])
        idx = (it * 5 + np.arange(5)) % 7
        np.testing.assert_array_equal(x.data, rows_x[idx])
        np.testing.assert_array_equal(y.data, rows_y[idx])
    assert layer.position == {"epoch": 4, "file": 0, "row": 2}  # 30 rows = 4 passes + 2


def _caffe_shuffle_reference(seed, sizes, n_rows):
    """HDF5DataLayer's row sequence with shuffle: the file order shuffled at set-up and after
    each pass, a file's rows shuffled when loaded and again at its end (Next)."""
    rng = np.random.default_rng(seed)
    file_perm = np.arange(len(sizes))
    rng.shuffle(file_perm)
    cur = 0
    perm = np.arange(sizes[file_perm[0]])
    rng.shuffle(perm)
    row, out = 0, []
    while len(out) < n_rows:
        out.append((int(file_perm[cur]), int(perm[row])))
        row += 1
        if row == len(perm):
            if len(sizes) > 1:
                cur += 1
                if cur == len(sizes):
                    cur = 0
                    rng.shuffle(file_perm)
                perm = np.arange(sizes[file_perm[cur]])
                rng.shuffle(perm)
            row = 0
            rng.shuffle(perm)
    return out


@pytest.mark.parametrize("sizes", [(5, 3, 4), (6,)])
def test_shuffle_matches_caffe_next_and_keeps_files_whole(tmp_path, sizes):
    names = []
    for k, n in enumerate(sizes):
        write_h5(tmp_path / ("f%d.h5" % k), key=np.stack([np.full(n, k), np.arange(n)], 1))
        names.append(str(tmp_path / ("f%d.h5" % k)))
    lst = tmp_path / "l.txt"
    lst.write_text("\n".join(names) + "\n")
    caffe.set_random_seed(11)
    seed = int(backend.rng().integers(0, 2 ** 63))  # what the layer draws at set-up
    caffe.set_random_seed(11)
    layer, (key,) = hdf5_layer(str(lst), ("key",), batch=4, extra="shuffle: true")
    got = []
    for _ in range(12):
        layer.forward([], [key])
        got += [tuple(int(v) for v in r) for r in key.data]
    assert got == _caffe_shuffle_reference(seed, sizes, len(got))
    total = sum(sizes)
    for p in range(len(got) // total):  # each pass: every row once, each file's rows together
        one = got[p * total:(p + 1) * total]
        assert sorted(one) == sorted((k, r) for k, n in enumerate(sizes) for r in range(n))
        files = [k for k, _ in one]
        assert all(files[i] == files[i - 1] or files[i] not in files[:i] for i in range(1, total))
    assert got[:total] != sorted(got[:total])
    caffe.set_random_seed(11)
    again, (key2,) = hdf5_layer(str(lst), ("key",), batch=4, extra="shuffle: true")
    again.forward([], [key2])
    assert [tuple(int(v) for v in r) for r in key2.data] == got[:4]


def test_state_resumes_and_shard_takes_every_nth_batch(tmp_path):
    write_h5(tmp_path / "a.h5", v=np.arange(7, dtype=np.float32))
    write_h5(tmp_path / "b.h5", v=100 + np.arange(5, dtype=np.float32))
    lst = tmp_path / "l.txt"
    lst.write_text("%s\n%s\n" % (tmp_path / "a.h5", tmp_path / "b.h5"))

    def batches(layer, top, n):
        out = []
        for _ in range(n):
            layer.forward([], top)
            out.append(top[0].data.copy())
        return out
    caffe.set_random_seed(3)
    full_layer, full_top = hdf5_layer(str(lst), ("v",), batch=3, extra="shuffle: true")
    full = batches(full_layer, full_top, 12)
    caffe.set_random_seed(3)
    part, top = hdf5_layer(str(lst), ("v",), batch=3, extra="shuffle: true")
    batches(part, top, 5)
    state = part.get_state()
    caffe.set_random_seed(99)
    resumed, top = hdf5_layer(str(lst), ("v",), batch=3, extra="shuffle: true")
    resumed.set_state(state)
    np.testing.assert_array_equal(np.array(batches(resumed, top, 7)), np.array(full[5:]))
    for rank in range(3):
        caffe.set_random_seed(3)
        layer, top = hdf5_layer(str(lst), ("v",), batch=3, extra="shuffle: true")
        layer.set_shard(rank, 3)
        assert layer.shard == (rank, 3)
        np.testing.assert_array_equal(np.array(batches(layer, top, 4)), np.array(full[rank::3]))
    with pytest.raises(CaffeError, match="shard rank 3 is not in"):
        layer.set_shard(3, 3)


def _one_line_error(source, tops=("data", "label"), extra="", layer_extra=""):
    with pytest.raises(CaffeError) as info:
        text = ('type: "HDF5Data" name: "h5" %s %s hdf5_data_param { source: "%s" batch_size: 2 '
                '%s }' % (" ".join('top: "%s"' % t for t in tops), layer_extra, source, extra))
        make_layer(text).setup([], empty_tops(len(tops), np.float32))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("HDF5Data layer h5: ")
    return msg


def test_errors_name_the_layer_and_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "..")
    msg = _one_line_error(str(tmp_path / "nope.txt"))
    assert "failed to open source file %s" % (tmp_path / "nope.txt") in msg
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert "at least 1 HDF5 filename listed in %s" % empty in _one_line_error(str(empty))
    good = tmp_path / "good.h5"
    write_h5(good, data=np.zeros((4, 3), np.float32), label=np.zeros(4, np.float32),
             short=np.zeros(3, np.float32), scalar=np.float32(1), text=np.array([b"a", b"b"]))
    lst = tmp_path / "l.txt"
    lst.write_text("%s\n\n%s\n" % (good, tmp_path / "missing.h5"))
    msg = _one_line_error(str(lst))
    assert "HDF5 file %s (%s line 3) does not exist" % (tmp_path / "missing.h5", lst) in msg
    lst.write_text("%s\n" % good)
    msg = _one_line_error(str(lst), ("data", "nolabel"))
    assert "failed to find HDF5 dataset 'nolabel'" in msg and "%s (%s line 1)" % (good, lst) in msg
    msg = _one_line_error(str(lst), ("data", "short"))
    assert "dataset 'short' in %s" % good in msg and "has 3 rows but dataset 'data' has 4" in msg
    msg = _one_line_error(str(lst), ("scalar",))
    assert "dataset 'scalar' in %s" % good in msg and "at least 1 axis" in msg
    assert "unsupported type" in _one_line_error(str(lst), ("text",))
    other = tmp_path / "other.h5"
    write_h5(other, data=np.zeros((2, 5), np.float32), label=np.zeros(2, np.float32))
    lst.write_text("%s\n%s\n" % (good, other))
    msg = _one_line_error(str(lst))
    assert "rows of shape (5,)" in msg and str(other) in msg and "line 2" in msg
    (tmp_path / "sub").mkdir()
    write_h5(tmp_path / "sub" / "near.h5", data=np.zeros((2, 1), np.float32))
    (tmp_path / "sub" / "l.txt").write_text("near.h5\n")
    msg = _one_line_error(str(tmp_path / "sub" / "l.txt"), ("data",))
    assert "HDF5 file near.h5 (%s line 1) does not exist (relative names are opened from the " \
        "current directory" % (tmp_path / "sub" / "l.txt") in msg
    assert "%s is beside the list file" % (tmp_path / "sub" / "near.h5") in msg
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    lst.write_text("%s\n" % bad)
    assert "failed opening HDF5 file %s (%s line 1)" % (bad, lst) in _one_line_error(str(lst))
    lst.write_text("%s\n" % good)
    assert "does not transform data" in _one_line_error(str(lst),
                                                        layer_extra="transform_param { scale: 2 }")
    with pytest.raises(CaffeError, match="batch_size must be positive"):
        make_layer('type: "HDF5Data" name: "h5" top: "data" hdf5_data_param { source: "%s" }'
                   % lst).setup([], empty_tops(1, np.float32))


def test_missing_file_in_a_prototxt_net_is_one_line(tmp_path):
    net = ('layer { name: "h5" type: "HDF5Data" top: "data" hdf5_data_param { source: "%s" '
           'batch_size: 2 } }' % (tmp_path / "none.txt"))
    with pytest.raises(CaffeError) as info:
        caffe.Net(net, caffe.TRAIN)
    assert "\n" not in str(info.value) and "none.txt" in str(info.value)


REGRESSION = """
name: "h5reg"
layer { name: "h5" type: "HDF5Data" top: "data" top: "targets"
        hdf5_data_param { source: "%s" batch_size: 4 shuffle: true } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "targets" top: "loss" }
"""


def test_solver_trains_a_net_fed_by_hdf5data(tmp_path):
    """Caffe's solver_data.h5 layout (data (8, 3, 10, 10), targets (8, 1)), here linear in
    the data so that a few SGD steps lower the loss."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(8, 3, 10, 10)).astype(np.float32)
    w = rng.normal(size=300).astype(np.float32) * 0.1
    write_h5(tmp_path / "solver_data.h5", data=data, targets=(data.reshape(8, -1) @ w)[:, None])
    (tmp_path / "solver_data_list.txt").write_text(str(tmp_path / "solver_data.h5") + "\n")
    p = caffe_pb2.SolverParameter()
    text_format.Merge('base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 max_iter: 30 '
                      'random_seed: 5 snapshot_after_train: false', p)
    text_format.Merge(REGRESSION % (tmp_path / "solver_data_list.txt"), p.net_param)

    def losses():
        s = caffe.get_solver(p)
        out = []
        for _ in range(30):
            s.step(1)
            out.append(float(s.net.blobs["loss"].data))
        return out
    first = losses()
    assert np.mean(first[-5:]) < 0.5 * np.mean(first[:5])
    assert first == losses()  # random_seed reproduces the shuffled stream
    p.snapshot, p.snapshot_prefix = 12, str(tmp_path / "snap")
    s = caffe.get_solver(p)
    s.step(12)
    caffe.set_random_seed(1234)
    p.ClearField("snapshot")
    resumed = caffe.get_solver(p)
    resumed.restore(str(tmp_path / "snap_iter_12.solverstate"))  # the shuffle position too
    rest = []
    for _ in range(18):
        resumed.step(1)
        rest.append(float(resumed.net.blobs["loss"].data))
    assert rest == first[12:]


# --- HDF5Output --------------------------------------------------------------------------------

def output_layer(path, shapes, dtype=np.float32):
    from minicaffe.blob import Blob
    layer = make_layer('type: "HDF5Output" name: "out" bottom: "d" bottom: "l" '
                       'hdf5_output_param { file_name: "%s" }' % path)
    rng = np.random.default_rng(1)
    bottom = [Blob(s, dtype) for s in shapes]
    for b in bottom:
        b.data[...] = rng.normal(size=b.shape)
    layer.setup(bottom, [])
    return layer, bottom


def test_hdf5output_writes_data_and_label_as_caffe(tmp_path):
    path = tmp_path / "out.h5"
    path.write_bytes(b"old contents")
    for dtype in (np.float32, np.float64):
        layer, bottom = output_layer(path, [(5, 8, 5, 5), (5,)], dtype)
        with h5py.File(path, "r") as f:  # set-up truncates the file, as H5Fcreate does
            assert list(f) == []
        assert layer.forward(bottom, []) == 0.0
        with h5py.File(path, "r") as f:
            assert sorted(f) == ["data", "label"]
            assert f["data"].dtype == dtype and f["label"].shape == (5, 1, 1, 1)
            np.testing.assert_array_equal(f["data"][()], bottom[0].data)
            np.testing.assert_array_equal(f["label"][()].reshape(5), bottom[1].data)
        layer.backward([], [True, True], bottom)  # does nothing
        with pytest.raises(CaffeError) as info:
            layer.forward(bottom, [])
        assert "already holds the datasets" in str(info.value) and str(path) in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]  # no temporary file left


def test_hdf5output_errors(tmp_path):
    layer, bottom = output_layer(tmp_path / "o.h5", [(4, 3), (5,)])
    with pytest.raises(CaffeError, match="same batch size .4 and 5."):
        layer.forward(bottom, [])
    layer, bottom = output_layer(tmp_path / "o.h5", [(2, 1, 1, 1, 1), (2,)])
    with pytest.raises(CaffeError, match="at most 4 axes"):
        layer.forward(bottom, [])
    with pytest.raises(CaffeError) as info:
        output_layer(tmp_path / "no" / "dir" / "o.h5", [(2, 3), (2,)])
    msg = str(info.value)
    assert msg.startswith("HDF5Output layer out: ") and "o.h5" in msg and "\n" not in msg
    with pytest.raises(CaffeError, match="file_name is not set"):
        make_layer('type: "HDF5Output" name: "o" bottom: "a" bottom: "b"').setup(
            empty_tops(2, np.float32), [])


def test_hdf5data_to_hdf5output_round_trip_in_a_net(sample, tmp_path):
    net = caffe.Net("""
    layer { name: "h5" type: "HDF5Data" top: "data" top: "label"
            hdf5_data_param { source: "%s" batch_size: 10 } }
    layer { name: "out" type: "HDF5Output" bottom: "data" bottom: "label"
            hdf5_output_param { file_name: "copy.h5" } }
    """ % sample, caffe.TEST)
    net.forward()
    with h5py.File(tmp_path / "copy.h5", "r") as f, \
            h5py.File(tmp_path / "d" / "sample_data.h5", "r") as g:
        np.testing.assert_array_equal(f["data"][()], g["data"][()])
        np.testing.assert_array_equal(f["label"][()], g["label"][()].reshape(10, 1, 1, 1))
