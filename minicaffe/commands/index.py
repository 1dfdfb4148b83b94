"""``tools/index``: hash codes of a collection of images → a searchable database file.

    tools/index --model DEPLOY --weights W (--list LIST [--root DIR] | --folder DIR) --out DB
                [--add] [--transform_from TRAIN_NET | --raw] [--blob code] [--batch 100]
                [--gpu N]

Runs the deploy net in the TEST phase over every image (``minicaffe.search.encode_images``)
with the training net's image transformation (``--transform_from``; without it the deploy
net's Input layer must carry a ``transform_param``, or ``--raw`` must say that unnormalised
pixels are meant), packs the signs of ``--blob`` to bits and writes the database file ``DB``
(format: ``minicaffe/search.py``) with the labels, the image paths and the identity of the net.
Progress and an ETA go to stderr.

``--folder DIR`` indexes an image tree: ``DIR/<Class>/<image>`` (one collection), or
``DIR/<Domain>/<Class>/<image>`` (Office-Home's and ToyHome's layout: every domain, labels as
``tools/make_lists`` gives them, the sorted class names over all domains). ``--list`` takes a
Caffe list file (``path label`` lines; class names from a ``classes.txt`` beside it, if any).

``--add`` appends to an existing ``DB``, which must hold codes of the same bit length from
the same net (deploy structure, weights, blob, transformation); the file is replaced
atomically, so a failed run leaves the database as it was.
"""
import argparse
import logging
import os
import shlex
import sys

from minicaffe.backend import select_device
from minicaffe.datasets import lists
from minicaffe.errors import CaffeError
from minicaffe.search import HashIndex, check_same_net, encode_images, pack_codes

from ._cli import add_transform_arguments, check_output, run, setup_logging, summary

log = logging.getLogger("minicaffe")


def build_parser():
    p = argparse.ArgumentParser(prog="index", description=summary(__doc__))
    p.add_argument("--model", required=True, help="deploy prototxt (an Input layer feeds it)")
    p.add_argument("--weights", required=True, help="trained .caffemodel")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--list", help="image list file (path label per line)")
    src.add_argument("--folder", help="image tree DIR/<Class>/<image> or "
                     "DIR/<Domain>/<Class>/<image>")
    p.add_argument("--root", default="", help="prefix of the list's paths (root_folder)")
    p.add_argument("--out", required=True, help="the database file to write")
    p.add_argument("--add", action="store_true", help="append to an existing --out")
    add_transform_arguments(p)
    p.add_argument("--blob", default="code", help="the blob holding the codes (default: code)")
    p.add_argument("--batch", type=int, default=100, help="images per forward (default 100)")
    p.add_argument("--gpu", default=None, help="GPU id (default: the CPU)")
    return p


def folder_entries(folder):
    """``([(absolute path, label)], class names)`` of an image tree: DIR/<Class>/<image>
    (labels: the sorted class folders), or DIR/<Domain>/<Class>/<image> (``datasets.lists.scan``,
    the labels of ``tools/make_lists``), with the images in label, then name order."""
    if not os.path.isdir(folder):
        raise CaffeError("%s: no such directory" % folder)
    root = os.path.abspath(folder)
    subs = lists.subdirs(root)
    flat = [c for c in subs if lists.image_files(os.path.join(root, c))]
    if not flat:
        domains, classes, images = lists.scan(root)
        return [(os.path.join(root, p), label) for d in domains for p, label in images[d]], classes
    nested = [c for c in subs if c not in flat and lists.subdirs(os.path.join(root, c))]
    if nested:
        raise CaffeError("%s mixes class folders of images (%s) and folders of folders (%s); "
                         "index one layout at a time" % (folder, flat[0], nested[0]))
    return [(os.path.join(root, c, f), label) for label, c in enumerate(flat)
            for f in lists.image_files(os.path.join(root, c))], flat


def _list_classes(list_file):
    path = os.path.join(os.path.dirname(os.path.abspath(list_file)), lists.CLASSES_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()] or None


def index_cmd(args):
    setup_logging()
    select_device(args.gpu)
    check_output(args.out)
    old = None
    if args.add:
        old = HashIndex.load(args.out, engine="numpy")
    elif os.path.exists(args.out):
        log.info("Replacing %s (use --add to append to it)", args.out)
    if args.folder:
        images, classes = folder_entries(args.folder)
        if not images:
            raise CaffeError("%s holds no images" % args.folder)
    else:
        images, classes = args.list, _list_classes(args.list)
    enc = encode_images(args.model, args.weights, images, args.transform_from or None,
                        root=args.root, blob=args.blob, batch=args.batch, raw=args.raw)
    bits = enc.codes.shape[1]
    if old is not None:
        check_same_net(args.out, old.meta.get("net"), enc.net, old.bits, bits)
        if classes and old.meta.get("classes") and classes != old.meta["classes"]:
            raise CaffeError("%s labels %d classes (%s, ...), the new images %d (%s, ...)"
                             % (args.out, len(old.meta["classes"]), old.meta["classes"][0],
                                len(classes), classes[0]))
        idx = old
    else:
        idx = HashIndex(bits, engine="numpy", meta={"net": enc.net})
    idx.meta["classes"] = idx.meta.get("classes") or classes
    idx.add(pack_codes(enc.codes, bits), enc.labels, enc.paths)
    idx.record(args.command, len(enc.labels))
    idx.save(args.out)
    log.info("Wrote %s: %d codes of %d bits (%d new)", args.out, len(idx), bits, len(enc.labels))
    return 0


def main(argv=None):
    parser = build_parser()
    parser.set_defaults(command=" ".join(["tools/index"] + [shlex.quote(a) for a in (
        sys.argv[1:] if argv is None else argv)]))
    return run(index_cmd, argv, parser=parser)
