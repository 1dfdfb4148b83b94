"""tools/reproduce end to end on a tiny ToyHome: tables, figures, resumability, the generic
trunk as the default start, DAH_authors; the shipped net families are consistent."""
import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from minicaffe import experiments, figures, protoio
from minicaffe.commands import make_trunk, reproduce
from minicaffe.dah import pipeline
from minicaffe.datasets import toyhome
from minicaffe.io import blobproto_to_array


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("toy") / "toyhome")
    toyhome.generate(root, seed=0, per_class=4, size=40, classes=toyhome.CLASSES[:3])
    return root


def _conv1(path):
    net = protoio.read_net_param(path, binary=True)
    return [blobproto_to_array(lp.blobs[0]) for lp in net.layer if lp.name == "conv1"][0]


def test_reproduce_tiny(tiny_root, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "res")
    args = ["--root", tiny_root, "--family", "toyhome", "--pairs", "Ar:Cl", "--bits", "8",
            "--methods", "DAH,NoDA,SuH,DAN,ITQ", "--iters", "2", "--out", out, "--per_class", "2",
            "--no_figures"]
    assert reproduce.main(args) == 0
    printed = capsys.readouterr()
    assert not os.path.exists(os.path.join(out, "figures"))
    assert "Target recognition accuracy" in printed.out and "protocol A" in printed.out
    res = json.load(open(os.path.join(out, "results.json")))["runs"]
    for name in ("DAH_Ar-Cl_8bits", "NoDA_Ar-Cl_8bits", "SuH_Ar-Cl_8bits", "DAN_Ar-Cl", "ITQ_Ar-Cl_8bits"):
        assert res[name]["evaluated"], name
    for key in ("accuracy", "map_a", "map_b"):
        assert 0 <= res["DAH_Ar-Cl_8bits"][key] <= 1
    assert 0 <= res["DAN_Ar-Cl"]["accuracy"] <= 1
    for f in ("accuracy.md", "accuracy.csv", "map_8bits.md", "map_8bits_a.csv", "map_8bits_b.csv",
              "pr_8bits_Clipart.csv"):
        assert os.path.exists(os.path.join(out, f)), f
    # the PR figure needs matplotlib, --no-figures or not (without it: the CSV, one warning)
    assert os.path.exists(os.path.join(out, "pr_8bits_Clipart.png")) == figures.available()
    for name in ("DAH_Ar-Cl_8bits", "DAN_Ar-Cl"):   # Office-Home short names, logs kept
        assert "Iteration 0" in open(os.path.join(out, "logs", name + ".log")).read(), name
    # the embedded protocol: every method from the generic trunk's conv1-fc7, no pretraining
    digest = pipeline.file_digest(make_trunk.default_trunk())
    trunk = _conv1(make_trunk.default_trunk())
    for name in ("DAH_Ar-Cl_8bits", "NoDA_Ar-Cl_8bits", "SuH_Ar-Cl_8bits", "DAN_Ar-Cl"):
        assert res[name]["start"] == "trunk:" + digest, name
        assert res[name]["start_weights"].endswith("start_trunk_%s.caffemodel" % digest)
        conv1 = _conv1(os.path.join(out, "models", name + "_iter_2.caffemodel"))
        assert 0 < np.abs(conv1 - trunk).max() < 0.02, name   # a fresh MSRA fill differs by ~0.1
    assert not any(f.startswith("pretrain") for f in os.listdir(os.path.join(out, "models")))
    md = open(os.path.join(out, "map_8bits.md")).read()
    assert "| Clipart (Art) |" in md and "Protocol B" in md
    acc = open(os.path.join(out, "accuracy.csv")).read().splitlines()
    assert acc[0] == "Method,Ar→Cl,Avg." and acc[1].startswith("DAN,")
    pr = open(os.path.join(out, "pr_8bits_Clipart.csv")).read().splitlines()
    assert pr[0] == "method,radius,precision,recall" and len(pr) == 1 + 4 * 9  # 4 methods × r = 0..8
    # the same model through tools/evaluate and tools/extract_features
    from minicaffe.commands import evaluate, extract_features
    model = os.path.join(out, "models", "DAH_Ar-Cl_8bits_iter_2.caffemodel")
    deploy = str(tmp_path / "deploy.prototxt")
    dep = pipeline._deploy_param(experiments.family_file("toyhome", "hash_deploy.prototxt"), 8, 3)
    open(deploy, "w").write(str(dep))
    train_net = str(tmp_path / "train.prototxt")
    sp = experiments.configure("toyhome", "DAH", source_list="x", target_list="y", root="",
                               num_classes=3, bits=8, snapshot_prefix="z")
    open(train_net, "w").write(str(sp.net_param))
    lists = os.path.join(out, "lists")
    assert evaluate.main(["--model", deploy, "--weights", model, "--root", tiny_root + "/",
                          "--source", os.path.join(lists, "Art.txt"),
                          "--target", os.path.join(lists, "Clipart.txt"),
                          "--transform_from", train_net, "--name", "DAH",
                          "--out", str(tmp_path / "ev")]) == 0
    text = capsys.readouterr().out
    assert "mAP protocol A" in text
    map_a = float(text.split("source database): ")[1].split()[0])
    assert abs(map_a - res["DAH_Ar-Cl_8bits"]["map_a"]) < 1e-4
    assert os.path.exists(str(tmp_path / "ev_pr.png")) == figures.available()
    assert len(open(str(tmp_path / "ev_pr.csv")).read().splitlines()) == 1 + 2 * 9
    with monkeypatch.context() as m:   # without matplotlib: the numbers, the CSV, one warning
        m.setitem(sys.modules, "matplotlib", None)
        assert evaluate.main(["--model", deploy, "--weights", model, "--root", tiny_root + "/",
                              "--source", os.path.join(lists, "Art.txt"),
                              "--target", os.path.join(lists, "Clipart.txt"),
                              "--transform_from", train_net, "--out", str(tmp_path / "ev2")]) == 0
    assert "ev2_pr.png skipped: pip install 'minicaffe[plot]'" in capsys.readouterr().err
    assert os.path.exists(str(tmp_path / "ev2_pr.csv"))
    assert not os.path.exists(str(tmp_path / "ev2_pr.png"))
    assert extract_features.main(["--model", deploy, "--weights", model, "--root", tiny_root + "/",
                                  "--list", os.path.join(lists, "Clipart.txt"), "--blob", "fc7",
                                  "--blob", "code", "--transform_from", train_net,
                                  "--out", str(tmp_path / "feat")]) == 0
    assert np.load(str(tmp_path / "feat_code.npy")).shape == (12, 8)
    assert np.load(str(tmp_path / "feat_fc7.npy")).shape == (12, 256)
    assert list(np.load(str(tmp_path / "feat_labels.npy"))) == sorted([0, 1, 2] * 4)
    capsys.readouterr()
    # a second run reuses every model and recomputes nothing
    mtimes = {f: os.path.getmtime(os.path.join(out, "models", f)) for f in os.listdir(os.path.join(out, "models"))}
    assert reproduce.main(args) == 0
    assert "0 iterations to run" in capsys.readouterr().err
    assert all(os.path.getmtime(os.path.join(out, "models", f)) == t for f, t in mtimes.items())
    # a model whose start weights are not on record is trained again, not reused
    results = json.load(open(os.path.join(out, "results.json")))
    del results["runs"]["NoDA_Ar-Cl_8bits"]["start"]
    json.dump(results, open(os.path.join(out, "results.json"), "w"))
    assert reproduce.main(args) == 0
    err = capsys.readouterr().err
    assert "NoDA_Ar-Cl_8bits_iter_2.caffemodel was trained from start weights not recorded" in err
    assert "4 trainings planned over 1 seed(s) (3 already done), 2 iterations to run" in err
    res = json.load(open(os.path.join(out, "results.json")))["runs"]
    assert res["NoDA_Ar-Cl_8bits"]["start"] == "trunk:" + digest


def test_reproduce_bad_arguments(capsys):
    assert reproduce.main(["--pairs", "Ar:Xx"]) == 2
    assert "bad pair" in capsys.readouterr().err
    assert reproduce.main(["--methods", "DAH,Magic", "--pairs", "Ar:Cl"]) == 2
    assert "unknown method(s) Magic" in capsys.readouterr().err


def _losses(sp):
    return {lp.name: (lp.type, list(lp.loss_weight)) for lp in sp.net_param.layer}


def test_families_are_consistent():
    """NoDA is DAH with gamma = eta = 0; SuH trains on the target list; the deploy nets hold the
    training nets' trunk and head with the same shapes."""
    kw = dict(source_list="s.txt", target_list="t.txt", root="/r/", num_classes=12,
              snapshot_prefix="x")
    dah = experiments.configure("toyhome", "DAH", **kw)
    noda = experiments.configure("toyhome", "NoDA", **kw)
    suh = experiments.configure("toyhome", "SuH", **kw)
    zeroed = experiments.configure("toyhome", "DAH", gamma=0, eta=0, **kw)
    strip = lambda sp: [(lp.type, list(lp.bottom), list(lp.top), list(lp.loss_weight),  # noqa: E731
                         lp.inner_product_param.num_output, lp.convolution_param.num_output)
                        for lp in sp.net_param.layer]
    assert strip(noda) == strip(zeroed) and strip(suh) == strip(zeroed)
    assert suh.net_param.layer[0].domain_data_param.source == "t.txt"
    assert _losses(dah)["mmd_fc7"][1] == [1.0] and _losses(noda)["mmd_fc7"][1] == [0.0]
    train_names = {lp.name: lp for lp in dah.net_param.layer}
    dep = protoio.read_net_param(experiments.family_file("toyhome", "hash_deploy.prototxt"))
    for lp in dep.layer:
        if lp.type != "Input":
            assert lp.name in train_names
            t = train_names[lp.name]
            assert (lp.convolution_param, lp.inner_product_param) == \
                (t.convolution_param, t.inner_product_param), lp.name
    for bits in (16, 64, 128):
        tr = protoio.read_net_param(experiments.family_file("office_home", "dah_train_%d.prototxt" % bits))
        assert {lp.name: lp.inner_product_param.num_output for lp in tr.layer}["fc8_hash"] == bits


def test_reproduce_pretrain_stage(tiny_root, tmp_path):
    """--pretrain N alone, the protocol before the generic trunk: one source-only NoDA training
    from fresh fillers per source domain, and every method of the pair starts from its trunk
    (conv1-fc7); the runs' names say so."""
    out = str(tmp_path / "res")
    args = ["--root", tiny_root, "--family", "toyhome", "--pairs", "Ar:Cl,Ar:Pr", "--bits", "8",
            "--methods", "DAH,DAN", "--iters", "1", "--pretrain", "3", "--out", out,
            "--per_class", "2", "--no_figures"]
    assert reproduce.main(args) == 0
    models = os.path.join(out, "models")
    assert os.path.exists(os.path.join(models, "pretrain_Ar_iter_3.caffemodel"))
    assert not any(f.startswith("pretrain_Cl") for f in os.listdir(models))  # Art is the only source
    trunk = protoio.read_net_param(os.path.join(models, "pretrain_Ar_trunk.caffemodel"), binary=True)
    assert [lp.name for lp in trunk.layer] == ["conv1", "conv2", "conv3", "fc6", "fc7"]
    start = blobproto_to_array(trunk.layer[0].blobs[0])
    for name in ("DAH_Ar-Cl_8bits_pre3_iter_1", "DAN_Ar-Pr_pre3_iter_1"):
        net = protoio.read_net_param(os.path.join(models, name + ".caffemodel"), binary=True)
        conv1 = blobproto_to_array([lp for lp in net.layer if lp.name == "conv1"][0].blobs[0])
        # one small step away from the pretrained trunk (a fresh MSRA fill would differ by ~0.1)
        assert np.abs(conv1 - start).max() < 0.02, name
        assert np.abs(conv1 - start).max() > 0, name
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["pretrain"]["Ar"]["iterations"] == 3
    pre = res["pretrain"]["Ar"]
    assert pre["start"] == "scratch" and pre["start_weights"] is None
    rec = res["runs"]["DAH_Ar-Cl_8bits_pre3"]
    assert rec["start"] == "pretrain3"
    assert rec["start_weights"] == os.path.join(models, "pretrain_Ar_trunk.caffemodel")


def test_dah_authors_and_figures(tiny_root, tmp_path, capsys):
    """DAH_authors, asked for, trains its own net (the authors' objective) and gets its own
    rows; the pair's four figures are drawn from the first seed's NoDA, DAH and DAH_authors."""
    out = str(tmp_path / "res")
    args = ["--root", tiny_root, "--family", "toyhome", "--pairs", "Ar:Cl", "--bits", "8",
            "--methods", "DAH,NoDA,DAH_authors", "--iters", "1", "--out", out, "--per_class", "2"]
    assert reproduce.main(args) == 0
    cap = capsys.readouterr()
    res = json.load(open(os.path.join(out, "results.json")))
    rec = res["runs"]["DAH_authors_Ar-Cl_8bits"]
    assert rec["evaluated"] and all(0 <= rec[k] <= 1 for k in ("accuracy", "map_a", "map_b"))
    sp = protoio.read_solver_param(rec["solver"])
    ref = experiments.configure("toyhome", "DAH_authors", source_list="s", target_list="t",
                                root="", num_classes=3, bits=8, per_class=2, snapshot_prefix="x")
    assert _losses(sp) == _losses(ref) and "quant_all" in _losses(sp)   # the authors' objective
    dah = protoio.read_solver_param(res["runs"]["DAH_Ar-Cl_8bits"]["solver"])
    assert _losses(sp) != _losses(dah)
    acc = open(os.path.join(out, "accuracy.csv"), encoding="utf-8").read().splitlines()
    assert [r.split(",")[0] for r in acc[1:]] == ["NoDA-8", "DAH-8", "DAH_authors-8"]
    assert acc[3].split(",")[1] == "%.2f" % (100 * rec["accuracy"])
    assert open(os.path.join(out, "map_8bits_a.csv")).readline().strip() == \
        "Target (source),NoDA,DAH,DAH_authors"
    comp = [c for c in res["comparison"] if c["a"] == "DAH_authors"]
    assert [(c["b"], c["metric"]) for c in comp] == [("NoDA", k) for k, _ in pipeline.METRICS]
    noda = res["runs"]["NoDA_Ar-Cl_8bits"]
    assert comp[1]["mean_diff"] == pytest.approx(rec["map_a"] - noda["map_a"])
    if importlib.util.find_spec("matplotlib") is None:
        assert cap.err.count("figures skipped: pip install 'minicaffe[plot]'") == 1
        pytest.skip("matplotlib is not installed: no figures")
    figs = os.path.join(out, "figures", "Ar-Cl_8bits")
    assert sorted(os.listdir(figs)) == sorted(pipeline.FIGURES)
    for f in pipeline.FIGURES:
        assert open(os.path.join(figs, f), "rb").read(8) == b"\x89PNG\r\n\x1a\n", f
    # fc7 before adaptation: the start trunk's, through the hash deploy net (12 images, 256-d)
    feats = os.path.join(out, "features")
    start = [f for f in os.listdir(feats)
             if f.startswith("start_") and f.endswith("_Ar-Cl_target_fc7.npy")]
    assert len(start) == 1 and np.load(os.path.join(feats, start[0])).shape == (12, 256)
    fc7 = pipeline.hash_features("toyhome", 8, make_trunk.default_trunk(), sp.net_param,
                                  {"target": os.path.join(out, "lists", "Clipart.txt")},
                                  tiny_root + "/", 3, blobs=("fc7",))["target"]["fc7"]
    assert np.array_equal(np.load(os.path.join(feats, start[0])), fc7)
