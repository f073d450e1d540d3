"""Ctrl-C before a command has started: one line, no traceback (stdlib only, so it can be
installed before the heavy imports it guards)."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Callable, Iterator

STARTING_MESSAGE = b"error: interrupted while starting; nothing was run or written\n"


def _exit_while_starting(signum: int, frame: object) -> None:
    os.write(2, STARTING_MESSAGE)
    os._exit(130)


def quiet_ctrl_c_while_starting() -> None:
    """Until ``normal_ctrl_c``: a Ctrl-C ends the process at once with exit code 130 (nothing
    has started, so nothing is left half done), instead of a KeyboardInterrupt traceback out
    of whichever import it lands in."""
    signal.signal(signal.SIGINT, _exit_while_starting)


def normal_ctrl_c() -> None:
    """Ctrl-C raises KeyboardInterrupt again, for the command's own handling."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def start_children_ignoring_ctrl_c(start: Callable[[], object]) -> None:
    """Run ``start`` (which starts helper interpreters, e.g. a fork server) with Ctrl-C
    ignored, so the children begin life ignoring it: an ignored signal stays ignored across
    exec, and Python installs its KeyboardInterrupt handler only where SIGINT is at its
    default. A Ctrl-C during their imports then does not print their tracebacks; the parent
    handles it and stops them. The parent ignores Ctrl-C only for the forks themselves."""
    if threading.current_thread() is not threading.main_thread():
        start()     # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        start()
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """A Ctrl-C during the block is raised as KeyboardInterrupt when the block has finished:
    for steps that must not be cut in half (starting a process whose id must be known)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
