"""Test-wide settings: the suite never downloads anything and leaves nothing behind.

HTF_OFFLINE makes any request for weights by name fail at once instead of trying the
network; the hub caches point into a throw-away folder so a developer's own cached
weights cannot make a test pass that would fail on a fresh machine.

Child processes (torchrun, ffmpeg, worker pools) get TMPDIR inside one scratch folder of
the run, so what they fail to clean up goes when the run ends. pytest's own tmp_path
folders stay where pytest puts them (the last runs' failures are kept for reading).
"""
import os
import tempfile
from pathlib import Path

from tests.scratch import process_scratch

tempfile.gettempdir()            # this process keeps the system temp dir (and pytest's basetemp)
if "HTF_TEST_SCRATCH" not in os.environ:     # xdist workers share the controller's (short paths: Ray's sockets)
    os.environ["HTF_TEST_SCRATCH"] = str(process_scratch("htf-tests-"))
_RUN_SCRATCH = Path(os.environ["HTF_TEST_SCRATCH"])

os.environ["HTF_OFFLINE"] = "1"
os.environ["TMPDIR"] = str(_RUN_SCRATCH)
os.environ.setdefault("TORCH_HOME", str(_RUN_SCRATCH / "torch-home"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
