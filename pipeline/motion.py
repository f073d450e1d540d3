"""Part of stage 2, decode: motion over time in the audio window, for the sync map.

Every frame whose timestamp lies in the audio window is decoded (grey, ``motion.side``
pixels square, turned as displayed); consecutive frames give the mean absolute change of
each cell of a ``motion.grid`` x ``motion.grid`` grid, and the audio window gives the
loudness (RMS) over the same frame intervals. ``htf.sync`` turns the two series into the
sync map. A clip whose window holds fewer than two frames gets empty series (its sync map
is all zero).
"""
from __future__ import annotations

import numpy as np

from pipeline.config import MotionConfig
from pipeline.errors import ClipError
from pipeline.index import ProbeInfo


def window_frames(probe: ProbeInfo, window: tuple[float, float]) -> list[int]:
    """Indices of the frames whose time (from the first frame) lies in [start, end)."""
    origin = probe.timestamps[0]
    return [i for i, t in enumerate(probe.timestamps) if window[0] <= t - origin < window[1]]


def _grey_frames(container, probe: ProbeInfo, indices: list[int], side: int, rotation: int) -> list[np.ndarray]:
    """The frames at ``indices`` (consecutive), grey at side x side, decoded forward from a
    seek to the first of them."""
    stream = container.streams[probe.stream_index]
    tb = float(stream.time_base)
    first, last = probe.timestamps[indices[0]], probe.timestamps[indices[-1]]
    eps = 0.5 * float(np.median(np.diff(probe.timestamps)))     # rounding of decoded timestamps
    container.seek(int(np.floor(first / tb)), stream=stream, backward=True, any_frame=False)
    grey: list[np.ndarray] = []
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        t = frame.pts * tb
        if t < first - eps:
            continue
        if t > last + eps:
            break
        image = frame.to_ndarray(format="gray", width=side, height=side, interpolation="AREA")
        grey.append(np.rot90(image, rotation // 90) if rotation else image)
    return grey


def cell_change(grey: list[np.ndarray], grid: int) -> np.ndarray:
    """[T-1, grid, grid] mean absolute change of each cell between consecutive frames."""
    if len(grey) < 2:
        return np.zeros((0, grid, grid), np.float32)
    frames = np.stack(grey).astype(np.float32)
    change = np.abs(np.diff(frames, axis=0))
    side = frames.shape[1]
    return change.reshape(len(change), grid, side // grid, grid, side // grid).mean(axis=(2, 4))


def interval_loudness(wave: np.ndarray, sample_rate: int, window_start: float, times: np.ndarray) -> np.ndarray:
    """[len(times) - 1] RMS of ``wave`` (which starts at ``window_start`` s) between
    consecutive ``times`` (s, the frames' times from the first frame)."""
    bounds = np.clip(np.round((times - window_start) * sample_rate).astype(int), 0, len(wave))
    out = np.zeros(max(len(times) - 1, 0), np.float32)
    for i in range(len(out)):
        part = wave[bounds[i]:max(bounds[i + 1], bounds[i] + 1)]
        out[i] = np.sqrt(np.mean(np.square(part, dtype=np.float64))) if len(part) else 0.0
    return out


def motion_series(container, path: str, probe: ProbeInfo, window: tuple[float, float], wave: np.ndarray,
                  sample_rate: int, cfg: MotionConfig, rotation: int) -> tuple[np.ndarray, np.ndarray]:
    """(motion [T, G, G], loudness [T]) of the clip's audio window, float32."""
    indices = window_frames(probe, window)
    grey: list[np.ndarray] = []
    if len(indices) >= 2:
        try:
            grey = _grey_frames(container, probe, indices, cfg.side, rotation)
        except Exception as err:
            raise ClipError("decode_error", f"{path}: the frames of the audio window {list(window)} s: "
                                            f"{type(err).__name__}: {err} (motion.series: false skips them)") from None
    grey = grey[:len(indices)]
    indices = indices[:len(grey)]         # frames the decoder did not return: none at the end
    motion = cell_change(grey, cfg.grid)
    times = np.array([probe.timestamps[i] - probe.timestamps[0] for i in indices], np.float64)
    loudness = interval_loudness(wave, sample_rate, window[0], times)
    return motion, loudness
