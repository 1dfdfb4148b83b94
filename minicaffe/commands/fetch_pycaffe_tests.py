"""``tools/fetch_pycaffe_tests``: BVLC Caffe's own pycaffe tests, for tests/test_pycaffe_suite.py.

    tools/fetch_pycaffe_tests [--dest DIR] [--from_git CAFFE_GIT_DIR]

Downloads ``python/caffe/test/*.py`` of BVLC/caffe at a pinned commit (without test_nccl.py,
which needs NCCL), and the net prototxts under ``models/`` and ``examples/`` that its
test_draw.py draws, into ``~/.cache/minicaffe/pycaffe-tests`` (``$MINICAFFE_PYCAFFE_TESTS``
overrides it) in the repository's own layout. ``--from_git`` reads them from a clone of
BVLC/caffe instead of GitHub (``CAFFE/.git`` or a bare repository holding the commit). The
folder is complete only once the ``COMMIT`` file is written, last.
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request

from minicaffe.errors import CaffeError

from ._cli import run

__all__ = ["COMMIT", "TEST_FILES", "NET_FILES", "default_dest", "is_complete", "fetch", "main"]

COMMIT = "9b891540183ddc834a02b2bd81b31afae71b2153"   # BVLC/caffe master, the 1.0-era code
URL = "https://raw.githubusercontent.com/BVLC/caffe/%s/%s"
TEST_DIR = "python/caffe/test"
TEST_FILES = ["test_coord_map.py", "test_draw.py", "test_io.py", "test_layer_type_list.py",
              "test_net.py", "test_net_spec.py", "test_python_layer.py",
              "test_python_layer_with_param_str.py", "test_solver.py"]
# every models/ and examples/ prototxt but the solvers: what test_draw.py walks
NET_FILES = [
    "examples/cifar10/cifar10_full.prototxt",
    "examples/cifar10/cifar10_full_sigmoid_train_test.prototxt",
    "examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt",
    "examples/cifar10/cifar10_full_train_test.prototxt",
    "examples/cifar10/cifar10_quick.prototxt",
    "examples/cifar10/cifar10_quick_train_test.prototxt",
    "examples/feature_extraction/imagenet_val.prototxt",
    "examples/finetune_pascal_detection/pascal_finetune_trainval_test.prototxt",
    "examples/hdf5_classification/nonlinear_auto_test.prototxt",
    "examples/hdf5_classification/nonlinear_auto_train.prototxt",
    "examples/hdf5_classification/nonlinear_train_val.prototxt",
    "examples/hdf5_classification/train_val.prototxt",
    "examples/mnist/lenet.prototxt",
    "examples/mnist/lenet_train_test.prototxt",
    "examples/mnist/mnist_autoencoder.prototxt",
    "examples/net_surgery/bvlc_caffenet_full_conv.prototxt",
    "examples/net_surgery/conv.prototxt",
    "examples/pycaffe/linreg.prototxt",
    "examples/siamese/mnist_siamese.prototxt",
    "examples/siamese/mnist_siamese_train_test.prototxt",
    "models/bvlc_alexnet/deploy.prototxt",
    "models/bvlc_alexnet/train_val.prototxt",
    "models/bvlc_googlenet/deploy.prototxt",
    "models/bvlc_googlenet/train_val.prototxt",
    "models/bvlc_reference_caffenet/deploy.prototxt",
    "models/bvlc_reference_caffenet/train_val.prototxt",
    "models/bvlc_reference_rcnn_ilsvrc13/deploy.prototxt",
    "models/finetune_flickr_style/deploy.prototxt",
    "models/finetune_flickr_style/train_val.prototxt",
]


def _paths():
    return ["%s/%s" % (TEST_DIR, f) for f in TEST_FILES] + NET_FILES


def default_dest():
    """``$MINICAFFE_PYCAFFE_TESTS``, else ``~/.cache/minicaffe/pycaffe-tests``."""
    return os.environ.get("MINICAFFE_PYCAFFE_TESTS") or os.path.join(
        os.path.expanduser("~"), ".cache", "minicaffe", "pycaffe-tests")


def is_complete(dest):
    """Whether ``dest`` holds every file of the pinned commit."""
    try:
        with open(os.path.join(dest, "COMMIT")) as f:
            if f.read().strip() != COMMIT:
                return False
    except OSError:
        return False
    return all(os.path.isfile(os.path.join(dest, p)) for p in _paths())


def _download(path, timeout):
    url = URL % (COMMIT, path)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CaffeError("cannot download %s (%s); without a network, fetch them from a clone of "
                         "BVLC/caffe: tools/fetch_pycaffe_tests --from_git CAFFE/.git"
                         % (url, reason)) from None


def _from_git(git_dir, path):
    proc = subprocess.run(["git", "--git-dir", git_dir, "show", "%s:%s" % (COMMIT, path)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise CaffeError("%s: cannot read %s at commit %s (%s)" % (
            git_dir, path, COMMIT[:9], msg[0] if msg else "git exit %d" % proc.returncode))
    return proc.stdout


def fetch(dest=None, from_git=None, timeout=20):
    """Fill ``dest`` (default ``default_dest()``) with the pinned files, from GitHub or from the
    git directory ``from_git``; returns ``dest``. Written into a temporary folder renamed into
    place, so an interrupted fetch leaves nothing half-done. CaffeError when a file cannot be
    had."""
    dest = os.path.abspath(dest or default_dest())
    if from_git and shutil.which("git") is None:
        raise CaffeError("--from_git needs the git program on PATH")
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(dest) + ".")
    try:
        for path in _paths():
            data = _from_git(from_git, path) if from_git else _download(path, timeout)
            target = os.path.join(tmp, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
        with open(os.path.join(tmp, "COMMIT"), "w") as f:
            f.write(COMMIT + "\n")
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def build_parser():
    p = argparse.ArgumentParser(prog="fetch_pycaffe_tests",
                                description="Fetch BVLC Caffe's pycaffe tests (pinned commit).")
    p.add_argument("--dest", default=None, help="target folder (default %s)" % default_dest())
    p.add_argument("--from_git", default=None, metavar="GIT_DIR",
                   help="read the files from this clone of BVLC/caffe instead of GitHub")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


def _cmd(args):
    dest = fetch(args.dest, args.from_git)
    print("BVLC/caffe %s: %d test files and %d prototxts in %s"
          % (COMMIT[:9], len(TEST_FILES), len(NET_FILES), dest))
    return 0


def main(argv=None):
    return run(_cmd, argv, parser=build_parser())
