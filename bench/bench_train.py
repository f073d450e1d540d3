"""Trainer speed on a CPU: loader throughput and the tiny preset's training rate.

1. Loader, per core (one process, one thread, same clips, same 224-px official-style
   augmentation): our shard stream (JPEG + float16 flow at short side 256 + precomputed
   spectrogram in a tar) against a per-file loader in the official style (native-size
   frame JPEG, two flow JPEGs and a WAV per clip; the spectrogram computed in the loader
   with scipy), and the same per-file loader on files at short side 256.
2. The ``tiny`` preset under ``torchrun --nproc-per-node 2`` on synthetic shards of the
   synthetic-world format (128-px frames, 64x301 log-mel): samples/s and the fraction of
   step time spent waiting for data (first log window, the warm-up, left out).

    python bench/bench_train.py [--clips 192] [--steps 30] [--out bench/results_train.md]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import scipy.io.wavfile
import scipy.signal
import torch
import torchvision.transforms.functional as TF
import webdataset as wds
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from htf.sample import ClipSample, SampleMeta, encode_sample  # noqa: E402
from htf.model_config import ModelConfig  # noqa: E402
from train.config import AugmentConfig, DataConfig  # noqa: E402
from htf.shards import expand_shards  # noqa: E402
from train.data import TrainStream  # noqa: E402

SR = 22050


# ------------------------------------------------------------------------------ clips

def smooth_image(rng: np.random.Generator, w: int, h: int | None = None) -> np.ndarray:
    """Natural-ish frame (low-frequency colour + shapes) so JPEG sizes are realistic."""
    h = h or w
    img = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (w, h),
                     interpolation=cv2.INTER_CUBIC)
    for _ in range(4):
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, center, int(rng.integers(10, min(w, h) // 3)), c, -1)
    return img


def short_side(img: np.ndarray, side: int = 256) -> np.ndarray:
    h, w = img.shape[:2]
    scale = side / min(h, w)
    return cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def official_spectrogram(wave: np.ndarray) -> np.ndarray:
    """3 s centred window, scipy spectrogram (512, 274), log(S + 1e-7) / 12: [257, 276]."""
    n = 3 * SR
    mid = len(wave) // 2
    seg = wave[mid - n // 2: mid - n // 2 + n]
    _, _, spec = scipy.signal.spectrogram(seg, SR, nperseg=512, noverlap=274)
    return (np.log(spec + 1e-7) / 12.0).astype(np.float32)


def write_dataset(folder: Path, clips: int, native: tuple[int, int], seed: int = 0) -> tuple[str, list[Path], list[str]]:
    """The same clips as shards (frames at short side 256, as the pipeline stores them) and
    as per-file folders (frame.jpg, flow x/y jpg, wav) at native size and at short side 256."""
    rng = np.random.default_rng(seed)
    roots = [folder / "files_native", folder / "files_256"]
    for root, sub in itertools.product(roots, ("frames", "flow", "audio")):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    with wds.TarWriter(str(folder / "bench-000000.tar")) as sink:
        for i in range(clips):
            cid = f"clip{i:05d}"
            frame = smooth_image(rng, *native)
            flow = cv2.resize(rng.normal(0, 3, (16, 16, 2)).astype(np.float32), native)
            wave = (0.3 * rng.standard_normal(10 * SR)).astype(np.float32)
            for root, (fr, fl) in zip(roots, [(frame, flow), (short_side(frame), short_side(flow))]):
                cv2.imwrite(str(root / "frames" / f"{cid}.jpg"), cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
                for axis, name in enumerate("xy"):
                    cv2.imwrite(str(root / "flow" / f"{cid}_{name}.jpg"),
                                np.clip(np.round(fl[:, :, axis]), 0, 255).astype(np.uint8))
                scipy.io.wavfile.write(root / "audio" / f"{cid}.wav", SR, (wave * 32767).astype(np.int16))
            meta = SampleMeta(pipeline={"flow": {"encoding": "signed"}, "audio": {"feature": "linear"}})
            stored = ClipSample(cid, short_side(frame), short_side(flow).transpose(2, 0, 1).copy(),
                                official_spectrogram(wave), meta)
            sink.write(encode_sample(stored))
            ids.append(cid)
    return str(folder / "bench-000000.tar"), roots, ids


# ----------------------------------------------------------------------------- loaders

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def per_file_item(files: Path, cid: str, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """One clip the way the official loader prepares it (PIL + torchvision, spectrogram here)."""
    frame = Image.open(files / "frames" / f"{cid}.jpg").convert("RGB")
    flow = [Image.open(files / "flow" / f"{cid}_{a}.jpg").convert("L") for a in "xy"]
    rate, pcm = scipy.io.wavfile.read(files / "audio" / f"{cid}.wav")
    spec = official_spectrogram(pcm.astype(np.float32) / 32768.0)
    frame = TF.resize(frame, 246, interpolation=TF.InterpolationMode.BICUBIC)
    flow = [TF.resize(f, 246, interpolation=TF.InterpolationMode.BICUBIC) for f in flow]
    top, left = (int(v) for v in rng.integers(0, 246 - 224 + 1, 2))
    frame, flow = TF.crop(frame, top, left, 224, 224), [TF.crop(f, top, left, 224, 224) for f in flow]
    if rng.random() < 0.5:
        frame, flow = TF.hflip(frame), [TF.hflip(f) for f in flow]
    image = TF.normalize(TF.to_tensor(frame), MEAN, STD)
    flow_t = torch.cat([TF.to_tensor(f) for f in flow])
    return image, flow_t, torch.from_numpy(spec)[None]


def time_per_file(files: Path, ids: list[str], batch: int) -> float:
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    n = 0
    for chunk in (ids[i:i + batch] for i in range(0, len(ids), batch)):
        items = [per_file_item(files, cid, rng) for cid in chunk]
        _ = [torch.stack(t) for t in zip(*items)]
        n += len(items)
    return n / (time.perf_counter() - start)


def time_shards(url: str, clips: int, batch: int) -> float:
    cfg = ModelConfig(image_size=224)
    stream = TrainStream(expand_shards(url), cfg, AugmentConfig(audio_time_shift=False),
                         DataConfig(batch_size=batch, workers=0, shuffle_buffer=0), 0, 1, 0)
    it = iter(stream)
    next(it)                                             # open the tar once (warm-up)
    start = time.perf_counter()
    steps = clips // batch
    for _ in range(steps):
        next(it)
    return steps * batch / (time.perf_counter() - start)


# ------------------------------------------------------------------------- tiny preset

def tiny_training(folder: Path, clips: int, steps: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    shard_dir = folder / "tiny"
    shard_dir.mkdir()
    per_shard = clips // 2
    for s in range(2):
        with wds.TarWriter(str(shard_dir / f"train-{s:06d}.tar")) as sink:
            for i in range(per_shard):
                frame = smooth_image(rng, 128)
                flow = rng.normal(0, 1, (2, 128, 128)).astype(np.float32)
                spec = rng.normal(-4, 1, (64, 301)).astype(np.float32)
                sink.write(encode_sample(ClipSample(f"t{s}_{i}", frame, flow, spec,
                                                    SampleMeta(pipeline={"flow": {"encoding": "signed"}}))))
    out = folder / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "train", "--config", str(ROOT / "configs/train/tiny.yaml"),
           "--train-shards", str(shard_dir / "train-{000000..000001}.tar"), "--output", str(out),
           "--set", f"train.max_steps={steps}", "--set", "train.log_every_steps=5",
           "--set", f"train.steps={steps}"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True,
                   env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["kind"] == "train"][1:]       # drop the warm-up window
    return {"samples_per_s": float(np.mean([r["samples_per_s"] for r in rows])),
            "data_wait_frac": float(np.mean([r["data_wait_frac"] for r in rows])),
            "wall_s": wall, "steps": steps}


# ---------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=192)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--native", default="640x360", help="native frame size of the per-file loader's files")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench/results_train.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    native = tuple(int(v) for v in args.native.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url, roots, ids = write_dataset(folder, args.clips, native)
        time_per_file(roots[0], ids[: args.batch], args.batch)          # warm-up (imports, cache)
        shard_runs, native_runs, small_runs = [], [], []
        for _ in range(args.repeats):        # interleaved, so shared-CPU noise hits all alike
            shard_runs.append(time_shards(url, args.clips, args.batch))
            native_runs.append(time_per_file(roots[0], ids, args.batch))
            small_runs.append(time_per_file(roots[1], ids, args.batch))
        shards, per_file, per_file_256 = (float(np.median(r)) for r in (shard_runs, native_runs, small_runs))
        tiny = tiny_training(folder, 384, args.steps)
    lines = [
        "# Trainer benchmark (CPU)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"(shared with other work while measured); torch {torch.__version__}. "
        f"Command: `python bench/bench_train.py --clips {args.clips} --steps {args.steps} "
        f"--native {args.native}`. Medians of {args.repeats} interleaved runs.",
        "",
        "## Loader throughput, one process, one thread (224 px, official augmentation)",
        "",
        "Same clips. Shards hold what the pipeline stores (frame and float16 flow at short side",
        "256, spectrogram precomputed). The per-file loader reads what the official",
        f"preprocessing leaves on disk: native-size frame and flow JPEGs ({args.native}, a",
        "typical VGGSound video) and a 10 s WAV whose spectrogram it computes; a second row",
        "gives it files already at short side 256, to separate format from resolution.",
        "",
        "| loader | samples/s per core | shards / this |",
        "|---|---|---|",
        f"| shards (tar: JPEG + float16 flow + precomputed spectrogram) | {shards:.0f} | 1.00x |",
        f"| per-file, official style, native {args.native} | {per_file:.0f} | **{shards / per_file:.2f}x** |",
        f"| per-file, official style, files at short side 256 | {per_file_256:.0f} | {shards / per_file_256:.2f}x |",
        "",
        "## `tiny` preset, `torchrun --nproc-per-node 2` (1 loader worker each)",
        "",
        "| samples/s (both ranks) | data-wait fraction of step time | steps | wall (s, incl. start-up) |",
        "|---|---|---|---|",
        f"| {tiny['samples_per_s']:.1f} | {tiny['data_wait_frac']:.1%} | {tiny['steps']} | {tiny['wall_s']:.0f} |",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
