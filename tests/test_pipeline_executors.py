"""Scheduling: tasks cut for every worker, the hung-clip watch in every run shape, whole
samples only, progress without a terminal."""
from __future__ import annotations

import functools
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from pipeline.runner import RunInputs, plan_tasks, run_pipeline
from tests import pipeline_helpers as helpers
from tests.nasty import ffmpeg
from tests.pipeline_helpers import HANG_LIMIT_S, failures, read_shards, shard_bytes, small_config, world

ONE_SHARD = "pack.samples_per_shard=6"      # the 6 clips of the test world in one shard
ONE_TASK = "run.task_clips=6"               # ... and in one task


def _ids() -> list[str]:
    return sorted(p.stem for p in (world() / "video").glob("*.mp4"))


def _run(out: Path, *overrides: str, input_dir: Path | None = None, task_fn=None):
    return run_pipeline(small_config(*overrides), RunInputs(str(input_dir or world()), str(out)),
                        task_fn=task_fn)


def _assert_whole_shards(out: Path) -> None:
    """Every shard reads back to complete samples, and sizes.json counts them."""
    sizes = json.loads((out / "sizes.json").read_text())
    for name, count in sizes.items():
        with tarfile.open(out / name) as tar:
            names = tar.getnames()
        keys = {n.split(".", 1)[0] for n in names}
        members = ("jpg", "flow.npy", "spec.npy", "json")   # htf/sample.py (motion series off)
        assert len(keys) == count and sorted(names) == sorted(f"{k}.{m}" for k in keys for m in members), name


@pytest.mark.parametrize("workers", [1, 2])
def test_one_shard_is_cut_into_tasks_that_keep_every_worker_busy(tmp_path: Path, workers: int):
    tasks, _, _ = plan_tasks(small_config(ONE_SHARD, f"run.workers={workers}"),
                             RunInputs(str(world()), str(tmp_path)), "pack")
    assert {t.index for t in tasks} == {0}
    assert len(tasks) >= 2 * workers
    assert [c.id for t in tasks for c in t.clips] == _ids()


def test_a_shard_is_the_same_bytes_whatever_the_workers_and_task_size(tmp_path: Path):
    _run(tmp_path / "one_task", ONE_SHARD, ONE_TASK, "run.workers=1")
    _run(tmp_path / "w1", ONE_SHARD, "run.workers=1")
    _run(tmp_path / "w2", ONE_SHARD, "run.workers=2")
    reference = shard_bytes(tmp_path / "one_task")
    assert list(reference) == ["shard-000000.tar"]
    assert shard_bytes(tmp_path / "w1") == reference == shard_bytes(tmp_path / "w2")
    assert not list((tmp_path / "w2" / ".work" / "pack").glob("*.part"))      # parts removed once assembled


def test_a_rerun_with_another_worker_count_redoes_nothing(tmp_path: Path):
    first = _run(tmp_path, ONE_SHARD, "run.workers=1")
    written = shard_bytes(tmp_path)
    again = _run(tmp_path, ONE_SHARD, "run.workers=2")          # other task size, same shard
    assert first.flow_computed == 6
    assert again.flow_computed == again.flow_cached == 0 and again.tasks_skipped >= 1
    assert again.written == 6 and shard_bytes(tmp_path) == written


def test_fewer_tasks_than_workers_is_warned(tmp_path: Path, capsys):
    _run(tmp_path, ONE_SHARD, ONE_TASK, "run.workers=2")
    assert "warning: 1 task(s) for 2 workers" in capsys.readouterr().err


def test_without_a_terminal_progress_is_a_line_with_rate_eta_and_failures(tmp_path: Path, capsys):
    _run(tmp_path, "run.progress=true", "run.progress_interval_s=0.001")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pipeline pack [shard]:")]
    assert lines and "clips/s" in lines[-1] and "ETA" in lines[-1] and "failed" in lines[-1]
    assert lines[-1].split(": ")[1].startswith("6/6 clips")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_clip_stuck_in_native_code_is_killed_when_all_clips_make_one_task(tmp_path: Path, workers: int):
    stuck = _ids()[2]
    run = functools.partial(helpers.run_task_stuck_in_native_code_on, stuck_id=stuck)
    summary = _run(tmp_path, ONE_SHARD, ONE_TASK, f"run.workers={workers}", f"run.clip_timeout_s={HANG_LIMIT_S}",
                   task_fn=run)
    assert summary.failures == {"clip_hung": 1} and summary.written == 5
    assert [(f["id"], f["stage"]) for f in failures(tmp_path)] == [(stuck, "decode")]
    assert [s.id for s in read_shards(tmp_path)] == [i for i in _ids() if i != stuck]


def test_a_worker_that_dies_inside_a_clip_loses_only_that_clip(tmp_path: Path):
    dying = _ids()[0]
    run = functools.partial(helpers.run_task_dying_on, dying_id=dying)
    summary = _run(tmp_path, ONE_SHARD, "run.workers=1", task_fn=run)
    assert summary.failures == {"clip_hung": 1} and summary.written == 5
    assert "died" in failures(tmp_path)[0]["detail"]


def _live_hls_playlist(folder: Path) -> Path:
    """A live HLS playlist (no end marker): a demuxer reading it waits for new segments
    inside native code, reloading the playlist again and again."""
    segments = folder / "segments"
    segments.mkdir(parents=True)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=10:duration=2", "-f", "lavfi", "-i", "sine=duration=2",
           "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-c:a", "aac", "-shortest",
           "-f", "hls", "-hls_time", "1", "-hls_list_size", "0", "-hls_playlist_type", "event",
           "-hls_segment_filename", str(segments / "live%d.ts"), str(segments / "live.m3u8"))
    lines = (segments / "live.m3u8").read_text().splitlines()
    playlist = folder / "video" / "live.m3u8"
    playlist.write_text("".join(("../segments/" + line if line.startswith("live") else line) + "\n"
                                for line in lines if line != "#EXT-X-ENDLIST"))
    return playlist


@pytest.mark.timeout(120)
def test_a_live_playlist_that_never_ends_is_a_hung_clip_and_the_run_goes_on(tmp_path: Path):
    raw = tmp_path / "raw"
    (raw / "video").mkdir(parents=True)
    for video in sorted((world() / "video").glob("*.mp4"))[:2]:
        shutil.copy(video, raw / "video" / video.name)
    _live_hls_playlist(raw)
    summary = _run(tmp_path / "out", "run.workers=1", f"run.clip_timeout_s={HANG_LIMIT_S}", input_dir=raw)
    assert summary.failures == {"clip_hung": 1} and summary.written == 2
    assert failures(tmp_path / "out")[0]["id"] == "live"


@pytest.mark.parametrize("stall", [True, False], ids=["stalls", "fails"])
def test_a_sample_write_cut_short_leaves_only_whole_samples(tmp_path: Path, stall: bool):
    broken = _ids()[3]
    run = functools.partial(helpers.run_task_with_a_broken_write_of, broken_id=broken, stall=stall)
    summary = _run(tmp_path, ONE_SHARD, "run.workers=2", f"run.clip_timeout_s={HANG_LIMIT_S}", task_fn=run)
    reason = "clip_hung" if stall else "error_OSError"
    assert summary.failures == {reason: 1} and summary.written == 5
    assert [(f["id"], f["stage"]) for f in failures(tmp_path)] == [(broken, "pack")]
    _assert_whole_shards(tmp_path)
    assert [s.id for s in read_shards(tmp_path)] == [i for i in _ids() if i != broken]


@pytest.mark.timeout(120)
def test_ctrl_c_stops_the_workers_and_says_how_to_resume(tmp_path: Path):
    import os
    import signal
    import subprocess
    import sys
    import time

    raw = tmp_path / "raw"
    (raw / "video").mkdir(parents=True)
    _live_hls_playlist(raw)                       # keeps its worker busy until stopped
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--input", str(raw), "--output", str(out),
                             "--workers", "1", "--no-progress"], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 60
    while not list((out / ".work" / "pack").glob("*.step")) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)            # what Ctrl-C on a terminal does
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err.strip().splitlines() == [err.strip()] and "rerun the same command" in err
    helpers.assert_process_group_ends(proc.pid)   # no worker left behind


def test_tasks_are_handed_out_shard_after_shard_biggest_first_within_one(tmp_path: Path):
    from pipeline.runner import _schedule_order

    cfg = small_config("pack.samples_per_shard=3", "run.task_clips=1", "run.workers=2")
    tasks, _, _ = plan_tasks(cfg, RunInputs(str(world()), str(tmp_path)), "pack")
    order = _schedule_order(tasks, cfg)
    assert [t.index for t in order] == [0, 0, 0, 1, 1, 1]
    for shard in (0, 1):
        sizes = [Path(t.clips[0].video).stat().st_size for t in order if t.index == shard]
        assert sizes == sorted(sizes, reverse=True)
