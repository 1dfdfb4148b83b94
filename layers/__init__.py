"""Layer implementations, one module per family; importing this registers every type."""
from . import common, data, loss, neuron, python  # noqa: F401
