"""Stage 1, index: find the clips of a raw download folder and probe each file.

Input layouts: ``RAW/video/<id>.<ext>`` (optionally ``RAW/audio/<id>.<ext>``, which then
wins over the video's own track, as Flickr-SoundNet ships audio separately), or a flat
folder of video files. The clip id is the file stem.

Probing reads only the container and demuxes the video packets (no decoding): that gives
the true frame count and per-frame timestamps even for variable-frame-rate files and
containers without a frame count in the header (webm, some avi).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

from htf.lists import normalise_id
from pipeline.config import InputConfig
from pipeline.errors import ClipError, Failure


@dataclass
class ClipInput:
    """A clip found in the input folder; the run adds what the keyframe map and the
    annotations say of it."""
    id: str
    video: str
    audio: Optional[str] = None
    keyframe_index: Optional[int] = None
    keyframe_entry: Optional[int] = None
    boxes: Optional[list] = None


@dataclass
class Discovery:
    clips: list[ClipInput]
    failures: list[Failure] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)      # files without a video extension
    warnings: list[Failure] = field(default_factory=list)       # other entries passed over, with why


def _media_files(folder: Path) -> tuple[list[Path], list[tuple[Path, str, str]]]:
    """Regular files of ``folder`` (sorted), and every other entry as (path, reason, detail):
    nothing in the folder is passed over without a word."""
    files: list[Path] = []
    others: list[tuple[Path, str, str]] = []
    for p in sorted(folder.iterdir()):
        problem = _entry_problem(p)
        if problem is None:
            files.append(p)
        else:
            others.append((p, *problem))
    return files, others


def _entry_problem(p: Path) -> tuple[str, str] | None:
    """Why folder entry ``p`` cannot be a clip file, or None when it can."""
    if p.name.startswith("."):
        return "hidden_file", f"{p} ignored (hidden)"
    if p.is_symlink() and not p.exists():
        return "broken_link", f"{p} is a symbolic link to {os.readlink(p)}, which does not exist"
    if p.is_dir():
        return "not_a_file", f"{p} is a directory (clips are files directly in the folder)"
    if not p.is_file():
        return "not_a_file", f"{p} is not a regular file (a pipe, socket or device)"
    try:
        with open(p, "rb"):
            pass
    except OSError as err:
        return "unreadable_file", f"{p}: {err.strerror or err} (check its permissions)"
    return None


def discover(input_dir: str | Path, input_cfg: InputConfig,
             split_ids: list[str] | None = None) -> Discovery:
    """Map clip ids to files. Duplicate ids keep the first file in extension-preference
    order and record the others; ids of the split list without a file are recorded, and
    so is every entry of the clip folder that cannot be a clip (folders, broken links,
    unreadable files)."""
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"input folder not found: {root}")
    video_dir = root / "video"
    structured = video_dir.is_dir()
    folder = video_dir if structured else root
    video_exts = [e.lower() for e in input_cfg.video_extensions]
    by_id: dict[str, list[Path]] = {}
    ignored: list[str] = []
    failures: list[Failure] = []
    bad_ids: set[str] = set()
    files, others = _media_files(folder)
    passed_over: list[Failure] = []
    for p, reason, detail in others:
        # In video/ every visible entry is meant to be a clip; in a flat folder only
        # entries named like videos are (it may also hold lists, boxes, an audio/ folder).
        if reason == "hidden_file" or (not structured and p.suffix.lower() not in video_exts):
            passed_over.append(Failure(normalise_id(p.stem, input_cfg.id_style) or p.name, "index",
                                       reason, f"{detail}; not a clip", str(p)))
            continue
        clip_id = normalise_id(p.stem, input_cfg.id_style)
        bad_ids.add(clip_id)
        failures.append(Failure(clip_id, "index", reason, detail, str(p)))
    for p in files:
        # In video/ every file is meant to be a clip (a non-video there is a failure);
        # a flat folder may also hold lists and boxes, which are not clips.
        if not structured and p.suffix.lower() not in video_exts:
            ignored.append(str(p))
            continue
        by_id.setdefault(normalise_id(p.stem, input_cfg.id_style), []).append(p)
    audio_by_id = _audio_files(root / "audio", input_cfg)
    clips: dict[str, ClipInput] = {}
    rank = {e: i for i, e in enumerate(video_exts)}
    for clip_id, paths in by_id.items():
        paths.sort(key=lambda p: (rank.get(p.suffix.lower(), len(rank)), p.name))
        for dup in paths[1:]:
            failures.append(Failure(clip_id, "index", "duplicate_id",
                                    f"{dup} has the same id as {paths[0]} (kept)", str(dup)))
        audio = audio_by_id.get(clip_id)
        clips[clip_id] = ClipInput(clip_id, str(paths[0]), str(audio) if audio else None)
    if split_ids is None:
        ordered = [clips[k] for k in sorted(clips)]
    else:
        wanted = set(split_ids)
        failures = [f for f in failures if f.reason == "duplicate_id" or f.id in wanted]
        ordered = []
        for clip_id in split_ids:
            if clip_id in clips:
                ordered.append(clips[clip_id])
            elif clip_id not in bad_ids:     # a bad entry already has its failure line
                failures.append(Failure(clip_id, "index", "missing_file",
                                        f"id in the split list has no file in {folder}"))
    return Discovery(ordered, failures, ignored, passed_over)


def _audio_files(audio_dir: Path, input_cfg: InputConfig) -> dict[str, Path]:
    if not audio_dir.is_dir():
        return {}
    rank = {e.lower(): i for i, e in enumerate(input_cfg.audio_extensions)}
    found: dict[str, Path] = {}
    for p in _media_files(audio_dir)[0]:
        clip_id = normalise_id(p.stem, input_cfg.id_style)
        best = found.get(clip_id)
        if best is None or rank.get(p.suffix.lower(), 99) < rank.get(best.suffix.lower(), 99):
            found[clip_id] = p
    return found


# ------------------------------------------------------------------------------ probing

@dataclass
class ProbeInfo:
    path: str
    container: str
    codec: str
    width: int
    height: int
    frame_count: int
    duration: float            # seconds, from the frame timestamps (last - first + 1 frame)
    fps: float                 # average frames per second from timestamps
    vfr: bool                  # frame intervals vary by more than 10 %
    has_audio: bool
    timestamps: list[float] = field(default_factory=list, repr=False)  # seconds, presentation order
    stream_index: int = 0      # the container stream of the clip's video (cover pictures skipped)
    header_frame_count: Optional[int] = None   # the header's count, only where the frames disagree

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("timestamps")
        return d


def open_container(path: str):
    """av.open with every failure mode turned into a ClipError naming the file."""
    import av

    p = Path(path)
    if not p.is_file():
        raise ClipError("missing_file", f"{path} does not exist")
    if p.stat().st_size == 0:
        raise ClipError("empty_file", f"{path} is zero bytes")
    try:
        return av.open(str(p))
    except Exception as err:  # PyAV raises many types (InvalidDataError, ValueError, ...)
        raise ClipError("unreadable_container", f"{path}: {type(err).__name__}: {err}") from None


def probe_video(path: str, audio_path: str | None = None, max_source_pixels: int | None = None) -> ProbeInfo:
    """Probe a video file: size, codec, per-frame timestamps, audio presence."""
    with open_container(path) as container:
        return probe_container(container, path, audio_path, max_source_pixels)


def probe_container(container, path: str, audio_path: str | None = None,
                    max_source_pixels: int | None = None) -> ProbeInfo:
    """``probe_video`` on a container the caller already opened (and goes on using: the
    pipeline opens each file once for probe, frames and audio; opening costs 3-10 ms)."""
    stream, timestamps = _pick_video_stream(container, path)
    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if width <= 0 or height <= 0:
        raise ClipError("unreadable_container", f"{path}: video stream has no frame size")
    if max_source_pixels and width * height > max_source_pixels:
        raise ClipError("resolution_too_large",
                        f"{path}: {width}x{height} exceeds frames.max_source_pixels={max_source_pixels}")
    header_frames = int(stream.frames or 0)
    checked_count: Optional[int] = None
    if header_frames and header_frames != len(timestamps):
        # The header and the packets disagree (a cut file): trust only frames that decode.
        timestamps = _decoded_times(path, stream.index)
        checked_count = header_frames
    info = ProbeInfo(path=path, container=container.format.name, codec=stream.codec_context.name,
                     width=width, height=height, frame_count=len(timestamps), duration=0.0,
                     fps=0.0, vfr=False, has_audio=bool(container.streams.audio), timestamps=timestamps,
                     stream_index=stream.index,
                     header_frame_count=checked_count if checked_count != len(timestamps) else None)
    if audio_path is not None:
        info.has_audio = _has_audio_stream(audio_path)
    _fill_rates(info)
    return info


def _is_cover_picture(stream) -> bool:
    import av

    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _pick_video_stream(container, path: str):
    """(the clip's video stream, its packet times): not a cover picture, and of several
    candidates the one with the most frames (a still image stored as a one-frame track
    before the real video is not the clip)."""
    candidates = [s for s in container.streams.video if not _is_cover_picture(s)]
    if not candidates:
        detail = "only a cover picture" if container.streams.video else "no video stream"
        raise ClipError("no_video_stream", f"{path} has {detail}")
    if len(candidates) == 1:
        return candidates[0], _packet_times(container, candidates[0], path)
    times = _packet_times_of(container, candidates, path)
    best = max(candidates, key=lambda s: (len(times[s.index]), -s.index))
    return best, times[best.index]


def _decoded_times(path: str, stream_index: int) -> list[float]:
    """Presentation times (s) of every frame of the stream that decodes (up to the first
    damage); used only when the header promises another count than the packets hold.
    A fresh open: the caller's container has been read to its end."""
    times: list[float] = []
    with open_container(path) as container:
        stream = container.streams[stream_index]
        tb = float(stream.time_base or Fraction(1, 90000))
        rate = float(stream.average_rate or 25)
        try:
            for n, frame in enumerate(container.decode(stream)):
                times.append(frame.pts * tb if frame.pts is not None else n / rate)
        except Exception:
            pass        # the damage: the frames before it are the clip
    if not times:
        raise ClipError("decode_error", f"{path}: no frame decodes")
    times.sort()
    return times


def _packet_times(container, stream, path: str) -> list[float]:
    """Presentation times (s) of the video packets, sorted; demuxing only, no decoding."""
    return _packet_times_of(container, [stream], path)[stream.index]


def _packet_times_of(container, streams: list, path: str) -> dict[int, list[float]]:
    """``_packet_times`` of several streams in one pass over the file."""
    bases = {s.index: s.time_base or Fraction(1, 90000) for s in streams}
    times: dict[int, list[float]] = {s.index: [] for s in streams}
    missing = dict.fromkeys(times, 0)
    try:
        for packet in container.demux(*streams):
            if packet.size == 0:          # the flush packet at the end
                continue
            ts = packet.pts if packet.pts is not None else packet.dts
            i = packet.stream.index
            if ts is None:
                missing[i] += 1
                continue
            times[i].append(float(ts * bases[i]))
    except Exception as err:
        if not any(times.values()):
            raise ClipError("unreadable_container", f"{path}: demuxing failed: {err}") from None
        # A truncated tail: keep the frames before the damage (decode checks them later).
    for s in streams:
        if missing[s.index] and not times[s.index]:
            # Containers without timestamps: frames are then addressed by order, at a nominal rate.
            rate = float(s.average_rate or 25)
            times[s.index] = [i / rate for i in range(missing[s.index])]
        times[s.index].sort()
    return times


def _fill_rates(info: ProbeInfo) -> None:
    """fps, duration and vfr from the packet times (none for fewer than two distinct times)."""
    t = info.timestamps
    if len(t) >= 2 and t[-1] > t[0]:
        intervals = [b - a for a, b in zip(t, t[1:])]
        mean = (t[-1] - t[0]) / (len(t) - 1)
        info.fps = 1.0 / mean
        info.duration = t[-1] - t[0] + mean
        positive = [x for x in intervals if x > 0]
        info.vfr = bool(positive) and (max(positive) - min(positive)) > 0.1 * mean


def _has_audio_stream(path: str) -> bool:
    try:
        with open_container(path) as container:
            return bool(container.streams.audio)
    except ClipError:
        return False
