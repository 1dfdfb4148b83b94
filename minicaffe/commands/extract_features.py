"""``tools/extract_features``: any blob of a trained net over an image list → .npy.

    tools/extract_features --model DEPLOY --weights W --list LIST [--root DIR] --blob fc7
                           [--blob code ...] --out PREFIX [--transform_from TRAIN_NET]
                           [--batch 100] [--gpu N]

Writes ``PREFIX_<blob>.npy`` (N × features, in list order) and ``PREFIX_labels.npy``. The
deploy net's Input layer is replaced by an ImageData layer over the list in the TEST phase,
with the transformation (resize, centre crop, mean, scale; no mirror) of the training net's
data layer (``--transform_from``, default: none beyond the deploy input size).
"""
import argparse
import logging

import numpy as np

from ._cli import run, setup_logging

log = logging.getLogger("minicaffe")


def build_parser():
    p = argparse.ArgumentParser(prog="extract_features", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="deploy prototxt (an Input layer feeds it)")
    p.add_argument("--weights", required=True)
    p.add_argument("--list", required=True, help="image list file (path label per line)")
    p.add_argument("--root", default="", help="prefix of the list's paths (root_folder)")
    p.add_argument("--blob", action="append", required=True, help="blob to save (repeatable)")
    p.add_argument("--out", required=True, help="output prefix")
    p.add_argument("--transform_from", default="", help="training net whose data layer's "
                   "transform_param (and resize) to use")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--gpu", default=None)
    return p


def default_transform(deploy_path):
    """An ImageData stand-in when no training net is given: resize to the Input size."""
    from minicaffe import protoio
    from minicaffe.proto import caffe_pb2
    net = protoio.read_net_param(deploy_path)
    shape = [lp for lp in net.layer if lp.type == "Input"][0].input_param.shape[0].dim
    fake = caffe_pb2.NetParameter()
    lp = fake.layer.add()
    lp.name, lp.type = "data", "ImageData"
    lp.image_data_param.new_height, lp.image_data_param.new_width = shape[2], shape[3]
    return fake


def extract_cmd(args):
    from minicaffe import experiments, protoio
    from .train import select_device
    setup_logging()
    select_device(args.gpu)
    src = protoio.read_net_param(args.transform_from) if args.transform_from \
        else default_transform(args.model)
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
