"""Two CPU processes under torchrun (Gloo) on shards with an odd sample count."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train_helpers import write_shards
from tests.test_train_trainer import TINY

ROOT = Path(__file__).resolve().parents[1]


def _torchrun(train: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "train", "--train-shards", train, "--output", str(out)]
    for item in TINY + ["data.workers=1", "train.dist_timeout_s=120"]:
        cmd += ["--set", item]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run(cmd + list(extra), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _rank_summaries(out: Path) -> list[dict]:
    return [json.loads((out / "logs" / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
def test_two_ranks_do_equal_steps_and_resume_continues_from_the_saved_step(tmp_path):
    # 3 shards (uneven over 2 ranks x 1 worker), 23 samples: 23 // (4 x 2) = 2 steps/epoch.
    train = write_shards(tmp_path / "shards", "train", [9, 7, 7])
    first = _torchrun(train, tmp_path / "run", "--set", "train.max_steps=3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert [s["steps_run"] for s in _rank_summaries(tmp_path / "run")] == [3, 3]
    assert torch.load(tmp_path / "run/checkpoints/latest.pt", weights_only=True)["step"] == 3

    second = _torchrun(train, tmp_path / "run", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout and "at step 3" in second.stdout
    summaries = _rank_summaries(tmp_path / "run")
    assert [s["steps_run"] for s in summaries] == [1, 1]          # step 4 of 2 epochs x 2 steps
    assert [s["final_step"] for s in summaries] == [4, 4]
    steps = [json.loads(line)["step"] for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


@pytest.mark.slow
def test_two_ranks_choose_the_motion_prior_on_all_val_clips_and_write_it_once(tmp_path):
    from tests.test_motion_prior import _shards

    train = _shards(tmp_path / "data", "train", True, 8)
    val = _shards(tmp_path / "data", "val", True, 9)       # odd: the ranks see 5 and 4 clips
    done = _torchrun(train, tmp_path / "run", "--val-shards", val, "--set", "model.flow=maxpool",
                     "--set", "model.image_size=56", "--set", "model.motion_prior_weights=[0.5, 2.0]")
    assert done.returncode == 0, done.stderr[-3000:]
    record = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
              if '"after_training"' in line]
    assert len(record) == 1 and record[0]["motion_prior_weight"] == 2.0 and record[0]["motion_prior_clips"] == 9
    best = torch.load(tmp_path / "run/checkpoints/best.pt", weights_only=True)
    assert float(best["model"]["motion_prior_weight"]) == 2.0 and best["best_metrics"]["motion_prior_weight"] == 2.0
