"""One formula, both devices: elementwise maps built from one scalar Python function.

    @elementwise
    def sigmoid(x):
        return 0.5 * math.tanh(0.5 * x) + 0.5

    @elementwise(loop=True)                 # branches on the element's value
    def relu(x, nu):
        return x if x > 0 else x * nu

    sigmoid(x, out=y)        # host arrays
    sigmoid.gpu(x, out=y)    # flat device arrays of out's size, scalars broadcast
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

from .gpu import grid

# Every generated kernel, by "module.function:pattern" (pattern: A = array, S = scalar per
# argument): reachable from this module, so tests/gpu/kernel_signatures.py can find and
# recompile what the simulator ran (``rebuild``).
KERNELS = {}
_FORMULAS = {}


def _kernel_source(nargs, pattern):
    args = ", ".join("a%d" % k for k in range(nargs))
    call = ", ".join("a%d[i]" % k if p == "A" else "a%d" % k for k, p in enumerate(pattern))
    return ("def kernel(out, %s):\n"
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


class Elementwise:
    """A scalar formula ``fn(*args) -> value`` mapped over arrays on the host or the device."""

    def __init__(self, fn, loop=False):
        self.fn, self.loop = fn, loop
        self.key = "%s.%s" % (fn.__module__, fn.__qualname__)
        self.__doc__ = fn.__doc__
        self._cpu = numba.vectorize(nopython=True)(fn) if loop else None
        self._device = None
        _FORMULAS[self.key] = self

    def __call__(self, *args, out):
        """``out[...] = fn(*args)`` on host arrays (broadcast as NumPy does)."""
        args = _cast_scalars(args, out.dtype)
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

    @property
    def device(self):
        if self._device is None:
            self._device = cuda.jit(device=True)(self.fn)
        return self._device

    def kernel(self, pattern):
        """The grid-stride kernel ``kernel(out, *args)`` for one array/scalar pattern."""
        name = "%s:%s" % (self.key, pattern)
        k = KERNELS.get(name)
        if k is None:
            scope = {"cuda": cuda, "f": self.device, "__name__": __name__}
            exec(_kernel_source(len(pattern), pattern), scope)
            k = KERNELS[name] = cuda.jit(scope["kernel"])
        return k

    def gpu(self, *args, out):
        """``out[i] = fn(args...[i])`` over flat device arrays of ``out.size`` elements;
        non-array arguments are the same for every element."""
        if out.size:
            pattern = "".join("S" if isinstance(a, (int, float, np.generic)) else "A"
                              for a in args)
            self.kernel(pattern)[grid(out.size)](out, *_cast_scalars(args, out.dtype))
        return out


def elementwise(fn=None, *, loop=False):
    """Decorator: ``fn`` becomes an :class:`Elementwise` map for both devices
    (``@elementwise`` or ``@elementwise(loop=True)``)."""
    if fn is None:
        return lambda f: Elementwise(f, loop)
    return Elementwise(fn, loop)


def rebuild(name):
    """The kernel ``KERNELS[name]`` in a fresh process (importing the formula's module)."""
    key, pattern = name.rsplit(":", 1)
    if key not in _FORMULAS:
        importlib.import_module(key.rsplit(".", 1)[0])
    return _FORMULAS[key].kernel(pattern)
