"""``tools/make_lists``: Caffe list files ("path label") for an Office-Home style tree.

    tools/make_lists ROOT OUTDIR [--domains D [D ...]] [--absolute]

ROOT holds ``<Domain>/<Class>/<image>`` (Office-Home's ``OfficeHomeDataset_10072016`` or a
ToyHome root). Writes ``OUTDIR/<Domain>.txt`` per domain, spaces as underscores
(``Real_World.txt``), with paths relative to ROOT and labels = the index of the class in the
sorted class names of ROOT, the same in every list; and ``OUTDIR/classes.txt``. ``--domains``
picks some (``Real_World`` or ``"Real World"``). Prints the lists written, one per line.
"""
import argparse
import logging

from ..datasets import lists
from ._cli import run, setup_logging

log = logging.getLogger("minicaffe")


def build_parser():
    p = argparse.ArgumentParser(prog="make_lists",
                                description="Write one Caffe list file per domain of ROOT.")
    p.add_argument("root", metavar="ROOT", help="dataset root: ROOT/<Domain>/<Class>/<image>")
    p.add_argument("outdir", metavar="OUTDIR", help="folder for <Domain>.txt and classes.txt")
    p.add_argument("--domains", nargs="+", metavar="D",
                   help="domains to write (default: all); Real_World names 'Real World'")
    p.add_argument("--absolute", action="store_true",
                   help="absolute image paths instead of paths relative to ROOT")
    return p


def make_lists(args):
    setup_logging()
    _, classes, images = lists.scan(args.root)
    written = lists.write_lists(args.root, args.outdir, args.domains, args.absolute)
    for d, path in written.items():
        log.info("%s: %d images of %d classes -> %s", d, len(images[d]), len(classes), path)
        print(path)
    return 0


def main(argv=None):
    return run(make_lists, argv, parser=build_parser())
