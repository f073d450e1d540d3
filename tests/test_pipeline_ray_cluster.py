"""The pipeline attaches to a Ray cluster started apart from it (``ray start --head``)."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipeline.__main__ import main as pipeline_main
from tests.pipeline_helpers import shard_bytes, world

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["frames.short_side=64", "frames.max_long_side=128", "pack.samples_per_shard=2", "audio.n_mels=32"]


# Token authentication, as a cluster should run: the head and the driver share the token.
RAY_AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pipeline_cmd(out: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline", "run", "--input", str(world()), "--output", str(out),
           "--no-progress", *extra]
    for item in SMALL:
        cmd += ["--set", item]
    return cmd


def wait_for_port(port: int, head: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}: {head.stdout.read()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"no Ray head on port {port} after {timeout_s} s")


@pytest.fixture
def ray_head():
    """A one-CPU Ray head on 127.0.0.1 in its own process group, which the fixture ends
    (not `ray stop`, which would stop every Ray instance of this user on the machine)."""
    pytest.importorskip("ray", reason="ray is not installed")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")     # short: Ray's socket paths have a length limit
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0", **RAY_AUTH)
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port", str(port),
         "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--include-dashboard", "false",
         "--disable-usage-stats", "--temp-dir", temp],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for_port(port, head)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)       # a blocking head may sit out SIGTERM: then kill it
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        try:
            os.killpg(head.pid, signal.SIGKILL)     # workers the head left in its group
        except ProcessLookupError:
            pass
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pipeline_with_ray_address_runs_on_the_cluster_and_writes_the_same_shards(tmp_path, ray_head):
    # Ray turns a loopback address into the machine's network address before connecting
    # (a cluster spans machines); this switch keeps the driver on loopback, where the head is.
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               **RAY_AUTH)
    local = subprocess.run(pipeline_cmd(tmp_path / "local"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert local.returncode == 0, local.stderr[-3000:]
    remote = subprocess.run(pipeline_cmd(tmp_path / "ray", "--ray-address", ray_head),
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert remote.returncode == 0, remote.stderr[-3000:]
    assert "Connected to Ray cluster" in remote.stderr + remote.stdout
    assert shard_bytes(tmp_path / "ray") == shard_bytes(tmp_path / "local")
    assert len(shard_bytes(tmp_path / "ray")) == 3


def test_ray_address_where_no_head_answers_is_one_error_line(tmp_path, capsys):
    code = pipeline_main(["run", "--input", str(tmp_path), "--output", str(tmp_path / "out"),
                          "--ray-address", f"127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: --ray-address 127.0.0.1:") and "ray start --head" in err[0]
