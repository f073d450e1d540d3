"""Motion over time against the sound: the sync map.

The pipeline stores, per sample, how much each cell of a grid over the frame changes
between consecutive frames of the audio window (``motion.npy``, [T, G, G]: mean absolute
difference of grey levels) and the audio's loudness over the same frame intervals
(``loudness.npy``, [T]: RMS). A place whose change rises and falls with the loudness is
likely where the sound comes from: the sync map is, per cell, the correlation over time of
the two series, both smoothed over a few frames first (a hit and the motion that makes it
are not always in the same 40 ms). It needs no flow and no training: the evaluator reports
it as the ``sync`` baseline, and HTF can add it to its map (``model.motion_prior: sync``).
"""
from __future__ import annotations

import numpy as np

# Fewer frame intervals than this say nothing about co-variation: the map is then all zero.
MIN_INTERVALS = 3


def smooth(series: np.ndarray, frames: int) -> np.ndarray:
    """Moving average over ``frames`` steps along the first axis (same length; edges average
    what they have)."""
    if frames <= 1 or len(series) < 2:
        return series
    kernel = np.ones(frames) / frames
    count = np.convolve(np.ones(len(series)), kernel, mode="same")
    flat = series.reshape(len(series), -1)
    out = np.stack([np.convolve(flat[:, i], kernel, mode="same") for i in range(flat.shape[1])], axis=1)
    return (out / count[:, None]).reshape(series.shape)


def sync_map(motion: np.ndarray, loudness: np.ndarray, smooth_frames: int) -> np.ndarray:
    """[G, G] float32 in [-1, 1]: per cell, the correlation over time of its change
    (``motion`` [T, G, G]) with ``loudness`` [T], both smoothed over ``smooth_frames``. A cell
    that never changes, a constant loudness, or fewer than ``MIN_INTERVALS`` intervals give 0."""
    motion = np.asarray(motion, np.float64)
    loudness = np.asarray(loudness, np.float64)
    if motion.ndim != 3 or loudness.shape != (motion.shape[0],):
        raise ValueError(f"motion must be [T, G, G] and loudness [T], got {motion.shape} and {loudness.shape}")
    if motion.shape[0] < MIN_INTERVALS:
        return np.zeros(motion.shape[1:], np.float32)
    change = smooth(motion, smooth_frames)
    sound = smooth(loudness, smooth_frames)
    change = change - change.mean(axis=0)
    sound = sound - sound.mean()
    covariance = (change * sound[:, None, None]).sum(axis=0)
    scale = np.sqrt((change ** 2).sum(axis=0) * (sound ** 2).sum())
    out = np.divide(covariance, scale, out=np.zeros_like(covariance), where=scale > 1e-12)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def sync_prior(motion: np.ndarray, loudness: np.ndarray, smooth_frames: int) -> np.ndarray:
    """The sync map as evidence for a place: negative correlation counts as none (0..1)."""
    return np.clip(sync_map(motion, loudness, smooth_frames), 0.0, None)


def paired_series(motion: np.ndarray | None, loudness: np.ndarray | None
                  ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """One clip's motion series with another clip's loudness (the extended protocol's
    non-sounding pairs), both from the start of their audio windows, cut to the shorter;
    (None, None) when either is missing."""
    if motion is None or loudness is None:
        return None, None
    steps = min(len(motion), len(loudness))
    return motion[:steps], loudness[:steps]
