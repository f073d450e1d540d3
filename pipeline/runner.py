"""Plan, execute and finish a pipeline run: raw folder -> tasks -> shards + reports.

Planning is deterministic: clips in split-list order (or sorted ids) are cut into
shards of ``pack.samples_per_shard`` clips (or ~``pack.target_shard_mb``), and each shard
into tasks of at most ``run.task_clips`` clips, so that every worker has work however few
shards there are. Shard i, ``<prefix>-<i:06d>.tar``, is assembled from its tasks' samples
in clip order as soon as they are all done. The worker count, the task size and the
executor change only how fast that happens, never what is written.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from htf.config import save_config
from htf.io import atomic_write_json, atomic_write_text, read_json_lines, set_aside
from htf.lists import read_split_list
from pipeline.annotations import Annotations, load_annotations, load_keyframes
from pipeline.config import PipelineConfig
from pipeline.errors import Failure, failure_record
from pipeline.executors import TaskFn, execute
from pipeline.flow import check_flow_method
from pipeline.index import discover
from pipeline.pack import assemble_shard, merge_sizes, samples_per_shard, shard_name
from pipeline.tasks import Task, TaskResult, clips_fingerprint, hung_limit_raised, part_path, work_dir

# Automatic task size: about this many tasks per worker (the last ones finish close
# together), but no more clips per task than this (progress, memory, a killed task's loss).
TASKS_PER_WORKER = 8
MAX_TASK_CLIPS = 64


@dataclass
class RunInputs:
    input_dir: str
    output_dir: str
    split_list: Optional[str] = None
    annotations: Optional[str] = None
    keyframes: Optional[str] = None


@dataclass
class RunSummary:
    stage: str
    clips_in: int
    written: int
    failures: Counter = field(default_factory=Counter)
    warnings: Counter = field(default_factory=Counter)
    flow_computed: int = 0
    flow_cached: int = 0
    tasks_skipped: int = 0
    shards: int = 0
    seconds: float = 0.0

    def text(self) -> str:
        lines = [f"pipeline {self.stage}: {self.clips_in} clips in, "
                 + (f"{self.written} written to {self.shards} shard(s), " if self.stage == "pack" else "")
                 + f"{sum(self.failures.values())} failed, in {self.seconds:.1f} s"]
        if self.stage in ("flow", "pack"):
            lines.append(f"  flow: {self.flow_computed} computed, {self.flow_cached} from cache"
                         + (f"; {self.tasks_skipped} task(s) already done" if self.tasks_skipped else ""))
        for reason, n in self.failures.most_common():
            lines.append(f"  failed  {n:5d}  {reason}")
        for reason, n in self.warnings.most_common():
            lines.append(f"  warning {n:5d}  {reason} (see warnings.jsonl)")
        return "\n".join(lines)


def plan_tasks(cfg: PipelineConfig, inputs: RunInputs, stage: str) -> tuple[list[Task], list[Failure], list[Failure]]:
    """Find clips, attach boxes and keyframes, cut into shards and tasks. Returns (tasks
    in shard order, failures found while planning, warnings)."""
    split_ids = read_split_list(inputs.split_list, cfg.input.id_style) if inputs.split_list else None
    found = discover(inputs.input_dir, cfg.input, split_ids)
    warnings = [Failure(Path(p).stem, "index", "not_a_video_extension",
                        f"{p} ignored (not one of input.video_extensions)", p) for p in found.ignored_files]
    warnings += found.warnings
    annotations = load_annotations(inputs.annotations, cfg.input.id_style) if inputs.annotations else None
    if annotations is not None:
        warnings.extend(annotations.warnings)
    keyframes = load_keyframes(inputs.keyframes) if inputs.keyframes else {}
    jobs = [replace(c, keyframe_index=keyframes.get(c.id, {}).get("index"),
                    keyframe_entry=keyframes.get(c.id, {}).get("entry"),
                    boxes=annotations.boxes.get(c.id) if annotations else None)
            for c in found.clips]
    warnings.extend(_uncovered_clip_warnings(found.clips, inputs, keyframes, annotations))
    per_shard, per_task = samples_per_shard(cfg), task_clips(cfg, len(jobs))
    cache_dir = cfg.run.cache_dir or str(Path(inputs.output_dir) / "cache")
    tasks = []
    for shard, first in enumerate(range(0, len(jobs), per_shard)):
        shard_jobs = jobs[first:first + per_shard]
        tasks.extend(Task(index=shard, part=part, prefix=cfg.pack.prefix, stage=stage,
                          clips=shard_jobs[i:i + per_task], cfg=cfg, output=str(inputs.output_dir),
                          cache_dir=cache_dir, box_format=annotations.box_format if annotations else None)
                     for part, i in enumerate(range(0, len(shard_jobs), per_task)))
    return tasks, found.failures, warnings


def task_clips(cfg: PipelineConfig, n_clips: int) -> int:
    """Clips per task: ``run.task_clips``, or enough tasks for every worker to stay busy."""
    if cfg.run.task_clips > 0:
        return cfg.run.task_clips
    return max(1, min(MAX_TASK_CLIPS, math.ceil(n_clips / (TASKS_PER_WORKER * cfg.run.workers))))


def _uncovered_clip_warnings(clips: list, inputs: RunInputs, keyframes: dict,
                             annotations: Annotations | None) -> list[Failure]:
    """Clips that a given keyframe map or box file does not cover: they are still processed
    (middle frame; no boxes), and each is named in warnings.jsonl rather than passed over."""
    out = []
    for c in clips:
        if inputs.keyframes and c.id not in keyframes:
            out.append(Failure(c.id, "index", "no_keyframe_entry",
                               f"{c.id} is not in {inputs.keyframes}: the middle frame is used", c.video))
        if annotations is not None and c.id not in annotations.boxes:
            out.append(Failure(c.id, "index", "no_boxes",
                               f"{c.id} has no boxes in {inputs.annotations}: its sample carries none", c.video))
    return out


def input_bytes(task: Task) -> int:
    """Bytes of a task's video (and audio) files: a cheap stand-in for its decode work."""
    total = 0
    for clip in task.clips:
        for path in (clip.video, clip.audio):
            try:
                total += os.stat(path).st_size if path else 0
            except OSError:
                pass        # a missing file fails in its task, with its own record
    return total


def largest_first(tasks: list[Task]) -> list[Task]:
    """Biggest tasks first, so no worker starts a long task when the others are nearly
    done (samples are put back in clip order when the shard is assembled)."""
    return sorted(tasks, key=lambda t: (-input_bytes(t), t.index))


def config_path(out: Path, prefix: str) -> Path:
    """The resolved config of one prefix's run: train/val/test runs share OUT, each keeps its own."""
    return out / f"pipeline_config_{prefix}.yaml"


def run_pipeline(cfg: PipelineConfig, inputs: RunInputs, stage: str = "pack",
                 task_fn: Optional[TaskFn] = None) -> RunSummary:
    """Run the stages up to ``stage`` over the input folder; resumes a killed run.
    ``task_fn`` replaces ``run_task`` in the workers (tests emulate broken files with it)."""
    start = time.time()
    out = Path(inputs.output_dir)
    # Every input is checked (flow weights, input folder, lists, boxes) before OUT is
    # created: a command that fails leaves no half-made output folder behind.
    if stage in ("flow", "pack"):
        check_flow_method(cfg.flow)      # fail before touching any clip (weights, names)
    tasks, plan_failures, warnings = plan_tasks(cfg, inputs, stage)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, config_path(out, cfg.pack.prefix))
    _remove_leftovers(out, cfg.pack.prefix, stage)
    n_clips = sum(len(t.clips) for t in tasks)
    shards = _Shards(tasks, stage)
    todo = [t for t in tasks if t.index not in shards.finished]
    if 0 < len(todo) < cfg.run.workers:
        print(f"pipeline: warning: {len(todo)} task(s) for {cfg.run.workers} workers: some stay idle "
              f"({n_clips} clips; lower run.task_clips to cut smaller tasks)", file=sys.stderr)
    with Progress(n_clips, cfg, stage) as progress:
        progress.add(sum(r.n_clips for r in shards.reused()), sum(len(r.failures) for r in shards.reused()))
        results = execute(_schedule_order(todo, cfg), cfg.run.executor, cfg.run.workers,
                          cfg.flow.device.startswith("cuda"), cfg.run.ray_address, task_fn, progress.running)
        with closing(results):           # the workers stop at once, also on an error here
            for result in results:
                progress.add(result.n_clips, len(result.failures))
                shards.add(result)
    summary = _finish(out, cfg, stage, shards, plan_failures, warnings)
    summary.clips_in = n_clips + sum(1 for f in plan_failures if f.reason != "duplicate_id")
    summary.seconds = time.time() - start
    atomic_write_json(out / f"summary_{cfg.pack.prefix}_{stage}.json", {
        **{k: v for k, v in summary.__dict__.items() if k not in ("failures", "warnings")},
        "failures": dict(summary.failures), "warnings": dict(summary.warnings)}, indent=1)
    return summary


def _schedule_order(tasks: list[Task], cfg: PipelineConfig) -> list[Task]:
    """Shard after shard, so shards are finished (and their parts removed) one after the
    other and at most a shard or two of parts waits on disk; within a shard the biggest
    tasks first. Tasks are small, so the last ones finish close together anyway."""
    if cfg.run.workers <= 1:
        return tasks
    shards: dict[int, list[Task]] = {}
    for task in tasks:
        shards.setdefault(task.index, []).append(task)
    return [task for index in sorted(shards) for task in largest_first(shards[index])]


class _Shards:
    """Task results grouped by shard; at the pack stage a shard is assembled from its
    tasks' part files as soon as the last of them is done, then recorded as finished (so
    a rerun skips all of its tasks) and the parts are removed."""

    def __init__(self, tasks: list[Task], stage: str) -> None:
        self.stage = stage
        self.by_name = {task.name: task for task in tasks}
        self.tasks: dict[int, list[Task]] = {}
        for task in tasks:
            self.tasks.setdefault(task.index, []).append(task)
        self.results: dict[int, dict[str, TaskResult]] = {i: {} for i in self.tasks}
        self.extra_failures: dict[int, list[dict[str, Any]]] = {i: [] for i in self.tasks}
        self.written: dict[int, int] = {}
        self.finished: dict[int, list[TaskResult]] = {}
        if stage == "pack":
            for index, group in self.tasks.items():
                record = _load_finished_shard(group)
                if record is not None:
                    self.finished[index] = [TaskResult.reused(r) for r in record["tasks"]]
                    self.extra_failures[index] = record["failures"]
                    self.written[index] = record["written"]

    def reused(self) -> list[TaskResult]:
        return [r for results in self.finished.values() for r in results]

    def add(self, result: TaskResult) -> None:
        index = self.by_name[result.task].index
        self.results[index][result.task] = result
        if self.stage == "pack" and len(self.results[index]) == len(self.tasks[index]):
            self._assemble(index)

    def _assemble(self, index: int) -> None:
        group = self.tasks[index]
        results = [self.results[index][t.name] for t in group]
        first = group[0]
        final = Path(first.output) / shard_name(first.prefix, index)
        written, dropped = assemble_shard(final, [(part_path(t), r.samples) for t, r in zip(group, results)])
        clips = {c.id: c for t in group for c in t.clips}
        failures = [failure_record(cid, "pack", "duplicate_key", f"sample key '{key}' is already in "
                                   f"{final.name} (another clip id maps to it)", clips[cid].video)
                    for cid, key in dropped]
        self.extra_failures[index], self.written[index] = failures, written
        _save_shard_manifest(group, results, failures, written)
        # This run's parts and task records of the shard, and any an earlier run with
        # another task size left.
        work = work_dir(first.output, "pack")
        for leftover in [*work.glob(f"{first.shard_stem}-*.part"), *work.glob(f"{first.shard_stem}-*.json")]:
            leftover.unlink(missing_ok=True)

    def ordered_results(self) -> list[TaskResult]:
        out = []
        for index, group in self.tasks.items():
            out.extend(self.finished.get(index) or [self.results[index][t.name] for t in group])
        return out

    def sizes(self) -> dict[str, int]:
        prefix = next(iter(self.tasks.values()))[0].prefix if self.tasks else ""
        return {shard_name(prefix, i): n for i, n in sorted(self.written.items()) if n > 0}

    def failures(self) -> list[dict[str, Any]]:
        return [f for index in self.tasks for f in self.extra_failures[index]]


def shard_manifest_path(task: Task) -> Path:
    return work_dir(task.output, "pack") / f"{task.shard_stem}.shard.json"


def _shard_fingerprint(group: list[Task]) -> str:
    # Of the shard's clips and settings, not of its tasks: a new task size keeps it valid.
    return clips_fingerprint([c for t in group for c in t.clips], group[0].cfg, group[0].box_format)


def _load_finished_shard(group: list[Task]) -> Optional[dict[str, Any]]:
    """The record of a shard finished earlier from these exact clips and settings."""
    try:
        record = json.loads(shard_manifest_path(group[0]).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    first = group[0]
    if record.get("fingerprint") != _shard_fingerprint(group):
        return None
    if record["written"] and not (Path(first.output) / shard_name(first.prefix, first.index)).exists():
        return None
    if hung_limit_raised(first, [f for r in record["tasks"] for f in r["failures"]]):
        return None       # the time limit was raised since: give those clips another chance
    return record


def _save_shard_manifest(group: list[Task], results: list[TaskResult], failures: list[dict], written: int) -> None:
    atomic_write_json(shard_manifest_path(group[0]), {
        "fingerprint": _shard_fingerprint(group), "written": written, "failures": failures,
        "tasks": [r.as_record() for r in results]})


def _finish(out: Path, cfg: PipelineConfig, stage: str, shards: _Shards, plan_failures: list[Failure],
            warnings: list[Failure]) -> RunSummary:
    prefix = cfg.pack.prefix
    results = shards.ordered_results()
    # Task results carry their failures as JSON lines already (they cross process boundaries).
    failures = [f.record(prefix=prefix) for f in plan_failures]
    for r in results:
        failures.extend(dict(f, prefix=prefix) for f in r.failures)
    failures.extend(dict(f, prefix=prefix) for f in shards.failures())
    _merge_jsonl(out / "failures.jsonl", prefix, failures)
    warning_lines = [w.record(prefix=prefix) for w in warnings]
    warning_lines += [dict(w, prefix=prefix) for r in results for w in r.warnings]
    _merge_jsonl(out / "warnings.jsonl", prefix, warning_lines)
    if stage == "index" or any(r.index_records for r in results):
        _merge_jsonl(out / "index.jsonl", prefix,
                     [dict(rec, prefix=prefix) for r in results for rec in r.index_records])
    summary = RunSummary(stage=stage, clips_in=0, written=sum(shards.written.values()),
                         failures=Counter(f["reason"] for f in failures),
                         warnings=Counter(w["reason"] for w in warning_lines),
                         flow_computed=sum(r.flow_computed for r in results),
                         flow_cached=sum(r.flow_cached for r in results),
                         tasks_skipped=sum(r.skipped for r in results))
    if stage == "pack":
        sizes = shards.sizes()
        merge_sizes(out, prefix, sizes)
        _remove_stale_shards(out, prefix, set(sizes))
        summary.shards = len(sizes)
    return summary


def _merge_jsonl(path: Path, prefix: str, records: list[dict]) -> None:
    """Replace this prefix's lines of a report, keep other prefixes' (train/val/test share OUT).
    Damaged lines (the file was edited or cut outside the pipeline) do not stop the run: the
    file is set aside whole and rewritten from its readable lines."""
    current, damaged = read_json_lines(path)
    if damaged:
        aside = set_aside(path)
        print(f"warning: {path}: {damaged} damaged line(s); the file is kept as {aside.name} and rewritten "
              f"from its readable lines. A damaged line of another --shard-prefix comes back when that "
              f"prefix's command is run again (finished work is reused)", file=sys.stderr)
    kept = [r for r in current if r.get("prefix") != prefix]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept + records))


def _remove_leftovers(out: Path, prefix: str, stage: str) -> None:
    """What a killed run of this prefix left: temporary shards, parts and records (their
    tasks rerun) and step files (no task of this run is running yet)."""
    for tmp in out.glob(f".{prefix}-*.tar.tmp"):
        tmp.unlink(missing_ok=True)
    work = work_dir(str(out), stage)
    for leftover in [*work.glob(f".{prefix}-*.tmp"), *work.glob(f"{prefix}-*.step")]:
        leftover.unlink(missing_ok=True)


def _remove_stale_shards(out: Path, prefix: str, current: set[str]) -> None:
    """Shards of this prefix from an earlier plan (e.g. another shard size) would be read
    as part of the set: remove them so the folder holds exactly this run's samples."""
    for path in out.glob(f"{prefix}-*.tar"):
        if path.name not in current and path.name[len(prefix) + 1:-4].isdigit():
            print(f"pipeline: removing {path.name} (not part of this run's plan)", file=sys.stderr)
            path.unlink()


class Progress:
    """Clips done (finished tasks, plus the clips running tasks report in their step
    files): a bar on a terminal, refreshed every scheduling round; elsewhere (a batch
    job's log) one line every ``run.progress_interval_s`` with rate, ETA and failures."""

    def __init__(self, total: int, cfg: PipelineConfig, stage: str, stream=None) -> None:
        self.total, self.label = total, f"{stage} [{cfg.pack.prefix}]"
        self.stream = stream or sys.stderr
        self.enabled, self.interval_s = cfg.run.progress, cfg.run.progress_interval_s
        self.done = self.failed = 0           # in finished tasks
        self.running_done = self.running_failed = 0
        self.start = self.last_line = time.time()
        self.bar = None
        if self.enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.label, unit="clip", file=self.stream)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> bool:
        if self.bar is not None:
            self.bar.close()
        return False

    def add(self, clips: int, failed: int) -> None:
        """A task finished (or was already done)."""
        self.done += clips
        self.failed += failed
        self._show()

    def running(self, steps: list[dict]) -> None:
        """Once per scheduling round: the step records of the tasks still running."""
        self.running_done = sum(s.get("done", 0) for s in steps)
        self.running_failed = sum(s.get("failed", 0) for s in steps)
        self._show()

    def _show(self) -> None:
        if not self.enabled:
            return
        done, failed = self.done + self.running_done, self.failed + self.running_failed
        if self.bar is not None:
            self.bar.n = done          # may step back: a killed task's clips are redone
            self.bar.set_postfix(failed=failed)
        elif time.time() - self.last_line >= self.interval_s:
            self.last_line = time.time()
            print(self.line(done, failed, time.time() - self.start), file=self.stream, flush=True)

    def line(self, done: int, failed: int, seconds: float) -> str:
        rate = done / seconds if seconds > 0 else 0.0
        eta = f"{_duration((self.total - done) / rate)}" if rate > 0 else "?"
        percent = 100 * done / self.total if self.total else 100
        return (f"pipeline {self.label}: {done}/{self.total} clips ({percent:.0f}%), {rate:.1f} clips/s, "
                f"ETA {eta}, {failed} failed")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
