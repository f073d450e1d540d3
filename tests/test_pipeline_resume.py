"""Resumability: kill -9 a run and rerun it: same samples, nothing partial, no flow redone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipeline_helpers import assert_process_group_ends, read_shards, shard_bytes, world

# RAFT-small with random weights on CPU: slow enough (~0.5 s a clip) to be killed mid-run.
SLOW_RUN = ["--flow", "raft_small", "--set", "flow.learned.allow_random_init=true", "--set", "frames.short_side=128",
            "--set", "pack.samples_per_shard=1", "--set", "audio.n_mels=32", "--no-progress"]


def _command(out: Path, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "pipeline", "run", "--input", str(world(n=3, size=128, seed=4)),
            "--output", str(out), *SLOW_RUN, "--workers", str(workers)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The shards of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "out"
    subprocess.run(_command(out), check=True, capture_output=True)
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_killed_run_resumes_to_the_same_shards_without_recomputing_cached_flow(tmp_path: Path, workers: int,
                                                                             reference: Path):
    resumed = tmp_path / "resumed"

    proc = subprocess.Popen(_command(resumed, workers), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while not list(resumed.glob("shard-*.tar")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert_process_group_ends(proc.pid)       # no worker goes on writing next to the rerun
    done_before = sorted(p.name for p in resumed.glob("shard-*.tar"))
    assert 1 <= len(done_before) < 3, "the run must be killed part-way for this test to mean anything"
    cached_before = _cached_flows(resumed)
    # Tasks finished before the kill (one clip per shard and task here): those of recorded
    # shards, and those whose samples were waiting for their shard's assembly.
    records = (resumed / ".work" / "pack").glob("shard-*.json")
    finished = {p.name.split(".")[0][:len("shard-000000")] for p in records}

    subprocess.run(_command(resumed), check=True, capture_output=True)
    summary = json.loads((resumed / "summary_shard_pack.json").read_text())
    assert summary["tasks_skipped"] == len(finished) >= len(done_before)
    assert summary["flow_computed"] == 3 - cached_before
    assert shard_bytes(resumed) == shard_bytes(reference)
    assert not list(resumed.glob(".*.tmp"))
    ids = [s.id for s in read_shards(resumed)]
    assert len(ids) == len(set(ids)) == 3


def _cached_flows(out: Path) -> int:
    from pipeline.cache import ArrayCache

    return sum(len(ArrayCache(out / "cache", key.name)) for key in (out / "cache" / "flow").iterdir())


def test_a_partial_shard_left_by_a_crash_is_discarded_and_rebuilt(tmp_path: Path):
    from pipeline.runner import RunInputs, run_pipeline
    from tests.pipeline_helpers import small_config

    cfg = small_config("run.task_clips=2")         # one task per shard
    run_pipeline(cfg, RunInputs(str(world()), str(tmp_path)))
    complete = shard_bytes(tmp_path)
    # Simulate a crash in the middle of writing shard 1: its temp file half written, the
    # final file and the shard's record gone.
    (tmp_path / ".shard-000001.tar.tmp").write_bytes(complete["shard-000001.tar"][:1000])
    (tmp_path / "shard-000001.tar").unlink()
    (tmp_path / ".work" / "pack" / "shard-000001.shard.json").unlink()
    summary = run_pipeline(cfg, RunInputs(str(world()), str(tmp_path)))
    assert shard_bytes(tmp_path) == complete
    assert summary.tasks_skipped == 2 and summary.flow_computed == 0
    assert not (tmp_path / ".shard-000001.tar.tmp").exists()


# Kill -9 at random moments (seeded), with several workers, then damage a flow-cache
# bucket: the final run still writes exactly the reference shards.
FAST_RUN = ["--set", "pack.samples_per_shard=1", "--set", "frames.short_side=64", "--set", "audio.n_mels=32",
            "--workers", "2", "--no-progress"]


def _fast_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "run", "--input", str(world(n=6, size=64, seed=5)),
            "--output", str(out), *FAST_RUN]


def _kill_group_after(cmd: list[str], seconds: float, out: Path | None = None) -> None:
    """Run ``cmd``; kill -9 it and its workers ``seconds`` after it started, or (with
    ``out``) as soon as its first shard appears there."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + seconds
    while proc.poll() is None and time.time() < deadline:
        if out is not None and list(out.glob("shard-*.tar")):
            break
        time.sleep(0.01)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)       # the run and its workers, as kill -9 of the job
    proc.wait()


def _damage_every_bucket(out: Path) -> int:
    """Cut every flow-cache bucket in half (a disk or a writer that failed mid-write)."""
    buckets = sorted((out / "cache" / "flow").glob("*/*.h5"))
    for bucket in buckets:
        data = bucket.read_bytes()
        bucket.write_bytes(data[: len(data) // 2])
    return len(buckets)


def test_kills_at_random_moments_with_workers_and_a_damaged_cache_still_give_the_reference(tmp_path: Path):
    import random

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    start = time.time()
    subprocess.run(_fast_command(reference), check=True, capture_output=True)
    full_run_s = time.time() - start
    rng = random.Random(14)
    _kill_group_after(_fast_command(resumed), 4 * full_run_s, out=resumed)     # at its first shard
    assert len(list(resumed.glob("shard-*.tar"))) < 6, "the kill must leave the run part-way"
    _damage_every_bucket(resumed)          # the next runs meet it while tasks remain
    for _ in range(2):
        _kill_group_after(_fast_command(resumed), rng.uniform(0.2, 0.9) * full_run_s)
    done = subprocess.run(_fast_command(resumed), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert shard_bytes(resumed) == shard_bytes(reference)
    assert not list(resumed.glob(".*.tmp"))
    assert (resumed / "failures.jsonl").read_text() == (reference / "failures.jsonl").read_text()
