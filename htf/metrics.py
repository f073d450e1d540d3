"""Localisation metrics as the visual sound source localisation field computes them.

Pure numpy functions, shared by the evaluator (``python -m eval``) and the trainer's
validation. The protocol (LVS, EZ-VSL, SLAVC and Hear The Flow all use it):

1. Ground truth at ``size`` px (224):
   - Flickr-SoundNet: every annotator box (drawn in a 256x256 frame) is scaled to ``size``
     with ``int(size * coord / 256)`` (here: boxes are normalised, so ``floor(size * x)``),
     each box is a 0/1 mask ``[y1:y2, x1:x2]`` (end exclusive); the masks are summed, divided
     by 2 and clipped at 1. Values are 0, 0.5 (one annotator) or 1 (two or more agree).
   - VGG-SS: the union of all boxes (clipped to 0..1 and scaled the same way), binary.
2. Prediction: the 7x7 map is upsampled to ``size`` (the official Hear The Flow code uses
   bicubic; LVS/EZ-VSL bilinear), min-max normalised to 0..1, and thresholded at its median:
   the median is the element at index ``size*size // 2`` of the sorted map and the mask is
   ``heat > median`` (strictly greater, so about half of the frame is predicted).
3. Per clip ``cIoU = sum(mask * gt) / (sum(gt) + sum(mask * [gt == 0]))``.
4. Summary: ``ciou_at_0.5`` (the fraction of clips with cIoU >= 0.5, what papers call
   "cIoU"), ``mean_ciou``, ``auc`` (trapezoidal area under the success rate at the 21
   thresholds ``0.05 * i``, i = 0..20) and ``n``.

SLAVC's extended protocol adds non-sounding pairs (a frame with another clip's audio): every
pair gets a confidence; at a confidence threshold a pair counts as a true positive when it
is sounding, detected (confidence >= threshold) and localised (cIoU >= 0.5); a detected
non-sounding pair or a detected but mislocalised sounding pair is a false positive; an
undetected sounding pair is a false negative. AP and max-F1 are computed from the
precision/recall at confidence thresholds exactly as SLAVC samples them (see
:func:`extended_ap` and :func:`extended_max_f1`).

Nothing is silently counted as zero: an empty ground-truth map, a non-finite prediction
or an empty list of results raises ``ValueError`` with the reason.
"""
from __future__ import annotations

import math
from typing import Iterable, Literal, Sequence

import numpy as np

BoxFormat = Literal["flickr", "vggss"]
Interpolation = Literal["bicubic", "bilinear", "bilinear_align_corners", "nearest"]
INTERPOLATIONS: tuple[str, ...] = ("bicubic", "bilinear", "bilinear_align_corners", "nearest")
BOX_FORMATS: tuple[str, ...] = ("flickr", "vggss")
AUC_THRESHOLDS: tuple[float, ...] = tuple(0.05 * i for i in range(21))
SUCCESS_THRESHOLD = 0.5
_CUBIC_A = -0.75  # the cubic convolution constant of torch / OpenCV bicubic resizing


# --------------------------------------------------------------------------- ground truth
def _flatten_boxes(boxes: Sequence) -> list[list[float]]:
    """Accept per-annotator lists of boxes (the shard contract) or a flat list of boxes."""
    if boxes is None:
        raise ValueError("no ground-truth boxes (None)")
    flat: list[list[float]] = []
    for item in boxes:
        arr = np.asarray(item, dtype=np.float64)
        if arr.ndim == 1:
            flat.append(list(arr))
        elif arr.ndim == 2 and arr.shape[1] == 4:
            flat.extend(list(row) for row in arr)
        elif arr.size == 0:
            continue  # an annotator without a box contributes nothing
        else:
            raise ValueError(f"box entry {item!r}: expected [x1, y1, x2, y2] or a list of them")
    for box in flat:
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            raise ValueError(f"box {box!r}: expected 4 finite normalised numbers x1, y1, x2, y2")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"box {box!r}: x2 <= x1 or y2 <= y1")
    if not flat:
        raise ValueError("no ground-truth boxes (empty list)")
    return flat


def box_to_pixels(box: Sequence[float], size: int = 224) -> tuple[int, int, int, int]:
    """Normalised xyxy -> integer pixel xyxy at ``size`` (floor, as ``int(224 * v / 256)``)."""
    clipped = np.clip(np.asarray(box, dtype=np.float64), 0.0, 1.0)
    x1, y1, x2, y2 = (int(math.floor(v * size)) for v in clipped)
    return x1, y1, x2, y2


def gt_map(boxes: Sequence, box_format: str, size: int = 224) -> np.ndarray:
    """Ground-truth map float32 [size, size]: Flickr consensus (0, .5, 1) or VGG-SS union (0, 1)."""
    if box_format not in BOX_FORMATS:
        raise ValueError(f"box_format {box_format!r}: expected one of {list(BOX_FORMATS)}")
    acc = np.zeros((size, size), dtype=np.float32)
    for box in _flatten_boxes(boxes):
        x1, y1, x2, y2 = box_to_pixels(box, size)
        acc[y1:y2, x1:x2] += 1.0
    if box_format == "flickr":
        return np.minimum(acc / 2.0, 1.0).astype(np.float32)
    return (acc > 0).astype(np.float32)


# --------------------------------------------------------------------------- prediction
def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """Cubic-convolution weights for the 4 taps at offsets -1, 0, 1, 2 (t in [0, 1))."""
    a = _CUBIC_A

    def near(x: np.ndarray) -> np.ndarray:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: np.ndarray) -> np.ndarray:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def resize_matrix(n_in: int, n_out: int, interpolation: str = "bicubic") -> np.ndarray:
    """1-D resampling matrix W [n_out, n_in] so that ``W @ x`` resizes a signal.

    Matches ``torch.nn.functional.interpolate`` (``align_corners=False`` unless the name
    says otherwise) and OpenCV's ``INTER_CUBIC`` / ``INTER_LINEAR``: half-pixel centres,
    border samples replicated.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r}: expected one of {list(INTERPOLATIONS)}")
    out = np.arange(n_out, dtype=np.float64)
    w = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    if interpolation == "nearest":
        src = np.minimum(np.floor(out * (n_in / n_out)).astype(int), n_in - 1)
        w[rows, src] = 1.0
        return w
    if interpolation == "bilinear_align_corners":
        src = out * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros_like(out)
    else:
        src = (out + 0.5) * (n_in / n_out) - 0.5
        if interpolation == "bilinear":
            src = np.maximum(src, 0.0)
    base = np.floor(src).astype(int)
    t = src - base
    if interpolation == "bicubic":
        taps, weights = np.arange(-1, 3), _cubic_weights(t)
    else:
        taps, weights = np.arange(0, 2), np.stack([1 - t, t], axis=-1)
    for k, off in enumerate(taps):
        idx = np.clip(base + off, 0, n_in - 1)
        np.add.at(w, (rows, idx), weights[:, k])
    return w


def upsample(map2d: np.ndarray, size: int = 224, interpolation: str = "bicubic") -> np.ndarray:
    """Resize a 2-D map to [size, size] (float64) with separable interpolation."""
    m = np.asarray(map2d, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"prediction map must be 2-D, got shape {m.shape}")
    wy = resize_matrix(m.shape[0], size, interpolation)
    wx = resize_matrix(m.shape[1], size, interpolation)
    return wy @ m @ wx.T


def min_max(values: np.ndarray) -> np.ndarray:
    """Scale to 0..1; a constant map is left unscaled (as the official ``normalize_img``) -> zeros."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo == 0:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


def median_threshold(heat: np.ndarray) -> float:
    """The official threshold: element ``H*W // 2`` of the sorted map."""
    flat = np.sort(heat, axis=None)
    return float(flat[heat.shape[0] * heat.shape[1] // 2])


def prediction_mask(map7: np.ndarray, size: int = 224,
                    interpolation: str = "bicubic") -> tuple[np.ndarray, np.ndarray]:
    """7x7 (any 2-D) map -> (heat float32 [size,size] in 0..1, mask bool = heat > median).

    A constant map gives an all-zero heat map and an empty mask (it localises nothing, and
    scores cIoU 0 under the official formula); callers can detect it with ``is_constant``.
    """
    m = np.asarray(map7, dtype=np.float64)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"prediction map must be 2-D [h, w], got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("prediction map contains NaN or infinite values")
    heat = min_max(upsample(m, size, interpolation))
    mask = heat > median_threshold(heat)
    return heat.astype(np.float32), mask


def is_constant(map7: np.ndarray) -> bool:
    """True when a prediction map holds one value (no localisation at all)."""
    m = np.asarray(map7)
    return bool(m.size) and float(m.max()) == float(m.min())


# --------------------------------------------------------------------------- cIoU
def ciou(mask: np.ndarray, gt: np.ndarray) -> float:
    """Consensus IoU: sum(mask*gt) / (sum(gt) + sum(mask*[gt==0])); gt must not be empty."""
    pred = np.asarray(mask).astype(np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if pred.shape != g.shape:
        raise ValueError(f"mask shape {pred.shape} != ground-truth shape {g.shape}")
    if np.any(pred < 0) or np.any(pred > 1) or np.any(g < 0) or np.any(g > 1):
        raise ValueError("mask and ground truth must lie in 0..1")
    if g.sum() <= 0:
        raise ValueError("ground-truth map is empty: cIoU is undefined")
    denom = g.sum() + (pred * (g == 0)).sum()
    return float((pred * g).sum() / denom)


def clip_ciou(map7: np.ndarray, boxes: Sequence, box_format: str, size: int = 224,
              interpolation: str = "bicubic") -> float:
    """cIoU of one clip from its raw prediction map and its normalised boxes."""
    _, mask = prediction_mask(map7, size, interpolation)
    return ciou(mask, gt_map(boxes, box_format, size))


# --------------------------------------------------------------------------- summaries
def _as_results(values: Iterable[float], what: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise ValueError(f"no {what} to summarise (empty list)")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return arr


def success_curve(cious: Iterable[float],
                  thresholds: Sequence[float] = AUC_THRESHOLDS) -> np.ndarray:
    """Fraction of clips with cIoU >= t for each threshold t."""
    arr = _as_results(cious, "cIoU values")
    return np.array([(arr >= t).sum() / arr.size for t in thresholds], dtype=np.float64)


def auc(cious: Iterable[float], thresholds: Sequence[float] = AUC_THRESHOLDS) -> float:
    """Trapezoidal area under the success curve over ``thresholds`` (0, 0.05, ..., 1)."""
    return float(np.trapezoid(success_curve(cious, thresholds), np.asarray(thresholds)))


def summarize(cious: Iterable[float]) -> dict[str, float | int]:
    """{"ciou_at_0.5", "mean_ciou", "auc", "n"} of a list of per-clip cIoU values."""
    arr = _as_results(cious, "cIoU values")
    return {
        "ciou_at_0.5": float((arr >= SUCCESS_THRESHOLD).sum() / arr.size),
        "mean_ciou": float(arr.mean()),
        "auc": auc(arr),
        "n": int(arr.size),
    }


# --------------------------------------------------------------------------- extended (SLAVC)
def map_confidence(map7: np.ndarray, reduce: str = "max") -> float:
    """Per-pair confidence from the raw (unnormalised) map: its maximum (default) or mean."""
    m = np.asarray(map7, dtype=np.float64)
    if not np.isfinite(m).all():
        raise ValueError("prediction map contains NaN or infinite values")
    if reduce == "max":
        return float(m.max())
    if reduce == "mean":
        return float(m.mean())
    raise ValueError(f"confidence reduce {reduce!r}: expected 'max' or 'mean'")


def _extended_arrays(sounding: Sequence[bool], cious: Sequence[float],
                     confidences: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(sounding, dtype=bool)
    c = np.asarray(cious, dtype=np.float64)
    conf = np.asarray(confidences, dtype=np.float64)
    if not (s.shape == c.shape == conf.shape) or s.ndim != 1:
        raise ValueError(f"sounding/cious/confidences lengths differ: {s.shape}, {c.shape}, {conf.shape}")
    if s.size == 0:
        raise ValueError("no pairs to summarise (empty list)")
    if not s.any():
        raise ValueError("extended protocol needs at least one sounding pair")
    if not np.isfinite(conf).all():
        raise ValueError("confidences contain NaN or infinite values")
    if not np.isfinite(c[s]).all():
        raise ValueError("sounding pairs need a finite cIoU")
    return s, c, conf


def precision_recall(sounding: Sequence[bool], cious: Sequence[float],
                     confidences: Sequence[float], conf_threshold: float,
                     ciou_threshold: float = SUCCESS_THRESHOLD) -> tuple[float, float]:
    """Precision and recall at one confidence threshold (1.0 where the denominator is 0).

    The cIoU of non-sounding pairs is ignored (pass NaN).
    """
    s, c, conf = _extended_arrays(sounding, cious, confidences)
    detected = conf >= conf_threshold
    localised = np.zeros_like(s)
    localised[s] = c[s] >= ciou_threshold
    tp = int((s & detected & localised).sum())
    fp = int((detected & ~(s & localised)).sum())
    fn = int((s & ~detected).sum())
    precision = 1.0 if tp + fp == 0 else tp / (tp + fp)
    recall = 1.0 if tp + fn == 0 else tp / (tp + fn)
    return precision, recall


def extended_ap(sounding: Sequence[bool], cious: Sequence[float], confidences: Sequence[float],
                ciou_threshold: float = SUCCESS_THRESHOLD, max_points: int = 200) -> float:
    """SLAVC's AP: confidence thresholds are the sorted confidences without the largest,
    taken from the top down every ``max(1, n // max_points)`` values; precision is replaced
    by its running maximum from the right, and AP = sum p_max[i] * (r[i+1] - r[i])."""
    s, c, conf = _extended_arrays(sounding, cious, confidences)
    step = max(1, s.size // max_points)
    thresholds = np.sort(conf)[:-1][::-step]
    if thresholds.size < 2:
        raise ValueError(f"AP needs at least 3 pairs, got {s.size}")
    pr = np.array([precision_recall(s, c, conf, t, ciou_threshold) for t in thresholds])
    precision, recall = pr[:, 0], pr[:, 1]
    p_max = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(p_max[:-1] * np.diff(recall)))


def extended_max_f1(sounding: Sequence[bool], cious: Sequence[float],
                    confidences: Sequence[float], ciou_threshold: float = SUCCESS_THRESHOLD,
                    max_points: int = 10) -> float:
    """SLAVC's max-F1: F1 = 2PR/(P+R) (0 when P+R = 0) at the thresholds
    ``sorted(confidences)[::max(1, n // max_points)]``; the maximum is reported."""
    s, c, conf = _extended_arrays(sounding, cious, confidences)
    thresholds = np.sort(conf)[::max(1, s.size // max_points)]
    best = 0.0
    for t in thresholds:
        p, r = precision_recall(s, c, conf, t, ciou_threshold)
        best = max(best, 2 * p * r / (p + r) if p + r > 0 else 0.0)
    return float(best)


def summarize_extended(sounding: Sequence[bool], cious: Sequence[float],
                       confidences: Sequence[float]) -> dict[str, float | int]:
    """{"ap", "max_f1", "n_sounding", "n_non_sounding"} of the extended protocol."""
    s, c, conf = _extended_arrays(sounding, cious, confidences)
    return {
        "ap": extended_ap(s, c, conf),
        "max_f1": extended_max_f1(s, c, conf),
        "n_sounding": int(s.sum()),
        "n_non_sounding": int((~s).sum()),
    }
