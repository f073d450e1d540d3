"""Where tasks run: executors behind one interface, and the one loop that schedules them.

An executor runs a task function in a worker process it can kill:
- ``submit(fn, task)`` starts ``fn(task)`` and returns a handle;
- ``wait(handles, timeout)`` returns the (handle, outcome) pairs that finished, where the
  outcome is the ``TaskResult``, the exception the task raised, or ``WorkerDied``;
- ``cancel(handle)`` kills the worker running it (the task's result is never wanted);
- ``close()`` stops every worker.
Every executor is built the same way, ``EXECUTORS[name](workers, use_cuda, address)``, so
they are interchangeable: ``local`` (a pool of processes on this machine) and ``ray``
(a local Ray instance or a cluster).

``run_tasks`` is the only scheduling loop: it keeps the executor's slots full, and every
round asks the watchdog (pipeline/watchdog.py) whether a running task's clip is past its
deadline; such a task is cancelled, its clip recorded as hung, and the task submitted
again (it then skips the clip). A worker that dies by itself is handled the same way.
Tasks always run in worker processes, even with one worker, so that a clip stuck in
native code can be stopped in every run shape.
"""
from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import traceback
from collections import deque
from multiprocessing.connection import Connection, wait as wait_connections
from typing import Any, Callable, Iterator, Optional, Protocol

from htf.interrupts import ctrl_c_deferred, start_children_ignoring_ctrl_c
from pipeline import watchdog
from pipeline.tasks import Task, TaskResult, run_task

TaskFn = Callable[[Task], TaskResult]
WATCH_INTERVAL_S = 0.5


class WorkerDied(Exception):
    """The worker running a task exited without an answer (killed for memory, crashed)."""


class Executor(Protocol):
    slots: int       # tasks worth keeping in flight

    def submit(self, fn: TaskFn, task: Task) -> Any: ...

    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, Any]]: ...

    def cancel(self, handle: Any) -> None: ...

    def close(self) -> None: ...


def worker_init() -> None:
    """Once per worker process: one core each, hung-clip step files on."""
    # OpenCV and torch would otherwise each start a thread per core and the workers would
    # fight over them.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    # torch costs ~2 s to import: only a learned flow method loads it (and then reads
    # OMP_NUM_THREADS=1 set above); the classical CPU path never pays for it.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    watchdog.enable()


# ------------------------------------------------------------------------ local pool

def _die_with_parent() -> None:
    """A worker whose run was killed (kill -9 of the command) must not go on writing
    next to the rerun: the kernel kills it when its parent process ends."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)     # PR_SET_PDEATHSIG


def _worker_main(conn: Connection) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C is the parent's to handle
    worker_init()
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        fn, task = job
        try:
            reply: tuple[str, Any] = ("ok", fn(task))
        except BaseException as err:  # sent to the parent, which raises it
            reply = ("error", _portable(err))
        conn.send(reply)


def _portable(err: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else its text and traceback."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}\n{traceback.format_exc()}")


class _Worker:
    def __init__(self, context, started: list[_Worker]) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child,), daemon=True)
        # A Ctrl-C must not cut a start in half: a worker the executor does not know of
        # would keep the fork server, and close(), waiting.
        with ctrl_c_deferred():
            started.append(self)
            self.process.start()
        child.close()

    def kill(self) -> None:
        if self.process.pid is None:        # never started
            return
        self.process.kill()
        self.process.join()
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.kill()


class LocalExecutor:
    """Worker processes on this machine, one task at a time each; a cancelled or dead
    worker is replaced by a fresh one, the others go on."""

    def __init__(self, workers: int, use_cuda: bool = False, address: str = "") -> None:
        # Never plain fork: forking a process that already runs threads (torch, Ray, a test
        # runner) can copy a held import lock into the child, which then hangs on its first
        # import. A fork server is a clean single-threaded process to fork workers from, with
        # the task code preloaded; CUDA needs spawn.
        if use_cuda:
            self._context = multiprocessing.get_context("spawn")
        else:
            self._context = multiprocessing.get_context("forkserver")
            self._context.set_forkserver_preload(["pipeline.tasks"])
            start_children_ignoring_ctrl_c(_start_fork_server)
        self._use_cuda = use_cuda
        self.slots = max(1, workers)
        self._idle: list[_Worker] = []
        self._busy: dict[int, _Worker] = {}
        self._started: list[_Worker] = []
        self._ids = itertools.count()

    def submit(self, fn: TaskFn, task: Task) -> int:
        worker = self._idle.pop() if self._idle else _Worker(self._context, self._started)
        handle = next(self._ids)
        self._busy[handle] = worker
        worker.conn.send((fn, task))
        return handle

    def wait(self, handles: list[int], timeout: float) -> list[tuple[int, Any]]:
        by_conn = {self._busy[h].conn: h for h in handles}
        finished = []
        for conn in wait_connections(list(by_conn), timeout):
            handle = by_conn[conn]
            worker = self._busy.pop(handle)
            try:
                status, payload = conn.recv()
            except (EOFError, OSError):
                worker.kill()
                self._started.remove(worker)
                finished.append((handle, WorkerDied(f"exit code {worker.process.exitcode}")))
                continue
            self._idle.append(worker)
            finished.append((handle, payload))
        return finished

    def cancel(self, handle: int) -> None:
        worker = self._busy.pop(handle)
        worker.kill()
        self._started.remove(worker)

    def close(self) -> None:
        for worker in self._idle:
            worker.stop()
        for worker in self._started:
            if worker not in self._idle and worker.process.exitcode is None:
                worker.kill()       # busy, or started when a Ctrl-C came
        self._busy.clear()
        self._idle.clear()
        self._started.clear()
        if not self._use_cuda:
            _stop_fork_server()


def _start_fork_server() -> None:
    from multiprocessing import forkserver

    forkserver.ensure_running()


# Seconds the fork server gets to end after its workers were stopped.
FORK_SERVER_STOP_S = 10.0


def _stop_fork_server() -> None:
    """Stop the fork server and wait for it: no process lingers after the run, and the
    workers' CPU time (the fork server reaped them) reaches this process's accounts, so
    ``time`` and getrusage see the whole run."""
    from multiprocessing import forkserver

    server = forkserver._forkserver
    stop = getattr(server, "_stop", None)                   # CPython >= 3.8
    pid = getattr(server, "_forkserver_pid", None)
    if stop is None or pid is None:
        return
    # It waits for every process it forked; one that escaped close() (killed parent, a
    # Ctrl-C at the wrong instant) must not hang the run's end: past the bound the server
    # is killed, and its workers with it (they die with their parent).
    timer = threading.Timer(FORK_SERVER_STOP_S, os.kill, (pid, signal.SIGKILL))
    timer.start()
    try:
        stop()
    except OSError:
        pass
    finally:
        timer.cancel()


# ------------------------------------------------------------------------------- Ray

def _ray_task(task: Task, fn: TaskFn) -> TaskResult:
    worker_init()
    return fn(task)


class RayExecutor:
    """The same tasks on Ray: ``address`` '' starts a local instance with ``workers``
    CPUs, 'auto' or 'ray://host:port' joins an existing cluster (all nodes must see the
    input, output and cache folders, e.g. on a shared file system)."""

    def __init__(self, workers: int, use_cuda: bool = False, address: str = "") -> None:
        try:
            import ray
        except ImportError as err:
            raise RuntimeError("--executor ray needs the ray package (pip install 'ray[default]')") from err
        self._ray = ray
        self._started_here = not ray.is_initialized()
        if self._started_here:
            kwargs = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
            ray.init(ignore_reinit_error=True, log_to_driver=False, **kwargs)
        # No retries by Ray: a task that lost its worker is the scheduler's to blame and resubmit.
        self._remote = ray.remote(num_cpus=1, num_gpus=1 if use_cuda else 0, max_retries=0)(_ray_task)
        self.slots = max(2 * workers, 2)     # a queued task starts as soon as a CPU frees

    def submit(self, fn: TaskFn, task: Task) -> Any:
        return self._remote.remote(task, fn)

    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, Any]]:
        ray = self._ray
        done, rest = ray.wait(handles, num_returns=1, timeout=timeout)
        if done and rest:
            done += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        return [(ref, self._outcome(ref)) for ref in done]

    def _outcome(self, ref: Any) -> Any:
        errors = self._ray.exceptions
        died = tuple(getattr(errors, name) for name in ("WorkerCrashedError", "OutOfMemoryError")
                     if hasattr(errors, name))
        try:
            return self._ray.get(ref)
        except died as err:
            return WorkerDied(str(err))
        except errors.RayTaskError as err:
            return err.as_instanceof_cause()

    def cancel(self, handle: Any) -> None:
        self._ray.cancel(handle, force=True)
        # Wait (briefly) for the kill to land: the task's next attempt must not meet a
        # worker of the old one still writing its files.
        self._ray.wait([handle], timeout=10)

    def close(self) -> None:
        if self._started_here:
            self._ray.shutdown()


EXECUTORS: dict[str, Callable[..., Executor]] = {"local": LocalExecutor, "ray": RayExecutor}


# ------------------------------------------------------------------------ scheduling

def run_tasks(tasks: list[Task], executor: Executor, fn: Optional[TaskFn] = None,
              on_round: Optional[Callable[[list[dict]], None]] = None) -> Iterator[TaskResult]:
    """Run every task on ``executor``; yields results as they finish (any order).
    ``on_round`` gets the step records of the running tasks about every
    ``WATCH_INTERVAL_S`` (their progress)."""
    fn = fn or run_task
    pending = deque(tasks)
    running: dict[Any, Task] = {}
    while pending or running:
        while pending and len(running) < executor.slots:
            task = pending.popleft()
            running[executor.submit(fn, task)] = task
        for handle, outcome in executor.wait(list(running), WATCH_INTERVAL_S):
            task = running.pop(handle)
            if isinstance(outcome, WorkerDied):
                _blame_dead_worker(task, outcome)
                pending.appendleft(task)          # goes on without the clip it died in
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                yield outcome
        # Checked every round, not only on idle ones: other workers may keep finishing
        # tasks while one is stuck.
        steps = {handle: watchdog.read_step(task) for handle, task in running.items()}
        for handle, step in steps.items():
            if watchdog.overdue(step):
                executor.cancel(handle)
                task = running.pop(handle)
                watchdog.record_hung(task, step, watchdog.killed_detail(step))
                pending.appendleft(task)
        if on_round is not None:
            on_round([s for h, s in steps.items() if h in running and s is not None])


def _blame_dead_worker(task: Task, died: WorkerDied) -> None:
    """Name the clip the worker was in when its step file says so; otherwise there is
    nothing to skip and the run stops."""
    step = watchdog.read_step(task)
    if step is None:
        raise RuntimeError(f"a pipeline worker died ({died}) while running {task.name} and no clip "
                           "can be blamed; rerun the same command to resume")
    watchdog.record_hung(task, step, watchdog.died_detail(step))


def execute(tasks: list[Task], kind: str, workers: int, use_cuda: bool = False, address: str = "",
            fn: Optional[TaskFn] = None, on_round: Optional[Callable[[list[dict]], None]] = None
            ) -> Iterator[TaskResult]:
    """Run ``tasks`` on a fresh executor of ``kind`` and close it afterwards."""
    executor = EXECUTORS[kind](workers, use_cuda, address)
    try:
        yield from run_tasks(tasks, executor, fn, on_round)
    finally:
        executor.close()
