"""Regenerate ``caffe_pb2.py`` from ``caffe.proto`` after an edit (development only)::

    pip install --no-deps grpcio-tools==1.62.3   # protoc 25.1 (its own pin, protobuf<5, is
    python minicaffe/proto/regen.py              # not needed to generate); imports no minicaffe

tests/test_proto.py regenerates into a temporary folder and compares with the committed file.

protoc 25's code runs on every protobuf from 3.20 on (the ``builder`` module, no runtime version
check); a newer protoc's code refuses a runtime older than itself. protoc runs from the folder
above the package so that the classes' ``__module__`` is ``minicaffe.proto.caffe_pb2`` (pickle
finds them).
"""
import os
import sys

GRPCIO_TOOLS = "1.62.3"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO = "minicaffe/proto/caffe.proto"


def regenerate(out_dir=ROOT):
    """Run protoc on caffe.proto; returns the path of the ``caffe_pb2.py`` it wrote."""
    from grpc_tools import protoc  # ImportError: grpcio-tools is not installed
    args = ["protoc", "-I" + ROOT, "--python_out=" + out_dir, os.path.join(ROOT, PROTO)]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + PROTO)
    return os.path.join(out_dir, PROTO[:-len(".proto")] + "_pb2.py")


if __name__ == "__main__":
    try:
        print(regenerate())
    except ImportError:
        sys.exit("regen: error: needs grpcio-tools: pip install grpcio-tools==" + GRPCIO_TOOLS)
