"""minicaffe.figures: the line plot on matplotlib (learning and precision-recall curves) and
the plumbing every figure shares."""
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from minicaffe import figures
from minicaffe.errors import CaffeError


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib", reason="the figures need matplotlib "
                                                    "(pip install 'minicaffe[plot]')")


def _curves():
    x = np.linspace(0, 1000, 60)
    return [{"label": "train loss", "x": x, "y": 2.3 * np.exp(-x / 300) + 0.1},
            {"label": "test loss", "x": x[::6], "y": 2.0 * np.exp(-x[::6] / 250) + 0.2,
             "style": "--"},
            {"label": "total loss", "x": x, "y": 2.4 * np.exp(-x / 300), "color": "black",
             "linewidth": 2.2}]


def test_png_of_the_requested_size_with_every_curve(mpl, tmp_path):
    path = tmp_path / "curves.png"
    fig = figures.line_plot(_curves(), str(path), title="LeNet", xlabel="Iterations",
                            ylabel="loss", size=(640, 480))
    with Image.open(str(path)) as im:
        assert im.format == "PNG" and im.size == (640, 480)
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]
    ax, = fig.axes
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["train loss", "test loss", "total loss"]
    for ln, s in zip(lines, _curves()):
        np.testing.assert_allclose(ln.get_xydata(), np.column_stack([s["x"], s["y"]]))
    assert [ln.get_linestyle() for ln in lines] == ["-", "--", "-"]
    assert lines[2].get_color() == "black" and lines[2].get_linewidth() == 2.2
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("LeNet", "Iterations", "loss")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == \
        ["train loss", "test loss", "total loss"]
    # the canvas holds the curves: pixels of each line's colour inside the axes
    rgba = np.asarray(fig.canvas.buffer_rgba())
    assert rgba.shape[:2] == (480, 640)
    x0, y0, x1, y1 = (int(v) for v in ax.get_window_extent().extents)
    inside = rgba[480 - y1:480 - y0, x0:x1, :3].astype(int)
    for ln in lines:
        color = np.array(mpl.colors.to_rgb(ln.get_color())) * 255
        assert np.count_nonzero(np.abs(inside - color).max(axis=-1) < 30) > 50, ln.get_label()


def test_pr_curve_limits_markers_log_axis_and_gaps(mpl, tmp_path):
    r = np.linspace(0.0, 1.0, 9)
    p = 1 - r ** 3
    p[4] = np.nan                     # a radius that retrieved nothing: a gap in the line
    fig = figures.line_plot([{"label": "DAH", "x": r, "y": p}], str(tmp_path / "pr.svg"),
                            xlim=(0, 1), ylim=(0.01, 1.1), markers=True, ylog=True)
    ax, = fig.axes
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == pytest.approx((0.01, 1.1))
    assert ax.get_yscale() == "log" and ax.get_lines()[0].get_marker() == "o"
    assert np.isnan(ax.get_lines()[0].get_ydata()[4])
    assert (tmp_path / "pr.svg").read_text().lstrip().startswith("<?xml")


def test_title_glyphs_are_in_the_font(mpl, tmp_path):
    # the old Pillow plots drew "—" and "→" as boxes; matplotlib warns for a missing glyph
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = figures.line_plot([{"label": "Ar→Cl", "x": [0, 1], "y": [1, 0]}],
                                str(tmp_path / "t.png"),
                                title="Clipart, 64 bits (source Art) — within-target PR")
    assert fig.axes[0].get_title().count("—") == 1


def test_bad_input_writes_nothing(mpl, tmp_path):
    with pytest.raises(ValueError, match="no series"):
        figures.line_plot([], str(tmp_path / "a.png"))
    with pytest.raises(ValueError):
        figures.line_plot([{"label": "a", "x": [1, 2], "y": [1]}], str(tmp_path / "a.png"))
    assert not list(tmp_path.iterdir())


def test_missing_matplotlib_is_one_line_caffe_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # as if it were not installed
    assert not figures.available()
    with pytest.raises(CaffeError) as err:
        figures.line_plot(_curves(), str(tmp_path / "a.png"))
    assert str(err.value) == "plotting needs matplotlib: pip install 'minicaffe[plot]'"
    assert not list(tmp_path.iterdir())
