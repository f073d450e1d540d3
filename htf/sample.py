"""The shard sample contract shared by the pipeline (writer), trainer and evaluator (readers).

One WebDataset sample per clip:

=============  =====================================================================
``__key__``    ``sample_key(id)``: the clip id escaped to [A-Za-z0-9_-%~] (WebDataset
               splits extensions at dots; tar names are short); the id itself is in json
``jpg``        keyframe, RGB, JPEG
``flow.npy``   float16 [2, H, W]: (dx, dy) from keyframe to keyframe+1, signed, in
               pixels of the stored frame (official encoding: clipped uint8 / 255)
``spec.npy``   float16 [F, T]: the audio feature (log-mel or the official linear one)
``json``       metadata: id, source, keyframe_index, keyframe_time, fps, frame_count,
               orig_size [w, h], frame_size [w, h], boxes (normalised xyxy, one list per
               annotator; absent when unknown), box_format ('flickr' | 'vggss'),
               flow (settings used), audio (settings used)
=============  =====================================================================
"""
from __future__ import annotations

import hashlib
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
    try:
        meta = json.loads(raw["json"])
    except (ValueError, TypeError) as err:      # UnicodeDecodeError is a ValueError too
        raise ValueError(f"sample '{key}': unreadable json: {err}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"sample '{key}': json is a {type(meta).__name__}, not an object")
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
    clip_id = meta.get("id") if isinstance(meta.get("id"), str) else key_to_id(str(key))
    return ClipSample(id=clip_id or str(key), frame=frame, flow=flow, spec=spec, meta=meta)
