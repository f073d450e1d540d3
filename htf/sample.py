"""The shard sample contract shared by the pipeline (writer), trainer and evaluator (readers).

One WebDataset sample per clip:

=============  =====================================================================
``__key__``    clip id with dots replaced (WebDataset splits extensions at dots)
``jpg``        keyframe, RGB, JPEG
``flow.npy``   float16 [2, H, W]: (dx, dy) from keyframe to keyframe+1, signed, in
               pixels of the stored frame (official encoding: clipped uint8 / 255)
``spec.npy``   float16 [F, T]: the audio feature (log-mel or the official linear one)
``json``       ``SampleMeta``: id, source, video, keyframe_index, keyframe_time, fps,
               vfr, frame_count, orig_size [w, h], frame_size [w, h], audio_window,
               audio_tiled, pipeline (the frames/flow/audio settings used), boxes
               (normalised xyxy, one list per annotator) and box_format ('flickr' |
               'vggss') when known, audio_rms_dbfs, then any extra keys
=============  =====================================================================
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional

import cv2
import numpy as np

from htf.metrics import BOX_FORMATS

JPEG_QUALITY = 95
Boxes = list[list[list[float]]]       # annotators -> boxes -> normalised [x1, y1, x2, y2]


@dataclass
class SampleMeta:
    """What a sample's ``json`` says about its clip. A field that is None is absent from
    the json; the json lists the fields in this order, then ``extra`` (keys this class
    does not name, kept as they came). Boxes always come with their ``box_format``."""
    id: str = ""
    source: Optional[str] = None              # the pipeline preset's ``source``
    video: Optional[str] = None               # file name of the video
    keyframe_index: Optional[int] = None
    keyframe_time: Optional[float] = None     # seconds from the first frame
    fps: Optional[float] = None
    vfr: Optional[bool] = None                # variable frame rate
    frame_count: Optional[int] = None
    orig_size: Optional[list[int]] = None     # [w, h] of the source video
    frame_size: Optional[list[int]] = None    # [w, h] of the stored frame
    audio_window: Optional[list[float]] = None  # [start, end] seconds of the audio used
    audio_tiled: Optional[bool] = None        # a short track repeated to fill the window
    pipeline: Optional[dict[str, Any]] = None  # {"frames", "flow", "audio"} settings used
    boxes: Optional[Boxes] = None             # None: unknown
    box_format: Optional[str] = None          # 'flickr' | 'vggss': how the boxes are scored
    audio_rms_dbfs: Optional[float] = None    # loudness of the audio window
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.boxes is not None and self.box_format not in BOX_FORMATS:
            raise ValueError(f"clip '{self.id}': boxes need a box_format in {list(BOX_FORMATS)}, "
                             f"got {self.box_format!r} (the pipeline writes both from --annotations)")

    def __setitem__(self, key: str, value: Any) -> None:
        """Set a field or an extra key by its json name (``meta["audio_rms_dbfs"] = x``)."""
        if key in _FIELD_NAMES:
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def to_json(self) -> bytes:
        data = {f: getattr(self, f) for f in _FIELD_NAMES if getattr(self, f) is not None}
        return json.dumps({**data, **self.extra}).encode()

    @classmethod
    def from_json(cls, data: bytes | str, key: str = "?") -> "SampleMeta":
        """Parse a sample's json; errors name the sample ``key``."""
        try:
            raw = json.loads(data)
        except (ValueError, TypeError) as err:      # UnicodeDecodeError is a ValueError too
            raise ValueError(f"sample '{key}': unreadable json: {err}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"sample '{key}': json is a {type(raw).__name__}, not an object")
        known = {k: v for k, v in raw.items() if k in _FIELD_NAMES}
        try:
            return cls(**known, extra={k: v for k, v in raw.items() if k not in _FIELD_NAMES})
        except ValueError as err:
            raise ValueError(f"sample '{key}': {err}") from None


_FIELD_NAMES = tuple(f.name for f in fields(SampleMeta) if f.name != "extra")


@dataclass
class ClipSample:
    id: str
    frame: np.ndarray                 # uint8 [H, W, 3] RGB keyframe
    flow: np.ndarray                  # float32 [2, H, W] signed flow (dx, dy) in stored-frame pixels
    spec: np.ndarray                  # float32 [F, T] audio feature
    meta: SampleMeta = field(default_factory=SampleMeta)

    @property
    def boxes(self) -> Optional[Boxes]:
        """Per-annotator lists of normalised [x1, y1, x2, y2] boxes, or None when unknown."""
        return self.meta.boxes


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
    meta = replace(sample.meta, id=sample.id, frame_size=[w, h])
    return {
        "__key__": sample_key(sample.id),
        "jpg": encode_jpeg(sample.frame),
        "flow.npy": _npy_bytes(sample.flow.astype(np.float16)),
        "spec.npy": _npy_bytes(sample.spec.astype(np.float16)),
        "json": meta.to_json(),
    }


def decode_sample(raw: dict[str, Any]) -> ClipSample:
    """Raw WebDataset dict (bytes per field) -> ClipSample; errors name the sample key."""
    key = raw.get("__key__", "?")
    missing = [k for k in ("jpg", "flow.npy", "spec.npy", "json") if k not in raw]
    if missing:
        raise ValueError(f"sample '{key}' in {raw.get('__url__', '?')}: missing fields {missing}")
    meta = SampleMeta.from_json(raw["json"], key)
    try:
        frame = decode_jpeg(raw["jpg"])
    except ValueError as err:
        raise ValueError(f"sample '{key}': {err}") from err
    flow = _npy_load(raw["flow.npy"], "flow.npy", key).astype(np.float32)
    spec = _npy_load(raw["spec.npy"], "spec.npy", key).astype(np.float32)
    return ClipSample(id=meta.id or key, frame=frame, flow=flow, spec=spec, meta=meta)
