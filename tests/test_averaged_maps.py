"""Averaged maps after training: the flow net with its twin, the clip with its mirror image."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from htf.config import load_config
from htf.model import GATE_BOTH, HTFModel, load_model
from tests.test_motion_prior import TINY, _shards
from train import checkpoint as ckpt
from train.__main__ import main
from train.config import TrainConfig

TWIN = ["model.flow_gate=true", "model.flow_fallback=twin", "model.flow_local=true"]


def _model(extra: list[str]) -> HTFModel:
    torch.manual_seed(0)
    model = HTFModel(load_config(TrainConfig, None, TINY + extra).model).eval()
    for p in model.parameters():      # the flow branches start at zero: give them something to say
        p.data.add_(0.05 * torch.randn_like(p))
    return model


def _inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(batch, 3, 56, 56), torch.randn(batch, 2, 56, 56), torch.randn(batch, 1, 64, 32)


def _scaled(amap: torch.Tensor) -> torch.Tensor:
    low = amap.amin(dim=(1, 2), keepdim=True)
    return (amap - low) / (amap.amax(dim=(1, 2), keepdim=True) - low)


def _gate(model: HTFModel, value: float, x) -> torch.Tensor:
    model.flow_gate.fill_(value)
    return model(*x)["map"]


def test_the_gate_s_third_position_is_the_mean_of_the_flow_net_and_twin_maps():
    model, x = _model(TWIN + ["model.twin_average=true"]), _inputs()
    flow_net, twin = _scaled(_gate(model, 1, x)), _scaled(_gate(model, 0, x))
    assert torch.allclose(_scaled(_gate(model, GATE_BOTH, x)), _scaled((flow_net + twin) / 2), atol=1e-5)
    model.train()        # training has no third position: the flow net learns with its twin
    assert model.gate_is_both() and not torch.allclose(model(*x)["map"], _gate(model.eval(), GATE_BOTH, x))


def test_the_averaged_map_stays_within_the_range_of_the_gate_s_own_map():
    model, x = _model(TWIN + ["model.twin_average=true", "model.mirror_average=true"]), _inputs()
    own = _gate(model, 1, x)
    model.mirror_averaged.fill_(1)
    averaged = _gate(model, GATE_BOTH, x)
    assert (averaged.amin(dim=(1, 2)) >= own.amin(dim=(1, 2)) - 1e-6).all()    # cosines still
    assert (averaged.amax(dim=(1, 2)) <= own.amax(dim=(1, 2)) + 1e-6).all()


@pytest.mark.parametrize("extra", [TWIN + ["model.twin_average=true", "model.mirror_average=true"],
                                   ["model.flow=none", "model.mirror_average=true"]], ids=["htf", "noflow"])
def test_the_mirror_average_gives_the_mirrored_clip_the_mirrored_map(extra):
    model, (image, flow, spec) = _model(extra), _inputs()
    model.mirror_averaged.fill_(1)
    if hasattr(model, "flow_gate"):
        model.flow_gate.fill_(GATE_BOTH)
    mirrored_flow = torch.cat([-flow.flip(-1)[:, :1], flow.flip(-1)[:, 1:]], dim=1)   # x negated with the image
    straight = model(image, flow, spec)["map"]
    mirrored = model(image.flip(-1), mirrored_flow, spec)["map"]
    assert torch.allclose(_scaled(mirrored), _scaled(straight).flip(-1), atol=1e-5)
    model.mirror_averaged.zero_()
    assert not torch.allclose(_scaled(model(image.flip(-1), mirrored_flow, spec)["map"]),
                              _scaled(model(image, flow, spec)["map"]).flip(-1), atol=1e-3)


def test_maps_are_of_the_clip_as_it_is_until_the_mirror_average_is_switched_on_and_in_training():
    model, x = _model(TWIN + ["model.mirror_average=true"]), _inputs()
    model.flow_gate.fill_(1)
    own = model(*x)["map"]
    model.mirror_averaged.fill_(1)
    assert model.mirrors() and not torch.allclose(model(*x)["map"], own)
    model.train()
    training_map = model(*x)["map"]
    model.mirror_averaged.zero_()
    assert torch.equal(training_map, model(*x)["map"])


def test_a_twin_average_without_a_twin_does_nothing_so_ablations_of_the_preset_run():
    from train.after_training import after_training_choices
    for ablation in (["model.flow_gate=true", "model.flow_fallback=shared"], ["model.flow=none"]):
        model = HTFModel(load_config(TrainConfig, None, TINY + ablation + ["model.twin_average=true"]).model)
        assert not hasattr(model, "twin") and "flow_gate" not in after_training_choices(model)


def test_a_model_says_its_maps_are_averaged():
    model = _model(TWIN + ["model.twin_average=true", "model.mirror_average=true"])
    model.mirror_averaged.fill_(1)
    model.flow_gate.fill_(GATE_BOTH)
    assert model.describe() == ("HTFModel (flow: maxpool, flow gate both (the mean of the flow net's and the "
                                "twin's maps), averaged with the mirror image)")


def plain_and_after_training_runs(tmp_path, after_training: list[str]) -> dict[str, Path]:
    """Two tiny twin runs on the same shards, one with ``after_training`` keys; their
    validation records during training are checked to be the same."""
    train = _shards(tmp_path / "data", "train", True, 8)
    val = _shards(tmp_path / "data", "val", True, 8)
    runs = {}
    for name, extra in (("plain", []), ("after", after_training)):
        argv = ["--train-shards", train, "--val-shards", val, "--output", str(tmp_path / name)]
        for item in TINY + TWIN + extra:
            argv += ["--set", item]
        assert main(argv) == 0
        runs[name] = tmp_path / name
    val_records = [[{k: v for k, v in json.loads(line).items() if k != "time"}
                    for line in (run / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
                   for run in runs.values()]
    assert val_records[0] == val_records[1]
    return runs


def test_training_is_unchanged_and_best_alone_gets_the_averaged_maps(tmp_path):
    runs = plain_and_after_training_runs(tmp_path, ["model.twin_average=true", "model.mirror_average=true"])
    runs["averaged"] = runs.pop("after")
    plain, averaged = (ckpt.load(ckpt.latest_path(run))["model"] for run in runs.values())
    assert set(averaged) - set(plain) == {"mirror_averaged"} and float(averaged["mirror_averaged"]) == 0
    for name, weight in plain.items():
        assert torch.equal(averaged[name], weight), name
    best = load_model(ckpt.best_path(runs["averaged"]))
    record = [json.loads(line) for line in (runs["averaged"] / "metrics.jsonl").read_text().splitlines()
              if '"after_training"' in line][-1]
    assert best.mirrors() and record["mirror_averaged"] == 1 and set(record["flow_gate_scores"]) == {"both", "off", "on"}
    assert float(best.flow_gate) == record["flow_gate"]
    log = (runs["averaged"] / "train.log").read_text()
    assert "maps averaged with the mirror image" in log and "chosen on validation auc after training" in log


def test_with_no_margin_the_gate_is_the_first_best_of_both_closed_and_open():
    from train.after_training import first_best, gate_from_scores
    for values in [(0.5, 0.4, 0.6), (0.5, 0.6, 0.4), (0.5, 0.5, 0.5), (0.6, 0.4, 0.6), (0.4, 0.6, 0.6)]:
        scores = dict(zip((GATE_BOTH, 0.0, 1.0), values))
        assert gate_from_scores(scores, 0.0) == first_best(scores)


def test_both_is_kept_unless_closed_or_open_beats_it_by_more_than_the_margin():
    from train.after_training import gate_from_scores
    open_by_a_hair = {GATE_BOTH: 0.5825, 0.0: 0.52125, 1.0: 0.58375}
    assert gate_from_scores(open_by_a_hair, 0.01) == GATE_BOTH
    assert gate_from_scores(open_by_a_hair, 0.0) == 1.0
    collapsed_flow_net = {GATE_BOTH: 0.40, 0.0: 0.55, 1.0: 0.20}
    assert gate_from_scores(collapsed_flow_net, 0.01) == 0.0


def test_when_closed_and_open_both_beat_both_by_the_margin_a_tie_keeps_closed():
    from train.after_training import gate_from_scores
    assert gate_from_scores({GATE_BOTH: 0.40, 0.0: 0.50, 1.0: 0.50}, 0.02) == 0.0
    assert gate_from_scores({GATE_BOTH: 0.40, 0.0: 0.50, 1.0: 0.51}, 0.02) == 1.0


def test_a_negative_gate_both_margin_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="train.gate_both_margin must be >= 0"):
        load_config(TrainConfig, None, TINY + ["train.gate_both_margin=-0.01"])


def test_the_trainer_chooses_the_gate_with_the_configured_margin(tmp_path, monkeypatch):
    from train import after_training
    margins = []
    choose = after_training.gate_from_scores
    monkeypatch.setattr(after_training, "gate_from_scores",
                        lambda scores, margin, gap: margins.append(margin) or choose(scores, margin, gap))
    train = _shards(tmp_path / "data", "train", True, 8)
    val = _shards(tmp_path / "data", "val", True, 8)
    argv = ["--train-shards", train, "--val-shards", val, "--output", str(tmp_path / "run")]
    for item in TINY + TWIN + ["model.twin_average=true", "train.gate_both_margin=1.0"]:
        argv += ["--set", item]
    assert main(argv) == 0
    record = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"after_training"' in line][-1]
    assert margins == [1.0]            # AUC cannot beat both by more than 1: both is kept
    assert record["flow_gate"] == GATE_BOTH and set(record["flow_gate_scores"]) == {"both", "off", "on"}
    assert float(load_model(ckpt.best_path(tmp_path / "run")).flow_gate) == GATE_BOTH


def test_with_a_peer_gap_closed_takes_the_gate_on_any_lead_once_open_trails_it_by_more():
    from train.after_training import gate_from_scores
    flow_net_behind = {GATE_BOTH: 0.5955, 0.0: 0.6080, 1.0: 0.5500}     # closed +0.0125, open -0.058
    assert gate_from_scores(flow_net_behind, 0.02) == GATE_BOTH
    assert gate_from_scores(flow_net_behind, 0.02, peer_gap=0.03) == 0.0
    assert gate_from_scores(flow_net_behind, 0.02, peer_gap=0.1) == GATE_BOTH


def test_a_peer_gap_leaves_both_sheltered_against_open():
    from train.after_training import gate_from_scores
    open_by_a_hair = {GATE_BOTH: 0.5825, 0.0: 0.52125, 1.0: 0.58375}
    assert gate_from_scores(open_by_a_hair, 0.02, peer_gap=0.0) == GATE_BOTH
    close_peers = {GATE_BOTH: 0.60, 0.0: 0.61, 1.0: 0.605}              # open within the gap of closed
    assert gate_from_scores(close_peers, 0.02, peer_gap=0.01) == GATE_BOTH


def test_a_negative_peer_gap_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="train.gate_both_peer_gap must be >= 0"):
        load_config(TrainConfig, None, TINY + ["train.gate_both_peer_gap=-0.01"])


@pytest.mark.parametrize("position, gate", [("closed", 0.0), ("open", 1.0), ("both", GATE_BOTH)])
def test_gate_position_sets_the_gate_whatever_val_says_and_still_records_its_scores(tmp_path, position, gate):
    train = _shards(tmp_path / "data", "train", True, 8)
    val = _shards(tmp_path / "data", "val", True, 8)
    argv = ["--train-shards", train, "--val-shards", val, "--output", str(tmp_path / "run")]
    for item in TINY + TWIN + ["model.twin_average=true", f"train.gate_position={position}"]:
        argv += ["--set", item]
    assert main(argv) == 0
    record = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"after_training"' in line][-1]
    assert record["flow_gate"] == gate and set(record["flow_gate_scores"]) == {"both", "off", "on"}
    assert float(load_model(ckpt.best_path(tmp_path / "run")).flow_gate) == gate
    assert f"set by train.gate_position={position}" in (tmp_path / "run" / "train.log").read_text()
