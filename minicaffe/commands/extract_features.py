"""``tools/extract_features``: any blob of a trained net over an image list → .npy.

    tools/extract_features --model DEPLOY --weights W --list LIST [--root DIR] --blob fc7
                           [--blob code ...] --out PREFIX [--transform_from TRAIN_NET | --raw]
                           [--batch 100] [--gpu N]

Writes ``PREFIX_<blob>.npy`` (N × features, in list order) and ``PREFIX_labels.npy``; the
folder of PREFIX must exist (checked first). The deploy net's Input layer is replaced by an
ImageData layer over the list in the TEST phase, with the transformation (resize, centre
crop, mean, scale; no mirror) of the training net's data layer (``--transform_from``); without
it the deploy net's Input layer must carry a ``transform_param``, or ``--raw`` must say that
unnormalised pixels are meant (``minicaffe.search.transform_param_from``, as tools/index):
features of images without the training transformation are silently wrong.
"""
import argparse
import logging

import numpy as np

from minicaffe import experiments
from minicaffe.backend import select_device
from minicaffe.search import transform_param_from

from ._cli import add_transform_arguments, check_output, run, setup_logging, summary

log = logging.getLogger("minicaffe")


def build_parser():
    p = argparse.ArgumentParser(prog="extract_features", description=summary(__doc__))
    p.add_argument("--model", required=True, help="deploy prototxt (an Input layer feeds it)")
    p.add_argument("--weights", required=True, help="trained .caffemodel")
    p.add_argument("--list", required=True, help="image list file (path label per line)")
    p.add_argument("--root", default="", help="prefix of the list's paths (root_folder)")
    p.add_argument("--blob", action="append", required=True, help="blob to save (repeatable)")
    p.add_argument("--out", required=True, help="output prefix")
    add_transform_arguments(p)
    p.add_argument("--batch", type=int, default=100, help="images per forward (default 100)")
    p.add_argument("--gpu", default=None, help="GPU id (default: the CPU)")
    return p


def extract_cmd(args):
    setup_logging()
    check_output(args.out, args.out + "_<blob>.npy")
    src = transform_param_from(args.model, args.transform_from, args.raw)
    select_device(args.gpu)
    feats, labels = experiments.extract(args.model, args.weights, args.list, args.root,
                                        args.blob, src, args.batch)
    for name, arr in feats.items():
        path = "%s_%s.npy" % (args.out, name)
        np.save(path, arr)
        log.info("Wrote %s %s", path, arr.shape)
    np.save(args.out + "_labels.npy", labels)
    return 0


def main(argv=None):
    return run(extract_cmd, argv, parser=build_parser())
