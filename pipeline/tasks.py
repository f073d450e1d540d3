"""One shard-sized unit of work: the clips of one shard through the stages up to ``stage``.

Tasks are independent (no shared state but the caches and their own output files), so any
executor can run them in any order on any machine that sees the folders. A task that
finished earlier with the same settings is skipped; otherwise it recomputes only what is
not cached.

Stages: ``index`` probes and writes the index records; ``decode`` also decodes the frames
and audio window (a validation pass: decoding two frames is cheaper than storing them);
``flow`` also fills the flow cache; ``audio`` also computes the spectrograms (a check:
they take milliseconds, so they are not stored); ``pack`` (and ``run``) writes the shard.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from pipeline.audio import audio_feature
from pipeline.cache import ArrayCache
from pipeline.config import PipelineConfig, _digest, content_fingerprint, flow_cache_key
from pipeline.decode import DecodedClip, decode_clip
from pipeline.errors import ClipError, ClipTimeout, failure_record
from pipeline.flow import is_learned
from pipeline.index import open_container, probe_container
from pipeline.pack import ShardWriter, shard_name
from pipeline.process import assemble_sample, clip_flows, frame_count_warning

STAGES = ("index", "decode", "flow", "audio", "pack")


@dataclass
class ClipJob:
    id: str
    video: str
    audio: Optional[str] = None
    keyframe_index: Optional[int] = None
    keyframe_entry: Optional[int] = None
    boxes: Optional[list] = None


@dataclass
class Task:
    index: int
    prefix: str
    stage: str
    clips: list[ClipJob]
    cfg: PipelineConfig
    output: str
    cache_dir: str
    box_format: Optional[str] = None

    @property
    def name(self) -> str:
        return f"{self.prefix}-{self.index:06d}"

    def fingerprint(self) -> str:
        """Changes when the clips or the sample-defining settings change."""
        clips = [[c.id, c.video, c.audio, c.keyframe_index, c.keyframe_entry, c.boxes] for c in self.clips]
        return _digest({"clips": clips, "content": content_fingerprint(self.cfg),
                        "box_format": self.box_format})


@dataclass
class TaskResult:
    task: str
    stage: str
    fingerprint: str
    n_clips: int
    written: int = 0
    shard: Optional[str] = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    index_records: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    flow_computed: int = 0
    flow_cached: int = 0
    seconds: float = 0.0
    skipped: bool = False


def manifest_path(task: Task) -> Path:
    return Path(task.output) / ".work" / task.stage / f"{task.name}.json"


def load_finished(task: Task) -> Optional[TaskResult]:
    """The earlier result of this exact task, if it finished and its shard is in place."""
    path = manifest_path(task)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if data.get("fingerprint") != task.fingerprint():
        return None
    if data.get("shard") and not (Path(task.output) / data["shard"]).exists():
        return None
    hung = _hung_clips(task)
    if any(f["reason"] == "clip_hung" and f["id"] not in hung for f in data.get("failures", [])):
        return None       # the time limit was raised since: give those clips another chance
    # Nothing was computed or read from the cache by this run for a finished task.
    data.update(skipped=True, flow_computed=0, flow_cached=0, seconds=0.0)
    return TaskResult(**data)


def _save_manifest(task: Task, result: TaskResult) -> None:
    path = manifest_path(task)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    data = dict(result.__dict__)
    data.pop("skipped")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- time limit

@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ClipTimeout after ``seconds`` (SIGALRM; main thread only, elsewhere no limit).

    Decoding returns to Python every frame, so even a file that makes the decoder spin
    is interrupted between frames."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _raise(signum, frame):
        raise ClipTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -------------------------------------------------------------------- hung-clip watch
# A clip stuck inside native code (a demuxer looping on a broken file) never returns to
# Python, so the signal above cannot stop it. In a worker process each task therefore
# names its current clip and a deadline in a small "step" file; the parent kills a worker
# that passes its deadline, records the clip in the task's "hung" list and runs the task
# again, which then skips that clip with a failure record (pipeline/executors.py).

STEP_GRACE_S = 5.0
_announce_steps = False       # set in worker processes by the executor


def enable_step_files() -> None:
    global _announce_steps
    _announce_steps = True


def step_path(task: Task) -> Path:
    return Path(task.output) / ".work" / task.stage / f"{task.name}.step"


def hung_path(task: Task) -> Path:
    return Path(task.output) / ".work" / task.stage / f"{task.name}.hung.jsonl"


def _announce(task: Task, clip_id: str, stage: str, seconds: float) -> None:
    if not _announce_steps:
        return
    path = step_path(task)          # its folder is made once per task, in run_task
    tmp = path.with_name(f".{path.name}.tmp")
    grace = min(STEP_GRACE_S, task.cfg.run.clip_timeout_s)   # lets the signal act first
    tmp.write_text(json.dumps({"pid": os.getpid(), "id": clip_id, "stage": stage,
                               "deadline": time.time() + seconds + grace}))
    os.replace(tmp, path)


def read_step(task: Task) -> Optional[dict[str, Any]]:
    try:
        return json.loads(step_path(task).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def record_hung_clip(task: Task, step: dict[str, Any], detail: str) -> None:
    """Called by the parent after it killed the worker that ran ``step``."""
    path = hung_path(task)
    path.parent.mkdir(parents=True, exist_ok=True)
    clip = next((c for c in task.clips if c.id == step["id"]), None)
    record = failure_record(step["id"], step["stage"], "clip_hung", detail, clip.video if clip else "")
    with open(path, "a") as f:
        f.write(json.dumps({"failure": record, "clip_timeout_s": task.cfg.run.clip_timeout_s}) + "\n")
    # The dead worker's step must not make the task's next attempt look stuck.
    step_path(task).unlink(missing_ok=True)


def _hung_clips(task: Task) -> dict[str, dict[str, Any]]:
    path = hung_path(task)
    if not path.exists():
        return {}
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # A clip that hung is tried again when the limit has been raised since.
    limit = task.cfg.run.clip_timeout_s
    return {e["failure"]["id"]: e["failure"] for e in entries if e["clip_timeout_s"] >= limit}


# ------------------------------------------------------------------------------- running

class _ClipFailed(Exception):
    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(record["reason"])
        self.record = record


def _guard(clip: ClipJob, stage: str, seconds: float, fn, *args, **kwargs):
    """Run one clip step; any failure becomes a failure record naming clip, stage, file."""
    try:
        with time_limit(seconds):
            return fn(*args, **kwargs)
    except (ClipError, ClipTimeout) as err:
        raise _ClipFailed(failure_record(clip.id, stage, err.reason, err.detail, clip.video)) from None
    except MemoryError:
        raise _ClipFailed(failure_record(clip.id, stage, "out_of_memory", "", clip.video)) from None
    except Exception as err:  # a bug or an unforeseen file: recorded with its traceback tail
        tail = traceback.format_exc(limit=-2).strip().splitlines()[-1]
        raise _ClipFailed(failure_record(clip.id, stage, f"error_{type(err).__name__}",
                                         f"{err} ({tail})", clip.video)) from None


def run_task(task: Task) -> TaskResult:
    """Do the task (or return its earlier result); never raises for a bad clip."""
    finished = load_finished(task)
    if finished is not None:
        return finished
    start = time.time()
    result = TaskResult(task.name, task.stage, task.fingerprint(), len(task.clips))
    cfg = task.cfg
    flow_cache = ArrayCache(task.cache_dir, flow_cache_key(cfg), "flow")
    writer = ShardWriter(Path(task.output) / shard_name(task.prefix, task.index)) if task.stage == "pack" else None
    batch = cfg.flow.batch_size if is_learned(cfg.flow.method) else 1
    if _announce_steps:
        step_path(task).parent.mkdir(parents=True, exist_ok=True)
    hung = _hung_clips(task)
    result.failures.extend(hung[c.id] for c in task.clips if c.id in hung)
    clips = [c for c in task.clips if c.id not in hung]
    try:
        for start_i in range(0, len(clips), batch):
            _run_chunk(task, clips[start_i:start_i + batch], result, flow_cache, writer)
        flow_cache.flush()
        if writer is not None:
            result.shard = writer.final_path.name if writer.commit() else None
            result.written = writer.count
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if _announce_steps:
            step_path(task).unlink(missing_ok=True)
    result.seconds = round(time.time() - start, 3)
    _save_manifest(task, result)
    return result


def _run_chunk(task: Task, clips: list[ClipJob], result: TaskResult, flow_cache: ArrayCache,
               writer: Optional[ShardWriter]) -> None:
    cfg, limit = task.cfg, task.cfg.run.clip_timeout_s
    decoded: list[tuple[ClipJob, DecodedClip]] = []
    for clip in clips:
        _announce(task, clip.id, "decode", 2 * limit)        # index + decode
        try:
            d = _probe_and_decode(task, clip, result)
            if d is not None:
                decoded.append((clip, d))
        except _ClipFailed as failed:
            result.failures.append(failed.record)
    if task.stage in ("index", "decode") or not decoded:
        return
    flows = _flows(task, decoded, result, flow_cache)
    for (clip, d), flow in zip(decoded, flows):
        if flow is None:
            continue
        try:
            if task.stage == "flow":
                continue
            _announce(task, clip.id, "pack", 3 * limit)       # audio + assemble + write
            spec = _guard(clip, "audio", limit, audio_feature, d.waveform, d.sample_rate, cfg.audio)
            if writer is not None:
                sample = _guard(clip, "pack", limit, assemble_sample, clip.id, d, flow, cfg, clip.boxes,
                                task.box_format if clip.boxes is not None else None, clip.video, spec)
                sample.meta["audio_rms_dbfs"] = d.audio_info.get("rms_dbfs")
                _guard(clip, "pack", limit, writer.write, sample)
        except _ClipFailed as failed:
            result.failures.append(failed.record)


def _probe_and_decode(task: Task, clip: ClipJob, result: TaskResult) -> Optional[DecodedClip]:
    """Index record and (past the index stage) decoded frames and audio of one clip, from
    one open of the file: the probe's container is reused for the seek and the audio."""
    cfg, limit = task.cfg, task.cfg.run.clip_timeout_s
    container = _guard(clip, "index", limit, open_container, clip.video)
    try:
        probe = _guard(clip, "index", limit, probe_container, container, clip.video, clip.audio,
                       cfg.frames.max_source_pixels)
        result.index_records.append({"id": clip.id, **probe.summary(), "audio": clip.audio})
        warning = frame_count_warning(clip.id, probe)
        if warning is not None:
            result.warnings.append(warning)
        if task.stage == "index":
            return None
        return _guard(clip, "decode", limit, decode_clip, clip.video, cfg, clip.keyframe_index,
                      clip.audio, clip.keyframe_entry, probe, container)
    finally:
        container.close()


def _flows(task: Task, decoded: list[tuple[ClipJob, DecodedClip]], result: TaskResult,
           cache: ArrayCache) -> list[Optional[np.ndarray]]:
    flows: list[Optional[np.ndarray]] = [cache.get(c.id, d.keyframe_index) for c, d in decoded]
    todo = [i for i, f in enumerate(flows) if f is None]
    result.flow_cached += len(decoded) - len(todo)
    if not todo:
        return flows
    limit = task.cfg.run.clip_timeout_s * len(todo)
    _announce(task, decoded[todo[0]][0].id, "flow", 2 * limit)   # the batch, then clip by clip
    try:
        computed = _guard(decoded[todo[0]][0], "flow", limit, clip_flows, [decoded[i][1] for i in todo], task.cfg)
    except _ClipFailed as failed:
        if len(todo) == 1:
            result.failures.append(failed.record)
            return flows
        # A batch failed: retry clip by clip so only the culprit is reported.
        computed = []
        for i in todo:
            try:
                computed.extend(_guard(decoded[i][0], "flow", task.cfg.run.clip_timeout_s, clip_flows,
                                       [decoded[i][1]], task.cfg))
            except _ClipFailed as one:
                result.failures.append(one.record)
                computed.append(None)
    for i, flow in zip(todo, computed):
        if flow is None:
            continue
        clip, d = decoded[i]
        # Go on with what the cache holds (float16), so a fresh run and a resumed run write
        # bit-identical samples.
        flows[i] = cache.put(clip.id, d.keyframe_index, flow)
        result.flow_computed += 1
    return flows
