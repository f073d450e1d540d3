"""Two torchrun agents on this machine form one two-node job (c10d rendezvous, Gloo)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_train_trainer import TINY
from tests.train_helpers import write_shards

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def tiny_overrides(*extra: str) -> list[str]:
    out: list[str] = []
    for item in TINY + ["data.workers=0", "train.dist_timeout_s=120", *extra]:
        out += ["--set", item]
    return out


def rank_summaries(out: Path, world: int) -> list[dict]:
    return [json.loads((out / "logs" / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_torchrun_agents_with_nnodes_2_train_as_one_job(tmp_path):
    train = write_shards(tmp_path / "shards", "train", [8, 8])
    endpoint = f"127.0.0.1:{free_port()}"
    agent = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
             "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "htf-two-nodes",
             "-m", "train", "--train-shards", train, "--output", str(tmp_path / "run"),
             *tiny_overrides("train.max_steps=2")]
    nodes = [subprocess.Popen(agent, cwd=ROOT, env=train_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = [node.communicate(timeout=280)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    summaries = rank_summaries(tmp_path / "run", 2)
    assert sorted(s["node"] for s in summaries) == [0, 1]     # one process on each agent
    assert [s["world_size"] for s in summaries] == [2, 2]
    assert [s["steps_run"] for s in summaries] == [2, 2]
