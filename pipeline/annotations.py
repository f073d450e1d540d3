"""Ground-truth boxes: VGG-SS JSON, the Flickr 256-px JSON, or a folder of Flickr XML files.

Every parser returns ``{clip_id: [[x1, y1, x2, y2], ...] per annotator}`` in normalised
coordinates, plus the box format the evaluator needs ('vggss': one annotator holding
every box, scored as their union; 'flickr': one box per annotator, scored by consensus).

VGG-SS boxes are read as the official evaluation code reads them: each coordinate becomes
``max(v, 0)`` (a value past 1 reaches the frame edge), with no reordering, so a box whose
end is not past its start covers nothing. A dozen published boxes hold absurd coordinates
(about -2.9e16): they become empty boxes, as in the official code. A clip whose boxes are
all empty keeps its entry with no box (its ground truth is empty: scored cIoU 0, listed by
the evaluator), so it still counts. Flickr boxes outside 0..1 are clipped; boxes with no
area are dropped. Every change is reported; nothing is changed silently.
"""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import Failure
from htf.lists import normalise_id

FLICKR_FRAME = 256.0

Boxes = list[list[list[float]]]     # annotators -> boxes -> [x1, y1, x2, y2]


@dataclass
class Annotations:
    boxes: dict[str, Boxes]
    box_format: str                                     # 'vggss' | 'flickr'
    warnings: list[Failure] = field(default_factory=list)


def load_annotations(path: str | Path, id_style: str = "generic") -> Annotations:
    """Detect the kind of ``path`` (folder of XML, VGG-SS list JSON, Flickr dict JSON)."""
    path = Path(path)
    if path.is_dir():
        return load_flickr_xml_folder(path, id_style)
    if not path.is_file():
        raise FileNotFoundError(f"annotations not found: {path}")
    data = read_json(path, "annotations")
    if isinstance(data, list):
        return parse_vggss(data, id_style, str(path))
    if isinstance(data, dict):
        return parse_flickr_json(data, id_style, str(path))
    raise ValueError(f"{path}: expected a VGG-SS list or a Flickr {{id: boxes}} mapping")


def read_json(path: str | Path, what: str) -> Any:
    """The JSON in ``path``; a damaged file is a ValueError naming it and where it breaks."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path}: not UTF-8 text (byte {err.start}); is it really a JSON file?") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {path}: not valid JSON ({err.msg} at line {err.lineno}, column "
                         f"{err.colno}); the file is damaged or truncated, fetch it again") from None


def _numbers(value: Any) -> list[float] | None:
    """``value`` as a list of floats, or None when it is not a list of numbers."""
    if not isinstance(value, (list, tuple)):
        return None
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            return None
        try:
            out.append(float(v))
        except ValueError:
            return None
    return out


def _box_list(raw: Any) -> list[list[float]] | None:
    """One box or a list of boxes -> list of number lists; None when the shape is wrong."""
    if isinstance(raw, (list, tuple)) and raw and not isinstance(raw[0], (list, tuple)):
        raw = [raw]
    if not isinstance(raw, (list, tuple)):
        return None
    boxes = [_numbers(b) for b in raw]
    return None if any(b is None for b in boxes) else boxes


def parse_vggss(entries: list[Any], id_style: str = "generic", origin: str = "") -> Annotations:
    """VGG-SS: ``[{"file": id, "bbox": [[x1,y1,x2,y2], ...]}]``, already normalised.
    A malformed entry is reported in the warnings and skipped."""
    out = Annotations({}, "vggss")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), (str, int)) or "bbox" not in entry:
            out.warnings.append(_warn(f"entry {i}", "bad_annotation",
                                      f"entry {i} is not a {{'file', 'bbox'}} record: {str(entry)[:80]}", origin))
            continue
        clip_id = normalise_id(str(entry["file"]), id_style)
        raw = _box_list(entry["bbox"])
        if raw is None:
            out.warnings.append(_warn(clip_id, "bad_box", f"entry {i}: bbox {str(entry['bbox'])[:80]} is not "
                                                          f"a box or a list of boxes", origin))
            continue
        out.boxes[clip_id] = [_official_vggss_boxes(clip_id, raw, out.warnings, origin)]
    return out


def _official_vggss_boxes(clip_id: str, raw: list, warnings: list[dict[str, Any]],
                          origin: str) -> list[list[float]]:
    """The boxes the official code draws: coordinates ``max(v, 0)`` (capped at 1, which is
    the same pixel edge), never reordered; a box without area there is empty (dropped)."""
    kept = []
    for box in raw:
        try:
            values = [float(v) for v in box]
        except (TypeError, ValueError):
            values = []
        if len(values) != 4 or any(v != v for v in values):
            warnings.append(_warn(clip_id, "bad_box", f"{box} is not 4 numbers (read as an empty box)", origin))
            continue
        x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in values)
        if [x1, y1, x2, y2] != values:
            warnings.append(_warn(clip_id, "box_out_of_range",
                                  f"{box} -> {[round(v, 5) for v in (x1, y1, x2, y2)]}", origin))
        if x2 <= x1 or y2 <= y1:
            warnings.append(_warn(clip_id, "empty_box", f"{box} covers nothing as the official code "
                                                        "reads it (an empty box)", origin))
            continue
        kept.append([round(v, 6) for v in (x1, y1, x2, y2)])
    if not kept:
        warnings.append(_warn(clip_id, "empty_ground_truth", "every box is empty: the clip is kept "
                                                             "and scores cIoU 0", origin))
    return kept


def parse_flickr_json(data: dict[str, Any], id_style: str = "generic", origin: str = "") -> Annotations:
    """Flickr: ``{id: [[xmin, ymin, xmax, ymax] per annotator]}`` in a 256x256 frame.
    A malformed entry is reported in the warnings and skipped."""
    out = Annotations({}, "flickr")
    for raw_id, per_annotator in data.items():
        clip_id = normalise_id(str(raw_id), id_style)
        raw = _box_list(per_annotator)
        if raw is None:
            out.warnings.append(_warn(clip_id, "bad_box", f"{str(per_annotator)[:80]} is not a list of "
                                                          f"[xmin, ymin, xmax, ymax] boxes", origin))
            continue
        annotators = []
        for b in raw:
            boxes = _clean(clip_id, [b], FLICKR_FRAME, out.warnings, origin)
            if boxes:
                annotators.append(boxes)
        if annotators:
            out.boxes[clip_id] = annotators
    return out


def parse_flickr_xml(path: str | Path) -> list[list[float]]:
    """One Flickr XML file -> a box per annotator (256-px pixels). Each ``bbox`` element's
    first child is skipped; the next four are xmin, ymin, xmax, ymax."""
    root = ET.parse(str(path)).getroot()
    boxes = []
    for bbox in root.iter("bbox"):
        children = list(bbox)
        if len(children) < 5:
            raise ValueError(f"{path}: a bbox element has {len(children)} children, expected 5")
        boxes.append([float(c.text or "nan") for c in children[1:5]])
    return boxes


def load_flickr_xml_folder(folder: str | Path, id_style: str = "generic") -> Annotations:
    out = Annotations({}, "flickr")
    for path in sorted(Path(folder).glob("*.xml")):
        clip_id = normalise_id(path.stem, id_style)
        try:
            raw = parse_flickr_xml(path)
        except (ET.ParseError, ValueError) as err:
            out.warnings.append(_warn(clip_id, "unreadable_annotation", str(err), str(path)))
            continue
        annotators = [b for b in (_clean(clip_id, [box], FLICKR_FRAME, out.warnings, str(path)) for box in raw) if b]
        if annotators:
            out.boxes[clip_id] = annotators
    return out


def _clean(clip_id: str, boxes: list[list[float]], scale: float, warnings: list[Failure],
           origin: str) -> list[list[float]]:
    """Normalise by ``scale``, clip into 0..1, drop boxes without area; report each change."""
    kept = []
    for box in boxes:
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            warnings.append(_warn(clip_id, "bad_box", f"{box} is not 4 numbers", origin))
            continue
        norm = [v / scale for v in box]
        x1, y1, x2, y2 = min(norm[0], norm[2]), min(norm[1], norm[3]), max(norm[0], norm[2]), max(norm[1], norm[3])
        clipped = [min(max(v, 0.0), 1.0) for v in (x1, y1, x2, y2)]
        if clipped != [x1, y1, x2, y2] or [x1, y1, x2, y2] != norm:
            warnings.append(_warn(clip_id, "box_out_of_range",
                                  f"{box} -> {[round(v, 5) for v in clipped]} (clipped/reordered)", origin))
        if clipped[2] - clipped[0] <= 0 or clipped[3] - clipped[1] <= 0:
            warnings.append(_warn(clip_id, "empty_box", f"{box} has no area inside the frame (dropped)", origin))
            continue
        kept.append([round(v, 6) for v in clipped])
    return kept


def _warn(clip_id: str, reason: str, detail: str, origin: str) -> Failure:
    return Failure(clip_id, "annotations", reason, detail, origin)


def load_keyframes(path: str | Path) -> dict[str, dict[str, int]]:
    """id -> {'index': i} for plain frame indices, {'entry': e} for official imagetoframe lists
    (candidate entries: the first is used with the official -1/-2 rule)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"keyframes file not found: {path}")
    data = read_json(path, "keyframes")
    if not isinstance(data, dict):
        raise ValueError(f"keyframes {path}: expected a JSON object id -> frame index")
    out: dict[str, dict[str, int]] = {}
    for clip_id, value in data.items():
        first = value[0] if isinstance(value, list) and value else value
        if isinstance(value, list) and not value:
            continue
        if isinstance(first, bool) or not isinstance(first, int) or first < 0:
            raise ValueError(f"keyframes {path}: '{clip_id}': {str(value)[:60]} is not a frame index "
                             f"(a whole number >= 0, or a list of them)")
        out[str(clip_id)] = {"entry": first} if isinstance(value, list) else {"index": first}
    return out
