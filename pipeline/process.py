"""The whole per-clip path: decode -> flow -> audio feature -> ClipSample.

``process_clip`` is the one way a clip becomes a sample; the pipeline's tasks use the
same pieces (with the flow cache and batching around them) and the evaluator's
``localize`` calls ``process_clip`` directly, so training, testing and inference inputs
are decoded identically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from htf.sample import ClipSample, SampleMeta
from pipeline.audio import audio_feature
from pipeline.config import PipelineConfig, sample_settings
from pipeline.decode import DecodedClip, decode_clip
from pipeline.errors import ClipError, failure_record
from pipeline.flow import compute_flow_batch, encode_flow_values, resize_flow
from pipeline.index import ProbeInfo


def flow_inputs(decoded: DecodedClip, cfg: PipelineConfig) -> tuple[np.ndarray, np.ndarray]:
    """The pair the flow method sees: stored-size RGB, or native grayscale frames."""
    if cfg.flow.resolution == "native":
        if decoded.native0 is None or decoded.native1 is None:
            raise ValueError("native-resolution flow needs frames decoded with flow.resolution=native")
        return decoded.native0, decoded.native1
    return decoded.frame0, decoded.frame1


def finish_flow(raw: np.ndarray, decoded: DecodedClip, cfg: PipelineConfig) -> np.ndarray:
    """Raw method output -> the stored flow: encoded (official uint8 clip happens at the
    computed resolution, as the official JPEG write does) then resized to the stored frame."""
    h, w = decoded.frame0.shape[:2]
    encoded = encode_flow_values(raw, cfg.flow.encoding)
    rescale = cfg.flow.rescale_vectors and cfg.flow.encoding == "signed"
    return resize_flow(encoded, (w, h), rescale_vectors=rescale)


def frame_count_warning(clip_id: str, probe: ProbeInfo) -> Optional[dict[str, Any]]:
    """A warnings.jsonl record when the header promised other frames than decode (a cut
    file: the keyframe is the middle of what decodes, boxes made for the whole clip may
    not match it)."""
    if probe.header_frame_count is None:
        return None
    return failure_record(clip_id, "index", "frame_count_mismatch",
                          f"{probe.path}: the header says {probe.header_frame_count} frames, "
                          f"{probe.frame_count} decode (truncated file?); keyframe chosen among those",
                          probe.path)


def clip_flows(decoded: list[DecodedClip], cfg: PipelineConfig) -> list[np.ndarray]:
    """Stored flow for each decoded clip; learned methods see them as one batch."""
    try:
        raw = compute_flow_batch([flow_inputs(d, cfg) for d in decoded], cfg.flow)
    except cv2.error as err:       # OpenCV refuses the frames (size, type): a clip problem
        paths = ", ".join(d.probe.path for d in decoded)
        message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ClipError("flow_error", f"{paths}: {cfg.flow.method}: {message}") from None
    for r, d in zip(raw, decoded):
        if not np.isfinite(r).all():
            raise ClipError("flow_not_finite", f"{d.probe.path}: {cfg.flow.method} returned NaN/inf "
                                               f"(frames {d.frame0.shape[1]}x{d.frame0.shape[0]} too small?)")
    return [finish_flow(r, d, cfg) for r, d in zip(raw, decoded)]


def build_meta(clip_id: str, decoded: DecodedClip, cfg: PipelineConfig,
               boxes: Optional[list] = None, box_format: Optional[str] = None,
               video_path: Optional[str] = None) -> SampleMeta:
    probe = decoded.probe
    return SampleMeta(
        id=clip_id, source=cfg.source, video=Path(video_path or probe.path).name,
        keyframe_index=decoded.keyframe_index, keyframe_time=decoded.keyframe_time,
        fps=round(probe.fps, 4), vfr=probe.vfr, frame_count=probe.frame_count,
        orig_size=list(decoded.display_size),
        frame_size=[int(decoded.frame0.shape[1]), int(decoded.frame0.shape[0])],
        audio_window=decoded.audio_info.get("window"), audio_tiled=decoded.audio_info.get("tiled", False),
        pipeline=sample_settings(cfg), boxes=boxes, box_format=box_format if boxes is not None else None,
        audio_rms_dbfs=decoded.audio_info.get("rms_dbfs"),
        audio_silent=decoded.audio_info.get("silent", False), rotation=decoded.rotation or None,
        header_frame_count=probe.header_frame_count)


def assemble_sample(clip_id: str, decoded: DecodedClip, flow: np.ndarray, cfg: PipelineConfig,
                    boxes: Optional[list] = None, box_format: Optional[str] = None,
                    video_path: Optional[str] = None, spec: Optional[np.ndarray] = None) -> ClipSample:
    if spec is None:
        spec = audio_feature(decoded.waveform, decoded.sample_rate, cfg.audio)
    # float16 flow (from the flow cache) stays float16: the shard stores float16 anyway,
    # and a round trip through float32 costs milliseconds per clip for nothing.
    flow = flow if flow.dtype == np.float16 else np.asarray(flow, np.float32)
    return ClipSample(id=clip_id, frame=decoded.frame0, flow=flow, spec=spec,
                      meta=build_meta(clip_id, decoded, cfg, boxes, box_format, video_path),
                      motion=decoded.motion, loudness=decoded.loudness)


def process_clip(video_path: str, cfg: PipelineConfig, keyframe_index: Optional[int] = None,
                 audio_path: Optional[str] = None, clip_id: Optional[str] = None,
                 boxes: Optional[list] = None, box_format: Optional[str] = None,
                 keyframe_entry: Optional[int] = None) -> ClipSample:
    """One video file -> ClipSample, without any cache. Raises ``ClipError`` on bad input."""
    decoded = decode_clip(str(video_path), cfg, keyframe_index=keyframe_index,
                          audio_path=audio_path, keyframe_entry=keyframe_entry)
    flow = clip_flows([decoded], cfg)[0]
    return assemble_sample(clip_id or Path(video_path).stem, decoded, flow, cfg, boxes, box_format,
                           str(video_path))
