"""Stage 1, index: find the clips of a raw download folder and probe each file.

Input layouts: ``RAW/video/<id>.<ext>`` (optionally ``RAW/audio/<id>.<ext>``, which then
wins over the video's own track, as Flickr-SoundNet ships audio separately), or a flat
folder of video files. The clip id is the file stem.

Probing reads only the container and demuxes the video packets (no decoding): that gives
the true frame count and per-frame timestamps even for variable-frame-rate files and
containers without a frame count in the header (webm, some avi).
"""
from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

from pipeline.config import InputConfig
from pipeline.errors import ClipError, Failure

_HEADER_NAMES = {"id", "file", "filename", "video", "video_id", "ytid", "youtube_id", "name"}
_VGGSOUND_ID = re.compile(r"^(?P<ytid>[A-Za-z0-9_-]{11})_(?P<sec>\d+)$")


@dataclass
class ClipInput:
    id: str
    video: str
    audio: Optional[str] = None


@dataclass
class Discovery:
    clips: list[ClipInput]
    failures: list[Failure] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)


def normalise_id(raw_id: str, id_style: str) -> str:
    """Clip id as the pipeline uses it. VGGSound: 'YTID_19' and 'YTID_000019' -> 'YTID_000019'."""
    clip_id = raw_id.strip()
    if id_style == "vggsound":
        m = _VGGSOUND_ID.match(clip_id)
        if m:
            return f"{m['ytid']}_{int(m['sec']):06d}"
    return clip_id


def read_split_list(path: str | Path, id_style: str = "generic") -> list[str]:
    """Ids from a txt (one per line) or csv (id in column 0) list, in file order, de-duplicated.

    A csv header row ('id', 'file', ...) is skipped; blank lines and '#' comments too.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}")
    rows: list[str] = []
    with path.open(newline="") as f:
        if path.suffix.lower() == ".csv":
            rows = [r[0] for r in csv.reader(f) if r and r[0].strip()]
        else:
            rows = [line.split()[0] for line in f if line.strip()]
    rows = [r.strip() for r in rows if not r.strip().startswith("#")]
    if rows and rows[0].lower() in _HEADER_NAMES:
        rows = rows[1:]
    seen: dict[str, None] = {}
    for r in rows:
        seen.setdefault(normalise_id(r, id_style), None)
    return list(seen)


def _media_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def discover(input_dir: str | Path, input_cfg: InputConfig,
             split_ids: list[str] | None = None) -> Discovery:
    """Map clip ids to files. Duplicate ids keep the first file in extension-preference
    order and record the others; ids of the split list without a file are recorded."""
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"input folder not found: {root}")
    video_dir = root / "video"
    structured = video_dir.is_dir()
    folder = video_dir if structured else root
    video_exts = [e.lower() for e in input_cfg.video_extensions]
    by_id: dict[str, list[Path]] = {}
    ignored: list[str] = []
    for p in _media_files(folder):
        # In video/ every file is meant to be a clip (a non-video there is a failure);
        # a flat folder may also hold lists and boxes, which are not clips.
        if not structured and p.suffix.lower() not in video_exts:
            ignored.append(str(p))
            continue
        by_id.setdefault(normalise_id(p.stem, input_cfg.id_style), []).append(p)
    audio_by_id = _audio_files(root / "audio", input_cfg)
    failures: list[Failure] = []
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
        ordered = []
        for clip_id in split_ids:
            if clip_id in clips:
                ordered.append(clips[clip_id])
            else:
                failures.append(Failure(clip_id, "index", "missing_file",
                                        f"id in the split list has no file in {folder}"))
    return Discovery(ordered, failures, ignored)


def _audio_files(audio_dir: Path, input_cfg: InputConfig) -> dict[str, Path]:
    if not audio_dir.is_dir():
        return {}
    rank = {e.lower(): i for i, e in enumerate(input_cfg.audio_extensions)}
    found: dict[str, Path] = {}
    for p in _media_files(audio_dir):
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
    if not container.streams.video:
        raise ClipError("no_video_stream", f"{path} has no video stream")
    stream = container.streams.video[0]
    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if width <= 0 or height <= 0:
        raise ClipError("unreadable_container", f"{path}: video stream has no frame size")
    if max_source_pixels and width * height > max_source_pixels:
        raise ClipError("resolution_too_large",
                        f"{path}: {width}x{height} exceeds frames.max_source_pixels={max_source_pixels}")
    timestamps = _packet_times(container, stream, path)
    info = ProbeInfo(path=path, container=container.format.name, codec=stream.codec_context.name,
                     width=width, height=height, frame_count=len(timestamps), duration=0.0,
                     fps=0.0, vfr=False, has_audio=bool(container.streams.audio), timestamps=timestamps)
    if audio_path is not None:
        info.has_audio = _has_audio_stream(audio_path)
    _fill_rates(info)
    return info


def _packet_times(container, stream, path: str) -> list[float]:
    """Presentation times (s) of the video packets, sorted; demuxing only, no decoding."""
    tb = stream.time_base or Fraction(1, 90000)
    times: list[float] = []
    missing = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:          # the flush packet at the end
                continue
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                missing += 1
                continue
            times.append(float(ts * tb))
    except Exception as err:
        if not times:
            raise ClipError("unreadable_container", f"{path}: demuxing failed: {err}") from None
        # A truncated tail: keep the frames before the damage (decode checks them later).
    if missing and not times:
        # Containers without timestamps: frames are then addressed by order, at a nominal rate.
        rate = float(stream.average_rate or 25)
        times = [i / rate for i in range(missing)]
    times.sort()
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
