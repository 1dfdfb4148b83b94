"""A plain ``pip install .`` (not ``-e``): the installed package carries the shipped nets,
solvers and trunk (package data, found without a checkout) and the ``minicaffe NAME`` program
that runs the commands of ``tools/``."""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from minicaffe.commands import COMMANDS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.integration

CHECK = """
import sys
import minicaffe
from minicaffe import experiments, protoio
from minicaffe.commands import benchmark
site = sys.argv[1]
assert minicaffe.__file__.startswith(site), minicaffe.__file__
assert experiments.prototxt_dir().startswith(site), experiments.prototxt_dir()
sp = experiments.configure("toyhome", "DAH", source_list="s.txt", target_list="t.txt", root="/",
                           num_classes=3, bits=16, snapshot_prefix="x")
net = protoio.read_net_param(experiments.family_file("office_home", "hash_deploy.prototxt"))
trunk = protoio.read_net_param(experiments.default_trunk(), binary=True)
print(sp.max_iter, len(net.layer), len(trunk.layer),
      len(benchmark.minicaffe_net_param("toy", 0).layer),
      len(benchmark.minicaffe_net_param("vgg", 2).layer))
"""


def test_the_commands_are_the_tools():
    """``minicaffe NAME`` knows every tools/ script that runs a command module."""
    tools = sorted(f for f in os.listdir(os.path.join(REPO, "tools"))
                   if "from minicaffe.commands.%s import main" % f
                   in open(os.path.join(REPO, "tools", f)).read())
    assert sorted(COMMANDS) == tools


def test_a_plain_install_has_the_shipped_nets_and_the_commands(tmp_path):
    # offline: pip builds with this environment's setuptools (pyproject.toml asks for 68+)
    setuptools = pytest.importorskip("setuptools", reason="pip needs setuptools to build")
    version = tuple(int(x) for x in setuptools.__version__.split(".")[:2])
    if version < (68, 0):
        pytest.skip("setuptools %s is older than pyproject.toml's 68" % setuptools.__version__)
    if version < (70, 1) and importlib.util.find_spec("wheel") is None:
        pytest.skip("setuptools %s builds wheels only with the wheel package"
                    % setuptools.__version__)
    src, site = tmp_path / "src", tmp_path / "site"
    # a copy, so that the build's build/ and egg-info stay out of the checkout
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "results", "data", ".venv"))
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                          "--no-build-isolation", "--target", str(site), str(src)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    env = dict(os.environ, PYTHONPATH=str(site))
    run = lambda *cmd: subprocess.run(cmd, capture_output=True, text=True, env=env,  # noqa: E731
                                      cwd=str(tmp_path))
    out = run(sys.executable, "-c", CHECK, str(site))
    assert out.returncode == 0, out.stderr
    iters, deploy, trunk, toy, vgg = map(int, out.stdout.split())
    assert iters > 0 and deploy > 10 and trunk > 0 and toy > 10 and vgg > 10
    out = run(str(site / "bin" / "minicaffe"), "train", "--help")
    assert out.returncode == 0 and "--solver" in out.stdout, out.stderr
    out = run(sys.executable, "-m", "minicaffe.commands", "tarin")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "unknown command 'tarin'" in out.stderr
