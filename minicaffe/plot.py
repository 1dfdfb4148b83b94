"""Line plots on Pillow alone: learning curves (``tools/plot_log``) and precision-recall curves.

    from minicaffe.plot import line_plot
    line_plot([{"label": "train loss", "x": iters, "y": loss},
               {"label": "test loss", "x": titers, "y": tloss, "style": "--"}],
              "loss.png", title="LeNet", xlabel="Iterations", ylabel="loss", ylog=True)

Everything is drawn at twice the size and shrunk with a Lanczos filter, which anti-aliases
lines and text. Colours come from the Okabe-Ito palette (safe for colour-blind readers);
ticks are "nice" numbers (1, 2, 2.5, 5 x 10^k, or decades on a log axis); NaN or infinite
points (and y <= 0 on a log axis) leave gaps in the line. The file is written atomically.
"""
import math
import os
import tempfile
from collections import namedtuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["PALETTE", "MARKERS", "PlotInfo", "line_plot", "render_line_plot", "nice_ticks"]

#: Okabe & Ito's colour-blind-safe palette (yellow last: it is faint on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
           "#F0E442")
#: Marker shapes cycled per series when ``markers=True``.
MARKERS = ("o", "s", "^", "D", "v", "x")
_DASHES = {"-": None, "solid": None, "--": (3.0, 1.6), "dashed": (3.0, 1.6),
           ":": (0.6, 1.4), "dotted": (0.6, 1.4), "-.": (3.0, 1.4, 0.6, 1.4),
           "dashdot": (3.0, 1.4, 0.6, 1.4)}  # in multiples of the line width
_LEGEND_LOCS = ("best", "upper right", "upper left", "lower left", "lower right",
                "center right", "center left", "upper center", "lower center", "center",
                "outside")

_S = 2  # supersampling factor
_INK = (51, 51, 51, 255)
_FRAME = (68, 68, 68, 255)
_GRID = (228, 228, 228, 255)
_MINOR_GRID = (243, 243, 243, 255)

#: What ``line_plot`` returns: the file, the plot area in pixels (left, top, right, bottom),
#: the axis limits in data units, and the colour of each series as "#RRGGBB".
PlotInfo = namedtuple("PlotInfo", "path box xlim ylim colors")

_LANCZOS = getattr(getattr(Image, "Resampling", Image), "LANCZOS")
_BICUBIC = getattr(getattr(Image, "Resampling", Image), "BICUBIC")


# ---------------------------------------------------------------------------- text

class _Font:
    """Pillow's default font at ``px`` final pixels (drawn at _S times that). Pillow >= 10.1
    with FreeType scales it; older versions get the bitmap font, enlarged."""

    _cache = {}

    def __new__(cls, px):
        if px not in cls._cache:
            self = super().__new__(cls)
            self.scale = 1
            try:
                self.font = ImageFont.load_default(size=px * _S)
            except (TypeError, OSError):
                self.font = None
            if not isinstance(self.font, getattr(ImageFont, "FreeTypeFont", ())):
                self.font = ImageFont.load_default()
                self.scale = max(1, round(px * _S / 11.0))
            cls._cache[px] = self
        return cls._cache[px]

    def render(self, text, color):
        """An RGBA image of ``text`` (one line) in ``color``; its height is the line height."""
        text = str(text)
        if hasattr(self.font, "getmetrics"):
            ascent, descent = self.font.getmetrics()
        else:
            ascent, descent = 11, 0
        if not text:
            x0 = x1 = 0
        elif hasattr(self.font, "getbbox"):
            x0, _, x1, _ = self.font.getbbox(text)
        else:  # Pillow < 9.2
            x0, x1 = 0, self.font.getsize(text)[0]
        x0 = min(x0, 0)
        w, h = max(1, x1 - x0), max(1, ascent + descent)
        mask = Image.new("L", (w, h), 0)
        ImageDraw.Draw(mask).text((-x0, 0), text, font=self.font, fill=255)
        if self.scale > 1:
            mask = mask.resize((w * self.scale, h * self.scale), _BICUBIC)
        img = Image.new("RGBA", mask.size, _rgba(color))
        img.putalpha(mask)
        return img

    def size(self, text):
        return self.render(text, (0, 0, 0)).size


def _rgba(color, alpha=255):
    if isinstance(color, str):
        c = color.lstrip("#")
        if len(c) == 3:
            c = "".join(ch * 2 for ch in c)
        if len(c) != 6:
            raise ValueError("colour %r is not #RRGGBB" % color)
        return (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), alpha)
    c = tuple(int(v) for v in color)
    return c + (alpha,) if len(c) == 3 else c


def _hex(color):
    r, g, b = _rgba(color)[:3]
    return "#%02X%02X%02X" % (r, g, b)


def _paste(base, img, x, y):
    """Alpha-composite ``img`` onto ``base`` with its top-left corner at (x, y), clipped."""
    x, y = int(round(x)), int(round(y))
    left, top = max(0, -x), max(0, -y)
    right, bottom = min(img.width, base.width - x), min(img.height, base.height - y)
    if right > left and bottom > top:
        base.alpha_composite(img.crop((left, top, right, bottom)), (x + left, y + top))


# ---------------------------------------------------------------------------- ticks

def nice_ticks(lo, hi, target=6):
    """Tick positions at 1, 2, 2.5 or 5 x 10^k covering [lo, hi] with about ``target`` ticks."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise ValueError("nice_ticks needs finite lo < hi, got %r, %r" % (lo, hi))
    raw = (hi - lo) / max(1, target)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    ticks = [k * step for k in range(first, last + 1)]
    return [0.0 if abs(t) < step * 1e-9 else t for t in ticks], step


def _linear_labels(ticks, step):
    big = max(abs(t) for t in ticks) if ticks else 0.0
    if big >= 1e6 or (0 < big < 1e-4):
        digits = max(1, int(math.ceil(math.log10(big / step))) + 1)
        return [_short_e("%.*e" % (digits - 1, t)) for t in ticks]
    decimals = 0
    while decimals < 10 and abs(step * 10 ** decimals - round(step * 10 ** decimals)) > 1e-6:
        decimals += 1
    return ["%.*f" % (decimals, t) if t != 0 else "0" for t in ticks]


def _short_e(s):
    mant, _, exp = s.partition("e")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    return "%se%d" % (mant, int(exp))


def _log_label(v):
    if 1e-4 <= v < 1e6:
        return "%g" % v
    return _short_e("%e" % v)


def _log_ticks(lo, hi, target):
    """Major ticks (values) and minor grid values for a log10 axis spanning [lo, hi] (log10
    units)."""
    k0, k1 = math.ceil(lo - 1e-9), math.floor(hi + 1e-9)
    decades = list(range(k0, k1 + 1))
    minor = []
    if len(decades) >= 3:
        stride = max(1, int(math.ceil(len(decades) / float(target))))
        major = [10.0 ** k for k in decades if (k - k0) % stride == 0]
        if stride == 1 and len(decades) <= 8:
            minor = [m * 10.0 ** k for k in range(k0 - 1, k1 + 1) for m in range(2, 10)
                     if lo <= math.log10(m * 10.0 ** k) <= hi]
        return major, minor
    for mults in ((1, 2, 5), (1, 2, 3, 5, 7), tuple(range(1, 10))):
        major = [m * 10.0 ** k for k in range(k0 - 1, k1 + 1) for m in mults
                 if lo - 1e-9 <= math.log10(m * 10.0 ** k) <= hi + 1e-9]
        if len(major) >= 3:
            return major, minor
    ticks, _ = nice_ticks(10 ** lo, 10 ** hi, target)
    return [t for t in ticks if t > 0], minor


# ---------------------------------------------------------------------------- geometry

def _clip_polyline(px, py, box):
    """Split the polyline (px, py) into the pieces that lie inside ``box`` = (x0, y0, x1, y1),
    cutting segments at the border (Liang-Barsky). Returns a list of lists of (x, y)."""
    x0, y0, x1, y1 = box
    inside = (px >= x0) & (px <= x1) & (py >= y0) & (py <= y1)
    if inside.all():
        return [list(zip(px.tolist(), py.tolist()))]
    ax, ay, bx, by = px[:-1], py[:-1], px[1:], py[1:]
    dx, dy = bx - ax, by - ay
    t0 = np.zeros(len(ax))
    t1 = np.ones(len(ax))
    ok = np.ones(len(ax), bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for p, q in ((-dx, ax - x0), (dx, x1 - ax), (-dy, ay - y0), (dy, y1 - ay)):
            parallel = p == 0
            ok &= ~(parallel & (q < 0))
            r = q / p
            t0 = np.where(~parallel & (p < 0), np.maximum(t0, r), t0)
            t1 = np.where(~parallel & (p > 0), np.minimum(t1, r), t1)
    ok &= t0 <= t1
    pieces, cur, prev_end_clipped, cur_last = [], None, True, -2
    for i in np.flatnonzero(ok) if len(ax) else []:
        start = (ax[i] + t0[i] * dx[i], ay[i] + t0[i] * dy[i])
        end = (ax[i] + t1[i] * dx[i], ay[i] + t1[i] * dy[i])
        if cur is not None and t0[i] == 0 and not prev_end_clipped and cur_last == i - 1:
            cur.append(end)
        else:
            cur = [start, end]
            pieces.append(cur)
        cur_last, prev_end_clipped = i, t1[i] < 1
    if len(px) == 1 and inside[0]:
        pieces.append([(px[0], py[0])])
    return pieces


def _dash(points, pattern):
    """Cut a polyline into the 'on' pieces of a dash ``pattern`` (lengths on, off, on, ...)."""
    pieces, cur = [], [points[0]]
    k, left, on = 0, pattern[0], True
    for (xa, ya), (xb, yb) in zip(points[:-1], points[1:]):
        seg = math.hypot(xb - xa, yb - ya)
        pos = 0.0
        while seg - pos > left:
            pos += left
            t = pos / seg
            pt = (xa + t * (xb - xa), ya + t * (yb - ya))
            if on:
                cur.append(pt)
                pieces.append(cur)
            else:
                cur = [pt]
            on = not on
            k = (k + 1) % len(pattern)
            left = pattern[k]
        left -= seg - pos
        if on:
            cur.append((xb, yb))
    if on and len(cur) > 1:
        pieces.append(cur)
    return pieces


def _draw_marker(draw, shape, x, y, r, color, edge):
    if shape == "x":
        w = max(2, int(r / 2))
        draw.line([(x - r, y - r), (x + r, y + r)], fill=color, width=w)
        draw.line([(x - r, y + r), (x + r, y - r)], fill=color, width=w)
        return
    if shape == "o":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color, outline=edge, width=_S)
        return
    if shape == "s":
        r *= 0.9
        pts = [(x - r, y - r), (x + r, y - r), (x + r, y + r), (x - r, y + r)]
    elif shape == "D":
        pts = [(x, y - r * 1.2), (x + r, y), (x, y + r * 1.2), (x - r, y)]
    elif shape == "v":
        pts = [(x - r, y - r * 0.8), (x + r, y - r * 0.8), (x, y + r)]
    else:  # "^"
        pts = [(x - r, y + r * 0.8), (x + r, y + r * 0.8), (x, y - r)]
    draw.polygon(pts, fill=color, outline=edge)


# ---------------------------------------------------------------------------- input

def _style(s, index, markers):
    style = s.get("style") or {}
    if isinstance(style, str):
        style = {"linestyle": style}
    color = style.get("color", s.get("color", PALETTE[index % len(PALETTE)]))
    dash = style.get("linestyle", style.get("dash", "-"))
    if isinstance(dash, str):
        if dash not in _DASHES:
            raise ValueError("unknown linestyle %r (use one of %s)"
                             % (dash, ", ".join(repr(k) for k in _DASHES)))
        dash = _DASHES[dash]
    marker = style.get("marker", MARKERS[index % len(MARKERS)] if markers else None)
    if marker is not None and marker not in MARKERS:
        raise ValueError("unknown marker %r (use one of %s)" % (marker, ", ".join(MARKERS)))
    width = float(style.get("linewidth", style.get("width", 2.0)))
    return {"color": _rgba(color), "dash": dash, "marker": marker, "width": width}


def _series_arrays(series, ylog):
    if isinstance(series, dict):
        series = [series]
    if not series:
        raise ValueError("line_plot: no series given (an empty list)")
    out = []
    for i, s in enumerate(series):
        if not isinstance(s, dict) or "y" not in s:
            raise ValueError("line_plot: series %d must be a dict with 'y' (and 'x', 'label')"
                             % i)
        name = "series %d%s" % (i, " (%r)" % s["label"] if s.get("label") else "")
        try:
            y = np.asarray(s["y"], dtype=np.float64).ravel()
            x = (np.arange(len(y), dtype=np.float64) if s.get("x") is None
                 else np.asarray(s["x"], dtype=np.float64).ravel())
        except (TypeError, ValueError) as exc:
            raise ValueError("line_plot: %s: x and y must be numbers (%s)" % (name, exc)) from None
        if len(x) != len(y):
            raise ValueError("line_plot: %s has %d x values but %d y values"
                             % (name, len(x), len(y)))
        if len(y) == 0:
            raise ValueError("line_plot: %s is empty" % name)
        if ylog:
            y = np.where(y > 0, y, np.nan)
            with np.errstate(divide="ignore", invalid="ignore"):
                y = np.log10(y)
        good = np.isfinite(x) & np.isfinite(y)
        if not good.any():
            raise ValueError("line_plot: %s has no finite (x, y) point%s" % (
                name, " with y > 0 for the log scale" if ylog else " (all NaN or inf)"))
        out.append((s, x, np.where(good, y, np.nan), good))
    return out


def _limits(lim, values, pad, log, axis):
    lo_auto, hi_auto = float(np.min(values)), float(np.max(values))
    if lo_auto == hi_auto:
        d = 0.5 if log or lo_auto == 0 else abs(lo_auto) * 0.1
        lo_auto, hi_auto = lo_auto - d, hi_auto + d
    else:
        d = (hi_auto - lo_auto) * pad
        lo_auto, hi_auto = lo_auto - d, hi_auto + d
    lo, hi = (None, None) if lim is None else lim
    for v in (lo, hi):
        if v is not None and (not np.isfinite(v) or (log and v <= 0)):
            raise ValueError("line_plot: %slim %r must be finite%s"
                             % (axis, tuple(lim), " and > 0 for a log axis" if log else ""))
    lo = lo_auto if lo is None else (math.log10(lo) if log else float(lo))
    hi = hi_auto if hi is None else (math.log10(hi) if log else float(hi))
    if lo >= hi:
        raise ValueError("line_plot: %slim %r is empty (need low < high)" % (axis, lim))
    return lo, hi


# ---------------------------------------------------------------------------- the plot

def render_line_plot(series, title="", xlabel="", ylabel="", xlim=None, ylim=None,
                     size=(800, 560), legend_loc="best", markers=False, ylog=False):
    """The plot of ``line_plot`` as an RGB ``PIL.Image`` plus its ``PlotInfo`` (path None)."""
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError("line_plot: size must be (width, height), got %r" % (size,)) from None
    if width < 160 or height < 120:
        raise ValueError("line_plot: size %r is too small (at least 160 x 120)" % (size,))
    if legend_loc is not None and legend_loc not in _LEGEND_LOCS + ("none",):
        raise ValueError("line_plot: legend_loc %r is not one of %s or None"
                         % (legend_loc, ", ".join(_LEGEND_LOCS)))
    data = _series_arrays(series, ylog)
    styles = [_style(s, i, markers) for i, (s, _, _, _) in enumerate(data)]
    xs = np.concatenate([x[g] for _, x, _, g in data])
    ys = np.concatenate([y[g] for _, _, y, g in data])
    x_lo, x_hi = _limits(xlim, xs, 0.02, False, "x")
    y_lo, y_hi = _limits(ylim, ys, 0.05, ylog, "y")

    W, H = width * _S, height * _S
    f_title, f_label, f_tick, f_legend = _Font(15), _Font(13), _Font(11), _Font(12)
    pad, gap, tick_len = 12 * _S, 6 * _S, 4 * _S
    img = Image.new("RGBA", (W, H), (255, 255, 255, 255))
    draw = ImageDraw.Draw(img)

    entries = [(str(s["label"]), st) for (s, _, _, _), st in zip(data, styles) if s.get("label")]
    show_legend = bool(entries) and legend_loc not in (None, "none")
    legend_img = _legend(entries, f_legend, markers) if show_legend else None

    title_img = f_title.render(title, _INK) if title else None
    xlabel_img = f_label.render(xlabel, _INK) if xlabel else None
    ylabel_img = f_label.render(ylabel, _INK).rotate(90, expand=True) if ylabel else None
    tick_h = f_tick.size("0")[1]

    top = pad + (title_img.height + gap * 2 if title_img else tick_h // 2)
    bottom = H - pad - tick_h - tick_len - gap // 2 - (xlabel_img.height + gap if xlabel_img
                                                       else 0)
    # y ticks first (their labels' width sets the left margin), then x ticks.
    y_target = max(3, min(10, (bottom - top) // (55 * _S)))
    if ylog:
        y_major, y_minor = _log_ticks(y_lo, y_hi, y_target)
        y_labels = [_log_label(v) for v in y_major]
        y_major = [math.log10(v) for v in y_major]
        y_minor = [math.log10(v) for v in y_minor]
    else:
        y_major, step = nice_ticks(y_lo, y_hi, y_target)
        y_labels, y_minor = _linear_labels(y_major, step), []
    y_label_imgs = [f_tick.render(t, _INK) for t in y_labels]
    label_w = max([im.width for im in y_label_imgs] + [0])
    left = pad + (ylabel_img.width + gap if ylabel_img else 0) + label_w + tick_len + gap // 2
    right = W - pad
    if legend_img is not None and legend_loc == "outside":
        right -= legend_img.width + gap * 2
    x_target = max(3, min(10, (right - left) // (90 * _S)))
    x_major, step = nice_ticks(x_lo, x_hi, x_target)
    x_labels = _linear_labels(x_major, step)
    x_label_imgs = [f_tick.render(t, _INK) for t in x_labels]
    if x_label_imgs and legend_loc != "outside":
        last_x = left + (x_major[-1] - x_lo) / (x_hi - x_lo) * (right - left)
        overflow = last_x + x_label_imgs[-1].width / 2 - (W - pad // 2)
        right -= max(0, int(overflow))
    pw, ph = right - left, bottom - top
    if pw < 40 * _S or ph < 40 * _S:
        raise ValueError("line_plot: size %r leaves no room for the plot area" % (size,))

    def to_px(x, y):
        return ((x - x_lo) / (x_hi - x_lo) * pw, (1.0 - (y - y_lo) / (y_hi - y_lo)) * ph)

    # grid, frame, ticks and their labels
    for v in y_minor:
        yy = top + to_px(x_lo, v)[1]
        draw.line([(left, yy), (right, yy)], fill=_MINOR_GRID, width=_S)
    for v, lab in zip(y_major, y_label_imgs):
        yy = top + to_px(x_lo, v)[1]
        draw.line([(left, yy), (right, yy)], fill=_GRID, width=_S)
        draw.line([(left - tick_len, yy), (left, yy)], fill=_FRAME, width=_S)
        _paste(img, lab, left - tick_len - gap // 2 - lab.width, yy - lab.height / 2)
    for v, lab in zip(x_major, x_label_imgs):
        xx = left + to_px(v, y_lo)[0]
        draw.line([(xx, top), (xx, bottom)], fill=_GRID, width=_S)
        draw.line([(xx, bottom), (xx, bottom + tick_len)], fill=_FRAME, width=_S)
        _paste(img, lab, xx - lab.width / 2, bottom + tick_len + gap // 2)
    if title_img:
        _paste(img, title_img, (left + right) / 2 - title_img.width / 2, pad)
    if xlabel_img:
        _paste(img, xlabel_img, (left + right) / 2 - xlabel_img.width / 2,
               bottom + tick_len + gap // 2 + tick_h + gap)
    if ylabel_img:
        _paste(img, ylabel_img, pad, (top + bottom) / 2 - ylabel_img.height / 2)

    # the data, on a layer the size of the plot area (so it clips there)
    layer = Image.new("RGBA", (pw + 1, ph + 1), (0, 0, 0, 0))
    ldraw = ImageDraw.Draw(layer)
    samples = []  # points along the lines, for legend_loc="best"
    for (s, x, y, good), st in zip(data, styles):
        lw = max(1, int(round(st["width"] * _S)))
        px, py = to_px(x, y)
        margin = 2 * lw
        box = (-margin, -margin, pw + margin, ph + margin)
        idx = np.flatnonzero(good)
        runs = np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1)
        for run in runs:
            for piece in _clip_polyline(px[run], py[run], box):
                if len(piece) == 1:
                    (cx, cy), r = piece[0], lw / 2.0 + 1
                    if st["marker"] is None:
                        ldraw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=st["color"])
                    continue
                segs = [piece] if st["dash"] is None else \
                    _dash(piece, [d * lw for d in st["dash"]])
                for seg in segs:
                    ldraw.line(seg, fill=st["color"], width=lw, joint="curve")
                samples.append(_resample(piece, 3 * _S))
        if st["marker"] is not None:
            every = idx if len(idx) <= 30 else \
                idx[np.unique(np.round(np.linspace(0, len(idx) - 1, 20)).astype(int))]
            r = 3.5 * _S * max(1.0, st["width"] / 2.0)
            for i in every:
                if -r <= px[i] <= pw + r and -r <= py[i] <= ph + r:
                    _draw_marker(ldraw, st["marker"], px[i], py[i], r, st["color"],
                                 (255, 255, 255, 255))
            samples.append(np.stack([px[every], py[every]], axis=1))
    img.alpha_composite(layer, (left, top))
    draw.rectangle([left, top, right, bottom], outline=_FRAME, width=_S)

    if legend_img is not None:
        lx, ly = _legend_position(legend_loc, legend_img.size, (left, top, right, bottom), gap,
                                  samples)
        _paste(img, legend_img, lx, ly)

    out = img.convert("RGB").resize((width, height), _LANCZOS)
    unlog = (lambda v: 10.0 ** v) if ylog else (lambda v: v)
    info = PlotInfo(None, (left / _S, top / _S, right / _S, bottom / _S), (x_lo, x_hi),
                    (unlog(y_lo), unlog(y_hi)), [_hex(st["color"]) for st in styles])
    return out, info


def _resample(piece, step):
    """Points every ``step`` pixels along a polyline (at most 64 per segment)."""
    p = np.asarray(piece, dtype=np.float64)
    seg = np.hypot(*(p[1:] - p[:-1]).T)
    n = np.minimum(64, np.maximum(1, np.ceil(seg / step))).astype(int)
    t = np.concatenate([np.arange(k) / k for k in n])
    a = np.repeat(p[:-1], n, axis=0)
    b = np.repeat(p[1:], n, axis=0)
    return np.concatenate([a + (b - a) * t[:, None], p[-1:]])


def _legend(entries, font, markers):
    sample_w, pad, gap = 26 * _S, 7 * _S, 6 * _S
    rows = [font.render(label, _INK) for label, _ in entries]
    row_h = max(r.height for r in rows) + 2 * _S
    w = pad * 2 + sample_w + gap + max(r.width for r in rows)
    h = pad * 2 + row_h * len(rows)
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    box = [0, 0, w - 1, h - 1]
    if hasattr(d, "rounded_rectangle"):
        d.rounded_rectangle(box, radius=3 * _S, fill=(255, 255, 255, 235),
                            outline=(204, 204, 204, 255), width=_S)
    else:
        d.rectangle(box, fill=(255, 255, 255, 235), outline=(204, 204, 204, 255), width=_S)
    for k, ((_, st), row) in enumerate(zip(entries, rows)):
        yc = pad + k * row_h + row_h / 2.0
        lw = max(1, int(round(st["width"] * _S)))
        line = [(pad, yc), (pad + sample_w, yc)]
        segs = [line] if st["dash"] is None else _dash(line, [v * lw for v in st["dash"]])
        for seg in segs:
            d.line(seg, fill=st["color"], width=lw)
        if st["marker"] is not None:
            _draw_marker(d, st["marker"], pad + sample_w / 2.0, yc,
                         3.5 * _S * max(1.0, st["width"] / 2.0), st["color"],
                         (255, 255, 255, 255))
        _paste(img, row, pad + sample_w + gap, yc - row.height / 2.0)
    return img


def _legend_position(loc, size, box, gap, samples):
    left, top, right, bottom = box
    w, h = size
    if loc == "outside":
        return right + gap * 2, top
    xs = {"left": left + gap, "center": (left + right - w) / 2.0, "right": right - gap - w}
    ys = {"upper": top + gap, "center": (top + bottom - h) / 2.0, "lower": bottom - gap - h}
    order = ("upper right", "upper left", "lower left", "lower right", "center right",
             "center left", "upper center", "lower center", "center")
    if loc != "best":
        order = (loc,)

    def corner(name):
        v, _, hpos = name.partition(" ")
        return (xs[hpos or "center"], ys[v if hpos else "center"])

    if len(order) == 1:
        return corner(order[0])
    pts = np.concatenate(samples) if samples else np.zeros((0, 2))
    pts = pts + (left, top)
    best, best_n = None, None
    for name in order:
        x, y = corner(name)
        n = int(np.count_nonzero((pts[:, 0] >= x - gap) & (pts[:, 0] <= x + w + gap) &
                                 (pts[:, 1] >= y - gap) & (pts[:, 1] <= y + h + gap)))
        if best_n is None or n < best_n:
            best, best_n = (x, y), n
        if n == 0:
            break
    return best


def _save_atomic(image, path):
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(ext, "PNG")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format=fmt)
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def line_plot(series, path, title="", xlabel="", ylabel="", xlim=None, ylim=None,
              size=(800, 560), legend_loc="best", markers=False, ylog=False):
    """Draw lines and write them to ``path`` (PNG unless the extension names another format
    Pillow writes), atomically. Returns a ``PlotInfo``.

    ``series``: a list of dicts ``{"label": str, "x": [...], "y": [...]}`` (x defaults to
    0, 1, 2, ...; a series without a label stays out of the legend) with an optional
    ``"style"``: a line style string ("-", "--", ":", "-.") or a dict with ``color``
    ("#RRGGBB"), ``linestyle``, ``linewidth`` (pixels, default 2) and ``marker``
    (one of MARKERS). NaN/inf points (and y <= 0 when ``ylog``) break the line.
    ``xlim``/``ylim``: (low, high), either may be None for automatic (the data range plus a
    small margin). ``legend_loc``: "best" (the corner the lines cross least), "upper right",
    "upper left", "lower left", "lower right", "center right", "center left", "upper center",
    "lower center", "center", "outside" (right of the plot) or None. ``markers``: a marker
    per series (on every point up to 30 points, else on 20 spread along the line).

    Raises ValueError for no series, a series without finite points, x/y of different
    lengths, empty limits or an unknown style.
    """
    image, info = render_line_plot(series, title=title, xlabel=xlabel, ylabel=ylabel,
                                   xlim=xlim, ylim=ylim, size=size, legend_loc=legend_loc,
                                   markers=markers, ylog=ylog)
    _save_atomic(image, path)
    return info._replace(path=os.fspath(path))
