"""tools/parse_log, tools/plot_log, tools/draw_net and the shared CLI plumbing (_cli)."""
import datetime
import logging
import math
import os
import re
import subprocess
import sys

import pytest
from conftest import write

from minicaffe.commands import _cli, draw_net, parse_log, plot_log
from minicaffe.errors import CaffeError

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
# BVLC's examples/mnist/lenet_train_test.prototxt, inline so the tests need no file outside the
# repository (draw_net only parses it: the LMDB sources are never opened)
LENET_TEXT = """name: "LeNet"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 }
  data_param { source: "examples/mnist/mnist_train_lmdb" batch_size: 64 backend: LMDB } }
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.00390625 }
  data_param { source: "examples/mnist/mnist_test_lmdb" batch_size: 100 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 stride: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 50 kernel_size: 5 stride: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 500
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


@pytest.fixture
def lenet(tmp_path):
    return write(tmp_path, "lenet_train_test.prototxt", LENET_TEXT)
GLOG_LINE = re.compile(r"^([IWEF])(\d{4}) (\d\d:\d\d:\d\d\.\d{6}) +(\d+) ([\w.]+):(\d+)\] (.*)$")


@pytest.fixture
def glog():
    """setup_logging's handler, restored afterwards."""
    log = logging.getLogger("minicaffe")
    handlers, level = list(log.handlers), log.level
    yield _cli.setup_logging
    log.handlers[:] = handlers
    log.setLevel(level)
    log.filters[:] = []


class _Clock(logging.Filter):
    """Stamps records with scripted times (seconds after ``start``)."""

    def __init__(self, start, offsets):
        super().__init__()
        self.start, self.offsets = start, list(offsets)

    def filter(self, record):
        record.created = (self.start + datetime.timedelta(seconds=self.offsets.pop(0))).timestamp()
        return True


# (seconds after 18:46:19, message) -- what minicaffe's solver logs, ETA suffix included.
TRAINING = [
    (0.0, "Use CPU."),
    (0.2, "Creating training net from net file: lenet_train_test.prototxt"),
    (1.5, "Solving LeNet"),
    (1.5001, "Learning Rate Policy: inv"),
    (1.6, "Iteration 0, Testing net (#0)"),
    (2.0, "    Test net output #0: accuracy = 0.1"),
    (2.0, "    Test net output #1: loss = 2.30259 (* 1 = 2.30259 loss)"),
    (2.05, "Iteration 0 (0 iter/s, 0s/100 iters), loss = 2.3"),
    (2.05, "    Train net output #0: loss = 2.3 (* 1 = 2.3 loss)"),
    (2.05, "Iteration 0, lr = 0.01"),
    (4.05, "Iteration 100 (50 iter/s, 2s/100 iters), loss = 0.5, ETA 0:04"),
    (4.05, "    Train net output #0: loss = 0.45 (* 1 = 0.45 loss)"),
    (4.05, "Iteration 100, lr = 0.00992565"),
    (5.55, "Iteration 200, Testing net (#0)"),
    (6.0, "    Test net output #0: accuracy = 0.9"),
    (6.0, "    Test net output #1: loss = 0.3 (* 1 = 0.3 loss)"),
    (6.05, "Iteration 200 (50 iter/s, 2s/100 iters), loss = 0.2, ETA 1:02"),
    (6.05, "    Train net output #0: loss = 0.25 (* 1 = 0.25 loss)"),
    (6.05, "Iteration 200, lr = 0.00985258"),
    (7.0, "Snapshotting to binary proto file lenet_iter_300.caffemodel"),
    (7.1, "Iteration 300, loss = 0.21"),
    (7.2, "Iteration 300, Testing net (#0)"),
    (7.5, "    Test net output #0: accuracy = 0.91"),
    (7.5, "    Test net output #1: loss = 2.8e-01 (* 1 = 0.28 loss)"),
    (7.6, "Optimization Done."),
]
TRAIN_CSV = """NumIters,Seconds,LearningRate,loss
0,0.55,0.01,2.3
100,2.55,0.01,0.45
200,4.55,0.00992565,0.25
"""
TEST_CSV = """NumIters,Seconds,LearningRate,accuracy,loss
0,0.5,0.00992565,0.1,2.30259
200,4.5,0.00992565,0.9,0.3
300,6.0,0.00985258,0.91,0.28
"""


def _training_log(tmp_path, glog, capsys):
    start = datetime.datetime(datetime.date.today().year, 1, 28, 18, 46, 19)
    log = glog()
    log.addFilter(_Clock(start, [t for t, _ in TRAINING]))
    capsys.readouterr()
    for _, msg in TRAINING:
        log.info(msg)
    text = capsys.readouterr().err
    return write(tmp_path, "lenet_train.log", text), text


# ----------------------------------------------------------------------------- logging

def test_setup_logging_writes_glog_lines(glog, capsys):
    log = glog()
    glog("INFO")  # again: replaces, never doubles, the handler
    log.info("Iteration %d, lr = %g", 100, 0.00992565)
    log.warning("careful")
    log.debug("hidden at INFO")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    m = GLOG_LINE.match(lines[0])
    assert m, lines[0]
    assert m.group(1) == "I" and m.group(5) == "test_tools_logs.py"
    assert m.group(7) == "Iteration 100, lr = 0.00992565"
    assert m.group(2) == datetime.datetime.now().strftime("%m%d")
    assert GLOG_LINE.match(lines[1]).group(1) == "W"
    # the prefix parse_log reads
    assert parse_log.extract_datetime_from_line(lines[0], 2024).year == 2024


# ----------------------------------------------------------------------------- parse_log

def test_parse_log_of_a_minicaffe_log(tmp_path, glog, capsys):
    path, text = _training_log(tmp_path, glog, capsys)
    assert "ETA 1:02" in text and text.count("\n") == len(TRAINING)
    out = tmp_path / "csv"
    assert parse_log.main([path, str(out)]) == 0
    assert (out / "lenet_train.log.train").read_text() == TRAIN_CSV
    assert (out / "lenet_train.log.test").read_text() == TEST_CSV


def test_parse_log_rows_and_tab_delimiter(tmp_path, glog, capsys):
    path, _ = _training_log(tmp_path, glog, capsys)
    train, test = parse_log.parse_log(path)
    assert [list(r) for r in train[:1]] == [["NumIters", "Seconds", "LearningRate", "loss"]]
    assert [r["NumIters"] for r in train] == [0, 100, 200]
    assert [r["NumIters"] for r in test] == [0, 200, 300]
    assert parse_log.main([path, str(tmp_path), "--delimiter", "\\t", "--verbose"]) == 0
    assert "Wrote" in capsys.readouterr().out
    first = (tmp_path / "lenet_train.log.train").read_text().splitlines()[1]
    assert first == "0\t0.55\t0.01\t2.3"


BVLC_LOG = """\
I0210 13:39:20.000000 25210 caffe.cpp:185] Using GPUs 0
I0210 13:39:21.000000 25210 solver.cpp:280] Solving LeNet
I0210 13:39:21.000100 25210 solver.cpp:281] Learning Rate Policy: inv
I0210 13:39:21.100000 25210 solver.cpp:338] Iteration 0, Testing net (#0)
I0210 13:39:22.000000 25210 solver.cpp:406]     Test net output #0: accuracy = 0.0823
I0210 13:39:22.000000 25210 solver.cpp:406]     Test net output #1: loss = 2.30 (* 1 = 2.30 loss)
I0210 13:39:22.100000 25210 solver.cpp:229] Iteration 0, loss = 2.31
I0210 13:39:22.100000 25210 solver.cpp:245]     Train net output #0: loss = 2.31 (* 1 = 2.31 loss)
I0210 13:39:22.100000 25210 sgd_solver.cpp:106] Iteration 0, lr = 0.01
this line has no glog prefix and is skipped
W0210 13:39:22.200000 25210 data_reader.cpp:128] Restarting data prefetching from start.
I0210 13:39:22.381027 25210 solver.cpp:229] Iteration 100, loss = 0.2
I0210 13:39:22.381027 25210 solver.cpp:245]     Train net output #0: loss = 0.2 (* 1 = 0.2 loss)
I0210 13:39:22.381027 25210 solver.cpp:204] Iteration 100, lr = 0.00992565
I0210 13:39:23.000000 25210 solver.cpp:456] Snapshotting to binary proto file lenet_iter_100.caffemodel
I0210 13:39:23.100000 25210 solver.cpp:317] Optimization Done.
"""


def test_parse_log_of_a_bvlc_log(tmp_path):
    train, test = parse_log.parse_log(write(tmp_path, "caffe.log", BVLC_LOG))
    assert train == [
        {"NumIters": 0, "Seconds": 1.1, "LearningRate": 0.01, "loss": 2.31},
        {"NumIters": 100, "Seconds": 1.381027, "LearningRate": 0.01, "loss": 0.2}]
    # a log's only test pass is kept (Caffe's parse_log drops it)
    assert len(test) == 1 and test[0]["accuracy"] == 0.0823 and test[0]["loss"] == 2.30
    assert test[0]["Seconds"] == 1.0 and math.isnan(test[0]["LearningRate"])


def test_parse_log_crosses_new_year(tmp_path):
    text = ("I1231 23:59:59.000000 1 solver.cpp:1] Solving X\n"
            "I1231 23:59:59.500000 1 solver.cpp:1] Iteration 0 (0 iter/s), loss = 1\n"
            "I1231 23:59:59.500000 1 solver.cpp:1]     Train net output #0: loss = 1\n"
            "I0101 00:00:01.000000 1 solver.cpp:1] Iteration 10 (5 iter/s), loss = 0.5\n"
            "I0101 00:00:01.000000 1 solver.cpp:1]     Train net output #0: loss = 0.5\n")
    train, _ = parse_log.parse_log(write(tmp_path, "ny.log", text))
    assert [(r["NumIters"], r["Seconds"]) for r in train] == [(0, 0.5), (10, 2.0)]


def test_parse_log_without_solving_is_an_error(tmp_path, capsys):
    path = write(tmp_path, "nosolve.log", BVLC_LOG.replace("Solving", "Starting"))
    out = tmp_path / "out"
    assert parse_log.main([path, str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("parse_log: error: ")
    assert '"Solving"' in err and "Traceback" not in err
    assert not out.exists() or not os.listdir(str(out))
    with pytest.raises(parse_log.LogFormatError):
        parse_log.parse_log(path)


def test_parse_log_missing_file_and_bad_args(tmp_path, capsys):
    assert parse_log.main([str(tmp_path / "nope.log"), str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == \
        "parse_log: error: No such file or directory: %s" % (tmp_path / "nope.log")
    assert parse_log.main([str(tmp_path / "x.log")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "OUTPUT_DIR" in err


@pytest.mark.integration
def test_parse_log_executable(tmp_path):
    path = write(tmp_path, "nosolve.log", "I0210 13:39:20.000000 1 caffe.cpp:1] hello\n")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "parse_log"), path,
                           str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("parse_log: error: ") and proc.stderr.count("\n") == 1
    for tool in ("parse_log", "plot_log", "draw_net"):
        assert os.access(os.path.join(ROOT, "tools", tool), os.X_OK)


# ----------------------------------------------------------------------------- plot_log

def test_parse_log_total_loss(tmp_path, glog, capsys):
    path, _ = _training_log(tmp_path, glog, capsys)
    train, test, total = parse_log.parse_log(path, total_loss=True)
    assert (train, test) == parse_log.parse_log(path)
    # every "Iteration N (...), loss = X" and the final "Iteration 300, loss = 0.21"
    assert [(r["NumIters"], r["Seconds"], r["loss"]) for r in total] == \
        [(0, 0.55, 2.3), (100, 2.55, 0.5), (200, 4.55, 0.2), (300, 5.6, 0.21)]


@pytest.fixture
def drawn(monkeypatch):
    """The Figures plot_log draws (needs matplotlib)."""
    pytest.importorskip("matplotlib", reason="plot_log needs matplotlib "
                                             "(pip install 'minicaffe[plot]')")
    from minicaffe import figures
    real, got = figures.line_plot, []
    monkeypatch.setattr(figures, "line_plot", lambda *a, **k: got.append(real(*a, **k)))
    return got


def test_plot_log_writes_png(tmp_path, glog, capsys, drawn):
    from PIL import Image
    path, _ = _training_log(tmp_path, glog, capsys)
    out = str(tmp_path / "curves.png")
    assert plot_log.main([path, out]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (800, 560)
    ax, = drawn[0].axes
    # the default: the solver's total loss beside every net output, both axes named
    assert [ln.get_label() for ln in ax.get_lines()] == \
        ["total loss", "train loss", "test accuracy", "test loss"]
    assert list(ax.get_lines()[0].get_ydata()) == [2.3, 0.5, 0.2, 0.21]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Iterations", "loss, accuracy")
    assert ax.get_title() == "lenet_train.log"
    out2 = str(tmp_path / "acc.png")
    assert plot_log.main([path, out2, "--x", "seconds", "--y", "accuracy", "lr",
                          "--size", "400x300", "--ylog"]) == 0
    with Image.open(out2) as im:
        assert im.size == (400, 300)
    ax, = drawn[1].axes
    assert [ln.get_label() for ln in ax.get_lines()] == ["test accuracy", "learning rate"]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_yscale()) == \
        ("Seconds", "accuracy, learning rate", "log")
    assert plot_log.main([path, str(tmp_path / "t.png"), "--y", "total", "--x", "seconds"]) == 0
    ax, = drawn[2].axes
    assert [tuple(p) for p in ax.get_lines()[0].get_xydata()] == \
        [(0.55, 2.3), (2.55, 0.5), (4.55, 0.2), (5.6, 0.21)]
    assert ax.get_ylabel() == "loss"


def test_plot_log_selects_columns(tmp_path, glog, capsys):
    path, _ = _training_log(tmp_path, glog, capsys)
    train, test, total = parse_log.parse_log(path, total_loss=True)
    assert plot_log.select_columns(train, test) == \
        [("train", "loss"), ("test", "accuracy"), ("test", "loss")]
    assert plot_log.select_columns(train, test, total_rows=total) == \
        [("total", "loss"), ("train", "loss"), ("test", "accuracy"), ("test", "loss")]
    assert plot_log.select_columns(train, test, ["accuracy", "lr"]) == \
        [("test", "accuracy"), ("train", "LearningRate")]
    assert plot_log.select_columns(train, test, ["total", "loss"], total) == \
        [("total", "loss"), ("train", "loss"), ("test", "loss")]
    series = plot_log.log_series(train, test, [("test", "loss")], x="seconds")
    assert series[0]["x"] == [0.5, 4.5, 6.0] and series[0]["label"] == "test loss"
    assert plot_log.main([path, str(tmp_path / "x.png"), "--y", "mmd"]) == 2
    err = capsys.readouterr().err
    assert "matches no net output" in err and "(and lr, total)" in err
    with pytest.raises(CaffeError, match="--y total matches no net output"):
        plot_log.select_columns(train, test, ["total"])     # a log without loss = lines
    assert plot_log.main([path, str(tmp_path / "x.png"), "--size", "20x20"]) == 2
    assert "too small" in capsys.readouterr().err


def test_plot_log_without_matplotlib_is_one_line(tmp_path, glog, capsys, monkeypatch):
    path, _ = _training_log(tmp_path, glog, capsys)
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # as if it were not installed
    assert plot_log.main([path, str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err == \
        "plot_log: error: plotting needs matplotlib: pip install 'minicaffe[plot]'\n"
    assert not (tmp_path / "x.png").exists()


def test_plot_log_help_explains_the_choices(capsys):
    assert plot_log.main(["--help"]) == 0
    text = capsys.readouterr().out
    for word in ("total", "lr", "NAME", "plot_training_log.py", "--y accuracy", "matplotlib"):
        assert word in text, word


# ----------------------------------------------------------------------------- draw_net

def _nodes(dot):
    """{node id: attribute text} of the DOT text."""
    return dict(re.findall(r'^  "([^"]+)" \[(.*)\];$', dot, re.M))


def test_draw_net_dot_labels_and_colours(tmp_path, capsys, lenet):
    out = tmp_path / "lenet.dot"
    assert draw_net.main([lenet, str(out)]) == 0
    dot = out.read_text()
    assert dot.startswith('digraph "LeNet" {') and "rankdir=LR;" in dot
    nodes = _nodes(dot)
    assert nodes["conv1_Convolution"] == (
        'label="conv1\\n(Convolution)\\nkernel size: 5\\nstride: 1\\npad: 0", '
        'shape=record, style=filled, fillcolor="#FF5050"')
    assert 'label="pool1\\n(Pooling MAX)\\nkernel size: 2\\nstride: 2\\npad: 0"' in \
        nodes["pool1_Pooling"] and '"#FF9900"' in nodes["pool1_Pooling"]
    assert 'label="ip1\\n(InnerProduct)"' in nodes["ip1_InnerProduct"]
    assert '"#CC33FF"' in nodes["ip1_InnerProduct"]
    assert '"#90EE90"' in nodes["relu1_ReLU"]                  # in place
    assert '"#6495ED"' in nodes["loss_SoftmaxWithLoss"]
    assert nodes["data_blob"] == 'label="data", shape=octagon, style=filled, fillcolor="#E0E0E0"'
    assert '"data_blob" -> "conv1_Convolution";' in dot
    assert '"conv1_Convolution" -> "conv1_blob" [label="20"];' in dot
    assert '"ip1_blob" -> "relu1_ReLU";' in dot and '"relu1_ReLU" -> "ip1_blob";' in dot
    # ALL: both data layers' batch sizes, and the TEST-only accuracy
    assert '[label="Batch 64"]' in dot and '[label="Batch 100"]' in dot
    assert "accuracy_Accuracy" in nodes


def test_draw_net_phase_filtering_and_rankdir(tmp_path, lenet):
    train, test = tmp_path / "train.dot", tmp_path / "test.dot"
    assert draw_net.main([lenet, str(train), "--phase", "TRAIN"]) == 0
    assert draw_net.main(["-phase=TEST", lenet, str(test), "-rankdir", "TB"]) == 0
    t, s = train.read_text(), test.read_text()
    assert "accuracy" not in t and "Batch 100" not in t and "Batch 64" in t
    assert "accuracy_Accuracy" in s and "Batch 100" in s and "Batch 64" not in s
    assert "rankdir=TB;" in s and 'label="conv1 (Convolution) kernel size: 5' in s


def test_draw_net_image_needs_dot(tmp_path, monkeypatch, capsys, lenet):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` here
    out = tmp_path / "lenet.png"
    assert draw_net.main([lenet, str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("draw_net: error: ")
    assert "apt-get install graphviz" in err and "brew install graphviz" in err and ".dot" in err
    assert not out.exists()


def test_draw_net_calls_dot(tmp_path, monkeypatch, lenet):
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\n'
                    'while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done\n'
                    'cat > "$out"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", "%s%s%s" % (fake.parent, os.pathsep, os.environ["PATH"]))
    out = tmp_path / "lenet.svg"
    assert draw_net.main([lenet, str(out), "--display_lrm"]) == 0
    assert "lr mult: 1.0, 2.0" in out.read_text()


def test_draw_net_errors(tmp_path, capsys, lenet):
    assert draw_net.main([str(tmp_path / "none.prototxt"), str(tmp_path / "x.dot")]) == 2
    assert "No such file" in capsys.readouterr().err
    assert draw_net.main([lenet, str(tmp_path / "x.bmp")]) == 2
    assert "unknown output format" in capsys.readouterr().err
    bad = write(tmp_path, "bad.prototxt", 'layer { name: "a" type: "ReLU" include { phase: TRAIN }'
                                          ' exclude { phase: TEST } }\n')
    assert draw_net.main([bad, str(tmp_path / "b.dot"), "--phase", "TRAIN"]) == 2
    assert "both include and exclude" in capsys.readouterr().err


# ----------------------------------------------------------------------------- _cli

@pytest.mark.parametrize("argv,expected", [
    (["-solver", "s.prototxt"], ["--solver", "s.prototxt"]),
    (["-solver=s.prototxt", "-gpu=0,1"], ["--solver=s.prototxt", "--gpu=0,1"]),
    (["--weights", "w.caffemodel", "-display_lrm"], ["--weights", "w.caffemodel",
                                                     "--display_lrm"]),
    (["--level", "-1", "-x", "-1e-3", "-.5", "-h"], ["--level", "-1", "-x", "-1e-3", "-.5",
                                                      "-h"]),
    (["-iterations", "50", "--", "-solver"], ["--iterations", "50", "--", "-solver"]),
    (["model.prototxt", "-"], ["model.prototxt", "-"]),
])
def test_caffe_argv(argv, expected):
    assert _cli.caffe_argv(argv) == expected


def _parser():
    import argparse
    p = argparse.ArgumentParser(prog="demo")
    p.add_argument("--model", required=True)
    p.add_argument("--lr", type=float, default=0.0)
    return p


def test_run_parses_caffe_flags():
    seen = {}

    def fn(args):
        seen.update(vars(args))
    assert _cli.run(fn, ["-model=m.prototxt", "-lr", "-1e-3"], parser=_parser()) == 0
    assert seen == {"model": "m.prototxt", "lr": -1e-3, "debug": False}


@pytest.mark.parametrize("exc,status,message", [
    (CaffeError("bad net:\n  layer conv1"), 2, "demo: error: bad net: layer conv1"),
    (FileNotFoundError(2, "No such file or directory", "w.caffemodel"), 2,
     "demo: error: No such file or directory: w.caffemodel"),
    (KeyboardInterrupt(), 130, "demo: error: interrupted"),
])
def test_run_error_path_is_one_line(exc, status, message, capsys):
    def fn(args):
        raise exc
    assert _cli.run(fn, ["--model", "m"], parser=_parser()) == status
    captured = capsys.readouterr()
    assert captured.err == message + "\n" and captured.out == ""


def test_run_usage_errors_debug_and_help(capsys):
    assert _cli.run(lambda a: 0, ["--lr", "x"], parser=_parser()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("demo: error: ") and "--help" in err

    def boom(args):
        raise CaffeError("boom")
    with pytest.raises(CaffeError):
        _cli.run(boom, ["--model", "m", "-debug"], parser=_parser())
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        _cli.run(lambda a: 1 / 0, ["--model", "m"], parser=_parser())
    assert _cli.run(lambda a: 0, ["--help"], parser=_parser()) == 0
    assert "--model" in capsys.readouterr().out
    # without a parser main_fn gets the rewritten list
    assert _cli.run(lambda argv: len(argv), ["-a", "b"], prog="x") == 2
