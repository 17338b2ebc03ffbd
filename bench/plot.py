#!/usr/bin/env python3
"""Standalone SVG charts for benchmark results (Python 3 standard library only).

GitHub renders SVG images in markdown, so the charts in docs/ can be regenerated from
benchmark output without matplotlib:

    from plot import line_chart, bar_chart   # with bench/ on sys.path

    line_chart("docs/img/encrypt.svg", ":encrypt requests/s", "connections", "requests/s",
               {"SOFTWARE": [(1, 9100), (64, 41000)]}, log_x=True,
               note="machine, commit, command")
    bar_chart("docs/img/ratio.svg", "Ratio to /healthz", "ratio", ["1 conn", "64 conns"],
              {"SOFTWARE": [0.91, 0.84]}, reference=(0.8, "goal 0.80"))

Both functions write the file atomically and return the path they were given. The output is
deterministic (same input, same bytes), so regenerated charts only show up in diffs when the
numbers change.

    python3 bench/plot.py OUT_DIR      # writes two example charts to OUT_DIR
"""

import math
import os
import re
import sys
import tempfile
import textwrap
import warnings

__all__ = ["line_chart", "bar_chart"]

# Okabe-Ito, the colour-blind-safe palette; yellow last because it is faint on white.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00",
           "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
# Line series also cycle marker shapes, so the chart still reads in grey scale; past the
# palette's length the line dash changes, so no two of the first 24 series look alike.
MARKERS = ["circle", "square", "diamond", "triangle"]
DASHES = ["", "7 4", "2 3"]

FONT = "Helvetica, Arial, sans-serif"
TEXT = "#222222"
MUTED = "#666666"
GRID = "#e5e5e5"
AXIS = "#444444"

TITLE_SIZE = 16
LABEL_SIZE = 12
TICK_SIZE = 11
NOTE_SIZE = 10


# ---------------------------------------------------------------- text and numbers

# XML 1.0 forbids most control characters, even escaped, and UTF-8 cannot hold lone
# surrogates: drop them.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _esc(text):
    """Escape any value for use as XML text or inside a double-quoted attribute."""
    s = _INVALID_XML.sub("", str(text))
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _text_width(text, size):
    """Rough rendered width of `text` in a sans-serif font (no font metrics available)."""
    return len(str(text)) * size * 0.56


def _n(v):
    """A coordinate, rounded to 0.01 px, without trailing zeros."""
    s = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


# SI prefixes for numbers from a million up and below a thousandth.
_SI_BIG = [(1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")]
_SI_SMALL = [(1e-6, "\u00b5"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f"), (1e-18, "a")]


def _si_prefix(a, digits=12):
    """(scale, suffix) for a magnitude `a` >= 0: (1e6, "M") for 2.5e6, (1e-6, "µ") for
    4e-5, (1, "") from 0.001 to a million. `digits` is the precision the number will be
    shown with, so that 999999 at 3 digits counts as the million it rounds to."""
    f = 1 - 0.5 * 10.0 ** -digits
    for scale, suffix in _SI_BIG:
        if a >= scale * f:
            return scale, suffix
    if 0 < a < 1e-3 * f:
        return next(((sc, sf) for sc, sf in _SI_SMALL if a >= sc * f), _SI_SMALL[-1])
    return 1.0, ""


def _fmt_sig(v, digits=3, strip=False):
    """`v` to `digits` significant digits: 0.800, 12.3, 1230, 4.57M, 123µ.

    Plain notation from a thousandth up to a million, SI prefixes beyond.
    With strip=True trailing zeros go (0.5 rather than 0.500), for axis ticks.
    """
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    scale, suffix = _si_prefix(abs(v), digits)
    v /= scale
    # Round first: 999.7 becomes 1000, which then has one more integer digit.
    exp = math.floor(math.log10(abs(v)))
    r = round(v, digits - 1 - exp)
    exp = math.floor(math.log10(abs(r))) if r else exp
    decimals = max(0, digits - 1 - exp)
    s = f"{r:.{decimals}f}"
    if strip and "." in s:
        s = s.rstrip("0").rstrip(".")
    return ("0" if s == "-0" else s) + suffix


def _fmt_value(v):
    """A data value for a log-axis tick: integers as they are (1024, not 1.02k) below a
    million, anything else to 3 significant digits."""
    if float(v).is_integer() and abs(v) < 1e6:
        return str(int(v))
    return _fmt_sig(v, 3, strip=True)


def _finite(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ---------------------------------------------------------------- ticks and scaling

def _span(lo, hi, from_zero=False):
    """Widen a data range so that it is never empty (avoids dividing by zero later)."""
    if from_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if lo == hi:          # everything is zero
            return 0.0, 1.0
    if lo == hi:              # a single value: centre it
        pad = abs(lo) / 2 or 1.0
        return lo - pad, hi + pad
    return lo, hi


def _linear_ticks(lo, hi, target=5):
    """About `target` evenly spaced ticks covering [lo, hi], on a 1-2-5 step.

    Candidate steps are 1, 2 and 5 times powers of ten around range/target. For each, the
    axis runs from the multiple of the step at or below `lo` to the one at or above `hi`
    (so both ends are labelled and every point lies inside); the step whose tick count is
    closest to `target` wins, and on a tie the one whose axis wastes the least space.
    Requires hi > lo (see _span). Returns (ticks, axis_lo, axis_hi, labels).
    """
    def bounds(step):
        # The small tolerance keeps 0.30000000000000004 from counting as above 0.3.
        return math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)

    base = math.floor(math.log10((hi - lo) / target))
    best = None
    for exp in range(base - 1, base + 2):
        for m in (1, 2, 5):
            first, last = bounds(m * 10.0 ** exp)
            key = (abs(last - first + 1 - target), (last - first) * m * 10.0 ** exp)
            if best is None or key < best[0]:
                best = (key, m, exp)
    _, m, exp = best
    step = m * 10.0 ** exp
    first, last = bounds(step)
    last = min(last, first + 50)  # only with absurd float ranges; keeps the output bounded
    # Multiply integers by the step rather than adding steps, so errors do not accumulate.
    ticks = [i * step for i in range(first, last + 1)]

    # Labels share one format: a step of m*10**exp needs max(0, -exp) decimals; from a
    # million up and below a thousandth the axis is scaled to an SI prefix (2.5M, 40µ).
    top = max(abs(ticks[0]), abs(ticks[-1]))
    scale, suffix = _si_prefix(top)
    decimals = max(0, -(exp - round(math.log10(scale))))
    labels = ["0" if abs(t) < step / 2 else f"{t / scale:.{decimals}f}{suffix}" for t in ticks]
    return ticks, ticks[0], ticks[-1], labels


def _log_ticks(xs, pixels):
    """Ticks for a log axis at the data's own x values (e.g. 1, 4, 16, 64 connections).

    Positions are log10(x); the axis gets 5% margin on each side, so no point sits on the
    frame, and a lone value gets half a decade either side. When the labels would collide
    on an axis `pixels` wide, only every k-th value is labelled, with the smallest k that
    fits (regular steps read better than gaps wherever there is room); the largest value is
    always labelled, in place of the k-th one before it.
    """
    values = sorted(set(xs))
    lo, hi = math.log10(values[0]), math.log10(values[-1])
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.05 if len(values) > 1 else 0.0
    lo, hi = lo - pad, hi + pad

    def fits(a, b):
        gap = (math.log10(b) - math.log10(a)) / (hi - lo) * pixels
        return gap >= (_text_width(_fmt_value(a), TICK_SIZE)
                       + _text_width(_fmt_value(b), TICK_SIZE)) / 2 + 8

    for k in range(1, len(values) + 1):
        shown = values[::k]
        if shown[-1] != values[-1]:
            if len(shown) > 1:
                shown[-1] = values[-1]
            else:
                shown.append(values[-1])
        if all(fits(a, b) for a, b in zip(shown, shown[1:])):
            break
    else:
        shown = [values[-1]]  # not even the two ends fit
    return [math.log10(v) for v in shown], lo, hi, [_fmt_value(v) for v in shown]


def _tick_target(pixels, per_tick=45):
    """Five ticks on an axis of ordinary size, fewer on a small chart (at least three)."""
    return max(3, min(5, int(pixels // per_tick)))


class _Scale:
    """Maps data values linearly onto pixels; `hi` > `lo` is guaranteed by the callers."""

    def __init__(self, lo, hi, p0, p1):
        self.lo, self.hi, self.p0, self.p1 = lo, hi, p0, p1

    def __call__(self, v):
        return self.p0 + (v - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)


# ---------------------------------------------------------------- SVG assembly

class _Svg:
    def __init__(self, width, height, title):
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(width)}" height="{_n(height)}" '
            f'viewBox="0 0 {_n(width)} {_n(height)}" font-family="{FONT}" fill="{TEXT}">',
            f"<title>{_esc(title)}</title>",
            f'<rect class="background" width="{_n(width)}" height="{_n(height)}" fill="#ffffff"/>',
        ]

    def add(self, s):
        self.parts.append(s)

    def text(self, x, y, s, size=TICK_SIZE, anchor="middle", fill=None, extra=""):
        colour = f' fill="{fill}"' if fill else ""
        self.add(f'<text x="{_n(x)}" y="{_n(y)}" font-size="{_n(size)}" '
                 f'text-anchor="{anchor}"{colour}{extra}>{_esc(s)}</text>')

    def line(self, x1, y1, x2, y2, stroke, width=1, dash=""):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" '
                 f'stroke="{stroke}" stroke-width="{_n(width)}"{d}/>')

    def marker(self, shape, x, y, colour, tooltip=None, r=3.5):
        tip = f"<title>{_esc(tooltip)}</title>" if tooltip else ""
        end = f">{tip}</" if tip else "/>"
        if shape == "circle":
            head = f'<circle class="marker" cx="{_n(x)}" cy="{_n(y)}" r="{_n(r)}"'
            close = "circle>" if tip else ""
        elif shape == "square":
            s = r * 0.9
            head = (f'<rect class="marker" x="{_n(x - s)}" y="{_n(y - s)}" '
                    f'width="{_n(2 * s)}" height="{_n(2 * s)}"')
            close = "rect>" if tip else ""
        else:
            if shape == "diamond":
                pts = [(x, y - r * 1.25), (x + r * 1.25, y), (x, y + r * 1.25), (x - r * 1.25, y)]
            else:  # triangle
                pts = [(x, y - r * 1.3), (x + r * 1.2, y + r * 0.9), (x - r * 1.2, y + r * 0.9)]
            head = '<polygon class="marker" points="%s"' % " ".join(
                f"{_n(a)},{_n(b)}" for a, b in pts)
            close = "polygon>" if tip else ""
        self.add(f'{head} fill="{colour}" stroke="#ffffff" stroke-width="1"{end}{close}')

    def render(self):
        return "\n".join(self.parts + ["</svg>"]) + "\n"


def _write_atomic(path, content):
    """Write to a temporary file in the target's directory, then rename it over the target:
    readers never see a half-written chart."""
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".plot-", suffix=".svg.tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; charts are ordinary repository files
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


class _Layout:
    """Vertical bands shared by both charts: title, legend rows, plot, x labels, note."""

    def __init__(self, width, height, names, swatch_w, note, x_label, x_tick_extra=0):
        self.width, self.height = width, height
        self.title_y = 24
        # Legend entries flow left to right, wrapping into centred rows.
        self.legend_rows = []
        row, row_w, max_w = [], 0.0, width - 40
        for name in names:
            w = swatch_w + 6 + _text_width(name, LABEL_SIZE) + 18
            if row and row_w + w > max_w:
                self.legend_rows.append((row, row_w))
                row, row_w = [], 0.0
            row.append((name, w))
            row_w += w
        if row:
            self.legend_rows.append((row, row_w))
        self.legend_y = self.title_y + 22
        # Baseline of the last text line above the plot (legend, or title without one).
        top = self.title_y
        if self.legend_rows:
            top = self.legend_y + 18 * (len(self.legend_rows) - 1)
        # The note wraps at word boundaries (it can be a whole command line).
        self.note_lines = []
        if note:
            chars = max(10, int((width - 16) / (NOTE_SIZE * 0.56)))
            for para in str(note).splitlines():
                self.note_lines += textwrap.wrap(para, chars) or [""]
        bottom = height - 8 - 13 * len(self.note_lines) - (4 if self.note_lines else 0)
        self.note_y = bottom + 4 + 13 if self.note_lines else None  # first baseline
        if x_label:
            self.x_label_y = bottom - 2
            bottom -= 18
        else:
            self.x_label_y = None
        self.plot_top = top + 24
        self.plot_bottom = max(self.plot_top + 10, bottom - 22 - x_tick_extra)

    def draw_title_legend_note(self, svg, title, entries):
        # A long title shrinks to fit the width (bold glyphs are a little wider).
        size = max(9.0, min(TITLE_SIZE, (self.width - 16) / (max(1, len(str(title))) * 0.6)))
        svg.text(self.width / 2, self.title_y, title, size=size, extra=' font-weight="bold"')
        draw = dict(entries)
        y = self.legend_y
        for row, row_w in self.legend_rows:
            x = (self.width - row_w) / 2 + 9
            for name, w in row:
                x_text = draw[name](x, y - 4)
                svg.text(x_text, y, name, size=LABEL_SIZE, anchor="start")
                x += w
            y += 18
        if self.note_lines:
            y = self.note_y
            for line in self.note_lines:
                svg.text(8, y, line, size=NOTE_SIZE, anchor="start", fill=MUTED)
                y += 13


def _frame(svg, lay, left, right, y_scale, y_ticks, y_labels, y_label, x_label):
    """Horizontal grid lines with y tick labels, the axis lines and both axis labels."""
    for t, label in zip(y_ticks, y_labels):
        y = y_scale(t)
        svg.line(left, y, right, y, GRID)
        svg.text(left - 6, y + 4, label, anchor="end")
    svg.line(left, lay.plot_top, left, lay.plot_bottom, AXIS)
    svg.line(left, lay.plot_bottom, right, lay.plot_bottom, AXIS)
    if y_label:
        cy = (lay.plot_top + lay.plot_bottom) / 2
        svg.text(16, cy, y_label, size=LABEL_SIZE,
                 extra=f' transform="rotate(-90 16 {_n(cy)})" dominant-baseline="middle"')
    if x_label and lay.x_label_y is not None:
        svg.text((left + right) / 2, lay.x_label_y, x_label, size=LABEL_SIZE)


def _left_margin(y_labels, y_label):
    widest = max((_text_width(s, TICK_SIZE) for s in y_labels), default=0)
    return (30 if y_label else 8) + widest + 10


def _check_size(width, height):
    if not (width > 0 and height > 0):
        raise ValueError(f"width and height must be positive, not {width}x{height}")


# ---------------------------------------------------------------- line chart

def line_chart(path, title, x_label, y_label, series, log_x=False, y_from_zero=True,
               note=None, *, width=720, height=400):
    """Write a line chart of `series` (name -> list of (x, y)) to `path` as SVG; return `path`.

    One polyline with point markers per non-empty series, points sorted by x. About five
    1-2-5 ticks per axis; with log_x=True the x ticks sit at the data's x values instead
    (points with x <= 0 cannot be placed and are dropped with a warning). The y axis starts at
    zero unless y_from_zero=False. `note` is printed small at the bottom, wrapped as needed.
    Non-finite values are dropped.
    """
    _check_size(width, height)
    data = {}
    for name, points in series.items():
        pts = []
        for p in points:
            x, y = _finite(p[0]), _finite(p[1])
            if x is None or y is None:
                continue
            if log_x and x <= 0:
                warnings.warn(f"line_chart: {name!r}: x={x:g} dropped from log axis",
                              stacklevel=2)
                continue
            pts.append((x, y))
        data[str(name)] = sorted(pts)
    names = list(data)
    all_pts = [p for pts in data.values() for p in pts]

    lay = _Layout(width, height, names, 24, note, x_label)

    # y axis: nice linear ticks over the data (and zero).
    ys = [y for _, y in all_pts] or [0.0]
    y_ticks, y_lo, y_hi, y_labels = _linear_ticks(*_span(min(ys), max(ys), y_from_zero),
                                                  _tick_target(lay.plot_bottom - lay.plot_top))
    left = _left_margin(y_labels, y_label)
    y_scale = _Scale(y_lo, y_hi, lay.plot_bottom, lay.plot_top)
    right = max(left + 10, width - 24)

    # x axis: log10 of the values on a log axis, so one scale class serves both.
    if log_x:
        xs = [x for x, _ in all_pts] or [1.0]
        x_ticks, x_lo, x_hi, x_labels = _log_ticks(xs, right - left - 10)
        to_x = math.log10
    else:
        xs = [x for x, _ in all_pts] or [0.0]
        x_ticks, x_lo, x_hi, x_labels = _linear_ticks(*_span(min(xs), max(xs)),
                                                      _tick_target(right - left, 70))
        to_x = float
    # The last x tick label is centred on the plot's right edge: leave it room.
    right = max(left + 10, width - max(24, _text_width(x_labels[-1], TICK_SIZE) / 2 + 8))
    x_scale = _Scale(x_lo, x_hi, left, right)

    svg = _Svg(width, height, title)
    for t in x_ticks:
        svg.line(x_scale(t), lay.plot_top, x_scale(t), lay.plot_bottom, GRID)
    _frame(svg, lay, left, right, y_scale, y_ticks, y_labels, y_label, x_label)
    for t, label in zip(x_ticks, x_labels):
        x = x_scale(t)
        svg.line(x, lay.plot_bottom, x, lay.plot_bottom + 4, AXIS)
        svg.text(x, lay.plot_bottom + 16, label)

    legend = []
    for i, name in enumerate(names):
        colour = PALETTE[i % len(PALETTE)]
        shape = MARKERS[i % len(MARKERS)]
        dash = DASHES[(i // len(PALETTE)) % len(DASHES)]
        d = f' stroke-dasharray="{dash}"' if dash else ""
        pts = [(x_scale(to_x(x)), y_scale(y)) for x, y in data[name]]
        if pts:
            svg.add(f'<polyline class="series" points="'
                    + " ".join(f"{_n(px)},{_n(py)}" for px, py in pts)
                    + f'" fill="none" stroke="{colour}" stroke-width="2" '
                      f'stroke-linejoin="round" stroke-linecap="round"{d}/>')
            for (x, y), (px, py) in zip(data[name], pts):
                svg.marker(shape, px, py, colour, f"{name}: {_fmt_value(x)}, {_fmt_sig(y)}")

        def swatch(x, y, colour=colour, shape=shape, dash=dash):
            svg.line(x, y, x + 24, y, colour, 2, dash)
            svg.marker(shape, x + 12, y, colour)
            return x + 30
        legend.append((name, swatch))
    lay.draw_title_legend_note(svg, title, legend)
    return _write_atomic(path, svg.render())


# ---------------------------------------------------------------- bar chart

def bar_chart(path, title, y_label, categories, series, note=None, reference=None, *,
              width=720, height=400):
    """Write a grouped bar chart to `path` as SVG; return `path`.

    `categories` name the groups along the x axis; `series` maps a name to one value per
    category (None or a non-finite value leaves a gap). Each bar carries its value to three
    significant digits. The y axis always includes zero; negative values hang below it.
    `reference=(value, label)` draws a dashed horizontal line, e.g. (0.8, "goal 0.80").
    """
    _check_size(width, height)
    categories = [str(c) for c in categories]
    data = {}
    for name, values in series.items():
        values = list(values)
        if len(values) != len(categories):
            raise ValueError(f"bar_chart: series {name!r} has {len(values)} values "
                             f"for {len(categories)} categories")
        data[str(name)] = [_finite(v) for v in values]
    names = list(data)

    ref_value = _finite(reference[0]) if reference else None
    values = [v for vs in data.values() for v in vs if v is not None]
    if ref_value is not None:
        values.append(ref_value)
    values = values or [0.0]

    # Category labels turn 30 degrees when they would overlap; estimate before the layout so
    # the bottom band can grow for them (left margin is a guess here, refined below).
    group_guess = (width - 80) / max(1, len(categories))
    widest_cat = max((_text_width(c, TICK_SIZE) for c in categories), default=0)
    rotate = widest_cat > group_guess * 0.95
    extra = min(widest_cat * 0.5, height * 0.25) if rotate else 0
    lay = _Layout(width, height, names, 12, note, None, extra)
    lay.plot_top += 4  # room for value labels above the tallest bar
    plot_h = lay.plot_bottom - lay.plot_top

    # Value labels: horizontal, shrunk to the bar's width down to 8 px; narrower bars get them
    # turned to run up the bar's axis instead. Those are long, so the y range then grows to
    # leave the longest label room above the tallest bar (and below the deepest one).
    n_cat, n_ser = len(categories), len(names)
    bar_guess = (width - 104) / max(1, n_cat) * 0.8 / max(1, n_ser)
    longest = max((len(_fmt_sig(v)) for vs in data.values() for v in vs if v is not None),
                  default=1)
    vertical = bar_guess < longest * 0.56 * 8
    lo, hi = _span(min(values), max(values), True)
    room = longest * 0.56 * 9 + 8
    if vertical and plot_h > 3 * room:
        grow = (hi - lo) * room / (plot_h - room)
        hi, lo = hi + (grow if hi > 0 else 0), lo - (grow if lo < 0 else 0)

    y_ticks, y_lo, y_hi, y_labels = _linear_ticks(lo, hi, _tick_target(plot_h))
    left = _left_margin(y_labels, y_label)
    right = max(left + 10, width - 24)
    y_scale = _Scale(y_lo, y_hi, lay.plot_bottom, lay.plot_top)

    svg = _Svg(width, height, title)
    _frame(svg, lay, left, right, y_scale, y_ticks, y_labels, y_label, None)

    # Each category gets an equal slot; its bars fill the middle 80%, side by side.
    slot = (right - left) / max(1, n_cat)
    bar_w = slot * 0.8 / max(1, n_ser)
    zero = y_scale(0.0)
    for c, cat in enumerate(categories):
        x0 = left + slot * c + slot * 0.1
        for s, name in enumerate(names):
            v = data[name][c]
            if v is None:
                continue
            x = x0 + bar_w * s
            y = y_scale(v)
            svg.add(f'<rect class="bar" x="{_n(x + 0.5)}" y="{_n(min(y, zero))}" '
                    f'width="{_n(max(0.0, bar_w - 1))}" height="{_n(abs(zero - y))}" '
                    f'fill="{PALETTE[s % len(PALETTE)]}"><title>{_esc(name)}, {_esc(cat)}: '
                    f"{_esc(_fmt_sig(v))}</title></rect>")
            label = _fmt_sig(v)
            if vertical:
                # Rotated a quarter turn: the baseline sits right of the bar's centre line.
                lx, ly = x + bar_w / 2 + 9 * 0.35, (y - 3 if v >= 0 else y + 3)
                svg.text(lx, ly, label, size=9, anchor="start" if v >= 0 else "end",
                         extra=f' transform="rotate(-90 {_n(lx)} {_n(ly)})"')
            else:
                size = max(8.0, min(TICK_SIZE - 1, bar_w / (len(label) * 0.56)))
                ly = y - 4 if v >= 0 else y + size + 2
                svg.text(x + bar_w / 2, ly, label, size=size)
        cx = left + slot * (c + 0.5)
        if rotate:
            ty = lay.plot_bottom + 14
            svg.text(cx, ty, cat, anchor="end",
                     extra=f' transform="rotate(-30 {_n(cx)} {_n(ty)})"')
        else:
            svg.text(cx, lay.plot_bottom + 16, cat)

    if ref_value is not None:
        y = y_scale(ref_value)
        svg.line(left, y, right, y, "#333333", 1.5, "6 4")
        if len(reference) > 1 and reference[1]:
            # A white halo keeps the label readable where it crosses a bar.
            svg.text(right - 2, y - 5, reference[1], anchor="end", fill="#333333",
                     extra=' stroke="#ffffff" stroke-width="3" paint-order="stroke"')

    def swatch_for(colour):
        def swatch(x, y):
            svg.add(f'<rect class="legend-swatch" x="{_n(x)}" y="{_n(y - 6)}" width="12" '
                    f'height="12" fill="{colour}"/>')
            return x + 18
        return swatch
    lay.draw_title_legend_note(svg, title, [(name, swatch_for(PALETTE[i % len(PALETTE)]))
                                            for i, name in enumerate(names)])
    return _write_atomic(path, svg.render())


# ---------------------------------------------------------------- demo

def _demo(out_dir):
    """Two example charts with made-up numbers, in the shape of bench/backends.sh's results."""
    note = "example data · plot.py demo · python3 bench/plot.py " + out_dir
    conns = [1, 2, 4, 8, 16, 32, 64]
    line = line_chart(
        os.path.join(out_dir, "example-line.svg"),
        ":encrypt throughput by key protection level", "connections (log scale)", "requests/s",
        {
            "GET /healthz": [(c, 14000 * c ** 0.62) for c in conns],
            "SOFTWARE": [(c, 12500 * c ** 0.60) for c in conns],
            "HSM (SoftHSM2)": [(c, 4200 * c ** 0.35) for c in conns],
            "EXTERNAL": [(c, 3100 * c ** 0.55) for c in conns],
        },
        log_x=True, note=note)
    bar = bar_chart(
        os.path.join(out_dir, "example-bars.svg"),
        ":encrypt requests/s relative to GET /healthz", "ratio to /healthz",
        ["1 connection", "64 connections"],
        {"SOFTWARE": [0.93, 0.86], "HSM (SoftHSM2)": [0.41, 0.22], "EXTERNAL": [0.35, 0.62]},
        note=note, reference=(0.8, "goal 0.80"))
    return [line, bar]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 bench/plot.py OUT_DIR")
    for p in _demo(sys.argv[1]):
        print(p)
