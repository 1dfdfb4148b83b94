"""``tools/gradcheck``: finite-difference check of chosen (or all) layers of any prototxt.

    tools/gradcheck --model M [--layer NAME ...] [--stepsize 1e-2] [--threshold 1e-3]
                    [--phase TRAIN|TEST] [--weights W] [--samples N] [--exhaustive]
                    [--kink 0 --kink_range 0.01]

The net is built in float64, its Input blobs filled with Gaussian data (labels with 0/1),
and run forward once; each layer is then checked on copies of
its bottoms with Caffe's GradientChecker (objective ½Σ top², or every top element with
--exhaustive). Prints one line per layer and the worst elements of a failing one, with a hint
when a kink or a tie is the likely cause (ReLU near 0, MAX pooling); exits 1 when any layer
fails, 2 on bad input.
"""
import argparse

import numpy as np

from minicaffe import backend
from minicaffe.gradcheck import check_net, kink_hint
from minicaffe.net import Net

from ._cli import run, summary


def build_parser():
    p = argparse.ArgumentParser(prog="gradcheck", description=summary(__doc__))
    p.add_argument("--model", required=True, help="net prototxt")
    p.add_argument("--layer", nargs="+", default=None, help="layer names (default: all)")
    p.add_argument("--stepsize", type=float, default=1e-2, help="finite-difference step h (default 1e-2)")
    p.add_argument("--threshold", type=float, default=1e-3,
                   help="largest relative error allowed (default 1e-3)")
    p.add_argument("--phase", default="TRAIN", choices=["TRAIN", "TEST"],
                   help="the net's phase (default TRAIN)")
    p.add_argument("--weights", default="", help=".caffemodel to check at (default: the fillers)")
    p.add_argument("--samples", type=int, default=None,
                   help="check at most N random elements per blob (default: all)")
    p.add_argument("--exhaustive", action="store_true",
                   help="check every top element separately, as Caffe's CheckGradientExhaustive")
    p.add_argument("--kink", type=float, default=0.0,
                   help="skip elements with |x| within --kink_range of this")
    p.add_argument("--kink_range", type=float, default=-1.0,
                   help="(default -1: the layer's own kink, as ReLU's at 0, else none)")
    p.add_argument("--seed", type=int, default=1701, help="seed of the inputs and fillers (1701)")
    return p


def gradcheck(args):
    backend.set_random_seed(args.seed)
    net = Net(args.model, args.phase, weights=args.weights or None, dtype=np.float64)
    results = check_net(net, args.layer, args.stepsize, args.threshold, args.samples,
                        args.exhaustive, args.kink, args.kink_range, args.seed)
    failed = 0
    width = max([len(r[0]) for r in results] + [5])
    print("%-*s  %-22s %-8s %s" % (width, "layer", "type", "checked", "result"))
    for name, typ, status, checked, failures in results:
        print("%-*s  %-22s %-8d %s" % (width, name, typ, checked,
                                        status if not failures else "FAIL (%d elements)" % len(failures)))
        if failures:
            failed += 1
            by_blob = {}
            for f in failures:
                by_blob.setdefault(f["blob"], []).append(f)
            for blob, fs in by_blob.items():
                for f in sorted(fs, key=lambda f: -f["error"])[:5]:
                    print("    %s[%d]: computed %.6g, estimated %.6g (x = %.4g, rel. error %.3g)"
                          % (blob, f["index"], f["computed"], f["estimated"], f["feature"],
                             f["error"]))
            hint = kink_hint(net.layers[net.layer_names.index(name)], failures, args.stepsize)
            if hint:
                print("    " + hint)
    print("%d layer(s) checked, %d failed (stepsize %g, threshold %g)"
          % (sum(1 for r in results if not r[2].startswith("skipped")), failed,
             args.stepsize, args.threshold))
    return 1 if failed else 0


def main(argv=None):
    return run(gradcheck, argv, parser=build_parser())
