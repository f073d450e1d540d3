"""Run independent tasks: in-process, on a local process pool, or on a Ray cluster.

All three yield the same results (the task output does not depend on where it ran); only
the order of completion differs, and the runner sorts by task before writing anything
that lists shards.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator

from pipeline.tasks import Task, TaskResult


def _worker_init() -> None:
    # One core per worker: OpenCV and torch would otherwise each start a thread per core
    # and the workers would fight over them.
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


def _watched_worker_init() -> None:
    from pipeline.tasks import enable_step_files

    _worker_init()
    enable_step_files()
    # Ctrl-C reaches every process of the terminal: the parent says how to resume, the
    # workers leave without a traceback each (a partial shard is removed on the rerun).
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))


def _start_fork_server_without_ctrl_c() -> None:
    """Start the fork server with Ctrl-C ignored: interrupted while preloading imports,
    it would print a traceback of its own."""
    from multiprocessing import forkserver

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


def run_local(tasks: list[Task], workers: int, fn: Callable[[Task], TaskResult] | None = None,
              use_cuda: bool = False) -> Iterator[TaskResult]:
    """Run ``tasks`` in this process (``workers`` 1) or on a process pool. On the pool, a
    worker stuck in one clip past its deadline is killed, the clip is recorded as hung,
    and the unfinished tasks go on in a fresh pool (they skip the hung clip)."""
    from pipeline.tasks import run_task

    fn = fn or run_task
    if workers <= 1 or len(tasks) <= 1 and not use_cuda:
        if workers <= 1:
            _worker_init()
        for task in tasks:
            yield fn(task)
        return
    remaining = list(tasks)
    try:
        while remaining:
            finished: set[str] = set()
            for result in _run_pool(remaining, workers, fn, use_cuda):
                finished.add(result.task)
                yield result
            remaining = [t for t in remaining if t.name not in finished]
    finally:
        if not use_cuda:
            _stop_fork_server()


def _stop_fork_server() -> None:
    """Stop the fork server and wait for it: no process lingers after the run, and the
    workers' CPU time (the fork server reaped them) reaches this process's accounts, so
    ``time`` and getrusage see the whole run."""
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)    # CPython >= 3.8
    if stop is not None:
        try:
            stop()
        except OSError:
            pass


def _run_pool(tasks: list[Task], workers: int, fn: Callable[[Task], TaskResult],
              use_cuda: bool) -> Iterator[TaskResult]:
    """One pool's life: yields results until every task is done or a worker had to be
    killed (or died), after which the caller starts a new pool for what is left."""
    # Never plain fork: forking a process that already runs threads (torch, Ray, a test
    # runner) can copy a held import lock into the child, which then hangs on its first
    # import. A fork server is a clean single-threaded process to fork workers from, with
    # the task code preloaded; CUDA needs spawn.
    if use_cuda:
        context = multiprocessing.get_context("spawn")
    else:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["pipeline.tasks"])
        _start_fork_server_without_ctrl_c()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_watched_worker_init)
    try:
        # Keep at most 2 tasks per worker in flight: the queue of pending tasks stays small
        # however many clips there are.
        running: dict[Future, Task] = {}
        todo = iter(tasks)
        for task in _take(todo, 2 * workers):
            running[pool.submit(fn, task)] = task
        while running:
            done, _ = wait(running, timeout=WATCH_INTERVAL_S, return_when=FIRST_COMPLETED)
            # Checked every round, not only on idle ones: the other workers may keep
            # finishing tasks while one is stuck.
            if _kill_stuck_worker([t for f, t in running.items() if f not in done]):
                return
            for future in done:
                task = running.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    _record_dead_worker(running.values(), task)
                    return
                yield result
                for nxt in _take(todo, 1):
                    running[pool.submit(fn, nxt)] = nxt
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


WATCH_INTERVAL_S = 1.0


def _stuck_step(task: Task) -> dict | None:
    """The task's current step if its clip is past its deadline."""
    from pipeline.tasks import read_step

    step = read_step(task)
    return step if step is not None and time.time() > step["deadline"] else None


def _record_stuck(task: Task, step: dict) -> None:
    from pipeline.tasks import record_hung_clip

    record_hung_clip(task, step, f"{step['id']}: worker killed, still inside stage "
                                 f"'{step['stage']}' past its deadline (run.clip_timeout_s) "
                                 "-- the decoder or flow method never returned")


def _kill_stuck_worker(running: Iterable[Task]) -> bool:
    """Kill the worker of a task whose current clip is past its deadline; True if done."""
    for task in running:
        step = _stuck_step(task)
        if step is None:
            continue
        try:
            os.kill(step["pid"], signal.SIGKILL)
        except ProcessLookupError:
            continue
        _record_stuck(task, step)
        return True
    return False


def _record_dead_worker(running: Iterable[Task], task: Task) -> None:
    """A worker died by itself (e.g. killed by the kernel for memory): name the clip it was
    in when its step file says so; otherwise there is nothing to skip and it is an error."""
    from pipeline.tasks import read_step, record_hung_clip

    for candidate in [task, *running]:
        step = read_step(candidate)
        if step is not None and not _alive(step["pid"]):
            record_hung_clip(candidate, step, f"{step['id']}: the worker process died inside stage "
                                              f"'{step['stage']}' (out of memory?)")
            return
    raise RuntimeError(f"a pipeline worker died while running {task.name} and no clip can be "
                       "blamed; rerun the same command to resume")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _take(it: Iterator[Task], n: int) -> Iterable[Task]:
    for _ in range(n):
        try:
            yield next(it)
        except StopIteration:
            return


def run_ray(tasks: list[Task], workers: int, address: str = "", use_cuda: bool = False,
            fn: Callable[[Task], TaskResult] | None = None) -> Iterator[TaskResult]:
    """Run the same tasks on Ray: ``address`` '' starts a local instance with ``workers``
    CPUs, 'auto' or 'ray://host:port' joins an existing cluster (all nodes must see the
    input, output and cache folders, e.g. on a shared file system). A task stuck in one
    clip past its deadline is cancelled (its worker killed), the clip recorded as hung,
    and the task submitted again."""
    try:
        import ray
    except ImportError as err:
        raise RuntimeError("--executor ray needs the ray package (pip install 'ray[default]')") from err
    from pipeline.tasks import run_task

    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
        ray.init(ignore_reinit_error=True, log_to_driver=False, **kwargs)
    remote = ray.remote(num_cpus=1, num_gpus=1 if use_cuda else 0, max_retries=2)(_ray_task)
    fn = fn or run_task
    try:
        running: dict = {}
        todo = iter(tasks)
        in_flight = max(2 * workers, 2)
        for task in _take(todo, in_flight):
            running[remote.remote(task, fn)] = task
        while running:
            done, _ = ray.wait(list(running), num_returns=1, timeout=WATCH_INTERVAL_S)
            for ref, task in list(running.items()):
                step = None if ref in done else _stuck_step(task)
                if step is not None:
                    ray.cancel(ref, force=True)
                    _record_stuck(task, step)
                    del running[ref]
                    running[remote.remote(task, fn)] = task     # goes on without that clip
            if not done:
                continue
            task = running.pop(done[0])
            try:
                result = ray.get(done[0])
            except (ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError):
                continue      # cancelled above, already submitted again
            yield result
            for nxt in _take(todo, 1):
                running[remote.remote(nxt, fn)] = nxt
    finally:
        if started_here:
            ray.shutdown()


def _ray_task(task: Task, fn: Callable[[Task], TaskResult]) -> TaskResult:
    _watched_worker_init()
    return fn(task)
