"""The README and docs/ point only inside the repository: every relative Markdown link resolves
to a file or folder of the checkout, every file named in backticks under one of the
repository's folders exists, and no page (nor any shipped source, tool or net) names a relative
path that leaves the checkout.
Everything here is decided from the pages' text and the checkout's own files: nothing outside
the repository is opened, so a clone anywhere (with or without folders beside it) gives the
same answers."""
import glob
import os
import re

import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# `prototxt/toyhome/dah_train.prototxt`, `layers/im2col.py:to_rows`: paths from the repository
# root, as the pages write them; a code span with spaces, globs or placeholders (NAME) is not one
TOP = ("docs", "prototxt", "minicaffe", "layers", "solver", "tools", "tests", ".ci")
CODE_PATH = re.compile(r"`((?:%s)/[\w./-]*)(?::[\w/]+)?`" % "|".join(re.escape(t) for t in TOP))
# a relative path that goes up (../x, ../../x) anywhere in the text, link or not
UP_PATH = re.compile(r"(?<![\w./])((?:\.\./)+[\w.-][\w./-]*)")


def _page_id(path):
    return os.path.relpath(path, ROOT)


def links(text):
    """The relative link targets of a page, without their #anchors."""
    out = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue                                # http(s):, mailto:, an anchor in the page
        out.append(target.split("#", 1)[0])
    return out


def code_paths(text):
    return [m for m in CODE_PATH.findall(text)
            if not re.search(r"[*<>]", m) and not re.search(r"/[A-Z_]+(/|$)", m)]   # tools/NAME


def broken(page, text):
    """The targets of ``text`` (the contents of ``page``) that are not in the checkout."""
    here = os.path.dirname(page)
    bad = []
    for target in links(text):
        path = os.path.normpath(os.path.join(here, target))
        # a target outside the checkout is broken without looking at it (it may or may not
        # exist beside a developer's checkout; a clone elsewhere must give the same answer)
        if not path.startswith(ROOT + os.sep) or not os.path.exists(path):
            bad.append(target)
    for target in code_paths(text):
        if not os.path.exists(os.path.join(ROOT, target)):
            bad.append(target)
    return bad


def test_pages_are_found():
    names = {_page_id(p) for p in PAGES}
    assert {"README.md", os.path.join("docs", "user-guide.md"), os.path.join("docs", "layers.md")} <= names


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_link_resolves_inside_the_repository(page):
    text = open(page, encoding="utf-8").read()
    assert broken(page, text) == []


def test_a_broken_link_is_caught():
    page = os.path.join(ROOT, "docs", "gpu.md")
    assert broken(page, "[ok](mpi.md) [up](../README.md#dependencies) [web](https://example.org)") == []
    assert broken(page, "[gone](no_such_page.md)") == ["no_such_page.md"]
    # outside the checkout is broken by its path alone: nothing outside the repository is read
    assert broken(page, "[out](../../beside-the-checkout/page.md)") == ["../../beside-the-checkout/page.md"]
    assert broken(page, "see `prototxt/toyhome/no_such_net.prototxt`") == ["prototxt/toyhome/no_such_net.prototxt"]


def outside(page, text):
    """The relative paths ``text`` names that resolve outside the checkout from ``page``'s
    folder (by their spelling alone)."""
    here = os.path.dirname(page)
    return [t for t in UP_PATH.findall(text)
            if not os.path.normpath(os.path.join(here, t)).startswith(ROOT + os.sep)]


def test_an_outside_path_is_caught():
    readme, guide = PAGES[0], os.path.join(ROOT, "docs", "user-guide.md")
    assert outside(guide, "see [the README](../README.md) and `../RESULTS.md`") == []
    assert outside(readme, "the zoo in `../beside/zoo` or ../beside/x.md") == [
        "../beside/zoo", "../beside/x.md"]
    assert outside(guide, "[up two](../../beside/page.md)") == ["../../beside/page.md"]


@pytest.mark.parametrize("page", sorted(glob.glob(os.path.join(ROOT, "*.md"))) + PAGES[1:],
                         ids=_page_id)
def test_no_page_names_a_path_outside_the_repository(page):
    assert outside(page, open(page, encoding="utf-8").read()) == []


def _shipped_texts():
    """The package's sources, the tools, the shipped nets and setup.cfg: what a user installs."""
    out = [os.path.join(ROOT, "setup.cfg")]
    for top in ("minicaffe", "layers", "solver", "tools", "prototxt"):
        for dirpath, dirnames, files in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            out += [os.path.join(dirpath, f) for f in files
                    if f.endswith((".py", ".prototxt", ".proto", ".md")) or top == "tools"]
    return sorted(p for p in out if not p.endswith("caffe_pb2.py"))


def test_no_shipped_file_names_a_path_outside_the_repository():
    # a docstring's path up and out of the checkout means nothing in a clone or an installed
    # package; a link that leads out is reported, never opened (nothing outside is read)
    real_root = os.path.realpath(ROOT) + os.sep
    bad = []
    for path in _shipped_texts():
        if not os.path.realpath(path).startswith(real_root):
            bad.append("%s: a link out of the checkout" % _page_id(path))
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            bad += ["%s: %s" % (_page_id(path), t) for t in outside(ROOT + os.sep + "x", f.read())]
    assert len(_shipped_texts()) > 100 and bad == []
