"""Ground-truth boxes: VGG-SS JSON, the Flickr 256-px JSON, or a folder of Flickr XML files.

Every parser returns ``{clip_id: [[x1, y1, x2, y2], ...] per annotator}`` in normalised
coordinates, plus the box format the evaluator needs ('vggss': one annotator holding
every box, scored as their union; 'flickr': one box per annotator, scored by consensus).

Boxes outside 0..1 are clipped and reported; boxes with no area after clipping are
dropped and reported. Nothing is changed silently.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import Failure
from pipeline.index import normalise_id

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
    data = json.loads(path.read_text())
    if isinstance(data, list):
        return parse_vggss(data, id_style, str(path))
    if isinstance(data, dict):
        return parse_flickr_json(data, id_style, str(path))
    raise ValueError(f"{path}: expected a VGG-SS list or a Flickr {{id: boxes}} mapping")


def parse_vggss(entries: list[dict[str, Any]], id_style: str = "generic", origin: str = "") -> Annotations:
    """VGG-SS: ``[{"file": id, "bbox": [[x1,y1,x2,y2], ...]}]``, already normalised."""
    out = Annotations({}, "vggss")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "file" not in entry or "bbox" not in entry:
            raise ValueError(f"{origin}: entry {i} is not a {{'file', 'bbox'}} record")
        clip_id = normalise_id(str(entry["file"]), id_style)
        raw = entry["bbox"]
        raw = [raw] if raw and not isinstance(raw[0], (list, tuple)) else raw
        boxes = _clean(clip_id, [[float(v) for v in b] for b in raw], 1.0, out.warnings, origin)
        if boxes:
            out.boxes[clip_id] = [boxes]
    return out


def parse_flickr_json(data: dict[str, Any], id_style: str = "generic", origin: str = "") -> Annotations:
    """Flickr: ``{id: [[xmin, ymin, xmax, ymax] per annotator]}`` in a 256x256 frame."""
    out = Annotations({}, "flickr")
    for raw_id, per_annotator in data.items():
        clip_id = normalise_id(str(raw_id), id_style)
        annotators = []
        for b in per_annotator:
            boxes = _clean(clip_id, [[float(v) for v in b]], FLICKR_FRAME, out.warnings, origin)
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
        if len(box) != 4 or any(v != v for v in box):
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
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object id -> frame index")
    out: dict[str, dict[str, int]] = {}
    for clip_id, value in data.items():
        if isinstance(value, list):
            if not value:
                continue
            out[str(clip_id)] = {"entry": int(value[0])}
        else:
            out[str(clip_id)] = {"index": int(value)}
    return out
