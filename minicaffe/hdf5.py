"""Net weights in Caffe's HDF5 layout (Net::ToHDF5 / CopyTrainedLayersFromHDF5), via h5py.

The file has a group ``data`` with one group per layer, named after it, holding one dataset
per param blob named by its index ("0", "1", ...); with diffs, a group ``diff`` the same way.
h5py is optional: ``pip install 'minicaffe[hdf5]'``.
"""
import os
from collections import OrderedDict

import numpy as np

from .errors import CaffeError, ModelFileError
from .protoio import atomic_write


def require_h5py(what):
    try:
        import h5py
    except ImportError:
        raise CaffeError("%s needs h5py: pip install 'minicaffe[hdf5]' (or pip install h5py)"
                         % what) from None
    return h5py


def write_weights(path, data, diff=None):
    """Write ``data`` (and ``diff``): {layer name: {param index: array}}, each layer a group
    even without params (as Caffe writes it). Atomic: a temporary file renamed over ``path``."""
    h5py = require_h5py("writing %s" % path)

    def write(fileobj):  # h5py writes into the open temporary file of protoio.atomic_write
        with h5py.File(fileobj, "w") as f:
            for group, layers in (("data", data), ("diff", diff)):
                if layers is None:
                    continue
                g = f.create_group(group)
                for name, blobs in layers.items():
                    lg = g.create_group(name)
                    for j, arr in blobs.items():
                        lg.create_dataset(str(j), data=np.asarray(arr))

    atomic_write(path, write, ModelFileError)


def read_weights(path):
    """{layer name: {param index: float array}} from the ``data`` group, layers in the file's
    (name) order. ModelFileError when the file is missing, not HDF5 or has no ``data``."""
    h5py = require_h5py("reading %s" % path)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError("%s: no such file" % path)
    try:
        with h5py.File(path, "r") as f:
            if "data" not in f or not isinstance(f["data"], h5py.Group):
                raise ModelFileError("%s: an HDF5 file without the group 'data' that Caffe's "
                                     "weights have" % path)
            out = OrderedDict()
            for name, group in f["data"].items():
                if not isinstance(group, h5py.Group):
                    raise ModelFileError("%s: data/%s is not a group of param datasets"
                                         % (path, name))
                blobs = {}
                for key, ds in group.items():
                    if not key.isdigit() or not isinstance(ds, h5py.Dataset):
                        raise ModelFileError("%s: data/%s/%s is not a param dataset named by "
                                             "its index" % (path, name, key))
                    blobs[int(key)] = np.asarray(ds[()])
                out[name] = blobs
            return out
    except OSError as exc:
        raise ModelFileError("%s: not a readable HDF5 file (%s)" % (path, exc)) from None
