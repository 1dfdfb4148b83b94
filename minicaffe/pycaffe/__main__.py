"""``python -m minicaffe.pycaffe``: run a pycaffe program, unchanged, on minicaffe.

    python -m minicaffe.pycaffe SCRIPT.py [ARGS...]
    python -m minicaffe.pycaffe -m MODULE [ARGS...]     # e.g. -m pytest, -m unittest
    python -m minicaffe.pycaffe -c CODE [ARGS...]

``import caffe`` in the program (and in its Python layers) gives ``minicaffe.pycaffe``
(``install_caffe_alias``); ``sys.argv`` and ``sys.path[0]`` are what ``python SCRIPT.py`` would
give. When a real pycaffe is importable it refuses with one line and exit status 2.
"""
import os
import runpy
import sys

from minicaffe.errors import CaffeError
from minicaffe.pycaffe import install_caffe_alias

USAGE = ("usage: python -m minicaffe.pycaffe SCRIPT.py [ARGS...] | -m MODULE [ARGS...] | "
         "-c CODE [ARGS...]")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or (argv[0] in ("-m", "-c") and len(argv) < 2):
        print(USAGE, file=sys.stderr if argv[:1] not in (["-h"], ["--help"]) else sys.stdout)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    try:
        install_caffe_alias()
    except CaffeError as exc:
        print("minicaffe.pycaffe: error: %s" % exc, file=sys.stderr)
        return 2
    if argv[0] == "-m":
        sys.argv = [argv[1]] + argv[2:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv[0] == "-c":
        sys.argv = ["-c"] + argv[2:]
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
    else:
        script = argv[0]
        if not os.path.isfile(script):
            print("minicaffe.pycaffe: error: can't open file %r" % script, file=sys.stderr)
            return 2
        sys.argv = argv
        sys.path[0] = os.path.dirname(os.path.abspath(script))   # as `python SCRIPT.py`
        runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
