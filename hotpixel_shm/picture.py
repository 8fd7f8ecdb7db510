"""The overview picture: where the defects are, and enlarged crops of the worst.

Layout, top to bottom, on a dark background:

1. a title and a legend (one colour and one marker shape per kind, with counts);
2. the whole frame, reduced to fit ``max_side`` (area average, in bands of rows,
   so no image-sized float copy is made) or enlarged by a whole factor when it
   is small; every defect is painted in its kind's colour at its (reduced)
   position -- max-pooling the defect mask, so a single pixel survives any
   reduction -- and circled by its kind's marker; the worst ones are numbered
   (1 = worst score);
   a bad column or row (``lines.LineDefect``) is drawn over its extent in
   ``LINE_COLOUR``, with a tick in the margin beside the frame (a line one
   pixel wide is easy to miss), before the markers so none is hidden;
3. a grid of the worst defects, each a ``(2 r + 1)``-pixel square of the mean
   image enlarged with nearest-neighbour sampling, the centre pixel outlined,
   labelled with its number, kind, x, y and score.

The PNG carries text chunks that describe this geometry (``hotpixel_shm.overview``
and ``hotpixel_shm.crops``), so programs can map picture pixels back to sensor
coordinates.  Coordinates are column ``x``, row ``y``, 0-based, in the stored
pixel array (EXIF orientation not applied).
"""
from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from .bands import BandArray
from .errors import HotPixelError
from .export import atomic_write, defect_field, defect_xy, line_fields, printable
from .model import KINDS

__all__ = ["write_picture", "render_picture", "KIND_COLOURS", "LINE_COLOUR", "MAX_NUMBERED"]

#: Marker colour of each kind (RGB), also used to paint the defect pixels.
KIND_COLOURS = {
    "hot": (255, 60, 60),
    "stuck": (255, 200, 0),
    "dead": (40, 170, 255),
    "noisy": (220, 90, 255),
}
#: Colour of bad columns and rows (RGB).
LINE_COLOUR = (60, 230, 120)
#: At most this many of the worst defects get their number on the overview
#: (all are painted and circled); more labels would only cover each other.
MAX_NUMBERED = 100

_SHAPES = {"hot": "circle", "stuck": "square", "dead": "diamond", "noisy": "triangle"}
_BACKGROUND = (28, 28, 32)
_TEXT = (235, 235, 235)
_DIM_TEXT = (170, 170, 175)
_OUTSIDE = (60, 40, 60)        # crop area beyond the image border
_MARGIN = 16
_GAP = 14
_SMALL_TARGET = 800            # small frames are enlarged to about this many pixels
_CROP_TARGET = 170             # enlarged crop side, in picture pixels
_BAND_VALUES = 2 * 1024 * 1024  # float32 values in the reduction's band buffer (8 MB)


@functools.lru_cache(maxsize=None)
def _font(size):
    # Pillow's built-in font needs no font file; with FreeType it scales.
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _as_hwc(mean):
    if isinstance(mean, BandArray) and mean.ndim == 3:
        return mean     # finished band by band as the picture reads it (issue 9)
    mean = np.asarray(mean)
    if mean.ndim == 2:
        mean = mean[:, :, None]
    if mean.ndim != 3 or mean.shape[2] not in (1, 3) or mean.shape[0] < 1 or mean.shape[1] < 1:
        raise HotPixelError(f"the mean image must be (height, width, 1 or 3), got shape {mean.shape}")
    return mean


def _peak(values):
    """Largest value, NaN ignored (no warning), -inf when there is none."""
    peak = float(np.fmax.reduce(values, axis=None)) if values.size else -math.inf
    return peak if not math.isnan(peak) else -math.inf


def _reduce(mean, factor):
    """Area-average ``factor`` x ``factor`` blocks, in bands of rows.

    Returns the float32 (h, w, C) image and the full-resolution maximum (read
    on the same pass, for :func:`_white`).
    """
    height, width, chans = mean.shape
    if factor == 1:
        return np.array(mean, dtype=np.float32), _peak(mean)
    peak = -math.inf
    h, w = -(-height // factor), -(-width // factor)
    out = np.empty((h, w, chans), dtype=np.float32)
    rows = max(1, _BAND_VALUES // (w * factor * chans))
    # One float32 buffer for a band of row sums, reused: the full-size mean
    # (often float64) is never copied, and the working memory stays ~8 MB.
    acc = np.empty((rows, w * factor, chans), dtype=np.float32)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        n = r1 - r0
        band = np.asarray(mean[r0 * factor:r1 * factor])
        peak = max(peak, _peak(band))
        part = acc[:n]
        for i in range(factor):
            src = band[i::factor]  # row i of every block
            k = src.shape[0]
            if i == 0:
                np.copyto(part[:, :width], src, casting="same_kind")
            else:
                part[:k, :width] += src
            if k < n:
                # The image's last block row is short: repeat its last row, so
                # edge blocks average only the pixels they really have.
                part[k:, :width] += band[-1]
        if w * factor != width:
            part[:, width:] = part[:, width - 1:width]
        # Then the columns of each block: strided sums, about 4x faster than
        # a reshape+mean over two axes.
        blocks = part.reshape(n, w, factor, chans)
        dest = out[r0:r1]
        np.copyto(dest, blocks[:, :, 0])
        for j in range(1, factor):
            dest += blocks[:, :, j]
        dest *= np.float32(1.0 / (factor * factor))
    return out, peak


def _white(peak):
    """Guess the samples' white level from the largest mean: 255, 1023, 4095, 16383 or 65535."""
    if not math.isfinite(peak) or peak <= 255:
        return 255.0
    return float(2 ** math.ceil(math.log2(peak + 1)) - 1)


def _stretch(small, white):
    """Display range (lo, hi): the 0.1 and 99.9 percentiles of the (reduced) image.

    Percentiles rather than 0..white, so that 16-bit data, raw data using a
    few bits of their range and dark photo sets are visible.  The span is at
    least 10 % of the white level, so that a nearly flat frame is shown as
    flat grey instead of as noise amplified a hundredfold.
    """
    sample = small
    step = int(math.ceil(math.sqrt(small.size / 2_000_000))) if small.size > 2_000_000 else 1
    if step > 1:
        sample = small[::step, ::step]
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [0.1, 99.9]))
    span = 0.1 * white
    if hi - lo < span:
        mid = (hi + lo) / 2
        lo, hi = mid - span / 2, mid + span / 2
    return lo, hi


def _to_rgb8(values, lo, hi, *, overwrite=False):
    """float (h, w, C) -> uint8 (h, w, 3); NaN shown as black.

    With ``overwrite`` the float array is used as scratch space, so the
    overview costs no further float copies.
    """
    scaled = values if overwrite else np.array(values, dtype=np.float32)
    scaled -= np.float32(lo)
    scaled *= np.float32(255.0 / (hi - lo))
    np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    scaled += np.float32(0.5)
    rgb = scaled.astype(np.uint8)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return rgb


def _overview(mean, reduce):
    """The frame reduced by ``reduce`` as uint8 RGB, and the display range used."""
    if reduce > 1:
        small, peak = _reduce(mean, reduce)
        lo, hi = _stretch(small, _white(peak))
        return _to_rgb8(small, lo, hi, overwrite=True), lo, hi
    # Full size: map band by band instead of making a float copy of the frame.
    height, width, chans = mean.shape
    step = max(1, int(math.ceil(math.sqrt(mean.size / 2_000_000))))
    rows = max(1, _BAND_VALUES // (width * chans))
    peak = max(_peak(mean[r0:r0 + rows]) for r0 in range(0, height, rows))
    lo, hi = _stretch(np.asarray(mean[::step, ::step], dtype=np.float32), _white(peak))
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    for r0 in range(0, height, rows):
        rgb[r0:r0 + rows] = _to_rgb8(mean[r0:r0 + rows], lo, hi)
    return rgb, lo, hi


def _rank(defects):
    """Defects sorted worst first (highest score; NaN scores last, order kept on ties)."""
    def key(item):
        score = defect_field(item[1], "score")
        try:
            score = float(score)
        except (TypeError, ValueError):
            score = math.nan
        return (0, -score, item[0]) if math.isfinite(score) else (1, 0.0, item[0])
    return [d for _, d in sorted(enumerate(defects), key=key)]


def _marker(draw, shape, cx, cy, radius, colour, width=2):
    # A black halo under the colour keeps the marker visible on any background.
    _outline(draw, shape, cx, cy, radius, (0, 0, 0), width + 2)
    _outline(draw, shape, cx, cy, radius, colour, width)


def _outline(draw, shape, cx, cy, radius, colour, width):
    r = radius
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=width)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], outline=colour, width=width)
    elif shape == "diamond":
        r = r * 1.3
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], outline=colour, width=width)
    else:
        r = r * 1.35
        draw.polygon([(cx, cy - r), (cx + r * 0.87, cy + r * 0.5), (cx - r * 0.87, cy + r * 0.5)],
                     outline=colour, width=width)


def _text_width(font, text):
    left, _, right, _ = font.getbbox(text)
    return right - left


def _geometry(height, width, max_side):
    """(reduce, enlarge): whole-number factors that make the frame fit ``max_side``."""
    longest = max(height, width)
    if longest > max_side:
        return -(-longest // max_side), 1
    return 1, max(1, min(max_side, _SMALL_TARGET) // longest)


def render_picture(mean, defects, *, max_side=2000, crops=12, crop_radius=8, title=None,
                   lines=()):
    """Draw the overview picture (see the module docstring) and return it.

    Parameters are those of :func:`write_picture`.

    Returns
    -------
    image : PIL.Image.Image
        RGB picture.
    info : PIL.PngImagePlugin.PngInfo
        PNG text chunks: ``Title``, ``Software``, ``Description`` and the
        geometry: ``hotpixel_shm.overview`` = ``"left=L top=T reduce=F
        enlarge=K width=W height=H"`` (sensor pixel ``(x, y)`` is drawn at
        ``(L + (x // F) * K, T + (y // F) * K)``, a ``K`` x ``K`` block), and
        ``hotpixel_shm.crops`` = one ``"n:x,y@left,top,zoom"`` per crop,
        separated by spaces (crop ``n`` shows sensor pixel ``(x, y)`` at its
        centre; its top-left pixel is ``(x - r, y - r)``), and
        ``hotpixel_shm.lines`` = one ``"column:x:from-to"`` or
        ``"row:y:from-to"`` per line defect, separated by spaces.
    """
    mean = _as_hwc(mean)
    ranked, positions = _checked_defects(mean, defects, max_side, crop_radius)
    bad_lines = _checked_lines(mean.shape, lines)
    reduce, enlarge = _geometry(mean.shape[0], mean.shape[1], max_side)
    overview, lo, hi = _overview(mean, reduce)
    overview_img = Image.fromarray(overview)
    if enlarge > 1:
        ov_h, ov_w = overview.shape[:2]
        overview_img = overview_img.resize((ov_w * enlarge, ov_h * enlarge), Image.Resampling.NEAREST)
    lay = _Layout(mean.shape, ranked, overview_img.size, reduce, enlarge, int(crops),
                  int(crop_radius), title, bad_lines)
    canvas = Image.new("RGB", (lay.canvas_w, lay.canvas_h), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    _draw_header(draw, lay)
    canvas.paste(overview_img, (lay.ov_left, lay.ov_top))
    _draw_lines(draw, lay, bad_lines)
    _draw_markers(draw, lay, ranked, positions)
    crop_entries = _draw_crops(canvas, draw, lay, mean, ranked, positions, lo, hi)
    return canvas, _png_info(lay, crop_entries, bad_lines)


def _checked_defects(mean, defects, max_side, crop_radius):
    """The defects ranked worst first and their (x, y), after checking them
    and the picture's parameters."""
    height, width, _ = mean.shape
    if max_side < 16:
        raise HotPixelError(f"max_side must be at least 16 pixels, got {max_side}")
    if int(crop_radius) < 0:
        raise HotPixelError(f"crop_radius must be >= 0, got {int(crop_radius)}")
    ranked = _rank(list(defects))
    positions = [defect_xy(d) for d in ranked]
    for (x, y), d in zip(positions, ranked):
        if x >= width or y >= height:
            raise HotPixelError(f"defect at x={x}, y={y} lies outside the {width}x{height} image")
        if defect_field(d, "kind") not in KIND_COLOURS:
            raise HotPixelError(f"defect at x={x}, y={y} has unknown kind {defect_field(d, 'kind')!r}")
    return ranked, positions


def _checked_lines(shape, lines):
    """``(kind, index, start, stop)`` of each line defect, checked against the frame."""
    height, width = shape[:2]
    out = []
    for line in lines or ():
        kind, index, start, stop = line_fields(line)[:4]
        across, along = (width, height) if kind == "column" else (height, width)
        if index >= across or stop >= along:
            raise HotPixelError(f"{kind} defect at {index} from {start} to {stop} lies outside "
                                f"the {width}x{height} image")
        out.append((kind, index, start, stop))
    return out


class _Layout:
    """Fonts, texts and every position of the picture, decided before drawing."""

    def __init__(self, shape, ranked, overview_size, reduce, enlarge, crops, crop_radius, title,
                 lines=()):
        from . import __version__
        height, width, chans = shape
        self.reduce, self.enlarge, self.crop_radius = reduce, enlarge, crop_radius
        self.ov_w, self.ov_h = ov_w, ov_h = overview_size
        # Bigger text and markers on a big overview, so the picture reads at "fit to screen".
        big = max(ov_w, ov_h) >= 1200
        sizes = (26, 18, 16) if big else (18, 13, 12)
        self.title_font, self.font, self.small_font = (_font(size) for size in sizes)
        self.line = line = 23 if big else 17
        self.radius = max(11 if big else 7, int(0.75 * enlarge) + 4)
        self.mark_w = 3 if big else 2
        pad = self.radius + 4  # room for markers and numbers of defects at the frame's edge
        self.n_crops = min(max(0, crops), len(ranked))
        self.n_defects = len(ranked)
        self.side = 2 * crop_radius + 1
        self.zoom = max(1, (_CROP_TARGET * 13 // 10 if big else _CROP_TARGET) // self.side)
        self.tile = tile = self.side * self.zoom
        self.tile_h = tile + 4 + 4 * line  # four label lines under each crop

        self.pad = pad
        self.n_lines = len(lines)
        self._texts(ranked, width, height, chans, title, __version__)
        crops_cols_min = min(self.n_crops, 4)
        number_w = _text_width(self.font, str(self.numbered)) + 4
        content_w = max(ov_w + pad + number_w, _text_width(self.title_font, self.title),
                        _text_width(self.small_font, self.info_line), self.legend_w,
                        crops_cols_min * (tile + _GAP) - _GAP if crops_cols_min else 0, 320)
        self.canvas_w = content_w + 2 * _MARGIN
        self.title_h = line + 10
        header_h = _MARGIN + self.title_h + line + 6 + line + 6
        self.ov_left, self.ov_top = _MARGIN + pad, header_h + pad
        self.y_after_ov = self.ov_top + ov_h + pad + _GAP
        if self.n_crops:
            self.cols = max(1, (content_w + _GAP) // (tile + _GAP))
            rows = -(-self.n_crops // self.cols)
            crops_h = 2 * line + rows * (self.tile_h + _GAP)
        else:
            self.cols = 0
            crops_h = 40
        self.canvas_h = self.y_after_ov + crops_h + _MARGIN

    def _texts(self, ranked, width, height, chans, title, version):
        counts = {k: sum(1 for d in ranked if defect_field(d, "kind") == k) for k in KINDS}
        found = f"{len(ranked)} defect(s) found" if ranked else "no defects found"
        if self.n_lines:
            found = (f"{len(ranked)} defect(s) and " if ranked else "") + \
                f"{self.n_lines} bad column(s)/row(s) found"
        self.title = printable(title) if title else f"hotpixel_shm {version}: {found}"
        if self.reduce > 1:
            scale = f"overview reduced 1:{self.reduce} (area average; defect pixels max-pooled, none lost)"
        elif self.enlarge > 1:
            scale = f"overview enlarged {self.enlarge}x"
        else:
            scale = "overview at 1:1"
        self.info_line = (f"{width} x {height} px, {chans} channel(s); {scale}; "
                          "x = column, y = row, 0-based, stored pixel array (EXIF orientation not applied)")
        self.numbered = min(len(ranked), MAX_NUMBERED)
        self.legend = [(k, f"{k} ({counts[k]})") for k in KINDS]
        if self.n_lines:
            self.legend.append(("line", f"column/row ({self.n_lines})"))
        self.numbers_note = ("numbers: rank by score, 1 = worst" if self.numbered == len(ranked)
                             else f"numbers on the {self.numbered} worst of {len(ranked)}, 1 = worst")
        self.legend_w = (sum(self.line + 12 + _text_width(self.font, t) + 18 for _, t in self.legend)
                         + _text_width(self.font, self.numbers_note))


def _draw_header(draw, lay):
    """1. Title, the frame's description and the legend."""
    line = lay.line
    draw.text((_MARGIN, _MARGIN), lay.title, fill=_TEXT, font=lay.title_font)
    draw.text((_MARGIN, _MARGIN + lay.title_h), lay.info_line, fill=_DIM_TEXT, font=lay.small_font)
    lx, ly = _MARGIN, _MARGIN + lay.title_h + line + 6
    swatch = line // 2 - 1
    for kind, text in lay.legend:
        if kind == "line":
            draw.line([(lx + swatch + 2, ly + 2), (lx + swatch + 2, ly + line - 2)],
                      fill=LINE_COLOUR, width=3)
        else:
            _marker(draw, _SHAPES[kind], lx + swatch + 2, ly + line // 2, swatch, KIND_COLOURS[kind])
        draw.text((lx + 2 * swatch + 10, ly + 2), text, fill=_TEXT, font=lay.font)
        lx += 2 * swatch + 14 + _text_width(lay.font, text) + 18
    draw.text((lx, ly + 2), lay.numbers_note, fill=_DIM_TEXT, font=lay.font)


def _draw_lines(draw, lay, lines):
    """2. Bad columns and rows over their extent, each with a tick in the
    margin above (column) or left (row) of the frame."""
    reduce, enlarge = lay.reduce, lay.enlarge
    width = max(1, enlarge // 2)
    for kind, index, start, stop in lines:
        across = (index // reduce) * enlarge + enlarge // 2
        a, b = (start // reduce) * enlarge, (stop // reduce) * enlarge + enlarge - 1
        if kind == "column":
            x = lay.ov_left + across
            draw.line([(x, lay.ov_top + a), (x, lay.ov_top + b)], fill=LINE_COLOUR, width=width)
            draw.line([(x, lay.ov_top - lay.pad + 2), (x, lay.ov_top - 3)], fill=LINE_COLOUR,
                      width=max(2, width))
        else:
            y = lay.ov_top + across
            draw.line([(lay.ov_left + a, y), (lay.ov_left + b, y)], fill=LINE_COLOUR, width=width)
            draw.line([(lay.ov_left - lay.pad + 2, y), (lay.ov_left - 3, y)], fill=LINE_COLOUR,
                      width=max(2, width))


def _draw_markers(draw, lay, ranked, positions):
    """2. Every defect marked on the frame (already pasted), worst on top."""
    reduce, enlarge, radius, line = lay.reduce, lay.enlarge, lay.radius, lay.line
    for rank in range(len(ranked) - 1, -1, -1):  # worst drawn last, on top
        (x, y), d = positions[rank], ranked[rank]
        kind = defect_field(d, "kind")
        cx = lay.ov_left + (x // reduce) * enlarge + enlarge / 2
        cy = lay.ov_top + (y // reduce) * enlarge + enlarge / 2
        _marker(draw, _SHAPES[kind], cx, cy, radius, KIND_COLOURS[kind], lay.mark_w)
        if rank < lay.numbered:
            draw.text((cx + radius + 2, cy - radius - line // 2), str(rank + 1), fill=KIND_COLOURS[kind],
                      font=lay.font, stroke_width=2, stroke_fill=(0, 0, 0))

    # The max-pooled defect mask, painted after the markers so that no marker
    # or number hides a defect: a reduced pixel holding any defect takes the
    # colour of its worst one (painted last).
    for rank in range(len(ranked) - 1, -1, -1):
        (x, y), kind = positions[rank], defect_field(ranked[rank], "kind")
        px, py = lay.ov_left + (x // reduce) * enlarge, lay.ov_top + (y // reduce) * enlarge
        draw.rectangle([px, py, px + enlarge - 1, py + enlarge - 1], fill=KIND_COLOURS[kind])


def _draw_crops(canvas, draw, lay, mean, ranked, positions, lo, hi):
    """3. The worst defects, enlarged; returns the crops' PNG text entries."""
    crop_entries = []
    top, line, zoom, tile = lay.y_after_ov, lay.line, lay.zoom, lay.tile
    if not lay.n_crops:
        message = ("no crops requested" if ranked else
                   "no pixel defects found" if lay.n_lines else "no defects found")
        draw.text((_MARGIN, top), message, fill=(120, 220, 120), font=lay.title_font)
        return crop_entries
    draw.text((_MARGIN, top), f"The {lay.n_crops} worst defect(s), {lay.side} x {lay.side} px of the "
              f"mean image enlarged {zoom}x, centre pixel outlined:", fill=_TEXT, font=lay.font)
    top += 2 * line
    for i in range(lay.n_crops):
        (x, y), d = positions[i], ranked[i]
        kind = defect_field(d, "kind")
        left = _MARGIN + (i % lay.cols) * (tile + _GAP)
        tile_top = top + (i // lay.cols) * (lay.tile_h + _GAP)
        canvas.paste(_crop_image(mean, x, y, lay.crop_radius, zoom, lo, hi), (left, tile_top))
        c0 = lay.crop_radius * zoom
        draw.rectangle([left + c0 - 2, tile_top + c0 - 2, left + c0 + zoom + 1, tile_top + c0 + zoom + 1],
                       outline=KIND_COLOURS[kind], width=2)
        ty = tile_top + tile + 4
        draw.text((left, ty), f"#{i + 1} {kind}", fill=KIND_COLOURS[kind], font=lay.font)
        draw.text((left, ty + line), f"x={x} y={y}", fill=_TEXT, font=lay.font)
        draw.text((left, ty + 2 * line), f"score {_fmt(defect_field(d, 'score'))}", fill=_TEXT, font=lay.font)
        draw.text((left, ty + 3 * line),
                  f"mean {_fmt(defect_field(d, 'mean'))} / nbr {_fmt(defect_field(d, 'neighbour_mean'))}",
                  fill=_DIM_TEXT, font=lay.small_font)
        crop_entries.append(f"{i + 1}:{x},{y}@{left},{tile_top},{zoom}")
    return crop_entries


def _png_info(lay, crop_entries, lines=()):
    """The PNG text chunks: title, software, coordinates and geometry."""
    from . import __version__
    info = PngInfo()
    info.add_text("Title", lay.title)
    info.add_text("Software", f"hotpixel_shm {__version__}")
    info.add_text("Description", "Defective pixels; x = column, y = row, 0-based, in the stored "
                  "pixel array (EXIF orientation not applied)")
    info.add_text("hotpixel_shm.overview", f"left={lay.ov_left} top={lay.ov_top} reduce={lay.reduce} "
                  f"enlarge={lay.enlarge} width={lay.ov_w} height={lay.ov_h}")
    info.add_text("hotpixel_shm.crops", " ".join(crop_entries))
    info.add_text("hotpixel_shm.lines", " ".join(f"{k}:{i}:{a}-{b}" for k, i, a, b in lines))
    return info


def _fmt(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "?"
    if not math.isfinite(value):
        return "-"
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"


def _crop_image(mean, x, y, radius, zoom, lo, hi):
    """The (2 r + 1)-square around (x, y), display-mapped and enlarged; outside the frame shaded."""
    height, width, chans = mean.shape
    side = 2 * radius + 1
    window = np.full((side, side, chans), np.nan, dtype=np.float32)
    y0, y1 = max(0, y - radius), min(height, y + radius + 1)
    x0, x1 = max(0, x - radius), min(width, x + radius + 1)
    window[y0 - (y - radius):y1 - (y - radius), x0 - (x - radius):x1 - (x - radius)] = mean[y0:y1, x0:x1]
    outside = np.zeros((side, side), dtype=bool)
    outside[:y0 - (y - radius)] = True
    outside[y1 - (y - radius):] = True
    outside[:, :x0 - (x - radius)] = True
    outside[:, x1 - (x - radius):] = True
    rgb = _to_rgb8(window, lo, hi)
    rgb[outside] = _OUTSIDE
    return Image.fromarray(rgb).resize((side * zoom, side * zoom), Image.Resampling.NEAREST)


def write_picture(path, mean, defects, *, max_side=2000, crops=12, crop_radius=8, title=None,
                  lines=()) -> None:
    """Write the overview PNG: the frame with every defect marked, and crops of the worst.

    Parameters
    ----------
    path : path-like
        Output PNG; written atomically.
    mean : array_like, shape (H, W, C) or (H, W)
        Per-pixel mean image, C = 1 or 3, in the sample range (0-255 for
        8-bit, 0-65535 for 16-bit).  Shown with a percentile stretch (0.1 to
        99.9 %), so 16-bit data and dark frames are visible too; the stretch
        spans at least 10 % of the white level (guessed from the maximum:
        255, 1023, 4095, 16383 or 65535), so a flat frame looks flat rather
        than like amplified noise.  It is read in bands of rows; no
        full-size float copy is made.
    defects : iterable of Defect or mapping
        Ranked by score (1 = worst).
    max_side : int
        Longest side of the overview.  A larger frame is reduced by the
        smallest whole factor that fits; a smaller one is enlarged by a whole
        factor (nearest neighbour) to about 800 pixels so that it is legible.
    crops : int
        How many of the worst defects get an enlarged crop (0 for none).
    crop_radius : int
        Crops are ``2 * crop_radius + 1`` pixels square, enlarged to about
        170 picture pixels.
    title : str, optional
        First line of the picture (default: tool, version and defect count).
    lines : iterable of LineDefect or mapping, optional
        Bad columns and rows (``lines.find_lines`` or the report's
        ``lines`` entries), drawn over their extent in ``LINE_COLOUR``.

    Raises
    ------
    HotPixelError
        On a bad shape, a defect or line outside the frame, or if the file cannot be written.

    Notes
    -----
    Coordinates shown are column ``x``, row ``y``, 0-based, in the stored
    pixel array (EXIF orientation not applied).  On the overview every defect
    is painted in its kind's colour (the max-pooled defect mask, so single
    pixels survive any reduction) and circled with its kind's marker: hot =
    red circle, stuck = yellow square, dead = blue diamond, noisy = violet
    triangle; bad columns and rows are green lines with a tick in the
    margin; the worst :data:`MAX_NUMBERED` carry their rank.  With no
    defects the picture shows the frame and "no defects found".
    """
    image, info = render_picture(mean, defects, max_side=max_side, crops=crops,
                                 crop_radius=crop_radius, title=title, lines=lines)
    atomic_write(path, lambda f: image.save(f, format="PNG", pnginfo=info), mode="wb")
