"""Caffe list files for a ``<root>/<Domain>/<Class>/<image>`` tree (Office-Home's layout).

Works on Office-Home as distributed (``OfficeHomeDataset_10072016/<Art|Clipart|Product|Real
World>/<Class>/<NNNNN>.jpg``, 65 classes; loose files at the top such as ``ImageInfo.csv`` are
ignored) and on ToyHome.

- domains: the sub-folders of ``root`` that hold at least one ``<Class>/<image>``;
- classes: the sorted (Python string order) union of the class folder names over *all* the
  domains of ``root``, so that a label means the same class in every list, whichever domains
  are written; the label of a class is its index in that order;
- images: files with an image extension (``.jpg``, ``.png``, ... any case), sorted by name.

``write_lists`` writes one list per domain, ``<outdir>/<domain, spaces as _>.txt`` (``Art.txt``,
``Real_World.txt``), lines ``<Domain>/<Class>/<file> <label>`` in label then file order, paths
relative to ``root`` (so ``image_data_param { root_folder: "<root>/" }`` finds them; Caffe splits
a line at its last space, so the space in "Real World" is fine), and ``<outdir>/classes.txt``,
the class names one per line in label order.
"""
import os

from ..errors import CaffeError

__all__ = ["IMAGE_EXTENSIONS", "CLASSES_FILE", "list_name", "scan", "select_domains",
           "write_lists"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pnm", ".gif", ".tif",
                    ".tiff", ".webp")
CLASSES_FILE = "classes.txt"


def list_name(domain):
    """The list file name of a domain: ``Real World`` -> ``Real_World.txt``."""
    return domain.replace(" ", "_") + ".txt"


def _subdirs(path):
    with os.scandir(path) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())


def _images(path):
    with os.scandir(path) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_file()
                      and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)


def scan(root):
    """``(domains, classes, images)`` of the tree at ``root``: sorted domain names, sorted
    class names (the labels' order), and ``{domain: [(relative path, label), ...]}``."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise CaffeError("%s: no such directory (the dataset root, holding "
                         "<Domain>/<Class>/<image>)" % root)
    found = {}
    for d in _subdirs(root):
        per_class = {c: _images(os.path.join(root, d, c)) for c in _subdirs(os.path.join(root, d))}
        per_class = {c: files for c, files in per_class.items() if files}
        if per_class:
            found[d] = per_class
    if not found:
        raise CaffeError("%s: no images found; expected <Domain>/<Class>/<image> below it, as "
                         "OfficeHomeDataset_10072016/Art/Alarm_Clock/00001.jpg" % root)
    classes = sorted(set().union(*found.values()))
    label = {c: i for i, c in enumerate(classes)}
    images = {}
    for d, per_class in found.items():
        images[d] = [("%s/%s/%s" % (d, c, f), label[c]) for c in classes
                     for f in per_class.get(c, ())]
        for path, _ in images[d]:
            if "\n" in path or "\r" in path:
                raise CaffeError("%s: a path with a line break cannot go in a list file: %r"
                                 % (root, path))
    return sorted(found), classes, images


def select_domains(available, requested):
    """``requested`` names matched to ``available`` ones; ``Real_World`` and any letter case
    also name ``Real World``. None or empty means all."""
    if not requested:
        return list(available)
    key = {d.replace("_", " ").lower(): d for d in available}
    out = []
    for r in requested:
        d = key.get(r.replace("_", " ").strip().lower())
        if d is None:
            raise CaffeError("unknown domain %r (the root has: %s)" % (r, ", ".join(available)))
        if d not in out:
            out.append(d)
    return out


def write_lists(root, outdir, domains=None, absolute=False):
    """Write the list of each domain (all by default) and ``classes.txt`` to ``outdir``;
    paths are relative to ``root`` unless ``absolute``. Returns ``{domain: list path}``."""
    all_domains, classes, images = scan(root)
    chosen = select_domains(all_domains, domains)
    os.makedirs(outdir, exist_ok=True)
    prefix = os.path.abspath(root).replace(os.sep, "/").rstrip("/") + "/" if absolute else ""
    written = {}
    for d in chosen:
        path = os.path.join(outdir, list_name(d))
        _write(path, ["%s%s %d\n" % (prefix, p, label) for p, label in images[d]])
        written[d] = path
    _write(os.path.join(outdir, CLASSES_FILE), [c + "\n" for c in classes])
    return written


def _write(path, lines):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        f.writelines(lines)
    os.replace(tmp, path)
