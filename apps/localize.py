"""python -m apps.localize (htf-localize): where does the sound come from in any video file?

No shards needed: the clip goes through the pipeline's own per-clip path
(pipeline.process.process_clip) with the settings the checkpoint was trained on
(model.data_settings; --set overrides them, e.g. to run flow on a GPU), then through the
trainer's test-time input preparation and the model. ``--baseline NAME`` maps the clip with
one of the evaluator's training-free baselines instead (pipeline defaults; ``sync``: where
the change over the audio window follows the loudness), e.g. to see whether motion follows
the sound in a new dataset before training. Outputs in DIR:

- ``<stem>_keyframe.png``: the keyframe (middle frame unless ``--keyframe``) and the heat
  map over it side by side, with a colour bar, the predicted mask's outline and a legend
  giving the raw map's maximum (its confidence), in the style of the evaluator's pictures;
- ``<stem>_localize.json``: keyframe index and time, the raw 7x7 map, its confidence, the
  pipeline settings used;
- with ``--every K``: ``<stem>_overlay.mp4``, every frame of the clip in the same layout,
  with the heat map of the latest analysed frame (frames 0, K, 2K, ...; each analysed with
  its next frame's flow and the audio window the settings choose), the original audio
  track kept.
"""
from __future__ import annotations

import argparse
import bisect
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from eval.baselines import BASELINES, Baseline
from eval.config import BaselineConfig
from eval.runner import ModelPredictor
from htf.cli import (RERUN, WRITABLE, add_config_options, command, make_parser, parse_args,
                     reported_errors, resolve_config)
from htf.config import ConfigError, load_config
from htf.io import atomic_write_json
from htf.pictures import display_size, heatmap_figure, save_png
from htf.sample import sample_key
from htf.settings import upgrade_settings

EXAMPLES = """\
  # the keyframe's heat map (middle frame) of one video
  %(prog)s --checkpoint RUN/checkpoints/best.pt --video any.mp4 --output DIR
  # and an overlay video, a new heat map every 5 frames, flow on the GPU
  %(prog)s --checkpoint RUN/checkpoints/best.pt --video any.mp4 --output DIR --every 5 \\
      --device cuda --set flow.device=cuda
  # no model: where the clip's motion follows its loudness (the sync baseline)
  %(prog)s --baseline sync --video any.mp4 --output DIR
"""


def pipeline_config(data_settings: dict | None, overrides: list[str] | None = None):
    """The PipelineConfig that reproduces the checkpoint's data (its ``data_settings``)."""
    from pipeline.config import PipelineConfig

    base = checkpoint_settings(data_settings)
    try:
        load_config(PipelineConfig, base=base)
    except ConfigError as err:
        raise ConfigError(f"the checkpoint's data_settings do not form a pipeline config: {err}") from None
    return load_config(PipelineConfig, base=base, overrides=overrides)  # errors name the --set


def checkpoint_settings(data_settings: dict | None) -> dict:
    """The pipeline sections of a checkpoint's ``data_settings`` (older flat flow keys upgraded)."""
    return {k: v for k, v in (upgrade_settings(data_settings) or {}).items()
            if k in ("frames", "flow", "audio", "motion")}


def reads_motion_series(model: Any) -> bool:
    """Whether ``model``'s map reads the clip's motion series: the sync baseline, or a model
    whose map adds the sync map (model.motion_prior: sync)."""
    if isinstance(model, Baseline):
        return model.name == "sync"
    model_cfg = getattr(model, "cfg", None)
    return bool(model_cfg is not None and hasattr(model_cfg, "uses_sync") and model_cfg.uses_sync())


def _maps(predictor: ModelPredictor, samples: list) -> list[np.ndarray]:
    maps = predictor.predict(samples)
    for s, m in zip(samples, maps):
        if not np.isfinite(m).all():
            raise ValueError(f"{s.meta.video or s.id}: the model produced a non-finite map at "
                             f"frame {s.meta.keyframe_index}")
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
    from pipeline.decode import display_rotation
    from pipeline.index import open_container, probe_video

    stream_index = probe_video(video).stream_index      # the clip's stream, not a cover picture
    with open_container(video) as container:
        stream = container.streams[stream_index]
        for frame in container.decode(stream):
            # Turned as displayed, as the pipeline turns the keyframe.
            rgb = np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), display_rotation(frame) // 90))
            yield cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if rgb.shape[1::-1] != size else rgb


def write_overlay_video(video: str, maps: dict[int, np.ndarray], fps: float, size: tuple[int, int],
                        out_path: Path, alpha: float = 0.5) -> Path:
    """Overlay video: every frame (display ``size`` (w, h)) in the picture layout, with the
    heat map of the latest analysed frame, plus the original audio."""
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is needed to write the overlay video (system package 'ffmpeg')")
    keys = sorted(maps)
    with tempfile.TemporaryDirectory() as tmp:
        silent = Path(tmp) / "video.mp4"
        writer = None
        for i, frame in enumerate(iter_frames(video, size)):
            current = keys[max(0, bisect.bisect_right(keys, i) - 1)]
            img = even_sides(heatmap_figure(frame, maps[current], title=f"frame {i}   (heat map of frame {current})",
                                            alpha=alpha))
            if writer is None:
                writer = cv2.VideoWriter(str(silent), cv2.VideoWriter_fourcc(*"mp4v"), fps, img.shape[1::-1])
                if not writer.isOpened():
                    raise RuntimeError(f"OpenCV cannot write {silent}")
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        if writer is None:
            raise RuntimeError(f"{video}: no frame could be decoded for the overlay video")
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


def output_stem(video: str) -> str:
    """The video's stem for output names; a stem too long for ``<stem>_keyframe.png`` to
    fit a file name (255 bytes) becomes its short shard key."""
    stem = Path(video).stem
    return stem if len(stem.encode("utf-8", "surrogateescape")) <= 200 else sample_key(stem)
def even_sides(image: np.ndarray) -> np.ndarray:
    """Pad with white to even height and width (H.264 with yuv420p needs them)."""
    h, w = image.shape[:2]
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), constant_values=255) if h % 2 or w % 2 else image


def localize(model: Any, video: str, output_dir: str | Path, every: int | None = None,
             keyframe: int | None = None, overrides: list[str] | None = None,
             alpha: float = 0.5, device: str = "cpu") -> dict[str, Any]:
    """Heat map of the keyframe of ``video`` (and, with ``every``, an overlay video)."""
    from pipeline.process import process_clip

    if every is not None and every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    cfg = pipeline_config(getattr(model, "data_settings", None), overrides)
    # The motion series (a decode of the whole audio window per analysed frame) only for a
    # map that reads them.
    cfg.motion.series = reads_motion_series(model)
    predictor = model if hasattr(model, "predict") else ModelPredictor(model, device)
    out = Path(output_dir)
    stem = output_stem(video)
    sample = process_clip(video, cfg, keyframe_index=keyframe)   # checks the video before DIR exists
    raw = np.asarray(_maps(predictor, [sample])[0], np.float32)
    confidence = float(raw.max())
    out.mkdir(parents=True, exist_ok=True)
    title = f"{Path(video).name}   keyframe {sample.meta.keyframe_index}   confidence {confidence:.3f}"
    png = save_png(heatmap_figure(sample.frame, raw, title=title, alpha=alpha), out / f"{stem}_keyframe.png")
    result: dict[str, Any] = {
        "video": str(video), "keyframe_index": sample.meta.keyframe_index,
        "keyframe_time": sample.meta.keyframe_time, "map": raw.tolist(), "confidence": confidence,
        "keyframe_png": png.name, "pipeline": sample.meta.pipeline,
        "data_settings_known": getattr(model, "data_settings", None) is not None,
        "map_from": f"baseline {model.name}" if isinstance(model, Baseline) else "checkpoint",
    }
    if every:
        n = int(sample.meta.frame_count)
        indices = list(range(0, n - 1, every))
        maps = analyse_frames(video, cfg, predictor, indices)
        h, w = display_size(*sample.frame.shape[:2])
        fps = float(sample.meta.fps or 25.0)
        path = write_overlay_video(video, maps, fps, (w, h), out / f"{stem}_overlay.mp4", alpha)
        result.update({"overlay_video": path.name, "every": every, "analysed_frames": indices})
    atomic_write_json(out / f"{stem}_localize.json", result, indent=2)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("apps.localize", "Where does the sound come from in any video file? The clip "
                    "goes through the pipeline with the settings the checkpoint was trained on; DIR "
                    "gets STEM_keyframe.png (frame | heat map, colour bar, legend), STEM_localize.json "
                    "(raw 7x7 map, confidence, settings) and with --every STEM_overlay.mp4.", EXAMPLES)
    io = p.add_argument_group("inputs and outputs")
    source = io.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="CKPT",
                        help="trained model: our .pt, the official .pth or a Lightning .ckpt")
    source.add_argument("--baseline", choices=BASELINES,
                        help="no model: a training-free map of the evaluator (pipeline defaults, --set "
                             "applies); sync: where the change over the audio window follows the loudness")
    io.add_argument("--video", required=True, metavar="FILE", help="any file ffmpeg reads, with an audio track")
    io.add_argument("--output", required=True, metavar="DIR", help="folder for the picture, JSON and video")
    what = p.add_argument_group("what to analyse")
    what.add_argument("--keyframe", type=int, metavar="I", help="frame index of the still (default: the middle frame)")
    what.add_argument("--every", type=int, metavar="K",
                      help="also write an overlay video with a new heat map every K frames (default: no video)")
    what.add_argument("--device", default="cpu", help="where the model runs: cpu or cuda[:N]")
    io.add_argument("--trust-checkpoint", action="store_true",
                    help="load a checkpoint even if it holds classes real ones do not (unpickling it "
                         "may run code); only for files you trust")
    add_config_options(p, None, "flow.device=cuda",
                       set_help="override a pipeline setting of the checkpoint (repeatable), "
                                "e.g. --set flow.device=cuda",
                       print_help="print the pipeline settings used (the checkpoint's, after --set) and exit")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    from eval.runner import EvalError, load_checkpoint
    from pipeline.config import PipelineConfig
    from pipeline.errors import ClipError

    with reported_errors((EvalError, ConfigError, ClipError, FileNotFoundError, ValueError, RuntimeError),
                         os_hint=WRITABLE, on_interrupt=RERUN):
        model: Any = None       # --print-config / --list-keys alone: the pipeline defaults
        if args.checkpoint:
            model = load_checkpoint(args.checkpoint, args.device, args.trust_checkpoint)
        elif args.baseline:
            model = Baseline(args.baseline, BaselineConfig())
        resolve_config(args, PipelineConfig, None,
                       base=checkpoint_settings(model.data_settings if model is not None else None))
        if args.checkpoint and model.data_settings is None:
            print("warning: the checkpoint records no data settings; using the pipeline defaults",
                  file=sys.stderr)
        result = localize(model, args.video, args.output, args.every, args.keyframe, args.overrides,
                          device=args.device)
    print(f"keyframe {result['keyframe_index']}: {Path(args.output) / result['keyframe_png']}")
    if "overlay_video" in result:
        print(f"overlay video: {Path(args.output) / result['overlay_video']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
