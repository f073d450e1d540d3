"""Scratch folders that outlive one test but not the test run.

A test process makes some folders once and shares them between its tests (a generated
world, the docs' workspace, an empty torch hub). They are removed when the process that
made them exits: CI runs the suite again and again on one disk, and a few hundred MB left
per run fills it.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path


def process_scratch(prefix: str) -> Path:
    """A new folder under the temp dir, removed when this process exits."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
