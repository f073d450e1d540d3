"""The shard sample contract shared by the pipeline (writer), trainer and evaluator (readers).

One WebDataset sample per clip:

=============  =====================================================================
``__key__``    clip id with dots replaced (WebDataset splits extensions at dots)
``jpg``        keyframe, RGB, JPEG
``flow.npy``   float16 [2, H, W]: (dx, dy) from keyframe to keyframe+1, signed, in
               pixels of the stored frame (official encoding: 8-bit levels / 255 after the
               official clip and JPEG round trip)
``spec.npy``   float16 [F, T]: the audio feature (log-mel or the official linear one)
``json``       metadata: id, source, keyframe_index, keyframe_time, fps, frame_count,
               orig_size [w, h], frame_size [w, h], boxes (normalised xyxy, one list per
               annotator; absent when unknown; [[]] when annotated but every box is empty,
               an empty ground truth), box_format ('flickr' | 'vggss'),
               flow (settings used), audio (settings used)
=============  =====================================================================
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

JPEG_QUALITY = 95


@dataclass
class ClipSample:
    id: str
    frame: np.ndarray                 # uint8 [H, W, 3] RGB keyframe
    flow: np.ndarray                  # float32 [2, H, W] signed flow (dx, dy) in stored-frame pixels
    spec: np.ndarray                  # float32 [F, T] audio feature
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def boxes(self) -> list[list[list[float]]] | None:
        """Per-annotator lists of normalised [x1, y1, x2, y2] boxes, or None when unknown."""
        return self.meta.get("boxes")


def sample_key(clip_id: str) -> str:
    """WebDataset key for a clip id: no dots (they would split the key from the extension)."""
    if not clip_id:
        raise ValueError("empty clip id")
    return clip_id.replace(".", "_").replace("/", "_")


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _npy_load(data: bytes, what: str, key: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as err:  # corrupt member: name it
        raise ValueError(f"sample '{key}': unreadable {what}: {err}") from err


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a decodable JPEG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_sample(sample: ClipSample) -> dict[str, Any]:
    """ClipSample -> dict of bytes for ``webdataset.TarWriter.write``."""
    h, w = sample.frame.shape[:2]
    if sample.flow.shape != (2, h, w):
        raise ValueError(f"clip '{sample.id}': flow shape {sample.flow.shape} != (2, {h}, {w})")
    meta = dict(sample.meta, id=sample.id, frame_size=[w, h])
    return {
        "__key__": sample_key(sample.id),
        "jpg": encode_jpeg(sample.frame),
        "flow.npy": _npy_bytes(sample.flow.astype(np.float16)),
        "spec.npy": _npy_bytes(sample.spec.astype(np.float16)),
        "json": json.dumps(meta).encode(),
    }


def decode_sample(raw: dict[str, Any]) -> ClipSample:
    """Raw WebDataset dict (bytes per field) -> ClipSample; errors name the sample key."""
    key = raw.get("__key__", "?")
    missing = [k for k in ("jpg", "flow.npy", "spec.npy", "json") if k not in raw]
    if missing:
        raise ValueError(f"sample '{key}' in {raw.get('__url__', '?')}: missing fields {missing}")
    meta = json.loads(raw["json"])
    try:
        frame = decode_jpeg(raw["jpg"])
    except ValueError as err:
        raise ValueError(f"sample '{key}': {err}") from err
    flow = _npy_load(raw["flow.npy"], "flow.npy", key).astype(np.float32)
    spec = _npy_load(raw["spec.npy"], "spec.npy", key).astype(np.float32)
    return ClipSample(id=meta.get("id", key), frame=frame, flow=flow, spec=spec, meta=meta)
