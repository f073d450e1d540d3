"""The pipeline over a folder of nasty inputs (tests/nasty.py): every entry becomes a
sample or a failure line with a reason, and the samples show what the file shows."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import webdataset as wds

from htf.sample import decode_sample, sample_key
from htf.lists import read_split_list
from pipeline.runner import RunInputs, run_pipeline
from tests import nasty
from tests.pipeline_helpers import failures, small_config

LONG_NAME = "clip-" + "x" * 110          # 115 bytes: past the 100-byte tar name limit
NAMES = ["k.1", "k_1", "vid.part1", LONG_NAME, "with space", "née ünïcode", "caf\udce9 latin-1 byte"]


@pytest.fixture(scope="module")
def nasty_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("nasty_in")
    video = root / "video"
    video.mkdir()
    for make in nasty.MAKERS.values():
        make(video)
    nasty.truncated_with_header(video)
    nasty.moving_texture(video / "moving.mp4", 2, 0)
    nasty.moving_texture(video / "moving_down.mp4", 0, 1)
    nasty.moving_texture(video / "moving_turned.mov", 2, 0, rotate=90)
    for name in NAMES:
        nasty.named(video, f"{name}.mp4")
    (video / ".DS_Store").write_bytes(b"\0")
    out = tmp_path_factory.mktemp("nasty_out")
    cfg = small_config("pack.samples_per_shard=50", "motion.series=true")   # the whole window decoded too
    run_pipeline(cfg, RunInputs(str(root), str(out)), "pack")
    return video, out


def _samples(out: Path) -> dict:
    """Samples read back with webdataset itself (keys split at the first dot there)."""
    found = {}
    for raw in wds.WebDataset(sorted(str(p) for p in out.glob("shard-*.tar")), shardshuffle=False):
        sample = decode_sample(raw)
        found[sample.id] = (raw["__key__"], sample)
    return found


def _failure(out: Path, clip_id: str) -> dict:
    matches = [f for f in failures(out) if f["id"] == clip_id]
    assert len(matches) == 1, f"{clip_id}: {matches}"
    return matches[0]


def test_every_folder_entry_is_a_sample_or_a_failure_line(nasty_run):
    video, out = nasty_run
    ids = set(_samples(out)) | {f["id"] for f in failures(out)}
    entries = {p.stem for p in video.iterdir() if not p.name.startswith(".")}
    assert entries <= ids


def test_every_sample_carries_finite_motion_series_over_its_audio_window(nasty_run):
    _, out = nasty_run
    for clip_id, (_, sample) in _samples(out).items():
        assert sample.motion is not None and sample.motion.shape[1:] == (7, 7), clip_id
        assert len(sample.loudness) == len(sample.motion) and np.isfinite(sample.motion).all(), clip_id


def test_a_moving_texture_changes_everywhere_over_its_window(nasty_run):
    _, out = nasty_run
    sample = _samples(out)["moving"][1]
    assert len(sample.motion) >= 10 and (sample.motion.mean(axis=0) > 1.0).all()


@pytest.mark.parametrize("clip_id, reason", [("a_folder", "not_a_file"), ("dangling", "broken_link"),
                                             ("pipe", "not_a_file"), ("garbage", "unreadable_container")])
def test_entry_that_cannot_be_a_clip_gets_its_reason(nasty_run, clip_id, reason):
    failure = _failure(nasty_run[1], clip_id)
    assert failure["reason"] == reason and clip_id in failure["detail"]


def test_hidden_file_is_listed_as_passed_over(nasty_run):
    warnings = [json.loads(line) for line in (nasty_run[1] / "warnings.jsonl").read_text().splitlines()]
    assert any(w["reason"] == "hidden_file" and w["path"].endswith(".DS_Store") for w in warnings)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_gets_a_failure_line(tmp_path):
    video = tmp_path / "in" / "video"
    video.mkdir(parents=True)
    nasty.unreadable(video)
    run_pipeline(small_config(), RunInputs(str(tmp_path / "in"), str(tmp_path / "out")), "pack")
    assert _failure(tmp_path / "out", "locked")["reason"] == "unreadable_file"


@pytest.mark.parametrize("clip_id", NAMES)
def test_awkward_file_names_read_back_under_their_own_id(nasty_run, clip_id):
    key, sample = _samples(nasty_run[1])[clip_id]
    assert key == sample_key(clip_id)
    assert sample.meta.id == clip_id


def test_truncated_file_keyframe_is_the_middle_of_the_frames_that_decode(nasty_run):
    _, out = nasty_run
    sample = _samples(out)["truncated_moov"][1]
    assert sample.meta.header_frame_count == 75
    assert sample.meta.frame_count < 75
    assert sample.meta.keyframe_index == sample.meta.frame_count // 2
    warnings = [json.loads(line) for line in (out / "warnings.jsonl").read_text().splitlines()]
    assert any(w["id"] == "truncated_moov" and w["reason"] == "frame_count_mismatch" for w in warnings)


def test_truncated_fragmented_file_keeps_the_frames_it_has(nasty_run):
    sample = _samples(nasty_run[1])["truncated"][1]
    assert 30 <= sample.meta.frame_count < 75
    assert sample.meta.keyframe_index == sample.meta.frame_count // 2


def test_rotated_file_is_stored_as_displayed(nasty_run):
    video, out = nasty_run
    sample = _samples(out)["rotated"][1]
    assert sample.meta.rotation == 90
    assert sample.meta.orig_size == [48, 64]
    h, w = sample.frame.shape[:2]
    assert h > w and sample.flow.shape == (2, h, w)
    # The same picture as ffmpeg shows (it applies the display matrix itself).
    shown = video.parent / "shown.png"
    k = sample.meta.keyframe_index
    nasty.ffmpeg("-i", str(video / "rotated.mov"), "-vf", f"select=eq(n\\,{k})", "-frames:v", "1", str(shown))
    expected = cv2.resize(cv2.cvtColor(cv2.imread(str(shown)), cv2.COLOR_BGR2RGB), (w, h),
                          interpolation=cv2.INTER_AREA)
    assert np.abs(expected.astype(int) - sample.frame.astype(int)).mean() < 12


@pytest.mark.parametrize("clip_id, dx, dy", [("moving", 2.0, 0.0), ("moving_down", 0.0, 1.0)])
def test_stored_flow_points_from_the_keyframe_to_the_next_frame(nasty_run, clip_id, dx, dy):
    # Content moving right (down) by a known step: flow (dx, dy) is positive along it, in
    # stored-frame pixels, after the whole pipeline (decode, flow, cache, shard).
    sample = _samples(nasty_run[1])[clip_id][1]
    assert sample.frame.shape[:2] == (64, 96)          # stored at its own size: no rescaling
    assert float(np.median(sample.flow[0])) == pytest.approx(dx, abs=0.25)
    assert float(np.median(sample.flow[1])) == pytest.approx(dy, abs=0.25)


def test_flow_of_a_rotated_file_turns_with_the_frame(nasty_run):
    sample = _samples(nasty_run[1])["moving_turned"][1]
    # Stored content moves right; turned 90 degrees counter-clockwise it moves up.
    assert abs(float(np.median(sample.flow[0]))) < 0.3
    assert float(np.median(sample.flow[1])) == pytest.approx(-2.0, abs=0.3)


@pytest.mark.parametrize("clip_id", ["long_gop_ts", "long_gop_mpg"])
def test_mpeg_ts_and_ps_with_long_keyframe_interval_decode(nasty_run, clip_id):
    sample = _samples(nasty_run[1])[clip_id][1]
    assert sample.meta.keyframe_index == sample.meta.frame_count // 2 == 50


def test_cover_picture_before_the_video_is_not_taken_for_the_clip(nasty_run):
    sample = _samples(nasty_run[1])["cover"][1]
    assert sample.meta.frame_count == 50
    assert sample.meta.orig_size == [64, 48]


def test_extreme_aspect_fails_with_a_reason_that_says_what_to_do(nasty_run):
    failure = _failure(nasty_run[1], "wide")
    assert failure["reason"] == "aspect_too_extreme"
    assert "4000x64" in failure["detail"] and "frames.max_long_side" in failure["detail"]


def test_txt_split_list_keeps_ids_with_spaces_whole(tmp_path):
    listing = tmp_path / "ids.txt"
    listing.write_text("with space\n  padded id \nplain\n")
    assert read_split_list(listing) == ["with space", "padded id", "plain"]


def test_split_list_id_with_a_space_finds_its_file(nasty_run, tmp_path):
    video, _ = nasty_run
    listing = tmp_path / "ids.txt"
    listing.write_text("with space\n")
    out = tmp_path / "out"
    summary = run_pipeline(small_config(), RunInputs(str(video.parent), str(out), str(listing)), "pack")
    assert summary.written == 1 and list(_samples(out)) == ["with space"]
