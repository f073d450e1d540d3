"""Localisation baselines that need no training, for honest comparisons.

Each baseline turns a :class:`htf.sample.ClipSample` into a 2-D map that goes through the
same upsampling, min-max normalisation and median threshold as a model's 7x7 map:

- ``center``: a centred Gaussian prior. Under the median threshold any radially
  decreasing map predicts the same centred disc covering half the frame, so ``sigma``
  only changes the confidence used by the extended protocol, not the cIoU.
- ``flow``: the magnitude of the sample's optical flow. By default it is average-pooled
  to the model's 7x7 grid, so that the baseline and the model are judged at the same
  output resolution and the comparison measures the motion prior itself; with
  ``flow_resolution: full`` it is area-resized straight to the metric size (an upper
  bound for what motion alone can localise). With the official uint8 flow encoding the
  magnitude is that of the clipped values (negative motion already lost).
- ``random``: uniform noise, seeded per clip by (seed, clip id), so a clip gets the same
  map in every run and in any order.
- ``sync``: per cell, the correlation over time of the cell's change with the loudness of
  the clip's own audio (``htf.sync``; the sample's ``motion.npy`` and ``loudness.npy``,
  smoothed over ``sync_smooth_frames``), negative correlation counting as none: the map
  HTF's sync prior adds. Motion over time against the sound: strong wherever the sounding
  thing moves with its sound, and still no training.

With ``map_blur`` each map is blurred as ``model.map_blur`` blurs a model's
(``htf.model.smooth_maps``), so a comparison can give both the same smoothing.

Only ``sync`` listens to the audio, and only to the clip's own: in the extended protocol
every baseline's confidence is the same for a frame whatever sound it is paired with.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from eval.config import BaselineConfig
from htf.model import smooth_maps
from htf.sample import ClipSample
from htf.sync import sync_prior

BASELINES: tuple[str, ...] = ("center", "flow", "random", "sync")


def center_prior(n: int, sigma: float) -> np.ndarray:
    """Centred isotropic Gaussian on an n x n grid of cell centres; sigma in frame sides."""
    c = (np.arange(n) + 0.5) / n - 0.5
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return np.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2)).astype(np.float32)


def flow_magnitude(flow: np.ndarray) -> np.ndarray:
    """Per-pixel |(dx, dy)| of a [2, H, W] flow."""
    f = np.asarray(flow, dtype=np.float32)
    if f.ndim != 3 or f.shape[0] != 2:
        raise ValueError(f"flow must be [2, H, W], got shape {f.shape}")
    return np.sqrt(f[0] ** 2 + f[1] ** 2)


def pool_mean(values: np.ndarray, n: int) -> np.ndarray:
    """Average-pool a 2-D array onto an n x n grid (cells as equal as the size allows)."""
    h, w = values.shape
    if h < n or w < n:
        raise ValueError(f"cannot pool a {h}x{w} map onto {n}x{n}")
    ys = np.linspace(0, h, n + 1).round().astype(int)
    xs = np.linspace(0, w, n + 1).round().astype(int)
    return np.array([[values[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].mean() for j in range(n)]
                     for i in range(n)], dtype=np.float32)


def clip_seed(seed: int, clip_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{clip_id}".encode()).digest()[:8], "little")


@dataclass
class Baseline:
    """A map maker with the evaluator's predictor interface (``predict``)."""
    name: str
    cfg: BaselineConfig
    metric_size: int = 224
    data_settings: dict | None = None   # no expectations about the shards

    def __post_init__(self) -> None:
        if self.name not in BASELINES:
            raise ValueError(f"unknown baseline {self.name!r}: expected one of {list(BASELINES)}")

    def map_for(self, sample: ClipSample) -> np.ndarray:
        n = self.cfg.map_size
        if self.name == "center":
            return center_prior(n, self.cfg.center_sigma)
        if self.name == "random":
            return np.random.default_rng(clip_seed(self.cfg.seed, sample.id)).random((n, n)).astype(np.float32)
        if self.name == "sync":
            if sample.motion is None:
                raise ValueError(f"clip '{sample.id}' has no motion.npy, which the sync baseline needs: remake "
                                 f"the test shards with the pipeline's --set motion.series=eval (or true)")
            return sync_prior(sample.motion, sample.loudness, self.cfg.sync_smooth_frames)
        mag = flow_magnitude(sample.flow)
        if self.cfg.flow_resolution == "full":
            size = self.metric_size
            return cv2.resize(mag, (size, size), interpolation=cv2.INTER_AREA)
        return pool_mean(mag, n)

    def predict(self, samples: list[ClipSample]) -> list[np.ndarray]:
        maps = [self.map_for(s) for s in samples]
        if not self.cfg.map_blur:
            return maps
        return [smooth_maps(torch.from_numpy(np.asarray(m, np.float32))[None], self.cfg.map_blur)[0].numpy()
                for m in maps]

    def describe(self) -> str:
        return f"baseline:{self.name}"
