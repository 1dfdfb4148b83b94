"""``tools/plot_log``: learning curves from a training log, drawn with matplotlib.

    tools/plot_log LOGFILE OUT.png [--x iters|seconds] [--y loss|accuracy|lr|NAME ...]
                   [--ylog] [--title T] [--size 800x560]

The log is read by ``parse_log`` (the same rows as its .train/.test files). Each selected
column becomes a line: "train <name>" from the Train net outputs (solid), "test <name>" from
the Test net outputs (dashed). ``--y`` picks columns: ``lr`` is LearningRate, any other word
picks the outputs of that name, or failing that the outputs whose name contains it
(``loss`` also finds ``fc7_mmd_loss``). Without ``--y`` every net output is drawn.
"""
import argparse
import os

from minicaffe import figures
from minicaffe.errors import CaffeError

from ._cli import run
from .parse_log import parse_log

__all__ = ["select_columns", "log_series", "main"]

_FIXED = ("NumIters", "Seconds", "LearningRate")


def _outputs(rows):
    names = []
    for row in rows:
        names.extend(k for k in row if k not in _FIXED and k not in names)
    return names


def select_columns(train_rows, test_rows, wanted=None):
    """``[(phase, column), ...]`` for the ``--y`` words in ``wanted`` (None: every output).
    Raises CaffeError for a word that matches nothing, listing what there is."""
    available = [("train", n) for n in _outputs(train_rows)] + \
                [("test", n) for n in _outputs(test_rows)]
    if not wanted:
        return available
    picked = []
    for word in wanted:
        if word.lower() in ("lr", "learningrate", "learning_rate"):
            found = [("train" if train_rows else "test", "LearningRate")] \
                if train_rows or test_rows else []
        else:
            found = [(ph, n) for ph, n in available if n == word] or \
                    [(ph, n) for ph, n in available if word.lower() in n.lower()]
        if not found:
            names = sorted({n for _, n in available})
            raise CaffeError("--y %s matches no net output; the log has %s (and lr)"
                             % (word, ", ".join(names) if names else "no net outputs"))
        picked.extend(c for c in found if c not in picked)
    return picked


def log_series(train_rows, test_rows, columns, x="iters"):
    """``minicaffe.figures.line_plot`` series for ``columns`` (from ``select_columns``)."""
    xkey = "Seconds" if x == "seconds" else "NumIters"
    nan = float("nan")
    series = []
    for phase, col in columns:
        rows = train_rows if phase == "train" else test_rows
        label = "learning rate" if col == "LearningRate" else "%s %s" % (phase, col)
        series.append({"label": label,
                       "x": [r[xkey] for r in rows],
                       "y": [r.get(col, nan) for r in rows],
                       "style": "--" if phase == "test" and col != "LearningRate" else "-"})
    return series


def _size(text):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("size must be WIDTHxHEIGHT, e.g. 800x560") from None
    return w, h


def build_parser():
    p = argparse.ArgumentParser(prog="plot_log",
                                description="Draw learning curves from a training log.")
    p.add_argument("logfile", metavar="LOGFILE", help="training log (glog format)")
    p.add_argument("output", metavar="OUT.png", help="image to write")
    p.add_argument("--x", choices=("iters", "seconds"), default="iters",
                   help="horizontal axis (default iters)")
    p.add_argument("--y", nargs="+", action="extend", metavar="NAME",
                   help="what to draw: loss, accuracy, lr or an output name "
                        "(default: every net output)")
    p.add_argument("--ylog", action="store_true", help="logarithmic vertical axis")
    p.add_argument("--title", default=None, help="plot title (default: the log's name)")
    p.add_argument("--size", type=_size, default=(800, 560), help="WIDTHxHEIGHT in pixels")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


def _plot_log_cmd(args):
    train, test = parse_log(args.logfile)
    if not train and not test:
        raise CaffeError("%s has no \"Train net output\" or \"Test net output\" lines after "
                         "\"Solving\"; nothing to plot" % args.logfile)
    columns = select_columns(train, test, args.y)
    series = [s for s in log_series(train, test, columns, args.x)
              if any(v == v for v in s["y"])]  # drop columns that are all NaN
    if not series:
        raise CaffeError("the selected columns of %s have no values" % args.logfile)
    cols = {c for _, c in columns}
    ylabel = ("learning rate" if cols == {"LearningRate"} else
              next(iter(cols)) if len(cols) == 1 else "")
    try:
        figures.line_plot(series, args.output,
                          title=os.path.basename(args.logfile) if args.title is None
                          else args.title,
                          xlabel="Seconds" if args.x == "seconds" else "Iterations",
                          ylabel=ylabel, size=args.size, ylog=args.ylog,
                          markers=max(len(s["y"]) for s in series) < 30)
    except ValueError as exc:  # an extension matplotlib does not write
        raise CaffeError(str(exc)) from None
    return 0


def main(argv=None):
    return run(_plot_log_cmd, argv, parser=build_parser())
