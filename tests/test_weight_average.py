"""optim.ema_decay: validation and best.pt read a moving average of the weights, the
optimiser steps the raw ones, and a resumed run continues the average exactly."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.train_helpers import write_shards
from train import checkpoint as ckpt
from train.__main__ import main
from train.weight_average import WeightAverage, averaged_names


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1)
        self.norm = torch.nn.BatchNorm2d(2)
        self.register_buffer("gate", torch.zeros(()))    # a choice made on val, not learned


def _set_weights(net: _Net, value: float) -> None:
    with torch.no_grad():
        for tensor in (net.conv.weight, net.conv.bias, net.norm.weight, net.norm.running_mean):
            tensor.fill_(value)


def test_the_average_covers_parameters_and_batch_norm_statistics_only():
    names = averaged_names(_Net())
    assert {"conv.weight", "conv.bias", "norm.weight", "norm.bias", "norm.running_mean",
            "norm.running_var"} == set(names)


def test_the_average_weighs_only_the_weights_seen_never_the_zero_start():
    net, decay = _Net(), 0.5
    average = WeightAverage(net, decay)
    _set_weights(net, 4.0)
    average.update(net)
    assert torch.allclose(average.averaged()["conv.weight"], torch.full((2, 1, 1, 1), 4.0))
    _set_weights(net, 1.0)
    average.update(net)
    # (0.5 * 0.5 * 4 + 0.5 * 1) / (1 - 0.25): the later weights count twice the earlier.
    assert torch.allclose(average.averaged()["conv.weight"], torch.full((2, 1, 1, 1), 2.0))


def test_applied_puts_the_average_in_and_the_raw_weights_back():
    net = _Net()
    average = WeightAverage(net, 0.5)
    _set_weights(net, 4.0)
    average.update(net)
    _set_weights(net, 1.0)
    average.update(net)
    with average.applied(net):
        assert float(net.conv.weight.detach().flatten()[0]) == pytest.approx(2.0)
        net.gate.fill_(1.0)                       # chosen while the average is in
    assert float(net.conv.weight.detach().flatten()[0]) == 1.0 and float(net.norm.running_mean[0]) == 1.0
    assert float(net.gate) == 1.0                 # the choice stays


def test_a_decay_outside_0_to_1_is_refused_naming_the_key(tmp_path, capsys):
    shards = write_shards(tmp_path / "data", "train", [4])
    assert main(["--train-shards", shards, "--output", str(tmp_path / "run"), "--set", "optim.ema_decay=1.0"]) != 0
    err = capsys.readouterr().err
    assert "optim.ema_decay" in err and "Traceback" not in err


# A run as small as the trainer takes: 3 steps an epoch, 2 epochs, validation every epoch.
SETTINGS = ["model.width=8", "model.image_size=56", "model.freeze_vision=false", "model.audio_frames=32",
            "data.batch_size=4", "data.workers=0", "data.shuffle_buffer=8", "data.epoch_samples=12",
            "data.val_batch_size=8", "train.epochs=2", "train.save_every_steps=100", "train.amp=none",
            "optim.ema_decay=0.5", "model.vision_weights=null", "model.flow_weights=null",
            "data.expect_settings={}"]


def _train(shards: tuple[str, str], out: Path, *extra: str, resume: bool = False) -> None:
    argv = ["--train-shards", shards[0], "--val-shards", shards[1], "--output", str(out)]
    for item in SETTINGS + list(extra):
        argv += ["--set", item]
    assert main(argv + (["--resume"] if resume else [])) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ema")
    shards = (write_shards(root / "data", "train", [6, 6]), write_shards(root / "data", "val", [6], seed=1))
    _train(shards, root / "straight")
    _train(shards, root / "stopped", "train.max_steps=3")
    _train(shards, root / "stopped", resume=True)
    return {"straight": root / "straight", "resumed": root / "stopped"}


def _averaged(saved: dict) -> dict[str, torch.Tensor]:
    state = saved["weight_average"]
    correction = 1.0 - state["decay"] ** state["updates"]
    return {name: total / correction for name, total in state["sums"].items()}


def test_best_checkpoint_holds_the_averaged_weights_of_its_step(runs):
    best = ckpt.load(ckpt.best_path(runs["straight"]))
    assert best["weight_average"]["updates"] == best["step"]
    for name, value in _averaged(best).items():
        assert torch.allclose(best["model"][name].float(), value, atol=1e-6), name


def test_latest_checkpoint_holds_the_raw_weights_the_optimiser_steps(runs):
    latest = ckpt.load(ckpt.latest_path(runs["straight"]))
    differ = [name for name, value in _averaged(latest).items()
              if not torch.allclose(latest["model"][name].float(), value)]
    assert differ        # after 6 steps at decay 0.5 the average is not the last weights


def test_a_resumed_run_continues_the_average_exactly(runs):
    straight, resumed = (ckpt.load(ckpt.latest_path(runs[k])) for k in ("straight", "resumed"))
    assert straight["weight_average"]["updates"] == resumed["weight_average"]["updates"] == 6
    for name, total in straight["weight_average"]["sums"].items():
        assert torch.equal(total, resumed["weight_average"]["sums"][name]), name
