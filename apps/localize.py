"""``python -m apps.localize``: where does the sound come from in any video file?

    python -m apps.localize --checkpoint CKPT --video FILE --output DIR [--every K] \\
        [--keyframe I] [--set flow.device=cuda ...]

No shards needed: the clip goes through the pipeline's own per-clip path
(``pipeline.process.process_clip``) with the settings the checkpoint was trained on
(``model.data_settings``; ``--set`` overrides them, e.g. to run flow on a GPU), then
through the trainer's test-time input preparation and the model. Outputs in DIR:

- ``<stem>_keyframe.png``: the keyframe (middle frame unless ``--keyframe``) with the
  heat map over it and the raw map's maximum (its confidence) in the corner;
- ``<stem>_localize.json``: keyframe index and time, the raw 7x7 map, its confidence, the
  pipeline settings used;
- with ``--every K``: ``<stem>_overlay.mp4``, every frame of the clip with the heat map of
  the latest analysed frame (frames 0, K, 2K, ...; each analysed with its next frame's
  flow and the audio window the settings choose), the original audio track kept.
"""
from __future__ import annotations

import argparse
import bisect
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from eval.pictures import enlarge, overlay, put_label, save_png
from eval.runner import ModelPredictor
from htf.config import ConfigError, load_config


def pipeline_config(data_settings: dict | None, overrides: list[str] | None = None):
    """The PipelineConfig that reproduces the checkpoint's data (its ``data_settings``)."""
    from pipeline.config import PipelineConfig

    base = {k: v for k, v in (data_settings or {}).items() if k in ("frames", "flow", "audio")}
    try:
        return load_config(PipelineConfig, base=base, overrides=overrides)
    except ConfigError as err:
        raise ConfigError(f"the checkpoint's data_settings do not form a pipeline config: {err}") from None


def _maps(predictor: ModelPredictor, samples: list) -> list[np.ndarray]:
    maps = predictor.predict(samples)
    for s, m in zip(samples, maps):
        if not np.isfinite(m).all():
            raise ValueError(f"{s.meta.get('video', s.id)}: the model produced a non-finite map at "
                             f"frame {s.meta.get('keyframe_index')}")
    return maps


def analyse_frames(video: str, cfg: Any, predictor: ModelPredictor, indices: list[int],
                   batch: int = 8) -> dict[int, np.ndarray]:
    """Raw map for each keyframe index (each through ``process_clip``)."""
    from pipeline.process import process_clip

    out: dict[int, np.ndarray] = {}
    for start in range(0, len(indices), batch):
        chunk = [process_clip(video, cfg, keyframe_index=k) for k in indices[start:start + batch]]
        for k, m in zip(indices[start:start + batch], _maps(predictor, chunk)):
            out[k] = np.asarray(m, np.float32)
    return out


def iter_frames(video: str, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Every frame of the video, RGB, resized to ``size`` (w, h), in presentation order."""
    from pipeline.index import open_container

    with open_container(video) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            yield cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if rgb.shape[1::-1] != size else rgb


def write_overlay_video(video: str, maps: dict[int, np.ndarray], fps: float, size: tuple[int, int],
                        out_path: Path, alpha: float = 0.5) -> Path:
    """Overlay video (heat map of the latest analysed frame on every frame) + original audio."""
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is needed to write the overlay video (system package 'ffmpeg')")
    keys = sorted(maps)
    with tempfile.TemporaryDirectory() as tmp:
        silent = Path(tmp) / "video.mp4"
        writer = cv2.VideoWriter(str(silent), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {silent}")
        for i, frame in enumerate(iter_frames(video, size)):
            current = keys[max(0, bisect.bisect_right(keys, i) - 1)]
            img = put_label(overlay(frame, maps[current], alpha=alpha, min_side=0),
                            f"frame {i} (map of {current})")
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        writer.release()
        cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(silent), "-i", video, "-map", "0:v:0",
               "-map", "1:a:0?", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
               str(out_path)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:  # an ffmpeg without libx264: keep the OpenCV stream as it is
            cmd[cmd.index("libx264") - 1:cmd.index("yuv420p") + 1] = ["-c:v", "copy"]
            done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ffmpeg could not write {out_path}: {done.stderr.strip()[-500:]}")
    return out_path


def localize(model: Any, video: str, output_dir: str | Path, every: int | None = None,
             keyframe: int | None = None, overrides: list[str] | None = None,
             alpha: float = 0.5, device: str = "cpu") -> dict[str, Any]:
    """Heat map of the keyframe of ``video`` (and, with ``every``, an overlay video)."""
    from pipeline.process import process_clip

    if every is not None and every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    cfg = pipeline_config(getattr(model, "data_settings", None), overrides)
    predictor = model if hasattr(model, "predict") else ModelPredictor(model, device)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(video).stem
    sample = process_clip(video, cfg, keyframe_index=keyframe)
    raw = np.asarray(_maps(predictor, [sample])[0], np.float32)
    confidence = float(raw.max())
    png = save_png(overlay(sample.frame, raw, label=f"frame {sample.meta['keyframe_index']}  "
                                                    f"max {confidence:.3f}", alpha=alpha),
                   out / f"{stem}_keyframe.png")
    result: dict[str, Any] = {
        "video": str(video), "keyframe_index": sample.meta["keyframe_index"],
        "keyframe_time": sample.meta["keyframe_time"], "map": raw.tolist(), "confidence": confidence,
        "keyframe_png": png.name, "pipeline": sample.meta.get("pipeline"),
        "data_settings_known": getattr(model, "data_settings", None) is not None,
    }
    if every:
        n = int(sample.meta["frame_count"])
        indices = list(range(0, n - 1, every))
        maps = analyse_frames(video, cfg, predictor, indices)
        w, h = enlarge(np.zeros((int(sample.meta["frame_size"][1]), int(sample.meta["frame_size"][0]), 3),
                                np.uint8), 256).shape[1::-1]
        w, h = w + w % 2, h + h % 2  # H.264 wants even sides
        fps = float(sample.meta.get("fps") or 25.0)
        path = write_overlay_video(video, maps, fps, (int(w), int(h)), out / f"{stem}_overlay.mp4", alpha)
        result.update({"overlay_video": path.name, "every": every, "analysed_frames": indices})
    (out / f"{stem}_localize.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m apps.localize", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--video", required=True, help="any file ffmpeg reads, with an audio track")
    p.add_argument("--output", required=True)
    p.add_argument("--every", type=int, metavar="K", help="overlay video, heat map every K frames")
    p.add_argument("--device", default="cpu", help="where the model runs (cpu, cuda)")
    p.add_argument("--keyframe", type=int, help="frame index for the still (default: the middle)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a pipeline setting, e.g. --set flow.device=cuda")
    args = p.parse_args(argv)
    from eval.__main__ import load_checkpoint
    from eval.runner import EvalError
    from pipeline.errors import ClipError

    try:
        model = load_checkpoint(args.checkpoint, args.device)
        if model.data_settings is None:
            print("warning: the checkpoint records no data settings; using the pipeline defaults",
                  file=sys.stderr)
        result = localize(model, args.video, args.output, args.every, args.keyframe, args.overrides,
                          device=args.device)
    except (EvalError, ConfigError, ClipError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"keyframe {result['keyframe_index']}: {Path(args.output) / result['keyframe_png']}")
    if "overlay_video" in result:
        print(f"overlay video: {Path(args.output) / result['overlay_video']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
