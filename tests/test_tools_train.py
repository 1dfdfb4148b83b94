"""tools/train, tools/test, tools/time and tools/gradcheck as a user runs them."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from minicaffe.commands import gradcheck as gradcheck_cmd, test as test_cmd, time as time_cmd, train as train_cmd

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))


def make_images(tmp_path, n=24):
    """Two classes of 8×8 images: class 1 is bright in its top half, class 0 at the bottom."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        c = i % 2
        img = rng.integers(0, 40, (8, 8, 3)).astype(np.uint8)
        if c:
            img[:4] += 180
        else:
            img[4:] += 180
        Image.fromarray(img).save(tmp_path / ("img%02d.png" % i))
        lines.append("img%02d.png %d" % (i, c))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")


NET = """
name: "tiny"
layer { name: "data" type: "ImageData" top: "data" top: "label" include { phase: TRAIN }
        transform_param { scale: 0.00390625 }
        image_data_param { source: "list.txt" root_folder: "%(root)s/" batch_size: 8 shuffle: true } }
layer { name: "data" type: "ImageData" top: "data" top: "label" include { phase: TEST }
        transform_param { scale: 0.00390625 }
        image_data_param { source: "list.txt" root_folder: "%(root)s/" batch_size: 8 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include { phase: TEST } }
"""

SOLVER = """
net: "net.prototxt"
base_lr: 0.1
momentum: 0.9
lr_policy: "step"
gamma: 0.5
stepsize: 20
max_iter: %(max_iter)d
display: 5
test_iter: 3
test_interval: 20
snapshot: %(snapshot)d
snapshot_prefix: "%(root)s/snap/tiny"
random_seed: 7
solver_mode: CPU
"""


def setup_dir(tmp_path, max_iter=40, snapshot=20):
    make_images(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET % {"root": tmp_path})
    (tmp_path / "solver.prototxt").write_text(SOLVER % {"root": tmp_path, "max_iter": max_iter,
                                                        "snapshot": snapshot})
    return str(tmp_path / "solver.prototxt")


def losses(log):
    return [float(x) for x in re.findall(r"Iteration \d+ \(.*\), loss = ([0-9.e+-]+)", log)]


def test_train_loss_goes_down_and_snapshots(tmp_path, monkeypatch, capsys):
    solver = setup_dir(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert train_cmd.main(["-solver=" + solver]) == 0       # Caffe's single-dash form
    err = capsys.readouterr().err
    ls = losses(err)
    assert len(ls) >= 6 and ls[-1] < 0.5 * ls[0]
    assert re.search(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ solver\.py:\d+\] Solving tiny$", err, re.M)
    assert "Test net output #0: accuracy = 1" in err
    assert "Optimization Done." in err
    snaps = sorted(os.listdir(tmp_path / "snap"))
    assert snaps == ["tiny_iter_20.caffemodel", "tiny_iter_20.solverstate",
                     "tiny_iter_40.caffemodel", "tiny_iter_40.solverstate"]
    # finetune from the weights, then score them with tools/test
    model = str(tmp_path / "snap" / "tiny_iter_40.caffemodel")
    assert test_cmd.main(["--model", str(tmp_path / "net.prototxt"), "--weights", model,
                          "--iterations", "3"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"\] accuracy = 1$", err, re.M) and "Batch 2, loss = " in err
    assert time_cmd.main(["--model", str(tmp_path / "net.prototxt"), "--iterations", "2"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"conv\tforward: [0-9.]+ ms\.", err) and "Average Forward-Backward" in err


def test_resume_from_snapshot(tmp_path, monkeypatch, capsys):
    solver = setup_dir(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert train_cmd.main(["--solver", solver]) == 0
    capsys.readouterr()
    full = (tmp_path / "snap" / "tiny_iter_40.caffemodel").read_bytes()
    os.remove(tmp_path / "snap" / "tiny_iter_40.caffemodel")
    assert train_cmd.main(["--solver", solver, "--snapshot",
                           str(tmp_path / "snap" / "tiny_iter_20.solverstate")]) == 0
    assert "Resuming from" in capsys.readouterr().err
    assert (tmp_path / "snap" / "tiny_iter_40.caffemodel").read_bytes() == full


def test_train_logs_the_default_snapshot_prefix_once(tmp_path, monkeypatch, capsys):
    solver = setup_dir(tmp_path, max_iter=2, snapshot=0)
    text = open(solver).read()
    open(solver, "w").write(re.sub(r"snapshot_prefix: .*\n", "", text))
    monkeypatch.chdir(tmp_path)
    assert train_cmd.main(["--solver", solver]) == 0
    err = capsys.readouterr().err
    assert err.count("snapshot_prefix was not specified") == 1
    assert "snapshot_prefix was not specified and is set to %s\n" % solver[:-len(".prototxt")] in err
    assert os.path.exists(tmp_path / "solver_iter_2.caffemodel")   # the prefix was used


@pytest.mark.parametrize("args,message", [
    (["--solver", "/nope/solver.prototxt"], "No such file: /nope/solver.prototxt"),
    (["--solver", "S", "--weights", "w.caffemodel", "--snapshot", "s.solverstate"], "not both"),
    ([], "the following arguments are required: --solver"),
])
def test_train_errors_one_line_exit_2(args, message, capsys):
    assert train_cmd.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_train_bad_solver_fields(tmp_path, capsys):
    solver = setup_dir(tmp_path)
    text = open(solver).read()
    open(solver, "w").write(text.replace('lr_policy: "step"', 'lr_policy: "cosine"'))
    assert train_cmd.main(["--solver", solver]) == 2
    assert "Unknown learning rate policy: 'cosine'" in capsys.readouterr().err
    open(solver, "w").write(text.replace("momentum: 0.9", "momentum: 0.9\nmomentun: 1"))
    assert train_cmd.main(["--solver", solver]) == 2
    err = capsys.readouterr().err
    assert "solver.prototxt:5:1:" in err and "momentun" in err


def test_train_weights_that_do_not_fit(tmp_path, monkeypatch, capsys):
    solver = setup_dir(tmp_path)
    monkeypatch.chdir(tmp_path)
    from minicaffe.proto import caffe_pb2
    p = caffe_pb2.NetParameter()
    layer = p.layer.add()
    layer.name = "ip"
    for shape in ((3, 144), (3,)):
        b = layer.blobs.add()
        b.shape.dim.extend(shape)
        b.data.extend([0.0] * int(np.prod(shape)))
    (tmp_path / "bad.caffemodel").write_bytes(p.SerializeToString())
    assert train_cmd.main(["--solver", solver, "--weights", "bad.caffemodel"]) == 2
    err = capsys.readouterr().err
    assert "bad.caffemodel" in err and "shape mismatch" in err and "(2, 144)" in err




def test_empty_weights_exit_2_naming_the_file(tmp_path, monkeypatch, capsys):
    solver = setup_dir(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.caffemodel").write_bytes(b"")
    message = "error: empty.caffemodel: the file is empty (0 bytes), not a NetParameter"
    assert test_cmd.main(["--model", "net.prototxt", "--weights", "empty.caffemodel"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "test: " + message
    assert train_cmd.main(["--solver", solver, "--weights", "empty.caffemodel"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "train: " + message and "Traceback" not in "\n".join(err)

def _rewrite_state(path, out, minicaffe_state):
    from minicaffe.proto import caffe_pb2
    st = caffe_pb2.SolverState()
    st.ParseFromString(open(path, "rb").read())
    st.minicaffe_state = minicaffe_state
    open(out, "wb").write(st.SerializeToString())
    return out


def test_bad_solverstate_one_line_and_data_position_kept(tmp_path, monkeypatch, capsys):
    import json

    import minicaffe as caffe
    solver = setup_dir(tmp_path, max_iter=20, snapshot=20)
    monkeypatch.chdir(tmp_path)
    assert train_cmd.main(["--solver", solver]) == 0
    capsys.readouterr()
    state = str(tmp_path / "snap" / "tiny_iter_20.solverstate")
    bad = _rewrite_state(state, str(tmp_path / "bad.solverstate"), b"{\"rng\": [")
    assert train_cmd.main(["--solver", solver, "--snapshot", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err) and not err[-1].startswith("I")
    assert err[-1].startswith("train: error: %s: field 8001 (minicaffe_state) is not valid JSON" % bad)
    # a data position the ImageData layer refuses: the generator and the layers are put back
    from minicaffe.proto import caffe_pb2
    st = caffe_pb2.SolverState()
    st.ParseFromString(open(state, "rb").read())
    extra = json.loads(st.minicaffe_state.decode())
    assert extra["layers"]["train/data"]["epoch"] >= 0
    extra["layers"]["train/data"]["line_id"] = "twelve"
    bad = _rewrite_state(state, str(tmp_path / "bad2.solverstate"), json.dumps(extra).encode())
    s = caffe.get_solver(solver)
    s.step(3)
    data = s.net.layer_dict["data"]
    before = (repr(data.get_state()), repr(caffe.backend.rng_state()),
              [b.data.copy() for b in s.net.learnable_params], s.iter)
    with pytest.raises(caffe.ModelFileError, match=r"the state for train/data does not fit "
                       r"\(ValueError: .*twelve.*\); nothing was restored"):
        s.restore(bad)
    assert repr(data.get_state()) == before[0] and repr(caffe.backend.rng_state()) == before[1]
    assert all(np.array_equal(a, b.data) for a, b in zip(before[2], s.net.learnable_params))
    assert s.iter == before[3] == 3
    for key, value, message in [("line_id", 999, r"position epoch \d+ line 999 does not fit the 24 lines of list.txt"),
                                ("order", list(range(23)) + [0], "the saved order is not a permutation of the 24 lines")]:
        extra["layers"]["train/data"] = dict(json.loads(st.minicaffe_state.decode())["layers"]["train/data"],
                                             **{key: value})
        bad = _rewrite_state(state, str(tmp_path / "bad3.solverstate"), json.dumps(extra).encode())
        with pytest.raises(caffe.ModelFileError, match=r"the state for train/data does not fit \(CaffeError: "
                           r"ImageData layer data: %s" % message):
            s.restore(bad)
        assert repr(data.get_state()) == before[0] and s.iter == 3
    s.step(1)    # the layer still reads from where it was
    assert s.iter == 4

def test_tools_train_script_and_sigint_snapshot(tmp_path):
    solver = setup_dir(tmp_path, max_iter=100000, snapshot=0)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "train"), "-solver", solver],
                            cwd=str(tmp_path), stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    deadline = time.time() + 120
    for line in proc.stderr:
        lines.append(line)
        if re.search(r"Iteration 10 \(", line) or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    log = "".join(lines) + rest
    assert proc.returncode == 0, log[-2000:]
    assert "SIGINT received" in log and "Snapshotting to binary proto file" in log
    snaps = os.listdir(tmp_path / "snap")
    assert any(s.endswith(".solverstate") for s in snaps)


BROKEN = '''
import minicaffe as caffe

class Square(caffe.Layer):
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)
    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data ** 2
    def backward(self, top, propagate_down, bottom):
        k = 3.0 if self.param_str == "broken" else 2.0
        bottom[0].diff[...] = k * bottom[0].data * top[0].diff
'''

GRADNET = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
layer { name: "sq" type: "Python" bottom: "y" top: "z"
        python_param { module: "mc_square" layer: "Square" param_str: "%s" } }
layer { name: "loss" type: "EuclideanLoss" bottom: "z" bottom: "x" top: "loss" }
"""


def test_gradcheck_tool_passes_good_and_fails_broken(tmp_path, monkeypatch, capsys):
    (tmp_path / "mc_square.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "good.prototxt").write_text(GRADNET % "")
    (tmp_path / "bad.prototxt").write_text(GRADNET % "broken")
    assert gradcheck_cmd.main(["--model", str(tmp_path / "good.prototxt")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^sq +Python +\d+ +ok$", out, re.M) and "0 failed" in out
    assert re.search(r"^ip +InnerProduct +\d+ +ok$", out, re.M)
    sys.modules.pop("mc_square", None)
    assert gradcheck_cmd.main(["--model", str(tmp_path / "bad.prototxt"), "--layer", "sq"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "bottom 0[" in out and "1 failed" in out
    sys.modules.pop("mc_square", None)
    assert "hint:" not in out      # a real bug: no kink or tie to blame


KINKNET = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 2 dim: 6 dim: 6 } } }
layer { name: "relu" type: "ReLU" bottom: "x" top: "r" }
layer { name: "pool" type: "Pooling" bottom: "r" top: "p" pooling_param { pool: %s kernel_size: 3 stride: 2 } }
"""


def test_gradcheck_tool_blames_ties_and_kinks(tmp_path, capsys):
    for pool in ("MAX", "AVE"):
        (tmp_path / (pool + ".prototxt")).write_text(KINKNET % pool)
    # MAX pooling over a ReLU's zeros: windows of tied maxima fail; the hint says why
    assert gradcheck_cmd.main(["--model", str(tmp_path / "MAX.prototxt")]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^pool +Pooling +\d+ +FAIL", out, re.M)
    assert re.search(r"^relu +ReLU +\d+ +ok$", out, re.M)
    hints = [line.strip() for line in out.splitlines() if "hint:" in line]
    assert len(hints) == 1 and hints[0].startswith("hint: MAX pooling sends a window's gradient")
    assert "tie" in hints[0]
    assert gradcheck_cmd.main(["--model", str(tmp_path / "AVE.prototxt")]) == 0
    assert "hint:" not in capsys.readouterr().out
    # a step larger than ReLU's own kink range straddles 0: the failing elements are named
    assert gradcheck_cmd.main(["--model", str(tmp_path / "AVE.prototxt"), "--layer", "relu",
                               "--stepsize", "0.5", "--threshold", "1e-3"]) == 1
    out = capsys.readouterr().out
    hint = re.search(r"hint: (\d+) of the (\d+) failing elements lie within the stepsize 0.5 of "
                     r"\|x\| = 0, where ReLU is not differentiable", out)
    assert hint and 0 < int(hint.group(1)) <= int(hint.group(2))
    assert "--kink 0 --kink_range 0.5" in out


def test_gradient_check_error_carries_the_hint():
    from minicaffe.gradcheck import GradientChecker, GradientCheckError, empty_tops, gaussian_blobs, make_layer
    pool = make_layer('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }')
    bottom = gaussian_blobs([(1, 1, 4, 4)])
    bottom[0].data[...] = 0.0                  # every window ties
    with pytest.raises(GradientCheckError, match=r"(?s)Pooling Layer pooling.*\nhint: MAX pooling"):
        GradientChecker(1e-2, 1e-3).check_gradient_exhaustive(pool, bottom, empty_tops(1))
