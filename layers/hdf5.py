"""HDF5 data layers: HDF5Data (rows of .h5 datasets) and HDF5Output (writes two bottoms).

Both read and write through h5py (the optional ``[hdf5]`` extra); a missing h5py is one line
naming the layer. Paths (the list file, the .h5 files it lists, HDF5Output's file_name) are
opened as Caffe opens them: relative to the current directory.
"""
import os

import numpy as np

from minicaffe import backend
from minicaffe.errors import CaffeError
from minicaffe.hdf5 import require_h5py
from minicaffe.layer import Layer, register
from minicaffe.protoio import atomic_write

from .data import _file_tokens, _rng_state, _set_rng_state, _ShardedStream


def _read_h5_list(source, who):
    """The list file's names with their line numbers: whitespace-separated tokens, as
    Caffe's ``source_file >> line`` reads them (blank lines skipped, one name per token)."""
    names = _file_tokens(source, who, "source file")
    if not names:
        raise CaffeError("%s: must have at least 1 HDF5 filename listed in %s" % (who, source))
    for name, lineno in names:
        if not os.path.isfile(name):
            what = "is a directory" if os.path.isdir(name) else "does not exist"
            beside = os.path.join(os.path.dirname(source), name)
            if not os.path.isabs(name) and os.path.isfile(beside):
                what += (" (relative names are opened from the current directory, as Caffe "
                         "does; %s is beside the list file)" % beside)
            raise CaffeError("%s: HDF5 file %s (%s line %d) %s"
                             % (who, name, source, lineno, what))
    return names


class _HDF5Source(_ShardedStream):
    """HDF5Data's reader: the file order, the row order within the loaded file, the position
    (file, row) and the shuffle generator, stepped exactly as HDF5DataLayer::Next."""

    def __init__(self, who, source, files, tops, batch_size, shuffle, dtype, seed):
        self.who, self.source, self.files, self.tops = who, source, files, tops
        self.batch_size, self.shuffle, self.dtype = batch_size, shuffle, dtype
        self.h5py = require_h5py(who)
        self.rng = np.random.default_rng(seed) if shuffle else None
        self._meta = {}        # file index -> {top: shape}, validated
        self._arrays = None    # (file index, [array per top]) of the loaded file
        self.epoch = 0
        self.file_perm = np.arange(len(files))
        if shuffle:
            self.rng.shuffle(self.file_perm)
        self.current_file = 0
        self._load_perm()
        self.current_row = 0

    def _where(self, k):
        name, lineno = self.files[k]
        return "%s (%s line %d)" % (name, self.source, lineno)

    def shapes(self, k):
        """{top: dataset shape} of file ``k``, checked as Caffe's LoadHDF5FileData checks it
        (and its rows' shape against the first file's: the tops have that shape)."""
        if k in self._meta:
            return self._meta[k]
        where = self._where(k)
        try:
            with self.h5py.File(self.files[k][0], "r") as f:
                shapes = {}
                for top in self.tops:
                    ds = f.get(top)
                    if not isinstance(ds, self.h5py.Dataset):
                        raise CaffeError("%s: failed to find HDF5 dataset %r (top %r) in %s"
                                         % (self.who, top, top, where))
                    if ds.dtype.kind not in "fiu":
                        raise CaffeError("%s: dataset %r in %s has the unsupported type %s "
                                         "(float or integer datasets only)"
                                         % (self.who, top, where, ds.dtype))
                    if ds.ndim < 1:
                        raise CaffeError("%s: dataset %r in %s is a scalar; it needs at least "
                                         "1 axis (the rows)" % (self.who, top, where))
                    shapes[top] = tuple(int(d) for d in ds.shape)
        except OSError as exc:
            raise CaffeError("%s: failed opening HDF5 file %s: %s" % (self.who, where, exc)) from None
        first = self.tops[0]
        num = shapes[first][0]
        for top in self.tops[1:]:
            if shapes[top][0] != num:
                raise CaffeError("%s: dataset %r in %s has %d rows but dataset %r has %d (every "
                                 "top's dataset needs the same number of rows)"
                                 % (self.who, top, where, shapes[top][0], first, num))
        if num == 0:
            raise CaffeError("%s: the datasets in %s have no rows" % (self.who, where))
        if self._meta:
            ref_k = next(iter(self._meta))
            for top in self.tops:
                if shapes[top][1:] != self._meta[ref_k][top][1:]:
                    raise CaffeError("%s: dataset %r in %s has rows of shape %s but in %s of "
                                     "shape %s (the top's shape)"
                                     % (self.who, top, where, shapes[top][1:], self._where(ref_k),
                                        self._meta[ref_k][top][1:]))
        self._meta[k] = shapes
        return shapes

    def rows(self):
        return self.shapes(int(self.file_perm[self.current_file]))[self.tops[0]][0]

    def _load_perm(self):
        """LoadHDF5FileData's row order: identity, shuffled when ``shuffle``."""
        self.data_perm = np.arange(self.rows())
        if self.shuffle:
            self.rng.shuffle(self.data_perm)

    def arrays(self):
        k = int(self.file_perm[self.current_file])
        if self._arrays is None or self._arrays[0] != k:
            self.shapes(k)
            try:
                with self.h5py.File(self.files[k][0], "r") as f:
                    arrs = [np.asarray(f[top][()], dtype=self.dtype) for top in self.tops]
            except OSError as exc:
                raise CaffeError("%s: failed reading HDF5 file %s: %s"
                                 % (self.who, self._where(k), exc)) from None
            self._arrays = (k, arrs)
        return self._arrays[1]

    def next(self):
        """HDF5DataLayer::Next: the next row; at a file's end the next file (the file order
        reshuffled after the last one), its rows reshuffled."""
        self.current_row += 1
        if self.current_row == len(self.data_perm):
            if len(self.files) > 1:
                self.current_file += 1
                if self.current_file == len(self.files):
                    self.current_file = 0
                    self.epoch += 1
                    if self.shuffle:
                        self.rng.shuffle(self.file_perm)
                self._load_perm()
            else:
                self.epoch += 1
            self.current_row = 0
            if self.shuffle:
                self.rng.shuffle(self.data_perm)

    def read_batch(self):
        out = None
        for i in range(self.batch_size):
            arrs = self.arrays()
            if out is None:
                out = [np.empty((self.batch_size,) + a.shape[1:], self.dtype) for a in arrs]
            row = self.data_perm[self.current_row]
            for o, a in zip(out, arrs):
                o[i] = a[row]
            self.next()
        return out, None

    def skip_batch(self):
        for _ in range(self.batch_size):
            self.next()

    def get_state(self):
        return {"epoch": self.epoch, "file": self.current_file, "row": self.current_row,
                "file_perm": self.file_perm.tolist(),
                "data_perm": self.data_perm.tolist() if self.shuffle else None,
                "rng": _rng_state(self.rng)}

    def set_state(self, s):
        file_perm = np.asarray(s["file_perm"], np.int64)
        if not np.array_equal(np.sort(file_perm), np.arange(len(self.files))):
            raise CaffeError("%s: the saved file order is not a permutation of the %d files of %s"
                             % (self.who, len(self.files), self.source))
        current_file, row = int(s["file"]), int(s["row"])
        if not 0 <= current_file < len(self.files):
            raise CaffeError("%s: saved file position %d does not fit the %d files of %s"
                             % (self.who, current_file, len(self.files), self.source))
        self.file_perm, self.current_file = file_perm, current_file
        n = self.rows()
        if not 0 <= row < n:
            raise CaffeError("%s: saved row %d does not fit the %d rows of %s"
                             % (self.who, row, n, self._where(int(file_perm[current_file]))))
        if s.get("data_perm") is not None:
            perm = np.asarray(s["data_perm"], np.int64)
            if not np.array_equal(np.sort(perm), np.arange(n)):
                raise CaffeError("%s: the saved row order is not a permutation of the %d rows of "
                                 "%s" % (self.who, n, self._where(int(file_perm[current_file]))))
            self.data_perm = perm
        else:
            self.data_perm = np.arange(n)
        self.current_row, self.epoch = row, int(s.get("epoch", 0))
        _set_rng_state(self.rng, s.get("rng"))


@register("HDF5Data", "HDF5_DATA")
class HDF5DataLayer(Layer):
    """HDF5Data: rows of the datasets in the .h5 files listed in ``hdf5_data_param.source``.

    hdf5_data_param: source (a text file of .h5 paths, whitespace-separated, opened relative
    to the current directory as Caffe does), batch_size, shuffle (false). Top k is filled from
    the dataset named like top k (any number of tops, float or integer datasets, cast to the
    net's dtype); the first axis is the row and a top's shape is (batch_size,) + the rest of
    the dataset's shape. Rows run through one file, then the next, wrapping after the last.
    ``shuffle`` shuffles the file order at set-up and after each pass over the files, and the
    row order of a file when it is loaded and at each of its ends, as HDF5DataLayer::Next; a
    file's rows are all read before the next file's (never interleaved). The shuffles come
    from a generator seeded from ``backend.rng()`` at set-up when ``shuffle`` is on
    (``caffe.set_random_seed`` reproduces them; Caffe's std::random_shuffle ignores
    random_seed). transform_param is refused, as in Caffe. Only the file being read is
    in memory. No prefetch thread (Caffe's HDF5Data has none either).

    Data-parallel (``set_shard(r, N)``): rank r reads batch r of every N consecutive batches,
    as the other data layers shard (Caffe's own HDF5Data shards row by row instead).
    """
    exact_num_bottom = 0
    min_num_top = 1

    def layer_setup(self, bottom, top):
        who = "HDF5Data layer %s" % self.name
        if self.layer_param.HasField("transform_param"):
            raise CaffeError("%s: HDF5Data does not transform data (remove transform_param)" % who)
        p = self.layer_param.hdf5_data_param
        if not p.source:
            raise CaffeError("%s: hdf5_data_param.source (the list of .h5 files) is not set" % who)
        if p.batch_size <= 0:
            raise CaffeError("%s: hdf5_data_param.batch_size must be positive" % who)
        tops = list(self.layer_param.top)[:len(top)]
        files = _read_h5_list(p.source, who)
        seed = int(backend.rng().integers(0, 2 ** 63)) if p.shuffle else None
        self._source = _HDF5Source(who, p.source, files, tops, int(p.batch_size),
                                   bool(p.shuffle), self.dtype, seed)
        for k in self._source.file_perm:  # every file's datasets checked now, not hours later
            self._source.shapes(int(k))
        shapes = self._source.shapes(int(self._source.file_perm[0]))
        for t, name in zip(top, tops):
            t.reshape((int(p.batch_size),) + shapes[name][1:])

    def reshape(self, bottom, top):
        pass  # the tops keep their set-up shapes

    def forward_cpu(self, bottom, top):
        arrays, _, _ = self._source.next_batch()
        for t, a in zip(top, arrays):
            t.data[...] = a

    def set_shard(self, rank, size):
        """Data-parallel reading: from the current position on, take batch ``rank`` of every
        ``size`` consecutive batches and skip the others."""
        rank, size = int(rank), int(size)
        if not 0 <= rank < size:
            raise CaffeError("%s layer %s: shard rank %d is not in [0, %d)"
                             % (self.type, self.name, rank, size))
        self._source.rank, self._source.size = rank, size

    @property
    def shard(self):
        return self._source.rank, self._source.size

    def get_state(self):  # kept in .solverstate to resume exactly
        return self._source.get_state()

    def set_state(self, state):
        if state is not None:
            self._source.set_state(state)

    @property
    def position(self):
        """(epoch, index in the file order, row) of the next row."""
        s = self._source
        return {"epoch": s.epoch, "file": s.current_file, "row": s.current_row}


@register("HDF5Output", "HDF5_OUTPUT")
class HDF5OutputLayer(Layer):
    """HDF5Output: writes bottom 0 as dataset ``data`` and bottom 1 as ``label`` of
    ``hdf5_output_param.file_name`` (relative to the current directory). No tops; backward
    does nothing.

    As in Caffe: set-up creates the file empty (truncating an existing one); a forward writes
    both bottoms, with the legacy 4-D shape (num, channels, height, width) Caffe gives them
    (an (N, D) bottom is written as (N, D, 1, 1), more than 4 axes is an error) in the net's
    dtype; the two need the same num. Caffe's file then holds these datasets, so a second
    forward cannot make them again (H5LTmake_dataset fails, Caffe aborts): here it is a
    CaffeError. Every write is atomic (a temporary file renamed over file_name).
    """
    exact_num_bottom = 2
    exact_num_top = 0

    def layer_setup(self, bottom, top):
        self.who = "HDF5Output layer %s" % self.name
        self.file_name = self.layer_param.hdf5_output_param.file_name
        if not self.file_name:
            raise CaffeError("%s: hdf5_output_param.file_name is not set" % self.who)
        self._h5py = require_h5py(self.who)
        self._write({})
        self._written = False

    def _write(self, datasets):
        h5py = self._h5py

        def write(fileobj):
            with h5py.File(fileobj, "w") as f:
                for name, arr in datasets.items():
                    f.create_dataset(name, data=arr)
        atomic_write(self.file_name, write,
                     lambda msg: CaffeError("%s: failed to open HDF5 file: %s" % (self.who, msg)))

    def reshape(self, bottom, top):
        pass

    def _legacy(self, b, which):
        if b.ndim > 4:
            raise CaffeError("%s: bottom %d has %d axes %s; HDF5Output writes (num, channels, "
                             "height, width) blobs of at most 4 axes" % (self.who, which, b.ndim,
                                                                        tuple(b.shape)))
        return b.reshape(tuple(b.shape) + (1,) * (4 - b.ndim)) if b.ndim else b.reshape(1, 1, 1, 1)

    def forward_cpu(self, bottom, top):
        data = self._legacy(np.array(bottom[0].data, dtype=self.dtype), 0)
        label = self._legacy(np.array(bottom[1].data, dtype=self.dtype), 1)
        if data.shape[0] != label.shape[0]:
            raise CaffeError("%s: data blob and label blob must have the same batch size (%d "
                             "and %d)" % (self.who, data.shape[0], label.shape[0]))
        if self._written:
            raise CaffeError("%s: %s already holds the datasets data and label of an earlier "
                             "forward; Caffe's HDF5Output writes them once per set-up (a second "
                             "forward fails to make them again)" % (self.who, self.file_name))
        self._write({"data": data, "label": label})
        self._written = True
