"""``tools/evaluate``: a trained hashing model's accuracy, mAP and precision–recall curves.

    tools/evaluate --model DEPLOY --weights W --source SOURCE_LIST --target TARGET_LIST
                   [--root DIR] [--transform_from TRAIN_NET | --raw] [--blob code]
                   [--name DAH] [--out PREFIX] [--gpu N]

Codes are extracted in the TEST phase with the training net's image transformation, as
tools/extract_features (without --transform_from the deploy net's Input layer must carry a
``transform_param``, or --raw must say raw pixels are meant). Prints the target
recognition accuracy (argmax of eq. 6 against all source images, continuous codes), mAP over
the full Hamming ranking for protocol A (target queries, source database — the authors' code)
and protocol B (within the target, leave-self-out), and with ``--out`` writes
``PREFIX_pr.csv`` (precision and recall by Hamming radius 0..d, both protocols) and
``PREFIX_pr.png`` (the folder of PREFIX must exist: checked before the extraction).
"""
import argparse
import logging

import numpy as np

from minicaffe import experiments, figures
from minicaffe.backend import select_device
from minicaffe.search import transform_param_from

from ._cli import add_transform_arguments, check_output, run, setup_logging, summary

log = logging.getLogger("minicaffe")


def build_parser():
    p = argparse.ArgumentParser(prog="evaluate", description=summary(__doc__))
    p.add_argument("--model", required=True, help="deploy prototxt (an Input layer feeds it)")
    p.add_argument("--weights", required=True, help="trained .caffemodel")
    p.add_argument("--source", required=True, help="source list (the retrieval database)")
    p.add_argument("--target", required=True, help="target list (the queries)")
    p.add_argument("--root", default="", help="prefix of the lists' paths (root_folder)")
    add_transform_arguments(p)
    p.add_argument("--blob", default="code", help="the blob holding the codes (default: code)")
    p.add_argument("--name", default="model", help="the method's name in the outputs")
    p.add_argument("--num_classes", type=int, default=None, help="default: 1 + the largest label")
    p.add_argument("--out", default="", help="write PREFIX_pr.csv and PREFIX_pr.png")
    p.add_argument("--batch", type=int, default=100, help="images per forward (default 100)")
    p.add_argument("--gpu", default=None, help="GPU id (default: the CPU)")
    return p


def evaluate_cmd(args):
    setup_logging()
    if args.out:
        check_output(args.out, args.out + "_pr.csv")
    src = transform_param_from(args.model, args.transform_from, args.raw)
    select_device(args.gpu)
    fs, ls = experiments.extract(args.model, args.weights, args.source, args.root, [args.blob], src, args.batch)
    ft, lt = experiments.extract(args.model, args.weights, args.target, args.root, [args.blob], src, args.batch)
    c = args.num_classes or int(max(ls.max(), lt.max())) + 1
    ev = experiments.evaluate_hashing(fs[args.blob], ls, ft[args.blob], lt, c)
    d = fs[args.blob].shape[1]
    print("%s: %d source, %d target images, %d bits" % (args.name, len(ls), len(lt), d))
    print("target accuracy (eq. 6): %.2f%%" % (100 * ev["accuracy"]))
    print("mAP protocol A (target queries, source database): %.4f" % ev["map_a"])
    print("mAP protocol B (within target, leave-self-out):   %.4f" % ev["map_b"])
    if args.out:
        with open(args.out + "_pr.csv", "w") as f:
            f.write("method,protocol,radius,precision,recall\n")
            for proto in ("a", "b"):
                radius, prec, rec = ev["pr_" + proto]
                for r, p_, q_ in zip(radius, prec, rec):
                    f.write("%s,%s,%d,%s,%.6f\n" % (args.name, proto.upper(), r,
                                                    "" if np.isnan(p_) else "%.6f" % p_, q_))
        series = [{"label": "%s (protocol %s)" % (args.name, p.upper()), "x": ev["pr_" + p][2],
                   "y": ev["pr_" + p][1]} for p in ("a", "b")]
        if not figures.available():
            log.warning("Wrote %s_pr.csv; %s_pr.png skipped: pip install 'minicaffe[plot]'",
                        args.out, args.out)
            return 0
        figures.line_plot(series, args.out + "_pr.png", title="Precision-recall, %d bits" % d,
                          xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1),
                          markers=True)
        log.info("Wrote %s_pr.csv and %s_pr.png", args.out, args.out)
    return 0


def main(argv=None):
    return run(evaluate_cmd, argv, parser=build_parser())
