"""Flow methods: signed pixels, resizing, the official encoding, learned models offline."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import FlowConfig, LearnedFlowConfig
from pipeline.errors import FlowSetupError
from pipeline.flow import FLOW_METHODS, compute_flow, encode_flow_values, resize_flow


def _textured_pair(dx: int, dy: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random texture and the same texture moved by (dx, dy) pixels."""
    import cv2

    rng = np.random.default_rng(0)
    big = cv2.resize(rng.uniform(0, 255, (24, 24, 3)).astype(np.float32), (size + 40, size + 40),
                     interpolation=cv2.INTER_CUBIC)
    big = np.clip(big, 0, 255).astype(np.uint8)
    frame0 = big[20:20 + size, 20:20 + size]
    frame1 = big[20 - dy:20 - dy + size, 20 - dx:20 - dx + size]
    return np.ascontiguousarray(frame0), np.ascontiguousarray(frame1)


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_classical_flow_recovers_a_negative_and_a_positive_shift_in_pixels(method: str):
    frame0, frame1 = _textured_pair(dx=-3, dy=2)
    flow = compute_flow(frame0, frame1, FlowConfig(method=method))
    assert flow.shape == (2, 96, 96) and flow.dtype == np.float32
    centre = flow[:, 24:72, 24:72].reshape(2, -1)
    assert np.median(centre[0]) == pytest.approx(-3, abs=0.5)
    assert np.median(centre[1]) == pytest.approx(2, abs=0.5)


def test_registry_lists_the_cpu_methods():
    assert {"dis", "farneback"} <= set(FLOW_METHODS)


def test_resizing_flow_scales_vectors_unless_told_not_to():
    flow = np.ones((2, 10, 20), np.float32)
    scaled = resize_flow(flow, (10, 5), rescale_vectors=True)
    kept = resize_flow(flow, (10, 5), rescale_vectors=False)
    assert scaled.shape == (2, 5, 10)
    np.testing.assert_allclose(scaled, 0.5)
    np.testing.assert_allclose(kept, 1.0)


def test_official_uint8_encoding_loses_negative_motion():
    flow = np.array([[[-4.0, 0.4, 3.0, 300.0]]] * 2, np.float32)
    encoded = encode_flow_values(flow, "uint8_clip")
    np.testing.assert_allclose(encoded[0, 0], [0, 0, 3 / 255, 1.0], atol=1e-7)
    assert encode_flow_values(flow, "signed") is flow


def test_learned_flow_without_weights_fails_fast_with_instructions():
    frame0, frame1 = _textured_pair(1, 1, 64)
    with pytest.raises(FlowSetupError, match="--flow-ckpt"):
        compute_flow(frame0, frame1, FlowConfig(method="raft_small"))


def test_pretrained_name_not_in_the_local_cache_is_refused_without_downloading(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: pytest.fail("attempted a download"))
    frame0, frame1 = _textured_pair(1, 1, 64)
    with pytest.raises(FlowSetupError, match="not available offline"):
        compute_flow(frame0, frame1, FlowConfig(method="raft_small", learned=LearnedFlowConfig(ckpt="things")))


def test_learned_model_with_random_weights_returns_flow_of_the_frame_size():
    # 128 px: RAFT's 4-level correlation pyramid at 1/8 resolution needs at least that.
    frame0, frame1 = _textured_pair(1, 1, 128)
    flow = compute_flow(frame0, frame1, FlowConfig(method="raft_small", learned=LearnedFlowConfig(allow_random_init=True)))
    assert flow.shape == (2, 128, 128) and flow.dtype == np.float32 and np.isfinite(flow).all()


def test_float16_conversion_has_the_bits_of_numpy_astype_including_subnormals():
    from pipeline.cache import to_float16

    rng = np.random.default_rng(5)
    for scale in (1.0, 1e-5, 1e-7, 1e-40):
        flow = (rng.standard_normal((2, 37, 53)) * scale).astype(np.float32)
        flow.flat[:4] = [0.0, -0.0, 2.0 ** -25, 3 * 2.0 ** -25]
        assert np.array_equal(to_float16(flow).view(np.uint16), flow.astype(np.float16).view(np.uint16))
    assert to_float16(flow).shape == flow.shape


def test_float16_conversion_keeps_numpy_bits_with_an_opencv_without_convertfp16(monkeypatch):
    # OpenCV 5 (what a GPU image may carry) has no cv2.convertFp16.
    import cv2

    from pipeline.cache import to_float16

    monkeypatch.delattr(cv2, "convertFp16", raising=False)
    rng = np.random.default_rng(6)
    flow = (rng.standard_normal((2, 37, 53)) * 1e-5).astype(np.float32)
    flow.flat[:4] = [0.0, -0.0, 2.0 ** -25, 3 * 2.0 ** -25]
    converted = to_float16(flow)
    assert converted.dtype == np.float16 and converted.shape == flow.shape
    assert np.array_equal(converted.view(np.uint16), flow.astype(np.float16).view(np.uint16))
