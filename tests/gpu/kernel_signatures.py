"""Record the argument types of every kernel launch under the CUDA simulator, then compile
each (kernel, signature) to PTX for a real device, without a GPU.

The simulator runs kernels as Python and never type-checks them; this catches what Numba's
CUDA compiler would reject (type unification, unsupported calls) on the machine that has no
GPU. Recording: the GPU tests' conftest calls ``install_recorder(path)`` when
``MINICAFFE_KERNEL_SIGNATURES`` names a file. Compiling (needs libNVVM: the CUDA toolkit or the
``nvidia-nvvm`` / ``nvidia-cuda-nvcc`` wheels with ``CUDA_HOME`` pointing at them, no driver):

    python tests/gpu/kernel_signatures.py compile SIGS.json [--cc 9.0]
"""
import atexit
import importlib
import json
import sys

import numpy as np


def _describe(arg):
    if hasattr(arg, "_ary"):                    # FakeCUDAArray (and the in-kernel wrapper)
        arg = arg._ary
        while hasattr(arg, "_ary"):
            arg = arg._ary
    if isinstance(arg, np.ndarray):
        return ["array", arg.dtype.str, arg.ndim]
    if isinstance(arg, (bool, np.bool_)):
        return ["scalar", "bool"]
    if isinstance(arg, np.generic):
        return ["scalar", arg.dtype.str]
    if isinstance(arg, int):
        return ["scalar", "<i8"]
    if isinstance(arg, float):
        return ["scalar", "<f8"]
    raise TypeError("unexpected kernel argument %r" % (arg,))


def _locate(kernel):
    """(module, path) of a kernel object: a module attribute or ``dict_name[key]``."""
    mod = sys.modules[kernel.fn.__module__]
    for name, value in vars(mod).items():
        if value is kernel:
            return mod.__name__, name
        if isinstance(value, dict):
            for key, v in value.items():
                if v is kernel:
                    return mod.__name__, "%s[%s]" % (name, key)
    raise LookupError("kernel %s is not reachable from its module" % kernel.fn.__qualname__)


def install_recorder(path):
    from numba.cuda.simulator import kernel as simkernel
    seen = {}
    original = simkernel.FakeCUDAKernel.__call__

    def recording_call(self, *args):
        if not self._device:
            mod, where = _locate(self)
            sig = [_describe(a) for a in args]
            seen.setdefault((mod, where), set()).add(json.dumps(sig))
        return original(self, *args)

    simkernel.FakeCUDAKernel.__call__ = recording_call

    def dump():
        out = [{"module": m, "kernel": k, "signatures": sorted(json.loads(s) for s in sigs)}
               for (m, k), sigs in sorted(seen.items())]
        with open(path, "w") as f:
            json.dump(out, f, indent=1)

    atexit.register(dump)


def _resolve(module, where):
    mod = importlib.import_module(module)
    if "[" not in where:
        return getattr(mod, where)
    name, key = where[:-1].split("[", 1)
    for k, v in getattr(mod, name).items():
        if str(k) == key:
            return v
    if hasattr(mod, "rebuild"):  # minicaffe.kernels builds its kernels on first use
        return mod.rebuild(key)
    raise LookupError(where)


def _numba_type(desc):
    from numba import from_dtype, types
    if desc[0] == "array":
        return types.Array(from_dtype(np.dtype(desc[1])), desc[2], "C")
    if desc[1] == "bool":
        return types.boolean
    return from_dtype(np.dtype(desc[1]))


def compile_all(path, cc=(9, 0)):
    """Compile every recorded signature; returns the list of failures (empty when all pass)."""
    from numba import cuda
    from numba.cuda import dispatcher

    class _Device:  # device functions Numba adds (min/max overloads) ask for the device's cc
        compute_capability = cc

    dispatcher.get_current_device = lambda: _Device()
    with open(path) as f:
        records = json.load(f)
    failures, n = [], 0
    for rec in records:
        kern = _resolve(rec["module"], rec["kernel"])
        for sig in rec["signatures"]:
            n += 1
            types_ = tuple(_numba_type(d) for d in sig)
            try:
                cuda.compile_ptx(kern.py_func, types_, cc=cc)
            except Exception as exc:  # report every kernel, not just the first
                failures.append("%s.%s%s: %s" % (rec["module"], rec["kernel"], types_,
                                                 str(exc).splitlines()[0][:300]))
    print("compiled %d kernel signatures for sm_%d%d: %d failed"
          % (n, cc[0], cc[1], len(failures)))
    for f in failures:
        print("  " + f)
    return failures


def nvvm_available():
    try:
        from numba import cuda
        cuda.compile_ptx(lambda: None, (), cc=(9, 0))
        return True
    except Exception:
        return False


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "available":
        sys.exit(0 if nvvm_available() else 1)
    if len(sys.argv) < 3 or sys.argv[1] != "compile":
        sys.exit(__doc__)
    cc = (9, 0)
    if "--cc" in sys.argv:
        major, minor = sys.argv[sys.argv.index("--cc") + 1].split(".")
        cc = (int(major), int(minor))
    sys.exit(1 if compile_all(sys.argv[2], cc) else 0)
