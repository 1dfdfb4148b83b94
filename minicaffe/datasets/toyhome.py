"""ToyHome: a small, deterministic, procedurally drawn stand-in for Office-Home.

The same twelve kinds of object, drawn in four domain styles named and laid out as
Office-Home's, so that every tool and prototxt written for Office-Home runs on it unchanged:

    <root>/<Domain>/<Class>/<NNNNN>.png        NNNNN = 00001, 00002, ... (1-based, 5 digits)

Domains (Office-Home's names, "Real World" with its space), each with its own look, colour
statistics, framing and drawing conventions:

- ``Art``: paintings (a canvas or paper texture washed in one colour, the object in muted earth
  colours under wobbly inked outlines, the whole picture repainted with short brush strokes)
  and, one time in three, pencil sketches (doubled wobbly contours, hatching). Smallish objects
  (0.55-0.8 of the frame), tilted, distorted.
- ``Clipart``: flat colour. Saturated fills, a thick black silhouette with thin inner lines,
  heavy line weight, small details left out; on white, a pastel disc or square, or a pastel
  ground. Centred, upright, chunky proportions.
- ``Product``: catalogue photos. Neutral or desaturated material colours shaded by a lit
  cylinder gradient with a highlight, a soft drop shadow; large (0.84-0.96), centred, upright,
  on white.
- ``Real World``: photos. A wall and a table top with blurred clutter, the object shaded from a
  random direction, large and sometimes cropped (0.75-1.0), shifted, tilted, seen from other
  viewpoints (aspect and shear), sometimes occluded; then a colour cast, exposure and gamma
  changes, blur and sensor noise.

Classes (Office-Home names; sorted, so the label of a class is its index here): Alarm_Clock,
Bike, Bottle, Chair, Desk_Lamp, Flowers, Glasses, Hammer, Mug, Scissors, Table, Trash_Can. Each
instance draws its own proportions, optional parts, colours, mirror image and pose.

The gap is measured (tests/test_datasets.py::test_domain_gap) with multinomial logistic
regression on 16x16 pixels plus a HOG of 32x32. On the default set (60 per class, 64x64), trained
on half of a domain and tested on the other half of the target: within a domain Art 0.58,
Clipart 0.95, Product 0.99, Real World 0.61; across domains 0.11-0.92, every pair at least
7 points below its target-supervised accuracy (closest: Clipart -> Product 0.92 vs 0.99).

Every image has its own generator ``numpy.random.default_rng([seed, domain, class, index])``,
so an image does not depend on how many others are made, and the same seed gives the same
bytes. ``generate`` writes into a temporary directory beside ``root``, writes the manifest
``toyhome.json`` last and renames the directory into place: a root with a manifest is complete.
``ensure`` returns a cached root, generating it first when it is missing or was made with other
parameters. The default root is ``$MINICAFFE_DATA/toyhome-v1`` (``~/.cache/minicaffe`` when
the variable is unset); non-default parameters get their own folder beside it.
"""
import colorsys
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections import namedtuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import CaffeError

__all__ = ["NAME", "VERSION", "DOMAINS", "CLASSES", "THINGS", "MANIFEST", "DEFAULT_SEED",
           "DEFAULT_PER_CLASS", "DEFAULT_SIZE", "default_root", "render", "render_parts",
           "thing_shape", "generate",
           "read_manifest", "ensure"]

log = logging.getLogger("minicaffe")

NAME = "ToyHome"
VERSION = 1
DOMAINS = ("Art", "Clipart", "Product", "Real World")
MANIFEST = "toyhome.json"
DEFAULT_SEED = 0
DEFAULT_PER_CLASS = 60
DEFAULT_SIZE = 64
_SS = 2  # drawn at _SS times the size, then box-downsampled (anti-aliasing)

# --- geometry: every object is a list of parts in unit coordinates (x right, y down, |x|,|y| < 1)

Part = namedtuple("Part", "kind pts width role")  # kind "fill" (polygon) or "line" (polyline)


def _u(rng, a, b):
    return float(rng.uniform(a, b))


def _ellipse(cx, cy, rx, ry, a0=0.0, a1=2 * math.pi, n=28):
    t = np.linspace(a0, a1, n, endpoint=(a1 - a0) < 2 * math.pi - 1e-9)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def _rrect(x0, y0, x1, y1, r):
    r = min(r, (x1 - x0) / 2, (y1 - y0) / 2)
    arcs = [(x1 - r, y0 + r, -math.pi / 2), (x1 - r, y1 - r, 0.0),
            (x0 + r, y1 - r, math.pi / 2), (x0 + r, y0 + r, math.pi)]
    return np.concatenate([_ellipse(cx, cy, r, r, a, a + math.pi / 2, 6) for cx, cy, a in arcs])


def _rotate(pts, angle, cx=0.0, cy=0.0):
    c, s = math.cos(angle), math.sin(angle)
    p = np.asarray(pts, float) - (cx, cy)
    return np.stack([c * p[:, 0] - s * p[:, 1], s * p[:, 0] + c * p[:, 1]], 1) + (cx, cy)


def _bar(p, q, w):
    """A bar of width ``w`` from point p to point q, as a polygon."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    d = q - p
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-12) * w / 2
    return np.array([p + n, q + n, q - n, p - n])


def fill(pts, role):
    return Part("fill", np.asarray(pts, float), 0.0, role)


def line(pts, width, role, closed=False):
    pts = np.asarray(pts, float)
    if closed:
        pts = np.concatenate([pts, pts[:1]])
    return Part("line", pts, float(width), role)


def _alarm_clock(rng):
    r, cy = _u(rng, 0.5, 0.6), _u(rng, 0.0, 0.12)
    parts = []
    if rng.random() < 0.8:  # two bells and a knob
        spread = _u(rng, 0.55, 0.8)
        for sgn in (-1, 1):
            a = -math.pi / 2 + sgn * spread
            bx, by = 1.02 * r * math.cos(a), cy + 1.02 * r * math.sin(a)
            dome = _ellipse(0, 0, 0.28 * r, 0.24 * r, math.pi, 2 * math.pi, 12)
            parts.append(fill(_rotate(dome, a + math.pi / 2) + (bx, by), "accent"))
        parts.append(line([(0, cy - r), (0, cy - r - 0.12)], 0.06, "dark"))
    for sgn in (-1, 1):  # legs
        a = math.pi / 2 + sgn * _u(rng, 0.5, 0.75)
        x0, y0 = r * math.cos(a), cy + r * math.sin(a)
        parts.append(line([(x0, y0), (x0 * 1.35, y0 + 0.2)], 0.08, "dark"))
    parts.append(fill(_ellipse(0, cy, r, r), "body"))
    rf = r * _u(rng, 0.7, 0.82)
    parts.append(fill(_ellipse(0, cy, rf, rf), "light"))
    if rng.random() < 0.6:  # hour ticks
        for k in range(12):
            a = k * math.pi / 6
            parts.append(fill(_ellipse(0.85 * rf * math.cos(a), cy + 0.85 * rf * math.sin(a),
                                       0.035, 0.035, n=6), "dark"))
    for length, width in ((0.5, 0.08), (0.8, 0.05)):
        a = _u(rng, 0, 2 * math.pi)
        parts.append(line([(0, cy), (length * rf * math.cos(a), cy + length * rf * math.sin(a))],
                          width, "dark"))
    return parts


def _bike(rng):
    rw, wb, hy = _u(rng, 0.3, 0.38), _u(rng, 1.05, 1.22), _u(rng, 0.25, 0.35)
    rear, front = np.array([-wb / 2, hy]), np.array([wb / 2, hy])
    bb = rear + (wb * _u(rng, 0.4, 0.47), _u(rng, 0.0, 0.06))
    st = rear + (wb * _u(rng, 0.25, 0.33), -_u(rng, 0.6, 0.72))
    ht = front - (wb * _u(rng, 0.14, 0.2), _u(rng, 0.58, 0.68))
    hb = ht + (0.05, 0.16)
    parts = []
    for c in (rear, front):
        if rng.random() < 0.5:
            for k in range(4):
                a = k * math.pi / 4
                d = rw * np.array([math.cos(a), math.sin(a)])
                parts.append(line([c - d, c + d], 0.025, "metal"))
        parts.append(line(_ellipse(c[0], c[1], rw, rw), _u(rng, 0.07, 0.1), "dark", closed=True))
    fw = _u(rng, 0.06, 0.08)
    parts.append(line([rear, st, ht, hb, front], fw, "body"))
    parts.append(line([rear, bb, hb], fw, "body"))
    parts.append(line([st, bb], fw, "body"))
    parts.append(fill(_ellipse(st[0] - 0.02, st[1] - 0.05, 0.13, 0.045), "dark"))
    grip = ht + (-_u(rng, 0.08, 0.16), -0.1)
    parts.append(line([ht, ht + (0, -0.08), grip], 0.055, "dark"))
    return parts


def _bottle(rng):
    w, bot = _u(rng, 0.26, 0.4), _u(rng, 0.78, 0.9)
    sh, nw = _u(rng, -0.25, 0.1), w * _u(rng, 0.28, 0.42)
    top = _u(rng, -0.82, -0.62)
    cap = _u(rng, 0.1, 0.18)
    neck_y = max(sh - _u(rng, 0.15, 0.35), top + cap + 0.08)
    right = [(w, bot - 0.06), (w, sh)]
    right += [(nw + (w - nw) * math.cos(t), neck_y + (sh - neck_y) * math.sin(t))
              for t in np.linspace(0, math.pi / 2, 6)][::-1][1:]
    right += [(nw, top + cap * 0.5)]
    right = np.array(right)
    left = right[::-1] * (-1, 1)
    body = np.concatenate([[(-w + 0.06, bot), (w - 0.06, bot)], right, left])
    parts = [fill(body, "body")]
    if rng.random() < 0.65:
        y0 = _u(rng, max(sh + 0.05, -0.1), 0.3)
        parts.append(fill(_rect(-w, y0, w, y0 + _u(rng, 0.25, 0.4)), "light"))
    parts.append(fill(_rect(-nw * 1.15, top, nw * 1.15, top + cap), "accent"))
    return parts


def _chair(rng):
    sw, sy = _u(rng, 0.36, 0.48), _u(rng, 0.05, 0.2)
    dx, dy, th = _u(rng, 0.1, 0.2), _u(rng, 0.12, 0.2), _u(rng, 0.05, 0.09)
    fl, fr = np.array([-sw, sy]), np.array([sw, sy])
    bl, br = fl + (dx, -dy), fr + (dx, -dy)
    bh = _u(rng, 0.6, 0.85)
    lw = _u(rng, 0.05, 0.08)
    seat_role = "accent" if rng.random() < 0.5 else "body"
    parts = [line([bl, bl + (0, 0.62 - sy + 0.1)], lw, "body"),
             line([br, br + (0, 0.62 - sy + 0.1)], lw, "body")]
    if rng.random() < 0.5:  # solid back
        parts.append(fill([bl, br, br + (0, -bh), bl + (0, -bh)], "body"))
    else:  # posts and slats
        parts += [line([bl, bl + (0, -bh)], lw * 1.2, "body"),
                  line([br, br + (0, -bh)], lw * 1.2, "body")]
        for k in range(int(rng.integers(2, 4))):
            y = -bh + 0.06 + k * 0.17
            parts.append(fill(_bar(bl + (0, y), br + (0, y), 0.08), "body"))
    parts.append(fill([fl, fr, br, bl], seat_role))
    parts.append(fill([fl, fr, fr + (0, th), fl + (0, th)], "body"))
    parts += [line([fl + (0, th), (fl[0], 0.88)], lw, "body"),
              line([fr + (0, th), (fr[0], 0.88)], lw, "body")]
    return parts


def _desk_lamp(rng):
    bx = _u(rng, -0.45, -0.15)
    elbow = np.array([bx + _u(rng, -0.2, 0.25), _u(rng, -0.2, 0.05)])
    joint = np.array([_u(rng, 0.05, 0.3), _u(rng, -0.72, -0.5)])
    a = _u(rng, 0.7, 1.4)  # head axis, pointing down and to the right
    d = np.array([math.cos(a), math.sin(a)])
    n = np.array([-d[1], d[0]])
    hl, hw = _u(rng, 0.4, 0.52), _u(rng, 0.22, 0.3)
    mouth = joint + hl * d
    aw = _u(rng, 0.05, 0.07)
    dome = _ellipse(bx, 0.78, _u(rng, 0.28, 0.38), 0.11, math.pi, 2 * math.pi, 12)
    parts = [fill(np.concatenate([dome, [(bx + 0.33, 0.86), (bx - 0.33, 0.86)]]), "body"),
             line([(bx, 0.7), elbow, joint], aw, "metal"),
             fill(_ellipse(elbow[0], elbow[1], 0.05, 0.05, n=10), "dark"),
             fill(_ellipse(mouth[0], mouth[1], hw * 0.8, hw * 0.8, n=16), "light"),
             fill([joint + 0.06 * n, joint - 0.06 * n, mouth - hw * n, mouth + hw * n], "body")]
    return parts


def _flowers(rng):
    parts = []
    vase = rng.random() < 0.5
    base = np.array([0.0, 0.35 if vase else 0.85])
    blooms = int(rng.integers(1, 4))
    xs = np.linspace(-0.45, 0.45, blooms) if blooms > 1 else [0.0]
    heads = []
    for x in xs:
        c = np.array([x + _u(rng, -0.1, 0.1), _u(rng, -0.62, -0.3)])
        parts.append(line([base, (base + c) / 2 + (_u(rng, -0.08, 0.08), 0), c], 0.06, "leaf"))
        if rng.random() < 0.7:
            m = base + (c - base) * _u(rng, 0.35, 0.65)
            ang = math.atan2(*(c - base)[::-1]) + rng.choice([-1, 1]) * _u(rng, 0.6, 1.0)
            leaf = _rotate(_ellipse(0.16, 0, 0.16, 0.06, n=12), ang) + m
            parts.append(fill(leaf, "leaf"))
        heads.append(c)
    for c in heads:
        pr, k = _u(rng, 0.24, 0.34) / (1 + 0.25 * (len(heads) - 1)), int(rng.integers(5, 9))
        off = _u(rng, 0, math.pi)
        for j in range(k):
            a = off + 2 * math.pi * j / k
            petal = _rotate(_ellipse(pr * 0.55, 0, pr * 0.55, pr * 0.3, n=12), a) + c
            parts.append(fill(petal, "accent"))
        parts.append(fill(_ellipse(c[0], c[1], pr * 0.32, pr * 0.32, n=12), "dark"))
    if vase:
        w = _u(rng, 0.2, 0.3)
        parts.append(fill([(-w * 0.8, 0.3), (w * 0.8, 0.3), (w, 0.6), (w * 0.7, 0.88),
                           (-w * 0.7, 0.88), (-w, 0.6)], "body"))
    return parts


def _glasses(rng):
    d, rx = _u(rng, 0.4, 0.47), _u(rng, 0.27, 0.34)
    ry = rx * _u(rng, 0.65, 1.0)
    rim, rw = ("dark" if rng.random() < 0.6 else "body"), _u(rng, 0.05, 0.09)
    round_lens = rng.random() < 0.4
    parts = []
    for sgn in (-1, 1):
        cx = sgn * d
        parts.append(line([(cx + sgn * rx, -ry * 0.5), (sgn * 0.98, -ry * 0.5 - 0.28)], rw * 0.8,
                          rim))
        lens = (_ellipse(cx, 0, rx, ry) if round_lens
                else _rrect(cx - rx, -ry, cx + rx, ry, _u(rng, 0.05, 0.15)))
        parts.append(fill(lens, "glass"))
        parts.append(line(lens, rw, rim, closed=True))
    parts.append(line(_ellipse(0, -ry * 0.2, d - rx, 0.12, math.pi, 2 * math.pi, 8), rw, rim))
    return parts


def _hammer(rng):
    hw, top = _u(rng, 0.06, 0.09), _u(rng, -0.8, -0.65)
    hh, half = _u(rng, 0.14, 0.22), _u(rng, 0.34, 0.46)
    parts = [fill(_rrect(-hw, top + 0.05, hw, 0.9, 0.04), "accent")]
    if rng.random() < 0.5:
        parts.append(fill(_rrect(-hw * 1.25, 0.45, hw * 1.25, 0.9, 0.05), "dark"))
    head = [(-half * 0.55, top), (half, top), (half, top + hh), (-half * 0.55, top + hh)]
    parts.append(fill(head, "metal"))
    parts.append(fill(_rect(half - 0.05, top - 0.03, half + 0.04, top + hh + 0.03), "metal"))
    claw = [(-half * 0.55, top), (-half, top + 0.05), (-half * 1.05, top + hh + 0.18),
            (-half * 0.85, top + hh * 0.9), (-half * 0.55, top + hh)]
    parts.append(fill(claw, "metal"))
    ang = _u(rng, -0.6, 0.6)
    return [p._replace(pts=_rotate(p.pts, ang)) for p in parts]


def _mug(rng):
    w, top, bot = _u(rng, 0.36, 0.48), _u(rng, -0.55, -0.38), _u(rng, 0.55, 0.7)
    cx = -_u(rng, 0.08, 0.15)
    mid = (top + bot) / 2
    parts = [line(_ellipse(cx + w + 0.02, mid - 0.03, _u(rng, 0.17, 0.24),
                           _u(rng, 0.2, 0.3)), _u(rng, 0.08, 0.11), "body", closed=True),
             fill(_rrect(cx - w, top, cx + w, bot, _u(rng, 0.04, 0.14)), "body")]
    if rng.random() < 0.6:
        parts.append(fill(_ellipse(cx, top + 0.02, w * 0.92, 0.07), "dark"))
    if rng.random() < 0.45:
        y = _u(rng, top + 0.2, bot - 0.3)
        parts.append(fill(_rect(cx - w, y, cx + w, y + _u(rng, 0.08, 0.2)), "accent"))
    return parts


def _scissors(rng):
    py = _u(rng, -0.05, 0.15)
    tip_x, tip_y = _u(rng, 0.08, 0.35), _u(rng, -0.92, -0.78)
    hx, hy = _u(rng, 0.22, 0.34), _u(rng, 0.55, 0.66)
    rx, ry = _u(rng, 0.14, 0.2), _u(rng, 0.13, 0.19)
    parts = []
    for sgn in (-1, 1):
        pivot = np.array([0.0, py])
        tip = np.array([sgn * tip_x, tip_y])
        d = (tip - pivot) / np.hypot(*(tip - pivot))
        n = np.array([-d[1], d[0]])
        bw = _u(rng, 0.06, 0.09)
        start = pivot - d * 0.15
        parts.append(fill([start + n * bw, start - n * bw, tip], "metal"))
    for sgn in (-1, 1):
        c = np.array([-sgn * hx, hy])
        parts.append(line([(0, py), c - (0, ry * 0.6) * np.array([1, 1])], 0.1, "body"))
        parts.append(line(_ellipse(c[0], c[1], rx, ry), 0.08, "body", closed=True))
    parts.append(fill(_ellipse(0, py, 0.05, 0.05, n=10), "dark"))
    return parts


def _table(rng):
    w, ty = _u(rng, 0.7, 0.9), _u(rng, -0.3, -0.05)
    dx, dy, th = _u(rng, 0.08, 0.18), _u(rng, 0.12, 0.22), _u(rng, 0.06, 0.12)
    fl, fr = np.array([-w, ty]), np.array([w - dx, ty])
    bl, br = fl + (dx, -dy), fr + (dx, -dy)
    lw, inset = _u(rng, 0.06, 0.1), _u(rng, 0.04, 0.1)
    foot = _u(rng, 0.6, 0.8)
    parts = [line([bl + (inset, 0), (bl[0] + inset, foot - dy)], lw, "body"),
             line([br - (inset, 0), (br[0] - inset, foot - dy)], lw, "body"),
             fill([fl, fr, br, bl], "body"),
             fill([fl, fr, fr + (0, th), fl + (0, th)], "accent"),
             line([fl + (inset, th), (fl[0] + inset, foot)], lw, "body"),
             line([fr + (-inset, th), (fr[0] - inset, foot)], lw, "body")]
    if rng.random() < 0.4:
        y = foot - _u(rng, 0.15, 0.3)
        parts.append(line([(fl[0] + inset, y), (fr[0] - inset, y)], lw * 0.7, "body"))
    return parts


def _trash_can(rng):
    tw, top, bot = _u(rng, 0.36, 0.48), _u(rng, -0.5, -0.35), _u(rng, 0.8, 0.9)
    bw = tw * _u(rng, 0.7, 0.88)
    parts = [fill([(-tw, top), (tw, top), (bw, bot), (-bw, bot)], "body")]
    k = int(rng.integers(3, 6))
    for j in range(k):
        t = (j + 1) / (k + 1) * 2 - 1
        parts.append(line([(t * tw * 0.85, top + 0.12), (t * bw * 0.85, bot - 0.08)], 0.035,
                          "dark"))
    if rng.random() < 0.6:  # lid with a knob
        parts.append(fill(_ellipse(0, top, tw * 1.08, _u(rng, 0.12, 0.22), math.pi, 2 * math.pi,
                                   16), "accent"))
        parts.append(fill(_rect(-0.08, top - 0.3, 0.08, top - 0.15), "dark"))
    else:  # open rim
        parts.append(fill(_rect(-tw * 1.05, top - 0.04, tw * 1.05, top + 0.08), "accent"))
    return parts


_SHAPES = {"Alarm_Clock": _alarm_clock, "Bike": _bike, "Bottle": _bottle, "Chair": _chair,
           "Desk_Lamp": _desk_lamp, "Flowers": _flowers, "Glasses": _glasses,
           "Hammer": _hammer, "Mug": _mug, "Scissors": _scissors, "Table": _table,
           "Trash_Can": _trash_can}
CLASSES = tuple(sorted(_SHAPES))

# --- generic things: the classes of the pretraining set (the embedded stand-in for ImageNet) -
# Each ``Thing_NN`` is a composition drawn once from its own generator: a body (one of seven
# outlines) with 1-4 attached parts (bars, rings, knobs, arcs, fins; some mirrored, some in
# front, some optional) and sometimes a surface pattern. Instances jitter every proportion and
# position, and drop optional parts. None of them is a ToyHome class: a trunk trained on them
# learns generic shape and style features, not the twelve target categories.

NUM_THINGS = 64
THINGS = tuple("Thing_%02d" % k for k in range(NUM_THINGS))
_OUTLINES = ("ellipse", "rect", "rrect", "triangle", "diamond", "trapezoid", "hexagon")
_ATTACHED = ("ellipse", "rect", "triangle", "bar", "ring", "star", "arc")


def _outline(kind, cx, cy, w, h, shape):
    """A closed outline of half-size (w, h) at (cx, cy); ``shape`` in [0, 1] varies it."""
    if kind == "ellipse":
        return _ellipse(cx, cy, w, h)
    if kind == "rect":
        return _rect(cx - w, cy - h, cx + w, cy + h)
    if kind == "rrect":
        return _rrect(cx - w, cy - h, cx + w, cy + h, (0.2 + 0.6 * shape) * min(w, h))
    if kind == "triangle":
        return np.array([(cx + (shape - 0.5) * w, cy - h), (cx + w, cy + h), (cx - w, cy + h)])
    if kind == "diamond":
        return np.array([(cx, cy - h), (cx + w, cy), (cx, cy + h), (cx - w, cy)])
    if kind == "trapezoid":
        t = 0.25 + 0.5 * shape
        return np.array([(cx - t * w, cy - h), (cx + t * w, cy - h), (cx + w, cy + h),
                         (cx - w, cy + h)])
    a = np.arange(6) * math.pi / 3 + shape * math.pi / 6  # hexagon
    return np.stack([cx + w * np.cos(a), cy + h * np.sin(a)], 1)


@functools.lru_cache(maxsize=None)
def _thing_spec(k):
    """The fixed description of class ``Thing_k`` (the same for every dataset seed), drawn
    once per class, not once per image; callers copy what they change."""
    rng = np.random.default_rng([7919, int(k)])
    body = {"kind": _OUTLINES[int(rng.integers(len(_OUTLINES)))], "w": _u(rng, 0.3, 0.7),
            "h": _u(rng, 0.3, 0.7), "cy": _u(rng, -0.15, 0.15), "shape": rng.random()}
    parts = []
    for _ in range(int(rng.integers(1, 5))):
        parts.append({"kind": _ATTACHED[int(rng.integers(len(_ATTACHED)))],
                      "angle": _u(rng, 0, 2 * math.pi), "reach": _u(rng, 0.7, 1.25),
                      "size": _u(rng, 0.1, 0.3), "aspect": _u(rng, 0.4, 2.5),
                      "role": ("accent", "dark", "light", "metal")[int(rng.integers(4))],
                      "mirror": rng.random() < 0.4, "front": rng.random() < 0.5,
                      "optional": rng.random() < 0.3})
    pattern = None
    if rng.random() < 0.45:
        pattern = {"kind": ("stripes", "dots", "band")[int(rng.integers(3))],
                   "n": int(rng.integers(2, 5)), "role": ("dark", "light", "accent")[int(rng.integers(3))],
                   "angle": _u(rng, 0, math.pi)}
    return {"body": body, "parts": parts, "pattern": pattern}


def _attached(p, cx, cy, rng):
    kind, s = p["kind"], p["size"]
    w, h = s * math.sqrt(p["aspect"]), s / math.sqrt(p["aspect"])
    a = p["angle"]
    if kind == "bar":
        end = (cx + p["reach"] * 1.2 * math.cos(a), cy + p["reach"] * 1.2 * math.sin(a))
        return line([(cx + 0.5 * (end[0] - cx), cy + 0.5 * (end[1] - cy)), end], 0.35 * s, p["role"])
    if kind == "ring":
        return line(_ellipse(cx, cy, w, h), 0.25 * s, p["role"], closed=True)
    if kind == "arc":
        return line(_ellipse(cx, cy, 1.6 * w, 1.6 * h, a - 1.2, a + 1.2, 12), 0.3 * s, p["role"])
    if kind == "star":
        t = np.arange(10) * math.pi / 5 + a
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return fill(np.stack([cx + w * r * np.cos(t), cy + h * r * np.sin(t)], 1), p["role"])
    out = _outline({"ellipse": "ellipse", "rect": "rect", "triangle": "triangle"}[kind], 0, 0,
                   w, h, 0.5)
    return fill(_rotate(out, a + math.pi / 2) + (cx, cy), p["role"])


def thing_shape(k, rng):
    """The parts of one instance of ``Thing_k``: the class's composition, every proportion
    jittered, optional parts dropped (p = 0.4)."""
    spec = _thing_spec(k)
    j = lambda x, rel=0.12: x * math.exp(rng.normal(0, rel))  # noqa: E731
    b = spec["body"]
    w, h, cy = j(b["w"]), j(b["h"]), b["cy"] + rng.normal(0, 0.04)
    front, back = [], []
    for p in spec["parts"]:
        if p["optional"] and rng.random() < 0.4:
            continue
        q = dict(p, angle=p["angle"] + rng.normal(0, 0.12), reach=j(p["reach"], 0.08),
                 size=j(p["size"]), aspect=j(p["aspect"], 0.1))
        for flip in ((1, -1) if p["mirror"] else (1,)):
            a = q["angle"] if flip == 1 else math.pi - q["angle"]
            px_, py_ = q["reach"] * w * math.cos(a), cy + q["reach"] * h * math.sin(a)
            (front if p["front"] else back).append(_attached(dict(q, angle=a), px_, py_, rng))
    parts = back + [fill(_outline(b["kind"], 0, cy, w, h, b["shape"]), "body")]
    pat = spec["pattern"]
    if pat is not None:
        n = pat["n"]
        if pat["kind"] == "dots":
            for i in range(n):
                x = (i - (n - 1) / 2) * 1.4 * w / n
                parts.append(fill(_ellipse(x, cy, 0.25 * w / n + 0.02, 0.25 * w / n + 0.02, n=10), pat["role"]))
        elif pat["kind"] == "stripes":
            for i in range(n):
                y = cy + (i - (n - 1) / 2) * 1.2 * h / n
                parts.append(line([(-0.7 * w, y), (0.7 * w, y)], 0.3 * h / n + 0.02, pat["role"]))
        else:
            parts.append(fill(_rect(-0.8 * w, cy - 0.18 * h, 0.8 * w, cy + 0.18 * h), pat["role"]))
    parts += front
    ext = max(float(np.abs(np.concatenate([p.pts for p in parts])).max()), 1e-6)
    if ext > 0.92:  # keep the whole object inside the unit frame
        parts = [p._replace(pts=p.pts * (0.92 / ext), width=p.width * 0.92 / ext) for p in parts]
    return parts


def _shape(cls):
    """The shape function of a class: one of ToyHome's twelve or a generic ``Thing_NN``."""
    if cls in _SHAPES:
        return _SHAPES[cls]
    if cls in THINGS:
        k = THINGS.index(cls)
        return lambda rng: thing_shape(k, rng)
    raise CaffeError("unknown ToyHome class %r (classes: %s, or Thing_00 ... Thing_%02d)"
                     % (cls, ", ".join(CLASSES), NUM_THINGS - 1))


def _class_key(cls):
    """The class's entry in every image generator's seed (ToyHome's keep their indices)."""
    return CLASSES.index(cls) if cls in _SHAPES else 1000 + THINGS.index(cls)


# --- colours: each domain draws its palette (role -> RGB) from its own distribution ---------


def _hsv(h, s, v):
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _palette(domain, rng):
    if domain == "Clipart":  # saturated, bright
        h = rng.random()
        return {"body": _hsv(h, _u(rng, 0.75, 1), _u(rng, 0.85, 1)),
                "accent": _hsv(h + _u(rng, 0.25, 0.75), _u(rng, 0.7, 1), _u(rng, 0.85, 1)),
                "dark": (20, 20, 20), "light": (255, 255, 255), "metal": (190, 195, 205),
                "leaf": _hsv(_u(rng, 0.25, 0.4), 0.9, 0.8), "glass": (190, 235, 255)}
    if domain == "Product":  # materials: neutrals or desaturated colours
        if rng.random() < 0.5:
            body = _hsv(rng.random(), _u(rng, 0, 0.08), rng.choice([0.12, 0.45, 0.7, 0.93]))
        else:
            body = _hsv(rng.random(), _u(rng, 0.2, 0.6), _u(rng, 0.35, 0.85))
        return {"body": body,
                "accent": _hsv(rng.random(), _u(rng, 0, 0.4), _u(rng, 0.2, 0.9)),
                "dark": _hsv(0, 0, _u(rng, 0.08, 0.2)), "light": _hsv(0, 0, _u(rng, 0.9, 0.98)),
                "metal": _hsv(0.6, 0.04, _u(rng, 0.62, 0.78)),
                "leaf": _hsv(_u(rng, 0.22, 0.38), _u(rng, 0.3, 0.6), _u(rng, 0.35, 0.6)),
                "glass": _hsv(0.55, 0.08, 0.9)}
    if domain == "Art":  # earth colours: ochres, siennas, olives, slate blues
        earth = lambda: _hsv(rng.choice([_u(rng, 0.0, 0.13), _u(rng, 0.18, 0.3),  # noqa: E731
                                         _u(rng, 0.55, 0.68)]), _u(rng, 0.3, 0.65),
                             _u(rng, 0.4, 0.8))
        return {"body": earth(), "accent": earth(),
                "dark": _hsv(_u(rng, 0.02, 0.1), _u(rng, 0.4, 0.7), _u(rng, 0.15, 0.3)),
                "light": _hsv(_u(rng, 0.1, 0.15), _u(rng, 0.1, 0.25), _u(rng, 0.85, 0.95)),
                "metal": _hsv(_u(rng, 0.5, 0.65), _u(rng, 0.05, 0.2), _u(rng, 0.5, 0.7)),
                "leaf": _hsv(_u(rng, 0.2, 0.33), _u(rng, 0.35, 0.6), _u(rng, 0.35, 0.6)),
                "glass": _hsv(_u(rng, 0.5, 0.6), _u(rng, 0.1, 0.3), _u(rng, 0.7, 0.9))}
    return {"body": _hsv(rng.random(), _u(rng, 0.1, 0.8), _u(rng, 0.2, 0.9)),  # Real World
            "accent": _hsv(rng.random(), _u(rng, 0.1, 0.8), _u(rng, 0.2, 0.9)),
            "dark": _hsv(rng.random(), _u(rng, 0, 0.2), _u(rng, 0.05, 0.25)),
            "light": _hsv(rng.random(), _u(rng, 0, 0.1), _u(rng, 0.75, 0.95)),
            "metal": _hsv(rng.random(), _u(rng, 0, 0.08), _u(rng, 0.45, 0.8)),
            "leaf": _hsv(_u(rng, 0.2, 0.4), _u(rng, 0.3, 0.8), _u(rng, 0.25, 0.7)),
            "glass": _hsv(rng.random(), _u(rng, 0, 0.15), _u(rng, 0.55, 0.9))}


# --- rasterisation --------------------------------------------------------------------------

def _place(parts, view, angle, centre, weight, px):
    """Unit coordinates -> pixels: the 2 x 2 ``view`` (mirror, aspect, shear: the viewpoint and
    the scale in half-widths), a rotation, a shift; line widths times ``weight``."""
    out = []
    m = _rotate(np.asarray(view, float).T, angle).T * (px / 2)
    k = math.sqrt(abs(np.linalg.det(m)))
    for p in parts:
        out.append(p._replace(pts=p.pts @ m.T + centre, width=max(1.0, p.width * k * weight)))
    return out


def _simplify(parts):
    """Clip art leaves out the small print: tiny parts and hairlines (ticks, spokes, ridges)."""
    return [p for p in parts if (p.width >= 0.045 if p.kind == "line"
                                 else np.ptp(p.pts, 0).max() >= 0.12)]


def _xy(pts):
    return np.asarray(pts, float).ravel().tolist()  # [x0, y0, x1, y1, ...] as Pillow takes


def _draw(draw, part, colour, outline=None, ow=0):
    if part.kind == "fill":
        if outline is not None:
            draw.polygon(_xy(part.pts), fill=colour, outline=outline, width=ow)
        else:
            draw.polygon(_xy(part.pts), fill=colour)
    else:
        if outline is not None:
            draw.line(_xy(part.pts), fill=outline, width=int(round(part.width + 2 * ow)),
                      joint="curve")
        draw.line(_xy(part.pts), fill=colour, width=int(round(part.width)), joint="curve")


def _mask(part, px):
    """The part's coverage inside its bounding box: (mask in [0, 1], x0, y0)."""
    pad = part.width / 2 + 2
    x0, y0 = np.floor(np.clip(part.pts.min(0) - pad, 0, px)).astype(int)
    x1, y1 = np.ceil(np.clip(part.pts.max(0) + pad, 0, px)).astype(int)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), np.float32), 0, 0
    m = Image.new("L", (x1 - x0, y1 - y0), 0)
    _draw(ImageDraw.Draw(m), part._replace(pts=part.pts - (x0, y0)), 255)
    return np.asarray(m, np.float32) / 255.0, x0, y0


def _jitter(pts, sigma, rng, closed):
    """Resample a polyline every ~3 px and push it around with smooth noise (hand-drawn)."""
    pts = np.concatenate([pts, pts[:1]]) if closed else pts
    seg = np.hypot(*np.diff(pts, axis=0).T)
    t = np.concatenate([[0], np.cumsum(seg)])
    n = max(4, int(t[-1] / 3))
    s = np.linspace(0, t[-1], n)
    out = np.stack([np.interp(s, t, pts[:, 0]), np.interp(s, t, pts[:, 1])], 1)
    noise = np.pad(rng.normal(0, sigma, out.shape), ((3, 3), (0, 0)),
                   mode="wrap" if closed else "edge")
    smooth = noise[:-6] + 6 * noise[1:-5] + 15 * noise[2:-4] + 20 * noise[3:-3] + \
        15 * noise[4:-2] + 6 * noise[5:-1] + noise[6:]  # binomial smoothing
    return out + smooth / 32.0


def _shade(mask, colour, light, gain):
    """A cylinder-lit colour field over a part's box: a bright band, a darker far side."""
    h, w = mask.shape
    c, s = math.cos(light), math.sin(light)
    proj = np.arange(w, dtype=np.float32)[None, :] * c + np.arange(h, dtype=np.float32)[:, None] * s
    inside = proj[mask > 0.5]
    if inside.size == 0:
        return np.asarray(colour, np.float32)
    lo, hi = inside.min(), inside.max() + 1e-3
    u = (proj - lo) / (hi - lo)
    g = 0.62 + 0.55 * np.exp(-((u - 0.28) / 0.2) ** 2) - 0.28 * u
    g = 1.0 + (g - 1.0) * gain
    return np.clip(np.asarray(colour, np.float32) * g[..., None], 0, 255)


def _shaded_object(canvas, parts, pal, light, gain):
    """Composite cylinder-shaded parts onto ``canvas`` (H, W, 3 float) in place."""
    for p in parts:
        m, x0, y0 = _mask(p, canvas.shape[0])
        col = pal[p.role]
        field = _shade(m, col, light, gain) if p.kind == "fill" else \
            np.asarray(col, np.float32) * 0.85
        region = canvas[y0:y0 + m.shape[0], x0:x0 + m.shape[1]]
        region += m[..., None] * (field - region)


def _thicken(part, w):
    """The part grown by ``w / 2`` pixels all round (drawn as a thick line or closed line)."""
    if part.kind == "line":
        return part._replace(width=part.width + w)
    return Part("line", np.concatenate([part.pts, part.pts[:1]]), float(w), part.role)


def _silhouette(parts, px):
    im = Image.new("L", (px, px), 0)
    draw = ImageDraw.Draw(im)
    for p in parts:
        _draw(draw, p, 255)
    return im


def _noise_field(rng, px, cells, chroma):
    """Smooth noise in [-0.5, 0.5]: a shared (luminance) part plus ``chroma`` times a
    per-channel part."""
    small = rng.random((cells, cells, 3))
    small = (1 - chroma) * small[..., :1] + chroma * small
    im = Image.fromarray((small * 255).astype(np.uint8)).resize((px, px), Image.BICUBIC)
    return np.asarray(im, np.float32) / 255.0 - 0.5


def _render_clipart(parts, rng, pal, px):
    back = rng.random()
    pastel = _hsv(rng.random(), _u(rng, 0.15, 0.45), 1.0)
    im = Image.new("RGB", (px, px), pastel if back < 0.2 else (255, 255, 255))
    draw = ImageDraw.Draw(im)
    if 0.2 <= back < 0.45:  # a badge behind the object: a disc or a rounded square
        r, c = px * _u(rng, 0.38, 0.48), px / 2
        box = [c - r, c - r, c + r, c + r]
        if rng.random() < 0.6:
            draw.ellipse(box, fill=pastel)
        else:
            draw.rounded_rectangle(box, radius=r * 0.3, fill=pastel)
    ow = max(2, int(round(px * _u(rng, 0.02, 0.035))))
    for p in parts:  # a thick ink silhouette behind everything ...
        _draw(draw, _thicken(p, 2 * ow), (0, 0, 0))
    for p in parts:  # ... flat fills on top, thin ink between the parts
        _draw(draw, p, pal[p.role], outline=(0, 0, 0), ow=max(1, ow // 2))
    return np.asarray(im, np.float32)


def _render_product(parts, rng, pal, px):
    canvas = np.full((px, px, 3), 255.0 * _u(rng, 0.95, 1.0), np.float32)
    canvas -= np.linspace(0, _u(rng, 0, 18), px, dtype=np.float32)[:, None, None]
    sh = _silhouette(parts, px)
    dx, dy = int(px * _u(rng, 0.02, 0.05)), int(px * _u(rng, 0.03, 0.07))
    sh = sh.transform(sh.size, Image.AFFINE, (1, 0, -dx, 0, 1, -dy))
    sh = np.asarray(sh.filter(ImageFilter.GaussianBlur(px * 0.04)), np.float32) / 255
    canvas *= 1 - _u(rng, 0.3, 0.45) * sh[..., None]
    _shaded_object(canvas, parts, pal, _u(rng, -0.3, 0.3), 1.0)
    return canvas


def _render_sketch(parts, rng, px):
    """Pencil on paper: doubled, wobbly contours and hatching clipped to the parts."""
    paper = np.asarray(_hsv(_u(rng, 0.08, 0.14), _u(rng, 0.03, 0.2), _u(rng, 0.85, 0.97)),
                       np.float32)
    im = Image.fromarray(np.clip(paper * (1 + 0.1 * _noise_field(rng, px, 4, 0.0)), 0, 255)
                         .astype(np.uint8))
    draw = ImageDraw.Draw(im)
    lead = int(_u(rng, 30, 90))
    theta, gap = _u(rng, 0, math.pi), _u(rng, 0.035, 0.06) * px
    hatch = Image.new("L", (px, px), 0)
    hd = ImageDraw.Draw(hatch)
    c, s = math.cos(theta), math.sin(theta)
    for t in np.arange(-px, px, gap):  # parallel strokes across the whole sheet
        x0, y0 = px / 2 + t * -s, px / 2 + t * c
        hd.line([(x0 - 2 * px * c, y0 - 2 * px * s), (x0 + 2 * px * c, y0 + 2 * px * s)],
                fill=int(_u(rng, 120, 220)), width=1)
    shade = Image.new("L", (px, px), 0)
    sd = ImageDraw.Draw(shade)
    for p in parts:
        if p.kind == "fill" and rng.random() < 0.6:
            _draw(sd, p, 255)
    ink = np.asarray(hatch, np.float32) * np.asarray(shade, np.float32) / 255 / 255
    arr = np.asarray(im, np.float32) * (1 - ink[..., None] * (1 - lead / 255))
    im = Image.fromarray(arr.astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for p in parts:
        for _ in range(int(rng.integers(1, 3)) + (p.kind == "fill")):
            pts = _jitter(p.pts, px * 0.01, rng, p.kind == "fill")
            w = 1 + int(rng.random() < 0.5) if p.kind == "fill" else max(1, int(p.width * 0.5))
            g = lead + int(rng.integers(0, 40))
            draw.line(_xy(pts), fill=(g, g, g), width=w, joint="curve")
    return np.asarray(im, np.float32)


def _render_art(parts, rng, pal, px):
    if rng.random() < 0.3:
        return _render_sketch(parts, rng, px)
    if rng.random() < 0.6:  # paper / canvas
        base = _hsv(_u(rng, 0.06, 0.14), _u(rng, 0.1, 0.35), _u(rng, 0.75, 0.95))
    else:  # a coloured wash
        base = _hsv(rng.random(), _u(rng, 0.2, 0.55), _u(rng, 0.3, 0.75))
    canvas = np.asarray(base, np.float32) * (1 + 0.5 * _noise_field(rng, px, 5, 0.3))
    im = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for p in parts:  # flat colour under wobbly, jittered shapes
        pts = _jitter(p.pts, px * 0.006, rng, p.kind == "fill")
        col = np.clip(np.asarray(pal[p.role]) + rng.normal(0, 10, 3), 0, 255)
        _draw(draw, p._replace(pts=pts), tuple(int(c) for c in col))
    # repaint with short strokes whose colours are sampled from the picture, mostly along
    # the painter's dominant direction
    flat = np.asarray(im, np.float32)
    n = px * px // 40
    x, y = rng.integers(0, px, (2, n))
    a = rng.uniform(0, math.pi) + rng.normal(0, 0.45, n)
    ln = px * rng.uniform(0.03, 0.09, n) / 2
    dx, dy = ln * np.cos(a), ln * np.sin(a)
    cols = np.clip(flat[y, x] + rng.normal(0, 14, (n, 3)), 0, 255).astype(int).tolist()
    ends = np.stack([x - dx, y - dy, x + dx, y + dy], 1).tolist()
    widths = rng.integers(2, max(3, px // 25), n).tolist()
    for e, c, w in zip(ends, cols, widths):
        draw.line(e, fill=tuple(c), width=w)
    ink = pal["dark"]
    for p in parts:  # sketchy outlines, some drawn twice
        if p.kind == "fill" and rng.random() < 0.75:
            for _ in range(1 + (rng.random() < 0.4)):
                pts = _jitter(p.pts, px * 0.008, rng, True)
                draw.line(_xy(pts), fill=ink, width=int(rng.integers(1, 4)), joint="curve")
    grain = _noise_field(rng, px, px // 2, 0.0)
    return np.asarray(im, np.float32) * (1 + 0.15 * grain)


def _render_real(parts, rng, pal, px):
    wall = np.asarray(_hsv(rng.random(), _u(rng, 0, 0.35), _u(rng, 0.35, 0.9)), np.float32)
    desk = np.asarray(_hsv(rng.random(), _u(rng, 0.1, 0.6), _u(rng, 0.2, 0.75)), np.float32)
    horizon = int(px * _u(rng, 0.35, 0.85))
    canvas = np.empty((px, px, 3), np.float32)
    canvas[:horizon] = wall
    canvas[horizon:] = desk
    canvas *= 1 + 0.4 * _noise_field(rng, px, 4, 0.25)
    im = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))

    def clutter(draw):
        col = _hsv(rng.random(), _u(rng, 0, 0.8), _u(rng, 0.1, 0.95))
        x, y = rng.uniform(-0.1, 1.1, 2) * px
        w, h = rng.uniform(0.06, 0.35, 2) * px
        kind = rng.integers(0, 4)
        if kind == 0:
            draw.rectangle([x - w / 2, y - h / 2, x + w / 2, y + h / 2], fill=col)
        elif kind == 1:
            draw.ellipse([x - w / 2, y - h / 2, x + w / 2, y + h / 2], fill=col)
        elif kind == 2:
            draw.line([(x, y), (x + rng.normal(0, w), y + rng.normal(0, h))], fill=col,
                      width=int(rng.integers(2, 7)))
        else:
            pts = rng.uniform(-0.5, 0.5, (int(rng.integers(3, 6)), 2)) * (w, h) + (x, y)
            draw.polygon(_xy(pts), fill=col)

    layer = im.copy()
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(2, 7))):
        clutter(draw)
    im = Image.blend(im, layer, _u(rng, 0.4, 0.8))
    im = im.filter(ImageFilter.GaussianBlur(px * _u(rng, 0.01, 0.035)))  # depth of field
    canvas = np.asarray(im, np.float32).copy()
    _shaded_object(canvas, parts, pal, _u(rng, -math.pi, math.pi), _u(rng, 0.3, 1.0))
    im = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    if rng.random() < 0.2:  # an occluder in front
        clutter(ImageDraw.Draw(im))
    if rng.random() < 0.5:  # out of focus
        im = im.filter(ImageFilter.GaussianBlur(px * _u(rng, 0.004, 0.012)))
    return np.asarray(im, np.float32)


def _finish_real(arr, rng):
    """Camera at the final size: colour cast, exposure, gamma, sensor noise."""
    arr = arr * rng.normal(1.0, 0.12, 3).astype(np.float32) * _u(rng, 0.7, 1.25)
    arr = 255 * (np.clip(arr, 0, 255) / 255) ** _u(rng, 0.75, 1.35)
    return arr + rng.normal(0, _u(rng, 3, 12), arr.shape)


# domain: renderer, scale (in half-widths of the frame), max |rotation| (rad), max centre shift
# (fraction of the frame), aspect range (x stretch), max |shear|, line weight, simplified drawing
_Style = namedtuple("_Style", "renderer scale rot shift aspect shear weight simplify")
_STYLE = {
    "Art": _Style(_render_art, (0.55, 0.8), 0.25, 0.1, (0.85, 1.15), 0.15, 1.0, False),
    "Clipart": _Style(_render_clipart, (0.7, 0.9), 0.12, 0.04, (0.95, 1.25), 0.0, 1.5, True),
    "Product": _Style(_render_product, (0.84, 0.96), 0.03, 0.02, (0.95, 1.05), 0.0, 0.85, False),
    "Real World": _Style(_render_real, (0.75, 1.0), 0.2, 0.08, (0.85, 1.2), 0.2, 1.0, False),
}


def render(domain, cls, index, seed=DEFAULT_SEED, size=DEFAULT_SIZE):
    """Image ``index`` (0-based) of class ``cls`` in ``domain``: a ``size`` x ``size`` RGB
    PIL image, a pure function of its arguments."""
    if domain not in DOMAINS:
        raise CaffeError("unknown ToyHome domain %r (domains: %s)" % (domain, ", ".join(DOMAINS)))
    _shape(cls)
    rng = np.random.default_rng([int(seed), DOMAINS.index(domain), _class_key(cls),
                                 int(index)])
    return render_parts(domain, _shape(cls)(rng), rng, size)


def render_parts(domain, parts, rng, size=DEFAULT_SIZE):
    """Draw ``parts`` (unit coordinates) in ``domain``'s style with ``rng``: a ``size`` x
    ``size`` RGB PIL image. Every ToyHome image goes through here; other object sets (the
    generic ``things`` classes) reuse the same domain styles."""
    px = int(size) * _SS
    st = _STYLE[domain]
    if st.simplify:
        parts = _simplify(parts)
    scale = _u(rng, *st.scale)
    aspect = _u(rng, *st.aspect)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    view = scale * np.array([[flip * math.sqrt(aspect), _u(rng, -st.shear, st.shear)],
                             [0.0, 1 / math.sqrt(aspect)]])
    centre = px * (0.5 + rng.uniform(-st.shift, st.shift, 2))
    placed = _place(parts, view, _u(rng, -st.rot, st.rot), centre, st.weight, px)
    arr = st.renderer(placed, rng, _palette(domain, rng), px)
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).reduce(_SS)
    if domain == "Real World":
        arr = _finish_real(np.asarray(im, np.float32), rng)
        im = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8))
    return im


# --- the dataset on disk --------------------------------------------------------------------

def default_root(seed=DEFAULT_SEED, per_class=DEFAULT_PER_CLASS, size=DEFAULT_SIZE,
                 classes=None):
    """``$MINICAFFE_DATA/toyhome-v1`` (``$XDG_CACHE_HOME/minicaffe`` or ``~/.cache/minicaffe``
    when the variable is unset); other parameters than the defaults get their own folder,
    ``toyhome-v1-s<seed>-n<per_class>-<size>px``, and other classes ``...-things`` (the 64
    generic things) or ``...-c<hash>``."""
    base = os.environ.get("MINICAFFE_DATA") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "minicaffe")
    name = "toyhome-v%d" % VERSION
    if (seed, per_class, size) != (DEFAULT_SEED, DEFAULT_PER_CLASS, DEFAULT_SIZE):
        name += "-s%d-n%d-%dpx" % (seed, per_class, size)
    classes = CLASSES if classes is None else tuple(sorted(set(classes)))
    if classes == THINGS:
        name += "-things"
    elif classes != CLASSES:
        name += "-c" + hashlib.sha256(",".join(classes).encode()).hexdigest()[:8]
    return os.path.join(os.path.abspath(os.path.expanduser(base)), name)


def _check_args(seed, per_class, size, classes):
    for name, v, lo in (("seed", seed, 0), ("per_class", per_class, 1), ("size", size, 16)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise CaffeError("ToyHome: %s must be an integer >= %d (got %r)" % (name, lo, v))
    classes = CLASSES if classes is None else tuple(classes)
    unknown = [c for c in classes if c not in _SHAPES and c not in THINGS]
    if unknown or not classes:
        raise CaffeError("ToyHome: unknown classes %s (classes: %s, or Thing_00 ... Thing_%02d)"
                         % (", ".join(map(repr, unknown)) or "(none given)", ", ".join(CLASSES),
                            NUM_THINGS - 1))
    return int(seed), int(per_class), int(size), tuple(sorted(set(classes)))


def read_manifest(root):
    """The manifest of a complete ToyHome at ``root`` (a dict), or None."""
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            man = json.load(f)
    except (OSError, ValueError):
        return None
    return man if isinstance(man, dict) and man.get("name") == NAME else None


def _matches(man, seed, per_class, size, classes):
    return man is not None and (man.get("version"), man.get("seed"), man.get("per_class"),
                                man.get("size"), tuple(man.get("classes", ()))) == \
        (VERSION, seed, per_class, size, classes)


def _check_replaceable(root):
    """A root may be (re)written if it is absent, empty, or holds only ToyHome's own entries
    (a dataset, complete or not); anything else is someone's data and is left alone."""
    if not os.path.lexists(root):
        return
    if not os.path.isdir(root) or os.path.islink(root):
        raise CaffeError("ToyHome root %s exists and is not a directory" % root)
    foreign = sorted(set(os.listdir(root)) - set(DOMAINS) - {MANIFEST})
    if foreign:
        raise CaffeError("ToyHome root %s holds other files (%s); choose another root"
                         % (root, ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")))


def _write_tree(tmp, seed, per_class, size, classes):
    digest = hashlib.sha256()
    for d in DOMAINS:
        for c in classes:
            folder = os.path.join(tmp, d, c)
            os.makedirs(folder)
            for k in range(per_class):
                im = render(d, c, k, seed, size)
                digest.update(im.tobytes())
                im.save(os.path.join(folder, "%05d.png" % (k + 1)), format="PNG")
    man = {"name": NAME, "version": VERSION, "seed": seed, "per_class": per_class,
           "size": size, "domains": list(DOMAINS), "classes": list(classes),
           "images": len(DOMAINS) * len(classes) * per_class,
           "layout": "<Domain>/<Class>/<NNNNN>.png", "pixels_sha256": digest.hexdigest()}
    with open(os.path.join(tmp, MANIFEST), "w") as f:  # last: its presence means complete
        json.dump(man, f, indent=1, sort_keys=True)
        f.write("\n")
    return man


def _generate(root, seed, per_class, size, classes, keep_current):
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    _check_replaceable(root)
    parent, base = os.path.split(root)
    os.makedirs(parent, exist_ok=True)
    n = len(DOMAINS) * len(classes) * per_class
    log.info("Generating %s: %d domains x %d classes x %d images of %dx%d, seed %d, in %s",
             NAME, len(DOMAINS), len(classes), per_class, size, size, seed, root)
    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix=".%s.tmp-" % base, dir=parent)
    trash = None
    try:
        os.chmod(tmp, 0o755)
        _write_tree(tmp, seed, per_class, size, classes)
        if keep_current and _matches(read_manifest(root), seed, per_class, size, classes):
            return root  # another process finished the same dataset first
        _check_replaceable(root)
        try:
            os.rename(tmp, root)  # atomic when root is absent or an empty directory
        except OSError:
            trash = tempfile.mkdtemp(prefix=".%s.old-" % base, dir=parent)
            os.rename(root, os.path.join(trash, base))
            os.rename(tmp, root)
    finally:
        for junk in (tmp, trash):
            if junk is not None and os.path.isdir(junk):
                shutil.rmtree(junk, ignore_errors=True)
    log.info("Wrote %d images in %.1f s", n, time.perf_counter() - t0)
    return root


def generate(root, seed=DEFAULT_SEED, per_class=DEFAULT_PER_CLASS, size=DEFAULT_SIZE,
             classes=None):
    """Write ToyHome to ``root`` and return ``root`` (absolute). ``per_class`` images of
    ``size`` x ``size`` per class and domain; ``classes``: a subset of CLASSES (default all).

    The images are written to a temporary folder beside ``root``, the manifest last, and the
    folder is renamed to ``root``; an existing ToyHome at ``root`` is replaced. A ``root``
    holding anything else is an error and is not touched."""
    seed, per_class, size, classes = _check_args(seed, per_class, size, classes)
    return _generate(root, seed, per_class, size, classes, keep_current=False)


def ensure(root=None, seed=DEFAULT_SEED, per_class=DEFAULT_PER_CLASS, size=DEFAULT_SIZE,
           classes=None, force=False):
    """The root of a complete ToyHome with these parameters, generated first when ``root``
    (default ``default_root(...)``) has none, an incomplete one (no manifest) or one made
    with other parameters, or when ``force``. Returns the absolute root."""
    seed, per_class, size, classes = _check_args(seed, per_class, size, classes)
    root = default_root(seed, per_class, size, classes) if root is None else root
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if not force and _matches(read_manifest(root), seed, per_class, size, classes):
        return root
    return _generate(root, seed, per_class, size, classes, keep_current=not force)
