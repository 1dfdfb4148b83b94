"""minicaffe.plot: Pillow-only line plots."""
import os

import numpy as np
import pytest
from PIL import Image

from minicaffe import plot
from minicaffe.plot import PALETTE, line_plot, nice_ticks


def _count_near(img, color, box=None, tol=24):
    """Pixels of ``img`` (inside ``box``) within ``tol`` of ``color`` in every channel."""
    a = np.asarray(img.convert("RGB"), dtype=np.int32)
    if box is not None:
        l, t, r, b = (int(round(v)) for v in box)
        a = a[t + 2:b - 1, l + 2:r - 1]
    c = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
    return int(np.count_nonzero(np.all(np.abs(a - c) <= tol, axis=-1)))


def _curves():
    x = np.linspace(0, 1000, 60)
    return [{"label": "train loss", "x": x, "y": 2.3 * np.exp(-x / 300) + 0.1},
            {"label": "test loss", "x": x[::6], "y": 2.0 * np.exp(-x[::6] / 250) + 0.2,
             "style": "--"},
            {"label": "test accuracy", "x": x[::6], "y": 1 - np.exp(-x[::6] / 200)}]


def test_png_has_size_and_every_series_colour(tmp_path):
    path = str(tmp_path / "curves.png")
    info = line_plot(_curves(), path, title="LeNet", xlabel="Iterations", ylabel="loss",
                     legend_loc=None)
    assert info.path == path and os.path.exists(path)
    assert not [f for f in os.listdir(str(tmp_path)) if f.endswith(".tmp")]
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (800, 560)
        im.load()
        for color in PALETTE[:3]:
            assert _count_near(im, color, info.box) > 50, color
        assert _count_near(im, PALETTE[3], info.box) == 0
    assert info.colors == [c.upper() for c in PALETTE[:3]]
    l, t, r, b = info.box
    assert 0 < l < r <= 800 and 0 < t < b <= 560


def test_size_markers_log_scale_and_legend(tmp_path):
    path = str(tmp_path / "pr.png")
    r = np.linspace(0.0, 1.0, 21)
    series = [{"label": "DAH", "x": r, "y": 1 - r ** 3},
              {"label": "ITQ", "x": r, "y": 0.8 * (1 - r ** 2),
               "style": {"color": "#000000", "marker": "s", "linewidth": 3}}]
    info = line_plot(series, path, xlim=(0, 1), ylim=(0.01, 1.1), size=(400, 300),
                     markers=True, ylog=True, legend_loc="lower left")
    with Image.open(path) as im:
        assert im.size == (400, 300)
        assert _count_near(im, "#000000", info.box, tol=10) > 30
        assert _count_near(im, PALETTE[0], info.box) > 30
    assert info.xlim == (0.0, 1.0) and info.ylim == pytest.approx((0.01, 1.1))
    assert info.colors[1] == "#000000"


def test_nan_gaps_are_skipped(tmp_path):
    x = np.arange(40.0)
    y = np.sin(x / 5)
    y[10:20] = np.nan
    x[30] = np.inf
    info = line_plot([{"label": "gappy", "x": x, "y": y}], str(tmp_path / "g.png"),
                     legend_loc=None)
    with Image.open(info.path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.int32)
    # no line drawn over the middle of the gap
    l, t, r, b = (int(v) for v in info.box)
    x0, x1 = info.xlim
    col = int(round(l + (14.5 - x0) / (x1 - x0) * (r - l)))
    c = np.array([0x00, 0x72, 0xB2])
    assert not np.any(np.all(np.abs(a[t + 2:b - 1, col] - c) <= 40, axis=-1))
    assert _count_near(im, PALETTE[0], info.box) > 50


def test_other_formats_and_string_style(tmp_path):
    info = line_plot([{"label": "a", "y": [3, 1, 2]}], str(tmp_path / "a.jpg"),
                     legend_loc="outside", title="t")
    with Image.open(info.path) as im:
        assert im.format == "JPEG"
    img, info = plot.render_line_plot([{"y": [1, 1, 1]}], size=(300, 200))  # flat data
    assert img.size == (300, 200) and info.ylim[0] < 1 < info.ylim[1]


@pytest.mark.parametrize("series,match", [
    ([], "no series"),
    ([{"label": "a", "x": [], "y": []}], "is empty"),
    ([{"label": "a", "x": [1, 2], "y": [np.nan, np.nan]}], "no finite"),
    ([{"label": "a", "x": [1, 2], "y": [1]}], "2 x values but 1 y values"),
    ([{"label": "a", "x": [1, 2], "y": ["a", "b"]}], "must be numbers"),
    ([{"label": "a", "x": [1, 2], "y": [1, 2], "style": "~~"}], "unknown linestyle"),
])
def test_bad_input_raises_value_error(tmp_path, series, match):
    path = tmp_path / "bad.png"
    with pytest.raises(ValueError, match=match):
        line_plot(series, str(path))
    assert not path.exists()


def test_bad_options_raise_value_error(tmp_path):
    s = [{"label": "a", "x": [1, 2], "y": [0, 1]}]
    with pytest.raises(ValueError, match="log scale"):
        line_plot([{"x": [1, 2], "y": [0, -1]}], str(tmp_path / "a.png"), ylog=True)
    with pytest.raises(ValueError, match="empty"):
        line_plot(s, str(tmp_path / "a.png"), xlim=(2, 1))
    with pytest.raises(ValueError, match="legend_loc"):
        line_plot(s, str(tmp_path / "a.png"), legend_loc="somewhere")
    with pytest.raises(ValueError, match="too small"):
        line_plot(s, str(tmp_path / "a.png"), size=(50, 50))


def test_nice_ticks():
    assert nice_ticks(0, 10, 5)[0] == [0, 2, 4, 6, 8, 10]
    ticks, step = nice_ticks(-0.07, 2.74, 6)
    assert step == 0.5 and ticks == [0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert plot._linear_labels([0, 0.25, 0.5], 0.25) == ["0", "0.25", "0.50"]
    major, _ = plot._log_ticks(-3.2, 0.1, 6)
    assert major == [1e-3, 1e-2, 1e-1, 1.0]


def test_clip_polyline_cuts_at_the_border():
    pieces = plot._clip_polyline(np.array([-10.0, 5.0, 20.0]), np.array([5.0, 5.0, 5.0]),
                                 (0, 0, 10, 10))
    assert pieces == [[(0.0, 5.0), (5.0, 5.0), (10.0, 5.0)]]
    pieces = plot._clip_polyline(np.array([2.0, 2.0, 50.0, 3.0]),
                                 np.array([2.0, 3.0, 50.0, 4.0]), (0, 0, 10, 10))
    assert len(pieces) == 2
