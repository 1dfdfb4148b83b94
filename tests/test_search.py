"""Search by hash code: the engines against brute force and metrics' ranking, the database file,
and tools/index + tools/search end to end on a tiny ToyHome, bad inputs included."""
import json
import os
import zipfile

import numpy as np
import pytest

from minicaffe import experiments, protoio
from minicaffe.commands import index as index_cmd, search as search_cmd
from minicaffe.datasets import lists, toyhome
from minicaffe.errors import CaffeError
from minicaffe.hashing import metrics
from minicaffe.net import TEST, Net
from minicaffe.search import HashIndex, encode_images, have_faiss, pack_codes, ranking_average_precisions, unpack_codes

needs_faiss = pytest.mark.skipif(not have_faiss(), reason="faiss is not installed "
                                 "(pip install 'minicaffe[search]')")
EXACT = ["numpy", pytest.param("faiss", marks=needs_faiss)]


def _tied_codes(n, bits, seed):
    """Random continuous codes whose signs repeat a lot (ties in Hamming distance)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(max(2, n // 8), bits))
    return base[rng.integers(0, len(base), n)] * rng.uniform(0.5, 2, (n, 1)), rng


# --- the engine -----------------------------------------------------------------------------

def test_pack_codes_layout():
    u = np.full((2, 16), -1.0)
    u[0, 0] = 0.0              # sgn(0) = +1: bit 0 of byte 0
    u[1, 9] = 3.0              # bit 9: bit 1 of byte 1 (little-endian bit order)
    assert pack_codes(u).tolist() == [[1, 0], [0, 2]]
    assert unpack_codes(pack_codes(u), 16).tolist() == metrics.binarize(u).tolist()
    assert pack_codes(u > 0).tolist() == [[0, 0], [0, 2]]
    with pytest.raises(CaffeError, match="0 and 1 is ambiguous"):
        pack_codes(np.eye(8, dtype=np.int64))
    with pytest.raises(CaffeError, match="multiple of 8"):
        pack_codes(np.ones((1, 12)))


@pytest.mark.parametrize("engine", EXACT)
def test_ranking_is_metrics_ranking(engine):
    db, rng = _tied_codes(700, 16, 0)
    q, _ = _tied_codes(40, 16, 1)
    ldb, lq = rng.integers(0, 4, 700), rng.integers(0, 4, 40)
    idx = HashIndex(16, engine=engine).add(db, ldb)
    dist, ind = idx.search(q, k=700)
    ham = metrics.hamming_distance(metrics.binarize(q), metrics.binarize(db))
    order = np.argsort(ham, axis=1, kind="stable")            # metrics' ranking
    assert (ind == order).all()
    assert (dist == np.take_along_axis(ham, order, 1)).all()
    ap = ranking_average_precisions(ind, lq, ldb)
    want = metrics.average_precisions(metrics.binarize(q), lq, metrics.binarize(db), ldb)
    np.testing.assert_allclose(ap, want, rtol=1e-12)
    top_d, top_i = idx.search(q, k=5)
    assert (top_i == order[:, :5]).all() and top_d.dtype == np.int32


def test_numpy_blocks_and_threads(monkeypatch):
    from minicaffe import search
    monkeypatch.setattr(search, "_BLOCK", 64)                # many blocks, a ragged last one
    monkeypatch.setattr(search, "_QCHUNK", 3)
    db, _ = _tied_codes(1000, 72, 2)                         # two words, padded
    q, _ = _tied_codes(20, 72, 3)
    ham = metrics.hamming_distance(metrics.binarize(q), metrics.binarize(db))
    order = np.argsort(ham, axis=1, kind="stable")
    for k in (1, 10, 100, 1000):
        d, i = HashIndex(72, engine="numpy", threads=2).add(db).search(q, k=k)
        assert (i == order[:, :k]).all(), k
        assert (d == np.take_along_axis(ham, order[:, :k], 1)).all()


@pytest.mark.parametrize("engine", EXACT + [pytest.param("faiss-mih", marks=needs_faiss)])
def test_radius_search_is_brute_force(engine):
    db, _ = _tied_codes(500, 32, 4)
    q, _ = _tied_codes(30, 32, 5)
    ham = metrics.hamming_distance(metrics.binarize(q), metrics.binarize(db))
    idx = HashIndex(32, engine=engine, mih_nflip=8).add(db)  # MIH probing all 8-bit flips is exact
    for r in (0, 3, 9):
        got = idx.range_search(q, r)
        for row, (d, i) in zip(ham, got):
            want = np.argsort(row, kind="stable")[:int((row <= r).sum())]
            assert i.tolist() == want.tolist() and d.tolist() == row[want].tolist()
    assert sum(len(i) for _, i in idx.range_search(q, 32)) == 30 * 500


@needs_faiss
def test_faiss_exact_equals_numpy():
    db, _ = _tied_codes(3000, 64, 6)
    q, _ = _tied_codes(100, 64, 7)
    a = HashIndex(64, engine="numpy").add(db)
    b = HashIndex(64, engine="faiss").add(db)
    for k in (1, 10, 3000):
        da, ia = a.search(q, k)
        db_, ib = b.search(q, k)
        assert (ia == ib).all() and (da == db_).all()
    for (da, ia), (db_, ib) in zip(a.range_search(q, 20), b.range_search(q, 20)):
        assert ia.tolist() == ib.tolist() and da.tolist() == db_.tolist()


@needs_faiss
def test_approximate_engines_find_clustered_neighbours():
    rng = np.random.default_rng(8)
    centres = rng.integers(0, 2, (50, 64)).astype(bool)
    db = centres[rng.integers(0, 50, 5000)] ^ (rng.random((5000, 64)) < 0.05)
    q = centres[rng.integers(0, 50, 50)] ^ (rng.random((50, 64)) < 0.05)
    exact_d, _ = HashIndex(64, engine="numpy").add(db).search(q, 10)
    for engine in ("faiss-mih", "faiss-hnsw"):
        d, i = HashIndex(64, engine=engine).add(db).search(q, 10)
        assert (np.diff(d, axis=1) >= 0).all()
        assert (d >= exact_d).all()                          # never closer than the truth
        assert np.mean(d[:, -1] == exact_d[:, -1]) > 0.8     # mostly the true 10th distance


def test_faiss_missing_is_one_clear_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "faiss", None)          # import faiss -> ImportError
    with pytest.raises(CaffeError, match=r"faiss-mih engine needs faiss.*pip install 'minicaffe\[search\]'"):
        HashIndex(8, engine="faiss-mih")
    assert HashIndex(8, engine="auto").engine == "numpy"
    with pytest.raises(CaffeError, match="unknown engine"):
        HashIndex(8, engine="annoy")


def test_save_load_round_trip(tmp_path):
    codes, rng = _tied_codes(50, 24, 9)
    labels = rng.integers(0, 3, 50)
    paths = ["/data/img %d.png" % i for i in range(50)]          # spaces kept
    idx = HashIndex(24, meta={"classes": ["a", "b", "c"]}).add(codes, labels, paths)
    idx.record("test", 50)
    db = str(tmp_path / "x.hdb")
    idx.save(db)
    z = np.load(db)                                              # an ordinary .npz
    assert sorted(z.files) == ["codes", "header.json", "labels", "paths.txt"]
    head = json.loads(z["header.json"])
    assert (head["format"], head["version"], head["bits"], head["count"], head["bitorder"]) == \
        ("minicaffe-hashdb", 1, 24, 50, "little")
    assert z["codes"].dtype == np.uint8 and z["codes"].shape == (50, 3)
    assert z["labels"].dtype == np.int32
    back = HashIndex.load(db, engine="numpy")
    assert (back.codes == idx.codes).all() and back.labels.tolist() == labels.tolist()
    assert back.paths == paths and back.meta["classes"] == ["a", "b", "c"]
    assert back.meta["history"][0]["command"] == "test"
    assert [x.tolist() for x in back.search(codes[:5], 4)] == \
        [x.tolist() for x in idx.search(codes[:5], 4)]
    assert not [f for f in os.listdir(str(tmp_path)) if f != "x.hdb"]   # no temporary left


def _write_zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def test_corrupt_database_files(tmp_path):
    db = str(tmp_path / "good.hdb")
    HashIndex(8).add(np.ones((4, 8))).save(db)
    data = open(db, "rb").read()
    members = {n: zipfile.ZipFile(db).read(n) for n in zipfile.ZipFile(db).namelist()}
    bad = {
        "truncated.hdb": data[:len(data) // 2],
        "empty.hdb": b"",
        "garbage.hdb": b"\x00garbage" * 50,
    }
    for name, blob in bad.items():
        (tmp_path / name).write_bytes(blob)
    _write_zip(str(tmp_path / "header.hdb"), dict(members, **{"header.json": b"{not json"}))
    _write_zip(str(tmp_path / "foreign.hdb"), dict(members, **{"header.json": b'{"format": "x"}'}))
    head = json.loads(members["header.json"])
    head["count"] = 5
    _write_zip(str(tmp_path / "count.hdb"), dict(members, **{"header.json": json.dumps(head)}))
    _write_zip(str(tmp_path / "nopaths.hdb"), {k: v for k, v in members.items() if k != "paths.txt"})
    for name in list(bad) + ["header.hdb", "foreign.hdb", "count.hdb", "nopaths.hdb"]:
        path = str(tmp_path / name)
        with pytest.raises(CaffeError) as e:
            HashIndex.load(path)
        assert str(e.value).startswith(path + ": ") and "\n" not in str(e.value), name


# --- tools/index and tools/search on a tiny ToyHome ------------------------------------------

@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A ToyHome of 3 classes x 3 images per domain, its lists, a training net (for the
    transformation) and two random-weight deploy nets: 16 bits, and 8 bits."""
    base = tmp_path_factory.mktemp("search")
    root = toyhome.generate(str(base / "toyhome"), per_class=3, size=40,
                            classes=toyhome.CLASSES[:3])
    listed = lists.write_lists(root, str(base / "lists"))
    sp = experiments.configure("toyhome", "DAH", source_list="x", target_list="y", root="",
                               num_classes=3, bits=16, snapshot_prefix="z")
    train = str(base / "train.prototxt")
    open(train, "w").write(str(sp.net_param))
    nets = {}
    for bits, seed in ((16, 1), (8, 2), (16, 3)):
        p = protoio.read_net_param(experiments.family_file("toyhome", "hash_deploy.prototxt"))
        for lp in p.layer:
            if lp.name == "fc8_hash":
                lp.inner_product_param.num_output = bits
        deploy = str(base / ("deploy_%d.prototxt" % bits))
        open(deploy, "w").write(str(p))
        from minicaffe import backend
        backend.set_random_seed(seed)
        net = Net(deploy, TEST)
        weights = str(base / ("w%d_%d.caffemodel" % (bits, seed)))
        net.save(weights)
        net.close()
        nets[bits, seed] = (deploy, weights)
    return {"root": root + "/", "lists": {d.replace(" ", "_"): p for d, p in listed.items()},
            "train": train, "nets": nets, "base": base}


def _index(toy, out, *extra, net=(16, 1)):
    deploy, weights = toy["nets"][net]
    return index_cmd.main(["--model", deploy, "--weights", weights, "--transform_from",
                           toy["train"], "--out", out] + list(extra))


def _error_line(capsys, prog):
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and err[0].startswith(prog + ": error: "), err
    return err[0]


@pytest.mark.integration
def test_index_add_search_round_trip(toy, tmp_path, capsys):
    db = str(tmp_path / "toy.hdb")
    assert _index(toy, db, "--list", toy["lists"]["Art"], "--root", toy["root"]) == 0
    assert "ETA" in capsys.readouterr().err
    assert len(HashIndex.load(db)) == 9
    assert _index(toy, db, "--add", "--list", toy["lists"]["Clipart"], "--root", toy["root"]) == 0
    idx = HashIndex.load(db, engine="numpy")
    assert len(idx) == 18 and idx.meta["classes"] == list(toyhome.CLASSES[:3])
    assert idx.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] * 2
    assert idx.paths[9] == os.path.abspath(toy["root"] + "Clipart/Alarm_Clock/00001.png")
    assert [h["added"] for h in idx.meta["history"]] == [9, 9]
    # the database's codes are the signs of experiments.extract's (tools/evaluate's) codes
    deploy, weights = toy["nets"][16, 1]
    sp = protoio.read_net_param(toy["train"])
    fa, la = experiments.extract(deploy, weights, toy["lists"]["Art"], toy["root"], ["code"], sp)
    fc, lc = experiments.extract(deploy, weights, toy["lists"]["Clipart"], toy["root"], ["code"], sp)
    assert (unpack_codes(idx.codes, 16) == metrics.binarize(np.concatenate([fa["code"], fc["code"]]))).all()
    # protocol A over the database's Art part: the mAP of tools/evaluate from our ranking
    art = HashIndex(16, engine="numpy").add(idx.codes[:9], idx.labels[:9])
    _, ind = art.search(fc["code"], k=9)
    ev = experiments.evaluate_hashing(fa["code"], la, fc["code"], lc, 3, with_accuracy=False)
    assert np.nanmean(ranking_average_precisions(ind, lc, la)) == pytest.approx(ev["map_a"], abs=1e-12)

    # tools/search from a list, k = 4, CSV and PNG; the same as the Python API
    out_csv, out_png = str(tmp_path / "res.csv"), str(tmp_path / "res.png")
    assert search_cmd.main(["--db", db, "--list", toy["lists"]["Clipart"], "--root", toy["root"],
                            "-k", "4", "--csv", out_csv, "--png", out_png, "--engine", "numpy"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("query ") == 9 and "4 nearest" in printed
    rows = open(out_csv).read().splitlines()
    assert rows[0] == "query,query_label,rank,distance,path,label" and len(rows) == 1 + 9 * 4
    dist, ind = idx.search(fc["code"], k=4)
    first = rows[1].split(",")
    assert first[0] == os.path.abspath(toy["root"] + "Clipart/Alarm_Clock/00001.png")
    assert [int(first[1]), int(first[2]), int(first[3])] == [0, 1, int(dist[0, 0])]
    assert first[4] == idx.paths[ind[0, 0]] and int(first[5]) == idx.labels[ind[0, 0]]
    got = [(int(r.split(",")[3]), r.split(",")[4]) for r in rows[1:]]
    assert got == [(int(d), idx.paths[i]) for dr, ir in zip(dist, ind) for d, i in zip(dr, ir)]
    from PIL import Image
    with Image.open(out_png) as im:
        assert im.size[0] > 5 * 96 and im.size[1] > 9 * 96

    # --image queries and a radius: each image finds itself at distance 0
    q = [idx.paths[0], idx.paths[12]]
    assert search_cmd.main(["--db", db, "--image"] + q + ["--radius", "0", "--csv", out_csv]) == 0
    rows = [r.split(",") for r in open(out_csv).read().splitlines()[1:]]
    for path in q:
        mine = [r for r in rows if r[0] == path]
        assert mine and all(r[3] == "0" and r[1] == "-1" for r in mine)
        assert path in [r[4] for r in mine]
        same = np.flatnonzero((idx.codes == idx.codes[idx.paths.index(path)]).all(1))
        assert [r[4] for r in mine] == [idx.paths[i] for i in same]


@pytest.mark.integration
def test_encode_images_python_api(toy):
    deploy, weights = toy["nets"][16, 1]
    enc = encode_images(deploy, weights, toy["lists"]["Product"], toy["train"], root=toy["root"],
                        extra_blobs=["fc7"], progress=False)
    assert enc.codes.shape == (9, 16) and enc.features["fc7"].shape == (9, 256)
    assert enc.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    bare = encode_images(deploy, weights, enc.paths[:2], toy["train"], progress=False)
    np.testing.assert_allclose(bare.codes, enc.codes[:2], atol=1e-3)   # other batch size
    assert (pack_codes(bare.codes) == pack_codes(enc.codes[:2])).all()
    assert bare.labels.tolist() == [-1, -1] and bare.net == enc.net
    with pytest.raises(CaffeError, match="no image transformation.*--transform_from"):
        encode_images(deploy, weights, enc.paths[:2], None)


@pytest.mark.integration
def test_index_folder_layouts(toy, tmp_path):
    db = str(tmp_path / "all.hdb")
    assert _index(toy, db, "--folder", toy["root"]) == 0          # <Domain>/<Class>/<image>
    idx = HashIndex.load(db)
    domains, classes, images = lists.scan(toy["root"])
    want = [(os.path.abspath(toy["root"] + p), lab) for d in domains for p, lab in images[d]]
    assert list(zip(idx.paths, idx.labels.tolist())) == want and len(idx) == 36
    assert _index(toy, db, "--folder", toy["root"] + "Product") == 0   # <Class>/<image>
    idx = HashIndex.load(db)
    assert len(idx) == 9 and idx.meta["classes"] == list(toyhome.CLASSES[:3])
    assert idx.paths[3] == os.path.abspath(toy["root"] + "Product/Bike/00001.png")


@pytest.mark.integration
def test_bad_inputs_one_line_nothing_written(toy, tmp_path, capsys):
    db = str(tmp_path / "toy.hdb")
    assert _index(toy, db, "--list", toy["lists"]["Art"], "--root", toy["root"]) == 0
    before = open(db, "rb").read()
    capsys.readouterr()
    query = ["--image", toy["root"] + "Art/Bike/00001.png"]
    out_csv = str(tmp_path / "out.csv")
    # a query net of another bit length, and another net (other weights) of the same length
    deploy8, weights8 = toy["nets"][8, 2]
    assert search_cmd.main(["--db", db, "--model", deploy8, "--weights", weights8, "--csv",
                            out_csv] + query) == 2
    assert db + " holds 16-bit codes; the query net's blob gives 8 bits" in _error_line(capsys, "search")
    assert search_cmd.main(["--db", db, "--weights", toy["nets"][16, 3][1], "--csv",
                            out_csv] + query) == 2
    assert db + " was built with another net: its weights differ" in _error_line(capsys, "search")
    # --add with another net or bit length changes nothing
    assert _index(toy, db, "--add", "--list", toy["lists"]["Clipart"], "--root", toy["root"],
                  net=(8, 2)) == 2
    assert db + " holds 16-bit codes" in _error_line(capsys, "index")
    assert _index(toy, db, "--add", "--list", toy["lists"]["Clipart"], "--root", toy["root"],
                  net=(16, 3)) == 2
    assert "weights differ" in _error_line(capsys, "index")
    # an unreadable query image
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert search_cmd.main(["--db", db, "--image", str(bad), "--csv", out_csv]) == 2
    assert "cannot read query image %s" % bad in _error_line(capsys, "search")
    assert search_cmd.main(["--db", db, "--image", str(tmp_path / "none.png")]) == 2
    assert "none.png: no such file" in _error_line(capsys, "search")
    # a corrupt database: truncated, and a garbage header; --add to it is refused too
    trunc = str(tmp_path / "trunc.hdb")
    open(trunc, "wb").write(before[:len(before) - 40])
    assert search_cmd.main(["--db", trunc, "--csv", out_csv] + query) == 2
    assert trunc + ": not a readable hash database" in _error_line(capsys, "search")
    assert _index(toy, trunc, "--add", "--list", toy["lists"]["Clipart"], "--root", toy["root"]) == 2
    assert trunc + ": not a readable hash database" in _error_line(capsys, "index")
    assert open(trunc, "rb").read() == before[:len(before) - 40]
    garbled = str(tmp_path / "garbled.hdb")
    with zipfile.ZipFile(db) as src, zipfile.ZipFile(garbled, "w") as dst:
        for n in src.namelist():
            dst.writestr(n, b"\xff\xfe garbage" if n == "header.json" else src.read(n))
    assert search_cmd.main(["--db", garbled] + query) == 2
    assert garbled + ": not a readable hash database" in _error_line(capsys, "search")
    # an --out folder that does not exist; no transformation given
    missing = str(tmp_path / "nodir" / "x.hdb")
    assert _index(toy, missing, "--list", toy["lists"]["Art"], "--root", toy["root"]) == 2
    assert "cannot write %s: the folder" % missing in _error_line(capsys, "index")
    deploy, weights = toy["nets"][16, 1]
    assert index_cmd.main(["--model", deploy, "--weights", weights, "--list", toy["lists"]["Art"],
                           "--root", toy["root"], "--out", db]) == 2
    assert "no image transformation" in _error_line(capsys, "index")
    assert search_cmd.main(["--db", db, "--csv", str(tmp_path / "nodir" / "o.csv")] + query) == 2
    assert "cannot write" in _error_line(capsys, "search")
    assert open(db, "rb").read() == before and not os.path.exists(out_csv)
    assert sorted(os.listdir(str(tmp_path))) == ["bad.png", "garbled.hdb", "toy.hdb", "trunc.hdb"]


@pytest.mark.integration
def test_evaluate_and_extract_features_transform_and_out_checked_first(toy, tmp_path, capsys):
    from minicaffe.commands import evaluate as evaluate_cmd, extract_features as extract_cmd
    deploy, weights = toy["nets"][16, 1]
    net = ["--model", deploy, "--weights", weights, "--root", toy["root"]]
    art, clip = toy["lists"]["Art"], toy["lists"]["Clipart"]
    # no transformation given: one line naming both ways, nothing written
    assert extract_cmd.main(net + ["--list", art, "--blob", "fc7", "--out", str(tmp_path / "f")]) == 2
    assert "no image transformation for %s: pass --transform_from" % deploy in _error_line(capsys, "extract_features")
    assert evaluate_cmd.main(net + ["--source", art, "--target", clip]) == 2
    assert "--raw to feed unnormalised pixels resized to 32x32" in _error_line(capsys, "evaluate")
    # --out into a missing folder fails before anything is read (the list does not exist either)
    nodir = str(tmp_path / "nodir" / "f")
    assert extract_cmd.main(net + ["--list", "missing.txt", "--blob", "fc7", "--out", nodir,
                                   "--transform_from", toy["train"]]) == 2
    assert "cannot write %s_<blob>.npy: the folder %s does not exist" % (nodir, os.path.dirname(nodir)) \
        in _error_line(capsys, "extract_features")
    assert evaluate_cmd.main(net + ["--source", "missing.txt", "--target", clip, "--out", nodir,
                                    "--transform_from", toy["train"]]) == 2
    assert "cannot write %s_pr.csv" % nodir in _error_line(capsys, "evaluate")
    assert os.listdir(str(tmp_path)) == []
    # the training net's transformation gives what tools/index encodes; --raw other numbers
    out = str(tmp_path / "f")
    assert extract_cmd.main(net + ["--list", art, "--blob", "code", "--out", out,
                                   "--transform_from", toy["train"]]) == 0
    enc = encode_images(deploy, weights, art, toy["train"], root=toy["root"], progress=False)
    np.testing.assert_allclose(np.load(out + "_code.npy"), enc.codes, atol=1e-5)
    assert np.load(out + "_labels.npy").tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert extract_cmd.main(net + ["--list", art, "--blob", "code", "--out", out, "--raw"]) == 0
    raw = encode_images(deploy, weights, art, root=toy["root"], raw=True, progress=False)
    np.testing.assert_allclose(np.load(out + "_code.npy"), raw.codes, atol=1e-5)
    assert np.abs(raw.codes - enc.codes).max() > 0.1
    capsys.readouterr()
    assert evaluate_cmd.main(net + ["--source", art, "--target", clip, "--transform_from",
                                    toy["train"]]) == 0
    tgt = encode_images(deploy, weights, clip, toy["train"], root=toy["root"], progress=False)
    want = metrics.mean_average_precision(metrics.binarize(tgt.codes), tgt.labels,
                                          metrics.binarize(enc.codes), enc.labels)
    assert "mAP protocol A (target queries, source database): %.4f" % want in capsys.readouterr().out
