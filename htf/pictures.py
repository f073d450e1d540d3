"""Heat-map pictures that explain themselves; one style for every picture of the project.

:func:`heatmap_figure` is the picture the evaluator's report, ``localize`` stills and
``localize`` videos all use: a title, the frame and the heat map over the frame side by
side (so the frame stays visible), a colour bar with its scale, the outline of the
predicted mask that cIoU is computed on, the ground-truth boxes and a legend that says
what each mark means. The frame keeps its aspect ratio at a readable size.

Pure functions on numpy images (uint8 RGB), written to PNG with OpenCV. Boxes are drawn
last, without anti-aliasing, so every outline pixel has exactly its annotator's colour
(the tests check that pixel by pixel).
"""
from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from htf.metrics import min_max, prediction_mask, upsample

# One colour per annotator (RGB), then repeated.
BOX_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 255, 0), (255, 255, 255), (255, 0, 255), (0, 255, 255), (255, 128, 0))
TEXT_COLOR = (255, 255, 255)
MASK_COLOR = (255, 255, 0)      # the predicted mask's outline (no annotator has yellow)
INK = (30, 30, 30)              # text on the figure's white background
PAPER = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX   # the old corner label only; the figure uses a TrueType font
# Display size of one panel: short side at least MIN_SIDE, long side at most MAX_LONG
# (a 128-px frame is enlarged, a 720p frame shrunk; the aspect ratio is always kept).
MIN_SIDE, MAX_LONG = 256, 640


def colormap_id(name: str) -> int:
    attr = f"COLORMAP_{name.upper()}"
    if not hasattr(cv2, attr):
        raise ValueError(f"unknown colormap {name!r} (OpenCV has e.g. jet, turbo, inferno, viridis)")
    return int(getattr(cv2, attr))


@functools.lru_cache(maxsize=8)
def colormap_lut(name: str) -> np.ndarray:
    """[256, 3] uint8 RGB colours of an OpenCV colour map (cv2.applyColorMap rebuilds its
    table on every call, which dominates the cost of a video frame)."""
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    return cv2.cvtColor(cv2.applyColorMap(ramp, colormap_id(name)), cv2.COLOR_BGR2RGB).reshape(256, 3)


def heat_to_rgb(heat: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Heat in 0..1 [H, W] -> uint8 RGB colour image."""
    u8 = np.clip(np.asarray(heat, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return colormap_lut(colormap)[u8]


def heat_for_frame(map2d: np.ndarray, height: int, width: int,
                   interpolation: str = "bicubic") -> np.ndarray:
    """A raw map (7x7 or any size) -> min-max heat at the frame's size."""
    m = np.asarray(map2d, dtype=np.float64)
    if not np.isfinite(m).all():
        raise ValueError("map contains NaN or infinite values")
    side = max(height, width)
    square = min_max(upsample(m, side, interpolation)).astype(np.float32)
    return cv2.resize(square, (width, height), interpolation=cv2.INTER_LINEAR)


def blend(frame: np.ndarray, heat: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """(1 - alpha) * frame + alpha * colour(heat), uint8 RGB."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    if heat.shape != frame.shape[:2]:
        raise ValueError(f"heat shape {heat.shape} != frame size {frame.shape[:2]}")
    color = heat_to_rgb(heat, colormap).astype(np.float32)
    out = (1.0 - alpha) * frame.astype(np.float32) + alpha * color
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def box_pixels(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """Normalised xyxy -> inclusive pixel rectangle (x0, y0, x1, y1) inside the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x0 = int(np.clip(np.floor(x1 * width), 0, width - 1))
    y0 = int(np.clip(np.floor(y1 * height), 0, height - 1))
    xe = int(np.clip(np.ceil(x2 * width) - 1, x0, width - 1))
    ye = int(np.clip(np.ceil(y2 * height) - 1, y0, height - 1))
    return x0, y0, xe, ye


def outline_mask(height: int, width: int, rect: tuple[int, int, int, int], thickness: int) -> np.ndarray:
    """Boolean mask of a rectangle outline, ``thickness`` pixels drawn inwards."""
    x0, y0, x1, y1 = rect
    m = np.zeros((height, width), dtype=bool)
    t = max(1, thickness)
    m[y0:min(y0 + t, y1 + 1), x0:x1 + 1] = True
    m[max(y1 - t + 1, y0):y1 + 1, x0:x1 + 1] = True
    m[y0:y1 + 1, x0:min(x0 + t, x1 + 1)] = True
    m[y0:y1 + 1, max(x1 - t + 1, x0):x1 + 1] = True
    return m


def draw_boxes(image: np.ndarray, boxes: Sequence | None, thickness: int = 2) -> np.ndarray:
    """Copy of ``image`` with each annotator's boxes outlined in that annotator's colour."""
    out = image.copy()
    if not boxes:
        return out
    h, w = out.shape[:2]
    for a, annotator in enumerate(boxes):
        items = annotator if annotator and isinstance(annotator[0], (list, tuple)) else [annotator]
        for box in items:
            if len(box) != 4:
                raise ValueError(f"box {box!r}: expected [x1, y1, x2, y2]")
            out[outline_mask(h, w, box_pixels(box, h, w), thickness)] = BOX_COLORS[a % len(BOX_COLORS)]
    return out


def put_label(image: np.ndarray, text: str) -> np.ndarray:
    """Text on a dark strip in the top-left corner."""
    out = image.copy()
    scale = max(0.4, min(out.shape[:2]) / 400)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (min(tw + 8, out.shape[1] - 1), th + base + 6), (0, 0, 0), -1)
    cv2.putText(out, text, (4, th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOR, 1, cv2.LINE_AA)
    return out


def overlay(frame: np.ndarray, map2d: np.ndarray, boxes: Sequence | None = None,
            label: str | None = None, alpha: float = 0.5, colormap: str = "jet",
            thickness: int = 2, interpolation: str = "bicubic", min_side: int = 256) -> np.ndarray:
    """The picture a person wants: frame + heat map + ground-truth boxes + a corner label.

    A frame whose short side is under ``min_side`` is enlarged first (display only)."""
    frame = enlarge(frame, min_side)
    h, w = frame.shape[:2]
    out = blend(frame, heat_for_frame(map2d, h, w, interpolation), alpha, colormap)
    out = draw_boxes(out, boxes, thickness)
    return put_label(out, label) if label else out


def enlarge(frame: np.ndarray, min_side: int) -> np.ndarray:
    """Bicubic enlargement so the short side is at least ``min_side`` (never shrinks)."""
    h, w = frame.shape[:2]
    if min_side <= 0 or min(h, w) >= min_side:
        return frame
    scale = min_side / min(h, w)
    return cv2.resize(frame, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_CUBIC)


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path


# ------------------------------------------------------------------ the explained figure

def display_size(height: int, width: int, min_side: int = MIN_SIDE, max_long: int = MAX_LONG) -> tuple[int, int]:
    """(height, width) of a panel: same aspect ratio, short side >= min_side when the long
    side allows it, long side <= max_long."""
    scale = max(1.0, min_side / min(height, width)) if min_side > 0 else 1.0
    if max_long > 0 and max(height, width) * scale > max_long:
        scale = max_long / max(height, width)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def fit_frame(frame: np.ndarray, min_side: int = MIN_SIDE, max_long: int = MAX_LONG) -> np.ndarray:
    """The frame resized to its display size (bicubic up, area down)."""
    h, w = frame.shape[:2]
    dh, dw = display_size(h, w, min_side, max_long)
    if (dh, dw) == (h, w):
        return frame
    interp = cv2.INTER_CUBIC if dh > h else cv2.INTER_AREA
    return cv2.resize(frame, (dw, dh), interpolation=interp)


def predicted_mask(map2d: np.ndarray, height: int, width: int, size: int = 224,
                   interpolation: str = "bicubic") -> np.ndarray:
    """The mask cIoU scores (heat > median on the size x size metric grid), at the frame's size."""
    _, mask = prediction_mask(np.asarray(map2d, dtype=np.float64), size, interpolation)
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)


@functools.lru_cache(maxsize=4)
def _map_layers_cached(raw_bytes: bytes, shape: tuple[int, int], height: int, width: int, size: int,
                       interpolation: str) -> tuple[np.ndarray, np.ndarray]:
    raw = np.frombuffer(raw_bytes, dtype=np.float64).reshape(shape)
    return heat_for_frame(raw, height, width, interpolation), predicted_mask(raw, height, width, size, interpolation)


def map_layers(raw: np.ndarray, height: int, width: int, size: int = 224,
               interpolation: str = "bicubic") -> tuple[np.ndarray, np.ndarray]:
    """(heat at the frame's size, predicted mask at the frame's size) of a raw map; the last
    few are kept, so the frames of a video that share a map compute them once."""
    raw = np.ascontiguousarray(raw, dtype=np.float64)
    return _map_layers_cached(raw.tobytes(), raw.shape, height, width, size, interpolation)


def draw_mask_outline(image: np.ndarray, mask: np.ndarray, thickness: int = 2) -> np.ndarray:
    """Copy of ``image`` with the outline of ``mask`` in MASK_COLOR."""
    out = image.copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, MASK_COLOR, max(1, thickness))
    return out


@functools.lru_cache(maxsize=8)
def _font(pixels: int) -> Any:
    """DejaVu Sans (shipped with matplotlib) at ``pixels`` px: readable where OpenCV's
    Hershey font is not (its 'cIoU' reads 'cloU'); Pillow's own font if it is missing."""
    from PIL import ImageFont

    try:
        import matplotlib

        return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), pixels)
    except (ImportError, OSError):
        return ImageFont.load_default(pixels)


def _pixels(scale: float) -> int:
    return max(8, int(round(scale * 28)))


def _text_width(text: str, scale: float) -> int:
    return int(math.ceil(_font(_pixels(scale)).getlength(text)))


def _text(image: np.ndarray, text: str, x: int, y: int, scale: float = 0.5,
          color: tuple[int, int, int] = INK) -> None:
    """Draw ``text`` into ``image`` (in place) with its baseline at ``y``."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(image)
    ImageDraw.Draw(pil).text((x, y), text, fill=color, font=_font(_pixels(scale)), anchor="ls")
    image[...] = np.asarray(pil)


def _strip(width: int, height: int) -> np.ndarray:
    return np.full((height, width, 3), PAPER, np.uint8)


def colour_bar(height: int, colormap: str = "jet", width: int = 64) -> np.ndarray:
    """A vertical colour bar (1 at the top, 0 at the bottom) with ticks 0, 0.5, 1."""
    bar = _strip(width, height)
    top, bottom, bar_w = 10, height - 10, 14
    values = np.linspace(1.0, 0.0, max(2, bottom - top))[:, None].repeat(bar_w, axis=1)
    bar[top:bottom, 4:4 + bar_w] = heat_to_rgb(values, colormap)
    for v in (1.0, 0.5, 0.0):
        y = int(round(top + (1.0 - v) * (bottom - top - 1)))
        bar[y, 4 + bar_w:4 + bar_w + 5] = INK
        _text(bar, f"{v:.1f}", 4 + bar_w + 8, y + 5, 0.45)
    return bar


def outline_swatch(color: tuple[int, int, int]) -> np.ndarray:
    """A small box outline in ``color`` (legend entry of a box or a mask)."""
    swatch = _strip(24, 14)
    cv2.rectangle(swatch, (1, 1), (22, 12), color, 2)
    return swatch


def colormap_swatch(colormap: str) -> np.ndarray:
    """A small 0 -> 1 ramp of the colour map (legend entry of the heat map)."""
    return heat_to_rgb(np.linspace(0, 1, 24)[None].repeat(14, axis=0), colormap)


def _wrap_text(text: str, width: int, scale: float) -> list[str]:
    """Words of ``text`` in lines no wider than ``width`` pixels."""
    lines: list[str] = []
    for word in text.split():
        trial = f"{lines[-1]} {word}" if lines else word
        if lines and _text_width(trial, scale) <= width:
            lines[-1] = trial
        else:
            lines.append(word)
    return lines or [""]


def _legend(width: int, items: list[tuple[np.ndarray, str]]) -> np.ndarray:
    """One entry per item: a 24x14 swatch and its meaning (wrapped to the width)."""
    line, scale = 18, 0.45
    wrapped = [_wrap_text(text, width - 48, scale) for _, text in items]
    out = _strip(width, 10 + line * sum(len(w) for w in wrapped))
    y = 6
    for (swatch, _), lines in zip(items, wrapped):
        out[y + 1:y + 15, 8:32] = swatch
        for text in lines:
            _text(out, text, 40, y + 13, scale)
            y += line
    return out


def _fit_text(text: str, width: int, scale: float) -> str:
    while text and _text_width(text, scale) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text.replace("…", "..")


def heatmap_figure(frame: np.ndarray, map2d: np.ndarray, boxes: Sequence | None = None,
                   title: str = "", alpha: float = 0.5, colormap: str = "jet", thickness: int = 2,
                   interpolation: str = "bicubic", size: int = 224, min_side: int = MIN_SIDE,
                   max_long: int = MAX_LONG) -> np.ndarray:
    """The picture a person reads at a glance (uint8 RGB):

    title; [frame | heat map over the frame | colour bar]; legend. Both panels show the
    ground-truth boxes and the outline of the predicted mask (heat > median on the
    ``size`` grid, the mask cIoU is computed on); the legend gives the raw map's range,
    whose maximum is the clip's confidence."""
    raw = np.asarray(map2d, dtype=np.float64)
    panel = fit_frame(frame, min_side, max_long)
    h, w = panel.shape[:2]
    heat, mask = map_layers(raw, h, w, size, interpolation)
    left = draw_boxes(draw_mask_outline(panel, mask, thickness), boxes, thickness)
    right = draw_boxes(draw_mask_outline(blend(panel, heat, alpha, colormap), mask, thickness), boxes, thickness)
    gap = _strip(10, h)
    body = np.hstack([left, gap, right, gap, colour_bar(h, colormap)])
    width = body.shape[1]
    head = _strip(width, 50)
    _text(head, _fit_text(title, width - 16, 0.6), 8, 20, 0.6)
    _text(head, "frame", 4, 44, 0.5)
    _text(head, _fit_text(f"heat map over the frame ({int(round(alpha * 100))} % opacity)", w - 8, 0.5),
          w + 14, 44, 0.5)
    _text(head, "heat", w + 10 + w + 10 + 4, 44, 0.5)
    items: list[tuple[np.ndarray, str]] = []
    n_annotators = len(boxes) if boxes else 0
    if n_annotators:
        items.append((outline_swatch(BOX_COLORS[0]), "ground-truth box" + (
            f" (one colour per annotator, {n_annotators})" if n_annotators > 1 else "")))
    items.append((outline_swatch(MASK_COLOR), "predicted mask (heat > its median): the mask cIoU is computed on"))
    items.append((colormap_swatch(colormap), f"heat = map scaled to 0..1; raw map min {raw.min():.3g}, "
                  f"max {raw.max():.3g} (= confidence)"))
    legend = _legend(width, items)
    return np.vstack([head, body, legend])
