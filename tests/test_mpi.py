"""Data-parallel training over MPI (minicaffe.parallel, tools/train under mpiexec).

Without MPI: the data layers' shards (batch r of every N, the same random draws as one
process), the launcher detection, and the solver's data-parallel path on a one-rank stand-in
communicator. With mpi4py and an mpiexec (the `mpi` extra, e.g. `pip install mpi4py mpich`):
2 ranks × batch B against one process with `iter_size: 2`, resume, and a failing rank.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from PIL import Image

import minicaffe as caffe
from minicaffe import parallel
from minicaffe.commands import train as train_cmd
from minicaffe.proto import caffe_pb2

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
TRAIN_TOOL = os.path.join(ROOT, "tools", "train")


# --- data: images, lists, nets ----------------------------------------------------------------

def make_images(d, n=20, size=10):
    """Two classes of size×size images, each image different; list.txt holds them."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        c = i % 2
        img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        img[: size // 2 if c else size // 2:, :] += 150 if c else 0
        img[size // 2:, :] += 0 if c else 150
        Image.fromarray(img).save(os.path.join(d, "img%02d.png" % i))
        lines.append("img%02d.png %d" % (i, c))
    with open(os.path.join(d, "list.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return os.path.join(d, "list.txt")


def make_domain_lists(d, counts=(3, 4), n_target=9, size=10):
    rng = np.random.default_rng(1)
    src, tgt = [], []
    for c, n in enumerate(counts):
        for i in range(n):
            name = "s_%d_%d.png" % (c, i)
            Image.fromarray(rng.integers(0, 255, (size, size, 3)).astype(np.uint8)).save(
                os.path.join(d, name))
            src.append("%s %d" % (name, c))
    for i in range(n_target):
        name = "t_%d.png" % i
        Image.fromarray(rng.integers(0, 255, (size, size, 3)).astype(np.uint8)).save(
            os.path.join(d, name))
        tgt.append("%s %d" % (name, i % len(counts)))
    for name, lines in (("src.txt", src), ("tgt.txt", tgt)):
        with open(os.path.join(d, name), "w") as f:
            f.write("\n".join(lines) + "\n")


IMAGE_NET = """
name: "tiny"
layer { name: "data" type: "ImageData" top: "data" top: "label"
        transform_param { scale: 0.00390625 crop_size: 8 mirror: true }
        image_data_param { source: "%(root)s/list.txt" root_folder: "%(root)s/" batch_size: 4 shuffle: true } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
%(extra)s
layer { name: "ip" type: "InnerProduct" bottom: "%(ip_bottom)s" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

# DAH's batches: K = 2 images of each of 2 classes and 4 target images, a hashing layer shared
# by both domains, the pairwise hash loss on the source and MK-MMD between the domains.
DOMAIN_NET = """
name: "tiny_dah"
layer { name: "data" type: "DomainData" top: "sdata" top: "slabel" top: "tdata"
        transform_param { scale: 0.00390625 crop_size: 8 mirror: true }
        domain_data_param { source: "%(root)s/src.txt" target_source: "%(root)s/tgt.txt" root_folder: "%(root)s/"
                            per_class: 2 num_classes: 2 shuffle: true } }
layer { name: "fc_s" type: "InnerProduct" bottom: "sdata" top: "fc_s" param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 6 weight_filler { type: "xavier" } } }
layer { name: "fc_t" type: "InnerProduct" bottom: "tdata" top: "fc_t" param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 6 weight_filler { type: "xavier" } } }
layer { name: "code_s" type: "TanH" bottom: "fc_s" top: "code_s" }
layer { name: "hash" type: "HashLoss" bottom: "code_s" bottom: "slabel" top: "hash"
        hash_loss_param { normalization: BATCH_SIZE } }
layer { name: "mmd" type: "MMDLoss" bottom: "fc_s" bottom: "fc_t" top: "mmd" loss_weight: 0.5
        mmd_param { sigma: 1 sigma: 4 } }
"""

SOLVER = """
net: "net.prototxt"
base_lr: %(lr)g
momentum: 0.9
weight_decay: 0.0005
lr_policy: "fixed"
max_iter: %(max_iter)d
iter_size: %(iter_size)d
display: 1
snapshot: %(snapshot)d
snapshot_prefix: "%(root)s/snap/net"
random_seed: 7
solver_mode: CPU
"""

FAIL_LAYER = '''
import os, signal
import minicaffe as caffe
from minicaffe.parallel import launcher_world


class FailOnRank(caffe.Layer):
    """Identity; on rank R, the forward of iteration I raises ("raise") or kills the process."""
    def setup(self, bottom, top):
        rank, it, self.how = self.param_str.split()
        self.rank, self.at, self.calls = int(rank), int(it), 0
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)
    def forward(self, bottom, top):
        world = launcher_world()
        if world and world[0] == self.rank and self.calls == self.at:
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("injected failure at iteration %d" % self.calls)
        self.calls += 1
        top[0].data[...] = bottom[0].data
    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff
'''


def setup_dir(d, kind="image", max_iter=6, iter_size=1, snapshot=0, extra=""):
    d = str(d)
    if kind == "image":
        make_images(d)
        net = IMAGE_NET % {"root": d, "extra": extra, "ip_bottom": "fail" if extra else "conv"}
    else:
        make_domain_lists(d)
        net = DOMAIN_NET % {"root": d}
    with open(os.path.join(d, "net.prototxt"), "w") as f:
        f.write(net)
    with open(os.path.join(d, "solver.prototxt"), "w") as f:
        f.write(SOLVER % {"root": d, "max_iter": max_iter, "iter_size": iter_size,
                          "snapshot": snapshot, "lr": 0.05 if kind == "image" else 0.01})
    with open(os.path.join(d, "mc_fail.py"), "w") as f:
        f.write(FAIL_LAYER)
    return os.path.join(d, "solver.prototxt")


def weights(path):
    p = caffe_pb2.NetParameter()
    with open(path, "rb") as f:
        p.ParseFromString(f.read())
    return {(l.name, i): np.asarray(b.data, np.float32)
            for l in p.layer for i, b in enumerate(l.blobs)}


def losses(log):
    return [float(x) for x in re.findall(r"Iteration \d+ \(.*\), loss = ([-0-9.e+]+)", log)]


# --- launcher detection -------------------------------------------------------------------------

def test_launcher_world_from_the_environment():
    assert parallel.launcher_world({}) is None
    ompi = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"}
    assert parallel.launcher_world(ompi) == (1, 4)
    assert parallel.launcher_world({"PMI_RANK": "0", "PMI_SIZE": "2"}) == (0, 2)
    assert parallel.launcher_world({"PMIX_RANK": "3"}) == (3, None)
    assert parallel.launcher_world({"SLURM_PROCID": "0"}) is None   # an sbatch script, no step
    assert parallel.launched_in_parallel({"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2"})
    assert not parallel.launched_in_parallel({"PMI_RANK": "0", "PMI_SIZE": "1"})


def test_importing_minicaffe_never_imports_mpi4py():
    code = ("import sys, minicaffe, minicaffe.parallel, minicaffe.commands.train, minicaffe.solver;"
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_under_a_launcher_without_mpi4py_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)       # import mpi4py fails
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    with pytest.raises(caffe.CaffeError, match=r"one of 2 ranks.*minicaffe\[mpi\]"):
        parallel.DataParallel()


# --- sharded data streams (no MPI) --------------------------------------------------------------

def _stream(net_text, n, shard=None, seed=5):
    caffe.set_random_seed(seed)
    net = caffe.Net(net_text, caffe.TRAIN)
    layer = net.layers[0]
    if shard:
        layer.set_shard(*shard)
    out, states = [], []
    for _ in range(n):
        net.forward()
        out.append([net.blobs[b].data.copy() for b in net.top_names[net._layer_names[0]]])
        states.append(layer.get_state())
    net.close()
    return out, states


def _same_state(a, b):
    for k in a:
        va, vb = a[k], b[k]
        if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
            np.testing.assert_array_equal(va, vb)
        else:
            assert va == vb, k


def _check_shards(net_text, size, groups):
    full, full_states = _stream(net_text, size * groups)
    for r in range(size):
        mine, states = _stream(net_text, groups, shard=(r, size))
        for g in range(groups):
            for a, b in zip(mine[g], full[g * size + r]):
                np.testing.assert_array_equal(a, b)
            _same_state(states[g], full_states[(g + 1) * size - 1])  # the group's end


@pytest.mark.parametrize("size", [2, 3])
def test_imagedata_shard_is_every_nth_batch_of_one_stream(tmp_path, size):
    make_images(str(tmp_path), n=7)    # batches of 3 over 7 images: every epoch starts elsewhere
    net = """layer { name: "d" type: "ImageData" top: "data" top: "label"
        transform_param { crop_size: 7 mirror: true }
        image_data_param { source: "%s/list.txt" root_folder: "%s/" batch_size: 3 shuffle: true } }
        """ % (tmp_path, tmp_path)
    _check_shards(net, size, groups=4)
    resized = net.replace("shuffle: true", "shuffle: true new_height: 9 new_width: 8")
    _check_shards(resized, size, groups=2)


def test_domaindata_shard_is_every_nth_batch_of_one_plan(tmp_path):
    make_domain_lists(str(tmp_path))
    net = """layer { name: "d" type: "DomainData" top: "sdata" top: "slabel" top: "tdata" top: "tlabel"
        transform_param { crop_size: 7 mirror: true }
        domain_data_param { source: "%s/src.txt" target_source: "%s/tgt.txt" root_folder: "%s/"
                            per_class: 2 num_classes: 2 shuffle: true } }""" % ((tmp_path,) * 3)
    _check_shards(net, 2, groups=5)      # 3 batches an epoch: the ranks share each epoch's plan


def test_data_lmdb_shard_is_every_nth_batch(tmp_path):
    pytest.importorskip("lmdb")
    from minicaffe.layers.data import open_lmdb
    from minicaffe.transformer import encode_image
    env = open_lmdb(str(tmp_path / "db"), "test", write=True)
    rng = np.random.default_rng(2)
    with env.begin(write=True) as txn:
        for i in range(7):
            d = caffe_pb2.Datum(channels=3, height=9, width=9, label=i % 2)
            img = rng.integers(0, 255, (9, 9, 3)).astype(np.uint8)
            if i % 2:
                d.data = img.transpose(2, 0, 1).tobytes()
            else:
                d.data, d.encoded = encode_image(img, "png"), True
            txn.put(b"%08d" % i, d.SerializeToString())
    env.close()
    net = """layer { name: "d" type: "Data" top: "data" top: "label"
        transform_param { crop_size: 7 mirror: true }
        data_param { source: "%s" backend: LMDB batch_size: 3 } }""" % (tmp_path / "db")
    _check_shards(net, 2, groups=4)


def test_set_shard_rejects_a_rank_outside_the_world(tmp_path):
    make_images(str(tmp_path), n=4)
    net = caffe.Net("""layer { name: "d" type: "ImageData" top: "data" top: "label"
        image_data_param { source: "%s/list.txt" root_folder: "%s/" batch_size: 2 } }"""
                    % (tmp_path, tmp_path), caffe.TRAIN)
    with pytest.raises(caffe.CaffeError, match="shard rank 2 is not in \\[0, 2\\)"):
        net.layers[0].set_shard(2, 2)
    assert net.layers[0].shard == (0, 1)
    net.close()


# --- the solver's data-parallel path on one rank (no MPI) ---------------------------------------

class OneRank:
    """mpi4py's communicator calls for a world of one process."""
    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def bcast(self, obj, root=0):
        return obj

    def gather(self, obj, root=0):
        return [obj]

    def allreduce(self, x):
        return x

    def Barrier(self):
        pass

    def Bcast(self, buf, root=0):
        pass

    def Allreduce(self, inplace, buf, op=None):
        self.calls = getattr(self, "calls", 0) + 1

    def Abort(self, code):
        self.aborted = code


ONE = types.SimpleNamespace(IN_PLACE=None, SUM=None)


def test_one_rank_data_parallel_solver_trains_and_resumes_as_the_plain_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solver_path = setup_dir(tmp_path, max_iter=4, snapshot=2)
    plain = caffe.get_solver(solver_path)
    plain.solve()
    expect = [b.data.copy() for b in plain.net.learnable_params]
    comm = OneRank()
    dp = parallel.DataParallel(comm, ONE)
    assert (dp.rank, dp.size, dp.root, dp.local_rank) == (0, 1, True, 0)
    s = caffe.get_solver(solver_path, parallel=dp)
    with dp.abort_on_error():
        s.solve()
    assert comm.calls == 4                                   # one Allreduce an iteration
    for a, b in zip(expect, s.net.learnable_params):
        np.testing.assert_array_equal(a, b.data)
    state = str(tmp_path / "snap" / "net_iter_2.solverstate")
    r = caffe.get_solver(solver_path, parallel=dp)
    r.solve(state)
    for a, b in zip(expect, r.net.learnable_params):
        np.testing.assert_array_equal(a, b.data)
    with pytest.raises(RuntimeError):
        with dp.abort_on_error():
            raise RuntimeError("boom")
    assert comm.aborted == 2


def test_null_comm_is_data_parallel_with_one_rank(tmp_path, monkeypatch):
    """The solver's communicator in one process (NullComm) has DataParallel's interface, so the
    solver has one code path; a signal acts at once there, after the agreeing reduce under MPI."""
    import inspect
    dp = parallel.DataParallel(OneRank(), ONE)
    for name in [n for n in vars(parallel.NullComm) if not n.startswith("_")]:
        a, b = getattr(parallel.NullComm(), name), getattr(dp, name)
        if callable(a):
            assert list(inspect.signature(a).parameters) == list(inspect.signature(b).parameters), name
        else:
            assert type(a) is type(b), name
    monkeypatch.chdir(tmp_path)
    solver_path = setup_dir(tmp_path, max_iter=2, snapshot=0)
    plain = caffe.get_solver(solver_path)
    assert isinstance(plain.comm, parallel.NullComm) and plain.is_root
    plain.comm.request(plain, "snapshot")
    assert (plain.requested_action, plain.pending_action) == ("snapshot", None)
    s = caffe.get_solver(solver_path, parallel=dp)
    assert s.comm is dp and s.thread_governor is None        # MPI ranks keep fixed threads
    dp.request(s, "snapshot")
    assert (s.requested_action, s.pending_action) == (None, "snapshot")
    dp.reduce(s, 1.0)
    assert (s.requested_action, s.pending_action) == ("snapshot", None)


def test_device_buffers_go_to_a_cuda_aware_mpi_and_match_host_staging(tmp_path):
    """GPU mode on Numba's CUDA simulator (in a subprocess: it must be chosen before numba is
    imported): the diffs travel in one device buffer, with the same result as through the host."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "mpi", "device_reduce.py"),
                          str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stdout + out.stderr


# --- 2 ranks under mpiexec ----------------------------------------------------------------------

def _launcher():
    """The mpiexec that belongs to mpi4py's MPI, its extra flags, or a reason to skip."""
    try:
        import importlib.util
        if importlib.util.find_spec("mpi4py") is None:
            return None, "mpi4py is not installed (pip install 'minicaffe[mpi]' mpich)"
    except ValueError:
        return None, "mpi4py cannot be found"
    here = os.path.dirname(sys.executable)
    exe = next((os.path.join(here, n) for n in ("mpiexec", "mpirun")
                if os.path.exists(os.path.join(here, n))), None)
    exe = exe or shutil.which("mpiexec") or shutil.which("mpirun")
    if exe is None:
        return None, "no mpiexec or mpirun (install an MPI: pip install mpich)"
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    flags = ["--oversubscribe"] if "Open MPI" in version or "OpenRTE" in version else []
    return [exe] + flags, None


@pytest.fixture(scope="module")
def mpiexec():
    cmd, why = _launcher()
    if cmd is None:
        pytest.skip("MPI tests skipped: " + why)
    try:
        hello = "from mpi4py import MPI; assert MPI.COMM_WORLD.Get_size() == 2"
        probe = subprocess.run(cmd + ["-n", "2", sys.executable, "-c", hello],
                               capture_output=True, text=True, timeout=120, env=_env())
    except subprocess.TimeoutExpired:
        pytest.skip("MPI tests skipped: mpiexec -n 2 did not finish a hello-world in 120 s")
    if probe.returncode != 0:
        pytest.skip("MPI tests skipped: mpiexec -n 2 does not start 2 ranks: %s"
                    % (probe.stderr or probe.stdout)[-500:])
    return cmd


def _env():
    env = {k: v for k, v in os.environ.items()
           if not any(k == var for pair in parallel._LAUNCHER_VARS for var in pair)}
    env.update(PYTHONUNBUFFERED="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    return env


def run_ranks(mpiexec, cwd, args, n=2, timeout=240):
    """``mpiexec -n N tools/train ARGS`` in ``cwd``; (exit status, stderr + stdout, seconds)."""
    t0 = time.time()
    proc = subprocess.Popen(mpiexec + ["-n", str(n), sys.executable, TRAIN_TOOL] + args,
                            cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env(), start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail("mpiexec hung for %d s:\n%s" % (timeout, out[-3000:]))
    return proc.returncode, out, time.time() - t0


@pytest.mark.parametrize("kind", ["image", "domain"])
@pytest.mark.integration
def test_two_ranks_equal_one_process_with_iter_size_2(mpiexec, tmp_path, monkeypatch, capsys, kind):
    (tmp_path / "mpi").mkdir()
    (tmp_path / "one").mkdir()
    solver = setup_dir(tmp_path / "mpi", kind, max_iter=6)
    rc, log, _ = run_ranks(mpiexec, tmp_path / "mpi", ["--solver", solver])
    assert rc == 0, log[-3000:]
    assert log.count("Optimization Done.") == 1 and log.count("Iteration 3 (") == 1   # rank 0 logs
    assert "Data-parallel training on 2 ranks" in log
    one = setup_dir(tmp_path / "one", kind, max_iter=6, iter_size=2)
    monkeypatch.chdir(tmp_path / "one")
    assert train_cmd.main(["--solver", one]) == 0
    single = capsys.readouterr().err
    a = weights(tmp_path / "mpi" / "snap" / "net_iter_6.caffemodel")
    b = weights(tmp_path / "one" / "snap" / "net_iter_6.caffemodel")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=str(k))
    # the displayed (smoothed) loss is the mean over the ranks: one process's mean of 2 passes
    np.testing.assert_allclose(losses(log), losses(single), rtol=1e-5, atol=1e-6)
    assert len(losses(log)) == 6


@pytest.mark.integration
def test_two_ranks_resume_reproduces_the_uninterrupted_run(mpiexec, tmp_path, monkeypatch,
                                                          capsys):
    solver = setup_dir(tmp_path, max_iter=6, snapshot=3)
    state = str(tmp_path / "snap" / "net_iter_3.solverstate")
    final = tmp_path / "snap" / "net_iter_6.caffemodel"
    rc, log, _ = run_ranks(mpiexec, tmp_path, ["--solver", solver])
    assert rc == 0, log[-3000:]
    full = weights(final)
    os.remove(final)
    rc, log, _ = run_ranks(mpiexec, tmp_path, ["--solver", solver, "--snapshot", state])
    assert rc == 0, log[-3000:]
    resumed = weights(final)
    for k in full:
        np.testing.assert_array_equal(full[k], resumed[k], err_msg=str(k))
    # the data positions are a group's end: one process with iter_size 2 resumes it too
    os.remove(final)
    with open(solver) as f:
        text = f.read()
    with open(solver, "w") as f:
        f.write(text.replace("iter_size: 1", "iter_size: 2"))
    monkeypatch.chdir(tmp_path)
    assert train_cmd.main(["--solver", solver, "--snapshot", state]) == 0, capsys.readouterr().err
    one = weights(final)
    for k in full:
        np.testing.assert_allclose(full[k], one[k], rtol=1e-5, atol=1e-6, err_msg=str(k))


@pytest.mark.parametrize("how", ["raise", "kill"])
@pytest.mark.integration
def test_a_failing_rank_ends_the_job_naming_it_and_keeps_the_snapshot(mpiexec, tmp_path, how):
    fail = ('layer { name: "fail" type: "Python" bottom: "conv" top: "fail" '
            'python_param { module: "mc_fail" layer: "FailOnRank" param_str: "1 3 %s" } }' % how)
    solver = setup_dir(tmp_path, max_iter=8, snapshot=2, extra=fail)
    rc, log, seconds = run_ranks(mpiexec, tmp_path, ["--solver", solver], timeout=180)
    assert rc != 0, log[-3000:]
    if how == "raise":
        assert "train: error: rank 1 of 2 failed: " in log
        assert "injected failure at iteration 3" in log
    else:  # the launcher names the rank, or the pid that rank 0's log gave for rank 1
        pid = re.search(r"rank 1 pid (\d+) on ", log).group(1)
        rest = log.replace("rank 1 pid %s" % pid, "")
        assert pid in rest or "rank 1" in rest, log[-3000:]
    snaps = sorted(os.listdir(tmp_path / "snap"))
    assert snaps == ["net_iter_2.caffemodel", "net_iter_2.solverstate"], snaps
    w = weights(tmp_path / "snap" / "net_iter_2.caffemodel")     # complete and readable
    assert sorted(w) == [("conv", 0), ("conv", 1), ("ip", 0), ("ip", 1)]
    assert w[("ip", 0)].shape == (2 * 3 * 6 * 6,)
    assert all(np.all(np.isfinite(v)) for v in w.values())
    state = caffe_pb2.SolverState()
    state.ParseFromString((tmp_path / "snap" / "net_iter_2.solverstate").read_bytes())
    assert state.iter == 2 and len(state.history) == 4


@pytest.mark.integration
def test_sigint_on_one_rank_snapshots_and_stops_every_rank_at_one_iteration(mpiexec, tmp_path):
    solver = setup_dir(tmp_path, max_iter=100000)
    proc = subprocess.Popen(mpiexec + ["-n", "2", sys.executable, TRAIN_TOOL, "--solver", solver],
                            cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env(), start_new_session=True)
    lines, pid = [], None
    try:
        deadline = time.time() + 120
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"rank 1 pid (\d+) on ", line)
            pid = int(m.group(1)) if m else pid
            if re.search(r"Iteration 5 \(", line) or time.time() > deadline:
                break
        assert pid, "".join(lines)
        os.kill(pid, signal.SIGINT)       # rank 1 only: rank 0 learns it in the Allreduce
        rest, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the ranks did not stop after SIGINT:\n" + "".join(lines)[-3000:])
    log = "".join(lines) + rest
    assert proc.returncode == 0, log[-3000:]
    assert "Optimization stopped early." in log
    snaps = os.listdir(tmp_path / "snap")
    assert len(snaps) == 2 and any(s.endswith(".solverstate") for s in snaps), snaps
