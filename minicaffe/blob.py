"""Blob: data + diff, as in Caffe, each over a lazily synced host/device buffer."""
from __future__ import annotations

import math
import os
from typing import Any, Iterable, Optional, Tuple, Union

import numpy as np
from numpy.typing import DTypeLike, NDArray

from . import backend, gpu
from .errors import ShapeError
from .protoio import array_to_blobproto_into

UNINITIALIZED, HEAD_AT_CPU, HEAD_AT_GPU, SYNCED = "UNINITIALIZED", "CPU", "GPU", "SYNCED"

#: a blob's shape: one int per axis
Shape = Tuple[int, ...]
#: what ``Blob(shape)`` and ``reshape`` take: a shape, or the ints one by one
ShapeLike = Union[int, np.integer, Iterable[int]]


def _physical_memory() -> Optional[int]:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


_PHYSICAL = _physical_memory()


def max_blob_bytes() -> int:
    """The most bytes one blob's data may take: ``$MINICAFFE_MAX_BLOB_BYTES``, else the
    machine's memory (at most 2^40). Caffe's Blob::Reshape refuses counts above INT_MAX; this
    is the same guard for a net whose prototxt asks for absurd sizes (a typo in a dim, pad or
    kernel_size), caught when the net is built instead of as a MemoryError later."""
    env = os.environ.get("MINICAFFE_MAX_BLOB_BYTES")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise ShapeError("MINICAFFE_MAX_BLOB_BYTES must be a number of bytes, got %r" % env) from None
    return min(2 ** 40, _PHYSICAL) if _PHYSICAL else 2 ** 40


def _size(nbytes: float) -> str:
    """A byte count for people: '298 GiB'."""
    if nbytes < 1024:
        return "%d bytes" % nbytes
    value = float(nbytes)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB"):
        value /= 1024.0
        if value < 1024:
            return "%.4g %s" % (value, unit)
    return "%.4g YiB" % (value / 1024.0)


def _host(alloc, capacity, dtype):
    """``alloc(capacity, dtype)``; running out of memory is a ShapeError naming the size."""
    try:
        return alloc(capacity, dtype)
    except MemoryError:
        raise ShapeError("cannot allocate %s for a blob of %d values: out of memory"
                         % (_size(capacity * np.dtype(dtype).itemsize), capacity)) from None


class SyncedMemory:
    """A flat buffer that lives on the host, the device or both (Caffe's SyncedMemory).

    The head says where the newest copy is; reading on the other side copies once and marks
    SYNCED, writing (``mutable=True``) moves the head. Capacity only grows, as in Caffe, so a
    reshape to a smaller size reuses memory. ``zero_later()`` marks the host copy as all
    zeros without writing them: the first access zeroes it, unless ``cpu_overwrite()`` hands
    it to a caller that writes every element (the parameter gradients of a step: no memset of
    every diff, and the first GEMM writes its result in place instead of adding a temporary).
    """
    __slots__ = ("dtype", "capacity", "_host", "_dev", "head", "zero")

    def __init__(self, capacity, dtype):
        self.dtype = np.dtype(dtype)
        self.capacity = int(capacity)
        self._host = None
        self._dev = None
        self.head = UNINITIALIZED
        self.zero = False

    def zero_later(self):
        self.zero = True
        self.head = HEAD_AT_CPU

    def cpu_overwrite(self):
        """The host buffer for a caller that overwrites it all (skips a pending zero-fill)."""
        if self.zero:
            self.zero = False
            if self._host is None:
                self._host = _host(np.empty, self.capacity, self.dtype)
            self.head = HEAD_AT_CPU
            return self._host
        return self.cpu()

    def _zero_now(self):
        self.zero = False
        if self._host is None:
            self._host = _host(np.zeros, self.capacity, self.dtype)
        else:
            self._host.fill(0)

    def cpu(self, mutable=True):
        if self.zero:
            self._zero_now()
        if self.head == UNINITIALIZED:
            self._host = _host(np.zeros, self.capacity, self.dtype)
            self.head = HEAD_AT_CPU
        elif self.head == HEAD_AT_GPU:
            if self._host is None:
                self._host = _host(np.empty, self.capacity, self.dtype)
            backend.to_host(self._dev, self._host)
            self.head = SYNCED
        if mutable:
            self.head = HEAD_AT_CPU
        return self._host

    def gpu(self, mutable=True):
        if self.zero:
            self._zero_now()
        if self.head == UNINITIALIZED:
            self._dev = gpu.zeros(self.capacity, self.dtype)  # filled on the device: no host copy
            self.head = HEAD_AT_GPU
        elif self.head == HEAD_AT_CPU:
            self._dev = backend.to_device(self._host, self._dev)
            self.head = SYNCED
        if mutable:
            self.head = HEAD_AT_GPU
        return self._dev

    def grow(self, capacity):
        """A larger buffer that keeps nothing, like Caffe (zeroed when first read)."""
        self.capacity, self._host, self._dev = capacity, None, None
        self.head, self.zero = UNINITIALIZED, False

    def set_cpu(self, array):
        """Adopt a host array as the buffer (no copy); its contents are the newest."""
        self._host = array
        self.capacity = array.size
        self.head = HEAD_AT_CPU
        self.zero = False


class Blob:
    """An N-d array with its gradient: ``data``, ``diff``, ``shape``, ``count()``, ``reshape()``.

    ``data``/``diff`` are host NumPy views (float32 unless the net was built in float64); reading
    them syncs from the device and hands the head to the host, as pycaffe's mutable_cpu_data.
    GPU kernels use ``gpu_data()``/``gpu_diff()``. ``share_data``/``share_diff`` alias another
    blob's memory (weight sharing, in-place layers, test nets sharing train weights).
    """

    def __init__(self, shape: ShapeLike = (), dtype: DTypeLike = np.float32) -> None:
        self.dtype = np.dtype(dtype)
        self._shape: Shape = ()
        self._count = 1
        self._data = SyncedMemory(0, self.dtype)
        self._diff = SyncedMemory(0, self.dtype)
        self.reshape(shape)

    # --- shape ---------------------------------------------------------------------------
    def reshape(self, *shape: ShapeLike) -> Blob:
        given: Iterable[Any] = shape
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            given = shape[0]
        dims: Shape = tuple(int(s) for s in given)
        if any(s < 0 for s in dims):
            raise ShapeError("blob dimensions must be >= 0, got %s" % (dims,))
        count = math.prod(dims)   # Python ints: no int64 overflow
        nbytes = count * self.dtype.itemsize
        limit = max_blob_bytes()
        if nbytes > limit:
            raise ShapeError("blob shape %s needs %s (%d values), more than the limit of %s "
                             "(this machine's memory, or $MINICAFFE_MAX_BLOB_BYTES)"
                             % (dims, _size(nbytes), count, _size(limit)))
        self._shape, self._count = dims, count
        for mem in (self._data, self._diff):
            if count > mem.capacity:
                mem.grow(count)
        return self

    def reshape_like(self, other: Blob) -> Blob:
        return self.reshape(other.shape)

    @property
    def shape(self) -> Shape:
        return self._shape

    @property
    def num_axes(self) -> int:
        return len(self._shape)

    def count(self, start: Optional[int] = None, end: Optional[int] = None) -> int:
        if start is None:
            return self._count
        start = self.canonical_axis(start) if start < len(self._shape) else start
        end = len(self._shape) if end is None else end
        return int(np.prod(self._shape[start:end], dtype=np.int64))

    def canonical_axis(self, axis: int) -> int:
        n = len(self._shape)
        if not -n <= axis < max(n, 1):
            raise ShapeError("axis %d out of range for a %d-D blob of shape %s" % (axis, n, self._shape))
        return axis + n if axis < 0 else axis

    def legacy_shape(self, i: int) -> int:
        """num/channels/height/width of old 4-D code: padded with 1 in front."""
        n = len(self._shape)
        if i < 0:
            i += 4
        j = i - (4 - n)
        return 1 if j < 0 else self._shape[j]

    def _legacy_axis(self, i: int) -> int:
        # Blob::LegacyShape(i) for i >= 0: the axis, or 1 past the last one
        if len(self._shape) > 4:
            raise ShapeError("num/channels/height/width are for blobs of at most 4 axes; this "
                             "one has shape %s (use .shape)" % (self._shape,))
        return self._shape[i] if i < len(self._shape) else 1

    @property
    def num(self) -> int:
        """pycaffe's Blob.num: axis 0 (1 when the blob has fewer axes)."""
        return self._legacy_axis(0)

    @property
    def channels(self) -> int:
        return self._legacy_axis(1)

    @property
    def height(self) -> int:
        return self._legacy_axis(2)

    @property
    def width(self) -> int:
        return self._legacy_axis(3)

    # --- memory --------------------------------------------------------------------------
    def _view(self, mem: SyncedMemory, mutable: bool) -> NDArray[Any]:
        return mem.cpu(mutable)[: self._count].reshape(self._shape)

    @property
    def data(self) -> NDArray[Any]:
        return self._view(self._data, True)

    @data.setter
    def data(self, value: Any) -> None:
        self.data[...] = value

    @property
    def diff(self) -> NDArray[Any]:
        return self._view(self._diff, True)

    @diff.setter
    def diff(self, value: Any) -> None:
        self.diff[...] = value

    def cpu_data(self) -> NDArray[Any]:
        """Read-only use of the host data: syncs, but leaves a device copy valid."""
        return self._view(self._data, False)

    def cpu_diff(self) -> NDArray[Any]:
        return self._view(self._diff, False)

    def gpu_data(self, mutable: bool = True) -> Any:
        return self._data.gpu(mutable)[: self._count]

    def gpu_diff(self, mutable: bool = True) -> Any:
        return self._diff.gpu(mutable)[: self._count]

    @property
    def data_head(self) -> str:
        return self._data.head

    @property
    def diff_head(self) -> str:
        return self._diff.head

    def share_data(self, other: Blob) -> None:
        if self._count != other._count:
            raise ShapeError("share_data: count %d != %d" % (self._count, other._count))
        self._data = other._data

    def share_diff(self, other: Blob) -> None:
        if self._count != other._count:
            raise ShapeError("share_diff: count %d != %d" % (self._count, other._count))
        self._diff = other._diff

    def shares_data_with(self, other: Blob) -> bool:
        return self._data is other._data

    # --- math helpers: on the device in GPU mode when the newest copy is there (Caffe's
    # HEAD_AT_GPU / SYNCED cases), so a step never copies a blob back to the host ------------
    @staticmethod
    def _on_device(mem: SyncedMemory) -> bool:
        return backend.mode() == backend.GPU and mem.head in (HEAD_AT_GPU, SYNCED)

    def update(self) -> None:
        """data -= diff (Blob::Update), where the data is."""
        if self._on_device(self._data):
            gpu.axpy(-1.0, self.gpu_diff(False), self.gpu_data())
            return
        d = self.data
        np.subtract(d, self.cpu_diff(), out=d)

    def asum_data(self) -> float:
        if self._on_device(self._data):
            return gpu.asum(self.gpu_data(False))
        return float(np.abs(self.cpu_data()).sum())

    def asum_diff(self) -> float:
        if self._on_device(self._diff):
            return gpu.asum(self.gpu_diff(False))
        return float(np.abs(self.cpu_diff()).sum())

    def sumsq_diff(self) -> float:
        if self._on_device(self._diff):
            return gpu.sumsq(self.gpu_diff(False))
        d = self.cpu_diff().ravel()
        return float(np.dot(d, d))

    def scale_diff(self, factor: float) -> None:
        if self._on_device(self._diff):
            gpu.scale(self.gpu_diff(), factor)
            return
        d = self.diff
        d *= factor

    def set_diff(self, value: float) -> None:
        """Fill the diff with a constant (caffe_set): on the device in GPU mode (loss weights),
        in place on the host otherwise, so an array taken earlier from ``diff`` sees it."""
        if backend.mode() == backend.GPU:
            gpu.fill(self.gpu_diff(), value)
            return
        if value == 0 and self._diff.zero:
            self._diff.cpu()   # the pending fill writes the zeros
            return
        self.diff[...] = value

    def clear_diff_lazily(self) -> None:
        """Zero the diff without writing it (CPU mode; the device fills at once): the diff
        becomes a pending zero-fill, the first weight GEMM of a backward writes its gradient
        in place (``diff_overwrite``) and any read through the blob sees zeros. An array taken
        earlier from ``diff`` still shows the old values until then, so only a caller that
        hands out no such array between the clear and the backward uses this: the solver's
        step (``Net.clear_param_diffs_lazily``)."""
        if backend.mode() != backend.GPU and self._diff.capacity == self._count:
            self._diff.zero_later()
            return
        self.set_diff(0)

    @property
    def diff_is_zero(self) -> bool:
        """True while the diff is a pending zero-fill (cleared and not touched since)."""
        return self._diff.zero

    def diff_overwrite(self) -> NDArray[Any]:
        """The host diff for a backward that writes every element (``out=``) instead of
        adding to it: only valid while ``diff_is_zero``, when adding to zeros is writing."""
        return self._diff.cpu_overwrite()[: self._count].reshape(self._shape)

    def dot_data_diff(self) -> float:
        """Σ data·diff (a loss layer's weighted loss), where the data is."""
        if self._on_device(self._data):
            return gpu.dot(self.gpu_data(False), self.gpu_diff(False))
        return float(np.dot(self.cpu_data().ravel(), self.cpu_diff().ravel()))

    # --- proto ---------------------------------------------------------------------------
    def shape_equals_proto(self, proto: Any) -> bool:
        """Blob::ShapeEquals: legacy 4-D protos compare with the trailing axes."""
        if proto.HasField("num") or proto.HasField("channels") or proto.HasField("height") \
                or proto.HasField("width"):
            if len(self._shape) > 4:
                return False
            return (self.legacy_shape(-4), self.legacy_shape(-3), self.legacy_shape(-2),
                    self.legacy_shape(-1)) == (proto.num, proto.channels, proto.height, proto.width)
        return tuple(proto.shape.dim) == self._shape

    def to_proto(self, proto: Any, write_diff: bool = False) -> Any:
        array_to_blobproto_into(self.cpu_data(), proto, self.cpu_diff() if write_diff else None)
        return proto

    def __repr__(self) -> str:
        return "Blob(%s, %s)" % (self._shape, self.dtype.name)
