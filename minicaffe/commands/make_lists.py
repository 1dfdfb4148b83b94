"""``tools/make_lists``: Caffe list files ("path label") for an Office-Home style tree.

    tools/make_lists ROOT OUTDIR [--domains D [D ...]] [--relative]

ROOT holds ``<Domain>/<Class>/<image>`` (Office-Home's ``OfficeHomeDataset_10072016`` or a
ToyHome root). Writes ``OUTDIR/<Domain>.txt`` per domain, spaces as underscores
(``Real_World.txt``), with absolute image paths, so that a data layer opens them with the
shipped nets' ``root_folder: ""`` from any directory; ``--relative`` writes paths relative to
ROOT instead (for ``root_folder: "ROOT/"`` or ``tools/convert_imageset ROOT/ LIST DB``). Labels
are the index of the class in the sorted class names of ROOT, the same in every list; the
names go to ``OUTDIR/classes.txt``. ``--domains`` picks some (``Real_World`` or ``"Real
World"``). Prints the lists written, one per line.
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
    paths = p.add_mutually_exclusive_group()
    paths.add_argument("--relative", action="store_true",
                       help="image paths relative to ROOT (default: absolute paths)")
    paths.add_argument("--absolute", action="store_true",
                       help="absolute image paths (the default)")
    return p


def make_lists(args):
    setup_logging()
    _, classes, images = lists.scan(args.root)
    written = lists.write_lists(args.root, args.outdir, args.domains, not args.relative)
    for d, path in written.items():
        log.info("%s: %d images of %d classes -> %s", d, len(images[d]), len(classes), path)
        print(path)
    return 0


def main(argv=None):
    return run(make_lists, argv, parser=build_parser())
