"""minicaffe.dah.figures: the statistics and rankings against brute force, the log parser
against a real training log, and every figure as a valid PNG."""
import itertools
import logging
import math
import os
import sys

import numpy as np
import pytest
from PIL import Image

import minicaffe as caffe
from minicaffe import protoio
from minicaffe.commands import parse_log
from minicaffe.commands._cli import GlogFormatter
from minicaffe.dah import figures
from minicaffe.errors import CaffeError
from minicaffe.hashing import metrics

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
DAH_LAYERS = os.path.join(ROOT, "prototxt", "dah_layers")


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib", reason="the figures need matplotlib "
                                                    "(pip install 'minicaffe[plot]')")


def assert_png(path, min_size=(200, 150)):
    assert os.path.isfile(path)
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.verify()
    with Image.open(path) as img:
        assert img.size[0] >= min_size[0] and img.size[1] >= min_size[1], img.size
        assert len(img.getcolors(1 << 20) or range(1 << 20)) > 20  # not a blank canvas


def _panel(rng, title, shift, n=15, classes=4, dim=6):
    protos = rng.normal(size=(classes, dim)) * 3
    ls, lt = np.repeat(np.arange(classes), n), np.repeat(np.arange(classes), n)
    return {"title": title,
            "source": protos[ls] + rng.normal(size=(len(ls), dim)), "source_labels": ls,
            "target": protos[lt] + shift + rng.normal(size=(len(lt), dim)), "target_labels": lt}


# ---------------------------------------------------------------------------- statistics

def _mmd2_brute(x, y):
    z = list(x) + list(y)
    d2 = lambda a, b: sum((float(p) - float(q)) ** 2 for p, q in zip(a, b))  # noqa: E731
    sigma2 = float(np.median([d2(a, b) for a, b in itertools.combinations(z, 2)]))
    k = lambda a, b: math.exp(-d2(a, b) / (2 * sigma2))  # noqa: E731
    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(a, b) for a in x for b in y) / (n * m)
    return kxx + kyy - 2 * kxy


def test_mmd2_matches_brute_force():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(9, 3)) + 0.8
    assert figures.mmd2(x, y) == pytest.approx(_mmd2_brute(x, y), rel=1e-10, abs=1e-12)
    # more rows than max_n: the documented subsample (x drawn first), then the same formula
    x, y = rng.normal(size=(30, 3)), rng.normal(size=(25, 3))
    r = np.random.RandomState(5)
    xs = x[np.sort(r.choice(30, 10, replace=False))]
    ys = y[np.sort(r.choice(25, 10, replace=False))]
    assert figures.mmd2(x, y, seed=5, max_n=10) == pytest.approx(_mmd2_brute(xs, ys), rel=1e-10)
    # same distribution -> near 0; far apart -> clearly positive
    big = rng.normal(size=(400, 5))
    assert abs(figures.mmd2(big[:200], big[200:])) < 0.02
    assert figures.mmd2(big[:200], big[200:] + 3.0) > 0.3


def test_centroid_ratio_matches_brute_force():
    rng = np.random.default_rng(1)
    xs, ls = rng.normal(size=(20, 3)), rng.integers(0, 3, 20)
    xt, lt = rng.normal(size=(15, 3)), rng.integers(0, 4, 15)  # class 3 has no source rows
    cs = {c: xs[ls == c].mean(0) for c in set(ls) & set(lt)}
    ct = {c: xt[lt == c].mean(0) for c in cs}
    same = np.mean([np.linalg.norm(cs[c] - ct[c]) for c in cs])
    diff = np.mean([np.linalg.norm(cs[a] - ct[b]) for a in cs for b in cs if a != b])
    assert figures.centroid_ratio(xs, ls, xt, lt) == pytest.approx(same / diff, rel=1e-12)
    assert math.isnan(figures.centroid_ratio(xs, np.zeros(20), xt, np.zeros(15)))


def test_pca_coordinates_are_numpy_svd_projection():
    rng = np.random.default_rng(2)
    panels = [_panel(rng, "a", 2.0), _panel(rng, "b", 0.0, dim=1)]
    for p, d in zip(panels, figures.embedding_data(panels)):
        z = np.concatenate([p["source"], p["target"]])
        u, s, _ = np.linalg.svd(z - z.mean(0), full_matrices=False)
        ref = np.zeros((len(z), 2))
        ref[:, :min(2, len(s))] = (u * s)[:, :2]
        got = np.concatenate([d["source"], d["target"]])
        assert got.shape == (len(z), 2)
        for j in range(2):  # each axis up to its sign
            sign = 1.0 if np.dot(got[:, j], ref[:, j]) >= 0 else -1.0
            np.testing.assert_allclose(got[:, j], sign * ref[:, j], atol=1e-9)
        assert d["mmd2"] == figures.mmd2(p["source"], p["target"])


def test_pca_subspace_iteration_for_large_inputs_matches_svd(monkeypatch):
    """Large inputs take subspace iteration instead of a full SVD: the same coordinates."""
    rng = np.random.default_rng(8)
    x = (rng.normal(size=(300, 40)) * np.geomspace(6, 0.5, 40)) @ rng.normal(size=(40, 60))
    panel = {"title": "", "source": x[:150], "source_labels": np.zeros(150),
             "target": x[150:], "target_labels": np.zeros(150)}
    exact = figures.embedding_data([panel])[0]
    monkeypatch.setattr(figures, "_EXACT_SVD_MAX", 10)
    fast = figures.embedding_data([panel])[0]
    for k in ("source", "target"):
        np.testing.assert_allclose(fast[k], exact[k], atol=1e-6 * np.abs(exact[k]).max())


def test_tsne_embedding_shape():
    pytest.importorskip("sklearn",
                        reason="t-SNE needs scikit-learn (pip install 'minicaffe[tsne]')")
    p = _panel(np.random.default_rng(3), "t", 1.0, n=8)
    d = figures.embedding_data([p], method="tsne", seed=0)[0]
    assert d["source"].shape == (32, 2) and d["target"].shape == (32, 2)
    assert np.isfinite(d["source"]).all()


def test_hamming_ranking_matches_brute_force():
    rng = np.random.default_rng(4)
    q = rng.normal(size=(6, 4))            # 4 bits over 40 items: many ties
    db = rng.normal(size=(40, 4))
    db[7] = 0.0                            # sgn 0 = +1
    got = figures.hamming_ranking(q, db, 12)
    bq, bdb = np.where(q >= 0, 1, -1), np.where(db >= 0, 1, -1)
    for i in range(len(q)):
        dist = [int(np.sum(bq[i] != bdb[j])) for j in range(len(db))]
        ref = sorted(range(len(db)), key=lambda j: (dist[j], j))[:12]
        assert got[i].tolist() == ref
    np.testing.assert_array_equal(figures.hamming_ranking(bq, bdb, 12), got)
    # the full ranking is the one metrics scores: the same average precisions
    ql, dl = rng.integers(0, 3, 6), rng.integers(0, 3, 40)
    full = figures.hamming_ranking(q, db, 40)
    hits = ql[:, None] == dl[full]
    ap = [np.mean(np.cumsum(h)[h] / (np.flatnonzero(h) + 1)) for h in hits]
    np.testing.assert_allclose(ap, metrics.average_precisions(bq, ql, bdb, dl))
    with pytest.raises(ValueError, match="k = 41"):
        figures.hamming_ranking(q, db, 41)


# ---------------------------------------------------------------------------- loss curves

def _train_log(path, net, iters=20, display=4):
    """Train ``net`` for a few iterations with minicaffe's glog handler writing ``path``."""
    log = logging.getLogger("minicaffe")
    level = log.level
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(GlogFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        sp = protoio.read_solver_param(os.path.join(DAH_LAYERS, "solver.prototxt"))
        sp.net, sp.max_iter, sp.display = net, iters, display
        solver = caffe.Solver(sp)
        solver.solve()
        weights = {n: solver.net.blob_loss_weights.get(n, 0.0) for n in solver.net.outputs}
        solver.net.close()
    finally:
        log.removeHandler(handler)
        handler.close()
        log.setLevel(level)
    return weights


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """A DAH log of the dah_layers demo net and a NoDA one (its adaptation weights set to 0)."""
    d = tmp_path_factory.mktemp("logs")
    dah_net = os.path.join(DAH_LAYERS, "train.prototxt")
    with open(dah_net) as f:
        text = f.read()
    noda = text
    for old in ('top: "mmd_fc" loss_weight: 1', 'top: "mmd_hash" loss_weight: 1',
                'loss_weight: 1 entropy_loss_param'):
        assert old in noda
        noda = noda.replace(old, old.replace("loss_weight: 1", "loss_weight: 0"))
    noda_net = str(d / "noda.prototxt")
    with open(noda_net, "w") as f:
        f.write(noda)
    out = {}
    for name, net in (("DAH", dah_net), ("NoDA", noda_net)):
        path = str(d / (name + ".log"))
        out[name] = (path, _train_log(path, net))
    return out


def test_read_loss_terms_finds_every_term(logs):
    path, weights = logs["DAH"]
    got = figures.read_loss_terms(path)
    assert set(got["terms"]) == {n for n, w in weights.items() if w}
    assert set(got["terms"]) == {"domain_loss", "entropy", "hash_loss", "mmd_fc", "mmd_hash"}
    assert got["weights"] == {n: pytest.approx(w) for n, w in weights.items() if w}
    train, _ = parse_log.parse_log(path)   # Caffe's parser: the unweighted values
    for name, (its, vals) in got["terms"].items():
        assert its.tolist() == [0, 4, 8, 12, 16] == [r["NumIters"] for r in train]
        np.testing.assert_allclose(vals, [weights[name] * r[name] for r in train], rtol=1e-5)
    its, total = got["total"]
    assert its.tolist() == [0, 4, 8, 12, 16, 20]   # the display lines and the final loss
    assert np.all(np.isfinite(total)) and total[0] > 0
    # NoDA: the outputs with weight 0 are not loss terms
    assert set(figures.read_loss_terms(logs["NoDA"][0])["terms"]) == {"domain_loss", "hash_loss"}


def test_loss_curves_png(mpl, logs, tmp_path):
    out = figures.loss_curves({k: v[0] for k, v in logs.items()}, str(tmp_path / "loss.png"),
                              title="DAH vs NoDA")
    assert_png(out, (800, 400))
    assert_png(figures.loss_curves(logs["NoDA"][0], str(tmp_path / "one.png")), (500, 400))
    empty = tmp_path / "empty.log"
    empty.write_text("I1201 10:00:00.000000 1 solver.py:1] Solving x\n")
    with pytest.raises(CaffeError, match="no \"Train net output\""):
        figures.loss_curves(str(empty), str(tmp_path / "x.png"))


# ---------------------------------------------------------------------------- pictures

def test_embedding_png(mpl, tmp_path):
    rng = np.random.default_rng(5)
    panels = [_panel(rng, "trunk", 3.0), _panel(rng, "NoDA", 1.0), _panel(rng, "DAH", 0.1)]
    backend = mpl.get_backend()
    out = figures.embedding(panels, str(tmp_path / "emb.png"), title="fc7, Ar → Cl", ncols=2)
    assert_png(out, (600, 600))
    assert mpl.get_backend() == backend   # an own Agg canvas: the user's backend untouched
    with pytest.raises(ValueError, match="panel 0 has no 'target'"):
        figures.embedding([{"title": "x", "source": np.zeros((3, 2)), "source_labels": [0, 0, 0]}],
                          str(tmp_path / "bad.png"))


def _images(tmp_path, n, classes):
    """``n`` small images per class under tmp_path/img, as (relative path, label)."""
    entries = []
    for c in range(classes):
        for i in range(n):
            rel = "img/c%d_%d.png" % (c, i)
            os.makedirs(tmp_path / "img", exist_ok=True)
            color = tuple(int(v) for v in np.random.default_rng([c, i]).integers(0, 255, 3))
            Image.new("RGB", (40 + 7 * i, 32), color).save(tmp_path / rel)
            entries.append((rel, c))
    return entries


def test_retrieval_png(mpl, tmp_path):
    db = _images(tmp_path, 4, 3)
    queries = [db[0], db[5], db[10]]
    ranking = np.array([[1, 2, 5, 3, 9], [4, 6, 7, 0, 1], [8, 9, 11, 10, 2]])
    out = figures.retrieval(queries, db, ranking, str(tmp_path / "r.png"), k=4,
                            class_names=["mug", "bike", "chair"], root=str(tmp_path),
                            title="target queries")
    assert_png(out, (500, 300))
    with pytest.raises(ValueError, match="at least k"):
        figures.retrieval(queries, db, ranking, str(tmp_path / "r.png"), k=6, root=str(tmp_path))
    with pytest.raises(CaffeError, match="cannot read the image"):
        figures.retrieval([("nope.png", 0)], db, ranking[:1], str(tmp_path / "r.png"), k=2,
                          root=str(tmp_path) + "/")


def test_pair_figures_writes_all_four(mpl, logs, tmp_path):
    rng = np.random.default_rng(6)
    src, tgt = _images(tmp_path, 5, 3), _images(tmp_path, 5, 3)
    lists = {}
    for dom, entries in (("source", src), ("target", tgt)):
        lists[dom] = str(tmp_path / (dom + ".txt"))
        with open(lists[dom], "w") as f:
            f.writelines("%s %d\n" % e for e in entries)
    ls, lt = np.array([l for _, l in src]), np.array([l for _, l in tgt])

    def dom(labels, shift, bits=8):
        return {"fc7": rng.normal(size=(len(labels), 10)) + labels[:, None] + shift,
                "code": np.tanh(rng.normal(size=(len(labels), bits)) + labels[:, None] - 1),
                "label": labels}

    features = {m: {"source": dom(ls, 0.0), "target": dom(lt, s)}
                for m, s in (("NoDA", 1.0), ("DAH", 0.2))}
    features["DANN"] = {d: {"prob": np.ones((15, 3)) / 3, "label": l}
                        for d, l in (("source", ls), ("target", lt))}
    trunk = {"source": {"fc7": rng.normal(size=(15, 10)), "label": ls},
             "target": {"fc7": rng.normal(size=(15, 10)) + 2, "label": lt}}
    out = figures.pair_figures(str(tmp_path / "figs"), features, trunk=trunk, lists=lists,
                               root=str(tmp_path) + "/", logs={k: v[0] for k, v in logs.items()},
                               class_names=["a", "b", "c"], source_name="Ar", target_name="Cl",
                               n_queries=3, k=5)
    assert sorted(out) == ["embedding_codes.png", "embedding_fc7.png", "loss_curves.png",
                           "retrieval.png"]
    for path in out.values():
        assert os.path.dirname(path) == str(tmp_path / "figs")
        assert_png(path)


def test_missing_matplotlib_is_one_line_caffe_error(monkeypatch, tmp_path, logs):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    p = _panel(np.random.default_rng(7), "x", 0.0)
    calls = [lambda: figures.embedding([p], str(tmp_path / "e.png")),
             lambda: figures.loss_curves(logs["DAH"][0], str(tmp_path / "l.png")),
             lambda: figures.retrieval([("a", 0)], [("b", 0)], [[0]], str(tmp_path / "r.png"), k=1)]
    for call in calls:
        with pytest.raises(CaffeError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and "needs matplotlib: pip install 'minicaffe[plot]'" in msg
    assert not list(tmp_path.glob("*.png"))
    figures.embedding_data([p])             # the numbers need no matplotlib
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(CaffeError, match=r"needs scikit-learn: pip install 'minicaffe\[tsne\]'"):
        figures.embedding_data([p], method="tsne")
