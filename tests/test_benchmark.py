"""tools/benchmark: the nets it builds, and a --quick run end to end (LeNet and the ToyHome
DAH net, minicaffe always, PyTorch when it is installed)."""
import importlib.util
import json
import os
import subprocess
import sys

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


def test_import_sets_passive_omp_wait_unless_the_user_chose():
    """minicaffe defaults OMP_WAIT_POLICY to PASSIVE (spinning Numba threads starve OpenBLAS's)
    and leaves a user's value alone; the benchmark's PyTorch runs without the default."""
    code = ("import os, minicaffe; from minicaffe.commands import benchmark as b; "
            "print(os.environ['OMP_WAIT_POLICY'], minicaffe.OMP_WAIT_POLICY_DEFAULTED, "
            "'OMP_WAIT_POLICY' in b._framework_env(dict(os.environ), 'pytorch'), "
            "'OMP_WAIT_POLICY' in b._framework_env(dict(os.environ), 'minicaffe'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["PASSIVE", "True", "False", "True"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["ACTIVE", "False", "True", "True"]
