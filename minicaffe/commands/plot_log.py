"""``tools/plot_log``: learning curves from a training log, drawn with matplotlib.

    tools/plot_log LOGFILE OUT.png [--x iters|seconds] [--y total|lr|loss|accuracy|NAME ...]
                   [--ylog] [--title T] [--size 800x560]

The log is read by ``parse_log`` (the same rows as its .train/.test files, plus the solver's
total loss). Each selected column becomes a line: "total loss" from the solver's
``Iteration N (...), loss = X`` lines (black), "train <name>" from the Train net outputs
(solid), "test <name>" from the Test net outputs (dashed), "learning rate". ``--y`` picks
them: ``total`` the total loss, ``lr`` the LearningRate, any other word the outputs of that
name, or failing that the outputs whose name contains it (``loss`` also finds
``fc7_mmd_loss``). Without ``--y``: the total loss and every net output.
"""
import argparse
import os

from minicaffe import figures
from minicaffe.errors import CaffeError

from ._cli import run
from .parse_log import parse_log

__all__ = ["select_columns", "log_series", "main"]

_FIXED = ("NumIters", "Seconds", "LearningRate")
_TOTAL = ("total", "loss")  # the (phase, column) of the solver's total loss
_LR_WORDS = ("lr", "learningrate", "learning_rate")

_CHOICES = """\
what --y draws (several words at once; default: the total loss and every net output):
  total     the solver's total loss, "Iteration N (...), loss = X" (the loss weights applied,
            smoothed over the solver's average_loss iterations)
  lr        the learning rate, "Iteration N, lr = X"
  NAME      the net outputs called NAME, "Train net output #k: NAME = X" (solid) and
            "Test net output #k: NAME = X" (dashed); failing that, every output whose name
            contains NAME (loss finds loss and fc7_mmd_loss)

BVLC's tools/extra/plot_training_log.py chart types (the odd ones: add --x seconds):
  0, 1  test accuracy       --y accuracy
  2, 3  test loss           --y loss       (the test net's loss and the train net's)
  4, 5  learning rate       --y lr
  6, 7  train loss          --y total
"""


def _outputs(rows):
    names = []
    for row in rows:
        names.extend(k for k in row if k not in _FIXED and k not in names)
    return names


def select_columns(train_rows, test_rows, wanted=None, total_rows=()):
    """``[(phase, column), ...]`` for the ``--y`` words in ``wanted`` (None: the total loss
    and every output); the total loss is ``("total", "loss")``. Raises CaffeError for a word
    that matches nothing, listing what there is."""
    total = [_TOTAL] if total_rows else []
    available = [("train", n) for n in _outputs(train_rows)] + \
                [("test", n) for n in _outputs(test_rows)]
    if not wanted:
        return total + available
    picked = []
    for word in wanted:
        if word.lower() in _LR_WORDS:
            found = [("train" if train_rows else "test", "LearningRate")] \
                if train_rows or test_rows else []
        elif word.lower() == "total":
            found = total
        else:
            found = [(ph, n) for ph, n in available if n == word] or \
                    [(ph, n) for ph, n in available if word.lower() in n.lower()]
        if not found:
            names = sorted({n for _, n in available})
            raise CaffeError("--y %s matches no net output; the log has %s (and lr%s)"
                             % (word, ", ".join(names) if names else "no net outputs",
                                ", total" if total else ""))
        picked.extend(c for c in found if c not in picked)
    return picked


def log_series(train_rows, test_rows, columns, x="iters", total_rows=()):
    """``minicaffe.figures.line_plot`` series for ``columns`` (from ``select_columns``)."""
    xkey = "Seconds" if x == "seconds" else "NumIters"
    nan = float("nan")
    series = []
    for phase, col in columns:
        rows = {"train": train_rows, "test": test_rows, "total": total_rows}[phase]
        style = {"label": "learning rate" if col == "LearningRate" else "%s %s" % (phase, col),
                 "x": [r[xkey] for r in rows],
                 "y": [r.get(col, nan) for r in rows],
                 "style": "--" if phase == "test" and col != "LearningRate" else "-"}
        if (phase, col) == _TOTAL:
            style.update(color="black", linewidth=2.2)
        series.append(style)
    return series


def _ylabel(columns):
    """What the y axis shows: the quantities drawn, the legend naming each line."""
    names = []
    for phase, col in columns:
        name = "learning rate" if col == "LearningRate" else "loss" if phase == "total" else col
        if name not in names:
            names.append(name)
    return ", ".join(names) if len(names) <= 3 else "net outputs"


def _size(text):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("size must be WIDTHxHEIGHT, e.g. 800x560") from None
    if w < 100 or h < 100:
        raise argparse.ArgumentTypeError("size %s is too small: at least 100x100" % text)
    return w, h


def build_parser():
    p = argparse.ArgumentParser(prog="plot_log",
                                description="Draw learning curves from a training log "
                                            "(needs matplotlib: pip install 'minicaffe[plot]').",
                                epilog=_CHOICES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logfile", metavar="LOGFILE", help="training log (glog format)")
    p.add_argument("output", metavar="OUT.png",
                   help="image to write (.png; .svg, .pdf, .jpg by their extension)")
    p.add_argument("--x", choices=("iters", "seconds"), default="iters",
                   help="horizontal axis (default iters)")
    p.add_argument("--y", nargs="+", action="extend", metavar="NAME",
                   help="what to draw: total, lr or a net output name such as loss or "
                        "accuracy (below; default: the total loss and every net output)")
    p.add_argument("--ylog", action="store_true", help="logarithmic vertical axis")
    p.add_argument("--title", default=None, help="plot title (default: the log's name)")
    p.add_argument("--size", type=_size, default=(800, 560), help="WIDTHxHEIGHT in pixels")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


def _plot_log_cmd(args):
    train, test, total = parse_log(args.logfile, total_loss=True)
    if not train and not test and not total:
        raise CaffeError("%s has no \"Iteration N, loss =\", \"Train net output\" or \"Test net "
                         "output\" lines after \"Solving\"; nothing to plot" % args.logfile)
    columns = select_columns(train, test, args.y, total)
    series = [s for s in log_series(train, test, columns, args.x, total)
              if any(v == v for v in s["y"])]  # drop columns that are all NaN
    if not series:
        raise CaffeError("the selected columns of %s have no values" % args.logfile)
    try:
        figures.line_plot(series, args.output,
                          title=os.path.basename(args.logfile) if args.title is None
                          else args.title,
                          xlabel="Seconds" if args.x == "seconds" else "Iterations",
                          ylabel=_ylabel(columns), size=args.size, ylog=args.ylog,
                          markers=max(len(s["y"]) for s in series) < 30)
    except ValueError as exc:  # an extension matplotlib does not write
        raise CaffeError(str(exc)) from None
    return 0


def main(argv=None):
    return run(_plot_log_cmd, argv, parser=build_parser())
