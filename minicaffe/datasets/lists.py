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
relative to ``root`` (so ``image_data_param { root_folder: "<root>/" }`` finds them), or with
``absolute`` (what ``tools/make_lists`` writes unless ``--relative``) the absolute paths that
``root_folder: ""`` opens; Caffe splits a line at its last space, so the space in "Real World"
is fine. And ``<outdir>/classes.txt``, the class names one per line in label order.

``match_domain`` finds a domain by the name a user types (case, spaces and underscores ignored;
Office-Home's and Office-31's short names; an unambiguous prefix); ``check_layout`` says in one
line what stops a tree from making DAH batches.
"""
import os

from ..errors import CaffeError
from ..protoio import atomic_write

__all__ = ["IMAGE_EXTENSIONS", "CLASSES_FILE", "ALIASES", "list_name", "subdirs", "image_files",
           "scan", "domain_key", "match_domain",
           "select_domains", "check_layout", "write_lists"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pnm", ".gif", ".tif",
                    ".tiff", ".webp")
CLASSES_FILE = "classes.txt"
# the short names of the papers' tables: Office-Home (Ar, Cl, Pr, Rw) and Office-31 (A, D, W)
ALIASES = {"ar": "art", "cl": "clipart", "pr": "product", "rw": "realworld",
           "a": "amazon", "d": "dslr", "w": "webcam"}


def list_name(domain):
    """The list file name of a domain: ``Real World`` -> ``Real_World.txt``."""
    return domain.replace(" ", "_") + ".txt"


def subdirs(path):
    """The visible sub-folders of ``path``, sorted."""
    with os.scandir(path) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())


def image_files(path):
    """The image files (by extension) directly in ``path``, sorted by name."""
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
    for d in subdirs(root):
        per_class = {c: image_files(os.path.join(root, d, c)) for c in subdirs(os.path.join(root, d))}
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


def domain_key(name):
    """A domain name with case, spaces and underscores ignored."""
    return name.lower().replace(" ", "").replace("_", "")


def match_domain(available, name, root=None):
    """The domain of ``available`` that ``name`` means: the same name with case, spaces and
    underscores ignored (``realworld``, ``Real_World`` -> ``Real World``), else a short name of
    ``ALIASES`` (``Rw``, ``A`` -> ``amazon``), else the one domain that starts so (``phot`` ->
    ``photos``)."""
    key = domain_key(name.strip())
    by_key = {domain_key(d): d for d in available}
    d = by_key.get(key) or by_key.get(ALIASES.get(key, ""))
    if d is not None:
        return d
    where = root or "the root"
    starts = [d for k, d in by_key.items() if key and k.startswith(key)]
    if len(starts) == 1:
        return starts[0]
    if starts:
        raise CaffeError("ambiguous domain %r (%s has %s)" % (name, where, ", ".join(starts)))
    raise CaffeError("unknown domain %r (%s has: %s)" % (name, where, ", ".join(available)))


def select_domains(available, requested):
    """``requested`` names matched to ``available`` ones by ``match_domain``. None or empty
    means all."""
    if not requested:
        return list(available)
    out = []
    for r in requested:
        d = match_domain(available, r)
        if d not in out:
            out.append(d)
    return out


def check_layout(root, found, domains=(), per_class=1):
    """Raise a one-line ``CaffeError`` naming the folder when the tree at ``root`` (``found``:
    its ``scan``) cannot make DAH batches from ``domains``: fewer than 2 domains or classes, a
    domain without a class the others have, or a class folder with fewer than ``per_class``
    (K) images."""
    all_domains, classes, images = found
    if len(all_domains) < 2:
        raise CaffeError("%s: %d domain (%s) found; a transfer pair needs 2 "
                         "(<root>/<Domain>/<Class>/<image>)" % (root, len(all_domains),
                                                               ", ".join(all_domains)))
    if len(classes) < 2:
        raise CaffeError("%s: %d class (%s) found; hashing with labels needs at least 2"
                         % (root, len(classes), ", ".join(classes)))
    for d in domains:
        counts = [0] * len(classes)
        for _, label in images[d]:
            counts[label] += 1
        lacking = [c for c, n in zip(classes, counts) if n == 0]
        if lacking:
            raise CaffeError("%s has no images of class %s (the other domains have them)"
                             % (os.path.join(root, d), ", ".join(lacking)))
        for c, n in zip(classes, counts):
            if n < per_class:
                raise CaffeError("%s has %d image%s, fewer than K = %d per class in a batch "
                                 "(--per_class)" % (os.path.join(root, d, c), n,
                                                    "" if n == 1 else "s", per_class))


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
    # A temporary file of its own (not path + ".tmp"): two jobs writing the same lists at once
    # (tools/reproduce --jobs, two studies on one data set) must not rename each other's file.
    data = "".join(lines).encode("utf-8", "surrogateescape")
    atomic_write(path, lambda f: f.write(data), error=CaffeError)
