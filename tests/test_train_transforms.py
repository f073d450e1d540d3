"""Frame and flow get the same geometry; flow vectors follow it (except the official encoding)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from htf.inputs import eval_arrays, eval_inputs, fit_time
from htf.model_config import ModelConfig
from htf.sample import ClipSample
from train.config import AugmentConfig
from train.transforms import train_arrays

CFG = ModelConfig(width=8, image_size=56, mean=[0, 0, 0], std=[1, 1, 1])


def _sample(encoding: str = "signed", h: int = 40, w: int = 80) -> ClipSample:
    frame = np.zeros((h, w, 3), np.uint8)
    frame[:, : w // 2] = 255                       # bright left half
    flow = np.zeros((2, h, w), np.float32)
    flow[0, :, : w // 2] = 4.0                     # left half moves right by 4 px
    flow[1] = 2.0                                  # everything moves down by 2 px
    meta = {"pipeline": {"flow": {"encoding": encoding}}}
    return ClipSample("c", frame, flow, np.arange(16 * 30, dtype=np.float32).reshape(16, 30), meta)


def test_eval_inputs_resize_to_square_and_scale_flow_per_axis():
    image, flow, spec = eval_arrays(_sample(), CFG)
    assert image.shape == (3, 56, 56) and flow.shape == (2, 56, 56) and spec.shape == (1, 16, 30)
    assert flow[0, 28, 5].item() == pytest.approx(4.0 * 56 / 80, rel=1e-4)
    assert flow[1, 28, 40].item() == pytest.approx(2.0 * 56 / 40, rel=1e-4)


def test_eval_inputs_keep_official_uint8_flow_as_is():
    _, flow, _ = eval_arrays(_sample("uint8_clip"), CFG)
    assert flow[0, 28, 5].item() == pytest.approx(4.0)
    assert flow[1, 28, 40].item() == pytest.approx(2.0)


def test_eval_inputs_takes_the_models_input_settings():
    class M:
        cfg = ModelConfig(width=8, image_size=112, audio_frames=20)
    image, flow, spec = eval_inputs(_sample(), M())
    assert image.shape == (3, 112, 112) and spec.shape == (1, 16, 20)
    np.testing.assert_array_equal(spec[0, 0].numpy(), np.arange(5, 25))   # centred crop


def _flip_only() -> AugmentConfig:
    return AugmentConfig(crop_fraction=[1.0, 1.0], hflip=1.0, audio_time_shift=False)


def test_flip_mirrors_frame_and_flow_together_and_negates_x():
    image, flow, _ = train_arrays(_sample(h=40, w=40), CFG, _flip_only(), np.random.default_rng(0))
    assert image[0, 20, 50].item() > 0.9 and image[0, 20, 5].item() < 0.1   # bright half now right
    assert flow[0, 20, 50].item() == pytest.approx(-4.0 * 56 / 40, rel=1e-4)
    assert flow[0, 20, 5].item() == pytest.approx(0.0, abs=1e-5)
    assert flow[1, 20, 5].item() == pytest.approx(2.0 * 56 / 40, rel=1e-4)


def test_flip_keeps_official_flow_sign():
    _, flow, _ = train_arrays(_sample("uint8_clip", h=40, w=40), CFG, _flip_only(), np.random.default_rng(0))
    assert flow[0, 20, 50].item() == pytest.approx(4.0)


def test_random_crop_is_shared_by_frame_and_flow():
    sample = _sample(h=64, w=64)
    rng = np.random.default_rng(1)
    sample.flow[0] = sample.frame[:, :, 0] / 255.0      # flow x mirrors the frame's brightness
    aug = AugmentConfig(crop_fraction=[0.5, 0.6], hflip=0.0, audio_time_shift=False)
    for _ in range(5):
        image, flow, _ = train_arrays(sample, CFG, aug, rng)
        scale = flow[0].max() / max(image[0].max(), 1e-6)      # vectors scaled by 56 / side
        torch.testing.assert_close(flow[0] / scale, image[0], atol=0.05, rtol=0)


def test_audio_time_shift_crops_inside_the_stored_spectrogram():
    cfg = ModelConfig(width=8, image_size=56, audio_frames=10)
    aug = AugmentConfig(audio_time_shift=True)
    starts = set()
    for seed in range(20):
        _, _, spec = train_arrays(_sample(), cfg, aug, np.random.default_rng(seed))
        row = spec[0, 0].numpy()
        np.testing.assert_array_equal(np.diff(row), 1)          # a contiguous window
        starts.add(int(row[0]))
    assert len(starts) > 3 and min(starts) >= 0 and max(starts) <= 20


def test_short_spectrogram_is_tiled_to_the_wanted_length():
    spec = np.arange(6, dtype=np.float32).reshape(1, 6)
    np.testing.assert_array_equal(fit_time(spec, 10)[0], [1, 2, 3, 4, 5, 0, 1, 2, 3, 4])
