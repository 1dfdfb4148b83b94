"""Figures on matplotlib: what every figure shares, and the line plot of the tools' curves
(``tools/plot_log``'s learning curves, ``tools/evaluate``'s and ``tools/reproduce``'s
precision-recall curves; ``minicaffe.dah.figures`` draws the DAH pictures).

    from minicaffe import figures
    fig = figures.line_plot([{"label": "train loss", "x": iters, "y": loss},
                             {"label": "test loss", "x": titers, "y": tloss, "style": "--"}],
                            "loss.png", title="LeNet", xlabel="Iterations", ylabel="loss")

Every figure is a ``matplotlib.figure.Figure`` on its own Agg canvas (no pyplot), so drawing is
headless and never changes the backend a user picked. matplotlib is an optional extra
(``pip install 'minicaffe[plot]'``), imported only when a figure is drawn; without it drawing
raises one CaffeError line saying so. Text is in matplotlib's DejaVu Sans, which has "—" and
"→". Files are written atomically.
"""
import importlib.util
import os

from . import protoio
from .errors import CaffeError

__all__ = ["MISSING", "available", "require", "figure", "save", "line_plot"]

MISSING = "plotting needs matplotlib: pip install 'minicaffe[plot]'"
_DPI = 100


def available():
    """Whether matplotlib is installed (callers that can do without a figure ask first)."""
    return importlib.util.find_spec("matplotlib") is not None


def require(module, message=MISSING):
    """Import an optional extra's ``module``, or raise the one-line CaffeError ``message``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CaffeError(message) from None


def figure(**kw):
    """A Figure on its own Agg canvas: headless, and pyplot's global backend stays as is."""
    require("matplotlib")  # the package first: its submodules may be cached
    fig = require("matplotlib.figure").Figure(**kw)
    require("matplotlib.backends.backend_agg").FigureCanvasAgg(fig)
    return fig


def save(fig, path, dpi="figure"):
    """Write ``fig`` to ``path`` atomically, in the format its extension names (PNG without
    one); a reader never sees half a file. Returns ``path``."""
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1][1:].lower() or "png"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    protoio.atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi), CaffeError)
    return path


def line_plot(series, path, title="", xlabel="", ylabel="", xlim=None, ylim=None,
              size=(800, 560), ylog=False, markers=False):
    """Draw lines into a ``size`` (width, height) pixel image at ``path``; returns the Figure
    (its axes hold one Line2D per series, in order).

    ``series``: dicts ``{"label", "x", "y"}`` with optional ``"style"`` (a matplotlib line
    style: "-", "--", ":", "-."), ``"color"`` and ``"linewidth"``. NaN points break a line (and
    y <= 0 on a log axis). ``xlim``/``ylim``: (low, high). ``markers``: a marker on each point.
    Raises ValueError for no series or x and y of different lengths.
    """
    if not series:
        raise ValueError("line_plot: no series")
    fig = figure(figsize=(size[0] / _DPI, size[1] / _DPI), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    for s in series:
        ax.plot(s["x"], s["y"], linestyle=s.get("style", "-"), color=s.get("color"),
                linewidth=s.get("linewidth", 1.6), marker="o" if markers else None,
                markersize=3.5, label=s["label"])
    if ylog:
        ax.set_yscale("log")
    if xlim is not None:
        ax.set_xlim(*xlim)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, color="0.9", linewidth=0.6)
    ax.legend(loc="best", fontsize="small")
    save(fig, path)
    return fig
