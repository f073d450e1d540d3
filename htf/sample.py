"""The shard sample contract shared by the pipeline (writer), trainer and evaluator (readers).

One WebDataset sample per clip:

=============  =====================================================================
``__key__``    ``sample_key(id)``: the clip id escaped to [A-Za-z0-9_-%~] (WebDataset
               splits extensions at dots; tar names are short); the id itself is in json
``jpg``        keyframe, RGB, JPEG
``flow.npy``   float16 [2, H, W]: (dx, dy) from keyframe to keyframe+1, signed, in
               pixels of the stored frame (official encoding: 8-bit levels / 255 after the
               official clip and JPEG round trip)
``spec.npy``   float16 [F, T]: the audio feature (log-mel or the official linear one)
``motion.npy`` optional, float16 [T, G, G]: mean absolute change of grey levels of each
               cell of a G x G grid between consecutive frames of the audio window
``loudness.npy`` optional (with motion.npy), float16 [T]: audio RMS over the same frame
               intervals (htf.sync turns the two into the sync map)
``json``       metadata: id, source, keyframe_index, keyframe_time, fps, frame_count,
               orig_size [w, h], frame_size [w, h], boxes (normalised xyxy, one list per
               annotator; absent when unknown; [[]] when annotated but every box is empty,
               an empty ground truth), box_format ('flickr' | 'vggss'),
               flow (settings used), audio (settings used)
=============  =====================================================================
"""
from __future__ import annotations

import hashlib
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
    audio_silent: Optional[bool] = None       # the audio window is digital silence
    rotation: Optional[int] = None            # degrees the display matrix turns the video
    header_frame_count: Optional[int] = None  # the header's count, where the frames disagree
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.boxes is not None and self.box_format not in BOX_FORMATS:
            raise ValueError(f"clip '{self.id}': boxes need a box_format in {list(BOX_FORMATS)}, "
                             f"got {self.box_format!r} (the pipeline writes both from --annotations)")

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
        return cls.from_mapping(raw, key)

    @classmethod
    def from_mapping(cls, raw: dict[str, Any], key: str = "?") -> "SampleMeta":
        """From the json's object (a plain dict); errors name the sample ``key``."""
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
    motion: Optional[np.ndarray] = None     # float32 [T, G, G] change per cell and frame interval
    loudness: Optional[np.ndarray] = None   # float32 [T] audio RMS over the same intervals

    def __post_init__(self) -> None:
        if isinstance(self.meta, dict):     # a plain json object (tests, older callers)
            self.meta = SampleMeta.from_mapping(self.meta, self.id)

    @property
    def boxes(self) -> Optional[Boxes]:
        """Per-annotator lists of normalised [x1, y1, x2, y2] boxes, or None when unknown."""
        return self.meta.boxes


# Characters a key keeps as they are; everything else (dots, slashes, spaces, non-ASCII
# bytes, '%' itself) becomes %XX of its UTF-8 bytes, so the mapping is one-to-one.
_KEY_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
# A tar (ustar) member name holds 100 bytes: key + '.' + the longest field name must fit.
MAX_KEY_LENGTH = 80
_HASHED_PREFIX = MAX_KEY_LENGTH - 17          # prefix + '~' + 16 hex digits


def sample_key(clip_id: str) -> str:
    """WebDataset key of a clip id: unique for every distinct id a file name can carry.

    Plain ids (``abc_000019``, ``1234``) are their own key. Other characters are escaped
    (``k.1`` -> ``k%2E1``, never equal to the key of ``k_1``). A key longer than
    ``MAX_KEY_LENGTH`` is cut and ends in ``~`` + a hash of the whole id ('~' never occurs
    in an escaped key); its id is read back from the sample's json.
    """
    if not clip_id:
        raise ValueError("empty clip id")
    raw = clip_id.encode("utf-8", "surrogateescape")
    key = "".join(chr(b) if chr(b) in _KEY_SAFE else f"%{b:02X}" for b in raw)
    if len(key) <= MAX_KEY_LENGTH:
        return key
    prefix = key[:_HASHED_PREFIX]
    if "%" in prefix[-2:]:                  # no half escape before the hash
        prefix = prefix[:prefix.rindex("%")]
    return f"{prefix}~{hashlib.sha256(raw).hexdigest()[:16]}"


def key_to_id(key: str) -> str | None:
    """The clip id of an unhashed key (inverse of ``sample_key``); None for a hashed key,
    whose id only the sample's json holds."""
    if "~" in key:
        return None
    out = bytearray()
    i = 0
    while i < len(key):
        if key[i] == "%":
            out.append(int(key[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(ord(key[i]))
            i += 1
    return out.decode("utf-8", "surrogateescape")


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
    if (sample.motion is None) != (sample.loudness is None):
        raise ValueError(f"clip '{sample.id}': motion and loudness come together")
    if sample.motion is not None:
        check_motion(sample.motion, sample.loudness, f"clip '{sample.id}'")
    meta = replace(sample.meta, id=sample.id, frame_size=[w, h])
    members = {
        "__key__": sample_key(sample.id),
        "jpg": encode_jpeg(sample.frame),
        "flow.npy": _npy_bytes(sample.flow.astype(np.float16)),
        "spec.npy": _npy_bytes(sample.spec.astype(np.float16)),
        "json": meta.to_json(),
    }
    if sample.motion is not None:
        members["motion.npy"] = _npy_bytes(sample.motion.astype(np.float16))
        members["loudness.npy"] = _npy_bytes(sample.loudness.astype(np.float16))
    return members


def check_motion(motion: np.ndarray, loudness: np.ndarray, what: str) -> None:
    """motion [T, G, G] and loudness [T] of one clip, or a ValueError naming ``what``."""
    if motion.ndim != 3 or motion.shape[1] != motion.shape[2] or loudness.shape != motion.shape[:1]:
        raise ValueError(f"{what}: motion.npy {motion.shape} and loudness.npy {loudness.shape} "
                         f"must be [T, G, G] and [T]")


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
    h, w = frame.shape[:2]
    if flow.shape != (2, h, w):
        raise ValueError(f"sample '{key}': flow.npy has shape {flow.shape}, the frame needs (2, {h}, {w})")
    if spec.ndim != 2 or min(spec.shape) < 1:
        raise ValueError(f"sample '{key}': spec.npy has shape {spec.shape}, expected [F, T]")
    motion = loudness = None
    if "motion.npy" in raw or "loudness.npy" in raw:
        if "motion.npy" not in raw or "loudness.npy" not in raw:
            raise ValueError(f"sample '{key}': motion.npy and loudness.npy come together, one is missing")
        motion = _npy_load(raw["motion.npy"], "motion.npy", key).astype(np.float32)
        loudness = _npy_load(raw["loudness.npy"], "loudness.npy", key).astype(np.float32)
        check_motion(motion, loudness, f"sample '{key}'")
    clip_id = meta.id if isinstance(meta.id, str) and meta.id else key_to_id(str(key))
    return ClipSample(id=clip_id or str(key), frame=frame, flow=flow, spec=spec, meta=meta,
                      motion=motion, loudness=loudness)
