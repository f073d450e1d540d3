"""Sample -> augmented model inputs for training (``train_arrays``).

Validation and test inputs (``eval_arrays``, ``eval_inputs``) are prepared in the core,
``htf.inputs``; augmentation reuses its geometry (frame and flow transformed together, flow
vectors following it unless the flow is the official uint8 encoding) and its normalisation.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from htf.inputs import fit_time, geometry, official_flow, to_tensors
from htf.model_config import MAP_SIZE, ModelConfig
from htf.sample import ClipSample
from htf.sync import sync_prior
from train.config import AugmentConfig


def _augment_spec(spec: np.ndarray, aug: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    spec = spec.astype(np.float32, copy=True)
    if aug.audio_gain > 0:
        spec += np.float32(rng.uniform(-aug.audio_gain, aug.audio_gain))
    if aug.audio_noise > 0:
        spec += rng.normal(0, aug.audio_noise, spec.shape).astype(np.float32)
    fill = np.float32(spec.mean())
    for axis, count in ((0, aug.freq_masks), (1, aug.time_masks)):
        n = spec.shape[axis]
        for _ in range(count):
            width = int(rng.integers(0, max(1, n // 8) + 1))
            start = int(rng.integers(0, n - width + 1))
            if axis == 0:
                spec[start:start + width] = fill
            else:
                spec[:, start:start + width] = fill
    return spec


def guide_map(sample: ClipSample, cfg: ModelConfig, box: tuple[int, int, int, int], flip: bool) -> torch.Tensor:
    """[7, 7] the clip's sync map (negatives at 0) over the crop ``box`` = (x0, y0, w, h) of its
    frame, flipped with it: the grid's cells stretched over the frame, cut and shrunk as the
    image is, so the guide lies where the augmented image shows that place."""
    if sample.motion is None or sample.loudness is None:
        raise ValueError(f"clip '{sample.id}' has no motion series, and loss.sync_guide / sync_target read the training "
                         f"clips' sync maps: remake the training shards with the pipeline's --set motion.series=true")
    h, w = sample.frame.shape[:2]
    grid = sync_prior(sample.motion, sample.loudness, cfg.sync_smooth_frames)
    frame_sized = cv2.resize(grid, (w, h), interpolation=cv2.INTER_NEAREST)
    x0, y0, bw, bh = box
    guide = cv2.resize(frame_sized[y0:y0 + bh, x0:x0 + bw], (MAP_SIZE, MAP_SIZE), interpolation=cv2.INTER_AREA)
    if flip:
        guide = cv2.flip(guide, 1)
    return torch.from_numpy(np.ascontiguousarray(guide, dtype=np.float32))


def train_arrays(sample: ClipSample, cfg: ModelConfig, aug: AugmentConfig,
                 rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """Augmented training inputs: random square crop (a fraction of the short side), flip,
    brightness/contrast jitter; random audio crop in time, gain, noise, masks; with
    loss.sync_guide or loss.sync_target, the clip's sync map cut and flipped as the image is (``guide_map``)."""
    h, w = sample.frame.shape[:2]
    side = int(round(min(h, w) * rng.uniform(*aug.crop_fraction)))
    side = max(1, min(side, h, w))
    box = (int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1)), side, side)
    flip = bool(rng.random() < aug.hflip)
    frame, flow = geometry(sample.frame, sample.flow, box, cfg.image_size, flip,
                            vectors=not official_flow(sample.meta))
    if aug.brightness > 0:
        gain = rng.uniform(1 - aug.brightness, 1 + aug.brightness)
        shift = rng.uniform(-aug.brightness, aug.brightness) * 255 * 0.5
        frame = np.clip(frame.astype(np.float32) * gain + shift, 0, 255).astype(np.uint8)
    spec = sample.spec
    if aug.audio_time_shift and cfg.audio_frames is not None and spec.shape[1] > cfg.audio_frames:
        spec = fit_time(spec, cfg.audio_frames, int(rng.integers(0, spec.shape[1] - cfg.audio_frames + 1)))
    else:
        spec = fit_time(spec, cfg.audio_frames)
    tensors = to_tensors(frame, flow, _augment_spec(spec, aug, rng), cfg)
    return (*tensors, guide_map(sample, cfg, box, flip)) if cfg.trains_with_sync() else tensors
