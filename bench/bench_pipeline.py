"""CPU benchmark: the pipeline vs a naive per-clip script in the style of the official code.

    python bench/bench_pipeline.py [--n-synth 500] [--real FOLDER_OF_REAL_CLIPS]
                                   [--out bench/results_pipeline.md]

Naive script, per clip (what the official preprocessing does): OpenCV capture with a frame
seek to the middle, JPEG write of the frame, Farneback on grayscale frames at native
resolution, a JPEG write per flow channel, librosa.load of the whole file at 22,050 Hz,
the 3 s middle window, scipy spectrogram, one .npy per clip.

Pipeline: ``python -m pipeline run`` (PyAV seek, DIS or Farneback on the stored 256-px
frames, log-mel, WebDataset shards) with --workers 1 and 2, timed from process start to
exit (interpreter start and imports included; the naive script's imports are done before
its clock starts). Also timed: a two-frame seek with PyAV vs ffmpeg-python, and on the
synthetic set the flow error of each method against the world's true object motion.

Reported: wall-clock clips/s per core and its ratio to the naive script, and CPU seconds
per clip (user + system of every process and thread involved, from getrusage), which
stay meaningful when other jobs share the cores. Load averages are recorded per set.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
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


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_naive(videos: list[Path]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds incl. decoder threads and librosa's ffmpeg children, clips ok)."""
    import warnings

    import cv2
    import librosa  # noqa: F401  (imported at the top of an official-style script: not timed)
    from scipy import signal  # noqa: F401

    warnings.filterwarnings("ignore")     # librosa's audioread fallback warns on every clip

    cv2.setNumThreads(1)
    ok = 0
    with tempfile.TemporaryDirectory() as td:
        cpu0 = _cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        for v in videos:
            try:
                naive_clip(v, Path(td))
                ok += 1
            except Exception:
                pass
        wall = time.perf_counter() - start
        cpu = _cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0
        return wall, cpu, ok


def run_pipeline_cli(input_dir: Path, workers: int, flow: str, extra: list[str],
                     keep: Path | None = None) -> tuple[float, float, str]:
    """(wall seconds from process start to exit, CPU seconds of it and its workers, summary)."""
    out = keep or Path(tempfile.mkdtemp(prefix="bench_pipe_"))
    cmd = [sys.executable, "-m", "pipeline", "run", "--input", str(input_dir), "--output", str(out),
           "--workers", str(workers), "--flow", flow, "--no-progress", *extra]
    cpu0 = _cpu_seconds(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0
    if keep is None:
        shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return seconds, cpu, proc.stdout.strip().splitlines()[0]


def seek_benchmark(videos: list[Path]) -> tuple[float, float]:
    """Seconds per clip for a two-frame read at the middle: PyAV vs ffmpeg-python."""
    import ffmpeg

    sys.path.insert(0, str(ROOT))
    from pipeline.config import FramesConfig
    from pipeline.decode import _decode_pair
    from pipeline.index import probe_video

    start = time.perf_counter()
    for v in videos:
        probe = probe_video(str(v))
        _decode_pair(str(v), probe, probe.frame_count // 2, FramesConfig(short_side=256, max_long_side=256), False)
    pyav = (time.perf_counter() - start) / len(videos)
    start = time.perf_counter()
    for v in videos:
        info = ffmpeg.probe(str(v))
        stream = next(s for s in info["streams"] if s["codec_type"] == "video")
        t = float(stream.get("duration") or info["format"]["duration"]) / 2
        ffmpeg.input(str(v), ss=t).output("pipe:", vframes=2, format="rawvideo", pix_fmt="rgb24",
                                          s="256x256").run(capture_stdout=True, quiet=True)
    return pyav, (time.perf_counter() - start) / len(videos)


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _flow_label(flow: str) -> str:
    return {"dis": "dis (medium)", "dis-fast": "dis fast",
            "dis-motion": "dis (medium) + motion series"}.get(flow, flow)


def _flow_args(flow: str) -> tuple[str, list[str]]:
    """'dis-fast' is DIS with the fast preset; 'dis-motion' DIS with the motion series (what
    the sync map costs); other names are --flow methods."""
    if flow == "dis-fast":
        return "dis", ["--set", "flow.dis.preset=fast"]
    if flow == "dis-motion":
        return "dis", ["--set", "motion.series=true"]
    return flow, []


def bench_set(name: str, input_dir: Path, videos: list[Path], flows: list[str], extra: list[str],
              keep_dir: Path | None = None) -> list[str]:
    n = len(videos)
    lines = [f"\n### {name}: {n} clips (load average 1/5/15 min at start: {_load()})\n",
             "| path | workers | wall s | clips/s | clips/s per core | x naive per core | CPU s | CPU ms/clip "
             "| x naive CPU |",
             "|---|---|---|---|---|---|---|---|---|"]
    t_naive, cpu_naive, ok = run_naive(videos)
    naive_rate = n / t_naive
    lines.append(f"| naive official-style script ({ok} ok) | 1 | {t_naive:.1f} | {naive_rate:.2f} | {naive_rate:.2f} "
                 f"| 1.0 | {cpu_naive:.1f} | {cpu_naive / n * 1000:.0f} | 1.0 |")
    for flow in flows:
        method, flow_extra = _flow_args(flow)
        for workers in (1, 2):
            keep = keep_dir / flow if keep_dir is not None and workers == 1 else None
            seconds, cpu, summary = run_pipeline_cli(input_dir, workers, method, extra + flow_extra, keep)
            rate = n / seconds
            lines.append(f"| pipeline, {_flow_label(flow)} | {workers} | {seconds:.1f} | {rate:.2f} | {rate / workers:.2f} "
                         f"| {rate / workers / naive_rate:.1f} | {cpu:.1f} | {cpu / n * 1000:.0f} "
                         f"| {cpu_naive / cpu:.1f} |")
            print(f"  {name} {flow} w{workers}: {summary}", flush=True)
    pyav, ffm = seek_benchmark(videos[:20])
    lines.append(f"\nTwo-frame seek at the middle (20 clips): PyAV {pyav * 1000:.1f} ms/clip, "
                 f"ffmpeg-python {ffm * 1000:.1f} ms/clip (x{ffm / pyav:.1f}). Load average at the end: {_load()}.")
    return lines


def flow_error_table(world: Path, outputs: dict[str, Path]) -> list[str]:
    """Median end-point error (px) of the stored flow against the synthetic world's true
    motion between keyframe and keyframe + 1: on moving objects (where each is on top,
    central 60 % of its box), on still objects, and on the background."""
    sys.path.insert(0, str(ROOT))
    from apps.synth import object_center
    from tests.pipeline_helpers import read_shards

    info = json.loads((world / "world.json").read_text())
    fps = _synth_fps(world)
    k = info["keyframe_index"]
    plans = {c["id"]: c for c in info["clips"]}
    lines = ["\nFlow error against the true object motion (synthetic set, median end-point error in px):\n",
             "| flow | moving objects | still objects | background |", "|---|---|---|---|"]
    for flow, out in outputs.items():
        moving, still, background = [], [], []
        for sample in read_shards(out):
            owner = _owners(plans[sample.id], sample.frame.shape[0], k / fps, object_center)
            for i, obj in enumerate(plans[sample.id]["objects"]):
                mask = owner == i
                if mask.sum() < 50:
                    continue
                a = object_center(obj, k / fps, k / fps)
                b = object_center(obj, (k + 1) / fps, k / fps)
                err = np.median(np.hypot(sample.flow[0][mask] - (b[0] - a[0]), sample.flow[1][mask] - (b[1] - a[1])))
                (moving if obj["motion"]["amp"] > 0 else still).append(err)
            bg = owner == -1
            if bg.sum() > 50:
                background.append(np.median(np.hypot(sample.flow[0][bg], sample.flow[1][bg])))
        lines.append(f"| {_flow_label(flow)} | {np.median(moving):.3f} (n={len(moving)}) | {np.median(still):.3f} "
                     f"| {np.median(background):.3f} |")
    return lines


def _synth_fps(world: Path) -> float:
    import yaml

    return float(yaml.safe_load((world / "synth_config.yaml").read_text())["fps"])


def _owners(plan: dict, size: int, t: float, object_center) -> np.ndarray:
    """Index of the object on top at each pixel of the keyframe (central 60 % of each box)."""
    owner = -np.ones((size, size), int)
    for i in plan["draw_order"]:
        obj = plan["objects"][i]
        cx, cy = object_center(obj, t, t)
        x0, x1 = max(int(cx - 0.3 * obj["w"]), 0), max(int(cx + 0.3 * obj["w"]), 0)
        y0, y1 = max(int(cy - 0.3 * obj["h"]), 0), max(int(cy + 0.3 * obj["h"]), 0)
        owner[y0:y1, x0:x1] = i
    return owner


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-synth", type=int, default=500)
    p.add_argument("--synth-size", type=int, default=256)
    p.add_argument("--real", help="a folder of real clips (the 'real' set is measured only when given)")
    p.add_argument("--flows", nargs="+", default=["dis", "dis-motion", "dis-fast", "farneback"],
                   help="dis (medium preset, the default), dis-motion (with the motion series), "
                        "dis-fast, farneback")
    p.add_argument("--sets", nargs="+", default=["real", "synthetic"])
    p.add_argument("--out", default=str(ROOT / "bench" / "results_pipeline.md"))
    a = p.parse_args(argv)
    lines = ["# Pipeline CPU benchmark", "",
             f"Machine: {os.cpu_count()} cores (shared with other work while measured); "
             "wall-clock seconds including process start.",
             "Pipeline: PyAV seek + flow on 256-px stored frames + log-mel + WebDataset shards; "
             "per-core rate = clips/s / workers."]
    if "real" in a.sets and a.real:
        real = Path(a.real)
        if not real.is_dir():
            p.error(f"--real {a.real}: not a folder")
        videos = sorted(v for v in real.iterdir() if v.is_file())
        lines += bench_set("real clips", real, videos, a.flows, ["--set", "pack.samples_per_shard=4"])
    if "synthetic" in a.sets:
        with tempfile.TemporaryDirectory() as td:
            world, kept = Path(td) / "world", Path(td) / "out"
            subprocess.run([sys.executable, "-m", "apps.synth", "--output", str(world), "--n", str(a.n_synth),
                            "--size", str(a.synth_size), "--workers", str(os.cpu_count() or 1)],
                           cwd=ROOT, check=True, capture_output=True)
            videos = sorted((world / "video").glob("*.mp4"))
            lines += bench_set(f"synthetic {a.synth_size}px", world, videos, a.flows,
                               ["--set", "pack.samples_per_shard=50"], keep_dir=kept)
            lines += flow_error_table(world, {f: kept / f for f in a.flows})
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
