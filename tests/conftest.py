"""Test-wide settings: the suite never downloads anything.

HTF_OFFLINE makes any request for weights by name fail at once instead of trying the
network; the hub caches point into a throw-away folder so a developer's own cached
weights cannot make a test pass that would fail on a fresh machine.
"""
import os
import tempfile

os.environ["HTF_OFFLINE"] = "1"
os.environ.setdefault("TORCH_HOME", tempfile.mkdtemp(prefix="htf-test-torch-home-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
