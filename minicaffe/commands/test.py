"""``tools/test``: score a trained model in the TEST phase, as ``caffe test``.

    tools/test --model M --weights W [--iterations 50] [--gpu N] [--level N] [--stage a,b]

Logs ``Batch i, name = v`` for every output element of every iteration, then ``Loss: L`` and
``name = mean`` (with ``(* w = x loss)`` for loss outputs). The net's TEST phase must read its
own data (a data layer with ``include { phase: TEST }``); a net with an Input layer (a deploy
net) is refused in one line naming tools/evaluate and tools/extract_features.
"""
import argparse
import logging

import numpy as np

from minicaffe.backend import select_device
from minicaffe.errors import CaffeError
from minicaffe.net import TEST, Net

from ._cli import run, setup_logging

log = logging.getLogger("minicaffe")


def build_parser():
    p = argparse.ArgumentParser(prog="test", description="Score a model in the TEST phase.")
    p.add_argument("--model", required=True, help="net prototxt")
    p.add_argument("--weights", required=True, help="comma-separated .caffemodel files")
    p.add_argument("--iterations", type=int, default=50, help="batches to score (default 50)")
    p.add_argument("--gpu", default=None, help="GPU id (default: the CPU)")
    p.add_argument("--level", type=int, default=0, help="net state level")
    p.add_argument("--stage", default="", help="comma-separated net state stages")
    return p


def score(net, iterations):
    """Run ``iterations`` forwards; return (mean loss, {output: mean per element})."""
    sums, loss = {}, 0.0
    for i in range(iterations):
        loss += net.forward_prefilled()
        k = 0
        for name in net.outputs:
            vals = net.blobs[name].cpu_data().astype(np.float64).ravel()
            for v in vals:
                log.info("Batch %d, %s = %g", i, name, v)
                k += 1
            sums[name] = sums.get(name, 0) + vals
    n = max(1, iterations)
    return loss / n, {k: v / n for k, v in sums.items()}


def test(args):
    setup_logging()
    select_device(args.gpu)
    stages = [s for s in args.stage.split(",") if s]
    net = Net(args.model, TEST, level=args.level, stages=stages)
    try:
        # tools/test feeds nothing: an Input blob would be scored as it was allocated (zeros),
        # and every element of every output printed (a deploy net's thousands of lines)
        inputs = [name for name, layer in zip(net.layer_names, net.layers) if layer.type == "Input"]
        if inputs:
            raise CaffeError("%s: layer '%s' is an Input layer, which tools/test never fills: it "
                             "scores a net whose TEST phase reads data (a data layer with include "
                             "{ phase: TEST }, as BVLC's lenet_train_test.prototxt); for a deploy "
                             "net use tools/evaluate or tools/extract_features"
                             % (args.model, inputs[0]))
        net.copy_from(args.weights)
        log.info("Running for %d iterations.", args.iterations)
        loss, means = score(net, args.iterations)
    finally:
        net.close()
    log.info("Loss: %g", loss)
    for name in net.outputs:
        w = net.blob_loss_weights.get(name, 0.0)
        for v in means[name]:
            extra = " (* %g = %g loss)" % (w, w * v) if w else ""
            log.info("%s = %g%s", name, v, extra)
    return 0


def main(argv=None):
    return run(test, argv, parser=build_parser())
