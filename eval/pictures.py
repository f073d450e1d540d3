"""Heat-map pictures: the keyframe, the predicted map over it, the ground-truth boxes, the cIoU.

Pure functions on numpy images (uint8 RGB), written to PNG with OpenCV. Boxes are drawn
after blending, without anti-aliasing, so every outline pixel has exactly its annotator's
colour (the tests check that pixel by pixel).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from htf.metrics import min_max, upsample

# One colour per annotator (RGB), then repeated.
BOX_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 255, 0), (255, 255, 255), (255, 0, 255), (0, 255, 255), (255, 128, 0))
TEXT_COLOR = (255, 255, 255)


def colormap_id(name: str) -> int:
    attr = f"COLORMAP_{name.upper()}"
    if not hasattr(cv2, attr):
        raise ValueError(f"unknown colormap {name!r} (OpenCV has e.g. jet, turbo, inferno, viridis)")
    return int(getattr(cv2, attr))


def heat_to_rgb(heat: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Heat in 0..1 [H, W] -> uint8 RGB colour image."""
    u8 = np.clip(np.asarray(heat, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, colormap_id(colormap)), cv2.COLOR_BGR2RGB)


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
