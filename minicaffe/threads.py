"""How many compute threads minicaffe runs: the one place that decides it.

BLAS (OpenBLAS, MKL) and Numba each start a pool of threads when they load. Their default is
the machine's CPUs (OpenBLAS and Numba: the CPUs in this process's affinity mask), which is
too many in a container or a batch job with a CPU quota: 8 threads on a 2-CPU quota are
throttled in turns and run slower than 2. ``default_threads()`` is

- the value the user set, when any of ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
  ``MKL_NUM_THREADS``, ``NUMBA_NUM_THREADS`` is set (the first set, in that order); else
- ``usable_cores()``: the CPUs in ``os.sched_getaffinity(0)`` (``taskset``, ``numactl``,
  Slurm's binding, ``docker --cpuset-cpus``), capped by the cgroup CPU quota rounded up
  (``docker --cpus``, Kubernetes CPU limits, systemd ``CPUQuota``): ``cpu.max`` under cgroup
  v2, ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` under v1, the smallest along this
  process's cgroup and its parents.

``apply()`` runs when ``import minicaffe`` starts, before numpy and Numba load: it sets every
one of those four variables the user left unset to ``default_threads()`` (so a user's
``OMP_NUM_THREADS=1`` also limits Numba, which reads only ``NUMBA_NUM_THREADS``), and records
which it set in ``DEFAULTED``. Child processes inherit the values. A library that was loaded
before ``import minicaffe`` keeps its pool; then Numba is capped with ``numba.set_num_threads``
(in the importing thread) and BLAS through threadpoolctl when it is installed.
"""
import math
import os
import sys

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"

DEFAULTED = {}   # {variable: value} that apply() set because the user had not


def _count(text):
    """A thread count from a variable's value (OpenMP's "4,2" nesting: its first level), or
    None for one that is not a positive number."""
    try:
        n = int(str(text).split(",")[0].strip())
    except ValueError:
        return None
    return n if n >= 1 else None


def user_threads(environ=None):
    """The thread count the user chose through THREAD_VARS (the first valid one set), or None.
    Variables that ``apply()`` set do not count."""
    environ = os.environ if environ is None else environ
    for var in THREAD_VARS:
        if environ.get(var) and DEFAULTED.get(var) != environ[var]:
            n = _count(environ[var])
            if n is not None:
                return n
    return None


def user_set(environ=None):
    """True when the user set any of THREAD_VARS (to anything): their choice, left alone."""
    environ = os.environ if environ is None else environ
    return any(environ.get(v) and DEFAULTED.get(v) != environ[v] for v in THREAD_VARS)


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _own_paths(proc_cgroup):
    """{"v2": path, "v1": path} of this process's cgroup in each hierarchy (/proc/self/cgroup:
    "0::/path" for v2, "N:cpu,cpuacct:/path" for v1's cpu controller)."""
    out = {}
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            out["v2"] = parts[2]
        elif "cpu" in parts[1].split(","):
            out["v1"] = parts[2]
    return out


def _up(base, path):
    """``base``/``path`` and each parent folder up to ``base``; just ``base`` when ``path`` is
    not mounted there (a container that sees the host's cgroup path but its own mount)."""
    path = (path or "/").strip("/")
    dirs = []
    while path:
        d = os.path.join(base, path)
        if os.path.isdir(d):
            dirs.append(d)
        path = os.path.dirname(path)
    return dirs + [base]


def cgroup_cpu_limit(root=CGROUP_ROOT, proc_cgroup=PROC_CGROUP):
    """The CPU quota of this process's cgroup in CPUs (a float: quota / period), the smallest
    along the cgroup and its parents over v2 and v1, or None when there is none ("max", -1, no
    cgroup files)."""
    own = _own_paths(proc_cgroup)
    limits = []
    for d in _up(root, own.get("v2")):
        fields = (_read(os.path.join(d, "cpu.max")) or "").split()
        if len(fields) == 2 and fields[0] != "max":
            try:
                limits.append(int(fields[0]) / int(fields[1]))
            except (ValueError, ZeroDivisionError):
                pass
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        base = os.path.join(root, name)
        if not os.path.isdir(base):
            continue
        for d in _up(base, own.get("v1")):
            try:
                quota = int(_read(os.path.join(d, "cpu.cfs_quota_us")) or "-1")
                period = int(_read(os.path.join(d, "cpu.cfs_period_us")) or "0")
            except ValueError:
                continue
            if quota > 0 and period > 0:
                limits.append(quota / period)
        break   # cpu and cpu,cpuacct are usually one mount and a link to it
    return min(limits) if limits else None


def affinity_cores():
    """The CPUs this process may run on (its affinity mask), or all of the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):   # not on Linux
        return max(1, os.cpu_count() or 1)


def usable_cores(root=CGROUP_ROOT, proc_cgroup=PROC_CGROUP):
    """The cores this process may use: its affinity mask, capped by the cgroup CPU quota
    (rounded up: 1.5 CPUs of quota -> 2 threads), at least 1."""
    n = affinity_cores()
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None:
        n = min(n, max(1, math.ceil(limit - 1e-9)))
    return n


def default_threads(environ=None, root=CGROUP_ROOT, proc_cgroup=PROC_CGROUP):
    """The compute threads to run: the user's THREAD_VARS value, else ``usable_cores()``."""
    n = user_threads(environ)
    return n if n is not None else usable_cores(root, proc_cgroup)


def apply(environ=None):
    """Set each THREAD_VARS variable the user left unset to ``default_threads()``; cap the
    pools of Numba and BLAS when they were loaded before. Returns the thread count."""
    environ = os.environ if environ is None else environ
    n = default_threads(environ)
    numba_loaded = environ is os.environ and "numba" in sys.modules
    for var in THREAD_VARS:
        if environ.get(var) and DEFAULTED.get(var) != environ[var]:
            continue   # the user's (even one we cannot parse: the library's to read)
        if var == "NUMBA_NUM_THREADS" and numba_loaded:
            continue   # a different value once its pool runs makes Numba's next compile fail
        environ[var] = DEFAULTED[var] = str(n)
    if environ is os.environ:
        _cap_loaded(n)
    return n


def _cap_loaded(n):
    if "numba" in sys.modules:
        try:
            import numba
            if n < numba.config.NUMBA_NUM_THREADS:
                numba.set_num_threads(n)
        except Exception:   # no threading layer: nothing to cap
            pass
    if "numpy" in sys.modules:
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(n, user_api="blas")
        except Exception:   # threadpoolctl is optional
            pass
