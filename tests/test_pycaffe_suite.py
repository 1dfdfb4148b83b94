"""BVLC Caffe's own pycaffe tests (``python/caffe/test/*.py`` but test_nccl.py), unchanged,
against minicaffe through ``python -m minicaffe.pycaffe``.

They come from ``tools/fetch_pycaffe_tests`` (into ``~/.cache/minicaffe/pycaffe-tests``); when
that folder is incomplete this module tries the download once and, without a network, skips
saying how to fetch them. The suite runs once, in a subprocess (``import caffe`` must be the
alias there, and its snapshots land in a temporary folder); each file below is one test here
that checks every one of its tests passed, and that it has as many tests as at the pinned
commit (a file that fails to import would have none).
"""
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

import minicaffe
from minicaffe.commands import fetch_pycaffe_tests as fetcher
from minicaffe.errors import CaffeError

# tests per file at fetcher.COMMIT
FILES = {"test_coord_map.py": 11, "test_draw.py": 1, "test_io.py": 5,
         "test_layer_type_list.py": 1, "test_net.py": 18, "test_net_spec.py": 3,
         "test_python_layer.py": 6, "test_python_layer_with_param_str.py": 2,
         "test_solver.py": 4}

# BVLC's tests are Python 2 era: Python 3.12 removed the unittest aliases they call.
RUNNER = """
import sys, unittest
for old, new in (("assertEquals", "assertEqual"), ("assertRaisesRegexp", "assertRaisesRegex")):
    if not hasattr(unittest.TestCase, old):
        setattr(unittest.TestCase, old, getattr(unittest.TestCase, new))
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def test_the_pinned_files_are_the_ones_counted():
    assert sorted(FILES) == sorted(fetcher.TEST_FILES)


def test_fetch_is_all_or_nothing(tmp_path, monkeypatch):
    dest = str(tmp_path / "tests")
    served = []

    def fake_download(path, timeout):
        served.append(path)
        if len(served) == 5:
            raise CaffeError("cannot download %s (offline)" % path)
        return ("# %s\n" % path).encode()

    monkeypatch.setattr(fetcher, "_download", fake_download)
    with pytest.raises(CaffeError, match="offline"):
        fetcher.fetch(dest)
    assert not os.path.exists(dest) and os.listdir(str(tmp_path)) == []   # no partial folder
    served.clear()
    monkeypatch.setattr(fetcher, "_download", lambda path, timeout: ("# %s\n" % path).encode())
    assert fetcher.fetch(dest) == dest and fetcher.is_complete(dest)
    with open(os.path.join(dest, fetcher.TEST_DIR, "test_io.py")) as f:
        assert f.read() == "# python/caffe/test/test_io.py\n"
    os.remove(os.path.join(dest, "models/bvlc_alexnet/deploy.prototxt"))
    assert not fetcher.is_complete(dest)


def test_fetch_from_git_names_what_is_missing(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("no git program")
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "empty.git")], check=True)
    with pytest.raises(CaffeError, match="empty.git: cannot read python/caffe/test/"
                                         "test_coord_map.py at commit 9b8915401"):
        fetcher.fetch(str(tmp_path / "dest"), from_git=str(tmp_path / "empty.git"))
    assert not os.path.exists(str(tmp_path / "dest"))


@pytest.fixture(scope="module")
def pycaffe_suite(tmp_path_factory):
    dest = fetcher.default_dest()
    if not fetcher.is_complete(dest):
        try:
            fetcher.fetch(dest, timeout=10)
        except CaffeError as exc:
            pytest.skip("BVLC pycaffe's tests are not in %s (tools/fetch_pycaffe_tests puts "
                        "them there) and the download failed: %s" % (dest, exc))
    pytest.importorskip("six", reason="BVLC pycaffe's tests import six: pip install six")
    work = tmp_path_factory.mktemp("pycaffe_suite")
    report = str(work / "report.xml")
    root = os.path.dirname(os.path.dirname(os.path.abspath(minicaffe.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    cmd = [sys.executable, "-m", "minicaffe.pycaffe", "-c", RUNNER, "-q", "-p",
           "no:cacheprovider", "-o", "addopts=", "--junitxml", report,
           os.path.join(dest, fetcher.TEST_DIR)]
    proc = subprocess.run(cmd, cwd=str(work), env=env, capture_output=True, text=True,
                          timeout=900)
    if not os.path.exists(report):
        pytest.fail("the pycaffe suite did not run:\n" + proc.stdout[-4000:] + proc.stderr[-2000:])
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")[0] + ".py"
        kids = [k.tag for k in case]
        outcome = ("failed" if "failure" in kids or "error" in kids else
                   "skipped" if "skipped" in kids else "passed")
        detail = " ".join((k.get("message") or "") for k in case)[:300]
        results.setdefault(module, []).append((case.get("name"), outcome, detail))
    return results, proc.stdout[-6000:]


@pytest.mark.parametrize("name", sorted(FILES))
def test_pycaffe_file_passes(pycaffe_suite, name):
    results, tail = pycaffe_suite
    if name == "test_draw.py" and shutil.which("dot") is None:
        pytest.skip("test_draw.py renders PNGs with Graphviz's dot, which is not on PATH "
                    "(apt-get install graphviz)")
    cases = results.get(name, [])
    bad = [c for c in cases if c[1] != "passed"]
    assert not bad, "%s: %s\n%s" % (name, bad, tail)
    assert len(cases) == FILES[name], "%s: %d tests ran, %d expected\n%s" % (
        name, len(cases), FILES[name], tail)
