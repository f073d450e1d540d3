"""Sample -> model inputs at evaluation time (``eval_inputs``), and the pieces training shares.

Frame and flow always get the same geometry. Flow vectors follow the geometry: scaled
by the resize factor of each axis and, on a horizontal flip, x is negated — except for
the official uint8 encoding (``flow.encoding: uint8_clip``), whose values are not vectors
in pixels any more; there the official behaviour (no scaling, no sign change) is kept so
released weights see what they were trained on.

Resizing: area interpolation when shrinking by 2x or more (no aliasing), otherwise bicubic
(frame) / bilinear (flow). Normalisation goes through a 256-entry table per channel.
Train-time augmentation (``train.transforms``) builds on ``geometry`` and ``to_tensors``.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from htf.model_config import MAP_SIZE, ModelConfig
from htf.official import OFFICIAL_FLOW_ENCODING
from htf.sample import ClipSample, SampleMeta
from htf.sync import sync_prior


def official_flow(meta: SampleMeta) -> bool:
    """True when the sample's flow is the official clipped-uint8 encoding."""
    flow_settings = (meta.pipeline or {}).get("flow") or {}
    return flow_settings.get("encoding") == OFFICIAL_FLOW_ENCODING


def _interp(src: tuple[int, int], size: int, enlarge: int) -> int:
    """Area when shrinking by more than 2x (no aliasing), else ``enlarge`` (cheap, smooth)."""
    return cv2.INTER_AREA if size * 2 <= min(src) else enlarge


def geometry(frame: np.ndarray, flow: np.ndarray, box: tuple[int, int, int, int], size: int,
              flip: bool, vectors: bool) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``box`` = (x0, y0, w, h) of frame [H,W,3] and flow [2,H,W], resize to size x size."""
    x0, y0, w, h = box
    frame = cv2.resize(frame[y0:y0 + h, x0:x0 + w], (size, size),
                       interpolation=_interp((h, w), size, cv2.INTER_CUBIC))
    interp = _interp((h, w), size, cv2.INTER_LINEAR)
    channels = [cv2.resize(flow[c, y0:y0 + h, x0:x0 + w], (size, size), interpolation=interp)
                for c in range(2)]
    if flip:
        frame = cv2.flip(frame, 1)
        channels = [cv2.flip(c, 1) for c in channels]
    if vectors:   # vectors follow the geometry: scale per axis, x sign flips with the image
        channels[0] *= np.float32(size / w * (-1.0 if flip else 1.0))
        channels[1] *= np.float32(size / h)
    return frame, np.stack(channels)


def _normalise_lut(cfg: ModelConfig) -> np.ndarray:
    """[3, 256] float32 table: uint8 value -> (v / 255 - mean) / std, per channel."""
    v = np.arange(256, dtype=np.float64) / 255.0
    return np.stack([(v - m) / s for m, s in zip(cfg.mean, cfg.std)]).astype(np.float32)


def to_tensors(frame: np.ndarray, flow: np.ndarray, spec: np.ndarray,
                cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lut = _normalise_lut(cfg)
    chw = np.ascontiguousarray(frame.transpose(2, 0, 1))
    image = np.stack([np.take(lut[c], chw[c]) for c in range(3)])
    flow = np.ascontiguousarray(flow, dtype=np.float32)
    if cfg.flow_scale != 1.0:
        flow = flow * np.float32(cfg.flow_scale)
    return (torch.from_numpy(image), torch.from_numpy(flow),
            torch.from_numpy(np.ascontiguousarray(spec[None], dtype=np.float32)))


def fit_time(spec: np.ndarray, frames: int | None, offset: int | None = None) -> np.ndarray:
    """Crop [F, T] to ``frames`` columns (centred unless ``offset``); tile a shorter one."""
    if frames is None:
        return spec
    t = spec.shape[1]
    if t < frames:
        spec = np.tile(spec, (1, -(-frames // t)))
        t = spec.shape[1]
    start = (t - frames) // 2 if offset is None else min(max(offset, 0), t - frames)
    return spec[:, start:start + frames]


def official_test_resize(frame: np.ndarray, flow: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The official test transform: frame and each flow channel (8-bit images there) resized
    to size x size with PIL's bicubic filter; flow back to 0..1."""
    from PIL import Image

    frame = np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC))
    u8 = np.clip(np.round(np.asarray(flow, np.float32) * 255.0), 0, 255).astype(np.uint8)
    channels = [np.asarray(Image.fromarray(c).resize((size, size), Image.BICUBIC)) for c in u8]
    return frame, np.stack(channels).astype(np.float32) / np.float32(255.0)


def sync_input(sample: ClipSample, cfg: ModelConfig) -> torch.Tensor:
    """[7, 7] the clip's sync prior (htf.sync.sync_prior on the map's grid), for a model whose
    map may add it (``ModelConfig.uses_sync``); a sample without motion series is refused."""
    if sample.motion is None:
        raise ValueError(f"clip '{sample.id}' has no motion.npy, and this model adds the sync map to its map "
                         f"(model.motion_prior: sync): remake the val and test shards with the pipeline's --set motion.series=eval (or true)")
    prior = sync_prior(sample.motion, sample.loudness, cfg.sync_smooth_frames)
    if prior.shape != (MAP_SIZE, MAP_SIZE):
        prior = cv2.resize(prior, (MAP_SIZE, MAP_SIZE), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(prior, dtype=np.float32))


def eval_arrays(sample: ClipSample, cfg: ModelConfig) -> tuple[torch.Tensor, ...]:
    """Test-time inputs: whole frame resized to S x S, centred audio crop (and the sync map,
    for a model that uses it). Samples in the official encoding get the official test
    transform (PIL bicubic), the rest ours."""
    h, w = sample.frame.shape[:2]
    if official_flow(sample.meta):
        frame, flow = official_test_resize(sample.frame, sample.flow, cfg.image_size)
    else:
        frame, flow = geometry(sample.frame, sample.flow, (0, 0, w, h), cfg.image_size, False, vectors=True)
    tensors = to_tensors(frame, flow, fit_time(sample.spec, cfg.audio_frames), cfg)
    return (*tensors, sync_input(sample, cfg)) if cfg.uses_sync() else tensors


def eval_inputs(sample: ClipSample, model: Any) -> tuple[torch.Tensor, ...]:
    """(image [3,S,S], flow [2,S,S], spec [1,F,T]), plus sync [7,7] for a model that uses
    it, exactly as validation prepares them."""
    return eval_arrays(sample, model.cfg)
