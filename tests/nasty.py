"""Nasty inputs, made with ffmpeg: tiny, deterministic, one function each.

Every maker writes one file (or folder entry) under a given folder and returns its path.
The content is a moving test pattern (``testsrc2``, whose picture shifts every frame) with
a tone, so a healthy file of each kind decodes to a sample; what makes it nasty is the
container, its metadata, or the folder entry itself. Used by tests/test_nasty_inputs.py.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable

FPS = 25


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True)


def _av_inputs(width: int, height: int, seconds: float) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={FPS}:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}"]


def clip(path: Path, width: int = 64, height: int = 48, seconds: float = 2.0,
         codec: list[str] | None = None, extra: list[str] | None = None) -> Path:
    """A healthy clip (H.264 + AAC unless ``codec`` says otherwise)."""
    codec = codec or ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    ffmpeg(*_av_inputs(width, height, seconds), *codec, "-c:a", "aac", "-shortest",
           *(extra or []), str(path))
    return path


def moving_texture(path: Path, dx: int, dy: int, width: int = 96, height: int = 64,
                   frames: int = 50, rotate: int = 0) -> Path:
    """A smooth random texture sliding by (dx, dy) stored pixels a frame (lossless-ish
    H.264, seeded), with a tone; ``rotate`` adds a display rotation tag (degrees)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(7)
    margin = (abs(dx) + abs(dy)) * frames + 8
    canvas = rng.random((height + 2 * margin, width + 2 * margin)).astype(np.float32)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 2.0)
    canvas = ((canvas - canvas.min()) / (np.ptp(canvas) + 1e-9) * 255).astype(np.uint8)
    video = []
    for i in range(frames):
        # The content moves by (+dx, +dy): the window moves the other way.
        x0, y0 = margin - i * dx, margin - i * dy
        gray = canvas[y0:y0 + height, x0:x0 + width]
        video.append(np.repeat(gray[:, :, None], 3, axis=2))
    raw = np.stack(video).tobytes()
    seconds = frames / FPS
    encoded = path.with_name(f".plain_{path.name}") if rotate else path
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                    "-s", f"{width}x{height}", "-r", str(FPS), "-i", "-",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv444p",
                    "-c:a", "aac", "-shortest", str(encoded)], input=raw, check=True)
    if rotate:        # the tag becomes a display matrix only when copied (ffmpeg 5)
        ffmpeg("-i", str(encoded), "-c", "copy", "-metadata:s:v:0", f"rotate={rotate}", str(path))
        encoded.unlink()
    return path


def _cut(folder: Path, name: str, keep: float, movflags: str) -> Path:
    """The first ``keep`` of a 3 s MP4 written with ``movflags``."""
    full = folder / f".full_{name}"
    clip(full, seconds=3.0, extra=["-movflags", movflags, "-g", "5"])
    data = full.read_bytes()
    full.unlink()
    path = folder / name
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def truncated(folder: Path, name: str = "truncated.mp4", keep: float = 0.6) -> Path:
    """A fragmented MP4 cut at ``keep``: the header still promises 75 frames."""
    return _cut(folder, name, keep, "frag_keyframe+empty_moov")


def truncated_with_header(folder: Path, name: str = "truncated_moov.mp4", keep: float = 0.6) -> Path:
    """An MP4 with its index first (faststart) cut at ``keep``: the index lists 75
    frames, the file holds fewer."""
    return _cut(folder, name, keep, "+faststart")


def rotated(folder: Path, name: str = "rotated.mov", degrees: int = 90) -> Path:
    """A 64x48 stored clip whose display matrix says: show it turned by ``degrees``."""
    plain = folder / f".plain_{name}"
    clip(plain)
    path = folder / name
    ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", str(path))
    plain.unlink()
    return path


def long_gop(folder: Path, ext: str, name: str = "") -> Path:
    """MPEG-TS (``ts``) or MPEG-PS (``mpg``) with one keyframe every 250 frames."""
    path = folder / f"{name or 'long_gop_' + ext}.{ext}"
    codec = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "250",
             "-keyint_min", "250", "-sc_threshold", "0"]
    if ext == "mpg":
        codec = ["-c:v", "mpeg2video", "-g", "250", "-sc_threshold", "0"]
    ffmpeg(*_av_inputs(64, 48, 4.0), *codec, "-c:a", "mp2", "-shortest", str(path))
    return path


def extreme_aspect(folder: Path, name: str = "wide.mp4", width: int = 4000, height: int = 64) -> Path:
    return clip(folder / name, width=width, height=height, seconds=1.0)


def cover_art_first(folder: Path, name: str = "cover.mkv") -> Path:
    """An MKV whose first video stream is an attached cover picture, the real video second."""
    picture = folder / f".cover_{name}.png"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:size=32x32", "-frames:v", "1", str(picture))
    plain = folder / f".plain_{name}.mp4"
    clip(plain)
    path = folder / name
    ffmpeg("-i", str(plain), "-attach", str(picture), "-metadata:s:t", "mimetype=image/png",
           "-map", "0", "-c", "copy", str(path))
    # An attachment stream is not a video stream; a real cover picture is (attached_pic).
    path.unlink()
    ffmpeg("-i", str(picture), "-i", str(plain), "-map", "0:v", "-map", "1:v", "-map", "1:a",
           "-c:v:0", "png", "-c:v:1", "copy", "-c:a", "copy", "-disposition:v:0", "attached_pic",
           str(path))
    picture.unlink()
    plain.unlink()
    return path


def fifo(folder: Path, name: str = "pipe.mp4") -> Path:
    """A named pipe: opening it for reading would block forever."""
    path = folder / name
    os.mkfifo(path)
    return path


def named(folder: Path, name: str) -> Path:
    """A healthy clip under an awkward file name."""
    return clip(folder / name)


def directory(folder: Path, name: str = "a_folder.mp4") -> Path:
    path = folder / name
    path.mkdir()
    return path


def broken_symlink(folder: Path, name: str = "dangling.mp4") -> Path:
    path = folder / name
    os.symlink(folder / "does-not-exist.mp4", path)
    return path


def unreadable(folder: Path, name: str = "locked.mp4") -> Path:
    path = clip(folder / name)
    path.chmod(0)
    return path


def garbage(folder: Path, name: str = "garbage.mp4", size: int = 4096) -> Path:
    path = folder / name
    path.write_bytes(bytes((i * 7919 + 13) % 251 for i in range(size)))
    return path


MAKERS: dict[str, Callable[[Path], Path]] = {
    "truncated": truncated,
    "rotated": rotated,
    "long_gop_ts": lambda f: long_gop(f, "ts"),
    "long_gop_ps": lambda f: long_gop(f, "mpg"),
    "extreme_aspect": extreme_aspect,
    "cover_art_first": cover_art_first,
    "directory": directory,
    "broken_symlink": broken_symlink,
    "fifo": fifo,
    "garbage": garbage,
}
