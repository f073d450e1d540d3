"""Stage 2, decode: the keyframe and the next frame, plus the audio window around the keyframe
(and, with ``motion.series``, the change of every frame of that window: pipeline/motion.py).

Frames are read with PyAV: one seek to the keyframe's timestamp and two decoded frames.
That is several times faster than an ffmpeg subprocess per frame (see
bench/results_pipeline.md) and frame-exact for variable-frame-rate files, because the
keyframe is addressed by its presentation timestamp from the index stage, not by
``index / fps``.

Audio: mono, resampled to ``audio.sample_rate``, ``audio.seconds`` long, centred on the
keyframe time (or the middle of the clip). A window reaching past either end of the track
is shifted inside it; a track shorter than the window is tiled, as the official code does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from pipeline.config import FramesConfig, PipelineConfig, applies_drop_rules, writes_motion_series
from pipeline.errors import ClipError
from pipeline.index import ProbeInfo, open_container, probe_container
from pipeline.motion import motion_series

# Decoding starts this long before the window so that the first decoded audio frame
# already covers the window start after a seek to the nearest preceding packet.
_AUDIO_SEEK_MARGIN_S = 0.5


@dataclass
class DecodedClip:
    frame0: np.ndarray                 # uint8 [H, W, 3] RGB keyframe at stored size
    frame1: np.ndarray                 # uint8 [H, W, 3] RGB next frame at stored size
    waveform: np.ndarray               # float32 [N] mono
    sample_rate: int
    keyframe_index: int
    keyframe_time: float
    probe: ProbeInfo
    audio_info: dict[str, Any] = field(default_factory=dict)
    native0: Optional[np.ndarray] = None   # uint8 [h, w] grayscale, only for native-resolution flow
    native1: Optional[np.ndarray] = None
    rotation: int = 0                      # display rotation applied (degrees counter-clockwise)
    motion: Optional[np.ndarray] = None    # float32 [T, G, G] (pipeline.motion), with motion.series
    loudness: Optional[np.ndarray] = None  # float32 [T]

    @property
    def display_size(self) -> tuple[int, int]:
        """(w, h) of the source as shown: stored size with the rotation applied."""
        w, h = self.probe.width, self.probe.height
        return (h, w) if self.rotation % 180 else (w, h)


# Flow methods need frames of some size (OpenCV's DIS refuses sides under 12 px); a clip
# whose stored frame would be thinner than this is refused with a reason instead.
MIN_STORED_SIDE = 16


def stored_size(width: int, height: int, frames_cfg: FramesConfig) -> tuple[int, int]:
    """(w, h) of the stored frame: short side -> frames.short_side, long side capped."""
    if frames_cfg.short_side == 0:
        return width, height
    scale = frames_cfg.short_side / min(width, height)
    if max(width, height) * scale > frames_cfg.max_long_side:
        scale = frames_cfg.max_long_side / max(width, height)
    return max(2, int(round(width * scale))), max(2, int(round(height * scale)))


def checked_stored_size(path: str, width: int, height: int, frames_cfg: FramesConfig) -> tuple[int, int]:
    """``stored_size``, refused with a clear reason when the frame would be too thin."""
    size = stored_size(width, height, frames_cfg)
    if min(size) < MIN_STORED_SIDE:
        raise ClipError("aspect_too_extreme",
                        f"{path}: a {width}x{height} frame would be stored at {size[0]}x{size[1]} "
                        f"(frames.max_long_side={frames_cfg.max_long_side}); flow needs sides >= "
                        f"{MIN_STORED_SIDE} px. Crop the video or raise frames.max_long_side")
    return size


def official_keyframe_from_entry(entry: int, frame_count: int) -> int:
    """The Flickr test rule: imagetoframe entry -> frame = entry - 1 (entry - 2 at the end)."""
    return entry - 2 if entry >= frame_count else entry - 1


def choose_keyframe(probe: ProbeInfo, keyframe_index: int | None, keyframe_entry: int | None,
                    min_frames: int = 2) -> int:
    n = probe.frame_count
    if n < min_frames:
        raise ClipError("too_few_frames", f"{probe.path}: {n} frame(s), need >= {min_frames}")
    if keyframe_index is None and keyframe_entry is not None:
        keyframe_index = official_keyframe_from_entry(keyframe_entry, n)
    k = n // 2 if keyframe_index is None else int(keyframe_index)
    if not 0 <= k < n - 1:
        raise ClipError("keyframe_out_of_range",
                        f"{probe.path}: keyframe {k} needs a next frame but the clip has {n} frames")
    return k


def decode_clip(video_path: str, cfg: PipelineConfig, keyframe_index: int | None = None,
                audio_path: str | None = None, keyframe_entry: int | None = None,
                probe: ProbeInfo | None = None, container=None) -> DecodedClip:
    """Keyframe + next frame (stored size, RGB) and the audio window of one clip.

    ``keyframe_index`` None -> the middle frame (frame_count // 2); ``keyframe_entry`` is
    an official imagetoframe entry (converted with the official rule). ``audio_path``
    replaces the video's own audio track. ``container``: the file already opened by the
    caller (PyAV), reused for frames and audio instead of opening the file twice more.
    """
    video_path = str(video_path)
    if container is None:
        with open_container(video_path) as own:
            return decode_clip(video_path, cfg, keyframe_index, audio_path, keyframe_entry, probe, own)
    if probe is None:
        probe = probe_container(container, video_path, audio_path, cfg.frames.max_source_pixels)
    k = choose_keyframe(probe, keyframe_index, keyframe_entry, cfg.frames.min_frames)
    checked_stored_size(video_path, probe.width, probe.height, cfg.frames)   # before any decoding
    native = cfg.flow.resolution == "native"
    pair, rotation = _decode_pair(video_path, probe, k, cfg.frames, native, container)
    t_key = probe.timestamps[k] - probe.timestamps[0]
    center = t_key if cfg.audio.center == "keyframe" else probe.duration / 2
    drops = applies_drop_rules(cfg)     # evaluation splits keep short and silent clips
    if cfg.audio.center == "official_test":
        wave, info = official_test_audio(audio_path or video_path, cfg.audio.seconds, cfg.audio.sample_rate)
    else:
        wave, info = load_audio_window(audio_path or video_path, center, cfg.audio.seconds,
                                       cfg.audio.sample_rate, cfg.audio.min_coverage if drops else 0.0,
                                       offset=probe.timestamps[0] if audio_path is None else 0.0,
                                       container=container if audio_path is None else None)
    _measure_silence(wave, cfg.audio.min_rms_dbfs, audio_path or video_path, info, reject=drops)
    motion = loudness = None
    if writes_motion_series(cfg):
        motion, loudness = motion_series(container, video_path, probe, tuple(info["window"]), wave,
                                         cfg.audio.sample_rate, cfg.motion, rotation)
    return DecodedClip(frame0=pair[0], frame1=pair[1], waveform=wave, sample_rate=cfg.audio.sample_rate,
                       keyframe_index=k, keyframe_time=round(t_key, 6), probe=probe, audio_info=info,
                       native0=pair[2] if native else None, native1=pair[3] if native else None,
                       rotation=rotation, motion=motion, loudness=loudness)


# ------------------------------------------------------------------------------- frames

def display_rotation(frame) -> int:
    """The frame's display rotation (degrees counter-clockwise, a multiple of 90): the
    display matrix of phone videos stored sideways (PyAV >= 14 reads it per frame)."""
    try:
        angle = float(getattr(frame, "rotation", 0) or 0)
    except Exception:      # a malformed display matrix: show the frame as stored
        return 0
    return int(round(angle / 90.0)) * 90 % 360


def _convert(frame, size: tuple[int, int], native: bool, rotation: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """RGB at ``size`` (w, h, as displayed); for native-resolution flow also the native
    grayscale frame, made from the RGB pixels with OpenCV's BT.601 weights as the official
    preprocessing does (cvtColor of the decoded frame), not the video's own luma plane.
    Both are turned as displayed."""
    import cv2

    turns = rotation // 90
    w, h = (size[1], size[0]) if turns % 2 else size        # the stored orientation
    rgb = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")
    gray = None
    if native:
        full = rgb if (frame.width, frame.height) == (w, h) else frame.to_ndarray(format="rgb24")
        gray = cv2.cvtColor(full, cv2.COLOR_RGB2GRAY)
    if turns:
        # np.rot90 turns counter-clockwise, as the display matrix angle counts.
        rgb = np.ascontiguousarray(np.rot90(rgb, turns))
        gray = np.ascontiguousarray(np.rot90(gray, turns)) if gray is not None else None
    return rgb, gray


def _decode_pair(path: str, probe: ProbeInfo, k: int, frames_cfg: FramesConfig, native: bool, container=None):
    """Decode frames k and k+1 by timestamp; falls back to counting frames from the start
    when a container cannot seek, carries no usable timestamps, or the seek lands where
    the frames cannot be decoded (MPEG-TS/PS seek to any packet, not to a keyframe).
    Returns ((rgb0, rgb1, gray0, gray1), display rotation)."""
    try:
        if container is None:
            with open_container(path) as own:
                frames = _decode_by_seek(own, path, probe, k)
        else:
            frames = _decode_by_seek(container, path, probe, k)
    except ClipError:
        raise
    except Exception:
        frames = None
    if frames is None:
        frames = _decode_by_count(path, k, probe.stream_index)
    rotation = display_rotation(frames[0])
    w, h = probe.width, probe.height
    display = (h, w) if rotation % 180 else (w, h)
    size = stored_size(display[0], display[1], frames_cfg)
    (rgb0, g0), (rgb1, g1) = (_convert(f, size, native, rotation) for f in frames)
    return (rgb0, rgb1, g0, g1), rotation


def _decode_by_seek(container, path: str, probe: ProbeInfo, k: int):
    target, following = probe.timestamps[k], probe.timestamps[k + 1]
    stream = container.streams[probe.stream_index]
    tb = float(stream.time_base)
    # Half a frame of tolerance: timestamps of decoded frames and packets can differ by
    # rounding in some containers.
    eps = 0.5 * (following - target)
    container.seek(int(math.floor(target / tb)), stream=stream, backward=True, any_frame=False)
    try:
        frames = _decode_from_seek_point(container, stream, target, eps)
    except Exception as err:
        raise ClipError("decode_error", f"{path}: frame {k}: {type(err).__name__}: {err}") from None
    finally:
        stream.codec_context.skip_frame = "DEFAULT"
    if frames is not None and len(frames) < 2:
        return None        # nothing decodable after the seek point: count from the start
    return frames


def _decode_from_seek_point(container, stream, target: float, eps: float) -> Optional[list]:
    """Frames at ``target`` and the next (fewer if the stream ends first; None: the seek
    cannot be trusted, count frames instead), decoding forward from the seek point. Packets
    before the target that no other frame references (non-reference B-frames) are not
    decoded at all: a third less work on long GOPs, and the same pixels, since nothing
    depends on them and they are never returned."""
    tb = float(stream.time_base)
    codec = stream.codec_context
    first_wanted_pts = math.floor((target - eps) / tb)
    got = []
    for packet in container.demux(stream):
        wanted = packet.pts is None or packet.pts >= first_wanted_pts
        codec.skip_frame = "DEFAULT" if wanted else "NONREF"
        for frame in packet.decode():
            if frame.pts is None:
                return None
            t = frame.pts * tb
            if t < target - eps:
                continue
            if not got and t > target + eps:
                return None        # the seek landed past the keyframe: count instead
            got.append(frame)
            if len(got) == 2:
                return got
    return got


def _decode_by_count(path: str, k: int, stream_index: int = 0):
    with open_container(path) as container:
        got = []
        try:
            for i, frame in enumerate(container.decode(container.streams[stream_index])):
                if i >= k:
                    got.append(frame)
                    if len(got) == 2:
                        return got
        except Exception as err:
            raise ClipError("decode_error", f"{path}: frame {k}: {type(err).__name__}: {err}") from None
    raise ClipError("decode_error", f"{path}: fewer than {k + 2} decodable frames (truncated file?)")


# -------------------------------------------------------------------------------- audio

def load_audio_window(path: str, center: float, seconds: float, sample_rate: int,
                      min_coverage: float = 0.5, offset: float = 0.0,
                      container=None) -> tuple[np.ndarray, dict[str, Any]]:
    """Mono float32 window of ``seconds`` centred on ``center`` (s from the video start).

    ``offset`` is the video's first timestamp, so audio and video share a time origin.
    ``container``: ``path`` already opened by the caller (left open).
    """
    if container is None:
        with open_container(path) as own:
            return load_audio_window(path, center, seconds, sample_rate, min_coverage, offset, own)
    n_out = int(round(seconds * sample_rate))
    t0 = center - seconds / 2 + offset
    if not container.streams.audio:
        raise ClipError("no_audio_stream", f"{path} has no audio stream")
    stream = container.streams.audio[0]
    track_start, track_end = _audio_extent(container, stream)
    if track_end is not None and track_end - track_start >= seconds:
        # Shift the window inside the track when the keyframe is near an end.
        t0 = min(max(t0, track_start), track_end - seconds)
        samples, first_time = _decode_audio(container, stream, t0, t0 + seconds, sample_rate)
        start = int(round((t0 - first_time) * sample_rate)) if first_time is not None else -1
        if start >= 0 and len(samples) - start >= n_out:
            wave = samples[start:start + n_out]
            return wave, {"window": [round(t0 - offset, 4), round(t0 - offset + seconds, 4)],
                          "tiled": False, "track_seconds": round(track_end - track_start, 3)}
    # Short track or unknown extent: a fresh read of the whole track (rare; reopens the file).
    return _whole_track_window(path, center + offset, seconds, sample_rate, min_coverage, offset)


def official_test_window(samples: np.ndarray, seconds: float, sample_rate: int) -> tuple[np.ndarray, int]:
    """The official test loader's audio window of a whole track, and its start index.

    Its centre is half the track's *whole* seconds (``len // rate / 2``), not the track's
    middle; the bounds are cut with Python slice semantics, so on a track shorter than the
    window the negative start counts from the end; a window shorter than ``seconds`` is
    tiled and cut to length.
    """
    half_whole = float(len(samples) // sample_rate) / 2
    lo = int((half_whole - seconds / 2) * sample_rate)
    hi = int((half_whole + seconds / 2) * sample_rate)
    window = samples[lo:hi]
    n_out = int(sample_rate * seconds)
    if len(window) == 0:
        raise ClipError("no_audio_samples", f"the official test window of a {len(samples)}-sample track is empty")
    if len(window) < n_out:
        window = np.tile(window, int(n_out / len(window)) + 1)
    return window[:n_out], lo if lo >= 0 else max(len(samples) + lo, 0)


def official_test_audio(path: str, seconds: float, sample_rate: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The whole track of ``path`` (mono, ``sample_rate``) cut as the official test loader does."""
    with open_container(path) as container:
        if not container.streams.audio:
            raise ClipError("no_audio_stream", f"{path} has no audio stream")
        samples, _ = _decode_audio(container, container.streams.audio[0], 0.0, math.inf, sample_rate, seek=False)
    if len(samples) == 0:
        raise ClipError("no_audio_samples", f"{path}: the audio stream decodes to no samples")
    wave, start = official_test_window(samples, seconds, sample_rate)
    track = len(samples) / sample_rate
    return wave, {"window": [round(start / sample_rate, 4), round(min(start / sample_rate + seconds, track), 4)],
                  "tiled": len(samples[start:start + int(sample_rate * seconds)]) < int(sample_rate * seconds),
                  "track_seconds": round(track, 3), "rule": "official_test"}


def _measure_silence(wave: np.ndarray, min_rms_dbfs: float, path: str, info: dict[str, Any],
                     reject: bool = True) -> None:
    """Record the window's level (and whether it is silent); drop a silent clip if ``reject``."""
    rms_db = 20 * math.log10(float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) + 1e-12)
    info["rms_dbfs"] = round(rms_db, 1)
    info["silent"] = rms_db < min_rms_dbfs
    if reject and rms_db < min_rms_dbfs:
        raise ClipError("silent_audio", f"{path}: audio window {info.get('window')} is silent "
                                        f"({rms_db:.0f} dBFS < audio.min_rms_dbfs={min_rms_dbfs:g})")


def _audio_extent(container, stream) -> tuple[float, Optional[float]]:
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    if stream.duration:
        return start, start + float(stream.duration * stream.time_base)
    if container.duration:
        return start, start + container.duration / 1_000_000
    return start, None


def _decode_audio(container, stream, t_from: float, t_to: float, sample_rate: int,
                  seek: bool = True) -> tuple[np.ndarray, Optional[float]]:
    """Resampled mono samples from about ``t_from`` to past ``t_to``, and the time of the first."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    tb = float(stream.time_base)
    if seek:
        # Always seek: the container may be shared with the probe and frame decoding, so
        # its read position is anywhere. Near the start, seek to the track's first packet.
        start = stream.start_time if stream.start_time is not None else 0
        target = int((t_from - _AUDIO_SEEK_MARGIN_S) / tb) if t_from > _AUDIO_SEEK_MARGIN_S else min(start, 0)
        container.seek(target, stream=stream, backward=True)
    chunks: list[np.ndarray] = []
    first_time: Optional[float] = None
    stop = t_to + 0.1
    try:
        for frame in container.decode(stream):
            pts = frame.pts
            if pts is not None and first_time is None:
                first_time = float(frame.time)
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
            # pts * float time base: no Fraction arithmetic per audio frame (~100 a clip).
            if pts is not None and pts * tb > stop:
                break
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as err:
        if not chunks:
            raise ClipError("audio_decode_error", f"{container.name}: {err}") from None
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return samples, first_time


def _whole_track_window(path: str, center: float, seconds: float, sample_rate: int,
                        min_coverage: float, offset: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Fallback for short tracks and unknown durations: read it all, tile when short."""
    n_out = int(round(seconds * sample_rate))
    with open_container(path) as container:
        stream = container.streams.audio[0]
        samples, first_time = _decode_audio(container, stream, 0.0, math.inf, sample_rate, seek=False)
    if len(samples) == 0:
        raise ClipError("no_audio_samples", f"{path}: the audio stream decodes to no samples")
    coverage = len(samples) / n_out
    if min_coverage > 0 and coverage < min_coverage:
        raise ClipError("audio_too_short",
                        f"{path}: {len(samples) / sample_rate:.2f} s of audio, window {seconds:g} s "
                        f"(audio.min_coverage={min_coverage:g})")
    track_seconds = round(len(samples) / sample_rate, 3)
    tiled = len(samples) < n_out
    if tiled:
        samples = np.tile(samples, int(math.ceil(n_out / len(samples))))
        wave = samples[:n_out]
        start = 0.0
    else:
        first = first_time or 0.0
        start = center - seconds / 2 - first
        i0 = int(round(min(max(start, 0.0), (len(samples) - n_out) / sample_rate) * sample_rate))
        i0 = min(max(i0, 0), len(samples) - n_out)
        wave = samples[i0:i0 + n_out]
        start = first + i0 / sample_rate - offset
    return wave, {"window": [round(start, 4), round(start + seconds, 4)], "tiled": tiled,
                  "track_seconds": track_seconds}
