"""Data layers: Input, DummyData, MemoryData, ImageData, Data (LMDB).

ImageData and Data read on a background daemon thread (a bounded queue of prepared batches);
their random draws (shuffle, crop offsets, mirror) come from generators seeded from
``backend.rng()`` at set-up, so the batches depend only on ``caffe.set_random_seed``, never on
thread timing. The transform itself is minicaffe.transformer.DataTransformer.

Data-parallel training (minicaffe.parallel) shards every stream by batch: ``set_shard(r, N)``
makes a layer read batch r of each group of N consecutive batches and skip the others. A
skipped batch moves the position and makes the same random draws (shuffle, crop, mirror) as a
read one but decodes no image (only image headers, when a random crop needs the size), so rank
r of N gets exactly the batches that one process with ``iter_size: N`` reads in pass r, and
after every group all ranks stand at the same position (one state resumes every rank).
"""
import copy
import os
import queue
import threading
import time
import weakref

import numpy as np

from minicaffe import backend
from minicaffe.errors import CaffeError
from minicaffe.fillers import fill
from minicaffe.layer import Layer, register
from minicaffe.proto import caffe_pb2
from minicaffe.transformer import DataTransformer, ImageReadError, read_image, read_image_list


@register("Input")
class InputLayer(Layer):
    """Input: tops of the shapes in ``input_param { shape }`` (one shape, or one per top);
    the user fills them (``net.blobs[name].data[...] = x``). No forward or backward work."""
    min_num_top = 1

    def layer_setup(self, bottom, top):
        shapes = self.layer_param.input_param.shape
        if len(shapes) not in (1, len(top)):
            raise CaffeError("Input layer %s: input_param must give one shape or one per top "
                             "(%d tops, %d shapes)" % (self.name, len(top), len(shapes)))
        for i, t in enumerate(top):
            if shapes:
                t.reshape(tuple(shapes[0 if len(shapes) == 1 else i].dim))

    def reshape(self, bottom, top):
        pass  # the user reshapes input blobs

    def forward_cpu(self, bottom, top):
        pass


@register("DummyData", "DUMMY_DATA")
class DummyDataLayer(Layer):
    """DummyData: tops filled by ``data_filler`` (one, or one per top; default constant 0).
    Constant fillers fill once; any other filler refills on every forward, as in Caffe."""
    min_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.dummy_data_param
        n = len(top)
        legacy = len(p.num) + len(p.channels) + len(p.height) + len(p.width)
        if legacy:
            for field in (p.num, p.channels, p.height, p.width):
                if len(field) not in (1, n):
                    raise CaffeError("DummyData layer %s: num/channels/height/width must be given "
                                     "once or once per top" % self.name)
            pick = lambda f, i: f[0] if len(f) == 1 else f[i]  # noqa: E731
            shapes = [(pick(p.num, i), pick(p.channels, i), pick(p.height, i), pick(p.width, i))
                      for i in range(n)]
        else:
            if len(p.shape) not in (1, n):
                raise CaffeError("DummyData layer %s: shape must be given once or once per top "
                                 "(%d tops, %d shapes)" % (self.name, n, len(p.shape)))
            shapes = [tuple(p.shape[0 if len(p.shape) == 1 else i].dim) for i in range(n)]
        if len(p.data_filler) not in (0, 1, n):
            raise CaffeError("DummyData layer %s: data_filler must be given 0, 1 or %d times"
                             % (self.name, n))
        self.fillers = [(p.data_filler[0] if len(p.data_filler) == 1 else p.data_filler[i])
                        if p.data_filler else None for i in range(n)]
        self.refill = [f is not None and f.type != "constant" for f in self.fillers]
        for t, s, f in zip(top, shapes, self.fillers):
            t.reshape(s)
            fill(t, f)

    def reshape(self, bottom, top):
        pass

    def forward_cpu(self, bottom, top):
        for t, f, r in zip(top, self.fillers, self.refill):
            if r:
                fill(t, f)


# --- MemoryData -------------------------------------------------------------------------------

@register("MemoryData", "MEMORY_DATA")
class MemoryDataLayer(Layer):
    """MemoryData: batches from arrays held in memory (pycaffe's ``Net.set_input_arrays``).

    ``memory_data_param { batch_size channels height width }`` (all required, > 0) describe
    the fed arrays; tops are data (batch_size, C, H', W') and label (batch_size,).
    ``reset(data, labels, n)`` installs (N, C, H, W) data and N labels (N a multiple of
    batch_size), kept by reference as Caffe does (no copy); each forward takes the next
    batch_size items and wraps around at N. transform_param (crop, mirror, mean, scale) is
    applied to every item on forward, so H' = W' = crop_size when cropping. (Caffe's own
    MemoryDataLayer::Reset skips the transform with a warning; here it is applied.)
    """
    exact_num_bottom = 0
    exact_num_top = 2

    def layer_setup(self, bottom, top):
        p = self.layer_param.memory_data_param
        self.batch_size, self.channels = int(p.batch_size), int(p.channels)
        self.height, self.width = int(p.height), int(p.width)
        if min(self.batch_size, self.channels, self.height, self.width) <= 0:
            raise CaffeError("MemoryData layer %s: batch_size, channels, height and width must "
                             "be specified and positive in memory_data_param (got %d, %d, %d, %d)"
                             % (self.name, self.batch_size, self.channels, self.height,
                                self.width))
        self.transformer = DataTransformer(self.layer_param.transform_param, self.phase,
                                           "MemoryData layer %s" % self.name)
        t = self.layer_param.transform_param
        self._identity = not (t.crop_size or t.mirror or t.mean_file or t.mean_value
                              or t.scale != 1)
        self.out_shape = self.transformer.infer_shape((self.channels, self.height, self.width))
        self._data = self._labels = None
        self._n = self._pos = 0
        top[0].reshape((self.batch_size,) + self.out_shape)
        top[1].reshape((self.batch_size,))

    def reshape(self, bottom, top):
        pass

    def reset(self, data, labels, n=None):
        """Feed (N, C, H, W) ``data`` and N ``labels`` (MemoryDataLayer::Reset)."""
        data, labels = np.asarray(data), np.asarray(labels)
        want = (self.channels, self.height, self.width)
        if data.ndim != 4 or data.shape[1:] != want:
            raise self.shape_error("data array", data.shape, ("N",) + want)
        n = data.shape[0] if n is None else int(n)
        if n <= 0 or n > data.shape[0] or labels.size < n:
            raise CaffeError("MemoryData layer %s: n = %d, but data holds %d items and labels %d"
                             % (self.name, n, data.shape[0], labels.size))
        if n % self.batch_size:
            raise CaffeError("MemoryData layer %s: n must be a multiple of batch_size (n = %d, "
                             "batch_size = %d)" % (self.name, n, self.batch_size))
        self._data, self._labels = data, labels.reshape(-1)
        self._n, self._pos = n, 0

    def set_batch_size(self, new_size):
        """MemoryDataLayer::set_batch_size (the fed N must stay a multiple of it)."""
        new_size = int(new_size)
        if new_size <= 0 or (self._data is not None and self._n % new_size):
            raise CaffeError("MemoryData layer %s: batch_size %d must be positive and divide the "
                             "%d items fed" % (self.name, new_size, self._n))
        self.batch_size = new_size

    def forward_cpu(self, bottom, top):
        if self._data is None:
            raise CaffeError("MemoryData layer %s needs to be initialized by calling reset() "
                             "(Net.set_input_arrays)" % self.name)
        bs, pos = self.batch_size, self._pos
        top[0].reshape((bs,) + self.out_shape)
        top[1].reshape((bs,))
        if pos + bs <= self._n:
            batch, labels = self._data[pos:pos + bs], self._labels[pos:pos + bs]
        else:  # only after set_batch_size mid-way: wrap item by item
            idx = (pos + np.arange(bs)) % self._n
            batch, labels = self._data[idx], self._labels[idx]
        out = top[0].data
        if self._identity:
            out[...] = batch
        else:
            for i in range(bs):
                self.transformer.transform(batch[i], out[i])
        top[1].data[...] = labels
        self._pos = (pos + bs) % self._n

    @property
    def position(self):
        """The index of the first item the next forward takes."""
        return self._pos


# --- background prefetching -------------------------------------------------------------------

def _prefetch_loop(produce, q, stop):
    while not stop.is_set():
        try:
            item = produce()
        except BaseException as exc:  # handed to the consumer, raised there
            item = exc
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                break
            except queue.Full:
                continue
        if isinstance(item, BaseException):
            return


class _Prefetcher:
    """A daemon thread filling a bounded queue with ``produce()`` results, in order. One
    producer thread makes batch k+1 only after batch k, so the content never depends on
    timing. ``stop()`` ends and joins it (called by the layer's close() or finalizer)."""

    def __init__(self, produce, depth, name):
        self._queue = queue.Queue(max(1, int(depth)))
        self._stop = threading.Event()
        self._error = None
        self.thread = threading.Thread(target=_prefetch_loop, name=name, daemon=True,
                                       args=(produce, self._queue, self._stop))
        self.thread.start()

    def get(self):
        if self._error is not None:
            raise self._error
        while True:
            try:
                item = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if not self.thread.is_alive() and self._queue.empty():
                    raise CaffeError("the data prefetch thread %s has stopped"
                                     % self.thread.name) from None
        if isinstance(item, BaseException):
            self._error = item
            raise item
        return item

    def stop(self):
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=10)


class _PrefetchingDataLayer(Layer):
    """Shared by ImageData and Data (BasePrefetchingDataLayer): tops data (N, C, H, W) and an
    optional label (N,); a daemon thread prepares the next batches while the net runs.

    ``position`` (e.g. epoch and line) and ``data_state()`` / ``set_data_state(state)`` give the
    reading position and the generators' states after the last batch a forward consumed, for
    snapshots. ``close()`` stops the thread (also done when the layer is garbage collected
    and at interpreter exit)."""
    exact_num_bottom = 0
    min_num_top = 1
    max_num_top = 2
    prefetch_depth = 3

    def layer_setup(self, bottom, top):
        self.close()
        self._source, batch_size, item_shape = self._open_source()
        self._state = self._source.get_state()
        top[0].reshape((batch_size,) + tuple(item_shape))
        if len(top) > 1:
            top[1].reshape((batch_size,))
        self._start()

    def _start(self):
        self._prefetcher = _Prefetcher(self._source.next_batch, self.prefetch_depth,
                                       "minicaffe-prefetch-%s" % self.name)
        self._finalizer = weakref.finalize(self, self._prefetcher.stop)

    data_wait = 0.0   # seconds the forwards waited for batches: data on the critical path

    def _next_batch(self):
        """The prefetch thread's next batch, the wait counted in ``data_wait`` (the solver's
        time split)."""
        t0 = time.perf_counter()
        try:
            return self._prefetcher.get()
        finally:
            self.data_wait += time.perf_counter() - t0

    def close(self):
        """Stop and join the prefetch thread."""
        fin = getattr(self, "_finalizer", None)
        if fin is not None:
            fin()
            self._finalizer = None

    def _halt(self):
        """close(), then wait for a batch still being made: the source is ours again."""
        prefetcher = getattr(self, "_prefetcher", None)
        self.close()
        if prefetcher is not None and prefetcher.thread is not threading.current_thread():
            prefetcher.thread.join()

    def reshape(self, bottom, top):
        pass  # forward reshapes the tops to each batch

    def forward_cpu(self, bottom, top):
        data, labels, state = self._next_batch()
        top[0].reshape(data.shape)
        top[0].data[...] = data
        if len(top) > 1:
            top[1].reshape(labels.shape)
            top[1].data[...] = labels
        self._state = state

    def data_state(self):
        """The reading position and generator states after the last consumed batch."""
        return copy.deepcopy(self._state)

    def set_data_state(self, state):
        """Continue reading from a ``data_state()`` (restarts the prefetch thread)."""
        self._halt()
        self._source.set_state(copy.deepcopy(state))
        self._state = self._source.get_state()
        self._start()

    def set_shard(self, rank, size):
        """Data-parallel reading: from the current position on, take batch ``rank`` of every
        ``size`` consecutive batches of the stream and skip the others (the batches already
        prefetched are dropped). ``set_shard(0, 1)`` reads every batch again."""
        rank, size = int(rank), int(size)
        if not 0 <= rank < size:
            raise CaffeError("%s layer %s: shard rank %d is not in [0, %d)"
                             % (self.type, self.name, rank, size))
        self._halt()
        self._source.set_state(copy.deepcopy(self._state))
        self._source.rank, self._source.size = rank, size
        self._start()

    @property
    def shard(self):
        """(rank, size) of ``set_shard``; (0, 1) when every batch is read."""
        return self._source.rank, self._source.size

    def get_state(self):  # the solver keeps it in .solverstate to resume exactly
        return self.data_state()

    def set_state(self, state):
        self.set_data_state(state)

    @property
    def position(self):
        return {k: v for k, v in self._state.items() if k in ("epoch", "line_id", "offset")}


def _locate(who, where, exc):
    """``exc``'s message with ``where`` (list file and line, or DB record) after the layer."""
    msg = str(exc)
    if msg.startswith(who + ": "):
        msg = msg[len(who) + 2:]
    return CaffeError("%s: %s: %s" % (who, where, msg))


def _check_same_shape(x, first, who, where):
    if first is not None and x.shape != first:
        raise CaffeError("%s: %s: the input has shape %s (C, H, W) but the batch's first has %s; "
                         "the items of a batch must have one size (resize them)"
                         % (who, where, x.shape, first))


CACHE_ENV = "MINICAFFE_IMAGE_CACHE_MB"
DEFAULT_CACHE_MB = 256


class _ImageCache:
    """Decoded (and resized) images kept in memory up to a byte budget, for ImageData and
    DomainData: a list that fits is decoded once instead of every epoch (ToyHome: 37 ms of PNG
    decoding a DomainData batch, ~20 % of the ToyHome DAH step, on a prefetch thread that
    competes with the other training under ``tools/reproduce --jobs 2``). An image is the same
    array a new decode gives, so no result changes; the cached copies are read-only.
    ``MINICAFFE_IMAGE_CACHE_MB`` sets the budget of each layer (256 MB; 0 turns it off); the
    first images read fill it and the rest are decoded each time, as in Caffe."""

    def __init__(self, who, budget_mb=None):
        if budget_mb is None:
            raw = os.environ.get(CACHE_ENV, "")
            try:
                budget_mb = float(raw) if raw.strip() else DEFAULT_CACHE_MB
            except ValueError:
                raise CaffeError("%s: %s=%r is not a number of megabytes"
                                 % (who, CACHE_ENV, raw)) from None
        self.left = int(max(0.0, budget_mb) * 2 ** 20)
        self.items = {}

    def read(self, path, new_h, new_w, is_color):
        """read_image's (H, W, C) uint8 array, from memory when it was read before."""
        img = self.items.get(path)
        if img is None:
            img = read_image(path, new_h, new_w, is_color)
            if img.nbytes <= self.left:
                img.flags.writeable = False
                self.items[path] = img
                self.left -= img.nbytes
        return img


def _transform_batch(items, n, transformer, dtype, who):
    """One (n, C', H', W') batch and its (n,) labels from ``items``, an iterator of
    (CHW array, label, where): each item is transformed into its row (the random draws in
    Caffe's order); the batch takes the shape of its first item. ``items`` is consumed lazily,
    so a reader that advances after each yield advances exactly as far as the batch got."""
    t = transformer
    data = first = None
    labels = np.empty(n, dtype)
    for i, (x, label, where) in enumerate(items):
        _check_same_shape(x, first, who, where)
        try:
            if data is None:
                first = x.shape
                data = np.empty((n,) + t.infer_shape(x.shape), dtype)
            t.apply(x, data[i], *t.draw(x.shape))
        except CaffeError as exc:
            raise _locate(who, where, exc) from None
        labels[i] = label
    return data, labels


def _rng_state(g):
    return None if g is None else g.bit_generator.state


def _set_rng_state(g, s):
    if g is not None and s is not None:
        g.bit_generator.state = s


def _file_tokens(path, who, what):
    """(token, line number) of every whitespace-separated token of a text file that Caffe
    reads with ``infile >> ...`` (line breaks only separate): HDF5Data's source list, the
    window file. ``what`` names the file in the one-line errors."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        raise CaffeError("%s: failed to open %s %s: no such file" % (who, what, path)) from None
    except IsADirectoryError:
        raise CaffeError("%s: %s %s is a directory" % (who, what, path)) from None
    except OSError as exc:
        raise CaffeError("%s: failed to open %s %s: %s" % (who, what, path, exc.strerror or exc)) from None
    return [(tok, n) for n, line in enumerate(text.splitlines(), 1) for tok in line.split()]


class _ShardedStream:
    """A source's batch stream, sharded for data-parallel training: rank r of N skips r
    batches, reads one, then skips the N − 1 − r left in its group, so the state it hands
    out is the group's end, the same on every rank. Sources define ``read_batch()``,
    ``skip_batch()`` (same position and draws, no decoding) and ``get_state()``."""
    rank, size = 0, 1

    def next_batch(self):
        for _ in range(self.rank):
            self.skip_batch()
        data, labels = self.read_batch()
        for _ in range(self.size - 1 - self.rank):
            self.skip_batch()
        return data, labels, self.get_state()


def _needs_size(t):
    """Whether the transformer's draws depend on the item's height and width (random crop)."""
    return t.rng is not None and t.crop_size > 0 and t.phase == caffe_pb2.TRAIN


def _image_hw(path, fp=None):
    """An image's (height, width) from its header, without decoding the pixels."""
    from PIL import Image
    try:
        with Image.open(path if fp is None else fp) as img:
            w, h = img.size
    except FileNotFoundError:
        raise ImageReadError("could not open or find image %s" % path) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError("could not decode image %s (%s)" % (path, exc)) from None
    return h, w


def _skip_draws(t, shape, who, where):
    """The draws a transform of a ``shape`` item makes, without the transform."""
    try:
        t.infer_shape(shape)
    except CaffeError as exc:
        raise _locate(who, where, exc) from None
    t.draw(shape)


# --- ImageData --------------------------------------------------------------------------------

class _ImageListSource(_ShardedStream):
    """ImageData's reader (runs on the prefetch thread): the list order, the line position,
    the epoch, and the per-item transform draws."""

    def __init__(self, who, source, entries, root, new_hw, is_color, batch_size, shuffle,
                 transformer, dtype):
        self.who, self.source, self.entries, self.root = who, source, entries, root
        self.new_hw, self.is_color, self.batch_size = new_hw, is_color, batch_size
        self.transformer, self.dtype = transformer, dtype
        self.shuffle_rng = None
        self.order = np.arange(len(entries))
        if shuffle:
            self.shuffle_rng = np.random.default_rng(int(backend.rng().integers(0, 2 ** 63)))
            self.order = self.shuffle_rng.permutation(len(entries))
        self.epoch, self.line_id = 0, 0
        self._sizes = {}  # path -> (0, H, W) of the images skipped so far
        self._cache = _ImageCache(who)

    def read(self, k):
        path, label, lineno = self.entries[self.order[k]]
        try:
            img = self._cache.read(self.root + path, self.new_hw[0], self.new_hw[1], self.is_color)
        except ImageReadError as exc:
            raise CaffeError("%s: %s line %d: %s" % (self.who, self.source, lineno, exc)) from None
        return img.transpose(2, 0, 1), label, lineno, path

    def _advance(self):
        self.line_id += 1
        if self.line_id >= len(self.entries):
            self.line_id = 0
            self.epoch += 1
            if self.shuffle_rng is not None:
                self.order = self.shuffle_rng.permutation(len(self.entries))

    def read_batch(self):
        def items():
            for _ in range(self.batch_size):
                x, label, lineno, path = self.read(self.line_id)
                yield x, label, "%s line %d (%s)" % (self.source, lineno, path)
                self._advance()
        return _transform_batch(items(), self.batch_size, self.transformer, self.dtype, self.who)

    def skip_batch(self):
        t = self.transformer
        for _ in range(self.batch_size):
            if t.rng is not None:
                shape = (0, 0, 0)
                if _needs_size(t):
                    path, _, lineno = self.entries[self.order[self.line_id]]
                    where = "%s line %d (%s)" % (self.source, lineno, path)
                    if self.new_hw[0] > 0:
                        shape = (0,) + tuple(self.new_hw)
                    else:
                        shape = self._sizes.get(path)
                        if shape is None:
                            try:
                                shape = self._sizes[path] = (0,) + _image_hw(self.root + path)
                            except ImageReadError as exc:
                                raise _locate(self.who, where, exc) from None
                    _skip_draws(t, shape, self.who, where)
                else:
                    t.draw(shape)
            self._advance()

    def get_state(self):
        return {"epoch": self.epoch, "line_id": self.line_id,
                "order": None if self.shuffle_rng is None else self.order,
                "shuffle_rng": _rng_state(self.shuffle_rng),
                "transform_rng": _rng_state(self.transformer.rng)}

    def set_state(self, s):
        n = len(self.entries)
        epoch, line_id = int(s["epoch"]), int(s["line_id"])
        if epoch < 0 or not 0 <= line_id < n:
            raise CaffeError("%s: position epoch %d line %d does not fit the %d lines of %s"
                             % (self.who, epoch, line_id, n, self.source))
        order = None if s.get("order") is None else np.asarray(s["order"])
        if order is not None and not np.array_equal(np.sort(order), np.arange(n)):
            raise CaffeError("%s: the saved order is not a permutation of the %d lines of %s"
                             % (self.who, n, self.source))
        self.epoch, self.line_id = epoch, line_id
        if order is not None:
            self.order = order
        _set_rng_state(self.shuffle_rng, s.get("shuffle_rng"))
        _set_rng_state(self.transformer.rng, s.get("transform_rng"))


@register("ImageData", "IMAGE_DATA")
class ImageDataLayer(_PrefetchingDataLayer):
    """ImageData: images listed in a text file, decoded with Pillow in BGR order.

    image_data_param: source (lines "path label", split at the last space; blank lines
    skipped), root_folder ("" — a string prefix of every path), batch_size (1), shuffle (false:
    when true the list is shuffled at set-up and again at every epoch), new_height/new_width
    (0: both > 0 resizes as OpenCV's INTER_LINEAR), is_color (true; false gives 1 channel),
    rand_skip (0: start at a random line in [0, rand_skip)). transform_param applies per image.
    Tops: data (batch_size, C, H, W) and label (batch_size,). A missing or undecodable image is
    a CaffeError naming the list file, the line and the image path.
    """

    def _open_source(self):
        p = self.layer_param.image_data_param
        who = "ImageData layer %s" % self.name
        new_h, new_w = int(p.new_height), int(p.new_width)
        if (new_h > 0) != (new_w > 0):
            raise CaffeError("%s: new_height and new_width must be set together (got %d and %d)"
                             % (who, new_h, new_w))
        if p.batch_size <= 0:
            raise CaffeError("%s: image_data_param.batch_size must be positive" % who)
        if not p.source:
            raise CaffeError("%s: image_data_param.source (the list file) is not set" % who)
        entries = read_image_list(p.source, "%s: list file" % who)
        if not entries:
            raise CaffeError("%s: list file %s has no images" % (who, p.source))
        transformer = DataTransformer(self.layer_param.transform_param, self.phase, who)
        src = _ImageListSource(who, p.source, entries, p.root_folder, (new_h, new_w),
                               bool(p.is_color), int(p.batch_size), bool(p.shuffle),
                               transformer, self.dtype)
        if p.rand_skip:
            skip = int(backend.rng().integers(p.rand_skip))
            if skip >= len(entries):
                raise CaffeError("%s: not enough points to skip (rand_skip drew %d, the list has "
                                 "%d lines)" % (who, skip, len(entries)))
            src.line_id = skip
        x, _, lineno, path = src.read(src.line_id)
        try:
            shape = transformer.infer_shape(x.shape)
        except CaffeError as exc:
            raise _locate(who, "%s line %d (%s)" % (p.source, lineno, path), exc) from None
        return src, int(p.batch_size), shape

    @property
    def epoch(self):
        return self._state["epoch"]

    @property
    def line_id(self):
        """The index (in the current, possibly shuffled, order) of the next image."""
        return self._state["line_id"]


# --- Data (LMDB) ------------------------------------------------------------------------------

def _import_lmdb(who):
    try:
        import lmdb
    except ImportError:
        raise CaffeError("%s: reading an LMDB needs the optional lmdb package: pip install lmdb "
                         "(or pip install 'minicaffe[lmdb]')" % who) from None
    return lmdb


def open_lmdb(path, who, write=False):
    """An lmdb.Environment for the Caffe LMDB directory ``path`` (read-only unless ``write``)."""
    lmdb = _import_lmdb(who)
    if not write and not os.path.isdir(path):
        raise CaffeError("%s: LMDB %s does not exist (or is not a directory)" % (who, path))
    try:
        if write:
            return lmdb.open(path, map_size=1 << 26, subdir=True, meminit=False)
        return lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=True)
    except lmdb.Error as exc:
        raise CaffeError("%s: cannot open LMDB %s: %s" % (who, path, exc)) from None


class _LMDBSource(_ShardedStream):
    """Data's reader: a cursor over the LMDB (opened on the prefetch thread), wrapping at the
    end, and the per-item transform draws."""

    def __init__(self, who, path, env, batch_size, transformer, dtype, skip):
        self.who, self.path, self.env = who, path, env
        self.batch_size, self.transformer, self.dtype = batch_size, transformer, dtype
        self.entries = env.stat()["entries"]
        self.offset, self.epoch = skip, 0
        self._cursor = self._txn = None
        self._seek = True

    def _datum(self, key, value):
        try:
            datum = caffe_pb2.Datum.FromString(value)
        except Exception as exc:
            raise CaffeError("%s: %s record %r is not a Datum (%s)"
                             % (self.who, self.path, key, exc)) from None
        try:
            x = self.transformer.datum_to_array(datum, "record %r of %s" % (key, self.path))
        except ImageReadError as exc:
            raise CaffeError("%s: %s" % (self.who, exc)) from None
        return x, datum.label

    def first_item(self):
        with self.env.begin() as txn:
            cur = txn.cursor()
            cur.first()
            for _ in range(self.offset % self.entries):
                cur.next()
            return self._datum(cur.key(), cur.value())

    def _position(self):
        if self._seek:
            if self._txn is not None:
                self._txn.abort()
            self._txn = self.env.begin()
            self._cursor = self._txn.cursor()
            self._cursor.first()
            for _ in range(self.offset % self.entries):
                self._cursor.next()
            self._seek = False
        return self._cursor

    def _advance(self, cur):
        self.offset += 1
        if not cur.next():  # "Restarting data prefetching from start."
            cur.first()
            self.epoch += 1

    def read_batch(self):
        cur = self._position()

        def items():
            for _ in range(self.batch_size):
                key = cur.key()
                x, label = self._datum(key, cur.value())
                yield x, label, "%s record %r" % (self.path, key)
                self._advance(cur)
        return _transform_batch(items(), self.batch_size, self.transformer, self.dtype, self.who)

    def _datum_shape(self, key, value):
        """A record's (C, H, W) from the Datum fields or the encoded image's header."""
        try:
            datum = caffe_pb2.Datum.FromString(value)
        except Exception as exc:
            raise CaffeError("%s: %s record %r is not a Datum (%s)"
                             % (self.who, self.path, key, exc)) from None
        if not datum.encoded:
            return datum.channels, datum.height, datum.width
        import io
        what = "record %r of %s" % (key, self.path)
        try:
            return (0,) + _image_hw(what, io.BytesIO(datum.data))
        except ImageReadError as exc:
            raise CaffeError("%s: %s" % (self.who, exc)) from None

    def skip_batch(self):
        cur, t = self._position(), self.transformer
        for _ in range(self.batch_size):
            if t.rng is not None:
                if _needs_size(t):
                    key = cur.key()
                    _skip_draws(t, self._datum_shape(key, cur.value()), self.who,
                                "%s record %r" % (self.path, key))
                else:
                    t.draw((0, 0, 0))
            self._advance(cur)

    def get_state(self):
        return {"epoch": self.epoch, "offset": self.offset,
                "transform_rng": _rng_state(self.transformer.rng)}

    def set_state(self, s):
        epoch, offset = int(s["epoch"]), int(s["offset"])
        if epoch < 0 or offset < 0:
            raise CaffeError("%s: position epoch %d record %d of %s is negative"
                             % (self.who, epoch, offset, self.path))
        self.epoch, self.offset = epoch, offset
        _set_rng_state(self.transformer.rng, s.get("transform_rng"))
        self._seek = True


@register("Data", "DATA")
class DataLayer(_PrefetchingDataLayer):
    """Data: Datum records from an LMDB (as written by tools/convert_imageset).

    data_param: source (the LMDB directory), batch_size, backend (LEVELDB by default in
    caffe.proto, which minicaffe does not read: set ``backend: LMDB``), rand_skip (skip a
    random number of records in [0, rand_skip) at set-up), prefetch (4: queued batches, 2..4
    here). Each record is a Datum: an encoded image (decoded with Pillow, BGR, native channels
    unless transform_param force_color/force_gray), raw uint8 CHW ``data``, or ``float_data``.
    Records are read in key order and wrap around at the end. Tops: data (batch_size, C, H, W)
    and label (batch_size,). Needs the optional ``lmdb`` package (pip install lmdb).
    """

    def _open_source(self):
        p = self.layer_param.data_param
        who = "Data layer %s" % self.name
        if p.backend != caffe_pb2.DataParameter.LMDB:
            hint = ""
            if not p.HasField("backend"):
                hint = " (data_param.backend defaults to LEVELDB"
                if os.path.exists(os.path.join(p.source, "data.mdb")):
                    hint += "; %s is an LMDB: add `backend: LMDB` to data_param" % p.source
                hint += ")"
            raise CaffeError("%s: LevelDB is not supported%s. Convert the images to an LMDB "
                             "with tools/convert_imageset --backend lmdb and set backend: LMDB"
                             % (who, hint))
        if p.batch_size <= 0:
            raise CaffeError("%s: data_param.batch_size must be positive" % who)
        if not p.source:
            raise CaffeError("%s: data_param.source is not set" % who)
        self.prefetch_depth = min(max(int(p.prefetch), 2), 4)
        env = open_lmdb(p.source, who)
        if env.stat()["entries"] == 0:
            raise CaffeError("%s: LMDB %s is empty" % (who, p.source))
        transformer = DataTransformer(self.layer_param.transform_param, self.phase, who)
        if p.force_encoded_color and not transformer.force_gray:
            transformer.force_color = True
        skip = int(backend.rng().integers(p.rand_skip)) if p.rand_skip else 0
        src = _LMDBSource(who, p.source, env, int(p.batch_size), transformer, self.dtype, skip)
        x, _ = src.first_item()
        return src, int(p.batch_size), transformer.infer_shape(x.shape)

    @property
    def epoch(self):
        return self._state["epoch"]

    @property
    def offset(self):
        """How many records the consumed batches have read (rand_skip included)."""
        return self._state["offset"]


# --- DomainData (DAH batches) -----------------------------------------------------------------

class _DomainBatchSource(_ShardedStream):
    """DomainData's reader (runs on the prefetch thread). Each epoch (one pass over the target
    list): shuffle both lists; every class gets ``n_batches·K`` source ids, repeating a class's
    shuffled ids when it has fewer (the authors' getJointEntropyTrainValSets); batch b takes
    the next K ids of class 0, ..., C−1 and the next C·K target ids, the last target batch
    padded with the first shuffled target ids. ``readers`` give an item (CHW array, label,
    where) by list index, ``sizers`` its ((C, H, W), where) without decoding (to skip)."""

    def __init__(self, who, src_list, tgt_list, readers, k, num_classes, shuffle, transformer,
                 dtype, seed, sizers=None):
        self.who, self.src, self.tgt = who, src_list, tgt_list
        self.read_src, self.read_tgt = readers
        self.size_src, self.size_tgt = sizers or (None, None)
        self.k, self.c, self.shuffle = k, num_classes, shuffle
        self.transformer, self.dtype = transformer, dtype
        self.rng = np.random.default_rng(seed)
        self.by_class = [[i for i, e in enumerate(src_list) if e[1] == j] for j in range(num_classes)]
        self.epoch, self.batch = 0, 0
        self._plan()

    @property
    def n_batches(self):
        return -(-len(self.tgt) // (self.c * self.k))

    def _plan(self):
        perm = self.rng.permutation if self.shuffle else np.arange
        need = self.n_batches * self.k
        self.src_plan = []
        for ids in self.by_class:
            ids = np.asarray(ids)[perm(len(ids))] if self.shuffle else np.asarray(ids)
            reps = -(-need // len(ids))
            self.src_plan.append(np.tile(ids, reps)[:need])
        t = perm(len(self.tgt)) if self.shuffle else np.arange(len(self.tgt))
        total = self.n_batches * self.c * self.k
        self.tgt_plan = np.concatenate([t, t[: total - len(t)]]) if total > len(t) else t

    def _fill(self, ids, entries, reader):
        return _transform_batch((reader(int(i)) for i in ids), len(ids), self.transformer,
                                self.dtype, self.who)

    def _batch_ids(self):
        b, k = self.batch, self.k
        sids = np.concatenate([plan[b * k:(b + 1) * k] for plan in self.src_plan])
        return sids, self.tgt_plan[b * self.c * k:(b + 1) * self.c * k]

    def _advance(self):
        self.batch += 1
        if self.batch >= self.n_batches:
            self.batch, self.epoch = 0, self.epoch + 1
            self._plan()

    def read_batch(self):
        sids, tids = self._batch_ids()
        sdata, slab = self._fill(sids, self.src, self.read_src)
        tdata, tlab = self._fill(tids, self.tgt, self.read_tgt)
        self._advance()
        return (sdata, slab, tdata, tlab), None

    def skip_batch(self):
        t = self.transformer
        if t.rng is not None:
            for ids, sizer in zip(self._batch_ids(), (self.size_src, self.size_tgt)):
                for idx in ids:
                    if _needs_size(t):
                        shape, where = sizer(int(idx))
                        _skip_draws(t, shape, self.who, where)
                    else:
                        t.draw((0, 0, 0))
        self._advance()

    def get_state(self):
        return {"epoch": self.epoch, "batch": self.batch,
                "src_plan": [p.tolist() for p in self.src_plan], "tgt_plan": self.tgt_plan.tolist(),
                "rng": _rng_state(self.rng), "transform_rng": _rng_state(self.transformer.rng)}

    def set_state(self, s):
        self.epoch, self.batch = int(s["epoch"]), int(s["batch"])
        self.src_plan = [np.asarray(p, np.int64) for p in s["src_plan"]]
        self.tgt_plan = np.asarray(s["tgt_plan"], np.int64)
        _set_rng_state(self.rng, s.get("rng"))
        _set_rng_state(self.transformer.rng, s.get("transform_rng"))


@register("DomainData")
class DomainDataLayer(_PrefetchingDataLayer):
    """DomainData — DAH's domain batches (dah_spec §3, the authors' batch construction).

    ``domain_data_param``: ``source`` (labelled source list, ImageData format), ``target_source``
    (target list; its labels are never fed to a loss), ``root_folder`` / ``target_root_folder``
    (the latter defaults to the former), ``per_class`` K (5), ``num_classes`` C (default: 1 +
    the largest source label), ``shuffle`` (true; reshuffled every epoch), ``new_height`` /
    ``new_width``, ``is_color``; ``transform_param`` as ImageData's. Tops: source data (C·K, …)
    with K images of each class in class order, source labels (C·K,), target data (C·K, …),
    and optionally target labels (C·K,) for evaluation only. One epoch = ceil(n_t / (C·K))
    batches, one pass over the target list. Deterministic under ``caffe.set_random_seed``.

    Data-parallel (``set_shard(r, N)``, rank r of N): the ranks share one epoch plan and rank
    r takes its batches r, r + N, r + 2N, ...; so every rank's batch still holds K images of
    each class in class order (the losses see all classes), but other images of them, and
    other target images: each rank forms different MMD quadruples and hash pairs.
    """
    min_num_top = 3
    max_num_top = 4

    def _open_source(self):
        p = self.layer_param.domain_data_param
        who = "DomainData layer %s" % self.name
        if not p.source or not p.target_source:
            raise CaffeError("%s: domain_data_param needs source and target_source (list files)"
                             % who)
        new_h, new_w = int(p.new_height), int(p.new_width)
        if (new_h > 0) != (new_w > 0):
            raise CaffeError("%s: new_height and new_width must be set together" % who)
        src = read_image_list(p.source, "%s: list file" % who)
        tgt = read_image_list(p.target_source, "%s: list file" % who)
        if not src or not tgt:
            raise CaffeError("%s: %s has no images" % (who, p.source if not src else p.target_source))
        c = int(p.num_classes) if p.HasField("num_classes") else int(max(e[1] for e in src)) + 1
        counts = np.bincount([int(e[1]) for e in src], minlength=c)
        if len(counts) > c:
            raise CaffeError("%s: source label %d >= num_classes %d" % (who, len(counts) - 1, c))
        missing = [j for j in range(c) if counts[j] == 0]
        if missing:
            raise CaffeError("%s: classes %s have no source image in %s (every class needs one)"
                             % (who, missing[:10], p.source))
        if p.per_class < 1:
            raise CaffeError("%s: per_class must be >= 1" % who)
        troot = p.target_root_folder or p.root_folder
        cache = _ImageCache(who)   # one budget for both lists

        def reader(entries, root, listfile):
            def read(i):
                path, label, lineno = entries[i]
                try:
                    img = cache.read(root + path, new_h, new_w, bool(p.is_color))
                except ImageReadError as exc:
                    raise CaffeError("%s: %s line %d: %s" % (who, listfile, lineno, exc)) from None
                return img.transpose(2, 0, 1), label, "%s line %d (%s)" % (listfile, lineno, path)
            return read

        def sizer(entries, root, listfile):
            known = {}

            def size(i):
                path, _, lineno = entries[i]
                where = "%s line %d (%s)" % (listfile, lineno, path)
                if new_h > 0:
                    return (0, new_h, new_w), where
                if i not in known:
                    try:
                        known[i] = (0,) + _image_hw(root + path)
                    except ImageReadError as exc:
                        raise CaffeError("%s: %s: %s" % (who, where, exc)) from None
                return known[i], where
            return size

        transformer = DataTransformer(self.layer_param.transform_param, self.phase, who)
        seed = int(backend.rng().integers(0, 2 ** 63))
        source = _DomainBatchSource(who, src, tgt, (reader(src, p.root_folder, p.source),
                                                    reader(tgt, troot, p.target_source)),
                                    int(p.per_class), c, bool(p.shuffle), transformer,
                                    self.dtype, seed,
                                    (sizer(src, p.root_folder, p.source),
                                     sizer(tgt, troot, p.target_source)))
        x, _, _ = source.read_src(0)
        return source, c * int(p.per_class), transformer.infer_shape(x.shape)

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top[:1])
        n = top[0].shape[0]
        top[1].reshape((n,))
        top[2].reshape(top[0].shape)
        if len(top) > 3:
            top[3].reshape((n,))

    def forward_cpu(self, bottom, top):
        (sd, sl, td, tl), _, state = self._next_batch()
        for t, arr in zip(top, (sd, sl, td, tl)):
            t.reshape(arr.shape)
            t.data[...] = arr
        self._state = state

    @property
    def epoch(self):
        return self._state["epoch"]

    @property
    def batches_per_epoch(self):
        return self._source.n_batches
