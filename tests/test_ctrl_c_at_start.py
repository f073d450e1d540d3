"""A Ctrl-C in the first moments of a command (its imports, the fork server starting) is one
line and an exit code, never a traceback from the command or one of its helper processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from htf.cli import command
from htf.interrupts import STARTING_MESSAGE, ctrl_c_deferred, start_children_ignoring_ctrl_c
from pipeline.executors import FORK_SERVER_STOP_S, LocalExecutor
from tests.pipeline_helpers import world

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
# The child reports what its own SIGINT disposition is when it starts.
REPORT_SIGINT = "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"


def _ignores_sigint(pid: int) -> bool:
    ignored = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("SigIgn:"))
    return bool(int(ignored.split()[1], 16) & (1 << (signal.SIGINT - 1)))


def test_a_ctrl_c_while_the_modules_load_is_one_line_and_exit_code_130():
    code = ("from htf.interrupts import quiet_ctrl_c_while_starting; import os, signal, time; "
            "quiet_ctrl_c_while_starting(); os.kill(os.getpid(), signal.SIGINT); time.sleep(10)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, timeout=30)
    assert done.returncode == 130
    assert done.stderr == STARTING_MESSAGE


@pytest.fixture
def ctrl_c_raises():
    """SIGINT handled as in an interactive command (a test runner started in the background
    inherits it ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def report_sigint_of_a_child() -> str:
    return subprocess.run([sys.executable, "-c", REPORT_SIGINT], capture_output=True, text=True).stdout.strip()


def test_children_started_ignoring_ctrl_c_ignore_it_and_the_parent_gets_its_handler_back(ctrl_c_raises):
    assert report_sigint_of_a_child() == "False"
    seen = []
    start_children_ignoring_ctrl_c(lambda: seen.append(report_sigint_of_a_child()))
    assert seen == ["True"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_fork_server_and_its_workers_ignore_ctrl_c_from_their_first_instruction(ctrl_c_raises):
    from multiprocessing import forkserver

    executor = LocalExecutor(1)
    try:
        assert _ignores_sigint(forkserver._forkserver._forkserver_pid)
        handle = executor.submit(os.getpid, None)   # any picklable function of one argument
        assert _ignores_sigint(executor._busy[handle].process.pid)
    finally:
        executor.close()


def test_close_ends_a_worker_that_was_started_but_never_handed_a_task():
    executor = LocalExecutor(1)
    from pipeline.executors import _Worker

    stray = _Worker(executor._context, executor._started)   # a Ctrl-C came before submit kept it
    t0 = time.monotonic()
    executor.close()
    assert stray.process.exitcode is not None
    assert time.monotonic() - t0 < 8


def test_a_deferred_ctrl_c_lets_the_block_finish_then_interrupts(ctrl_c_raises):
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)           # the handler runs here: recorded, not raised
            finished.append(True)
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


FINALISER_INTERRUPTED = """
import os, signal, time
from htf.interrupts import normal_ctrl_c
normal_ctrl_c()
class Held:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.3)            # the Ctrl-C arrives while the finaliser runs
held = Held()
try:
    del held
    time.sleep(3)
    print("not interrupted")
except KeyboardInterrupt:
    print("interrupted")
"""


def test_a_ctrl_c_landing_in_a_finaliser_is_neither_printed_nor_lost():
    done = subprocess.run([sys.executable, "-c", FINALISER_INTERRUPTED], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=30)
    assert (done.stdout.strip(), done.stderr) == ("interrupted", "")


def test_a_ctrl_c_the_command_does_not_handle_is_one_error_line(capsys):
    @command
    def main(argv=None) -> int:
        raise KeyboardInterrupt

    assert main([]) == 130
    assert capsys.readouterr().err == "error: interrupted\n"


# (Earlier than ~0.1 s the interpreter itself is still starting, before any code of ours runs.)
@pytest.mark.parametrize("delay", [0.3, 0.6, 0.9, 1.2])
def test_a_pipeline_run_interrupted_at_any_early_moment_ends_without_a_traceback(tmp_path, delay):
    cmd = [sys.executable, "-m", "pipeline", "run", "--input", str(world(8, 64, 4.0)), "--output",
           str(tmp_path / "out"), "--no-progress", "--workers", "2", "--set", "frames.short_side=128"]
    # Ctrl-C in a terminal goes to the whole process group: the command and its helpers.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    interrupted = time.monotonic()
    try:
        out, err = proc.communicate(timeout=60)
        # Every worker it started was stopped: the fork server did not have to be killed.
        assert time.monotonic() - interrupted < FORK_SERVER_STOP_S - 2, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in err and "Fatal Python error" not in err, err
    finished = "8 written" in out
    if proc.returncode in (0, -signal.SIGINT):
        # The run was over before the Ctrl-C, or it landed while the interpreter was exiting
        # (Python gives SIGINT back its default action then): the report was written either way.
        assert finished, (out, err)
    else:
        assert proc.returncode == 130, (out, err)
        assert err.strip().splitlines()[-1].startswith("error: interrupted")
