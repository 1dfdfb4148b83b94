"""The shipped ToyHome nets by hand, as docs/dah.md and the prototxt headers say: make the data,
make the lists, tools/train a shipped solver, tools/test its TEST phase; every shipped net
builds in both phases, and tools/test refuses a deploy net in one line."""
import glob
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from minicaffe import experiments, protoio
from minicaffe.commands import make_trunk, test as test_cmd
from minicaffe.net import TEST, TRAIN, Net

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
FAMILY = os.path.join(experiments.prototxt_dir(), "toyhome")
TRAIN_NETS = ["dah", "noda", "suh", "dah_authors", "dan", "dann", "trunk"]


def readme_commands():
    """The commands of docs/dah.md's "Training a shipped solver by hand" block."""
    text = open(os.path.join(ROOT, "docs", "dah.md"), encoding="utf-8").read()
    block = text.split("### Training a shipped solver by hand", 1)[1].split("```bash\n", 1)[1]
    return [line for line in block.split("```", 1)[0].splitlines() if line.strip()]


@pytest.fixture(scope="module")
def by_hand(tmp_path_factory):
    """docs/dah.md's commands run by bash, verbatim but for a smaller ToyHome (4 images per
    class and domain: one DomainData batch, one TEST batch of 48) and solvers cut to 2
    iterations, in a folder laid out as the checkout (tools/, prototxt/toyhome/).
    Returns (folder, the commands' stderr)."""
    work = tmp_path_factory.mktemp("byhand")
    os.symlink(os.path.join(ROOT, "tools"), str(work / "tools"))
    shutil.copytree(FAMILY, str(work / "prototxt" / "toyhome"))
    for solver in glob.glob(str(work / "prototxt" / "toyhome" / "*_solver.prototxt")):
        text = open(solver).read()
        open(solver, "w").write(re.sub(r"max_iter: \d+", "max_iter: 2", text))
    bindir = work / "bin"            # the tools' "#!/usr/bin/env python3" is this Python
    bindir.mkdir()
    os.symlink(sys.executable, str(bindir / "python3"))
    script = "\n".join(["set -e"] + [
        line.replace("tools/make_dataset", "tools/make_dataset --per_class 4 --size 40")
            .replace("_iter_300.", "_iter_2.") for line in readme_commands()])
    env = dict(os.environ, MINICAFFE_DATA=str(work / "cache"),
               PATH=str(bindir) + os.pathsep + os.environ.get("PATH", ""),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(["bash", "-c", script], cwd=str(work), env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    os.makedirs(str(work / "things"))   # the trunk net's list (tools/make_trunk writes its own)
    shutil.copy(str(work / "data" / "toyhome" / "lists" / "Art.txt"), str(work / "things" / "train.txt"))
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    yield work, proc.stderr
    mp.undo()


def test_readme_recipe_trains_and_scores(by_hand):
    work, err = by_hand
    assert [c.split()[0] for c in readme_commands()] == ["tools/make_lists", "tools/train", "tools/test"]
    assert "Optimization Done." in err
    assert os.path.exists(str(work / "snapshots" / "toyhome_dan_iter_2.caffemodel"))
    lists = sorted(os.listdir(str(work / "data" / "toyhome" / "lists")))
    assert lists == ["Art.txt", "Clipart.txt", "Product.txt", "Real_World.txt", "classes.txt"]
    first = open(str(work / "data" / "toyhome" / "lists" / "Art.txt")).readline()
    assert os.path.isabs(first.rsplit(" ", 1)[0]) and os.path.isfile(first.rsplit(" ", 1)[0])
    # tools/test: 2 scalars per batch, not a blob's every element, then their means
    assert err.count("Batch 0, ") == 2 and err.count("Batch 14, ") == 2
    got = {k: float(v) for k, v in re.findall(r"\] (accuracy|loss) = ([0-9.e+-]+)", err)}
    assert re.search(r"\] loss = [0-9.e+-]+ \(\* 1 = [0-9.e+-]+ loss\)$", err, re.M)
    # the same images through the deploy net: the TEST phase saw the whole target list
    net = os.path.join(FAMILY, "dan_train.prototxt")
    feats, labels = experiments.extract(
        os.path.join(FAMILY, "cls_deploy.prototxt"), str(work / "snapshots" / "toyhome_dan_iter_2.caffemodel"),
        str(work / "data" / "toyhome" / "lists" / "Clipart.txt"), "", ["prob"],
        protoio.read_net_param(net))
    prob = feats["prob"].astype(np.float64)
    assert len(labels) == 48
    assert got["accuracy"] == pytest.approx(np.mean(prob.argmax(1) == labels), abs=1e-5)
    assert got["loss"] == pytest.approx(-np.mean(np.log(prob[np.arange(48), labels])), rel=1e-4)


@pytest.mark.parametrize("name", TRAIN_NETS)
def test_shipped_nets_build_in_both_phases(by_hand, name):
    path = os.path.join(FAMILY, "%s_train.prototxt" % name)
    train = Net(path, TRAIN)
    test = Net(path, TEST)
    try:
        assert train.layers[0].type == ("ImageData" if name == "trunk" else "DomainData")
        # the TEST phase ends in scalars only: tools/test prints a few lines, not every code
        want = ["hash_loss"] if name in ("dah", "noda", "suh", "dah_authors") else ["accuracy", "loss"]
        assert test.outputs == want
        assert all(test.blobs[o].count() == 1 for o in test.outputs)
        assert list(test.blobs["data"].shape) == [48 if name != "trunk" else 64, 3, 32, 32]
        assert [lp for lp in test.layers if lp.type in ("DomainData", "MMDLoss", "Slice")] == []
        test.forward_prefilled()
        assert all(np.isfinite(test.blobs[o].data).all() for o in test.outputs)
    finally:
        train.close()
        test.close()


def test_tools_test_refuses_a_deploy_net(by_hand, capsys):
    deploy = os.path.join(FAMILY, "hash_deploy.prototxt")
    assert test_cmd.main(["--model", deploy, "--weights", make_trunk.default_trunk()]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith(("I", "W"))]
    assert lines == ["test: error: %s: layer 'data' is an Input layer, which tools/test never "
                     "fills: it scores a net whose TEST phase reads data (a data layer with "
                     "include { phase: TEST }, as BVLC's lenet_train_test.prototxt); for a "
                     "deploy net use tools/evaluate or tools/extract_features" % deploy]
    assert "Batch 0" not in err
