"""``tools/make_trunk``: train the ToyHome family's generic trunk (the stand-in for ImageNet).

    tools/make_trunk [--out prototxt/toyhome/things_trunk.caffemodel] [--iters 2000]
                     [--seed 1] [--per_class 20]

The paper starts every method from ImageNet VGG-F: a trunk trained on many *other* classes.
The embedded equivalent is a softmax classifier over the 64 generic "things" of
``minicaffe.datasets.toyhome`` (``Thing_00`` ... ``Thing_63``: procedurally drawn compositions,
none of them a ToyHome class), drawn in all four domain styles, with
``prototxt/toyhome/trunk_solver.prototxt``. Its conv1-fc7 (the layers every ToyHome net
shares) are written to ``--out``; ``tools/reproduce`` starts every method of every pair there.
The shipped file was made by this command with its defaults; rerunning it gives a trunk of
the same quality, not the same bytes (BLAS sums in another order on another machine).
"""
import argparse
import logging
import os
import tempfile
import time

from minicaffe.experiments import default_trunk  # noqa: F401  (tools/make_trunk writes it)

from .. import backend, experiments, protoio
from ..datasets import lists, toyhome
from ..solver import Solver
from ._cli import run, setup_logging, summary

log = logging.getLogger("minicaffe")

DEFAULT_ITERS = 2000
DEFAULT_PER_CLASS = 20


def make_trunk(out, iters=DEFAULT_ITERS, seed=1, per_class=DEFAULT_PER_CLASS, progress=None):
    """Train the generic trunk and write its conv1-fc7 to ``out``; returns (out, final train
    accuracy over the last 100 iterations)."""
    root = toyhome.ensure(classes=toyhome.THINGS, per_class=per_class)
    family = os.path.join(experiments.prototxt_dir(), "toyhome")
    sp = protoio.read_solver_param(os.path.join(family, "trunk_solver.prototxt"))
    net = protoio.read_net_param(os.path.join(family, sp.net))
    sp.ClearField("net")
    work = tempfile.mkdtemp(prefix="minicaffe-trunk-")
    entries = []
    for path in lists.write_lists(root, os.path.join(work, "lists")).values():
        with open(path) as f:
            entries += [line for line in f.read().splitlines() if line.strip()]
    train_list = os.path.join(work, "train.txt")  # every domain style mixed in one list
    with open(train_list, "w") as f:
        f.write("\n".join(entries) + "\n")
    for lp in net.layer:   # the TRAIN data layer and the TEST one
        if lp.type == "ImageData":
            p = lp.image_data_param
            p.source, p.root_folder = train_list, root.rstrip("/") + "/"
    sp.net_param.CopyFrom(net)
    sp.max_iter, sp.random_seed = iters, seed
    sp.snapshot_prefix = os.path.join(work, "trunk")
    sp.snapshot_after_train = True
    backend.set_random_seed(seed)
    solver = Solver(sp)
    accs = []
    solver.add_iteration_callback(lambda s: accs.append(float(s.net.blobs["accuracy"].data)))
    if progress:
        solver.add_iteration_callback(lambda s: progress(s.iter, s.param.max_iter))
    t0 = time.time()
    try:
        solver.solve()
    finally:
        solver.net.close()
    log.info("Trained the generic trunk: %d iterations in %.0f s, train accuracy %.3f "
             "(last 100 iterations, 64 classes)", iters, time.time() - t0,
             sum(accs[-100:]) / max(1, len(accs[-100:])))
    out = os.path.abspath(out)   # written atomically (protoio.write_proto_binary)
    experiments.trunk_weights(solver.snapshot_filename(".caffemodel"), "toyhome", out)
    return out, sum(accs[-100:]) / max(1, len(accs[-100:]))


def build_parser():
    p = argparse.ArgumentParser(prog="make_trunk", description=summary(__doc__))
    p.add_argument("--out", default=None, help="the trunk .caffemodel (default: the shipped "
                                                "prototxt/toyhome/things_trunk.caffemodel)")
    p.add_argument("--iters", type=int, default=DEFAULT_ITERS,
                   help="training iterations (default %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="random_seed of the training (default 1)")
    p.add_argument("--per_class", type=int, default=DEFAULT_PER_CLASS,
                   help="images per thing and domain (default %(default)s)")
    return p


def _main(args):
    setup_logging()
    out, acc = make_trunk(args.out or default_trunk(), args.iters, args.seed, args.per_class)
    print(out)
    return 0


def main(argv=None):
    return run(_main, argv, parser=build_parser())
