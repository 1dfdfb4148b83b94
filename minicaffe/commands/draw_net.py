"""``tools/draw_net``: draw a net prototxt as a Graphviz graph, as Caffe's python/draw_net.py.

    tools/draw_net NET.prototxt OUT.(dot|png|svg|pdf) [--rankdir LR|TB|BT|RL]
                   [--phase TRAIN|TEST|ALL] [--display_lrm]

The drawing is ``minicaffe.draw`` (pycaffe's caffe.draw): its conventions are there. --phase
keeps the layers whose include/exclude rules admit that phase; the default is ALL, as Caffe.
.png/.svg/.pdf need Graphviz's ``dot`` on PATH.
"""
import argparse

from minicaffe.draw import draw_net_to_file
from minicaffe.protoio import read_net_param

from ._cli import run

__all__ = ["build_parser", "main"]


def build_parser():
    p = argparse.ArgumentParser(prog="draw_net", description="Draw a net as a graph.")
    p.add_argument("input_net_proto_file", metavar="NET.prototxt", help="net definition")
    p.add_argument("output_image_file", metavar="OUT",
                   help="output: .dot (Graphviz text), or .png/.svg/.pdf (needs `dot`)")
    p.add_argument("--rankdir", default="LR", choices=("LR", "TB", "BT", "RL"),
                   help="direction of the graph layout (default LR)")
    p.add_argument("--phase", default="ALL", type=str.upper, choices=("TRAIN", "TEST", "ALL"),
                   help="draw only the layers of this phase (default ALL)")
    p.add_argument("--display_lrm", action="store_true",
                   help="show the lr multipliers of learning layers")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


def _draw_net_cmd(args):
    net = read_net_param(args.input_net_proto_file)
    print("Drawing net to %s" % args.output_image_file)
    draw_net_to_file(net, args.output_image_file, args.rankdir, args.phase, args.display_lrm)
    return 0


def main(argv=None):
    return run(_draw_net_cmd, argv, parser=build_parser())
