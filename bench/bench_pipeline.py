"""CPU benchmark: the pipeline vs a naive per-clip script in the style of the official code.

    python bench/bench_pipeline.py [--n-synth 500] [--real /work/shared/data/real_videos]
                                   [--out bench/results_pipeline.md]

Naive script, per clip (what the official preprocessing does): OpenCV capture with a frame
seek to the middle, JPEG write of the frame, Farneback on grayscale frames at native
resolution, a JPEG write per flow channel, librosa.load of the whole file at 22,050 Hz,
the 3 s middle window, scipy spectrogram, one .npy per clip.

Pipeline: ``python -m pipeline run`` (PyAV seek, DIS or Farneback on the stored 256-px
frames, log-mel, WebDataset shards) with --workers 1 and 2. Also timed: a two-frame seek
with PyAV vs ffmpeg-python. Reported: clips/s per core and the ratio.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def naive_clip(video: Path, out: Path) -> None:
    import cv2
    import librosa
    from scipy import signal

    cap = cv2.VideoCapture(str(video))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.set(cv2.CAP_PROP_POS_FRAMES, n // 2)
    ok0, f0 = cap.read()
    ok1, f1 = cap.read()
    cap.release()
    if not (ok0 and ok1):
        raise RuntimeError("cannot read frames")
    cv2.imwrite(str(out / f"{video.stem}.jpg"), f0)
    flow = cv2.calcOpticalFlowFarneback(cv2.cvtColor(f0, cv2.COLOR_BGR2GRAY), cv2.cvtColor(f1, cv2.COLOR_BGR2GRAY),
                                        None, 0.5, 3, 15, 3, 5, 1.2, 0)
    cv2.imwrite(str(out / f"{video.stem}_x.jpg"), flow[..., 0])
    cv2.imwrite(str(out / f"{video.stem}_y.jpg"), flow[..., 1])
    wave, sr = librosa.load(str(video), sr=22050, mono=True)
    if len(wave) < 3 * sr:
        wave = np.tile(wave, 3 * sr // max(len(wave), 1) + 1)
    mid = len(wave) // 2
    seg = wave[max(0, mid - 3 * sr // 2): max(0, mid - 3 * sr // 2) + 3 * sr]
    _, _, spec = signal.spectrogram(seg, sr, nperseg=512, noverlap=274)
    np.save(out / f"{video.stem}_spec.npy", np.log(spec + 1e-7) / 12)


def run_naive(videos: list[Path]) -> tuple[float, int]:
    import warnings

    import cv2

    warnings.filterwarnings("ignore")     # librosa's audioread fallback warns on every clip

    cv2.setNumThreads(1)
    ok = 0
    with tempfile.TemporaryDirectory() as td:
        start = time.perf_counter()
        for v in videos:
            try:
                naive_clip(v, Path(td))
                ok += 1
            except Exception:
                pass
        return time.perf_counter() - start, ok


def run_pipeline_cli(input_dir: Path, workers: int, flow: str, extra: list[str]) -> tuple[float, str]:
    out = Path(tempfile.mkdtemp(prefix="bench_pipe_"))
    cmd = [sys.executable, "-m", "pipeline", "run", "--input", str(input_dir), "--output", str(out),
           "--workers", str(workers), "--flow", flow, "--no-progress", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return seconds, proc.stdout.strip().splitlines()[0]


def seek_benchmark(videos: list[Path]) -> tuple[float, float]:
    """Seconds per clip for a two-frame read at the middle: PyAV vs ffmpeg-python."""
    import ffmpeg

    sys.path.insert(0, str(ROOT))
    from pipeline.decode import _decode_pair
    from pipeline.index import probe_video

    start = time.perf_counter()
    for v in videos:
        probe = probe_video(str(v))
        _decode_pair(str(v), probe, probe.frame_count // 2, (256, 256), False)
    pyav = (time.perf_counter() - start) / len(videos)
    start = time.perf_counter()
    for v in videos:
        info = ffmpeg.probe(str(v))
        stream = next(s for s in info["streams"] if s["codec_type"] == "video")
        t = float(stream.get("duration") or info["format"]["duration"]) / 2
        ffmpeg.input(str(v), ss=t).output("pipe:", vframes=2, format="rawvideo", pix_fmt="rgb24",
                                          s="256x256").run(capture_stdout=True, quiet=True)
    return pyav, (time.perf_counter() - start) / len(videos)


def bench_set(name: str, input_dir: Path, videos: list[Path], flows: list[str], extra: list[str]) -> list[str]:
    lines = [f"\n### {name}: {len(videos)} clips\n",
             "| path | workers | seconds | clips/s | clips/s per core | x naive (per core) |",
             "|---|---|---|---|---|---|"]
    t_naive, ok = run_naive(videos)
    naive_rate = len(videos) / t_naive
    lines.append(f"| naive official-style script ({ok} ok) | 1 | {t_naive:.1f} | {naive_rate:.2f} | {naive_rate:.2f} | 1.0 |")
    for flow in flows:
        for workers in (1, 2):
            seconds, summary = run_pipeline_cli(input_dir, workers, flow, extra)
            rate = len(videos) / seconds
            lines.append(f"| pipeline, {flow} | {workers} | {seconds:.1f} | {rate:.2f} | {rate / workers:.2f} "
                         f"| {rate / workers / naive_rate:.1f} |")
            print(f"  {name} {flow} w{workers}: {summary}", flush=True)
    pyav, ffm = seek_benchmark(videos[:20])
    lines.append(f"\nTwo-frame seek at the middle (20 clips): PyAV {pyav * 1000:.1f} ms/clip, "
                 f"ffmpeg-python {ffm * 1000:.1f} ms/clip (x{ffm / pyav:.1f}).")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-synth", type=int, default=500)
    p.add_argument("--synth-size", type=int, default=256)
    p.add_argument("--real", default="/work/shared/data/real_videos")
    p.add_argument("--flows", nargs="+", default=["dis", "farneback"])
    p.add_argument("--out", default=str(ROOT / "bench" / "results_pipeline.md"))
    a = p.parse_args(argv)
    lines = ["# Pipeline CPU benchmark", "",
             f"Machine: {os.cpu_count()} cores (shared with other work while measured); "
             "wall-clock seconds including process start.",
             "Pipeline: PyAV seek + flow on 256-px stored frames + log-mel + WebDataset shards; "
             "per-core rate = clips/s / workers."]
    real = Path(a.real)
    if real.is_dir():
        videos = sorted(v for v in real.iterdir() if v.is_file())
        lines += bench_set("real clips", real, videos, a.flows, ["--set", "pack.samples_per_shard=4"])
    with tempfile.TemporaryDirectory() as td:
        subprocess.run([sys.executable, "-m", "pipeline.synth", "--output", td, "--n", str(a.n_synth),
                        "--size", str(a.synth_size), "--workers", str(os.cpu_count() or 1)],
                       cwd=ROOT, check=True, capture_output=True)
        videos = sorted((Path(td) / "video").glob("*.mp4"))
        lines += bench_set(f"synthetic {a.synth_size}px", Path(td), videos, a.flows,
                           ["--set", "pack.samples_per_shard=50"])
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
