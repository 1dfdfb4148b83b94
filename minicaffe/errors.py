"""The one exception family minicaffe raises for bad input.

Every error a user can cause (a malformed prototxt, an unknown layer type, a shape that does
not fit, a missing or corrupt model file) is a ``CaffeError``; tools catch it, print the
message on one line and exit with status 2.
"""


class CaffeError(Exception):
    """Base class: bad input that the user can fix. The message says what and where."""


class PrototxtError(CaffeError):
    """A text or binary definition file that does not parse (file, line, column, field)."""


class LayerTypeError(CaffeError):
    """A layer type that is not registered; the message lists the known ones."""


class NetError(CaffeError):
    """A net that cannot be wired: unknown bottom, a top produced twice, wrong blob counts."""


class ShapeError(CaffeError):
    """Shapes that do not fit: names the layers and both shapes."""


class ModelFileError(CaffeError):
    """A .caffemodel / .binaryproto / .solverstate that is missing, truncated or does not fit."""


class ArgumentError(CaffeError, TypeError, ValueError):
    """An API call with an argument of the wrong kind or value (``caffe.Net(123)``, phase 7,
    ``copy_from(None)``); also a TypeError / ValueError, as Python code may expect."""
