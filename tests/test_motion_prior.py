"""The motion prior: a map-level "sounds come from what moves", weighted on val after training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from htf.config import load_config
from htf.metrics import prediction_mask
from htf.model import HTFModel, load_model, motion_map, with_motion_prior
from htf.sample import encode_sample
from tests.train_helpers import synthetic_sample
from train import checkpoint as ckpt
from train.__main__ import main
from train.config import TrainConfig

TINY = ["model.width=8", "model.image_size=56", "model.freeze_vision=false", "model.audio_frames=32",
        "model.flow=maxpool", "model.vision_weights=null", "model.flow_weights=null",
        "data.batch_size=4", "data.workers=0", "data.shuffle_buffer=8", "data.val_batch_size=8",
        "data.expect_settings={}", "train.epochs=1", "train.amp=none"]
BOX = [0.0, 0.0, 3 / 7, 1.0]      # the left three columns of the 7x7 grid


def _flow_on(columns: slice, size: int = 56, speed: float = 3.0) -> torch.Tensor:
    """[1, 2, size, size] flow moving only in the given 7x7 grid columns."""
    flow = torch.zeros(1, 2, size, size)
    cell = size // 7
    flow[0, 0, :, columns.start * cell:columns.stop * cell] = speed
    return flow


def test_motion_map_is_one_where_things_move_and_zero_where_they_do_not():
    motion = motion_map(_flow_on(slice(0, 3)), floor=0.25)[0]
    assert torch.allclose(motion[:, :3], torch.ones(7, 3)) and torch.allclose(motion[:, 3:], torch.zeros(7, 4))


def test_motion_under_the_floor_gives_a_faint_prior_and_a_still_clip_none():
    assert float(motion_map(_flow_on(slice(0, 3), speed=0.05), floor=0.25).max()) == pytest.approx(0.2)
    assert float(motion_map(torch.zeros(1, 2, 56, 56), floor=0.25).abs().max()) == 0.0


def test_weight_zero_predicts_the_map_own_region():
    amap = torch.randn(1, 7, 7)
    fused = with_motion_prior(amap, motion_map(_flow_on(slice(4, 7)), 0.25), 0.0)
    assert np.array_equal(prediction_mask(fused[0].numpy())[1], prediction_mask(amap[0].numpy())[1])


def test_of_two_equal_peaks_the_prior_keeps_the_moving_one():
    amap = torch.zeros(1, 7, 7)
    amap[0, :, 0:2] = amap[0, :, 5:7] = 1.0           # two same-looking objects, left and right
    fused = with_motion_prior(amap, motion_map(_flow_on(slice(5, 7)), 0.25), 0.5)[0]
    assert float(fused[:, 5:7].min()) > float(fused[:, 0:2].max())


def _model(weights: str = "[0.5, 2.0]") -> HTFModel:
    cfg = load_config(TrainConfig, None, TINY + [f"model.motion_prior_weights={weights}"])
    return HTFModel(cfg.model).eval()


def test_the_prior_shapes_evaluation_maps_only_once_its_weight_is_set():
    model = _model()
    image, flow, spec = torch.randn(2, 3, 56, 56), _flow_on(slice(0, 3)).repeat(2, 1, 1, 1), torch.randn(2, 1, 64, 32)
    plain = model(image, flow, spec)["map"]
    model.motion_prior_weight.fill_(0.5)
    assert torch.allclose(model(image, flow, spec)["map"], with_motion_prior(plain, motion_map(flow, 0.25), 0.5))
    model.train()                                   # training never sees it
    with_weight = model(image, flow, spec)["map"]
    model.motion_prior_weight.zero_()
    assert torch.equal(with_weight, model(image, flow, spec)["map"])


def test_a_no_flow_model_has_no_prior_even_with_candidates():
    cfg = load_config(TrainConfig, None, TINY + ["model.flow=none", "model.motion_prior_weights=[1.0]"])
    assert HTFModel(cfg.model).motion_prior() == 0.0 and not hasattr(HTFModel(cfg.model), "motion_prior_weight")


def test_a_candidate_weight_of_zero_or_below_names_the_key():
    from htf.config import ConfigError
    with pytest.raises(ConfigError, match="motion_prior_weights"):
        load_config(TrainConfig, None, TINY + ["model.motion_prior_weights=[0.0, 1.0]"])


def _shards(folder: Path, prefix: str, moving_box: bool, n: int) -> str:
    """Random frames whose box is on the left; the flow moves there (or, misleading, on the right)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{prefix}-000000.tar"
    with wds.TarWriter(str(path)) as sink:
        for i in range(n):
            s = synthetic_sample(i, size=56, seed=3 if prefix == "val" else 0)
            s.flow = _flow_on(slice(0, 3) if moving_box else slice(4, 7))[0].numpy()
            s.meta.boxes = [BOX]
            sink.write(encode_sample(s))
    return str(path)


@pytest.mark.parametrize("moving_box,chosen", [(True, 2.0), (False, 0.0)])
def test_after_training_the_weight_is_chosen_on_val_and_written_into_best(tmp_path, moving_box, chosen):
    train = _shards(tmp_path / "data", "train", moving_box, 8)
    val = _shards(tmp_path / "data", "val", moving_box, 8)
    argv = ["--train-shards", train, "--val-shards", val, "--output", str(tmp_path / "run")]
    for item in TINY + ["model.motion_prior_weights=[0.5, 2.0]"]:
        argv += ["--set", item]
    assert main(argv) == 0
    record = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
              if '"after_training"' in line][-1]
    assert record["motion_prior_weight"] == chosen and set(record["motion_prior_scores"]) == {"0.0", "0.5", "2.0"}
    assert load_model(ckpt.best_path(tmp_path / "run")).motion_prior() == chosen
    assert float(ckpt.load(ckpt.latest_path(tmp_path / "run"))["model"]["motion_prior_weight"]) == 0.0
    assert f"motion prior weight {chosen:g}" in (tmp_path / "run/train.log").read_text()
    from eval.runner import evaluate
    metrics = evaluate(load_model(ckpt.best_path(tmp_path / "run")), val, tmp_path / "eval")
    assert f"motion prior weight {chosen:g}" in metrics["predictor"]          # the report says which map


def test_each_prior_weight_is_scored_on_the_very_maps_the_model_then_gives(tmp_path):
    """With the blur on, val weighs blur(map + w x prior), the map evaluation sees, not the
    blurred map plus an unblurred prior."""
    from htf.shards import read_samples
    from htf.inputs import eval_inputs
    from train.distributed import DistInfo
    from train.validation import box_score, scored_ciou
    from train.after_training import calibrate_motion_prior
    torch.manual_seed(0)
    val = _shards(tmp_path, "val", True, 16)
    cfg = load_config(TrainConfig, None, TINY + ["model.motion_prior_weights=[0.5, 2.0, 8.0]", "model.map_blur=1.5"])
    model = HTFModel(cfg.model).eval()
    model.map_blurred.fill_(1)
    record = calibrate_motion_prior(model, [val], cfg, DistInfo())
    samples = [s for _, s in read_samples([val], lambda *a: None)]
    inputs = [torch.stack(parts) for parts in zip(*(eval_inputs(s, model) for s in samples))]
    for weight, score in record["motion_prior_scores"].items():
        model.motion_prior_weight.fill_(float(weight))
        with torch.no_grad():
            maps = model(*inputs)["map"].numpy()
        given = box_score([scored_ciou(m, s.boxes, s.meta.box_format) for m, s in zip(maps, samples)], cfg)[0]
        assert score == pytest.approx(given, abs=1e-6), weight


def test_with_no_minimum_gain_the_prior_weight_is_the_first_best():
    from train.after_training import first_best, prior_from_scores
    for values in [(0.5, 0.6, 0.55), (0.5, 0.5, 0.4), (0.6, 0.5, 0.6), (0.5, 0.55, 0.55)]:
        scores = dict(zip((0.0, 0.5, 2.0), values))
        assert prior_from_scores(scores, 0.0) == first_best(scores)


def test_a_prior_weight_that_beats_the_map_alone_by_no_more_than_the_minimum_gain_is_not_taken():
    from train.after_training import prior_from_scores
    by_a_hair = {0.0: 0.5735, 0.25: 0.578, 0.5: 0.5795, 1.0: 0.567}
    assert prior_from_scores(by_a_hair, 0.01) == 0.0
    assert prior_from_scores(by_a_hair, 0.0) == 0.5
    clear_gain = {0.0: 0.5225, 0.25: 0.5425, 0.5: 0.55375, 1.0: 0.56}
    assert prior_from_scores(clear_gain, 0.01) == 1.0       # then the best weight, not the first to pass


def test_the_trainer_keeps_the_map_alone_when_the_prior_gains_less_than_the_minimum_on_val(tmp_path):
    train = _shards(tmp_path / "data", "train", True, 8)
    val = _shards(tmp_path / "data", "val", True, 8)
    argv = ["--train-shards", train, "--val-shards", val, "--output", str(tmp_path / "run")]
    for item in TINY + ["model.motion_prior_weights=[0.5, 2.0]", "train.motion_prior_min_gain=1.0"]:
        argv += ["--set", item]
    assert main(argv) == 0
    record = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
              if '"after_training"' in line][-1]
    assert record["motion_prior_scores"]["2.0"] > record["motion_prior_scores"]["0.0"]   # it would have helped
    assert record["motion_prior_weight"] == 0.0
    assert load_model(ckpt.best_path(tmp_path / "run")).motion_prior() == 0.0
    assert "must gain more than 1 over 0" in (tmp_path / "run/train.log").read_text()


def test_a_negative_minimum_prior_gain_names_the_key():
    from htf.config import ConfigError
    with pytest.raises(ConfigError, match="train.motion_prior_min_gain"):
        load_config(TrainConfig, None, ["train.motion_prior_min_gain=-0.1"])


def _train(tmp_path: Path, name: str, train: str, val: str, extra: list[str]) -> Path:
    argv = ["--train-shards", train, "--val-shards", val, "--output", str(tmp_path / name)]
    for item in TINY + ["model.flow_gate=true", "model.flow_fallback=twin", "model.flow_local=true"] + extra:
        argv += ["--set", item]
    assert main(argv) == 0
    return tmp_path / name


def test_the_prior_leaves_training_and_checkpoint_selection_unchanged(tmp_path):
    train = _shards(tmp_path / "data", "train", True, 8)
    val = _shards(tmp_path / "data", "val", True, 8)
    without = _train(tmp_path, "without", train, val, [])
    with_prior = _train(tmp_path, "with", train, val, ["model.motion_prior_weights=[1.0]"])
    records = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                if '"val"' in line] for run in (without, with_prior)]
    drop = ("time",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in records[0]] == \
           [{k: v for k, v in r.items() if k not in drop} for r in records[1]]
    plain = ckpt.load(ckpt.latest_path(without))["model"]
    prior = ckpt.load(ckpt.latest_path(with_prior))["model"]
    assert set(prior) - set(plain) == {"motion_prior_weight"}
    for name, weight in plain.items():
        assert torch.equal(prior[name], weight), name


def test_the_prior_keeps_the_map_in_its_own_range_and_weight_zero_is_the_map():
    amap = torch.rand(3, 7, 7) * 0.4 - 0.1
    motion = motion_map(torch.randn(3, 2, 56, 56), 0.25)
    fused = with_motion_prior(amap, motion, 2.0)
    assert (fused >= amap.amin(dim=(1, 2), keepdim=True) - 1e-6).all()
    assert (fused <= amap.amax(dim=(1, 2), keepdim=True) + 1e-6).all()
    assert torch.allclose(with_motion_prior(amap, motion, 0.0), amap, atol=1e-6)


def test_a_model_says_which_map_it_gives_gate_and_prior_included():
    model = _model("[1.0]")
    assert model.describe() == "HTFModel (flow: maxpool, motion prior weight 0)"
    cfg = load_config(TrainConfig, None, TINY + ["model.flow_gate=true", "model.flow_fallback=twin",
                                                 "model.motion_prior_weights=[1.0]"])
    gated = HTFModel(cfg.model)
    gated.motion_prior_weight.fill_(1.0)
    assert gated.describe() == ("HTFModel (flow: maxpool, flow gate closed (the no-flow twin's map), "
                                "motion prior weight 1)")
