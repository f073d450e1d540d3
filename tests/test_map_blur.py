"""The map blur after training (model.map_blur) and on baselines (eval's baseline.map_blur)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eval.baselines import Baseline
from eval.config import BaselineConfig
from htf.config import load_config
from htf.model import load_model, smooth_maps
from tests.test_averaged_maps import TWIN, _inputs, _model, plain_and_after_training_runs
from tests.test_motion_prior import TINY
from train import checkpoint as ckpt
from train.config import TrainConfig


def test_a_blur_of_sigma_0_gives_the_maps_back():
    maps = torch.rand(2, 7, 7)
    assert smooth_maps(maps, 0.0) is maps


def test_a_constant_map_stays_constant_up_to_its_edges():
    maps = torch.full((1, 7, 7), 0.3)
    assert torch.allclose(smooth_maps(maps, 1.5), maps)


def test_a_single_peak_spreads_symmetrically_and_keeps_its_place_and_mass():
    peak = torch.zeros(1, 7, 7)
    peak[0, 3, 3] = 1.0
    blurred = smooth_maps(peak, 1.0)[0]
    assert int(blurred.argmax()) == 3 * 7 + 3
    assert torch.allclose(blurred, blurred.flip(0)) and torch.allclose(blurred, blurred.T)
    assert blurred[3, 3] < 1 and blurred[3, 1] > 0 and blurred[3, 0] == 0   # two cells' reach, no more
    assert torch.isclose(blurred.sum(), torch.tensor(1.0))


def test_the_blur_gathers_the_top_half_that_ciou_keeps_around_the_object():
    from htf.metrics import prediction_mask
    rng = np.random.default_rng(0)
    noisy = rng.uniform(0.0, 0.5, (7, 7))     # a small net's map: right on average, noisy per cell
    noisy[1:4, 1:4] = 1.0                     # one object, top left ...
    noisy[2, 2] = 0.0                         # ... with a cell the net missed
    noisy[5, 5] = noisy[1, 5] = 0.9           # and two lone wrong cells
    box = np.zeros((224, 224), bool)
    box[32:128, 32:128] = True
    ious = []
    for amap in (noisy, smooth_maps(torch.from_numpy(noisy)[None], 1.5)[0].numpy()):
        _, mask = prediction_mask(amap)
        ious.append((mask & box).sum() / (mask | box).sum())
    assert ious[1] > ious[0] + 0.02        # the missed cell is back, the lone cells are not kept


@pytest.mark.parametrize("extra", [TWIN + ["model.mirror_average=true"], ["model.flow=none"]], ids=["htf", "noflow"])
def test_a_model_blurs_its_map_only_once_switched_on_and_never_in_training(extra):
    model, x = _model(extra + ["model.map_blur=1.5"]), _inputs()
    if hasattr(model, "flow_gate"):
        model.flow_gate.fill_(1)
    own = model(*x)["map"]
    model.map_blurred.fill_(1)
    assert model.blurs() and torch.allclose(model(*x)["map"], smooth_maps(own, 1.5), atol=1e-6)
    model.train()
    training_map = model(*x)["map"]
    model.map_blurred.zero_()
    assert torch.equal(training_map, model(*x)["map"])


def test_the_twin_leaves_the_blur_to_the_model_that_holds_it():
    model = _model(TWIN + ["model.map_blur=1.5"])
    assert model.cfg.map_blur == 1.5 and model.twin.cfg.map_blur == 0 and not hasattr(model.twin, "map_blurred")


def test_a_model_says_its_maps_are_blurred():
    model = _model(["model.flow=none", "model.map_blur=1.5"])
    model.map_blurred.fill_(1)
    assert model.describe() == "HTFModel (flow: none, blurred by 1.5 cells)"


def test_a_negative_blur_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="model.map_blur=-1: model: map_blur must be >= 0"):
        load_config(TrainConfig, None, TINY + ["model.map_blur=-1"])


def test_training_is_unchanged_and_best_alone_gets_the_blur(tmp_path):
    runs = plain_and_after_training_runs(tmp_path, ["model.map_blur=1.5"])
    runs["blurred"] = runs.pop("after")
    plain, blurred = (ckpt.load(ckpt.latest_path(run))["model"] for run in runs.values())
    assert set(blurred) - set(plain) == {"map_blurred"} and float(blurred["map_blurred"]) == 0
    best = load_model(ckpt.best_path(runs["blurred"]))
    record = [json.loads(line) for line in (runs["blurred"] / "metrics.jsonl").read_text().splitlines()
              if '"after_training"' in line][-1]
    assert best.blurs() and record["map_blur"] == 1.5
    assert "maps blurred by 1.5 cells" in (runs["blurred"] / "train.log").read_text()


def _sample():
    from htf.sample import ClipSample
    flow = np.random.default_rng(0).normal(size=(2, 64, 64)).astype(np.float32)
    return ClipSample(id="clip", frame=np.zeros((64, 64, 3), np.uint8), flow=flow, spec=np.zeros((64, 300), np.float32))


def test_a_baseline_blurs_its_map_as_a_model_does():
    sample = _sample()
    plain = Baseline("flow", BaselineConfig()).predict([sample])[0]
    blurred = Baseline("flow", BaselineConfig(map_blur=1.5)).predict([sample])[0]
    assert np.allclose(blurred, smooth_maps(torch.from_numpy(plain)[None], 1.5)[0].numpy(), atol=1e-6)


def test_a_baseline_blur_needs_the_map_grid():
    with pytest.raises(ValueError, match="flow_resolution 'full' makes no grid"):
        BaselineConfig(map_blur=1.5, flow_resolution="full").validate()
