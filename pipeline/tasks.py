"""One task: a bounded run of clips through the stages up to ``stage``.

Tasks are independent (no shared state but the caches and their own output files), so any
executor can run them in any order on any machine that sees the folders. A task belongs
to one shard (``index``; a shard is cut into tasks so that every worker has work, see
pipeline/runner.py) and, at the pack stage, writes its samples to a part file that the
runner assembles into the shard (pipeline/pack.py). A task that finished earlier with the
same settings is skipped; otherwise it recomputes only what is not cached.

Stages: ``index`` probes and writes the index records; ``decode`` also decodes the frames
and audio window (a validation pass: decoding two frames is cheaper than storing them);
``flow`` also fills the flow cache; ``audio`` also computes the spectrograms (a check:
they take milliseconds, so they are not stored); ``pack`` (and ``run``) writes the samples.
"""
from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from htf.io import atomic_write_json
from pipeline import watchdog
from pipeline.audio import audio_feature
from pipeline.cache import ArrayCache
from pipeline.config import PipelineConfig, _digest, content_fingerprint, flow_cache_key
from pipeline.decode import DecodedClip, decode_clip
from pipeline.errors import ClipError, ClipTimeout, failure_record
from pipeline.flow import is_learned
from pipeline.index import ClipInput, open_container, probe_container
from pipeline.pack import PartWriter, part_is_whole, sample_members
from pipeline.process import assemble_sample, clip_flows, frame_count_warning


def clips_fingerprint(clips: list[ClipInput], cfg: PipelineConfig, box_format: Optional[str]) -> str:
    """Changes when the clips or the sample-defining settings change."""
    rows = [[c.id, c.video, c.audio, c.keyframe_index, c.keyframe_entry, c.boxes] for c in clips]
    return _digest({"clips": rows, "content": content_fingerprint(cfg), "box_format": box_format})


@dataclass
class Task:
    index: int              # the shard this task's clips belong to
    prefix: str
    stage: str
    clips: list[ClipInput]
    cfg: PipelineConfig
    output: str
    cache_dir: str
    box_format: Optional[str] = None
    part: int = 0           # the task's place among its shard's tasks

    @property
    def shard_stem(self) -> str:
        return f"{self.prefix}-{self.index:06d}"

    @property
    def name(self) -> str:
        return f"{self.shard_stem}-{self.part:04d}"

    def fingerprint(self) -> str:
        return clips_fingerprint(self.clips, self.cfg, self.box_format)


@dataclass
class TaskResult:
    task: str
    stage: str
    fingerprint: str
    n_clips: int
    written: int = 0
    # pack: the part file (under .work/pack/) and its samples, [key, clip id, bytes] each
    part: Optional[str] = None
    samples: list[list[Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    index_records: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    flow_computed: int = 0
    flow_cached: int = 0
    seconds: float = 0.0
    skipped: bool = False

    def as_record(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data.pop("skipped")
        return data

    @classmethod
    def reused(cls, data: dict[str, Any]) -> "TaskResult":
        """An earlier result: nothing was computed or read from the cache by this run."""
        return cls(**{**data, "skipped": True, "flow_computed": 0, "flow_cached": 0, "seconds": 0.0})


def work_dir(output: str, stage: str) -> Path:
    return Path(output) / ".work" / stage


def manifest_path(task: Task) -> Path:
    return work_dir(task.output, task.stage) / f"{task.name}.json"


def part_path(task: Task) -> Path:
    return work_dir(task.output, task.stage) / f"{task.name}.part"


def hung_limit_raised(task: Task, failures: list[dict[str, Any]]) -> bool:
    """A clip recorded as hung that the current (raised) time limit gives another chance."""
    hung = watchdog.hung_clips(task)
    return any(f["reason"] == "clip_hung" and f["id"] not in hung for f in failures)


def load_finished(task: Task) -> Optional[TaskResult]:
    """The earlier result of this exact task, if it finished and its part file is whole."""
    try:
        data = json.loads(manifest_path(task).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if data.get("fingerprint") != task.fingerprint():
        return None
    if data.get("part") and not part_is_whole(work_dir(task.output, task.stage) / data["part"], data["samples"]):
        return None
    if hung_limit_raised(task, data.get("failures", [])):
        return None
    return TaskResult.reused(data)


def _save_manifest(task: Task, result: TaskResult) -> None:
    path = manifest_path(task)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, result.as_record())


# ------------------------------------------------------------------------------- running

class _ClipFailed(Exception):
    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(record["reason"])
        self.record = record


def _guard(clip: ClipInput, stage: str, seconds: float, fn, *args, **kwargs):
    """Run one clip step; any failure becomes a failure record naming clip, stage, file."""
    try:
        with watchdog.time_limit(seconds):
            return fn(*args, **kwargs)
    except (ClipError, ClipTimeout) as err:
        raise _ClipFailed(failure_record(clip.id, stage, err.reason, err.detail, clip.video)) from None
    except MemoryError:
        raise _ClipFailed(failure_record(clip.id, stage, "out_of_memory", "", clip.video)) from None
    except Exception as err:  # a bug or an unforeseen file: recorded with its traceback tail
        tail = traceback.format_exc(limit=-2).strip().splitlines()[-1]
        raise _ClipFailed(failure_record(clip.id, stage, f"error_{type(err).__name__}",
                                         f"{err} ({tail})", clip.video)) from None


@dataclass
class _Run:
    """One attempt at a task: where its outputs go and how far it got."""
    task: Task
    result: TaskResult
    flow_cache: ArrayCache
    writer: Optional[PartWriter]
    done: int = 0           # clips finished (written or failed), for the progress display

    def announce(self, clip: ClipInput, stage: str, seconds: float) -> None:
        watchdog.announce(self.task, clip.id, stage, seconds, self.done, len(self.result.failures))

    def fail(self, record: dict[str, Any]) -> None:
        self.result.failures.append(record)
        self.done += 1


def run_task(task: Task) -> TaskResult:
    """Do the task (or return its earlier result); never raises for a bad clip."""
    finished = load_finished(task)
    if finished is not None:
        return finished
    start = time.time()
    result = TaskResult(task.name, task.stage, task.fingerprint(), len(task.clips))
    writer = PartWriter(part_path(task)) if task.stage == "pack" else None
    run = _Run(task, result, ArrayCache(task.cache_dir, flow_cache_key(task.cfg), "flow"), writer)
    batch = task.cfg.flow.batch_size if is_learned(task.cfg.flow.method) else 1
    watchdog.start_task(task)
    hung = watchdog.hung_clips(task)
    result.failures.extend(hung[c.id] for c in task.clips if c.id in hung)
    run.done = len(result.failures)
    clips = [c for c in task.clips if c.id not in hung]
    try:
        for first in range(0, len(clips), batch):
            _run_batch(run, clips[first:first + batch])
        run.flow_cache.flush()
        if writer is not None:
            writer.commit()
            result.part, result.samples = writer.path.name, writer.samples
            result.written = len(writer.samples)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        watchdog.end_task(task)
    result.seconds = round(time.time() - start, 3)
    _save_manifest(task, result)
    return result


def _run_batch(run: _Run, clips: list[ClipInput]) -> None:
    """Clips one after the other, except the flow: one call for the batch (learned methods)."""
    task, limit = run.task, run.task.cfg.run.clip_timeout_s
    decoded: list[tuple[ClipInput, DecodedClip]] = []
    for clip in clips:
        run.announce(clip, "decode", 2 * limit)        # index + decode
        try:
            d = _probe_and_decode(task, clip, run.result)
        except _ClipFailed as failed:
            run.fail(failed.record)
            continue
        if d is None:
            run.done += 1
        else:
            decoded.append((clip, d))
    if task.stage == "decode":
        run.done += len(decoded)
    if task.stage in ("index", "decode") or not decoded:
        return
    flows = _flows(run, decoded)
    for (clip, d), flow in zip(decoded, flows):
        if flow is None:
            continue
        if task.stage == "flow":
            run.done += 1
            continue
        try:
            _pack_one(run, clip, d, flow)
        except _ClipFailed as failed:
            run.fail(failed.record)
            continue
        run.done += 1


def _pack_one(run: _Run, clip: ClipInput, d: DecodedClip, flow: np.ndarray) -> None:
    """Audio feature, then (pack) the sample's bytes, built whole, then one append. The
    clip's time limit covers the computing but never the write: a signal in the middle of
    a write would leave half a sample behind."""
    task, cfg, limit = run.task, run.task.cfg, run.task.cfg.run.clip_timeout_s
    run.announce(clip, "pack", 3 * limit)       # audio + sample bytes + write
    spec = _guard(clip, "audio", limit, audio_feature, d.waveform, d.sample_rate, cfg.audio)
    if run.writer is None:
        return
    key, members = _guard(clip, "pack", limit, _sample_bytes, task, clip, d, flow, spec)
    try:
        run.writer.append(clip.id, key, members)
    except Exception as err:     # e.g. a full disk: the part file is cut back to whole samples
        raise _ClipFailed(failure_record(clip.id, "pack", f"error_{type(err).__name__}",
                                         f"writing the sample failed: {err}", clip.video)) from None


def _sample_bytes(task: Task, clip: ClipInput, d: DecodedClip, flow: np.ndarray,
                  spec: np.ndarray) -> tuple[str, bytes]:
    sample = assemble_sample(clip.id, d, flow, task.cfg, clip.boxes,
                             task.box_format if clip.boxes is not None else None, clip.video, spec)
    return sample_members(sample)


def _probe_and_decode(task: Task, clip: ClipInput, result: TaskResult) -> Optional[DecodedClip]:
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


def _flows(run: _Run, decoded: list[tuple[ClipInput, DecodedClip]]) -> list[Optional[np.ndarray]]:
    task, result, cache = run.task, run.result, run.flow_cache
    flows: list[Optional[np.ndarray]] = [cache.get(c.id, d.keyframe_index) for c, d in decoded]
    todo = [i for i, f in enumerate(flows) if f is None]
    result.flow_cached += len(decoded) - len(todo)
    if not todo:
        return flows
    limit = task.cfg.run.clip_timeout_s * len(todo)
    run.announce(decoded[todo[0]][0], "flow", 2 * limit)   # the batch, then clip by clip
    try:
        computed = _guard(decoded[todo[0]][0], "flow", limit, clip_flows, [decoded[i][1] for i in todo], task.cfg)
    except _ClipFailed as failed:
        if len(todo) == 1:
            run.fail(failed.record)
            return flows
        # A batch failed: retry clip by clip so only the culprit is reported.
        computed = []
        for i in todo:
            try:
                computed.extend(_guard(decoded[i][0], "flow", task.cfg.run.clip_timeout_s, clip_flows,
                                       [decoded[i][1]], task.cfg))
            except _ClipFailed as one:
                run.fail(one.record)
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
