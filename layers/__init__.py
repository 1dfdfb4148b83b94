"""Layer implementations, one module per family; importing this registers every type.

data: Input, DummyData, MemoryData, ImageData, Data · vision: Convolution, Deconvolution,
Pooling, LRN, Crop, Im2col, SPP · neuron: elementwise activations, Dropout · normalization:
BatchNorm, Scale, Bias, MVN · common: InnerProduct, Eltwise, Concat, Slice, Split, ...,
Parameter, Filter, BatchReindex · loss: Softmax and the losses, Accuracy · dah: MMDLoss,
HashLoss, EntropyLoss, QuantizationLoss, GradientScaler · recurrent: RNN, LSTM, LSTMUnit ·
python: Python layers.
"""
from . import common, dah, data, loss, neuron, normalization, python, recurrent, vision  # noqa: F401
