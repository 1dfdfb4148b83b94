"""Reading and writing Caffe's definition and model files (Caffe's util/io.cpp, upgrade_proto.cpp).

Every reader returns a message of ``minicaffe.proto.caffe_pb2`` and raises a ``CaffeError``
a user can act on: ``PrototxtError`` for text files ("file:line:col: what", naming the bad
field) and ``ModelFileError`` for binary files (missing, truncated, or not the expected
message). Nets come back upgraded (``minicaffe.upgrade.upgrade_net_as_needed``) and solvers
upgraded and defaulted, as ``caffe`` does on every read. Writers are atomic: a crash never
leaves half a .caffemodel behind.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
from typing import IO, Any, Callable, Optional, Tuple, Type, Union

import numpy as np
from google.protobuf import message as _pb_message, text_format
from numpy.typing import ArrayLike, NDArray

from .errors import ModelFileError, PrototxtError
from .proto import caffe_pb2
from .upgrade import set_solver_defaults, upgrade_net_as_needed, upgrade_solver_as_needed

__all__ = [
    "BINARY_EXTENSIONS",
    "read_net_param",
    "read_solver_param",
    "read_blob_proto",
    "read_proto_text",
    "read_proto_binary",
    "write_proto_binary",
    "write_proto_text",
]

#: Extensions read as binary protobuf when ``binary`` is not given.
BINARY_EXTENSIONS = (".caffemodel", ".binaryproto", ".solverstate")

# "name: ..." / "layer {" at the start: prototxt text, not a path ("C:/x" is excluded).
_LOOKS_LIKE_TEXT = re.compile(r"\s*(#|[A-Za-z_][A-Za-z0-9_]*\s*(:(?![/\\])|\{))")
_POSITION_PREFIX = re.compile(r"^\d+:\d+ : ")

#: a file's path
PathLike = Union[str, "os.PathLike[str]"]
#: what the readers take: a path, prototxt text, serialized bytes or a message
Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Any]
#: a protobuf message (protoc's generated caffe_pb2 classes have no types)
Message = Any


def _display(path):
    return os.fspath(path)


def _read_bytes(path, error_cls):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise error_cls("No such file: %s" % _display(path)) from None
    except IsADirectoryError:
        raise error_cls("%s is a directory, not a file" % _display(path)) from None
    except OSError as exc:
        raise error_cls("Cannot read %s: %s" % (_display(path), exc.strerror or exc)) from None


_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1f]")  # all but \t \n \v \f \r


def _looks_binary(data):
    """True for data no prototxt holds: control bytes (NUL...) or invalid UTF-8."""
    if _CONTROL_BYTES.search(data):
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _check_initialized(msg, where, error_cls):
    # C++ TextFormat::Parse and ParseFromString refuse messages missing required fields.
    if not msg.IsInitialized():
        missing = ", ".join(msg.FindInitializationErrors())
        raise error_cls("%s: Message type \"%s\" is missing required fields: %s"
                        % (where, msg.DESCRIPTOR.full_name, missing))


def _parse_text(text, msg, where):
    """text_format.Parse into ``msg``; errors become PrototxtError "where:line:col: what"."""
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        line = exc.GetLine() if hasattr(exc, "GetLine") else None
        col = exc.GetColumn() if hasattr(exc, "GetColumn") else None
        what = _POSITION_PREFIX.sub("", str(exc))
        if line is not None:
            raise PrototxtError("%s:%s:%s: %s" % (where, line, col, what)) from None
        raise PrototxtError("%s: %s" % (where, what)) from None
    _check_initialized(msg, where, PrototxtError)
    return msg


def _parse_binary(data, msg, where):
    """ParseFromString into ``msg``; errors become ModelFileError naming ``where``."""
    name = msg.DESCRIPTOR.full_name
    short = msg.DESCRIPTOR.name
    try:
        msg.ParseFromString(data)
    except (_pb_message.DecodeError, RuntimeError, ValueError) as exc:
        hint = "" if _looks_binary(data) else "; it looks like text: is it a prototxt?"
        raise ModelFileError("%s: cannot decode %d bytes as %s: the file is truncated or is not "
                             "a %s (%s)%s" % (where, len(data), name, short, exc, hint)) from None
    if not data and where != "<bytes>":
        raise ModelFileError("%s: the file is empty (0 bytes), not a %s" % (where, short))
    if data and not msg.ListFields():
        # Valid wire format but not one field we know: some other kind of file.
        raise ModelFileError("%s: no %s fields in %d bytes: the file is not a %s"
                             % (where, name, len(data), short))
    _check_initialized(msg, where, ModelFileError)
    _check_strings(msg, where)
    return msg


def _check_strings(msg, where, path="", top=None):
    """Caffe's strings are UTF-8; the parser hands invalid ones back as bytes, which every
    later use of the name (upgrades, layer look-ups) would trip over."""
    top = top or msg.DESCRIPTOR.name
    for field, value in msg.ListFields():
        name = path + field.name
        if field.type == field.TYPE_STRING:
            for v in [value] if isinstance(value, (str, bytes)) else value:
                if isinstance(v, bytes):
                    raise ModelFileError("%s: field %s is not valid UTF-8 (%r): the file is "
                                         "corrupt or not a %s" % (where, name, v[:40], top))
        elif field.type == field.TYPE_MESSAGE and field.message_type.name != "BlobProto":
            if isinstance(value, _pb_message.Message):   # blobs hold numbers only: skipped
                _check_strings(value, where, name + ".", top)
            else:
                for i, v in enumerate(value):
                    _check_strings(v, where, "%s[%d]." % (name, i), top)


def _text_source(source):
    return isinstance(source, str) and ("\n" in source or _LOOKS_LIKE_TEXT.match(source))


def _read_message(source, cls, binary, what):
    """A fresh ``cls`` message from a path, prototxt text, serialized bytes or a message.

    Returns (message, name for messages and logs)."""
    msg = cls()
    if isinstance(source, _pb_message.Message):
        if source.DESCRIPTOR.full_name != cls.DESCRIPTOR.full_name:
            raise TypeError("expected a %s, got a %s"
                            % (cls.DESCRIPTOR.full_name, source.DESCRIPTOR.full_name))
        if isinstance(source, cls):
            msg.CopyFrom(source)
        else:  # same message from another module (e.g. protoc's caffe_pb2)
            msg.ParseFromString(source.SerializePartialToString())
        return msg, "<%s>" % cls.DESCRIPTOR.name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _parse_binary(bytes(source), msg, "<bytes>"), "<bytes>"
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError("%s: expected a path, prototxt text or a %s, got %s"
                        % (what, cls.DESCRIPTOR.name, type(source).__name__))
    if isinstance(source, str) and not os.path.exists(source) and _text_source(source):
        if binary:
            raise ModelFileError("No such file: %s" % source.strip()[:200])
        return _parse_text(source, msg, "<string>"), "<string>"

    path = _display(source)
    guess = binary is None
    if guess:
        binary = path.lower().endswith(BINARY_EXTENSIONS)
    data = _read_bytes(path, ModelFileError if binary else PrototxtError)
    if binary:
        return _parse_binary(data, msg, path), path
    if _looks_binary(data):
        if not guess:
            raise PrototxtError("%s: not a text %s file (it holds binary data)"
                                % (path, cls.DESCRIPTOR.name))
        # A binary model under a text-like name (e.g. weights saved as .pb).
        return _parse_binary(data, msg, path), path
    # A UTF-8 byte order mark is not prototxt syntax; editors on Windows add it.
    return _parse_text(data.decode("utf-8").lstrip("\ufeff"), msg, path), path


def read_net_param(source: Source, *, binary: Optional[bool] = None) -> Message:
    """An upgraded ``NetParameter`` from a prototxt or a .caffemodel.

    ``source`` is a path (text prototxt, or binary when its extension is .caffemodel /
    .binaryproto / .solverstate or ``binary=True``; a file that is not text is read as binary
    anyway), prototxt text, serialized bytes, or a NetParameter (copied). The result is
    upgraded to the current format (V0/V1 layers, input fields, old BatchNorm).

    Raises PrototxtError (text: "file:line:col: what") or ModelFileError (binary: missing,
    truncated, not a NetParameter); a missing file says "No such file: <path>".
    """
    net, name = _read_message(source, caffe_pb2.NetParameter, binary, "read_net_param")
    upgrade_net_as_needed(net, name)
    return net


def read_solver_param(source: Source, *, solver_path: Optional[PathLike] = None) -> Message:
    """An upgraded and defaulted ``SolverParameter`` from a solver prototxt.

    ``source`` is a path, prototxt text or a SolverParameter. ``solver_type`` is turned into
    ``type`` (both set: PrototxtError) and snapshot_prefix gets Caffe's defaults from the
    solver file's path (``solver_path`` stands in for it when ``source`` is not a file).
    """
    solver, name = _read_message(source, caffe_pb2.SolverParameter, False, "read_solver_param")
    upgrade_solver_as_needed(solver, name)
    if solver_path is None and not name.startswith("<"):
        solver_path = name
    if solver_path is not None:
        set_solver_defaults(solver, solver_path)
    return solver


def read_proto_text(path: PathLike, cls: Type[Message]) -> Message:
    """A ``cls`` message from the text file ``path`` (no upgrades); PrototxtError on failure."""
    msg = cls()
    data = _read_bytes(path, PrototxtError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PrototxtError("%s: not a text file (%s)" % (_display(path), exc)) from None
    return _parse_text(text, msg, _display(path))


def read_proto_binary(path: PathLike, cls: Type[Message]) -> Message:
    """A ``cls`` message from the binary file ``path`` (no upgrades); ModelFileError if the
    file is missing, truncated or not a ``cls``."""
    return _parse_binary(_read_bytes(path, ModelFileError), cls(), _display(path))


def read_blob_proto(path: PathLike) -> Message:
    """A ``BlobProto`` from a binary file such as a mean .binaryproto."""
    return read_proto_binary(path, caffe_pb2.BlobProto)


def _current_umask():
    # os.umask can only be read by setting it; put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], Any],
                 error: Type[Exception] = ModelFileError) -> str:
    """Call ``write(f)`` on a temporary file next to ``path``, fsync it and rename it over
    ``path``: readers see the old file or the whole new one, never a part. An OSError becomes
    ``error`` naming the path; the temporary file never outlives a failure."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                                   suffix=".tmp")
    except OSError as exc:
        raise error("Cannot write %s: %s" % (path, exc.strerror or exc)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file 0600; give it the permissions open() would have.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise error("Cannot write %s: %s" % (path, exc.strerror or exc)) from None
        raise
    return path


def _atomic_write(path: PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, then rename it over ``path``."""
    atomic_write(path, lambda f: f.write(data))


def write_proto_binary(path: PathLike, msg: Message) -> None:
    """Serialize ``msg`` to ``path`` atomically (a temp file in the same directory, then
    os.replace). Raises ModelFileError if it cannot be written or misses required fields."""
    try:
        data = msg.SerializeToString()
    except _pb_message.EncodeError as exc:
        raise ModelFileError("Cannot write %s: %s" % (os.fspath(path), exc)) from None
    _atomic_write(path, data)


def write_proto_text(path: PathLike, msg: Message) -> None:
    """Write ``msg`` as prototxt (text_format.MessageToString) to ``path`` atomically."""
    _atomic_write(path, text_format.MessageToString(msg).encode("utf-8"))


# --- arrays <-> BlobProto (caffe.io re-exports these) ----------------------------------------

_F_NUM, _F_CHANNELS, _F_HEIGHT, _F_WIDTH = 1, 2, 3, 4
_F_DATA, _F_DIFF, _F_SHAPE, _F_DDATA, _F_DDIFF = 5, 6, 7, 8, 9


def _varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ModelFileError("truncated varint in a BlobProto")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _packed(field, raw):
    return _varint(field << 3 | 2) + _varint(len(raw)) + raw


def blobproto_bytes(data: ArrayLike, diff: Optional[ArrayLike] = None) -> bytes:
    """The wire bytes of a BlobProto holding ``data`` (and ``diff``) with its shape.

    float32 arrays go to data/diff (fields 5/6), float64 to double_data/double_diff (8/9),
    as Blob<double>::ToProto does.
    """
    data = np.asarray(data)
    dims = b"".join(_varint(int(d)) for d in data.shape)
    out = [_packed(_F_SHAPE, _packed(1, dims) if dims else b"")]
    double = data.dtype == np.float64
    fd, ff = (_F_DDATA, _F_DDIFF) if double else (_F_DATA, _F_DIFF)
    dt = "<f8" if double else "<f4"
    out.append(_packed(fd, np.ascontiguousarray(data, dtype=dt).tobytes()))
    if diff is not None:
        out.append(_packed(ff, np.ascontiguousarray(diff, dtype=dt).tobytes()))
    return b"".join(out)


def array_to_blobproto_into(data: ArrayLike, proto: Message, diff: Optional[ArrayLike] = None) -> Message:
    proto.Clear()
    proto.MergeFromString(blobproto_bytes(data, diff))
    return proto


def array_to_blobproto(arr: ArrayLike, diff: Optional[ArrayLike] = None) -> Message:
    """pycaffe's caffe.io.array_to_blobproto: an N-d array → BlobProto (shape + data)."""
    return array_to_blobproto_into(arr, caffe_pb2.BlobProto(), diff)


def _decode_blobproto(raw):
    """Parse BlobProto wire bytes: (shape, legacy dims, {field: ndarray})."""
    pos, n = 0, len(raw)
    legacy, dims, arrays = {}, None, {}
    while pos < n:
        key, pos = _read_varint(raw, pos)
        field, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _read_varint(raw, pos)
            if field in (_F_NUM, _F_CHANNELS, _F_HEIGHT, _F_WIDTH):
                legacy[field] = val - (1 << 64) if val >= 1 << 63 else val
        elif wt == 2:
            ln, pos = _read_varint(raw, pos)
            chunk = raw[pos:pos + ln]
            if len(chunk) != ln:
                raise ModelFileError("truncated BlobProto")
            pos += ln
            if field == _F_SHAPE:
                dims = dims or []
                p = 0
                while p < ln:  # BlobShape: dim=1, packed or not
                    k, p = _read_varint(chunk, p)
                    if k >> 3 == 1 and k & 7 == 2:
                        l2, p = _read_varint(chunk, p)
                        end = p + l2
                        while p < end:
                            v, p = _read_varint(chunk, p)
                            dims.append(v)
                    elif k >> 3 == 1 and k & 7 == 0:
                        v, p = _read_varint(chunk, p)
                        dims.append(v)
                    else:
                        raise ModelFileError("unexpected field in BlobShape")
            elif field in (_F_DATA, _F_DIFF, _F_DDATA, _F_DDIFF):
                dt = "<f8" if field in (_F_DDATA, _F_DDIFF) else "<f4"
                arr = np.frombuffer(chunk, dtype=dt)
                arrays.setdefault(field, []).append(arr)
        elif wt == 5:  # unpacked float
            arrays.setdefault(field, []).append(np.frombuffer(raw[pos:pos + 4], "<f4"))
            pos += 4
        elif wt == 1:  # unpacked double
            arrays.setdefault(field, []).append(np.frombuffer(raw[pos:pos + 8], "<f8"))
            pos += 8
        else:
            raise ModelFileError("unsupported wire type %d in a BlobProto" % wt)
    arrays = {k: (v[0] if len(v) == 1 else np.concatenate(v)) for k, v in arrays.items()}
    return dims, legacy, arrays


def blobproto_shape(proto: Message) -> Tuple[int, ...]:
    """The shape a BlobProto describes (legacy num/channels/height/width → 4-D)."""
    if proto.HasField("num") or proto.HasField("channels") or proto.HasField("height") \
            or proto.HasField("width"):
        return (proto.num, proto.channels, proto.height, proto.width)
    return tuple(int(d) for d in proto.shape.dim)


def blobproto_to_array(blob: Message, return_diff: bool = False) -> NDArray[Any]:
    """pycaffe's caffe.io.blobproto_to_array: data (or diff) reshaped to the blob's shape.

    Float data wins over double data as in Blob::FromProto; the result is float32 for float
    data and float64 for double data.
    """
    dims, legacy, arrays = _decode_blobproto(blob.SerializeToString())
    shape = blobproto_shape(blob)
    fields = (_F_DIFF, _F_DDIFF) if return_diff else (_F_DATA, _F_DDATA)
    arr = arrays.get(fields[0])
    if arr is None:
        arr = arrays.get(fields[1])
    count = math.prod(shape)
    if arr is None:
        if count == 0:
            return np.zeros(shape, np.float32)
        raise ModelFileError("BlobProto has no %s" % ("diff" if return_diff else "data"))
    if arr.size != count:
        raise BlobProtoShapeError("BlobProto of shape %s holds %d values, expected %d%s"
                                  % (shape, arr.size, count, "" if shape else
                                     " (it has no shape: set shape.dim or num/channels/"
                                     "height/width)"))
    return arr.reshape(shape)


class BlobProtoShapeError(ModelFileError, ValueError):
    """A BlobProto whose values do not fill its shape (one without a shape holding more than
    one value included); also a ValueError, which pycaffe raises there."""


def load_mean(path: PathLike) -> NDArray[Any]:
    """A mean .binaryproto → array (C, H, W) (the batch axis of a 4-D mean dropped)."""
    try:
        arr = blobproto_to_array(read_blob_proto(path))
    except ModelFileError as exc:
        if str(exc).startswith(os.fspath(path)):
            raise
        raise ModelFileError("%s: %s" % (os.fspath(path), exc)) from None
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    return arr
