"""Decoding: keyframe choice, frame sizes, audio windows, bad files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import FramesConfig
from pipeline.decode import decode_clip, official_keyframe_from_entry, stored_size
from pipeline.errors import ClipError
from pipeline.process import process_clip
from apps.synth import WorldConfig, keyframe_index, plan_clip, render_frames
from tests.nasty import ffmpeg
from tests.pipeline_helpers import small_config, world


def test_default_keyframe_is_the_synthetic_worlds_middle_frame_with_the_object_in_its_box():
    """The decoded keyframe is the very frame the boxes were computed for: of the rendered
    frames around the middle it matches frame_count // 2 best, and the sounding object's
    pixels (where the rendered frame differs from its background) lie inside the box."""
    root = world(size=128)
    wcfg = WorldConfig(n=6, seed=3, size=128)
    boxes = {b["file"]: b["bbox"][0] for b in json.loads((root / "boxes.json").read_text())}
    cfg = small_config("frames.short_side=128", "frames.max_long_side=128")
    k = keyframe_index(wcfg)
    for i, video in enumerate(sorted((root / "video").glob("*.mp4"))):
        plan = plan_clip(wcfg, i)
        sample = process_clip(str(video), cfg)
        assert sample.meta.keyframe_index == k
        rendered = list(render_frames(plan, wcfg))
        errors = {j: np.abs(sample.frame.astype(float) - rendered[j]).mean() for j in range(k - 4, k + 5)}
        assert min(errors, key=errors.get) == k or errors[k] - min(errors.values()) < 0.05, errors
        # The sounding object alone, drawn on a blank frame, must fall inside its box.
        solo = dict(plan, objects=[plan["objects"][plan["sounding"]]], draw_order=[0], sounding=0)
        alone = next(f for j, f in enumerate(render_frames(solo, wcfg)) if j == k)
        background = next(render_frames(dict(solo, objects=[], draw_order=[]), wcfg))
        ys, xs = np.nonzero(np.abs(alone.astype(int) - background).max(axis=2) > 0)
        x1, y1, x2, y2 = (v * 128 for v in boxes[video.stem])
        assert xs.min() >= x1 - 1 and xs.max() <= x2 + 1 and ys.min() >= y1 - 1 and ys.max() <= y2 + 1
        # ... and the decoded frame shows it there: it matches the render inside the box.
        inside = (slice(int(y1), int(y2)), slice(int(x1), int(x2)))
        assert np.abs(sample.frame[inside].astype(float) - rendered[k][inside]).mean() < 15   # H.264 noise ~9


def test_stored_frame_has_the_configured_short_side_and_a_capped_long_side():
    cfg = FramesConfig(short_side=256, max_long_side=512)
    assert stored_size(1280, 720, cfg) == (455, 256)
    assert stored_size(576, 1024, cfg) == (256, 455)            # portrait
    assert stored_size(8000, 1000, cfg) == (512, 64)            # panorama: long side capped
    assert stored_size(300, 200, FramesConfig(short_side=0)) == (300, 200)


def test_official_imagetoframe_rule_takes_entry_minus_one_or_two_at_the_end():
    assert official_keyframe_from_entry(10, 100) == 9
    assert official_keyframe_from_entry(100, 100) == 98


def test_audio_window_is_three_seconds_at_the_configured_rate_centred_on_the_keyframe():
    video = sorted((world() / "video").glob("*.mp4"))[0]
    decoded = decode_clip(str(video), small_config())
    assert decoded.waveform.shape == (3 * 16000,)
    assert decoded.waveform.dtype == np.float32
    start, end = decoded.audio_info["window"]
    assert abs((start + end) / 2 - decoded.keyframe_time) < 0.01
    assert decoded.keyframe_time == pytest.approx(50 / 25)


def test_audio_shorter_than_the_window_is_tiled_as_the_official_code_does():
    short = world(n=2, size=64, seconds=1.6, seed=5)
    video = sorted((short / "video").glob("*.mp4"))[0]
    decoded = decode_clip(str(video), small_config())
    assert decoded.audio_info["tiled"] is True
    n = int(round(decoded.audio_info["track_seconds"] * 16000))
    wave = decoded.waveform
    # The window repeats with the track's period (track_seconds is rounded to 1 ms).
    assert any(np.allclose(wave[p:], wave[:len(wave) - p], atol=1e-6) for p in range(n - 40, n + 40))
    assert not np.allclose(wave[n // 2:], wave[:len(wave) - n // 2], atol=1e-3)


def test_video_without_audio_stream_is_rejected_with_reason(tmp_path: Path):
    src = sorted((world() / "video").glob("*.mp4"))[0]
    silent = tmp_path / "noaudio.mp4"
    ffmpeg("-i", str(src), "-an", "-c", "copy", str(silent))
    with pytest.raises(ClipError) as err:
        decode_clip(str(silent), small_config())
    assert err.value.reason == "no_audio_stream" and "noaudio.mp4" in err.value.detail


def test_separate_audio_file_wins_over_the_videos_track(tmp_path: Path):
    videos = sorted((world() / "video").glob("*.mp4"))
    other_audio = tmp_path / "other.wav"
    ffmpeg("-i", str(videos[1]), "-vn", "-ac", "1", str(other_audio))
    cfg = small_config()
    own = decode_clip(str(videos[0]), cfg).waveform
    replaced = decode_clip(str(videos[0]), cfg, audio_path=str(other_audio)).waveform
    reference = decode_clip(str(videos[1]), cfg).waveform
    assert np.corrcoef(replaced, reference)[0, 1] > 0.95
    assert abs(np.corrcoef(replaced, own)[0, 1]) < 0.5
