"""python -m apps.localize on a video file: no shards, the checkpoint's own pipeline settings."""
from __future__ import annotations

import json
import shutil
import subprocess

import cv2
import numpy as np
import pytest
import torch

from apps.localize import main, pipeline_config

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs system ffmpeg")
SETTINGS = {"frames": {"short_side": 64, "max_long_side": 128},
            "flow": {"method": "dis", "dis": {"preset": "ultrafast"}},
            "audio": {"feature": "logmel", "n_mels": 32, "seconds": 1.0}}


def _video(path, audio=True, size="96x64"):
    """A 2 s clip (96x64 unless ``size``): a moving test pattern with a tone (or no audio stream)."""
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=10:duration=2"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac", "-shortest"]
    subprocess.run(cmd + ["-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def _checkpoint(path):
    from htf.model_config import ModelConfig
    from train.config import TrainConfig
    from htf.model import HTFModel, checkpoint_payload

    cfg = TrainConfig(model=ModelConfig(width=8, image_size=56, audio_frames=64))
    torch.manual_seed(0)
    model = HTFModel(cfg.model)
    model.data_settings = SETTINGS
    torch.save(checkpoint_payload(model, cfg), path)
    return str(path)


def test_pipeline_config_follows_the_checkpoint_settings():
    cfg = pipeline_config(SETTINGS, ["flow.device=cpu"])
    assert (cfg.frames.short_side, cfg.flow.method, cfg.audio.n_mels) == (64, "dis", 32)


def test_localize_writes_keyframe_png_and_overlay_video_with_audio(tmp_path):
    video = _video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    assert main(["--checkpoint", _checkpoint(tmp_path / "m.pt"), "--video", str(video),
                 "--output", str(out), "--every", "5"]) == 0
    result = json.loads((out / "clip_localize.json").read_text())
    assert result["keyframe_index"] == 10 and len(result["map"]) == 7
    assert result["analysed_frames"] == [0, 5, 10, 15]
    assert result["pipeline"]["frames"]["short_side"] == 64
    png = cv2.imread(str(out / "clip_keyframe.png"))
    assert png is not None and min(png.shape[:2]) >= 256
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type",
                            "-of", "csv=p=0", str(out / "clip_overlay.mp4")],
                           capture_output=True, text=True, check=True).stdout.split()
    assert sorted(probe) == ["audio", "video"]
    width = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width",
                            "-of", "csv=p=0", str(out / "clip_overlay.mp4")],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert int(width) == png.shape[1] + png.shape[1] % 2   # the video frames are the still's layout


def test_video_without_audio_is_rejected_with_the_reason(tmp_path, capsys):
    video = _video(tmp_path / "mute.mp4", audio=False)
    assert main(["--checkpoint", _checkpoint(tmp_path / "m.pt"), "--video", str(video),
                 "--output", str(tmp_path / "out")]) == 2
    assert "no_audio_stream" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()   # a failed command leaves no output folder


def test_rotated_video_is_shown_as_displayed(tmp_path):
    import numpy as np

    from apps.localize import iter_frames
    from tests import nasty

    video = nasty.rotated(tmp_path)                              # 64x48 stored, turned 90 degrees
    assert main(["--checkpoint", _checkpoint(tmp_path / "m.pt"), "--video", str(video),
                 "--output", str(tmp_path / "out"), "--every", "25"]) == 0
    # The overlay's frames are the frames as players show them (ffmpeg applies the matrix).
    shown = tmp_path / "shown.png"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-frames:v", "1", str(shown)], check=True)
    expected = cv2.cvtColor(cv2.imread(str(shown)), cv2.COLOR_BGR2RGB)
    assert expected.shape[:2] == (64, 48)
    first = next(iter_frames(str(video), (48, 64)))
    assert np.abs(first.astype(int) - expected.astype(int)).mean() < 12


def test_extreme_aspect_video_is_one_error_line(tmp_path, capsys):
    from tests import nasty

    video = nasty.extreme_aspect(tmp_path)
    assert main(["--checkpoint", _checkpoint(tmp_path / "m.pt"), "--video", str(video),
                 "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ") and "4000x64" in err


def test_output_names_of_a_very_long_video_name_fit_a_file_name():
    from apps.localize import output_stem

    assert output_stem("/x/clip one.mp4") == "clip one"
    long_stem = output_stem("/x/" + "v" * 250 + ".mp4")
    assert len(f"{long_stem}_localize.json".encode()) <= 255


def test_a_720p_video_gives_a_still_with_its_aspect_ratio_at_a_readable_size(tmp_path):
    from htf.pictures import display_size

    video = _video(tmp_path / "wide.mp4", size="1280x720")
    assert main(["--checkpoint", _checkpoint(tmp_path / "m.pt"), "--video", str(video),
                 "--output", str(tmp_path / "out")]) == 0
    png = cv2.imread(str(tmp_path / "out" / "wide_keyframe.png"))
    panel_h, panel_w = display_size(64, 114)              # the stored 16:9 frame (short side 64)
    assert panel_h == 256 and abs(panel_w / panel_h - 16 / 9) < 0.01
    assert png.shape[1] == 2 * panel_w + 84                # frame | heat map | colour bar
    assert png.shape[0] > panel_h


def test_the_sync_baseline_maps_a_video_without_a_model(tmp_path):
    from tests.test_sync import _flicker_clip

    video = _flicker_clip(tmp_path / "flicker.mp4")
    assert main(["--baseline", "sync", "--video", str(video), "--output", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "flicker_localize.json").read_text())
    assert result["map_from"] == "baseline sync" and result["pipeline"]["motion"]["series"] is True
    amap = np.asarray(result["map"])
    assert amap.shape == (7, 7) and amap[:3, :3].mean() > amap[4:, 4:].mean() + 0.4   # the top-left quarter
    assert (tmp_path / "out" / "flicker_keyframe.png").is_file()


def test_a_map_comes_from_a_checkpoint_or_a_baseline_not_both(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--checkpoint", "x.pt", "--baseline", "sync", "--video", "v.mp4", "--output", str(tmp_path)])
    assert stopped.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_a_baseline_other_than_sync_reads_no_motion_series():
    from apps.localize import reads_motion_series
    from eval.baselines import Baseline
    from eval.config import BaselineConfig

    assert reads_motion_series(Baseline("sync", BaselineConfig()))
    assert not reads_motion_series(Baseline("flow", BaselineConfig()))
