"""Ctrl-C before a command has started: one line, no traceback (stdlib only, so it can be
installed before the heavy imports it guards)."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType
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


# Seconds after which a Ctrl-C that landed in a finaliser is delivered again.
REDELIVER_S = 0.05


def _in_finaliser(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs inside an object's ``__del__`` or a ``weakref.finalize`` callback."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or (code.co_name == "__call__" and code.co_filename.endswith("weakref.py")):
            return True
        frame = frame.f_back
    return False


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """KeyboardInterrupt, but never inside a finaliser: Python prints an exception raised there
    as "Exception ignored in ..." with a traceback and drops it, so the Ctrl-C would be lost
    and the user would see a traceback. It is sent again a moment later instead."""
    if _in_finaliser(frame):
        resend = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), signum))
        resend.daemon = True
        resend.start()
        return
    raise KeyboardInterrupt


def normal_ctrl_c() -> None:
    """Ctrl-C raises KeyboardInterrupt again, for the command's own handling (outside
    finalisers, where Python would swallow it)."""
    signal.signal(signal.SIGINT, _interrupt)


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
