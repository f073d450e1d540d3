"""A training-free cue the matrix's baselines lack: motion over time against the sound.

For each test clip of a world made by ``apps.demo`` / ``apps.synth`` (its videos and its test
shards), the frames are decoded whole, the absolute difference of consecutive grey frames is
averaged over a 7x7 grid (how much each place changes, frame by frame), the audio's loudness
(RMS) is taken over the same frame intervals, both are smoothed over ``--window`` frames, and
each cell's map value is the correlation over time of its change with the loudness. No
optical flow, no training: ~0.1 s per 4-s clip on one core. Scored as the evaluator scores
maps (cIoU@0.5 with the clip's boxes), on all clips and on the same-class ones.

    python bench/sync_probe.py --world-dir DEMO_OUT [--window 12]

DEMO_OUT holds ``world/`` (video/, world.json) and ``shards/test-*.tar``, as ``python -m
apps.demo --output DEMO_OUT`` leaves them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from htf.metrics import clip_ciou  # noqa: E402

GRID = 7


def motion_and_loudness(video: Path, side: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """([T-1, 7, 7] mean absolute change of each grid cell between consecutive frames,
    [T-1] audio RMS over the same frame intervals)."""
    import av
    import cv2

    grey, sound = [], []
    with av.open(str(video)) as container:          # one pass over the file for both streams
        for frame in container.decode(video=0, audio=0):
            if isinstance(frame, av.AudioFrame):
                sound.append(frame.to_ndarray().astype(np.float32).mean(axis=0))
            else:
                grey.append(cv2.resize(frame.to_ndarray(format="gray").astype(np.float32), (side, side),
                                       interpolation=cv2.INTER_AREA))
    frames, audio = np.stack(grey), np.concatenate(sound)
    change = np.abs(np.diff(frames, axis=0))
    cells = change.reshape(len(change), GRID, side // GRID, GRID, side // GRID).mean(axis=(2, 4))
    hop = len(audio) / len(frames)
    loudness = np.array([np.sqrt(np.mean(audio[int(i * hop):int((i + 1) * hop)] ** 2) + 1e-12)
                         for i in range(1, len(frames))])
    return cells, loudness


def smooth(series: np.ndarray, window: int) -> np.ndarray:
    """Moving average over ``window`` steps along the first axis (same length)."""
    kernel = np.ones(window) / window
    return np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), 0, series)


def sync_map(cells: np.ndarray, loudness: np.ndarray, window: int) -> np.ndarray:
    """[7, 7] correlation over time of each cell's change with the loudness (both smoothed)."""
    change = smooth(cells, window)
    sound = smooth(loudness, window)
    change = change - change.mean(axis=0)
    sound = sound - sound.mean()
    num = (change * sound[:, None, None]).sum(axis=0)
    return num / (np.sqrt((change ** 2).sum(axis=0) * (sound ** 2).sum()) + 1e-9)


def score_world(world_dir: Path, window: int) -> dict[str, dict[str, float | int]]:
    """cIoU@0.5 of the mean-change map and the sync map, on all test clips and per kind."""
    from apps.demo import clip_kinds
    from htf.shards import read_samples

    kinds = clip_kinds(world_dir / "world")
    urls = [str(p) for p in sorted((world_dir / "shards").glob("test-*.tar"))]
    results: dict[str, list[tuple[float, str]]] = {"mean change": [], "sync": []}
    for _, sample in read_samples(urls, lambda failure: print(f"warning: {failure}", file=sys.stderr)):
        cells, loudness = motion_and_loudness(world_dir / "world" / "video" / f"{sample.id}.mp4")
        for name, amap in (("mean change", cells.mean(axis=0)), ("sync", sync_map(cells, loudness, window))):
            results[name].append((clip_ciou(amap, sample.meta.boxes, sample.meta.box_format), kinds[sample.id]))
    table = {}
    for name, rows in results.items():
        cious = np.array([c for c, _ in rows])
        kind = np.array([k for _, k in rows])
        table[name] = {"n": len(cious), "ciou_at_0.5": float((cious >= 0.5).mean())}
        if (kind == "same").any():
            table[name]["same_class"] = float((cious[kind == "same"] >= 0.5).mean())
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/sync_probe.py", description=__doc__.split("\n")[0])
    p.add_argument("--world-dir", required=True, help="an apps.demo output folder (world/ and shards/)")
    p.add_argument("--window", type=int, default=12, help="smoothing in frames (12 = 0.48 s at 25 fps)")
    a = p.parse_args(argv)
    world_dir = Path(a.world_dir)
    if not (world_dir / "world" / "video").is_dir() or not list((world_dir / "shards").glob("test-*.tar")):
        print(f"error: {world_dir} has no world/video/ or no shards/test-*.tar; give an apps.demo output folder",
              file=sys.stderr)
        return 2
    for name, row in score_world(world_dir, a.window).items():
        same = f", same-class {row['same_class']:.3f}" if "same_class" in row else ""
        print(f"{name}: cIoU@0.5 {row['ciou_at_0.5']:.3f} over {row['n']} test clips{same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
