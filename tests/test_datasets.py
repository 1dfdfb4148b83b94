"""ToyHome (the embedded Office-Home stand-in) and the list-file maker.

Small versions are generated in tmp_path; the domain-gap test renders all classes at 32x32 in
memory and checks, with a cheap linear model, that a classifier trained on one domain does
clearly worse on another than one trained on the other domain itself.
"""
import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from minicaffe.commands import make_dataset, make_lists
from minicaffe.datasets import lists, toyhome
from minicaffe.errors import CaffeError
from minicaffe.transformer import read_image_list

SMALL = dict(per_class=3, size=32, classes=("Bike", "Alarm_Clock", "Mug"))
# sha256 of toyhome.render("Art", "Bike", 3, size=32) as the first release drew it
TOYHOME_ART_BIKE_3 = "e615d44a4d4a62eb58ccd560218ec21ca5cb26992233c0bf2722c9ff2c219387"


def tree_digest(root):
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            h.update(os.path.relpath(os.path.join(d, f), root).encode())
            with open(os.path.join(d, f), "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def test_constants():
    assert toyhome.DOMAINS == ("Art", "Clipart", "Product", "Real World")
    assert len(toyhome.CLASSES) >= 10 and list(toyhome.CLASSES) == sorted(toyhome.CLASSES)


def test_layout(tmp_path):
    root = toyhome.generate(tmp_path / "th", seed=0, **SMALL)
    assert root == str(tmp_path / "th")
    assert sorted(os.listdir(root)) == sorted(list(toyhome.DOMAINS) + [toyhome.MANIFEST])
    for d in toyhome.DOMAINS:
        assert sorted(os.listdir(os.path.join(root, d))) == ["Alarm_Clock", "Bike", "Mug"]
        for c in SMALL["classes"]:
            files = sorted(os.listdir(os.path.join(root, d, c)))
            assert files == ["00001.png", "00002.png", "00003.png"]
            with Image.open(os.path.join(root, d, c, files[0])) as im:
                assert (im.format, im.mode, im.size) == ("PNG", "RGB", (32, 32))
    man = toyhome.read_manifest(root)
    assert man["images"] == 4 * 3 * 3 and man["classes"] == ["Alarm_Clock", "Bike", "Mug"]
    assert (man["seed"], man["per_class"], man["size"]) == (0, 3, 32)
    assert not [f for f in os.listdir(tmp_path) if f != "th"]  # no temporary folders left


def test_deterministic(tmp_path):
    a = toyhome.generate(tmp_path / "a", seed=3, **SMALL)
    b = toyhome.generate(tmp_path / "b", seed=3, **SMALL)
    c = toyhome.generate(tmp_path / "c", seed=4, **SMALL)
    assert tree_digest(a) == tree_digest(b)
    assert tree_digest(a) != tree_digest(c)
    pa = os.path.join(a, "Real World", "Mug", "00002.png")
    pc = os.path.join(c, "Real World", "Mug", "00002.png")
    assert np.abs(np.asarray(Image.open(pa), float) - np.asarray(Image.open(pc), float)).mean() > 5
    # an image depends only on (seed, domain, class, index), not on how many are made
    assert np.array_equal(np.asarray(Image.open(pa)),
                          np.asarray(toyhome.render("Real World", "Mug", 1, seed=3, size=32)))


def test_domains_differ():
    ims = {d: np.asarray(toyhome.render(d, "Chair", 0, size=32), float) for d in toyhome.DOMAINS}
    for d in toyhome.DOMAINS:
        for e in toyhome.DOMAINS:
            if d < e:
                assert np.abs(ims[d] - ims[e]).mean() > 10
    # white grounds for clip art and products, not for paintings and photos
    border = lambda a: np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).mean()  # noqa: E731
    assert border(ims["Product"]) > 200
    assert border(ims["Real World"]) < 230


def test_ensure_caches(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    assert toyhome.ensure(root, **SMALL) == str(root)
    before = tree_digest(root)
    calls = []
    real_render = toyhome.render
    monkeypatch.setattr(toyhome, "render", lambda *a, **k: calls.append(a) or real_render(*a, **k))
    assert toyhome.ensure(root, **SMALL) == str(root)
    assert calls == []  # complete and matching: reused
    os.remove(os.path.join(root, toyhome.MANIFEST))  # as if interrupted before the manifest
    toyhome.ensure(root, **SMALL)
    assert len(calls) == 36 and tree_digest(root) == before
    toyhome.ensure(root, **dict(SMALL, per_class=2))  # other parameters: regenerated
    assert toyhome.read_manifest(root)["per_class"] == 2
    assert sorted(os.listdir(os.path.join(root, "Art", "Mug"))) == ["00001.png", "00002.png"]
    calls.clear()
    toyhome.ensure(root, force=True, **dict(SMALL, per_class=2))
    assert len(calls) == 24
    assert sorted(os.listdir(tmp_path)) == ["cache"]


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    real_render = toyhome.render
    count = []

    def flaky(*a, **k):
        count.append(1)
        if len(count) == 5:
            raise KeyboardInterrupt
        return real_render(*a, **k)

    monkeypatch.setattr(toyhome, "render", flaky)
    with pytest.raises(KeyboardInterrupt):
        toyhome.ensure(tmp_path / "th", **SMALL)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(toyhome, "render", real_render)
    root = toyhome.ensure(tmp_path / "th", **SMALL)
    assert toyhome.read_manifest(root)["images"] == 36


def test_foreign_root_untouched(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(CaffeError, match="other files"):
        toyhome.ensure(tmp_path / "mine", **SMALL)
    with pytest.raises(CaffeError, match="other files"):
        toyhome.generate(tmp_path / "mine", **SMALL)
    assert os.listdir(tmp_path / "mine") == ["thesis.tex"]
    with pytest.raises(CaffeError, match="per_class"):
        toyhome.generate(tmp_path / "x", per_class=0)
    with pytest.raises(CaffeError, match="unknown classes"):
        toyhome.generate(tmp_path / "x", classes=["Unicorn"])


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("MINICAFFE_DATA", str(tmp_path))
    assert toyhome.default_root() == os.path.join(str(tmp_path), "toyhome-v1")
    assert toyhome.default_root(seed=2, per_class=5, size=32) == \
        os.path.join(str(tmp_path), "toyhome-v1-s2-n5-32px")
    monkeypatch.delenv("MINICAFFE_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert toyhome.default_root() == os.path.join(str(tmp_path), "xdg", "minicaffe", "toyhome-v1")


def test_make_dataset_command(tmp_path, capsys):
    root = str(tmp_path / "th")
    argv = ["--root", root, "--per-class", "2", "--size", "16", "--seed", "1"]
    assert make_dataset.main(argv) == 0
    assert capsys.readouterr().out.strip() == root
    man = toyhome.read_manifest(root)
    assert (man["seed"], man["per_class"], man["size"], man["images"]) == (1, 2, 16, 96)
    assert make_dataset.main(["--root", root, "--per-class", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("make_dataset: error:") and "\n" not in err


def office_home_like(root):
    """A miniature of OfficeHomeDataset_10072016: JPEGs, a class missing from one domain,
    loose files at the top, a non-image file."""
    tiny = Image.new("RGB", (8, 8), (200, 10, 10))
    layout = {"Art": ["Mug", "Alarm_Clock"], "Clipart": ["Alarm_Clock", "Bike", "Mug"],
              "Real World": ["Bike", "Mug", "Alarm_Clock"]}
    for d, classes in layout.items():
        for c in classes:
            os.makedirs(os.path.join(root, d, c))
            for k in (2, 1):
                tiny.save(os.path.join(root, d, c, "%05d.jpg" % k))
    with open(os.path.join(root, "ImageInfo.csv"), "w") as f:
        f.write("x\n")
    with open(os.path.join(root, "Art", "Mug", "Thumbs.db"), "w") as f:
        f.write("x\n")
    os.makedirs(os.path.join(root, "empty_domain", "Nothing"))
    return root


def test_lists_office_home_layout(tmp_path):
    root = office_home_like(str(tmp_path / "OfficeHomeDataset_10072016"))
    domains, classes, _ = lists.scan(root)
    assert domains == ["Art", "Clipart", "Real World"]
    assert classes == ["Alarm_Clock", "Bike", "Mug"]
    out = str(tmp_path / "lists")
    written = lists.write_lists(root, out)
    assert sorted(os.listdir(out)) == ["Art.txt", "Clipart.txt", "Real_World.txt", "classes.txt"]
    assert open(os.path.join(out, "classes.txt")).read() == "Alarm_Clock\nBike\nMug\n"
    rw = read_image_list(written["Real World"])
    assert [(p, lab) for p, lab, _ in rw] == [
        ("Real World/Alarm_Clock/00001.jpg", 0), ("Real World/Alarm_Clock/00002.jpg", 0),
        ("Real World/Bike/00001.jpg", 1), ("Real World/Bike/00002.jpg", 1),
        ("Real World/Mug/00001.jpg", 2), ("Real World/Mug/00002.jpg", 2)]
    art = [(p, lab) for p, lab, _ in read_image_list(written["Art"])]
    assert art[-1] == ("Art/Mug/00002.jpg", 2) and len(art) == 4  # Thumbs.db left out
    for p, _, _ in rw:  # root_folder + path finds every image
        assert os.path.isfile(root + "/" + p)
    # labels do not depend on which domains are written
    only = lists.write_lists(root, str(tmp_path / "one"), domains=["real_world"], absolute=True)
    assert list(only) == ["Real World"]
    first = read_image_list(only["Real World"])[0]
    assert first[0] == os.path.abspath(root) + "/Real World/Alarm_Clock/00001.jpg"
    assert first[1] == 0


def test_lists_written_by_concurrent_jobs_do_not_collide(tmp_path):
    # Two jobs writing the same lists at once (tools/reproduce --jobs, two studies on one data set)
    # once renamed each other's "<list>.tmp" and one died with FileNotFoundError.
    import threading
    root = office_home_like(str(tmp_path / "oh"))
    out, errors = str(tmp_path / "lists"), []

    def job():
        try:
            for _ in range(30):
                lists.write_lists(root, out)
        except Exception as exc:  # noqa: BLE001 - the test reports any failure
            errors.append(exc)
    threads = [threading.Thread(target=job) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(os.listdir(out)) == ["Art.txt", "Clipart.txt", "Real_World.txt", "classes.txt"]
    assert open(os.path.join(out, "classes.txt")).read() == "Alarm_Clock\nBike\nMug\n"


def test_lists_toyhome_and_command(tmp_path, capsys):
    root = toyhome.generate(tmp_path / "th", **SMALL)
    out = str(tmp_path / "lists")
    assert make_lists.main([root, out, "--domains", "Real World", "Art"]) == 0
    printed = capsys.readouterr().out.split("\n")
    assert printed[:2] == [os.path.join(out, "Real_World.txt"), os.path.join(out, "Art.txt")]
    entries = read_image_list(os.path.join(out, "Real_World.txt"))
    assert len(entries) == 9
    assert [lab for _, lab, _ in entries] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # absolute paths: a data layer with the shipped root_folder: "" opens them from anywhere
    assert entries[3][0] == os.path.abspath(root) + "/Real World/Bike/00001.png"
    assert all(os.path.isfile(p) for p, _, _ in entries)
    classes = open(os.path.join(out, "classes.txt")).read().split()
    assert classes == sorted(SMALL["classes"])
    assert all(p.split("/")[-2] == classes[lab] for p, lab, _ in entries)
    # --relative: paths below ROOT, for root_folder: "ROOT/" or convert_imageset ROOT/ LIST
    assert make_lists.main([root, out, "--domains", "Real World", "--relative"]) == 0
    rel = read_image_list(os.path.join(out, "Real_World.txt"))
    assert [(p, lab) for p, lab, _ in rel] == [
        (p[len(os.path.abspath(root)) + 1:], lab) for p, lab, _ in entries]
    assert rel[3][0] == "Real World/Bike/00001.png"
    assert make_lists.main([root, out, "--relative", "--absolute"]) == 2


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "no such directory"),
    (lambda p: os.makedirs(os.path.join(p, "Art", "Mug")), "no images found"),
])
def test_make_lists_errors(tmp_path, capsys, setup, message):
    root = str(tmp_path / "root")
    setup(root)
    assert make_lists.main([root, str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("make_lists: error:") and message in err and "\n" not in err


def test_make_lists_unknown_domain(tmp_path, capsys):
    root = office_home_like(str(tmp_path / "oh"))
    assert make_lists.main([root, str(tmp_path / "out"), "--domains", "Sketch"]) == 2
    assert "unknown domain 'Sketch'" in capsys.readouterr().err


# --- the domain gap, measured with a cheap model --------------------------------------------

def _features(im):
    """16 x 16 pixels, and a HOG (9 unsigned orientations, 4 x 4 and 2 x 2 cells) of 32 x 32."""
    a = np.asarray(im.resize((32, 32), Image.BOX), np.float32) / 255
    pix = a.reshape(16, 2, 16, 2, 3).mean((1, 3)).ravel()
    gx, gy = np.zeros_like(a), np.zeros_like(a)
    gx[:, 1:-1], gy[1:-1] = a[:, 2:] - a[:, :-2], a[2:] - a[:-2]
    mag = np.hypot(gx, gy)
    ch = mag.argmax(2)[..., None]  # the strongest colour channel, as Dalal and Triggs
    ang = np.arctan2(np.take_along_axis(gy, ch, 2), np.take_along_axis(gx, ch, 2))[..., 0]
    mag = np.take_along_axis(mag, ch, 2)[..., 0]
    b = np.minimum((ang % np.pi / np.pi * 9).astype(int), 8)
    hogs = []
    for cell in (8, 16):
        h = np.zeros((32 // cell, 32 // cell, 9), np.float32)
        idx = np.arange(32) // cell
        np.add.at(h, (idx[:, None], idx[None, :], b), mag)
        hogs.append(h.ravel() / (np.linalg.norm(h) + 1e-6))
    return np.concatenate([pix] + hogs)


def _logistic_regression(x, y, classes, iters=200, lam=1e-3, lr=1.0):
    """Multinomial logistic regression on standardised features, full-batch gradient descent."""
    mu, sd = x.mean(0), x.std(0) + 1e-2
    z = ((x - mu) / sd).astype(np.float32)
    w = np.zeros((z.shape[1], classes), np.float32)
    b = np.zeros(classes, np.float32)
    onehot = np.eye(classes, dtype=np.float32)[y]
    for _ in range(iters):
        s = z @ w + b
        p = np.exp(s - s.max(1, keepdims=True))
        g = (p / p.sum(1, keepdims=True) - onehot) / len(y)
        w -= lr * (z.T @ g * (10.0 / z.shape[1]) + lam * w)
        b -= lr * g.sum(0)
    return lambda q: ((q - mu) / sd @ w + b).argmax(1)


def test_domain_gap():
    """For all 12 ordered pairs: trained on half of the source (source-only) vs on half of
    the target (target-supervised), the same number of labels, tested on the other half of
    the target. The source-only accuracy must be clearly lower."""
    n, C = 24, len(toyhome.CLASSES)
    y = np.repeat(np.arange(C), n)
    train = np.arange(n * C) % n < n // 2
    feats = {d: np.array([_features(toyhome.render(d, c, k, size=32))
                          for c in toyhome.CLASSES for k in range(n)]) for d in toyhome.DOMAINS}
    model = {d: _logistic_regression(feats[d][train], y[train], C) for d in toyhome.DOMAINS}
    acc = {(s, t): float((model[s](feats[t][~train]) == y[~train]).mean())
           for s in toyhome.DOMAINS for t in toyhome.DOMAINS}
    report = "\n".join("%s -> %s: source-only %.3f, target-supervised %.3f"
                       % (s, t, acc[s, t], acc[t, t])
                       for s in toyhome.DOMAINS for t in toyhome.DOMAINS if s != t)
    for t in toyhome.DOMAINS:
        assert acc[t, t] > 3 / C, report  # every domain is learnable
        for s in toyhome.DOMAINS:
            if s != t:
                assert acc[s, t] < acc[t, t] - 0.1, report


def test_things_are_generic_classes(tmp_path, monkeypatch):
    """The pretraining set's 64 things: none is a ToyHome class, they lay out like ToyHome,
    each image is a pure function of its arguments, and they get their own cache folder."""
    assert len(toyhome.THINGS) == 64 and not set(toyhome.THINGS) & set(toyhome.CLASSES)
    root = toyhome.generate(tmp_path / "things", per_class=2, size=32, classes=toyhome.THINGS[:3])
    assert toyhome.read_manifest(root)["classes"] == list(toyhome.THINGS[:3])
    assert sorted(os.listdir(os.path.join(root, "Clipart"))) == list(toyhome.THINGS[:3])
    im = np.asarray(Image.open(os.path.join(root, "Product", "Thing_01", "00002.png")))
    assert np.array_equal(im, np.asarray(toyhome.render("Product", "Thing_01", 1, size=32)))
    # ToyHome's own images are unchanged by the shared rendering path (pinned bytes)
    h = hashlib.sha256(toyhome.render("Art", "Bike", 3, size=32).tobytes()).hexdigest()
    assert h == TOYHOME_ART_BIKE_3
    monkeypatch.setenv("MINICAFFE_DATA", str(tmp_path))
    assert toyhome.default_root(classes=toyhome.THINGS).endswith("toyhome-v1-things")
    assert toyhome.default_root(classes=("Mug", "Bike")) != toyhome.default_root()
    assert toyhome.default_root(classes=toyhome.CLASSES) == toyhome.default_root()
    with pytest.raises(CaffeError, match="Thing_63"):
        toyhome.render("Art", "Thing_64", 0)


def test_things_are_learnable_and_distinct():
    """Classes of the pretraining set are told apart by a linear model on cheap features
    across all four domain styles mixed (far above chance, 1/16), so a trunk trained on them
    learns shape features shared by every style."""
    classes, n = toyhome.THINGS[:16], 16
    y = np.repeat(np.arange(len(classes)), n)
    x = np.array([_features(toyhome.render(toyhome.DOMAINS[k % 4], c, k, size=32))
                  for c in classes for k in range(n)])
    train = np.arange(len(y)) % n < n // 2
    acc = (_logistic_regression(x[train], y[train], len(classes))(x[~train]) == y[~train]).mean()
    assert acc > 0.3, acc
