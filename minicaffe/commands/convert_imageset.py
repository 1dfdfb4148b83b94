"""Convert the images listed in a file to an LMDB of Datum records, as Caffe's convert_imageset.

Usage: convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME

LISTFILE has lines "path label" (split at the last space); each image ROOTFOLDER + path is
stored under the key "%08d_%s" % (line index, path), as Caffe does, so the records read back
in list order. Flags (gflags style: -flag=value, --flag value, --flag / --noflag for booleans):

  --gray            read the images as 1-channel grayscale (default false)
  --shuffle         shuffle the lines first (default false)
  --resize_height   --resize_width: resize to this size when both are > 0 (default 0)
  --encoded         store encoded images (PNG/JPEG bytes) instead of raw CHW pixels
  --encode_type     png, jpg, ...: the encoding (implies --encoded; default: the file's own)
  --backend         lmdb (LevelDB is not supported)
  --check_size      check that all images have the same size

An image that cannot be read is skipped with a warning, as in Caffe. Any other error prints
one line and exits with status 2.
"""
import os
import shutil
import sys

from .. import backend as mc_backend
from ..errors import CaffeError
from ..layers.data import _import_lmdb, open_lmdb
from ..proto import caffe_pb2
from ..transformer import ImageReadError, encode_image, read_image, read_image_list

USAGE = "usage: convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME"

_BOOL_FLAGS = ("gray", "shuffle", "encoded", "check_size")
_INT_FLAGS = ("resize_height", "resize_width")
_STR_FLAGS = ("encode_type", "backend")
_DEFAULTS = {"gray": False, "shuffle": False, "encoded": False, "check_size": False,
             "resize_height": 0, "resize_width": 0, "encode_type": "", "backend": "lmdb"}
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


class UsageError(CaffeError):
    pass


def parse_args(argv):
    """gflags-style parsing: (flags dict, positional args). Flags may appear anywhere."""
    flags, positional = dict(_DEFAULTS), []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positional.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        name = name.replace("-", "_")   # --resize-height as --resize_height, like every tool
        if name in ("help", "h", "helpfull"):
            flags["help"] = True
            continue
        if name in _BOOL_FLAGS or (name.startswith("no") and name[2:] in _BOOL_FLAGS and not eq):
            if name not in _BOOL_FLAGS:
                flags[name[2:]] = False
            elif not eq:
                flags[name] = True
            elif value.lower() in _TRUE:
                flags[name] = True
            elif value.lower() in _FALSE:
                flags[name] = False
            else:
                raise UsageError("flag -%s takes true or false, got %r" % (name, value))
            continue
        if name not in _INT_FLAGS and name not in _STR_FLAGS:
            raise UsageError("unknown command line flag '%s'" % name)
        if not eq:
            if i >= len(argv):
                raise UsageError("flag -%s is missing its value" % name)
            value = argv[i]
            i += 1
        if name in _INT_FLAGS:
            try:
                flags[name] = int(value)
            except ValueError:
                raise UsageError("flag -%s takes an integer, got %r" % (name, value)) from None
        else:
            flags[name] = value
    return flags, positional


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


def _match_ext(path, enc):
    ext = path.rsplit(".", 1)[-1].lower() if "." in path else path.lower()
    enc = enc.lower()
    return ext == enc or (enc == "jpg" and ext == "jpeg")


def _write_batch(env, pending, lmdb):
    while True:
        try:
            with env.begin(write=True) as txn:
                for key, value in pending:
                    txn.put(key, value)
            return
        except lmdb.MapFullError:  # grow the map as Caffe's LMDB::DoubleMapSize does
            env.set_mapsize(env.info()["map_size"] * 2)


def convert(root, listfile, db_name, *, resize_height=0, resize_width=0, shuffle=False,
            gray=False, encoded=False, encode_type="", backend="lmdb", check_size=False,
            say=_say):
    """Write the LMDB ``db_name``; returns the number of images stored."""

    kind = backend.lower()
    if kind == "leveldb":
        raise CaffeError("LevelDB is not supported; use --backend lmdb (the default)")
    if kind != "lmdb":
        raise CaffeError("unknown --backend %r (only lmdb is supported)" % backend)
    lmdb = _import_lmdb("convert_imageset")
    lines = read_image_list(listfile, "list file")
    if shuffle:
        say("Shuffling data")
        lines = [lines[i] for i in mc_backend.rng().permutation(len(lines))]
    say("A total of %d images." % len(lines))
    if encode_type and not encoded:
        say("encode_type specified, assuming encoded=true.")
    is_color = not gray
    rh, rw = max(0, resize_height), max(0, resize_width)
    if os.path.exists(db_name):
        raise CaffeError("cannot create %s: it already exists" % db_name)
    env = open_lmdb(db_name, "convert_imageset", write=True)
    count, data_size, pending = 0, None, []
    try:
        for line_id, (path, label, lineno) in enumerate(lines):
            enc = encode_type
            if encoded and not enc:
                if "." not in path:
                    say("Failed to guess the encoding of '%s'" % path)
                enc = path.rsplit(".", 1)[-1].lower()
            filename = root + path
            try:
                img = read_image(filename, rh, rw, is_color)
            except ImageReadError as exc:
                say("%s line %d: %s; skipped" % (listfile, lineno, exc))
                continue
            datum = caffe_pb2.Datum(label=label)
            if enc:
                if (img.shape[2] == 3) == is_color and not rh and not rw \
                        and _match_ext(path, enc):
                    with open(filename, "rb") as f:
                        datum.data = f.read()
                else:
                    datum.data = encode_image(img, enc)
                datum.encoded = True
            else:
                datum.channels, datum.height, datum.width = img.shape[2], img.shape[0], img.shape[1]
                datum.data = img.transpose(2, 0, 1).tobytes()
            if check_size:
                size = img.size
                if data_size is None:
                    data_size = size
                elif size != data_size:
                    raise CaffeError("%s line %d: incorrect data size %d for %s (the first image "
                                     "has %d)" % (listfile, lineno, size, filename, data_size))
            key = ("%08d_%s" % (line_id, path)).encode("utf-8", "surrogateescape")
            pending.append((key, datum.SerializeToString()))
            count += 1
            if count % 1000 == 0:
                _write_batch(env, pending, lmdb)
                pending = []
                say("Processed %d files." % count)
        if pending or count == 0:
            _write_batch(env, pending, lmdb)
            say("Processed %d files." % count)
    except BaseException:
        env.close()
        shutil.rmtree(db_name, ignore_errors=True)
        raise
    env.close()
    return count


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        flags, positional = parse_args(argv)
        if flags.pop("help", False):
            print(__doc__.strip())
            return 0
        if len(positional) != 3:
            raise UsageError("expected ROOTFOLDER/ LISTFILE DB_NAME, got %d argument%s (%s)"
                             % (len(positional), "" if len(positional) == 1 else "s", USAGE))
        convert(*positional, **flags)
    except CaffeError as exc:
        print("convert_imageset: error: %s" % str(exc).replace("\n", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
