"""Layer implementations, one module per family; importing this registers every type.

data: Input, DummyData, MemoryData, ImageData, Data · hdf5: HDF5Data, HDF5Output · window:
WindowData · vision: Convolution, Deconvolution, Pooling, LRN, Crop, Im2col, SPP · neuron:
elementwise activations, Dropout · normalization: BatchNorm, Scale, Bias, MVN · common:
InnerProduct, Eltwise, Concat, Slice, Split, ..., Parameter, Filter, BatchReindex · loss:
Softmax and the losses, Accuracy · dah: MMDLoss, HashLoss, EntropyLoss, QuantizationLoss,
GradientScaler · recurrent: RNN, LSTM, LSTMUnit · python: Python layers.
"""
from . import common, dah, data, hdf5, loss, neuron, normalization, python, recurrent, vision, window  # noqa: F401
