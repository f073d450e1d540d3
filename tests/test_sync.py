"""The sync map: motion over time against the sound, from the pipeline's motion series to the
evaluator's ``sync`` baseline, HTF's sync prior and the loss's sync guide."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from eval.baselines import Baseline
from eval.config import BaselineConfig
from htf.config import load_config
from htf.inputs import eval_inputs
from htf.model import HTFModel
from htf.sample import decode_sample, encode_sample
from htf.sync import sync_map, sync_prior, smooth
from pipeline.config import PipelineConfig
from pipeline.process import process_clip
from tests.train_helpers import synthetic_sample
from train.config import TrainConfig

FPS, RATE, SIDE = 25, 16000, 112
SERIES = load_config(PipelineConfig, None, ["motion.series=true"])


def _series(steps: int = 99) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    loudness = 0.5 + 0.5 * np.sin(np.linspace(0, 6 * np.pi, steps)) ** 2
    motion = np.full((steps, 7, 7), 0.1) + 0.01 * rng.random((steps, 7, 7))
    motion[:, 2, 3] += 2.0 * loudness                                  # moves with the sound
    motion[:, 5, 1] += 2.0 * rng.random(steps)                         # moves as much, on its own
    motion[:, 0, 6] += 2.0                                             # moves steadily
    motion[:, 6, 0] += 2.0 * (1.0 - loudness)                          # moves when the sound pauses
    return motion.astype(np.float32), loudness.astype(np.float32)


def test_the_place_that_moves_with_the_sound_tops_the_sync_map():
    amap = sync_map(*_series(), smooth_frames=6)
    assert np.unravel_index(amap.argmax(), amap.shape) == (2, 3)
    assert amap[2, 3] > 0.9 and abs(amap[5, 1]) < 0.5


def test_more_motion_alone_does_not_make_a_place_win():
    motion, loudness = _series()
    assert np.unravel_index(motion.mean(axis=0).argmax(), (7, 7)) == (0, 6)   # the steady mover moves most
    assert abs(sync_map(motion, loudness, 6)[0, 6]) < 0.5                     # but not with the sound


def test_the_prior_counts_motion_against_the_sound_as_no_evidence():
    motion, loudness = _series()
    assert sync_map(motion, loudness, 6)[6, 0] < -0.9
    prior = sync_prior(motion, loudness, 6)
    assert prior[6, 0] == 0.0 and prior.min() == 0.0 and prior[2, 3] > 0.9


def test_too_short_a_series_gives_an_empty_map():
    motion, loudness = _series(2)
    assert not sync_map(motion, loudness, 6).any()


def test_smoothing_keeps_the_length_and_a_constant_series_constant_up_to_the_edges():
    smoothed = smooth(np.full((10, 2, 2), 3.0), 4)
    assert smoothed.shape == (10, 2, 2) and np.allclose(smoothed, 3.0)


def _flicker_clip(path: Path, seconds: float = 4.0) -> Path:
    """A clip whose top-left quarter brightens with each tone burst and whose bottom-right
    quarter flickers at its own steady pace, tone or not."""
    frames = int(seconds * FPS)
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = (np.sin(2 * np.pi * 0.7 * t) > 0.2).astype(np.float32)
    tone = (0.4 * envelope * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=RATE)
        audio.layout = "mono"
        for i in range(frames):
            image = np.full((64, 64, 3), 60, np.uint8)
            loud = envelope[int(i / FPS * RATE)]
            image[:32, :32] = 60 + (150 if loud and i % 2 else 0)    # shakes while the tone sounds
            image[32:, 32:] = 60 + (150 if i % 3 == 0 else 0)        # shakes all the time
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        samples = av.AudioFrame.from_ndarray(tone[None, :], format="fltp", layout="mono")
        samples.sample_rate = RATE
        container.mux(audio.encode(samples))
        container.mux(audio.encode())
    return path


def test_the_pipeline_stores_motion_series_whose_sync_map_finds_the_place_that_moves_with_the_sound(tmp_path):
    sample = process_clip(str(_flicker_clip(tmp_path / "flicker.mp4")), SERIES)
    assert sample.motion.shape == (74, 7, 7) and sample.loudness.shape == (74,)   # 3 s at 25 fps: 75 frames
    amap = sync_map(sample.motion, sample.loudness, 12)
    assert amap[:3, :3].mean() > 0.5                            # the top-left quarter
    assert amap[:3, :3].mean() > amap[4:, 4:].mean() + 0.4      # the steady flicker moves as much, out of time
    assert sample.meta.pipeline["motion"] == {"series": True, "grid": 7, "side": SIDE}


def test_motion_series_survive_the_shard_round_trip(tmp_path):
    sample = process_clip(str(_flicker_clip(tmp_path / "flicker.mp4")), SERIES)
    back = decode_sample(encode_sample(sample))
    assert np.allclose(back.motion, sample.motion, rtol=1e-3, atol=1e-3)
    assert np.allclose(back.loudness, sample.loudness, rtol=1e-3, atol=1e-5)


def test_motion_series_are_off_unless_asked_for(tmp_path):
    sample = process_clip(str(_flicker_clip(tmp_path / "flicker.mp4")), PipelineConfig())
    assert sample.motion is None and "motion.npy" not in encode_sample(sample)


@pytest.mark.parametrize("prefix,stored", [("train", False), ("val", True), ("test", True)])
def test_motion_series_eval_stores_them_on_evaluation_splits_only(tmp_path, prefix, stored):
    cfg = load_config(PipelineConfig, None, ["motion.series=eval", f"pack.prefix={prefix}"])
    sample = process_clip(str(_flicker_clip(tmp_path / "flicker.mp4")), cfg)
    assert (sample.motion is not None) == stored and (sample.loudness is not None) == stored
    assert sample.meta.pipeline["motion"]["series"] == "eval"      # one setting across the splits


def test_motion_series_takes_true_false_or_eval_and_names_the_key_otherwise():
    from htf.config import ConfigError

    with pytest.raises(ConfigError, match="motion.series"):
        load_config(PipelineConfig, None, ["motion.series=train"])


def test_a_sample_with_motion_but_no_loudness_is_refused_by_name():
    raw = encode_sample(_with_series(synthetic_sample(0)))
    del raw["loudness.npy"]
    with pytest.raises(ValueError, match=f"sample '{raw['__key__']}'.*loudness.npy"):
        decode_sample(raw)


def _with_series(sample, moving_cell: tuple[int, int] = (2, 3)):
    motion, loudness = _series()
    motion[:, 2, 3] = motion[:, moving_cell[0], moving_cell[1]]
    motion[:, moving_cell[0], moving_cell[1]] = 0.1 + 2.0 * loudness
    sample.motion, sample.loudness = motion, loudness
    return sample


def test_the_sync_baseline_maps_each_clip_by_its_series():
    sample = _with_series(synthetic_sample(0))
    amap = Baseline("sync", BaselineConfig(sync_smooth_frames=6)).predict([sample])[0]
    assert np.array_equal(amap, sync_prior(sample.motion, sample.loudness, 6))


def test_the_sync_baseline_counts_motion_against_the_sound_as_none():
    sample = _with_series(synthetic_sample(0))
    sample.motion[:, 6, 0] = 3.0 - 2.0 * sample.loudness        # moves exactly when the sound is quiet
    amap = Baseline("sync", BaselineConfig(sync_smooth_frames=6)).predict([sample])[0]
    assert sync_map(sample.motion, sample.loudness, 6)[6, 0] < -0.9 and amap[6, 0] == 0 and amap.min() == 0


def test_the_sync_baseline_refuses_shards_without_motion_and_says_how_to_make_them():
    with pytest.raises(ValueError, match="clip 'clip0_00000' has no motion.npy.*--set motion.series=eval"):
        Baseline("sync", BaselineConfig()).predict([synthetic_sample(0)])


TINY = ["model.width=8", "model.image_size=56", "model.freeze_vision=false", "model.audio_frames=32",
        "model.flow=maxpool", "model.vision_weights=null", "model.flow_weights=null"]


def _sync_model(weight: float) -> HTFModel:
    cfg = load_config(TrainConfig, None, TINY + ["model.motion_prior=sync", "model.motion_prior_weights=[1.0]"])
    model = HTFModel(cfg.model).eval()
    model.motion_prior_weight.fill_(weight)
    return model


def test_a_sync_prior_model_takes_the_sync_map_as_a_fourth_input():
    model = _sync_model(1.0)
    inputs = eval_inputs(_with_series(synthetic_sample(0), (4, 5)), model)
    assert len(inputs) == 4 and inputs[3].shape == (7, 7)
    assert np.unravel_index(int(inputs[3].argmax()), (7, 7)) == (4, 5)


def test_the_sync_prior_lifts_the_place_that_moves_with_the_sound():
    model = _sync_model(2.0)
    image, flow, spec, sync = (t[None] for t in eval_inputs(_with_series(synthetic_sample(0), (4, 5)), model))
    with torch.no_grad():
        plain = model(image, flow, spec, sync * 0)["map"][0]
        lifted = model(image, flow, spec, sync)["map"][0]
    assert float(lifted[4, 5] - lifted.mean()) > float(plain[4, 5] - plain.mean())


def test_a_sync_prior_model_without_the_sync_map_says_what_it_needs():
    model = _sync_model(1.0)
    image, flow, spec = (t[None] for t in eval_inputs(_with_series(synthetic_sample(0)), model)[:3])
    with pytest.raises(ValueError, match="no sync map was given"):
        model(image, flow, spec)


def test_a_sync_prior_model_refuses_a_sample_without_motion_by_clip():
    with pytest.raises(ValueError, match="clip 'clip0_00000' has no motion.npy.*--set motion.series=eval"):
        eval_inputs(synthetic_sample(0), _sync_model(1.0))


def test_a_flow_prior_model_keeps_three_inputs():
    cfg = load_config(TrainConfig, None, TINY + ["model.motion_prior_weights=[1.0]"])
    assert len(eval_inputs(_with_series(synthetic_sample(0)), HTFModel(cfg.model).eval())) == 3


def _sync_shards(folder: Path, prefix: str, in_time_on_the_box: bool, n: int, series: bool | str = True) -> str:
    """Random frames whose box is the left three columns of the grid; what moves with the
    sound is the box (or, misleading, the three columns on the right). ``series`` as the
    pipeline's motion.series: 'eval' leaves the train split without series."""
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{prefix}-000000.tar"
    with wds.TarWriter(str(path)) as sink:
        for i in range(n):
            s = _with_series(synthetic_sample(i, size=56, seed=3 if prefix == "val" else 0))
            s.motion[:, :, 0:3] = s.motion[:, :, 4:7] = 0.1
            columns = slice(0, 3) if in_time_on_the_box else slice(4, 7)
            s.motion[:, :, columns] += 2.0 * s.loudness[:, None, None]
            s.meta.boxes = [[[0.0, 0.0, 3 / 7, 1.0]]]
            s.meta.pipeline = {**s.meta.pipeline, "motion": {"series": series, "grid": 7, "side": 112}}
            if series == "eval" and prefix == "train":
                s.motion = s.loudness = None
            sink.write(encode_sample(s))
    return str(path)


SYNC_TRAINING = TINY + ["data.batch_size=4", "data.workers=0", "data.shuffle_buffer=8", "data.val_batch_size=8",
                        "data.expect_settings={}", "train.epochs=1", "train.amp=none", "model.motion_prior=sync",
                        "model.sync_smooth_frames=6", "model.motion_prior_weights=[0.5, 2.0]"]


def _train(train: str, val: str, output: Path, items: list[str]) -> int:
    """``python -m train`` on these shards with these ``--set`` items; its exit status."""
    from train.__main__ import main

    argv = ["--train-shards", train, "--val-shards", val, "--output", str(output)]
    for item in items:
        argv += ["--set", item]
    return main(argv)


def test_training_a_sync_prior_model_on_shards_without_motion_series_stops_before_the_first_step(tmp_path, capsys):
    train = _sync_shards(tmp_path / "data", "train", True, 4, series=False)
    val = _sync_shards(tmp_path / "data", "val", True, 4, series=False)
    assert _train(train, val, tmp_path / "run", SYNC_TRAINING) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: model.motion_prior: sync") and "--set motion.series=eval" in err[-1]
    assert not (tmp_path / "run" / "checkpoints" / "latest.pt").exists()


def test_a_sync_prior_model_trains_on_shards_with_motion_series_on_the_evaluation_splits_only(tmp_path):
    from htf.model import load_model
    from train import checkpoint as ckpt

    train = _sync_shards(tmp_path / "data", "train", True, 8, series="eval")
    val = _sync_shards(tmp_path / "data", "val", True, 8, series="eval")
    assert _train(train, val, tmp_path / "run", SYNC_TRAINING) == 0
    assert load_model(ckpt.best_path(tmp_path / "run")).motion_prior() == 2.0    # chosen on val's series


def _trained_on_sync_shards(tmp_path: Path, train_in_time: bool, val_in_time: bool,
                            items: list[str]) -> tuple[HTFModel, str]:
    """(best.pt of ``python -m train`` into tmp_path/run on 8 train and 8 val clips, the val shard)."""
    from htf.model import load_model
    from train import checkpoint as ckpt

    train = _sync_shards(tmp_path / "data", "train", train_in_time, 8)
    val = _sync_shards(tmp_path / "data", "val", val_in_time, 8)
    assert _train(train, val, tmp_path / "run", items) == 0
    return load_model(ckpt.best_path(tmp_path / "run")), val


@pytest.mark.parametrize("in_time_on_the_box,chosen", [(True, 2.0), (False, 0.0)])
def test_after_training_the_sync_prior_weight_is_chosen_on_val_and_evaluation_uses_it(
        tmp_path, in_time_on_the_box, chosen):
    from eval.runner import evaluate

    model, val = _trained_on_sync_shards(tmp_path, in_time_on_the_box, in_time_on_the_box, SYNC_TRAINING)
    assert model.motion_prior() == chosen
    assert f"sync prior weight {chosen:g}" in (tmp_path / "run/train.log").read_text()
    metrics = evaluate(model, val, tmp_path / "eval")
    assert f"sync prior weight {chosen:g}" in metrics["predictor"]
    if chosen:       # localising any video decodes its motion series for such a model
        from apps.localize import localize
        result = localize(model, str(_flicker_clip(tmp_path / "flicker.mp4")), tmp_path / "where", every=50)
        assert result["pipeline"]["motion"]["series"] and len(result["analysed_frames"]) == 2


def test_a_flow_free_model_adds_the_sync_prior_only_when_asked_to():
    plain = load_config(TrainConfig, None, TINY + ["model.flow=none", "model.motion_prior=sync",
                                                 "model.motion_prior_weights=[1.0]"]).model
    asked = dataclasses.replace(plain, sync_prior_without_flow=True)
    assert not plain.uses_sync() and not hasattr(HTFModel(plain), "motion_prior_weight")
    assert asked.uses_sync() and hasattr(HTFModel(asked), "motion_prior_weight")
    assert len(eval_inputs(_with_series(synthetic_sample(0)), HTFModel(asked).eval())) == 4


def test_a_twin_holds_no_prior_of_its_own_whatever_its_holder_adds():
    cfg = load_config(TrainConfig, None, TINY + ["model.flow_gate=true", "model.flow_fallback=twin",
                                                 "model.motion_prior=sync", "model.motion_prior_weights=[1.0]",
                                                 "model.sync_prior_without_flow=true"]).model
    assert "twin.motion_prior_weight" not in HTFModel(cfg).state_dict()


def test_the_sync_prior_without_flow_needs_the_sync_prior_and_names_the_key():
    from htf.config import ConfigError
    with pytest.raises(ConfigError, match="sync_prior_without_flow"):
        load_config(TrainConfig, None, TINY + ["model.flow=none", "model.motion_prior_weights=[1.0]",
                                               "model.sync_prior_without_flow=true"])


def test_a_no_flow_run_read_again_with_the_sync_prior_chooses_its_weight_on_val(tmp_path):
    from eval.runner import evaluate
    from htf.model import load_model
    from train import checkpoint as ckpt
    from train.after_training import choose_after_training_again

    train = _sync_shards(tmp_path / "data", "train", True, 8)
    val = _sync_shards(tmp_path / "data", "val", True, 8)
    assert _train(train, val, tmp_path / "run", SYNC_TRAINING + ["model.flow=none"]) == 0
    assert load_model(ckpt.best_path(tmp_path / "run")).motion_prior() == 0.0     # the plain no-flow run
    chosen = choose_after_training_again(ckpt.best_path(tmp_path / "run"), tmp_path / "with_sync.pt", [val],
                                         {"model.sync_prior_without_flow": True})
    model = load_model(tmp_path / "with_sync.pt")
    assert chosen["motion_prior_weight"] == model.motion_prior() == 2.0
    assert "flow: none" in evaluate(model, val, tmp_path / "eval")["predictor"]
    before = ckpt.load(ckpt.best_path(tmp_path / "run"))["model"]
    after = ckpt.load(tmp_path / "with_sync.pt")["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)                  # the same network


def test_reading_a_run_again_refuses_a_key_that_acts_in_training(tmp_path):
    from train.after_training import choose_after_training_again
    with pytest.raises(ValueError, match="model.width act"):
        choose_after_training_again(tmp_path / "best.pt", tmp_path / "new.pt", [], {"model.width": 32})


def test_in_the_extended_protocol_a_frame_is_synced_against_the_paired_sound():
    """A non-sounding pair correlates the frame's motion with the other clip's loudness: the
    sync baseline is then less confident than with the clip's own sound."""
    import csv
    import tempfile

    from eval.config import EvalConfig
    from eval.runner import evaluate
    from tests.eval_shards import make_clip, write_shard

    clips = []
    for i in range(6):
        clip = make_clip(f"clip{i:03d}", [0.0, 0.0, 0.5, 0.5], seed=i)
        rng = np.random.default_rng(i)
        clip.loudness = smooth(rng.random(74), 8).astype(np.float32)     # each clip its own sound
        clip.motion = np.full((74, 7, 7), 0.1, np.float32)
        clip.motion[:, :3, :3] += 2.0 * clip.loudness[:, None, None]
        clips.append(clip)
    with tempfile.TemporaryDirectory() as folder:
        shards = write_shard(Path(folder) / "test-000000.tar", clips)
        cfg = EvalConfig()
        cfg.extended.enabled = True
        metrics = evaluate("sync", str(shards), Path(folder) / "out", cfg)
        rows = list(csv.DictReader(open(Path(folder) / "out" / "per_clip.csv")))
    own = [float(r["confidence"]) for r in rows if r["sounding"] == "1"]
    paired = [float(r["confidence"]) for r in rows if r["sounding"] == "0"]
    assert metrics["ciou_at_0.5"] == 1.0 and len(paired) == 6
    assert min(own) > max(paired)


# ----------------------------------------------------- the sync guide: a hint for the loss in training

def _loss_features(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(4, 16, 7, 7, generator=g), dim=1)
    aud = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=1)
    return img, aud


def _guided_loss_config(weight: float):
    from htf.model_config import LossConfig
    return LossConfig(sync_guide=weight, negatives="local")


def test_a_zero_sync_guide_gives_the_official_loss():
    from htf.loss import localization_loss

    img, aud = _loss_features()
    guide = torch.rand(4, 7, 7)
    plain, _ = localization_loss(img, aud, _guided_loss_config(0.0))
    unused, _ = localization_loss(img, aud, _guided_loss_config(0.0), guide=guide)
    assert torch.equal(plain, unused)


def test_the_sync_guide_points_the_loss_at_the_place_that_moves_with_the_sound():
    from htf.loss import localization_loss

    img, aud = _loss_features()
    guide = torch.zeros(4, 7, 7)
    guide[:, 4, 5] = 1.0

    def push_towards_the_sound(cfg, given):
        leaf = img.clone().requires_grad_(True)
        localization_loss(leaf, aud, cfg, guide=given)[0].backward()
        return -torch.einsum("nchw,nc->nhw", leaf.grad, aud)[0]      # how descent raises clip 0's map

    plain = push_towards_the_sound(_guided_loss_config(0.0), None)
    guided = push_towards_the_sound(_guided_loss_config(1.0), guide)
    assert np.unravel_index(int(guided.argmax()), (7, 7)) == (4, 5)
    assert float(guided[4, 5]) > 10 * abs(float(plain[4, 5]))


@pytest.mark.parametrize("item,message", [
    ("model.loss.sync_guide=-0.5", "sync_guide must be >= 0"),
    ("model.loss.kind=ezvsl", "kind 'ezvsl' has none"),
])
def test_the_sync_guide_refuses_a_negative_weight_and_a_loss_without_a_trimap(item, message):
    from htf.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, None, TINY + ["model.loss.sync_guide=0.5", item])


def _guided_arrays(sample, crop_fraction: float, flip: bool):
    from train.config import AugmentConfig
    from train.transforms import train_arrays

    cfg = load_config(TrainConfig, None, TINY + ["model.loss.sync_guide=0.5", "model.sync_smooth_frames=6"])
    aug = AugmentConfig(crop_fraction=[crop_fraction, crop_fraction], hflip=1.0 if flip else 0.0)
    return train_arrays(sample, cfg.model, aug, np.random.default_rng(0))


def test_the_guide_is_cut_and_flipped_as_the_image_is():
    sample = _with_series(synthetic_sample(0, size=56), (3, 1))
    *_, whole = _guided_arrays(sample, 1.0, flip=False)
    *_, mirrored = _guided_arrays(sample, 1.0, flip=True)
    assert whole.shape == (7, 7) and np.unravel_index(int(whole.argmax()), (7, 7)) == (3, 1)
    assert np.unravel_index(int(mirrored.argmax()), (7, 7)) == (3, 5)


def test_a_training_clip_without_motion_series_is_named_when_the_loss_needs_its_guide():
    with pytest.raises(ValueError, match="clip 'clip0_00000' has no motion series.*--set motion.series=true"):
        _guided_arrays(synthetic_sample(0, size=56), 1.0, flip=False)


GUIDED_TRAINING = TINY + ["data.batch_size=4", "data.workers=0", "data.shuffle_buffer=8", "data.val_batch_size=8",
                          "data.expect_settings={}", "train.epochs=1", "train.amp=none",
                          "model.sync_smooth_frames=6", "model.loss.sync_guide=0.5"]


def test_training_with_the_sync_guide_on_shards_without_training_series_stops_before_the_first_step(tmp_path, capsys):
    train = _sync_shards(tmp_path / "data", "train", True, 4, series="eval")
    val = _sync_shards(tmp_path / "data", "val", True, 4, series="eval")
    assert _train(train, val, tmp_path / "run", GUIDED_TRAINING) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: model.loss.sync_guide") and "--set motion.series=true" in err[-1]
    assert not (tmp_path / "run" / "checkpoints" / "latest.pt").exists()


def test_the_flow_net_and_its_twin_both_learn_with_the_guide():
    cfg = load_config(TrainConfig, None, TINY + ["model.loss.sync_guide=1.0", "model.flow_gate=true",
                                                 "model.flow_fallback=twin", "model.loss.negatives=local"])
    model = HTFModel(cfg.model).train()
    image, flow, spec, guide = (torch.stack(t) for t in zip(*[
        _guided_arrays(_with_series(synthetic_sample(i, size=56), (3, 1)), 1.0, flip=False) for i in range(4)]))
    with torch.no_grad():
        guided = model(image, flow, spec, sync=guide, return_loss=True)["loss"]
        plain = model(image, flow, spec, return_loss=True)["loss"]
        twin_guided = model.twin(image, None, spec, sync=guide, return_loss=True)["loss"]
        twin_plain = model.twin(image, None, spec, return_loss=True)["loss"]
    assert float(twin_guided) != float(twin_plain)
    assert float(guided - twin_guided) != float(plain - twin_plain)      # the flow net's own loss changes too


def test_a_model_trains_with_the_sync_guide_on_shards_with_motion_series(tmp_path):
    from htf.model import load_model
    from train import checkpoint as ckpt

    train = _sync_shards(tmp_path / "data", "train", True, 8)
    val = _sync_shards(tmp_path / "data", "val", True, 8)
    assert _train(train, val, tmp_path / "run", GUIDED_TRAINING) == 0
    assert load_model(ckpt.best_path(tmp_path / "run")).cfg.loss.sync_guide == 0.5


# ----------------------------------------------------- the sync target: the sync map as a place to learn

def _target_loss_config(weight: float):
    from htf.model_config import LossConfig
    return LossConfig(sync_target=weight, negatives="local")


def test_a_zero_sync_target_gives_the_official_loss():
    from htf.loss import localization_loss

    img, aud = _loss_features()
    plain, _ = localization_loss(img, aud, _target_loss_config(0.0))
    unused, _ = localization_loss(img, aud, _target_loss_config(0.0), guide=torch.rand(4, 7, 7))
    assert torch.equal(plain, unused)


def test_the_sync_target_pulls_each_clips_map_towards_its_sync_map():
    from htf.loss import localization_loss

    img, aud = _loss_features()
    target = torch.zeros(4, 7, 7)
    target[:, 2, 6] = 0.8

    def raised(cfg):
        leaf = img.clone().requires_grad_(True)
        localization_loss(leaf, aud, cfg, guide=target)[0].backward()
        return -torch.einsum("nchw,nc->nhw", leaf.grad, aud)               # how descent raises each own map

    added = raised(_target_loss_config(1.0)) - raised(_target_loss_config(0.0))
    assert all(np.unravel_index(int(added[i].argmax()), (7, 7)) == (2, 6) for i in range(4))


def test_a_clip_whose_motion_keeps_no_time_with_the_sound_teaches_nothing():
    from htf.loss import sync_target_loss

    amap = torch.randn(2, 7, 7)
    target = torch.zeros(2, 7, 7)
    target[0, 1, 1] = 0.6
    both = sync_target_loss(amap, target, 0.1)
    first = sync_target_loss(amap[:1], target[:1], 0.1)
    assert torch.allclose(both, first)
    assert float(sync_target_loss(amap, torch.zeros(2, 7, 7), 0.1)) == 0.0


def test_a_confident_sync_map_counts_more_than_a_faint_one():
    from htf.loss import sync_target_loss

    amap = torch.zeros(2, 7, 7)
    amap[0, 0, 0] = amap[1, 6, 6] = 5.0                                   # clip 0 right, clip 1 wrong
    target = torch.zeros(2, 7, 7)
    target[0, 0, 0], target[1, 0, 0] = 0.9, 0.1
    weighted = sync_target_loss(amap, target, 1.0)
    alone = [float(sync_target_loss(amap[i:i + 1], target[i:i + 1], 1.0)) for i in range(2)]
    assert float(weighted) == pytest.approx((0.9 * alone[0] + 0.1 * alone[1]) / 1.0)


@pytest.mark.parametrize("item,message", [
    ("model.loss.sync_target=-1", "sync_target must be >= 0"),
    ("model.loss.sync_target_temperature=0", "sync_target_temperature > 0"),
])
def test_the_sync_target_refuses_a_negative_weight_and_a_temperature_of_zero(item, message):
    from htf.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, None, TINY + [item])


def test_training_with_the_sync_target_on_shards_without_training_series_names_the_key(tmp_path, capsys):
    train = _sync_shards(tmp_path / "data", "train", True, 4, series="eval")
    val = _sync_shards(tmp_path / "data", "val", True, 4, series="eval")
    settings = [s for s in GUIDED_TRAINING if not s.startswith("model.loss.sync_guide")] + ["model.loss.sync_target=1"]
    assert _train(train, val, tmp_path / "run", settings) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: model.loss.sync_target reads") and "model.loss.sync_target=0" in err[-1]


# ------------------------------------------- the sync target only where val's sync maps point at the source

TARGET_TRAINING = [s for s in GUIDED_TRAINING if not s.startswith("model.loss.sync_guide")] + [
    "model.loss.sync_target=1", "model.loss.sync_target_min_val=0.5"]


def _target_config(floor: float) -> TrainConfig:
    items = [s for s in TARGET_TRAINING if not s.startswith("model.loss.sync_target_min_val")]
    return load_config(TrainConfig, None, items + [f"model.loss.sync_target_min_val={floor}"])


def test_the_val_score_of_the_sync_maps_is_the_sync_baselines_score(tmp_path):
    from htf.metrics import clip_ciou
    from htf.shards import read_samples
    from train.distributed import DistInfo
    from train.validation import val_sync_map_cious

    val = _sync_shards(tmp_path, "val", True, 6)
    cfg = _target_config(0.5)
    baseline = Baseline("sync", BaselineConfig(sync_smooth_frames=cfg.model.sync_smooth_frames,
                                               map_blur=cfg.model.map_blur))
    samples = [sample for _shard, sample in read_samples([val], on_failure=print)]
    cious = [clip_ciou(m, s.boxes, s.meta.box_format) for m, s in zip(baseline.predict(samples), samples)]
    assert val_sync_map_cious([val], cfg, DistInfo()) == pytest.approx(cious)


@pytest.mark.parametrize("above,on", [(0.0, True), (1e-3, False)])
def test_the_sync_target_stays_on_at_the_floor_and_goes_off_just_above_it(tmp_path, above, on):
    from train.distributed import DistInfo
    from train.validation import sync_target_for_run

    val = [_sync_shards(tmp_path, "val", True, 4), _sync_shards(tmp_path, "misleading", False, 4)]
    _cfg, record = sync_target_for_run(_target_config(0.5), val, DistInfo())
    score = record["sync_map_val_score"]
    assert score == 0.5                                       # right on one shard's clips only
    cfg, record = sync_target_for_run(_target_config(score + above), val, DistInfo())
    assert (cfg.model.loss.sync_target, record["sync_target"]) == ((1.0, 1.0) if on else (0.0, 0.0))
    assert record["sync_map_val_score"] == score


@pytest.mark.parametrize("in_time_on_the_box,weight", [(True, 1.0), (False, 0.0)])
def test_a_run_trains_with_the_sync_target_only_where_vals_sync_maps_reach_the_floor(
        tmp_path, in_time_on_the_box, weight):
    import json

    model, _val = _trained_on_sync_shards(tmp_path, True, in_time_on_the_box, TARGET_TRAINING)
    assert model.cfg.loss.sync_target == weight
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    decided = [r for r in records if r["kind"] == "sync_target"]
    assert [r["sync_target"] for r in decided] == [weight]
    assert ("sync target on" if weight else "sync target off") in (tmp_path / "run" / "train.log").read_text()


def test_a_floor_without_val_shards_trains_without_the_target_and_says_why(tmp_path):
    import json

    from htf.model import load_model
    from train.__main__ import main

    train = _sync_shards(tmp_path / "data", "train", True, 4)
    argv = ["--train-shards", train, "--output", str(tmp_path / "run")]
    for item in TARGET_TRAINING:
        argv += ["--set", item]
    assert main(argv) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["sync_target"] for r in records if r["kind"] == "sync_target"] == [0.0]
    assert "sync target off for this run" in (tmp_path / "run" / "train.log").read_text()
    assert load_model(tmp_path / "run" / "checkpoints" / "latest.pt").cfg.loss.sync_target == 0.0


def test_a_floor_with_val_clips_without_boxes_stops_with_an_error_naming_the_key(tmp_path):
    import webdataset as wds
    from htf.config import ConfigError
    from htf.shards import read_samples
    from train.distributed import DistInfo
    from train.validation import sync_target_for_run

    boxed = _sync_shards(tmp_path / "boxed", "val", True, 3)
    unboxed = str(tmp_path / "val-000000.tar")
    with wds.TarWriter(unboxed) as sink:
        for _shard, sample in read_samples([boxed], on_failure=print):
            sample.meta.boxes = None
            sink.write(encode_sample(sample))
    with pytest.raises(ConfigError, match="sync_target_min_val .* no clip of .*val-000000.tar.* has boxes"):
        sync_target_for_run(_target_config(0.5), [unboxed], DistInfo())


def test_the_floor_is_a_score_between_0_and_1():
    from htf.config import ConfigError

    with pytest.raises(ConfigError, match="sync_target_min_val is a val score between 0"):
        load_config(TrainConfig, None, TINY + ["model.loss.sync_target_min_val=1.5"])
