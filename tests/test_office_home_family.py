"""Every net family holds every method's nets; the Office-Home family (VGG_CNN_F) builds, keeps
VGG_CNN_F's layer names and shapes, and runs through tools/reproduce on a tiny Office-Home-shaped
folder."""
import json
import os
import shutil

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import backend, experiments, protoio
from minicaffe.datasets import lists, toyhome
from minicaffe.errors import ModelFileError
from minicaffe.net import Net, filter_net
from minicaffe.proto import caffe_pb2

FAMILIES = ("toyhome", "office_home")
METHODS = experiments.TRAINED + experiments.AUTHORS_METHODS
FILES = ["%s_%s.prototxt" % (m.lower(), kind) for m in METHODS for kind in ("train", "solver")] \
    + ["hash_deploy.prototxt", "cls_deploy.prototxt"]
# VGG_CNN_F (Chatfield et al. 2014) as in VGG_CNN_F.caffemodel: weight shapes of conv1 ... fc7
VGG_CNN_F = {"conv1": (64, 3, 11, 11), "conv2": (256, 64, 5, 5), "conv3": (256, 256, 3, 3),
             "conv4": (256, 256, 3, 3), "conv5": (256, 256, 3, 3), "fc6": (4096, 9216),
             "fc7": (4096, 4096)}
HEADS = {"DAH": "fc8_hash", "NoDA": "fc8_hash", "SuH": "fc8_hash", "DAH_authors": "fc8_hash",
         "DAN": "fc8", "DANN": "fc8"}


@pytest.fixture(scope="module")
def office_root(tmp_path_factory):
    """A tiny folder in Office-Home's layout: Art, Clipart, Product, "Real World" / class /
    image, 2 classes × 4 images of 40 px (the DomainData resize to 256 and crop 224 upsample;
    ITQ's PCA at 8 bits needs 8 target images)."""
    root = str(tmp_path_factory.mktemp("oh") / "OfficeHomeDataset_10072016")
    toyhome.generate(root, seed=0, per_class=4, size=40, classes=toyhome.CLASSES[:2])
    return root


def _configure(family, method, written, root, **kw):
    kw.setdefault("num_classes", 2)
    return experiments.configure(family, method, source_list=written["Art"],
                                 target_list=written["Clipart"], root=root.rstrip("/") + "/",
                                 snapshot_prefix="unused", **kw)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_has_every_file(family):
    folder = os.path.join(experiments.prototxt_dir(), family)
    missing = [f for f in FILES if not os.path.exists(os.path.join(folder, f))]
    assert not missing
    for m in METHODS:
        sp = protoio.read_solver_param(
            experiments.family_file(family, "%s_solver.prototxt" % m.lower()))
        assert sp.net == "%s_train.prototxt" % m.lower()
        assert sp.momentum == pytest.approx(0.9) and sp.max_iter > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_family_nets_are_consistent(family):
    """NoDA and SuH are DAH with γ = η = 0 (SuH on the target list); the deploy nets hold the
    training nets' trunk and heads with the same parameters; the authors' net has the same
    trunk and head as DAH."""
    kw = dict(source_list="s.txt", target_list="t.txt", root="/r/", num_classes=12,
              snapshot_prefix="x")
    strip = lambda sp: [(lp.type, list(lp.bottom), list(lp.top), list(lp.loss_weight),  # noqa: E731
                         lp.inner_product_param.num_output, lp.convolution_param.num_output)
                        for lp in sp.net_param.layer]
    zeroed = experiments.configure(family, "DAH", gamma=0, eta=0, **kw)
    noda = experiments.configure(family, "NoDA", **kw)
    suh = experiments.configure(family, "SuH", **kw)
    assert strip(noda) == strip(zeroed) and strip(suh) == strip(zeroed)
    assert suh.net_param.layer[0].domain_data_param.source == "t.txt"
    nets = {m: experiments.configure(family, m, **kw).net_param for m in METHODS}
    for deploy, methods in (("hash_deploy", ("DAH", "NoDA", "SuH", "DAH_authors")),
                            ("cls_deploy", ("DAN", "DANN"))):
        dep = protoio.read_net_param(experiments.family_file(family, deploy + ".prototxt"))
        assert dep.layer[-1].top[0] == ("code" if deploy == "hash_deploy" else "prob")
        for lp in dep.layer:   # the deploy net sized as reproduce sizes it
            if lp.name == "fc8":
                lp.inner_product_param.num_output = 12
        for m in methods:
            train = {lp.name: lp for lp in nets[m].layer}
            for lp in dep.layer:
                if lp.type in ("Input", "Softmax"):
                    continue
                assert lp.name in train, (m, lp.name)
                t = train[lp.name]
                assert (lp.type, lp.convolution_param, lp.inner_product_param, lp.lrn_param,
                        lp.pooling_param) == (t.type, t.convolution_param, t.inner_product_param,
                                              t.lrn_param, t.pooling_param), (m, lp.name)
    trunk = lambda net: [(lp.name, lp.type, list(lp.bottom), list(lp.top),  # noqa: E731
                          lp.convolution_param.num_output, lp.inner_product_param.num_output)
                         for lp in net.layer if "Loss" not in lp.type]
    assert trunk(nets["DAH_authors"]) == trunk(nets["DAH"])


def test_authors_nets_agree_across_families():
    """Office-Home's dah_authors net has ToyHome's loss layers, weights recomputed for its
    65 × 5 + 65 × 5 batch (γ·Q/N = 5000·162/650 on each MMDLoss), and the authors' multipliers."""
    train = caffe_pb2.NetState(phase=caffe_pb2.TRAIN)   # the objective (ToyHome has a TEST phase)
    nets = {f: filter_net(protoio.read_net_param(
        experiments.family_file(f, "dah_authors_train.prototxt")), train) for f in FAMILIES}
    losses = {f: {lp.name: lp for lp in n.layer if "Loss" in lp.type} for f, n in nets.items()}
    assert sorted(losses["toyhome"]) == sorted(losses["office_home"]) == \
        ["entropy_loss", "hash_loss", "mmd_fc6", "mmd_fc7", "mmd_fc8", "quant_all"]
    for name, t in losses["toyhome"].items():
        o = losses["office_home"][name]
        assert (t.mmd_param, t.hash_loss_param, t.quantization_loss_param, list(t.bottom)) == \
            (o.mmd_param, o.hash_loss_param, o.quantization_loss_param, list(o.bottom)), name
    assert losses["office_home"]["mmd_fc7"].loss_weight[0] == \
        pytest.approx(5000 * 162 / 650, rel=1e-6)
    assert losses["office_home"]["entropy_loss"].loss_weight[0] == 0.5
    assert losses["office_home"]["entropy_loss"].entropy_loss_param.num_classes == 65
    for f, net in nets.items():
        mults = {lp.name: [p.lr_mult for p in lp.param] for lp in net.layer if lp.param}
        assert all(mults[n] == [pytest.approx(0.1), pytest.approx(0.2)] for n in
                   ("conv1", "conv2", "conv3", "fc6", "fc7")), f
        assert mults["fc8_hash"] == [1, 2] and mults["scale_hash"] == [2, 1], f
        mmd = losses[f]["mmd_fc6"].mmd_param
        assert (mmd.kernel_num, mmd.kernel_mul, mmd.bandwidth, mmd.pairing) == \
            (17, 2.0, caffe_pb2.MMDParameter.MEDIAN, caffe_pb2.MMDParameter.RANDOM)
    sp = protoio.read_solver_param(
        experiments.family_file("office_home", "dah_authors_solver.prototxt"))
    assert (sp.base_lr, sp.lr_policy, sp.weight_decay) == \
        (pytest.approx(1e-4), "exp", pytest.approx(5e-4))
    assert sp.gamma ** sp.max_iter == pytest.approx(0.1, rel=1e-3)   # 1e-4 -> 1e-5


@pytest.mark.integration
def test_office_home_nets_build_and_noda_steps(office_root, tmp_path):
    """Every Office-Home train net builds on the tiny folder (2 classes, K = 1), with
    VGG_CNN_F's layer names and weight shapes and the head configure sized; one
    forward/backward of NoDA gives a finite loss and gradients on conv1. A VGG_CNN_F-shaped
    model's 1000-way fc8 cannot go into DAN's fc8, its trunk (trunk_weights) can."""
    written = lists.write_lists(office_root, str(tmp_path / "lists"))
    assert set(written) == {"Art", "Clipart", "Product", "Real World"}
    backend.set_random_seed(1)
    for m in METHODS:
        sp = _configure("office_home", m, written, office_root, per_class=1, bits=8)
        net = Net(sp.net_param, caffe.TRAIN)
        try:
            assert {n: tuple(net.params[n][0].shape) for n in VGG_CNN_F} == VGG_CNN_F, m
            assert net.params[HEADS[m]][0].shape == \
                ((8, 4096) if HEADS[m] == "fc8_hash" else (2, 4096))
            assert net.blobs["data"].shape == (4, 3, 224, 224), m   # 2 × 1 source + 2 × 1 target
            if m == "NoDA":
                loss = net.forward_backward()
                assert np.isfinite(loss) and loss > 0
                assert np.abs(net.params["conv1"][0].diff).max() > 0
                assert net.blobs["mmd_fc7"].data >= -1 and net.blob_loss_weights["mmd_fc7"] == 0
            if m == "DAN":
                vgg = caffe_pb2.NetParameter()
                for name, shape in (("conv1", VGG_CNN_F["conv1"]), ("fc8", (1000, 4096))):
                    lp = vgg.layer.add()
                    lp.name, lp.type = name, "Convolution" if name == "conv1" else "InnerProduct"
                    for s in (shape, shape[:1]):
                        b = lp.blobs.add()
                        b.shape.dim.extend(s)
                        b.data.extend(np.full(int(np.prod(s)), 0.5, np.float32))
                with pytest.raises(ModelFileError, match="fc8"):
                    net.copy_from(vgg)
                trunk = experiments.trunk_weights(vgg, "office_home",
                                                  str(tmp_path / "trunk.caffemodel"))
                net.copy_from(trunk)
                assert (net.params["conv1"][0].data == 0.5).all()
        finally:
            net.close()


@pytest.mark.slow
@pytest.mark.integration
def test_reproduce_office_home_end_to_end(office_root, tmp_path):
    """tools/reproduce --family office_home on the tiny folder: all six methods train one
    iteration of VGG_CNN_F from fresh fillers, are evaluated, and every number is in [0, 1]."""
    from minicaffe.commands import reproduce
    out = str(tmp_path / "res")
    methods = ["DAH", "NoDA", "SuH", "DAN", "DANN", "ITQ"]
    args = ["--root", office_root, "--family", "office_home", "--pairs", "Ar:Cl", "--iters", "1",
            "--per_class", "2", "--bits", "8", "--methods", ",".join(methods), "--pretrain", "0",
            "--out", out]
    try:
        assert reproduce.main(args) == 0
    finally:   # 5 VGG_CNN_F models and solver states: ~2 GB
        shutil.rmtree(os.path.join(out, "models"), ignore_errors=True)
    runs = json.load(open(os.path.join(out, "results.json")))["runs"]
    for m in methods:
        mine = {k: v for k, v in runs.items() if k.split("_")[0] == m}
        assert mine, (m, sorted(runs))
        for name, rec in mine.items():
            assert rec["evaluated"], name
            keys = [k for k in ("accuracy", "map_a", "map_b") if k in rec]
            want = (["accuracy"] if m in ("DAN", "DANN") else
                    ["map_a", "map_b"] if m == "ITQ" else ["accuracy", "map_a", "map_b"])
            assert keys == want, name
            assert all(0 <= rec[k] <= 1 for k in keys), (name, rec)


def test_a_family_tunes_a_method_per_code_length(tmp_path):
    """<method>_solver_<bits>.prototxt, where a family has it, is the solver (and net) for that
    code length; other lengths keep <method>_solver.prototxt."""
    import shutil
    fam = tmp_path / "fam"
    shutil.copytree(os.path.join(experiments.prototxt_dir(), "toyhome"), str(fam))
    net = (fam / "dah_train.prototxt").read_text()
    (fam / "dah_train_16.prototxt").write_text(net.replace("loss_weight: 10", "loss_weight: 2.5"))
    solver = (fam / "dah_solver.prototxt").read_text()
    (fam / "dah_solver_16.prototxt").write_text(
        solver.replace('net: "dah_train.prototxt"', 'net: "dah_train_16.prototxt"'))
    kw = dict(source_list="s.txt", target_list="t.txt", root="/r/", num_classes=12,
              snapshot_prefix="x")

    def entropy(bits):
        sp = experiments.configure(str(fam), "DAH", bits=bits, **kw)
        (lp,) = [lp for lp in sp.net_param.layer if lp.type == "EntropyLoss"]
        code = [lp for lp in sp.net_param.layer if lp.name == "fc8_hash"][0]
        assert code.inner_product_param.num_output == bits
        return list(lp.loss_weight)

    assert entropy(16) == [2.5] and entropy(64) == [10.0] and entropy(128) == [10.0]


def test_office_home_per_length_nets_are_the_generic_net():
    """dah_solver_{16,64,128} (for tools/train by hand) are dah_solver.prototxt at that code
    length, so tools/reproduce, which now prefers them, trains what it trained before."""
    kw = dict(source_list="s.txt", target_list="t.txt", root="/r/", num_classes=65,
              snapshot_prefix="x")
    for bits in (16, 64, 128):
        tuned = experiments.configure("office_home", "DAH", bits=bits, **kw)
        generic = experiments.configure("office_home", "DAH", **kw)
        for lp in generic.net_param.layer:
            if lp.name == "fc8_hash":
                lp.inner_product_param.num_output = bits
        tuned.net_param.name = generic.net_param.name = ""
        assert tuned == generic, bits


def test_toyhome_dah_per_code_length_is_the_generic_net_with_its_weights():
    """ToyHome's dah_solver_16 / _128 (chosen on the validation draw per code length) are
    dah_solver.prototxt with only the code length, the entropy weight eta and the diversity
    weight lambda changed: 16 bits eta 3, lambda 3; 64 bits (the generic net) eta 10, lambda 1;
    128 bits eta 10, lambda 3."""
    kw = dict(source_list="s.txt", target_list="t.txt", root="/r/", num_classes=12,
              snapshot_prefix="x")

    def entropy(sp):
        (lp,) = [lp for lp in sp.net_param.layer if lp.type == "EntropyLoss"]
        return lp

    for bits, eta, lam in ((16, 3.0, 3.0), (128, 10.0, 3.0)):
        tuned = experiments.configure("toyhome", "DAH", bits=bits, **kw)
        generic = experiments.configure("toyhome", "DAH", eta=eta, **kw)   # dah_solver.prototxt
        for lp in generic.net_param.layer:
            if lp.name == "fc8_hash":
                lp.inner_product_param.num_output = bits
        entropy(generic).entropy_loss_param.diversity_weight = lam
        generic.net_param.name = tuned.net_param.name = ""
        assert tuned == generic, bits
        assert (list(entropy(tuned).loss_weight), entropy(tuned).entropy_loss_param.diversity_weight) \
            == ([eta], lam)
    sp = experiments.configure("toyhome", "DAH", bits=64, **kw)
    assert (list(entropy(sp).loss_weight), entropy(sp).entropy_loss_param.diversity_weight) == ([10.0], 1.0)
