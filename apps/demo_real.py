"""``make demo-real VIDEOS=DIR``: the same pipeline and ``apps.localize`` over real footage.

Runs ``python -m pipeline run`` over a folder of real videos (``--videos DIR``), then
``python -m apps.localize`` on every clip the pipeline accepted, once with the model and
once with the training-free sync map, and writes ``OUT/summary.md``: clips processed, clips
rejected with their reasons, and the pictures side by side.

Plainly: the checkpoint used here was trained from scratch on the synthetic world (no
ImageNet or released weights can be downloaded on this machine, and no real training data
is at hand), so its heat maps on real footage show that the whole path runs on files
nobody here made -- odd frame rates, portrait video, missing audio -- not that it has
learned where real sounds come from. Pass ``--checkpoint`` with real weights (e.g. the
released ``vgg.pth`` and the ``htf-official`` pipeline settings) for meaningful maps.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from eval.baselines import Baseline
from eval.config import BaselineConfig
from htf.cli import command, fail, make_parser, parse_args
from htf.io import atomic_write_text, read_json_lines
from htf.model import load_model
from apps.demo import REPO, DemoPlan, make_shards, make_shards_from_folder, make_world, train_model

DEFAULT_CHECKPOINT = REPO / "demo_out" / "runs" / "htf" / "checkpoints" / "best.pt"


def ensure_checkpoint(checkpoint: Path | None, out: Path) -> Path:
    """The checkpoint to localise with: the given one, the demo's, or a short synthetic run."""
    if checkpoint is not None:
        if not checkpoint.is_file():
            raise fail(f"--checkpoint {checkpoint}: no such file")
        return checkpoint
    if DEFAULT_CHECKPOINT.is_file():
        return DEFAULT_CHECKPOINT
    print("[demo-real] no checkpoint from `make demo` found: training a small one on a "
          "synthetic world first", flush=True)
    plan = DemoPlan(output=out / "synthetic", n=240)
    shards = make_shards(plan, make_world(plan))
    return train_model(plan, shards, "htf", ["train.steps=40"]) / "checkpoints" / "best.pt"


def pipeline_preset_of(checkpoint: Path, path: Path) -> Path:
    """A pipeline preset with the frame, flow and audio settings the checkpoint was trained on,
    so the shards made here match what ``apps.localize`` feeds the model."""
    from htf.model import load_model

    settings = load_model(str(checkpoint)).data_settings or {}
    preset = {k: settings[k] for k in ("frames", "flow", "audio") if k in settings}
    atomic_write_text(path, yaml.safe_dump(preset, sort_keys=False))
    return path


def summarize_pipeline(shards: Path) -> tuple[list[str], list[dict]]:
    failures = read_json_lines(shards / "failures.jsonl")[0]
    failed_ids = {f.get("id") for f in failures}
    accepted = {rec["id"] for rec in read_json_lines(shards / "index.jsonl")[0]
                if "id" in rec and rec["id"] not in failed_ids and rec.get("ok", True)}
    return sorted(accepted), failures


SYNC_NOTE = ("The sync map (`apps.localize --baseline sync`) needs no training: per place, how "
             "closely the frame-to-frame change over the audio window follows the sound's loudness. "
             "Where the source moves with its sound (a speaking mouth, a struck drum) it can point at "
             "it on any footage; it also lights whatever else changes in time with the loudness "
             "(cuts, flicker, gestures), and says nothing where nothing moves with the sound.")


def localize_all(model: Any, videos: list[Path], out: Path, every: int,
                 with_overlay: int) -> tuple[list[str], list[tuple[str, str]]]:
    """``apps.localize`` on each clip with one model (or baseline); a failing clip is recorded,
    not fatal."""
    from apps.localize import localize

    done, failed = [], []
    for k, video in enumerate(videos):
        print(f"[demo-real] localize {video.name} ({out.name})", flush=True)
        try:
            localize(model, str(video), out, every=every if k < with_overlay else None)
            done.append(video.stem)
        except Exception as err:  # one bad clip must not stop the others
            failed.append((video.stem, f"{type(err).__name__}: {err}"))
    return done, failed


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("apps.demo_real", "The pipeline and localize over a folder of real videos: "
                    "keyframe heat maps, overlay videos and OUT/summary.md (clips accepted, clips "
                    "rejected with their reasons).", """\
  # a folder of videos, with the checkpoint `make demo` trained
  %(prog)s --videos MY_VIDEOS --output demo_out/real
  # your own weights
  %(prog)s --output OUT --videos MY_VIDEOS --checkpoint RUN/checkpoints/best.pt
""")
    g = p.add_argument_group("inputs and outputs")
    g.add_argument("--output", default="demo_out/real", metavar="OUT", help="folder for every output")
    g.add_argument("--videos", type=Path, required=True, metavar="DIR", help="folder of real video files")
    g.add_argument("--checkpoint", type=Path, default=None, metavar="CKPT",
                   help="model to localise with (default: the one `make demo` trained, else a short "
                        "synthetic training)")
    g.add_argument("--every", type=int, default=10, metavar="K", help="overlay video: heat map every K frames")
    g.add_argument("--videos-with-overlay", type=int, default=2, metavar="N",
                   help="how many clips also get a whole-clip overlay video")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    a = parse_args(build_parser(), argv)
    out = Path(a.output).resolve()
    if not a.videos.is_dir():
        raise fail(f"--videos {a.videos}: not a folder; give the folder that holds the video files")
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = ensure_checkpoint(a.checkpoint, out)
    shards = make_shards_from_folder(a.videos, out / "shards", out / "logs",
                                     pipeline_preset_of(checkpoint, out / "pipeline_from_checkpoint.yaml"))
    accepted, failures = summarize_pipeline(shards)
    videos = {v.stem: v for v in a.videos.iterdir() if v.is_file()}
    clips = [videos[c] for c in accepted]
    pictures, localize_failures = localize_all(load_model(str(checkpoint)), clips, out / "localize",
                                               a.every, a.videos_with_overlay)
    synced, sync_failures = localize_all(Baseline("sync", BaselineConfig()), clips, out / "sync", a.every, 0)
    reasons = Counter(f.get("reason", "?") for f in failures)
    lines = ["# Real footage through the whole path", "", __doc__.split("\n\n")[2].replace("\n", " "), "",
             f"- videos in {a.videos}: {len(videos)}",
             f"- accepted by the pipeline (became samples): {len(accepted)}",
             f"- rejected by the pipeline: {len(failures)}",
             f"- localised (keyframe overlay written): {len(pictures)}",
             f"- sync maps written: {len(synced)}", "",
             "## Rejected clips and why", ""]
    lines += [f"- `{f.get('id')}` ({f.get('stage')}): {f.get('reason')} -- {f.get('detail', '')}"
              for f in failures] or ["- none"]
    if localize_failures or sync_failures:
        lines += ["", "## Localisation failures", ""] + [f"- `{c}`: {r}" for c, r in localize_failures]
        lines += [f"- `{c}` (sync map): {r}" for c, r in sync_failures]
    lines += ["", f"Rejections by reason: {dict(reasons)}", "", "## Keyframe heat maps: the model and the sync map",
              "", SYNC_NOTE, "", "| clip | model | sync map |", "|---|---|---|"]
    lines += [f"| `{c}` | " + (f"![{c}](localize/{c}_keyframe.png)" if c in pictures else "failed") + " | "
              + (f"![{c} sync](sync/{c}_keyframe.png)" if c in synced else "failed") + " |"
              for c in accepted if c in pictures or c in synced]
    summary = out / "summary.md"
    atomic_write_text(summary, "\n".join(lines) + "\n")
    print(f"[demo-real] {len(accepted)} accepted, {len(failures)} rejected, {len(pictures)} localised")
    for f in failures:
        print(f"  rejected {f.get('id')}: {f.get('reason')} ({f.get('detail', '')})")
    print(f"[demo-real] wrote {summary}, pictures in {out / 'localize'} and {out / 'sync'}, shards in {shards}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
