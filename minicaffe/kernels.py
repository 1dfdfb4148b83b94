"""One formula, both devices: elementwise maps built from one scalar Python function.

    @elementwise
    def sigmoid(x):
        return 0.5 * math.tanh(0.5 * x) + 0.5

    @elementwise(loop=True)                 # branches on the element's value
    def relu(x, nu):
        return x if x > 0 else x * nu

    sigmoid(x, out=y)        # host arrays (NumPy broadcasting)
    sigmoid.gpu(x, out=y)    # flat device arrays of out's size, scalars broadcast
    scale.gpu(x, s, out=y, inner=i)   # a shorter array s: element (k // i) % s.size, i.e. a
                                      # per-channel blob over (outer, s.size, i): Scale, BatchNorm
    sigmoid.device           # the cuda.jit(device=True) function, for hand-written kernels

On the GPU every formula becomes a grid-stride kernel (one per array/scalar pattern of its
arguments) calling it as a device function. On the CPU a formula without per-element branches
is evaluated as NumPy array expressions, its ``math.*`` calls bound to NumPy's ufuncs (whose
SIMD loops are 10-20x faster than a compiled scalar ``tanh`` or ``pow``); one that branches on
the element's value (``loop=True``) is compiled by ``numba.vectorize`` into a ufunc loop (which
beats ``np.where`` over both branches). Python floats are cast to ``out``'s dtype first, as
Caffe casts its parameters to ``Dtype``, so float32 blobs are computed in float32 on the host.

A layer writes its per-element math once this way; only where the GPU algorithm differs
(im2col, pooling, reductions, MMD) is a kernel written by hand (``minicaffe.gpu``).
"""
import importlib
import types

import numba
import numpy as np
from numba import cuda

from . import backend

SIM = backend.simulator_enabled()
THREADS = 4 if SIM else 256          # threads per block of the 1-D kernels (a power of two)
MAX_BLOCKS = 2 if SIM else 8192      # grid-stride loops cover the rest


def grid(n):
    """(blocks, threads) for a grid-stride loop over ``n`` items."""
    return max(1, min(MAX_BLOCKS, -(-int(n) // THREADS))), THREADS


# Every generated kernel, by "module.function:pattern" (pattern: A = array, S = scalar per
# argument): reachable from this module, so tests/gpu/kernel_signatures.py can find and
# recompile what the simulator ran (``rebuild``).
KERNELS = {}
_FORMULAS = {}


_INDEX = {"A": "a%d[i]", "B": "a%d[(i // inner) %% a%d.size]", "S": "a%d"}


def _kernel_source(nargs, pattern):
    """A: an array of out's size, B: a shorter array broadcast along ``inner``, S: a scalar."""
    args = ", ".join("a%d" % k for k in range(nargs))
    call = ", ".join(_INDEX[p] % ((k, k) if p == "B" else (k,)) for k, p in enumerate(pattern))
    return ("def kernel(out, inner, %s):\n"
            "    i = cuda.grid(1)\n"
            "    while i < out.size:\n"
            "        out[i] = f(%s)\n"
            "        i += cuda.gridsize(1)\n" % (args, call))


# math.* as NumPy ufuncs: what a formula's math calls mean when the CPU evaluates it on arrays
_NP_MATH = types.SimpleNamespace(
    tanh=np.tanh, exp=np.exp, expm1=np.expm1, log=np.log, log1p=np.log1p, pow=np.power,
    sqrt=np.sqrt, fabs=np.abs)


def _cast_scalars(args, dtype):
    return tuple(dtype.type(a) if isinstance(a, float) else a for a in args)


class _Formula:
    """What both kinds share: the device function and one generated kernel per pattern."""

    @property
    def device(self):
        """The ``cuda.jit(device=True)`` function, for hand-written kernels."""
        if self._device is None:
            self._device = cuda.jit(device=True)(self.fn)
        return self._device

    def kernel(self, pattern):
        """The grid-stride kernel for one array/scalar pattern of the arguments."""
        name = "%s:%s" % (self.key, pattern)
        k = KERNELS.get(name)
        if k is None:
            scope = {"cuda": cuda, "f": self.device, "__name__": __name__}
            exec(self._source(pattern), scope)
            k = KERNELS[name] = cuda.jit(scope["kernel"])
        return k


class Elementwise(_Formula):
    """A scalar formula ``fn(*args) -> value`` mapped over arrays on the host or the device."""

    def __init__(self, fn, loop=False, ufunc=None):
        self.fn, self.loop, self.ufunc = fn, loop, ufunc
        self.key = "%s.%s" % (fn.__module__, fn.__qualname__)
        self.__doc__ = fn.__doc__
        self._cpu = numba.vectorize(nopython=True)(fn) if loop else None
        self._device = None
        _FORMULAS[self.key] = self

    def __call__(self, *args, out):
        """``out[...] = fn(*args)`` on host arrays (broadcast as NumPy does)."""
        args = _cast_scalars(args, out.dtype)
        if self.ufunc is not None:  # NumPy's own ufunc for the formula: no temporary
            self.ufunc(*args, out=out)
            return out
        if self.loop:
            try:  # the compiled ufunc itself: half the call overhead of the DUFunc wrapper
                self._cpu.ufunc(*args, out=out)
            except TypeError:  # a type signature not compiled yet: the DUFunc compiles it
                self._cpu(*args, out=out)
            return out
        if self._cpu is None:  # the same code, with math.* meaning NumPy's ufuncs
            g = dict(self.fn.__globals__, math=_NP_MATH)
            self._cpu = types.FunctionType(self.fn.__code__, g, self.fn.__name__,
                                           self.fn.__defaults__, self.fn.__closure__)
        np.copyto(out, self._cpu(*args), casting="unsafe")
        return out

    def _source(self, pattern):
        return _kernel_source(len(pattern), pattern)

    def gpu(self, *args, out, inner=1):
        """``out[i] = fn(args...[i])`` over flat device arrays of ``out.size`` elements;
        non-array arguments are the same for every element, and a shorter array ``a`` gives
        element ``a[(i // inner) % a.size]`` (a blob broadcast over outer and inner axes)."""
        if out.size:
            pattern = "".join("S" if isinstance(a, (int, float, np.generic)) else
                              ("A" if a.size == out.size else "B") for a in args)
            self.kernel(pattern)[grid(out.size)](out, inner, *_cast_scalars(args, out.dtype))
        return out


def _update_source(nargs, pattern, k, device):
    """A loop (njit) or grid-stride kernel writing f's k results back into its first k
    arguments."""
    args = ", ".join("a%d" % j for j in range(nargs))
    call = ", ".join("a%d[i]" % j if p == "A" else "a%d" % j for j, p in enumerate(pattern))
    dest = ", ".join("a%d[i]" % j for j in range(k))
    if device:
        return ("def kernel(%s):\n"
                "    i = cuda.grid(1)\n"
                "    while i < a0.size:\n"
                "        %s = f(%s)\n"
                "        i += cuda.gridsize(1)\n" % (args, dest, call))
    return ("def loop(%s):\n"
            "    for i in range(a0.size):\n"
            "        %s = f(%s)\n" % (args, dest, call))


class InPlace(_Formula):
    """A scalar formula ``fn(*args) -> (v_0, …, v_{k−1})`` whose results are written back into
    its first k arguments, flat arrays of one size (the others: same-size arrays or scalars) —
    a solver's update rule (weights, step, histories) in one pass over memory, on the host as a
    compiled loop and on the device as a kernel."""

    def __init__(self, fn, k):
        self.fn, self.k = fn, k
        self.key = "%s.%s" % (fn.__module__, fn.__qualname__)
        self.__doc__ = fn.__doc__
        self._loops, self._device = {}, None
        _FORMULAS[self.key] = self

    @staticmethod
    def _pattern(args):
        return "".join("S" if isinstance(a, (int, float, bool, np.generic)) else "A" for a in args)

    def __call__(self, *args):
        pattern = self._pattern(args)
        loop = self._loops.get(pattern)
        if loop is None:
            scope = {"f": numba.njit(self.fn), "__name__": __name__}
            exec(_update_source(len(args), pattern, self.k, False), scope)
            loop = self._loops[pattern] = numba.njit(scope["loop"])
        loop(*_cast_scalars(args, args[0].dtype))

    def _source(self, pattern):
        return _update_source(len(pattern), pattern, self.k, True)

    def gpu(self, *args):
        if args[0].size:
            self.kernel(self._pattern(args))[grid(args[0].size)](
                *_cast_scalars(args, args[0].dtype))


def in_place(k):
    """Decorator: ``fn`` returns k values written back into its first k (array) arguments."""
    return lambda fn: InPlace(fn, k)


def elementwise(fn=None, *, loop=False, ufunc=None):
    """Decorator: ``fn`` becomes an :class:`Elementwise` map for both devices
    (``@elementwise``, ``@elementwise(loop=True)``, or ``@elementwise(ufunc=np.add)`` where
    NumPy has the formula as one ufunc, which the CPU then calls with ``out=``)."""
    if fn is None:
        return lambda f: Elementwise(f, loop, ufunc)
    return Elementwise(fn, loop, ufunc)


# --- arithmetic every layer uses (minicaffe.gpu's add/mul/add_bias are these) -------------------

@elementwise(ufunc=np.add)
def add(a, b):
    return a + b


@elementwise(ufunc=np.subtract)
def sub(a, b):
    return a - b


@elementwise(ufunc=np.multiply)
def mul(a, b):
    return a * b


@elementwise(ufunc=np.divide)
def div(a, b):
    return a / b


def rebuild(name):
    """The kernel ``KERNELS[name]`` in a fresh process (importing the formula's module)."""
    key, pattern = name.rsplit(":", 1)
    if key not in _FORMULAS:
        importlib.import_module(key.rsplit(".", 1)[0])
    return _FORMULAS[key].kernel(pattern)
