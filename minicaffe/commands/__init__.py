"""The command-line programs; each module has main(argv=None) -> exit status. A checkout runs
them as ``tools/NAME``; an installed package as ``minicaffe NAME`` (or ``python -m
minicaffe.commands NAME``), e.g. ``minicaffe train --solver solver.prototxt``."""
import importlib
import pkgutil
import sys

# every public module here is a command (tests/test_install.py: and a tools/ script)
COMMANDS = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                        if not m.name.startswith("_")))


def main(argv=None):
    """``minicaffe NAME [options]``: the command NAME with its options (``NAME --help``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: minicaffe COMMAND [options]   (minicaffe COMMAND --help)\ncommands: "
              + ", ".join(COMMANDS), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print("minicaffe: error: unknown command %r (one of: %s)" % (argv[0], ", ".join(COMMANDS)),
              file=sys.stderr)
        return 2
    return importlib.import_module("minicaffe.commands." + argv[0]).main(argv[1:])
