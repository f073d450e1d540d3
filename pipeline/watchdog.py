"""The per-clip time limit and the hung-clip watch: the whole protocol, worker and parent side.

Two guards, because a clip can be slow in two ways:
- Python keeps running (a decoder that spins frame after frame): ``time_limit`` raises
  ``ClipTimeout`` from a SIGALRM in the worker, between two frames.
- A native call never returns (a live HLS playlist the demuxer waits on forever, a
  network mount that stalls): no signal handler runs until it does. So every clip step
  in a worker process writes a small *step file* naming its task, clip, stage, worker pid,
  deadline and the task's progress; the scheduler (pipeline/executors.py) reads the step
  files of running tasks, cancels a task past its deadline (killing its worker), records
  the clip here as hung, and runs the task again: its next attempt skips that clip with a
  ``clip_hung`` failure record.

Tasks always run in worker processes (local pool or Ray), whatever the worker count, so
both guards hold in every run shape.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol

from htf.io import atomic_write_json, read_json_lines
from pipeline.errors import ClipTimeout, failure_record


class Task(Protocol):
    """What the watch needs of a task (pipeline.tasks.Task, which imports this module)."""
    name: str
    shard_stem: str
    stage: str
    output: str
    cfg: Any
    clips: list

# The signal gets the first chance; the kill comes this much later (at most).
STEP_GRACE_S = 5.0
_enabled = False          # step files are written only in worker processes


def enable() -> None:
    """Called once in each worker process."""
    global _enabled
    _enabled = True


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ClipTimeout after ``seconds`` (SIGALRM; main thread only, elsewhere no limit)."""
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


# ----------------------------------------------------------------------- worker side

def _work_dir(task: Task) -> Path:
    return Path(task.output) / ".work" / task.stage


def step_path(task: Task) -> Path:
    return _work_dir(task) / f"{task.name}.step"


def hung_path(task: Task) -> Path:
    # Per shard, not per task: the record outlives a change of task size.
    return _work_dir(task) / f"{task.shard_stem}.hung.jsonl"


def start_task(task: Task) -> None:
    if _enabled:
        _work_dir(task).mkdir(parents=True, exist_ok=True)


def end_task(task: Task) -> None:
    if _enabled:
        step_path(task).unlink(missing_ok=True)


def announce(task: Task, clip_id: str, stage: str, seconds: float, done: int, failed: int) -> None:
    """Worker: "task is now in ``stage`` of ``clip_id`` for at most ``seconds``; ``done``
    of its clips are finished, ``failed`` of them failed" (the progress display reads it)."""
    if not _enabled:
        return
    grace = min(STEP_GRACE_S, task.cfg.run.clip_timeout_s)
    atomic_write_json(step_path(task), {"pid": os.getpid(), "id": clip_id, "stage": stage, "done": done,
                                        "failed": failed, "deadline": time.time() + seconds + grace},
                      durable=False)     # a live status: rewritten at every clip step


# ----------------------------------------------------------------------- parent side

def read_step(task: Task) -> Optional[dict[str, Any]]:
    try:
        return json.loads(step_path(task).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def overdue(step: Optional[dict[str, Any]]) -> bool:
    return step is not None and time.time() > step["deadline"]


def record_hung(task: Task, step: dict[str, Any], detail: str) -> dict[str, Any]:
    """After the worker that ran ``step`` was killed (or died): the clip's failure record,
    kept so that the task's next attempt (and a rerun with the same limit) skips it."""
    path = hung_path(task)
    path.parent.mkdir(parents=True, exist_ok=True)
    clip = next((c for c in task.clips if c.id == step["id"]), None)
    record = failure_record(step["id"], step["stage"], "clip_hung", detail, clip.video if clip else "")
    with open(path, "a") as f:
        f.write(json.dumps({"failure": record, "clip_timeout_s": task.cfg.run.clip_timeout_s}) + "\n")
    # The dead worker's step must not make the task's next attempt look stuck.
    step_path(task).unlink(missing_ok=True)
    return record


def killed_detail(step: dict[str, Any]) -> str:
    return (f"{step['id']}: worker killed, still inside stage '{step['stage']}' past its deadline "
            "(run.clip_timeout_s) -- the decoder, flow method or file write never returned")


def died_detail(step: dict[str, Any]) -> str:
    return f"{step['id']}: the worker process died inside stage '{step['stage']}' (out of memory?)"


def hung_clips(task: Task) -> dict[str, dict[str, Any]]:
    """Clips of ``task`` recorded as hung under a time limit at least the current one (a
    clip that hung gets another chance when ``run.clip_timeout_s`` has been raised since)."""
    # A line cut by a kill during its append is passed over: that clip gets another chance.
    entries, _damaged = read_json_lines(hung_path(task))
    limit = task.cfg.run.clip_timeout_s
    return {e["failure"]["id"]: e["failure"] for e in entries if e["clip_timeout_s"] >= limit}
