"""Plumbing shared by the command-line programs: Caffe-style flags, one-line errors, glog logs.

Every ``minicaffe.commands.<name>.main(argv=None)`` is ``run(fn, argv, parser=build_parser())``:

- ``caffe_argv`` lets Caffe's gflags spellings through (``-solver S``, ``-solver=S``);
- ``flag_spelling`` takes a multi-word flag with dashes or underscores alike (``--per-class``
  for ``--per_class``): the tools spell them with underscores, as Caffe's do;
- ``summary`` turns a module docstring into a ``--help`` description;
- ``check_output`` refuses an output path whose folder is missing, before any work;
- ``add_transform_arguments`` gives a deploy-net tool ``--transform_from`` and ``--raw``;
- ``run`` parses, calls ``fn(args)`` and turns the errors a user can fix (``CaffeError``, a
  missing file, a bad flag, Ctrl-C) into one line ``prog: error: <message>`` and exit status 2
  (130 for Ctrl-C), with the traceback only under ``--debug``;
- ``setup_logging`` prints the ``minicaffe`` logger in glog's format, the format that
  Caffe's tools/extra/parse_log.py, extract_seconds.py and minicaffe's parse_log read.
"""
import os
import re
import sys

from minicaffe.errors import CaffeError
from minicaffe.glog import GlogFormatter, setup_logging  # noqa: F401  (the tools' imports)

__all__ = ["UsageError", "caffe_argv", "flag_spelling", "summary", "check_output",
           "add_transform_arguments", "run", "setup_logging", "GlogFormatter"]

# "-solver", "-solver=x", "-display_lrm": a dash and 2+ identifier characters. "-1", "-1e-3",
# "-.5", "-x" (one letter) and "--solver" do not match.
_GFLAG = re.compile(r"-([A-Za-z_][A-Za-z0-9_]+)(=.*)?", re.DOTALL)


class UsageError(CaffeError):
    """A command line argparse rejects (unknown flag, missing argument, bad choice)."""


def caffe_argv(argv):
    """``argv`` with Caffe's gflags single-dash flags rewritten to argparse's double dash.

    ``-solver S`` -> ``--solver S`` and ``-solver=S`` -> ``--solver=S``; only a dash followed
    by two or more identifier characters is rewritten, so negative numbers (``-1``, ``-1e-3``)
    and one-letter options (``-h``) are left alone, and nothing after a bare ``--`` is touched.
    """
    out = []
    args = list(argv)
    for i, a in enumerate(args):
        if a == "--":
            out.extend(args[i:])
            break
        out.append("-" + a if isinstance(a, str) and _GFLAG.fullmatch(a) else a)
    return out


def flag_spelling(argv, parser):
    """``argv`` with each ``--multi-word`` flag that ``parser`` knows as ``--multi_word`` (or the
    other way round) rewritten to the parser's spelling, so both are accepted and ``--help``
    shows one. Nothing after a bare ``--`` is touched."""
    known = parser._option_string_actions
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--":
            break
        if not (isinstance(a, str) and a.startswith("--")) or len(a) < 3:
            continue
        name, eq, value = a.partition("=")
        if name in known:
            continue
        for alt in ("--" + name[2:].replace("-", "_"), "--" + name[2:].replace("_", "-")):
            if alt in known:
                out[i] = alt + eq + value
                break
    return out


def summary(doc):
    """A module docstring's first paragraph as a ``--help`` description: one sentence without
    its "tools/NAME:" lead (backquoted or not) and without RST markup."""
    text = " ".join(doc.strip().split("\n\n")[0].split())
    text = re.sub(r"^(``)?tools/\w+(``)?:\s*", "", text).replace("``", "")
    return text[:1].upper() + text[1:]


def check_output(path, what=None):
    """Raise a one-line CaffeError when ``path`` (a file, or a prefix such as ``out/dah`` for
    ``out/dah_pr.csv``: ``what`` names the files) cannot be written because its folder does
    not exist or is not writable: checked before a command does its work, not after."""
    folder = os.path.dirname(os.path.abspath(path))
    name = what or path
    if not os.path.isdir(folder):
        raise CaffeError("cannot write %s: the folder %s does not exist" % (name, folder))
    if not os.access(folder, os.W_OK):
        raise CaffeError("cannot write %s: the folder %s is not writable" % (name, folder))


def add_transform_arguments(parser):
    """``--transform_from TRAIN_NET`` and ``--raw``: the two ways a tool that feeds images to a
    deploy net is told their transformation (``minicaffe.search.transform_param_from``; the
    deploy net's own Input ``transform_param`` otherwise, never nothing silently)."""
    parser.add_argument("--transform_from", default="", help="training net whose data layer's "
                        "transform_param (and resize) to use")
    parser.add_argument("--raw", action="store_true", help="no transformation beyond a resize "
                        "to the Input size (only when the net was trained on raw pixels)")


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _attach_negative_values(argv, parser):
    """``--lr -1e-3`` -> ``--lr=-1e-3``: argparse takes "-1e-3" for a flag (it knows only
    "-1" and "-.5" as negative numbers); gflags does not."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        action = parser._option_string_actions.get(a) if a.startswith("-") else None
        if (action is not None and action.nargs is None and i + 1 < len(argv)
                and argv[i + 1].startswith("-") and _is_number(argv[i + 1])):
            out.append("%s=%s" % (a, argv[i + 1]))
            i += 2
            continue
        if a == "--":
            out.extend(argv[i:])
            break
        out.append(a)
        i += 1
    return out


def _one_line(text):
    return " ".join(str(text).split())


def _error_message(exc):
    if isinstance(exc, OSError) and exc.filename is not None:
        what = exc.strerror or exc.__class__.__name__
        if isinstance(exc, FileNotFoundError):
            what = "No such file or directory"
        return "%s: %s" % (what, os.fspath(exc.filename))
    return str(exc) or exc.__class__.__name__


def run(main_fn, argv=None, prog=None, parser=None):
    """Run a command and return its exit status.

    ``argv`` (default ``sys.argv[1:]``) goes through ``caffe_argv``. With ``parser`` (an
    ``argparse.ArgumentParser``; a ``--debug`` flag is added if it has none) ``main_fn`` gets
    the parsed namespace, otherwise the rewritten argument list. ``main_fn`` returns an exit
    status (None means 0).

    ``CaffeError``, ``OSError`` naming a file (FileNotFoundError, PermissionError, ...) and
    argparse errors print ``prog: error: <message>`` as one line on stderr and return 2;
    Ctrl-C returns 130. With ``--debug`` on the command line these are re-raised instead.
    Any other exception is a bug and propagates with its traceback.
    """
    argv = caffe_argv(sys.argv[1:] if argv is None else argv)
    if prog is None:
        prog = parser.prog if parser is not None else os.path.basename(sys.argv[0] or "minicaffe")
    dash = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:dash]
    try:
        if parser is not None:
            if "--debug" not in parser._option_string_actions:
                parser.add_argument("--debug", action="store_true",
                                    help="show the traceback of an error")

            def _error(message):
                raise UsageError("%s (see %s --help)" % (message, parser.prog))

            parser.error = _error
            args = parser.parse_args(_attach_negative_values(flag_spelling(argv, parser), parser))
        else:
            args = argv
        status = main_fn(args)
        return 0 if status is None else int(status)
    except SystemExit as exc:  # --help / --version, or a command that exits itself
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print("%s: error: %s" % (prog, _one_line(exc.code)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("%s: error: interrupted" % prog, file=sys.stderr)
        return 130
    except (CaffeError, OSError) as exc:
        if debug or (isinstance(exc, OSError) and exc.filename is None
                     and not isinstance(exc, FileNotFoundError)):
            raise
        print("%s: error: %s" % (prog, _one_line(_error_message(exc))), file=sys.stderr)
        return 2
