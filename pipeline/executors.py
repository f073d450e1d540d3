"""Run independent tasks: in-process, on a local process pool, or on a Ray cluster.

All three yield the same results (the task output does not depend on where it ran); only
the order of completion differs, and the runner sorts by task before writing anything
that lists shards.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
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


def run_local(tasks: list[Task], workers: int, fn: Callable[[Task], TaskResult] | None = None,
              use_cuda: bool = False) -> Iterator[TaskResult]:
    from pipeline.tasks import run_task

    fn = fn or run_task
    if workers <= 1 or len(tasks) <= 1 and not use_cuda:
        if workers <= 1:
            _worker_init()
        for task in tasks:
            yield fn(task)
        return
    # Never plain fork: forking a process that already runs threads (torch, Ray, a test
    # runner) can copy a held import lock into the child, which then hangs on its first
    # import. A fork server is a clean single-threaded process to fork workers from, with
    # the task code preloaded; CUDA needs spawn.
    if use_cuda:
        context = multiprocessing.get_context("spawn")
    else:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["pipeline.tasks"])
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init) as pool:
        # Keep at most 2 tasks per worker in flight: the queue of pending tasks stays small
        # however many clips there are.
        pending: set = set()
        todo = iter(tasks)
        for task in _take(todo, 2 * workers):
            pending.add(pool.submit(fn, task))
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
                for task in _take(todo, 1):
                    pending.add(pool.submit(fn, task))


def _take(it: Iterator[Task], n: int) -> Iterable[Task]:
    for _ in range(n):
        try:
            yield next(it)
        except StopIteration:
            return


def run_ray(tasks: list[Task], workers: int, address: str = "", use_cuda: bool = False) -> Iterator[TaskResult]:
    """Run the same tasks on Ray: ``address`` '' starts a local instance with ``workers``
    CPUs, 'auto' or 'ray://host:port' joins an existing cluster (all nodes must see the
    input, output and cache folders, e.g. on a shared file system)."""
    try:
        import ray
    except ImportError as err:
        raise RuntimeError("--executor ray needs the ray package (pip install 'ray[default]')") from err

    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
        ray.init(ignore_reinit_error=True, log_to_driver=False, **kwargs)
    remote = ray.remote(num_cpus=1, num_gpus=1 if use_cuda else 0, max_retries=2)(_ray_task)
    try:
        pending = []
        todo = iter(tasks)
        in_flight = max(2 * workers, 2)
        for task in _take(todo, in_flight):
            pending.append(remote.remote(task))
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
            for task in _take(todo, 1):
                pending.append(remote.remote(task))
    finally:
        if started_here:
            ray.shutdown()


def _ray_task(task: Task) -> TaskResult:
    from pipeline.tasks import run_task

    _worker_init()
    return run_task(task)
