"""tools/benchmark: the nets it builds, and a --quick run end to end (LeNet and the ToyHome
DAH net, minicaffe always, PyTorch when it is installed); --load with the measurement faked."""
import argparse
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from minicaffe.commands import benchmark
from minicaffe.commands.benchmark import minicaffe_net_param

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _layers(net_param, type_):
    return [lp for lp in net_param.layer if lp.type == type_]


def test_vgg_net_is_the_deploy_trunk_with_a_hash_loss():
    p = minicaffe_net_param("vgg", 16)
    (inp,) = _layers(p, "Input")
    assert list(inp.top) == ["data", "label"]
    assert [list(s.dim) for s in inp.input_param.shape] == [[16, 3, 224, 224], [16]]
    (loss,) = _layers(p, "HashLoss")
    assert list(loss.bottom) == ["code", "label"]
    assert [lp.name for lp in _layers(p, "Convolution")] == ["conv1", "conv2", "conv3", "conv4",
                                                            "conv5"]
    assert [lp.inner_product_param.num_output for lp in _layers(p, "InnerProduct")] == \
        [4096, 4096, 64]
    # the trunk has no fillers in deploy_64 (weights come from VGG_CNN_F.caffemodel)
    assert all(lp.convolution_param.weight_filler.type == "msra"
               for lp in _layers(p, "Convolution"))


def test_lenet_and_toy_swap_their_data_layers_for_inputs():
    lenet = minicaffe_net_param("lenet", None)
    assert not _layers(lenet, "Data")
    train = [lp for lp in _layers(lenet, "Input")
             if not lp.include or lp.include[0].phase == 0]
    assert [list(s.dim) for s in train[0].input_param.shape] == [[64, 1, 28, 28], [64]]
    toy = minicaffe_net_param("toy", None)
    assert not _layers(toy, "DomainData")
    (inp,) = _layers(toy, "Input")
    n, classes, side = benchmark._toy_sizes()
    assert (n, classes, side) == (48, 12, 32)
    assert [list(s.dim) for s in inp.input_param.shape] == \
        [[n, 3, side, side], [n], [n, 3, side, side], [n]]
    assert benchmark.net_batch("toy", None) == 96 and benchmark.net_batch("vgg", 8) == 8


def _run(args, tmp_path):
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "benchmark"), "--quick",
                        "--json", str(out)] + args, capture_output=True, text=True, timeout=120,
                       cwd=str(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout, json.loads(out.read_text())


def _check_minicaffe_rows(text, result, nets=("lenet", "toy")):
    rows = {r["net"]: r for r in result["rows"]}
    assert set(rows) == set(nets)
    batches = {"lenet": 64, "toy": 96}
    for name, r in rows.items():
        assert r["batch"] == batches[name]
        mc = r["minicaffe"]
        assert mc["images_per_s"] > 0 and mc["peak_rss_mib"] > 0
        assert len(mc["step_ms"]) == 3 and min(mc["step_ms"]) > 0
    table = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert table[0].startswith("| net | batch | threads | minicaffe img/s | PyTorch img/s")
    assert [ln.split(" | ")[1] for ln in table[2:]] == [str(batches[n]) for n in nets]
    assert "load average" in text and "OPENBLAS_CORETYPE=" in text
    return rows


def test_quick_run_without_torch(tmp_path):
    text, result = _run(["--no_torch", "--nets", "lenet", "--threads", "1"], tmp_path)
    rows = _check_minicaffe_rows(text, result, nets=("lenet",))
    assert rows["lenet"]["pytorch"] == {"skipped": "--no_torch"}
    assert "| — | — |" in text and "PyTorch: not measured (--no_torch)" in text


def test_quick_run(tmp_path):
    """LeNet and the ToyHome DAH net; the PyTorch columns when torch is installed."""
    text, result = _run(["--threads", "1"], tmp_path)
    rows = _check_minicaffe_rows(text, result)
    seen = result["environment"]["seen"]["1"]
    assert seen["minicaffe"]["numba_threads"] == 1
    if not HAVE_TORCH:
        assert "PyTorch: not measured (torch is not importable" in text
        return
    for r in rows.values():
        pt = r["pytorch"]
        assert pt["images_per_s"] > 0 and pt["peak_rss_mib"] > 0 and len(pt["step_ms"]) == 3
    # the same learned shapes (minicaffe also counts BatchNorm's 2·64 + 1 statistics)
    assert rows["lenet"]["minicaffe"]["params"] == rows["lenet"]["pytorch"]["params"]
    assert rows["toy"]["minicaffe"]["params"] - rows["toy"]["pytorch"]["params"] == 129
    assert seen["pytorch"]["torch_threads"] == 1
    assert seen["pytorch"]["imported_minicaffe"] is False   # its peak RSS is PyTorch's own


def test_import_sets_sleeping_idle_threads_unless_the_user_chose():
    """minicaffe defaults OMP_WAIT_POLICY to PASSIVE (spinning Numba threads starve OpenBLAS's)
    and OPENBLAS_THREAD_TIMEOUT to 4 (spinning OpenBLAS threads starve the chunk workers), and
    leaves a user's value alone; the benchmark's PyTorch runs without the defaults."""
    code = ("import os, minicaffe; from minicaffe.commands import benchmark as b; "
            "pt = b._framework_env(dict(os.environ), 'pytorch'); "
            "mc = b._framework_env(dict(os.environ), 'minicaffe'); "
            "print(*[os.environ[v] for v in ('OMP_WAIT_POLICY', 'OPENBLAS_THREAD_TIMEOUT')], "
            "minicaffe.OMP_WAIT_POLICY_DEFAULTED, ','.join(minicaffe.WAIT_DEFAULTED) or '-', "
            "'OMP_WAIT_POLICY' in pt, 'OPENBLAS_THREAD_TIMEOUT' in pt, "
            "'OMP_WAIT_POLICY' in mc, 'OPENBLAS_THREAD_TIMEOUT' in mc)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["PASSIVE", "4", "True", "OMP_WAIT_POLICY,OPENBLAS_THREAD_TIMEOUT",
                   "False", "False", "True", "True"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    env["OPENBLAS_THREAD_TIMEOUT"] = "20"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["ACTIVE", "20", "False", "-", "True", "True", "True", "True"]


# --- --load N: busy processes beside the measurements (the measurement itself faked) ---------

def _load_children():
    """Pids of this process's children that run tools/benchmark's --load loop (zombies not
    counted)."""
    me, out = os.getpid(), []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z" and b"tools/benchmark --load" in cmd:
            out.append(int(d))
    return sorted(out)


def _fake_measure(monkeypatch, fail=None):
    """Replace the measurement subprocess: record the --load processes alive at each
    measurement, then return a made-up result (or raise ``fail``)."""
    seen = []

    def measure(spec, env, cwd, timeout):
        seen.append(_load_children())
        if fail is not None:
            raise fail
        return {"step_ms": [2.0, 1.0, 3.0], "update_ms": [0.5, 0.5, 0.5], "build_s": 0.1,
                "first_step_s": 0.2, "loss": 1.0, "params": 1, "peak_rss_mib": 100.0}
    monkeypatch.setattr(benchmark, "measure", measure)
    return seen


def _gone(pids):
    for pid in pids:
        with pytest.raises(ProcessLookupError):   # killed and reaped: no zombie left
            os.kill(pid, 0)


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")


@needs_proc
def test_load_processes_run_beside_the_measurements(tmp_path, monkeypatch, capsys):
    seen = _fake_measure(monkeypatch)
    out = tmp_path / "b.json"
    assert benchmark.main(["--quick", "--no_torch", "--load", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    pids = sorted(result["load_pids"])
    assert len(pids) == 2 and seen == [pids, pids]          # lenet and toy, both loaded
    assert _load_children() == []
    _gone(pids)
    assert result["settings"]["load"] == 2 and [r["load"] for r in result["rows"]] == [2, 2]
    text = capsys.readouterr().out
    assert "with 2 busy process(es) beside it (--load 2)" in text
    table = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert table[0].startswith("| net | batch | threads | load | minicaffe img/s |")
    assert [ln.split(" | ")[3] for ln in table[2:]] == ["2", "2"]
    assert [ln.split(" | ")[7] for ln in table[2:]] == ["2 (0)", "2 (0)"]   # median step ms


@needs_proc
@pytest.mark.parametrize("fail, status", [(RuntimeError("boom"), None),
                                          (KeyboardInterrupt(), 130)])
def test_load_processes_end_when_the_benchmark_does_not(monkeypatch, capsys, fail, status):
    seen = _fake_measure(monkeypatch, fail=fail)
    if status is None:
        with pytest.raises(RuntimeError, match="boom"):
            benchmark.main(["--quick", "--no_torch", "--nets", "lenet", "--load", "1"])
    else:   # Ctrl-C
        assert benchmark.main(["--quick", "--no_torch", "--nets", "lenet", "--load", "1"]) == 130
    assert len(seen) == 1 and len(seen[0]) == 1
    assert _load_children() == []
    _gone(seen[0])


def test_load_0_changes_nothing(tmp_path, monkeypatch, capsys):
    seen = _fake_measure(monkeypatch)
    outputs = []
    for extra in ([], ["--load", "0"]):
        out = tmp_path / "b.json"
        assert benchmark.main(["--quick", "--no_torch", "--json", str(out)] + extra) == 0
        result = json.loads(out.read_text())
        for key in ("command", "load_average"):
            del result[key]
        text = [ln for ln in capsys.readouterr().out.splitlines()
                if not ln.startswith("load average")]
        outputs.append((text, result))
    assert outputs[0] == outputs[1]
    text, result = outputs[0]
    assert seen == [[], [], [], []] and "load_pids" not in result
    assert result["settings"]["load"] == 0
    assert "busy" not in "\n".join(text) and "| load |" not in text[2]


def test_pytorch_runs_without_minicaffes_thread_defaults(monkeypatch):
    from minicaffe import threads
    monkeypatch.setattr(threads, "DEFAULTED", {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"})
    env = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "3", "PATH": "/bin"}   # MKL: the user's
    assert benchmark._framework_env(env, "pytorch")["MKL_NUM_THREADS"] == "3"
    assert "OMP_NUM_THREADS" not in benchmark._framework_env(env, "pytorch")
    assert benchmark._framework_env(env, "pytorch", threads=2)["OMP_NUM_THREADS"] == "2"
    assert benchmark._framework_env(env, "minicaffe")["OMP_NUM_THREADS"] == "2"


def test_thread_settings_take_turns_within_each_round(monkeypatch, capsys):
    """--threads auto,1 --rounds 2: auto, 1, auto, 1 for each net (a load that drifts during the
    run falls on every setting alike); the table still has one set of rows per setting."""
    calls = []

    def measure(spec, env, cwd, timeout):
        calls.append((spec["net"], spec["threads"], env.get("OMP_NUM_THREADS")))
        assert (threads.MARKER in env) == (spec["threads"] is None)   # a count of ours: kept
        return {"step_ms": [2.0 if spec["threads"] else 4.0], "update_ms": [0.5], "build_s": 0.1,
                "first_step_s": 0.2, "loss": 1.0, "params": 1, "peak_rss_mib": 100.0}
    monkeypatch.setattr(benchmark, "measure", measure)
    from minicaffe import threads
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setenv(threads.MARKER, "7:OMP_NUM_THREADS")
    assert benchmark.main(["--quick", "--no_torch", "--threads", "auto,1", "--rounds", "2"]) == 0
    assert calls == [("lenet", None, "7"), ("lenet", 1, "1")] * 2 + [("toy", None, "7"), ("toy", 1, "1")] * 2
    table = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ")][2:]
    assert [(ln.split(" | ")[0][2:7], ln.split(" | ")[2]) for ln in table] == [
        ("LeNet", "auto"), ("ToyHo", "auto"), ("LeNet", "1"), ("ToyHo", "1")]


def test_rss_every_reads_resident_memory_every_kth_step(tmp_path):
    text, result = _run(["--no_torch", "--nets", "lenet", "--steps", "4", "--warmup", "1",
                         "--rss_every", "2"], tmp_path)
    (trace,) = result["rows"][0]["minicaffe"]["rss_mib"]   # one round
    assert [s for s, _ in trace] == [2, 4] and all(m > 10 for _, m in trace)   # warm-up counted
    (line,) = [ln for ln in text.splitlines() if ln.startswith("resident memory")]
    assert line.startswith("resident memory, minicaffe lenet threads auto round 1: %.1f MiB "
                           "after step 2, %.1f after step 4" % (trace[0][1], trace[1][1]))


def test_memory_lines_give_the_growth_between_the_first_and_last_readings():
    rows = [{"net": "lenet", "threads": "1",
             "minicaffe": {"rss_mib": [[[1000, 200.0], [2000, 201.0], [3000, 203.5]]]},
             "pytorch": {"rss_mib": [[[1000, 300.0]]]}}]   # one reading: no growth to give
    assert benchmark.memory_lines(rows) == [
        "resident memory, minicaffe lenet threads 1 round 1: 200.0 MiB after step 1000, "
        "203.5 after step 3000 (+3.5 MiB; the readings: 200 201 204)", ""]
    assert benchmark.memory_lines([{"net": "toy", "threads": "auto", "minicaffe": {}}]) == []


def test_threads_option_parses_counts_and_auto():
    assert benchmark._threads_list("auto,1,2") == [None, 1, 2]
    assert benchmark._threads_list("2, 2,auto,auto") == [2, None]
    for bad in ("x", "0", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            benchmark._threads_list(bad)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed (the PyTorch reference nets)")
def test_gpu_check_times_the_benchmarks_dah_net_in_both_frameworks():
    """tools/gpu_check's two phases: dah_train_64 with Input layers, and tools/benchmark's
    PyTorch DAH net (built here on the CPU): the same learned shapes, a finite DAH loss."""
    from importlib.machinery import SourceFileLoader

    import minicaffe as caffe
    loader = SourceFileLoader("gpu_check", os.path.join(ROOT, "tools", "gpu_check"))
    gpu_check = importlib.util.module_from_spec(importlib.util.spec_from_loader("gpu_check", loader))
    loader.exec_module(gpu_check)
    p = gpu_check._bench_net_param(2)
    assert not _layers(p, "DomainData")
    (inp,) = _layers(p, "Input")
    assert [list(s.dim) for s in inp.input_param.shape] == [[2, 3, 224, 224], [2]] * 2
    assert {"MMDLoss", "HashLoss", "EntropyLoss"} <= {lp.type for lp in p.layer}
    net = caffe.Net(p, caffe.TRAIN)
    model, loss_fn, groups = benchmark.torch_models()["vgg_dah"](2)
    # minicaffe also counts BatchNorm's 2·64 + 1 statistics
    assert sum(b.count() for b in net.learnable_params) == \
        sum(t.numel() for t in model.parameters()) + 2 * 64 + 1
    assert len(groups) == len(list(model.parameters()))
    loss = loss_fn()
    assert loss.dim() == 0 and bool(loss.isfinite())
