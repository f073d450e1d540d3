"""Plan, execute and finish a pipeline run: raw folder -> tasks -> shards + reports.

Planning is deterministic: clips in split-list order (or sorted ids), cut into
shard-sized tasks; task i writes ``<prefix>-<i:06d>.tar``. The worker count and executor
change only how fast that happens, never what is written.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from htf.config import save_config
from pipeline.annotations import Annotations, load_annotations, load_keyframes
from pipeline.config import PipelineConfig
from pipeline.flow import check_flow_method
from pipeline.index import discover, read_split_list
from pipeline.pack import merge_sizes, samples_per_shard
from pipeline.tasks import ClipJob, Task, TaskResult


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


def plan_tasks(cfg: PipelineConfig, inputs: RunInputs, stage: str) -> tuple[list[Task], list[dict], list[dict], Annotations | None]:
    """Find clips, attach boxes and keyframes, cut into tasks. Returns (tasks, failures
    found while planning, warnings, annotations)."""
    split_ids = read_split_list(inputs.split_list, cfg.input.id_style) if inputs.split_list else None
    found = discover(inputs.input_dir, cfg.input, split_ids)
    warnings: list[dict[str, Any]] = [{"id": Path(p).stem, "stage": "index", "reason": "not_a_video_extension",
                                       "detail": f"{p} ignored (not one of input.video_extensions)", "path": p}
                                      for p in found.ignored_files]
    annotations = load_annotations(inputs.annotations, cfg.input.id_style) if inputs.annotations else None
    if annotations is not None:
        warnings.extend(annotations.warnings)
    keyframes = load_keyframes(inputs.keyframes) if inputs.keyframes else {}
    jobs = [ClipJob(id=c.id, video=c.video, audio=c.audio,
                    keyframe_index=keyframes.get(c.id, {}).get("index"),
                    keyframe_entry=keyframes.get(c.id, {}).get("entry"),
                    boxes=annotations.boxes.get(c.id) if annotations else None)
            for c in found.clips]
    warnings.extend(_uncovered_clip_warnings(found.clips, inputs, keyframes, annotations))
    per_shard = samples_per_shard(cfg)
    cache_dir = cfg.run.cache_dir or str(Path(inputs.output_dir) / "cache")
    tasks = [Task(index=i // per_shard, prefix=cfg.pack.prefix, stage=stage, clips=jobs[i:i + per_shard],
                  cfg=cfg, output=str(inputs.output_dir), cache_dir=cache_dir,
                  box_format=annotations.box_format if annotations else None)
             for i in range(0, len(jobs), per_shard)]
    return tasks, found.failures, warnings, annotations


def _uncovered_clip_warnings(clips: list, inputs: RunInputs, keyframes: dict,
                             annotations: Annotations | None) -> list[dict[str, Any]]:
    """Clips that a given keyframe map or box file does not cover: they are still processed
    (middle frame; no boxes), and each is named in warnings.jsonl rather than passed over."""
    out = []
    for c in clips:
        if inputs.keyframes and c.id not in keyframes:
            out.append({"id": c.id, "stage": "index", "reason": "no_keyframe_entry",
                        "detail": f"{c.id} is not in {inputs.keyframes}: the middle frame is used", "path": c.video})
        if annotations is not None and c.id not in annotations.boxes:
            out.append({"id": c.id, "stage": "index", "reason": "no_boxes",
                        "detail": f"{c.id} has no boxes in {inputs.annotations}: its sample carries none",
                        "path": c.video})
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
    done (results are put back in task order before anything is written)."""
    return sorted(tasks, key=lambda t: (-input_bytes(t), t.index))


def execute(tasks: list[Task], cfg: PipelineConfig) -> Iterator[TaskResult]:
    tasks = largest_first(tasks) if cfg.run.workers > 1 else tasks
    use_cuda = cfg.flow.device.startswith("cuda")
    if cfg.run.executor == "ray":
        from pipeline.executors import run_ray

        return run_ray(tasks, cfg.run.workers, cfg.run.ray_address, use_cuda)
    from pipeline.executors import run_local

    return run_local(tasks, cfg.run.workers, use_cuda=use_cuda)


def config_path(out: Path, prefix: str) -> Path:
    """The resolved config of one prefix's run: train/val/test runs share OUT, each keeps its own."""
    return out / f"pipeline_config_{prefix}.yaml"


def run_pipeline(cfg: PipelineConfig, inputs: RunInputs, stage: str = "pack") -> RunSummary:
    """Run the stages up to ``stage`` over the input folder; resumes a killed run."""
    start = time.time()
    out = Path(inputs.output_dir)
    # Every input is checked (flow weights, input folder, lists, boxes) before OUT is
    # created: a command that fails leaves no half-made output folder behind.
    if stage in ("flow", "pack"):
        check_flow_method(cfg.flow)      # fail before touching any clip (weights, names)
    tasks, plan_failures, warnings, _ = plan_tasks(cfg, inputs, stage)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, config_path(out, cfg.pack.prefix))
    _remove_partial_shards(out, cfg.pack.prefix)
    n_clips = sum(len(t.clips) for t in tasks)
    results: dict[str, TaskResult] = {}
    with _progress(n_clips, cfg, stage) as bar:
        for result in execute(tasks, cfg):
            results[result.task] = result
            bar.update(result.n_clips)
    ordered = [results[t.name] for t in tasks]
    summary = _finish(out, cfg, stage, tasks, ordered, plan_failures, warnings)
    summary.clips_in = n_clips + sum(1 for f in plan_failures if f["reason"] == "missing_file")
    summary.seconds = time.time() - start
    (out / f"summary_{cfg.pack.prefix}_{stage}.json").write_text(json.dumps(
        {**{k: v for k, v in summary.__dict__.items() if k not in ("failures", "warnings")},
         "failures": dict(summary.failures), "warnings": dict(summary.warnings)}, indent=1))
    return summary


def _finish(out: Path, cfg: PipelineConfig, stage: str, tasks: list[Task], results: list[TaskResult],
            plan_failures: list[dict], warnings: list[dict]) -> RunSummary:
    prefix = cfg.pack.prefix
    failures = [dict(f, prefix=prefix) for f in plan_failures]
    for r in results:
        failures.extend(dict(f, prefix=prefix) for f in r.failures)
    _merge_jsonl(out / "failures.jsonl", prefix, failures)
    _merge_jsonl(out / "warnings.jsonl", prefix, [dict(w, prefix=prefix) for w in warnings])
    if stage == "index" or any(r.index_records for r in results):
        _merge_jsonl(out / "index.jsonl", prefix,
                     [dict(rec, prefix=prefix) for r in results for rec in r.index_records])
    summary = RunSummary(stage=stage, clips_in=0, written=sum(r.written for r in results),
                         failures=Counter(f["reason"] for f in failures),
                         warnings=Counter(w["reason"] for w in warnings),
                         flow_computed=sum(r.flow_computed for r in results),
                         flow_cached=sum(r.flow_cached for r in results),
                         tasks_skipped=sum(r.skipped for r in results))
    if stage == "pack":
        sizes = {r.shard: r.written for r in results if r.shard}
        merge_sizes(out, prefix, sizes)
        _remove_stale_shards(out, prefix, set(sizes))
        summary.shards = len(sizes)
    return summary


def _merge_jsonl(path: Path, prefix: str, records: list[dict]) -> None:
    """Replace this prefix's lines of a report, keep other prefixes' (train/val/test share OUT)."""
    kept: list[str] = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip() and json.loads(line).get("prefix") != prefix:
                kept.append(line)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept + [json.dumps(r) for r in records]))
    os.replace(tmp, path)


def _remove_partial_shards(out: Path, prefix: str) -> None:
    """Temporary shards of a killed run (this prefix only) are discarded: their tasks rerun."""
    for tmp in out.glob(f".{prefix}-*.tar.tmp"):
        tmp.unlink(missing_ok=True)


def _remove_stale_shards(out: Path, prefix: str, current: set[str]) -> None:
    """Shards of this prefix from an earlier plan (e.g. another shard size) would be read
    as part of the set: remove them so the folder holds exactly this run's samples."""
    for path in out.glob(f"{prefix}-*.tar"):
        if path.name not in current and path.name[len(prefix) + 1:-4].isdigit():
            print(f"pipeline: removing {path.name} (not part of this run's plan)", file=sys.stderr)
            path.unlink()


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int) -> None:
        pass


def _progress(total: int, cfg: PipelineConfig, stage: str):
    if not cfg.run.progress:
        return _NoBar()
    from tqdm import tqdm

    # disable=None: a bar on a terminal, nothing in logs and pipes.
    return tqdm(total=total, desc=f"{stage} [{cfg.pack.prefix}]", unit="clip", disable=None, file=sys.stderr)
