"""Small synthetic worlds and bad files for the pipeline tests (generated once per process)."""
from __future__ import annotations

import functools
import json
import shutil
import tarfile
from pathlib import Path

from htf.config import load_config
from htf.sample import decode_sample
from pipeline.config import PipelineConfig
from tests.scratch import process_scratch
from apps.synth import WorldConfig, generate_world


# The per-clip time limit of tests where one clip hangs on purpose: far above what a
# healthy clip takes on a loaded 2-core machine (first clips of a fresh worker pay for
# its imports too), so that only the hanging clip reaches it.
HANG_LIMIT_S = 5.0


@functools.lru_cache(maxsize=None)
def world(n: int = 6, size: int = 64, seconds: float = 4.0, seed: int = 3) -> Path:
    """A synthetic world in a temp folder (reused by every test of the process)."""
    out = process_scratch(f"htf_world_{n}_{size}_")
    generate_world(WorldConfig(n=n, seed=seed, size=size, seconds=seconds, workers=1), out, progress=False)
    return out


def world_config(size: int = 64) -> WorldConfig:
    return WorldConfig(n=6, seed=3, size=size, workers=1)


def small_config(*overrides: str) -> PipelineConfig:
    """Pipeline settings sized for tests: 64-px frames, 2 samples per shard, no bar."""
    base = ["frames.short_side=64", "frames.max_long_side=128", "pack.samples_per_shard=2",
            "run.progress=false", "audio.n_mels=32"]
    return load_config(PipelineConfig, None, base + list(overrides))


def copy_world(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def read_shards(out: Path, prefix: str = "shard") -> list:
    """Decoded samples of every shard of ``prefix`` in shard order."""
    samples = []
    for shard in sorted(out.glob(f"{prefix}-*.tar")):
        with tarfile.open(shard) as tar:
            groups: dict[str, dict] = {}
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                groups.setdefault(key, {"__key__": key})[ext] = tar.extractfile(member).read()
        samples.extend(decode_sample(g) for g in groups.values())
    return samples


def failures(out: Path) -> list[dict]:
    path = out / "failures.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


def assert_process_group_ends(group: int, seconds: float = 10.0) -> None:
    """Every process of a run started in a session of its own (workers included) is gone
    within ``seconds`` (exited workers may stay zombies for a moment until reaped)."""
    import os
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"a process of group {group} outlived its run")


def _run_task_with(task, clip_id: str, on_decode):
    """``run_task`` with ``on_decode()`` called when decoding of clip ``clip_id`` starts."""
    import pipeline.tasks as tasks

    original = tasks.decode_clip

    def decode(path, *args, **kwargs):
        if Path(path).stem == clip_id:
            on_decode()
        return original(path, *args, **kwargs)

    tasks.decode_clip = decode
    try:
        return tasks.run_task(task)
    finally:
        tasks.decode_clip = original


def run_task_stuck_in_native_code_on(task, stuck_id: str):
    """``run_task`` in a worker, except that decoding clip ``stuck_id`` never returns and
    ignores the per-clip alarm, as a demuxer looping inside C would: one native call that
    does not come back to Python, with the alarm blocked in this thread (in a process with
    other threads it lands on one of those, and Python would run its handler here only
    after the call returned)."""
    return _run_task_with(task, stuck_id, _block_natively)


def _block_natively() -> None:
    """Stay inside one native call that ignores the per-clip alarm (see below)."""
    import ctypes
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    ctypes.CDLL(None).sleep(3600)


def run_task_dying_on(task, dying_id: str):
    """``run_task`` in a worker, except that the worker process exits at once inside
    clip ``dying_id`` (as when the kernel kills it for memory)."""
    import os

    return _run_task_with(task, dying_id, lambda: os._exit(9))


class _HalfWritingFile:
    """A file whose next write stores half the bytes, then blocks (``stall``) or fails."""

    def __init__(self, file, stall: bool) -> None:
        self._file, self._stall, self.armed = file, stall, False

    def write(self, data: bytes) -> int:
        if not self.armed:
            return self._file.write(data)
        self.armed = False
        self._file.write(data[: len(data) // 2])
        self._file.flush()
        if self._stall:
            _block_natively()
        raise OSError(28, "No space left on device")

    def __getattr__(self, name: str):
        return getattr(self._file, name)


def run_task_with_a_broken_write_of(task, broken_id: str, stall: bool):
    """``run_task`` in a worker, except that writing clip ``broken_id``'s sample stores
    half of it and then stalls forever (``stall``) or fails like a full disk."""
    import pipeline.tasks as tasks

    original = tasks.PartWriter

    class Writer(original):
        def __init__(self, path) -> None:
            super().__init__(path)
            self._file = _HalfWritingFile(self._file, stall)

        def append(self, clip_id: str, key: str, members: bytes) -> None:
            self._file.armed = clip_id == broken_id
            super().append(clip_id, key, members)

    tasks.PartWriter = Writer
    try:
        return tasks.run_task(task)
    finally:
        tasks.PartWriter = original
