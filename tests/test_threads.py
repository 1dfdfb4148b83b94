"""minicaffe.threads: the thread count follows the affinity mask and the cgroup CPU quota
(v2 cpu.max, v1 cfs quota / period, along the cgroup's parents), and a user's variable wins."""
import os
import subprocess
import sys

import pytest

from minicaffe import threads
from minicaffe.commands import reproduce


def _cgroup(tmp_path, files, own="0::/\n"):
    """A fake /sys/fs/cgroup under tmp_path/cg with ``files`` ({relative path: text}) and a
    fake /proc/self/cgroup with ``own``."""
    root = tmp_path / "cg"
    root.mkdir(parents=True)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text + "\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(own)
    return str(root), str(proc)


@pytest.fixture
def cpus(monkeypatch):
    """Pretend the affinity mask holds ``n`` CPUs: ``cpus(n)``."""
    def set_cpus(n):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)
    return set_cpus


def test_cgroup_v2_quota_caps_the_affinity(tmp_path, cpus):
    cpus(8)
    root, proc = _cgroup(tmp_path, {"cpu.max": "150000 100000"})
    assert threads.cgroup_cpu_limit(root, proc) == 1.5
    assert threads.usable_cores(root, proc) == 2          # rounded up
    root2, proc2 = _cgroup(tmp_path / "b", {"cpu.max": "max 100000"})
    assert threads.cgroup_cpu_limit(root2, proc2) is None
    assert threads.usable_cores(root2, proc2) == 8


def test_cgroup_v2_smallest_along_the_parents(tmp_path, cpus):
    cpus(16)
    root, proc = _cgroup(tmp_path, {"job/cpu.max": "300000 100000",
                                    "job/step/cpu.max": "max 100000",
                                    "job/step/task/cpu.max": "max 100000"},
                         own="0::/job/step/task\n")
    assert threads.cgroup_cpu_limit(root, proc) == 3.0
    assert threads.usable_cores(root, proc) == 3


def test_cgroup_v2_path_not_mounted_reads_the_root(tmp_path, cpus):
    """A container that sees the host's cgroup path but has its own cgroup at the mount."""
    cpus(4)
    root, proc = _cgroup(tmp_path, {"cpu.max": "100000 100000"}, own="0::/docker/abc123\n")
    assert threads.usable_cores(root, proc) == 1


def test_cgroup_v1_cfs_quota(tmp_path, cpus):
    cpus(4)
    own = "4:memory:/x\n2:cpu,cpuacct:/slice/unit\n0::/\n"
    root, proc = _cgroup(tmp_path, {"cpu/slice/unit/cpu.cfs_quota_us": "-1",
                                    "cpu/slice/unit/cpu.cfs_period_us": "100000",
                                    "cpu/slice/cpu.cfs_quota_us": "250000",
                                    "cpu/slice/cpu.cfs_period_us": "100000",
                                    "cpu/cpu.cfs_quota_us": "-1",
                                    "cpu/cpu.cfs_period_us": "100000"}, own=own)
    assert threads.cgroup_cpu_limit(root, proc) == 2.5
    assert threads.usable_cores(root, proc) == 3
    root2, proc2 = _cgroup(tmp_path / "b", {"cpu/cpu.cfs_quota_us": "50000",
                                            "cpu/cpu.cfs_period_us": "100000"})
    assert threads.usable_cores(root2, proc2) == 1       # half a CPU: still one thread


def test_no_cgroup_files_is_the_affinity_mask(tmp_path, cpus):
    cpus(3)
    root, proc = _cgroup(tmp_path, {})
    assert threads.cgroup_cpu_limit(root, proc) is None
    assert threads.usable_cores(root, proc) == 3
    cpus(1)
    root2, proc2 = _cgroup(tmp_path / "b", {"cpu.max": "400000 100000"})
    assert threads.usable_cores(root2, proc2) == 1       # the mask is below the quota


def test_user_variables_win(tmp_path, cpus, monkeypatch):
    cpus(8)
    root, proc = _cgroup(tmp_path, {"cpu.max": "200000 100000"})
    monkeypatch.setattr(threads, "DEFAULTED", {})
    assert threads.default_threads({}, root, proc) == 2
    for var in threads.THREAD_VARS:
        assert threads.default_threads({var: "5"}, root, proc) == 5
        assert threads.user_set({var: "5"})
    assert threads.default_threads({"OMP_NUM_THREADS": "3,1", "NUMBA_NUM_THREADS": "7"},
                                   root, proc) == 3   # OpenMP's nesting: the first level
    assert threads.default_threads({"OMP_NUM_THREADS": "many", "MKL_NUM_THREADS": "4"},
                                   root, proc) == 4
    assert not threads.user_set({})
    # the values apply() set are not the user's
    monkeypatch.setattr(threads, "DEFAULTED", {"OMP_NUM_THREADS": "2"})
    assert not threads.user_set({"OMP_NUM_THREADS": "2"})
    assert threads.default_threads({"OMP_NUM_THREADS": "2"}, root, proc) == 2
    assert threads.user_set({"OMP_NUM_THREADS": "6"})


def test_apply_fills_the_unset_variables(monkeypatch):
    monkeypatch.setattr(threads, "DEFAULTED", {})
    monkeypatch.setattr(threads, "usable_cores", lambda *a: 3)
    env = {"OPENBLAS_NUM_THREADS": "1", "PATH": "/bin"}
    assert threads.apply(env) == 1                       # the user's value, for all
    assert env == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "NUMBA_NUM_THREADS": "1", "PATH": "/bin"}
    assert set(threads.DEFAULTED) == {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"}
    monkeypatch.setattr(threads, "DEFAULTED", {})
    env = {}
    assert threads.apply(env) == 3
    assert env == {v: "3" for v in threads.THREAD_VARS} == threads.DEFAULTED


def test_import_sets_them_before_numba_loads():
    code = ("import os, minicaffe, numba; print(numba.config.NUMBA_NUM_THREADS, "
            "os.environ['OPENBLAS_NUM_THREADS'], sorted(minicaffe.threads.DEFAULTED))")
    env = {k: v for k, v in os.environ.items() if k not in threads.THREAD_VARS}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip().split(None, 2)
    assert out == ["1", "1", "['MKL_NUM_THREADS', 'NUMBA_NUM_THREADS', 'OPENBLAS_NUM_THREADS']"]


def test_reproduce_jobs_auto_uses_it(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda *a: 3)
    assert reproduce.worker_count(0, 100) == 3 and reproduce.worker_count(0, 2) == 2


def test_reproduce_workers_get_one_thread_unless_the_user_chose(monkeypatch):
    monkeypatch.setattr(threads, "DEFAULTED", {v: "2" for v in threads.THREAD_VARS})
    for v in threads.THREAD_VARS:
        monkeypatch.setenv(v, "2")                       # import minicaffe's defaults
    with reproduce._spawning():
        assert {v: os.environ[v] for v in threads.THREAD_VARS} == \
            {v: "1" for v in threads.THREAD_VARS}
    assert os.environ["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("OMP_NUM_THREADS", "4")           # the user's
    with reproduce._spawning():
        assert os.environ["OMP_NUM_THREADS"] == "4"


def test_mpi_ranks_share_the_usable_cores(monkeypatch):
    """tools/train under mpirun: unbound ranks on one machine split threads.usable_cores()."""
    import types

    import numba

    from minicaffe import parallel

    class TwoLocalRanks:
        def Get_rank(self):
            return 0

        def Get_size(self):
            return 2

    set_to = []
    monkeypatch.setattr(numba, "set_num_threads", set_to.append)
    monkeypatch.setitem(sys.modules, "threadpoolctl",
                        types.SimpleNamespace(threadpool_limits=set_to.append))
    monkeypatch.setattr(threads, "DEFAULTED", {v: "6" for v in threads.THREAD_VARS})
    for v in threads.THREAD_VARS:
        monkeypatch.setenv(v, "6")                       # import minicaffe's defaults
    monkeypatch.setattr(threads, "usable_cores", lambda *a: 6)
    monkeypatch.setattr(threads, "affinity_cores", lambda: os.cpu_count() or 1)   # unbound
    dp = parallel.DataParallel(TwoLocalRanks(), types.SimpleNamespace(IN_PLACE=None, SUM=None))
    assert dp.local_size == 2
    assert dp.limit_threads() == 3
    assert set_to[-1] == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")           # the user's: left alone
    assert dp.limit_threads() is None
