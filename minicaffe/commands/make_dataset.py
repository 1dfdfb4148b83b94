"""``tools/make_dataset``: generate ToyHome (or find it cached) and print its root.

    tools/make_dataset [--root DIR] [--force] [--seed N] [--per_class N] [--size N]

ToyHome is minicaffe's embedded stand-in for Office-Home (see minicaffe.datasets.toyhome): the
same folder layout, domains Art, Clipart, Product and "Real World", twelve classes. Without
``--root`` it lives in ``$MINICAFFE_DATA/toyhome-v1`` (default ``~/.cache/minicaffe``). A root
with a complete dataset of the same parameters is reused unless ``--force``.
"""
import argparse

from ..datasets import toyhome
from ._cli import run, setup_logging


def build_parser():
    p = argparse.ArgumentParser(prog="make_dataset",
                                description="Generate the ToyHome dataset and print its root.")
    p.add_argument("--root", default=None,
                   help="where to put it (default: %s)" % toyhome.default_root())
    p.add_argument("--force", action="store_true", help="regenerate even if cached")
    p.add_argument("--seed", type=int, default=toyhome.DEFAULT_SEED,
                   help="drawing seed (default %(default)s)")
    p.add_argument("--per_class", type=int, default=toyhome.DEFAULT_PER_CLASS,
                   help="images per class and domain (default %(default)s)")
    p.add_argument("--size", type=int, default=toyhome.DEFAULT_SIZE,
                   help="image side in pixels (default %(default)s)")
    return p


def make_dataset(args):
    setup_logging()
    root = toyhome.ensure(args.root, seed=args.seed, per_class=args.per_class, size=args.size,
                          force=args.force)
    print(root)
    return 0


def main(argv=None):
    return run(make_dataset, argv, parser=build_parser())
