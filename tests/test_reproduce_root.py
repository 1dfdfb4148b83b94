"""tools/reproduce on any <root>/<Domain>/<Class>/<image> folder: domain matching, the family
and start protocol, bad input in one line, seeds with mean ± std and the paired comparison,
--set overrides, --trunk and retraining from other start weights, kept logs, the ETA; and the
permutation test against brute force."""
import argparse
import itertools
import json
import logging
import math
import os
import re
import shutil
import sys

import numpy as np
import pytest

from minicaffe import experiments, figures, protoio
from minicaffe.commands import make_trunk, parse_log, reproduce
from minicaffe.dah import pipeline
from minicaffe.datasets import toyhome
from minicaffe.errors import CaffeError
from minicaffe.hashing.stats import paired_comparison, sign_flip_p
from minicaffe.io import blobproto_to_array

OFFICE_HOME = ["Art", "Clipart", "Product", "Real World"]
TINY = ["--family", "toyhome", "--bits", "8", "--iters", "1", "--per_class", "2", "--no_figures"]


def _make_root(path, domains=("Photos", "sketches", "paintings"), classes=("apple", "boat", "cup")):
    """A tiny non-Office-Home dataset: ToyHome's Real World, Clipart and Art images under other
    domain and class names."""
    src = os.path.join(os.path.dirname(path), "_toy")
    if not os.path.exists(src):
        toyhome.generate(src, seed=0, per_class=4, size=40, classes=toyhome.CLASSES[:3])
    for dom, toy_dom in zip(domains, ("Real World", "Clipart", "Art")):
        for cls, toy_cls in zip(classes, toyhome.CLASSES[:3]):
            shutil.copytree(os.path.join(src, toy_dom, toy_cls), os.path.join(path, dom, cls))
    return path


@pytest.fixture(scope="module")
def gen_root(tmp_path_factory):
    return _make_root(str(tmp_path_factory.mktemp("gen") / "mydata"))


def _model_layer(path, name):
    net = protoio.read_net_param(path, binary=True)
    return [blobproto_to_array(b) for lp in net.layer if lp.name == name for b in lp.blobs]


# --- statistics ------------------------------------------------------------------------------

def test_paired_comparison_against_brute_force():
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 9):
        a, b = rng.normal(size=n), rng.normal(size=n)
        d = a - b
        hits = sum(abs(np.dot(s, d)) >= abs(d.sum()) - 1e-12
                   for s in itertools.product((1, -1), repeat=n))
        res = paired_comparison(a, b)
        assert res["p"] == pytest.approx(hits / 2 ** n, abs=1e-12), n
        assert res["mean_diff"] == pytest.approx(d.mean())
        if n > 1:
            sd = math.sqrt(sum((x - d.mean()) ** 2 for x in d) / (n - 1))
            assert res["std_diff"] == pytest.approx(sd)
            assert res["t"] == pytest.approx(d.mean() / (sd / math.sqrt(n)))
    res = paired_comparison([3, 2, 5, 4], [1, 2, 1, 1])   # d = 2, 0, 4, 3
    assert (res["wins"], res["losses"], res["ties"]) == (3, 0, 1)
    assert res["p"] == pytest.approx(4 / 16)   # only ±(2, 4, 3) reach 9, the 0 either way
    # Monte-Carlo (n > 20) agrees with the exact enumeration on the same 21 differences
    d = rng.normal(0.3, 1.0, size=21)
    exact = sign_flip_p(d, exact_max=21)
    assert 0.01 < exact < 0.9
    assert sign_flip_p(d, exact_max=0) == pytest.approx(exact, abs=0.005)
    assert sign_flip_p(d, exact_max=0, seed=0) == sign_flip_p(d, exact_max=0, seed=0)


# --- domains, pairs, protocol ----------------------------------------------------------------

def test_pairs_match_case_spaces_aliases_and_prefixes():
    pp = pipeline.parse_pairs
    assert pp("Art:Clipart", OFFICE_HOME) == [("Art", "Clipart")]
    assert pp("Real World:Art", OFFICE_HOME) == [("Real World", "Art")]   # "Real World":Art
    assert pp("realworld:art, Real_World:PRODUCT", OFFICE_HOME) == [("Real World", "Art"),
                                                                    ("Real World", "Product")]
    assert pp("Rw:Ar,cl:pr", OFFICE_HOME) == [("Real World", "Art"), ("Clipart", "Product")]
    assert pp("A:W,d:a", ["amazon", "dslr", "webcam"]) == [("amazon", "webcam"), ("dslr", "amazon")]
    gen = ["Photos", "paintings", "sketches"]
    assert pp("phot:sk", gen) == [("Photos", "sketches")]
    assert len(pp("all", gen)) == 6 and len(pp("all", OFFICE_HOME)) == 12
    with pytest.raises(CaffeError, match=r"bad pair 'p:sketches': ambiguous domain 'p' "
                                         r"\(/d has Photos, paintings\)"):
        pp("p:sketches", gen, "/d")
    with pytest.raises(CaffeError, match=r"unknown domain 'drawings' \(/d has: Photos, paintings, "
                                         r"sketches\)"):
        pp("Photos:drawings", gen, "/d")
    with pytest.raises(CaffeError, match="one domain"):
        pp("Art:ar", OFFICE_HOME)
    assert [pipeline.domain_tag(d) for d in OFFICE_HOME + ["RealWorld", "my photos", "amazon"]] \
        == ["Ar", "Cl", "Pr", "Rw", "Rw", "my_photos", "amazon"]
    # the supplement's sources for Office-Home targets; one row per pair elsewhere
    pairs = pp("all", OFFICE_HOME)
    assert pipeline.map_rows(pairs, OFFICE_HOME) == [("Clipart", "Art"), ("Art", "Clipart"),
                                                      ("Art", "Product"), ("Art", "Real World")]
    assert pipeline.map_rows(pp("Pr:Rw,Ar:Cl", OFFICE_HOME), OFFICE_HOME) == \
        [("Art", "Clipart"), ("Product", "Real World")]
    assert pipeline.map_rows(pp("all", gen), gen) == [
        ("paintings", "Photos"), ("sketches", "Photos"), ("Photos", "paintings"),
        ("sketches", "paintings"), ("Photos", "sketches"), ("paintings", "sketches")]


def _ns(**kw):
    return argparse.Namespace(**dict(dict(root="", family="", weights="", trunk=None,
                                          pretrain=None), **kw))


def test_start_protocol_is_one_decision(tmp_path):
    sp, S = pipeline.start_protocol, pipeline.Start
    generic = make_trunk.default_trunk()
    assert sp(_ns(), "toyhome") == S(0, generic, True, True)           # the generic trunk
    assert sp(_ns(root="/d"), "toyhome") == S(0, generic, True, True)  # on a user's data too
    shipped = os.path.join(experiments.prototxt_dir(), "toyhome")   # the family as a folder
    assert sp(_ns(), shipped) == S(0, generic, True, True)
    assert sp(_ns(), "office_home") == S(0, None, False, True)         # fresh fillers
    assert sp(_ns(trunk="t.caffemodel"), "toyhome") == S(0, "t.caffemodel", True, False)
    assert sp(_ns(trunk=generic), "toyhome") == S(0, generic, True, True)
    assert sp(_ns(trunk="none"), "toyhome") == S(0, None, False, False)
    assert sp(_ns(trunk=""), "office_home") == S(0, None, False, True)
    assert sp(_ns(trunk="t.caffemodel", pretrain=5), "toyhome") == S(5, "t.caffemodel", True, False)
    assert sp(_ns(pretrain=300), "toyhome") == S(300, None, False, False)   # the old protocol
    assert sp(_ns(pretrain=0), "toyhome") == S(0, None, False, False)
    # --weights: the trunk of a whole model (ImageNet's fc8 never meets the classifier)
    assert sp(_ns(weights="w.caffemodel"), "office_home") == S(0, "w.caffemodel", True, True)
    assert sp(_ns(weights="w.caffemodel", pretrain=2), "toyhome") == \
        S(2, "w.caffemodel", True, False)
    # what each start is recorded as, and its tag in run names
    w = tmp_path / "w.caffemodel"
    w.write_bytes(b"weights")
    digest = pipeline.file_digest(str(w))
    assert len(digest) == 8
    ids = pipeline.start_identities
    assert ids(S(0, None, False, True), "toyhome") == ("scratch", "scratch")
    assert ids(S(0, str(w), True, False), "toyhome") == ("trunk:" + digest,) * 2
    assert ids(S(0, str(w), False, True), "toyhome") == ("weights:" + digest,) * 2
    assert ids(S(300, None, False, False), "toyhome") == ("scratch", "pretrain300")
    assert ids(S(5, str(w), True, False), "toyhome") == \
        ("trunk:" + digest, "pretrain5+trunk:" + digest)
    assert pipeline.name_tag("pretrain5+trunk:" + digest) == "pre5_trunk" + digest
    with pytest.raises(CaffeError, match="no such file"):
        ids(S(0, str(tmp_path / "nope"), True, False), "toyhome")


def test_family_from_the_domains(caplog):
    choose = pipeline.choose_family
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        assert choose(_ns(root="/d"), "/d", OFFICE_HOME) == "office_home"
        assert "office_home: the domains of /d (Art, Clipart, Product, Real World) are " \
               "Office-Home's" in caplog.text
        assert choose(_ns(root="/d"), "/d", ["art", "Real_World"]) == "office_home"
        caplog.clear()
        assert choose(_ns(root="/d"), "/d", ["Photos", "sketches"]) == "toyhome"
        assert len(caplog.records) == 1
        assert "(Photos, sketches) are not Office-Home's" in caplog.text
        assert choose(_ns(root="/d"), "/d", ["Art", "Clipart", "webcam"]) == "toyhome"
        caplog.clear()
        assert choose(_ns(root="/d", family="office_home"), "/d", ["Photos", "x"]) == "office_home"
        assert choose(_ns(), "/cache/toyhome", OFFICE_HOME) == "toyhome"   # the embedded data
        assert not caplog.records


def test_first_eta_leaves_out_the_warm_up(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(pipeline.time, "time", lambda: clock[0])
    p = pipeline.Progress(105)
    for it in range(1, 11):
        clock[0] += 10.0 if it <= 5 else 0.1     # five slow JIT iterations, then 0.1 s each
        p.tick("x", it, 105, 1.0)
    assert p.eta(10, clock[0]) == pytest.approx(95 * 0.1)    # not 95 * 5.05 s
    q = pipeline.Progress(105)
    q.tick("x", 4, 105, 1.0)
    assert q.eta(4, clock[0]) is None                        # no rate during the warm-up


def test_first_eta_lines_of_a_five_minute_job(monkeypatch, caplog):
    """The report: 1200 iterations of 0.25 s (5 minutes) whose first iteration compiles the
    kernels for 16 s; the first ETA line read 5:19:53 (1199 x 16 s). Now the lines before the
    rate is measured say so, and the first ETA is the job's real remaining time."""
    clock = [0.0]
    monkeypatch.setattr(pipeline.time, "time", lambda: clock[0])
    p = pipeline.Progress(1200)
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        for it in range(1, 301):
            clock[0] += 16.0 if it == 1 else 0.25
            p.tick("DAN_Ar-Cl", it, 300, 1.0)
    lines = [r.getMessage() for r in caplog.records if "ETA" in r.getMessage()]
    assert lines[0].endswith("all runs 1/1200 iterations, ETA after warm-up")
    first = [line for line in lines if not line.endswith("after warm-up")][0]
    m = re.search(r"all runs (\d+)/1200 iterations, ETA (\d+):(\d\d):(\d\d)$", first)
    done, (h, mi, sec) = int(m.group(1)), map(int, m.group(2, 3, 4))
    assert h * 3600 + mi * 60 + sec == pytest.approx((1200 - done) * 0.25, abs=2)   # not 5:19:53


# --- overrides -------------------------------------------------------------------------------

def _dah(method="DAH"):
    from minicaffe import experiments
    return experiments.configure("toyhome", method, source_list="s", target_list="t", root="",
                                 num_classes=3, snapshot_prefix="x")


def test_set_overrides_change_the_nets():
    O = pipeline.Override
    dah, noda = _dah(), _dah("NoDA")
    layer = lambda sp, name: [lp for lp in sp.net_param.layer if lp.name == name][0]  # noqa: E731
    assert O("mmd_*.loss_weight=10").apply(dah, "DAH") == 3
    assert [layer(dah, n).loss_weight[:] for n in ("mmd_fc6", "mmd_fc7", "mmd_fc8")] == [[10]] * 3
    assert O("mmd_fc6.mmd_param.kernel_num=17").apply(dah, "DAH") == 1
    assert layer(dah, "mmd_fc6").mmd_param.kernel_num == 17
    assert layer(dah, "mmd_fc7").mmd_param.kernel_num == 5
    assert O("mmd_fc7.mmd_param.bandwidth=MEAN").apply(dah, "DAH") == 1
    assert layer(dah, "mmd_fc7").mmd_param.bandwidth == layer(dah, "mmd_fc7").mmd_param.MEAN
    with_params = [lp.name for lp in dah.net_param.layer if len(lp.param)]
    assert O("*.param[0].lr_mult=0.1").apply(dah, "DAH") == len(with_params) == 7
    assert layer(dah, "conv1").param[0].lr_mult == pytest.approx(0.1)
    assert layer(dah, "conv1").param[1].lr_mult == 2 and not len(layer(dah, "relu1").param)
    assert O("entropy_loss.loss_weight=0.5").apply(dah, "DAH") == 1
    assert O("solver.base_lr=1e-4").apply(dah, "DAH") == 1 and dah.base_lr == pytest.approx(1e-4)
    o = O("DAH:mmd_*.loss_weight=5")
    assert o.apply(noda, "NoDA") == 0 and o.apply(noda, "pretrain") == 0
    assert layer(noda, "mmd_fc6").loss_weight[:] == [0]
    assert O("pretrain:solver.base_lr=1").apply(noda, "pretrain") == 1
    assert O("mmd_*.loss_weight=1").apply(noda, "pretrain") == 0    # the stage keeps its net
    for text, msg in (("mmd_*.mmd_param.kernl_num=5", "MMDParameter has no field kernl_num"),
                      ("mmd_*.mmd_param.bandwidth=WIDE", "'WIDE' is not a value of bandwidth"),
                      ("mmd_*.mmd_param=5", "mmd_param is a message"),
                      ("Magic:conv1.param[0].lr_mult=1", "unknown method 'Magic'"),
                      ("conv1", "expected [METHOD:]LAYER.FIELD=VALUE")):
        with pytest.raises(CaffeError, match=msg.replace("[", r"\[").replace("(", r"\(")):
            O(text)
    with pytest.raises(CaffeError, match=r"layer relu1 has no param\[0\]"):
        O("relu1.param[0].lr_mult=1").apply(dah, "DAH")


# --- end to end ------------------------------------------------------------------------------

def _run(capsys, args):
    rc = reproduce.main(args)
    return rc, capsys.readouterr()


@pytest.mark.integration
def test_bad_input_is_one_line_naming_the_folder(gen_root, tmp_path, capsys):
    def fails(args, root, text):
        out = str(tmp_path / "res")
        rc, cap = _run(capsys, ["--root", root, "--out", out] + TINY + args)
        assert rc == 2, cap.err
        line = [x for x in cap.err.splitlines() if "error:" in x]
        assert len(line) == 1 and text in line[0], cap.err
        assert not os.path.exists(os.path.join(out, "models"))   # nothing was trained
        assert not os.path.exists(os.path.join(out, "results.json"))

    fails(["--pairs", "Photos:drawings"], gen_root,
          "bad pair 'Photos:drawings': unknown domain 'drawings' (%s has: Photos, paintings, "
          "sketches)" % gen_root)
    fails(["--pairs", "all", "--per_class", "5"], gen_root,
          "%s has 4 images, fewer than K = 5 per class" % os.path.join(gen_root, "Photos", "apple"))
    fails(["--pairs", "all", "--set", "nosuch*.loss_weight=1"], gen_root,
          "--set nosuch*.loss_weight=1 matches no layer of the planned nets (DAH, DAN, DANN, NoDA, SuH)")
    fails(["--pairs", "all", "--set", "DAH:conv1.convolution_param.kernel=3"], gen_root,
          "ConvolutionParameter has no field kernel")
    one = str(tmp_path / "one")
    shutil.copytree(os.path.join(gen_root, "Photos"), os.path.join(one, "Photos"))
    fails([], one, "%s: 1 domain (Photos) found; a transfer pair needs 2" % one)
    few = str(tmp_path / "few")
    for d in ("Photos", "sketches"):
        shutil.copytree(os.path.join(gen_root, d, "apple"), os.path.join(few, d, "apple"))
    fails([], few, "%s: 1 class (apple) found" % few)
    lack = str(tmp_path / "lack")
    shutil.copytree(gen_root, lack)
    shutil.rmtree(os.path.join(lack, "sketches", "boat"))
    fails(["--pairs", "photos:sketches"], lack, "%s has no images of class boat"
          % os.path.join(lack, "sketches"))


@pytest.mark.integration
def test_any_dataset_all_pairs(gen_root, tmp_path, capsys):
    out = str(tmp_path / "res")
    rc, cap = _run(capsys, ["--root", gen_root, "--pairs", "all", "--methods", "NoDA,ITQ",
                            "--out", out] + TINY[2:])   # no --family: chosen from the domains
    assert rc == 0, cap.err
    assert cap.err.count("Net family toyhome") == 1
    acc = open(os.path.join(out, "accuracy.csv"), encoding="utf-8").read().splitlines()
    assert acc[0] == ("Method,Photos→paintings,Photos→sketches,paintings→Photos,"
                      "paintings→sketches,sketches→Photos,sketches→paintings,Avg.")
    assert [r.split(",")[0] for r in acc[1:]] == ["NoDA-8"]
    rows = open(os.path.join(out, "map_8bits_a.csv"), encoding="utf-8").read().splitlines()
    assert rows[0] == "Target (source),NoDA,ITQ"
    assert [r.split(",")[0] for r in rows[1:]] == [
        "Photos (paintings)", "Photos (sketches)", "paintings (Photos)", "paintings (sketches)",
        "sketches (Photos)", "sketches (paintings)", "Avg."]
    res = json.load(open(os.path.join(out, "results.json")))["runs"]
    assert sorted(n for n in res if n.startswith("NoDA")) == sorted(
        "NoDA_%s-%s_8bits" % p for p in itertools.permutations(["Photos", "paintings", "sketches"], 2))
    assert 0 <= res["ITQ_paintings-sketches_8bits"]["map_a"] <= 1
    assert os.path.exists(os.path.join(out, "pr_8bits_sketches_from_Photos.png")) == \
        figures.available()


@pytest.mark.integration
def test_seeds_comparison_logs_and_overrides(gen_root, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "res")
    args = ["--root", gen_root, "--pairs", "Photos:sketches,paintings:Photos", "--methods",
            "DAH,NoDA", "--seeds", "1,2", "--out", out,
            "--set", "DAH:mmd_*.loss_weight=7"] + TINY[:-1] + ["--iters", "2"]
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # as if it were not installed
    rc, cap = _run(capsys, args)
    assert rc == 0, cap.err
    assert cap.err.count("figures skipped: pip install 'minicaffe[plot]'") == 1
    assert not os.path.exists(os.path.join(out, "figures"))
    assert not [f for f in os.listdir(out) if f.endswith(".png")]   # PR curves as CSV only
    h = pipeline.overrides_hash(["DAH:mmd_*.loss_weight=7"])
    res = json.load(open(os.path.join(out, "results.json")))
    runs = res["runs"]
    names = ["%s_%s_8bits%s" % (m, p, s) for m in ("DAH", "NoDA") for p in
             ("Photos-sketches", "paintings-Photos") for s in ("", "_s2")]
    expect = [n if not n.startswith("DAH") else n + "_set" + h for n in names]
    assert sorted(n for n in runs) == sorted(expect)
    rec = runs["DAH_Photos-sketches_8bits_s2_set" + h]
    assert rec["seed"] == 2 and rec["overrides"] == ["DAH:mmd_*.loss_weight=7"]
    assert rec["command"].startswith("tools/reproduce --root ") and rec["train_seconds"] > 0
    assert runs["NoDA_Photos-sketches_8bits"]["overrides"] == []
    # the override reached the trained net, NoDA's stayed
    sp = protoio.read_solver_param(rec["solver"])
    assert {lp.name: lp.loss_weight[:] for lp in sp.net_param.layer if lp.type == "MMDLoss"} == \
        {"mmd_fc6": [7], "mmd_fc7": [7], "mmd_fc8": [7]}
    assert os.path.exists(os.path.join(out, "models",
                                       "DAH_Photos-sketches_8bits_set%s_iter_2.caffemodel" % h))
    noda_sp = protoio.read_solver_param(runs["NoDA_Photos-sketches_8bits"]["solver"])
    assert [lp.loss_weight[:] for lp in noda_sp.net_param.layer if lp.type == "MMDLoss"] == [[0]] * 3
    # mean ± std over the seeds in the tables
    acc = open(os.path.join(out, "accuracy.md"), encoding="utf-8").read()
    vals = [runs["DAH_Photos-sketches_8bits%s_set%s" % (s, h)]["accuracy"] for s in ("", "_s2")]
    cell = "%.2f ± %.2f" % (100 * np.mean(vals), 100 * np.std(vals, ddof=1))
    assert "| DAH-8 | %s |" % cell in acc
    # the paired comparison over 2 pairs x 2 seeds, as the statistics of the recorded numbers
    comp = [c for c in res["comparison"] if c["metric"] == "map_b"][0]
    a = [runs["DAH" + n[4:] + "_set" + h]["map_b"] for n in names if n.startswith("NoDA")]
    b = [runs[n]["map_b"] for n in names if n.startswith("NoDA")]
    ref = paired_comparison(a, b)
    assert comp["n"] == 4 and comp["p"] == pytest.approx(ref["p"])
    assert comp["mean_diff"] == pytest.approx(ref["mean_diff"])
    csv = open(os.path.join(out, "comparison.csv"), encoding="utf-8").read().splitlines()
    assert csv[0] == "a,b,bits,metric,n,mean_diff,std_diff,wins,losses,ties,t,p"
    assert len(csv) == 1 + 3
    assert csv[3].startswith("DAH,NoDA,8,map_b,4,") and float(csv[3].split(",")[-1]) == \
        pytest.approx(ref["p"], rel=1e-5)
    assert "DAH − NoDA" in open(os.path.join(out, "comparison.md"), encoding="utf-8").read()
    assert "DAH next to NoDA" in cap.out and "Paired comparisons" in cap.out
    # each training's log is kept and parses, with every loss term, while the console was quiet
    log = os.path.join(out, "logs", "DAH_paintings-Photos_8bits_s2_set%s.log" % h)
    assert "Train net output" not in cap.err
    train, _ = parse_log.parse_log(log)
    assert [r["NumIters"] for r in train] == [0, 1]
    assert {"hash_loss", "entropy_loss", "mmd_fc6", "mmd_fc7", "mmd_fc8"} <= set(train[0])
    assert len(os.listdir(os.path.join(out, "logs"))) == 8


@pytest.mark.integration
def test_trunk_starts_every_method(gen_root, tmp_path, capsys, monkeypatch):
    first = str(tmp_path / "first")
    rc, cap = _run(capsys, ["--root", gen_root, "--pairs", "Photos:sketches", "--methods", "NoDA",
                            "--out", first] + TINY)
    assert rc == 0, cap.err
    model = os.path.join(first, "models", "NoDA_Photos-sketches_8bits_iter_1.caffemodel")
    digest = pipeline.file_digest(model)
    out = str(tmp_path / "res")
    rc, cap = _run(capsys, ["--root", gen_root, "--pairs", "sketches:paintings", "--methods",
                            "DAH,DAN", "--trunk", model, "--out", out] + TINY)
    assert rc == 0, cap.err
    models = os.path.join(out, "models")
    assert [f for f in os.listdir(models) if f.startswith("start_trunk_")] == \
        ["start_trunk_%s.caffemodel" % digest]
    trunk = protoio.read_net_param(os.path.join(models, "start_trunk_%s.caffemodel" % digest),
                                   binary=True)
    assert [lp.name for lp in trunk.layer] == ["conv1", "conv2", "conv3", "fc6", "fc7"]
    assert not any(f.startswith("pretrain") for f in os.listdir(models))
    start = _model_layer(model, "conv1")[0]
    for name in ("DAH_sketches-paintings_8bits", "DAN_sketches-paintings"):
        conv1 = _model_layer(os.path.join(models, "%s_trunk%s_iter_1.caffemodel" % (name, digest)),
                             "conv1")[0]
        assert 0 < np.abs(conv1 - start).max() < 0.02, name   # a fresh MSRA fill differs by ~0.1
    runs = json.load(open(os.path.join(out, "results.json")))["runs"]
    rec = runs["DAH_sketches-paintings_8bits_trunk" + digest]
    assert rec["start"] == "trunk:" + digest
    assert rec["start_weights"] == os.path.join(models, "start_trunk_%s.caffemodel" % digest)
    # another trunk in the same --out: runs of their own names, trained afresh
    other = os.path.join(models, "DAH_sketches-paintings_8bits_trunk%s_iter_1.caffemodel" % digest)
    rc, cap = _run(capsys, ["--root", gen_root, "--pairs", "sketches:paintings", "--methods",
                            "DAH,DAN", "--trunk", other, "--out", out] + TINY)
    assert rc == 0 and "2 trainings planned over 1 seed(s) (0 already done)" in cap.err
    runs = json.load(open(os.path.join(out, "results.json")))["runs"]
    assert "DAN_sketches-paintings_trunk" + pipeline.file_digest(other) in runs
    # a plain-named model of the default protocol whose generic trunk changed is trained again
    generic = pipeline.file_digest(make_trunk.default_trunk())
    monkeypatch.setattr(experiments, "default_trunk", lambda: other)
    rc, cap = _run(capsys, ["--root", gen_root, "--pairs", "Photos:sketches", "--methods", "NoDA",
                            "--out", first] + TINY)
    assert rc == 0, cap.err
    assert "was trained from trunk:%s, not trunk:%s: training it again" % (
        generic, pipeline.file_digest(other)) in cap.err
    assert "1 trainings planned over 1 seed(s) (0 already done)" in cap.err
    rec = json.load(open(os.path.join(first, "results.json")))["runs"]["NoDA_Photos-sketches_8bits"]
    assert rec["start"] == "trunk:" + pipeline.file_digest(other)
    conv1 = _model_layer(model, "conv1")[0]
    assert np.abs(conv1 - _model_layer(other, "conv1")[0]).max() < 0.02
