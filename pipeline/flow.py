"""Stage 3, flow: optical flow from the keyframe to the next frame, one call for any method.

Methods: ``farneback`` (OpenCV, the official parameters by default), ``dis`` (OpenCV DIS,
the fast CPU default) and every ptlflow model name (``raft``, ``raft_small``, ...), run
batched and in fp16 on CUDA. More methods register with :func:`register_flow_method`.

Output everywhere: float32 [2, H, W], (dx, dy) in pixels of the input frames, signed.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from pipeline.config import FlowConfig

ClassicalFlow = Callable[[np.ndarray, np.ndarray, FlowConfig], np.ndarray]
FLOW_METHODS: dict[str, ClassicalFlow] = {}


def register_flow_method(name: str) -> Callable[[ClassicalFlow], ClassicalFlow]:
    """Decorator: make ``fn(gray0, gray1, flow_cfg) -> [H, W, 2]`` available as ``name``."""
    def add(fn: ClassicalFlow) -> ClassicalFlow:
        FLOW_METHODS[name] = fn
        return fn
    return add


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


@register_flow_method("farneback")
def _farneback(gray0: np.ndarray, gray1: np.ndarray, cfg: FlowConfig) -> np.ndarray:
    import cv2

    return cv2.calcOpticalFlowFarneback(
        gray0, gray1, None, cfg.farneback.pyr_scale, cfg.farneback.levels, cfg.farneback.winsize,
        cfg.farneback.iterations, cfg.farneback.poly_n, cfg.farneback.poly_sigma, 0)


@functools.lru_cache(maxsize=4)
def _dis_instance(preset: str):
    import cv2

    presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
               "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST, "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
    return cv2.DISOpticalFlow_create(presets[preset])


@register_flow_method("dis")
def _dis(gray0: np.ndarray, gray1: np.ndarray, cfg: FlowConfig) -> np.ndarray:
    return _dis_instance(cfg.dis.preset).calc(gray0, gray1, None)


def is_learned(method: str) -> bool:
    return method not in FLOW_METHODS


@functools.lru_cache(maxsize=2)
def _learned_runner(method: str, ckpt: str | None, allow_random_init: bool, device: str, fp16: bool):
    from pipeline.flow_learned import BatchedFlow, load_ptlflow_model

    return BatchedFlow(load_ptlflow_model(method, ckpt, allow_random_init), device, fp16, "ptlflow")


def check_flow_method(flow_cfg: FlowConfig) -> None:
    """Fail fast (before any clip is touched) when the method cannot run here."""
    if is_learned(flow_cfg.method):
        _learned_runner(flow_cfg.method, flow_cfg.learned.ckpt, flow_cfg.learned.allow_random_init,
                        flow_cfg.device, flow_cfg.fp16)


def compute_flow(frame0: np.ndarray, frame1: np.ndarray, flow_cfg: FlowConfig) -> np.ndarray:
    """Flow from ``frame0`` to ``frame1`` (uint8 RGB [H,W,3] or gray [H,W]) -> float32 [2,H,W]."""
    return compute_flow_batch([(frame0, frame1)], flow_cfg)[0]


def compute_flow_batch(pairs: list[tuple[np.ndarray, np.ndarray]], flow_cfg: FlowConfig) -> list[np.ndarray]:
    """Flow of many pairs; learned methods run same-size pairs as one batch on the device."""
    if not is_learned(flow_cfg.method):
        fn = FLOW_METHODS[flow_cfg.method]
        return [np.ascontiguousarray(fn(_gray(a), _gray(b), flow_cfg).transpose(2, 0, 1), dtype=np.float32)
                for a, b in pairs]
    runner = _learned_runner(flow_cfg.method, flow_cfg.learned.ckpt, flow_cfg.learned.allow_random_init,
                             flow_cfg.device, flow_cfg.fp16)
    out: list[np.ndarray | None] = [None] * len(pairs)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (a, _) in enumerate(pairs):
        groups.setdefault(a.shape, []).append(i)
    for shape, idx in groups.items():
        for start in range(0, len(idx), flow_cfg.batch_size):
            chunk = idx[start:start + flow_cfg.batch_size]
            rgb0 = np.stack([_rgb(pairs[i][0]) for i in chunk])
            rgb1 = np.stack([_rgb(pairs[i][1]) for i in chunk])
            for i, flow in zip(chunk, runner(rgb0, rgb1)):
                out[i] = flow
    return [f for f in out if f is not None]


def _rgb(frame: np.ndarray) -> np.ndarray:
    return np.repeat(frame[..., None], 3, axis=2) if frame.ndim == 2 else frame


def resize_flow(flow: np.ndarray, size: tuple[int, int], rescale_vectors: bool = True) -> np.ndarray:
    """Resize float32 [2,h,w] flow to ``size`` (w, h). Vectors scale with the frame unless
    ``rescale_vectors`` is False (the official preprocessing's defect)."""
    import cv2

    h, w = flow.shape[1:]
    if (w, h) == tuple(size):
        return flow
    resized = np.stack([cv2.resize(c, size, interpolation=cv2.INTER_AREA if size[0] < w else cv2.INTER_LINEAR)
                        for c in flow])
    if rescale_vectors:
        resized[0] *= size[0] / w
        resized[1] *= size[1] / h
    return resized.astype(np.float32)


def encode_flow_values(flow: np.ndarray, encoding: str) -> np.ndarray:
    """'signed': unchanged. 'uint8_clip': what the official preprocessing leaves: each
    channel rounded and clipped to 0..255 (negative motion becomes 0), written as a
    grayscale JPEG (OpenCV, quality 95) and read back, divided by 255."""
    if encoding == "signed":
        return flow
    if encoding == "uint8_clip":
        import cv2

        out = []
        for channel in flow:
            u8 = np.clip(np.round(channel), 0, 255).astype(np.uint8)
            ok, jpg = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise ValueError("could not JPEG-encode a flow channel")
            out.append(cv2.imdecode(jpg, cv2.IMREAD_GRAYSCALE))
        return (np.stack(out).astype(np.float32) / 255.0).astype(np.float32)
    raise ValueError(f"unknown flow encoding {encoding!r}")
