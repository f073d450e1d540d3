"""A run stopped at an epoch end and resumed ends exactly where an uninterrupted run ends:
same weights, optimizer state, schedule and random state (not only the same step)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.train_helpers import write_shards
from train import checkpoint as ckpt
from train.__main__ import main

# 3 steps an epoch (12 samples, batch 4), 2 epochs; Adam with a cosine schedule and warm-up,
# augmentation on, so every part of the state moves.
SETTINGS = ["model.width=8", "model.image_size=56", "model.freeze_vision=false", "model.audio_frames=32",
            "data.batch_size=4", "data.workers=0", "data.shuffle_buffer=8", "data.epoch_samples=12",
            "train.epochs=2", "train.save_every_steps=100", "train.amp=none", "optim.schedule=cosine",
            "optim.warmup_steps=2", "augment.hflip=0.5", "augment.brightness=0.1",
            # No --config is the official recipe: from scratch, on our own shards.
            "model.vision_weights=null", "model.flow_weights=null", "data.expect_settings={}"]


def _train(shards: str, out: Path, *extra: str) -> None:
    argv = ["--train-shards", shards, "--output", str(out)]
    for item in SETTINGS + list(extra):
        argv += ["--set", item]
    assert main(argv) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict, dict]:
    root = tmp_path_factory.mktemp("resume_eq")
    shards = write_shards(root / "data", "train", [6, 6])
    _train(shards, root / "straight")
    _train(shards, root / "stopped", "train.max_steps=3")           # the end of epoch 0
    assert ckpt.load(ckpt.latest_path(root / "stopped"))["step"] == 3
    argv = ["--train-shards", shards, "--output", str(root / "stopped"), "--resume"]
    for item in SETTINGS:
        argv += ["--set", item]
    assert main(argv) == 0
    return ckpt.load(ckpt.latest_path(root / "straight")), ckpt.load(ckpt.latest_path(root / "stopped"))


def _assert_same(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_resumed_run_ends_at_the_same_step(runs):
    straight, resumed = runs
    assert straight["step"] == resumed["step"] == 6


def test_resumed_run_has_the_same_weights(runs):
    _assert_same(runs[0]["model"], runs[1]["model"], "model")


def test_resumed_run_has_the_same_optimizer_state(runs):
    _assert_same(runs[0]["optimizer"], runs[1]["optimizer"], "optimizer")


def test_resumed_run_has_the_same_schedule(runs):
    _assert_same(runs[0]["scheduler"], runs[1]["scheduler"], "scheduler")


def test_resumed_run_has_the_same_random_state(runs):
    _assert_same(runs[0]["rng"], runs[1]["rng"], "rng")
