"""The GPU path end to end: synthetic world -> learned-flow pipeline -> full-size training -> evaluation.

On one GPU machine (finishes in under 8 minutes on an H100/H200-class GPU):

    python bench/gpu_e2e.py --output bench_out/gpu_e2e

and on a CPU with tiny sizes (what the test suite runs; a minute or two):

    python bench/gpu_e2e.py --output /tmp/e2e --cpu-smoke

Stages, each the command a user would type (its log in OUTPUT/logs/):
  1. world     ``python -m apps.synth`` at 256 px (train / val / test splits, boxes);
  2. flow      the learned models alone on pairs of world-sized frames: pairs/s batched
               fp16 on CUDA against one pair at a time in fp32 (the ratio is the speed-up);
  3. pipeline  ``python -m pipeline flow`` over every clip with the first flow model (batched
               fp16 on CUDA; the GPU workers start once), then ``python -m pipeline run`` per
               split from that flow cache (CPU only), then once over every clip with each
               other flow model;
  4. train     ``torchrun -m train``: the full-size model (width 64, 224 px, bf16,
               channels_last, torch.compile), samples/s and data-wait from its metrics;
  5. eval      ``python -m eval`` of the trained checkpoint on the test shards.
Reported: clips/s per stage, flow pairs/s and ratio, training samples/s, data-wait, GPU
utilisation per stage (nvidia-smi samples), wall time. Written: OUTPUT/gpu_e2e.json and
OUTPUT/gpu_e2e.log. Weights are random (nothing is downloaded): this measures speed and
that the path runs, not flow or localisation quality.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gpu_flow_check import make_pairs, timed  # noqa: E402
from gpu_train_check import UtilSampler  # noqa: E402

SPLITS = ("train", "val", "test")
TIME_TARGET_S = 8 * 60


@dataclass(frozen=True)
class Sizes:
    clips: int
    frame_px: int
    seconds: float
    cpu_workers: int
    flow_models: tuple[str, ...]
    flow_pairs: int
    flow_batch: int
    train_steps: int
    train_batch: int
    width: int
    image_size: int
    audio_frames: int | None       # None: the model's default (the official 3 s spectrogram)
    amp: str
    channels_last: bool
    compile: bool
    loader_workers: int
    device: str
    eval_batch: int
    train_sets: tuple[str, ...] = ()   # extra trainer --set KEY=VALUE, applied last


def gpu_sizes(cpus: int) -> Sizes:
    return Sizes(clips=1200, frame_px=256, seconds=4.0, cpu_workers=max(1, cpus - 2),
                 flow_models=("raft", "neuflow2"), flow_pairs=64, flow_batch=16, train_steps=300,
                 train_batch=128, width=64, image_size=224, audio_frames=None, amp="bf16",
                 channels_last=True, compile=True, loader_workers=max(1, min(12, cpus - 2)),
                 device="cuda", eval_batch=128)


def smoke_sizes() -> Sizes:
    # RAFT takes tens of seconds per pair on a shared 2-core CPU: the smoke run uses the
    # fast model only (--flow-models raft neuflow2 runs both anywhere).
    return Sizes(clips=10, frame_px=64, seconds=3.5, cpu_workers=1, flow_models=("neuflow2",),
                 flow_pairs=2, flow_batch=2, train_steps=3, train_batch=4, width=8, image_size=56,
                 audio_frames=32, amp="none", channels_last=True, compile=False, loader_workers=0,
                 device="cpu", eval_batch=8)


@dataclass
class Report:
    sizes: dict[str, Any]
    environment: dict[str, Any]
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    flow: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    within_time_target: bool = False


class Log:
    """Console and OUTPUT/gpu_e2e.log, line by line."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "w", buffering=1)

    def __call__(self, text: str) -> None:
        print(text, flush=True)
        self.file.write(text + "\n")


class StageFailed(RuntimeError):
    pass


def run_stage(cmd: list[str], log_path: Path, log: Log, env: dict[str, str] | None = None) -> None:
    log("$ " + " ".join(shlex.quote(c) for c in cmd))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    if proc.returncode != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise StageFailed(f"stage failed (exit {proc.returncode}), log {log_path}:\n{tail}")


def timed_stage(name: str, report: Report, log: Log, clips: int, device: str, fn, *args) -> Any:
    """Run ``fn``, recording wall time, clips/s and the GPU's mean utilisation meanwhile."""
    start = time.perf_counter()
    with UtilSampler(enabled=device.startswith("cuda")) as util:
        result = fn(*args)
    seconds = time.perf_counter() - start
    report.stages[name] = {"seconds": round(seconds, 2), "clips": clips,
                           "clips_per_s": round(clips / seconds, 2) if clips else None,
                           "gpu_util_mean_pct": None if util.mean is None else round(util.mean, 1)}
    log(f"[{name}] {seconds:.1f} s" + (f", {clips / seconds:.1f} clips/s" if clips else "")
        + (f", GPU {util.mean:.0f} %" if util.mean is not None else ""))
    return result


# ------------------------------------------------------------------------------ stages

def make_world(sizes: Sizes, world: Path, log: Log) -> None:
    run_stage([sys.executable, "-m", "apps.synth", "--output", str(world), "--n", str(sizes.clips),
               "--seed", "0", "--size", str(sizes.frame_px), "--seconds", str(sizes.seconds),
               "--workers", str(sizes.cpu_workers), "--p-same-class", "0.35", "--playing-motion"],
              world.parent / "logs" / "world.log", log)


def flow_rates(model_name: str, sizes: Sizes) -> dict[str, Any]:
    """Pairs/s of one learned model: batched (fp16 on CUDA) vs one pair at a time in fp32."""
    from pipeline.flow_learned import BatchedFlow, load_ptlflow_model

    torch.manual_seed(0)
    model = load_ptlflow_model(model_name, None, allow_random_init=True)
    frames0, frames1 = make_pairs(sizes.flow_pairs, sizes.frame_px, sizes.frame_px)
    fp16 = sizes.device.startswith("cuda")
    batched = BatchedFlow(model, sizes.device, fp16=fp16, kind="ptlflow")
    single = BatchedFlow(model, sizes.device, fp16=False, kind="ptlflow")
    timed(batched, frames0[:sizes.flow_batch], frames1[:sizes.flow_batch], sizes.flow_batch, sizes.device)
    timed(single, frames0[:1], frames1[:1], 1, sizes.device)           # warm-up: kernels, allocator
    _, t_batched = timed(batched, frames0, frames1, sizes.flow_batch, sizes.device)
    _, t_single = timed(single, frames0, frames1, 1, sizes.device)
    batched_rate, single_rate = sizes.flow_pairs / t_batched, sizes.flow_pairs / t_single
    return {"pairs": sizes.flow_pairs, "size": sizes.frame_px, "batch": sizes.flow_batch,
            "batched_precision": "fp16" if fp16 else "fp32",
            "batched_pairs_per_s": round(batched_rate, 2), "single_fp32_pairs_per_s": round(single_rate, 2),
            "ratio_batched_vs_single_fp32": round(batched_rate / single_rate, 2)}


def pipeline_overrides(sizes: Sizes, flow_model: str) -> list[str]:
    sets = [f"frames.short_side={sizes.frame_px}", f"frames.max_long_side={2 * sizes.frame_px}",
            f"flow.method={flow_model}", "flow.resolution=stored", "flow.rescale_vectors=true",
            "flow.encoding=signed", "flow.learned.allow_random_init=true", f"flow.device={sizes.device}",
            f"flow.fp16={str(sizes.device.startswith('cuda')).lower()}", f"flow.batch_size={max(sizes.flow_batch, 2)}"]
    return [arg for s in sets for arg in ("--set", s)]


def fill_flow_cache(sizes: Sizes, world: Path, shards: Path, flow_model: str, logs: Path, log: Log) -> None:
    """``pipeline flow`` over every clip once: the GPU workers start (torch, ptlflow, a CUDA
    context: ~60 s on an H200 machine) once, not once per split; the per-split runs then read
    the flow cache under ``shards`` and never load the model."""
    run_stage([sys.executable, "-m", "pipeline", "flow", "--config", "configs/pipeline/htf-official.yaml",
               "--input", str(world), "--output", str(shards), "--workers", str(sizes.cpu_workers),
               "--no-progress", *pipeline_overrides(sizes, flow_model)],
              logs / f"flow_{flow_model}.log", log)


def run_pipeline(sizes: Sizes, world: Path, shards: Path, flow_model: str, logs: Path, log: Log,
                 splits: tuple[str, ...] = SPLITS) -> None:
    """The official preset's audio (the full model's spectrogram) with learned flow."""
    for split in splits:
        args = ["--split-list", str(world / f"{split}.txt"), "--shard-prefix", split] if split != "all" else \
            ["--shard-prefix", "all"]
        run_stage([sys.executable, "-m", "pipeline", "run", "--config", "configs/pipeline/htf-official.yaml",
                   "--input", str(world), "--output", str(shards), "--annotations", str(world / "boxes.json"),
                   "--workers", str(sizes.cpu_workers), "--no-progress", *args,
                   *pipeline_overrides(sizes, flow_model)],
                  logs / f"pipeline_{flow_model}_{split}.log", log)


def train_overrides(sizes: Sizes) -> list[str]:
    sets = [f"model.width={sizes.width}", f"model.image_size={sizes.image_size}",
            f"data.batch_size={sizes.train_batch}", f"data.workers={sizes.loader_workers}",
            f"data.epoch_samples={sizes.train_steps * sizes.train_batch}",   # one epoch: no loader restarts
            f"data.val_batch_size={sizes.eval_batch}", "train.epochs=1",
            f"train.max_steps={sizes.train_steps}", f"train.amp={sizes.amp}",
            f"train.channels_last={str(sizes.channels_last).lower()}",
            f"train.compile={str(sizes.compile).lower()}", f"train.log_every_steps={max(1, sizes.train_steps // 10)}",
            f"train.save_every_steps={sizes.train_steps}",
            # No ImageNet weights (nothing is downloaded); the shards are this script's own
            # (signed flow from a learned method), not the official recipe's inputs.
            "model.vision_weights=null", "model.flow_weights=null", "data.expect_settings={}"]
    if sizes.audio_frames is not None:
        sets.append(f"model.audio_frames={sizes.audio_frames}")
    if sizes.device == "cpu":
        sets.append("model.freeze_vision=false")
    sets.extend(sizes.train_sets)
    return [arg for s in sets for arg in ("--set", s)]


def with_root_on_path(environ: Mapping[str, str]) -> dict[str, str]:
    """torchrun's workers import the project from ROOT; packages already on PYTHONPATH (a
    machine whose missing packages are carried to a side folder) stay importable."""
    paths = [str(ROOT), *(p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return {**environ, "PYTHONPATH": os.pathsep.join(paths)}


def run_training(sizes: Sizes, shards: Path, run_dir: Path, logs: Path, log: Log) -> None:
    run_stage([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
               "-m", "train", "--train-shards", str(shards / "train-*.tar"),
               "--val-shards", str(shards / "val-*.tar"), "--output", str(run_dir), *train_overrides(sizes)],
              logs / "train.log", log, env=with_root_on_path(os.environ))


def training_rates(run_dir: Path) -> dict[str, Any]:
    """Samples/s and data-wait from the trainer's own log windows; the first window (start-up,
    compilation, loader workers filling) is reported apart from the steady state."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    windows = [r for r in rows if r.get("kind") == "train"]
    if not windows:
        raise StageFailed(f"{run_dir}/metrics.jsonl holds no training window")
    steady = windows[1:] or windows
    return {"windows": len(windows), "final_step": windows[-1]["step"],
            "samples_per_s": round(float(np.mean([w["samples_per_s"] for w in steady])), 1),
            "data_wait_frac": round(float(np.mean([w["data_wait_frac"] for w in steady])), 4),
            "first_window_samples_per_s": round(windows[0]["samples_per_s"], 1)}


def run_eval(sizes: Sizes, shards: Path, run_dir: Path, report_dir: Path, logs: Path, log: Log) -> dict[str, Any]:
    run_stage([sys.executable, "-m", "eval", "--shards", str(shards / "test-*.tar"), "--output", str(report_dir),
               "--checkpoint", str(run_dir / "checkpoints" / "latest.pt"), "--config", "configs/eval/tiny.yaml",
               "--set", f"run.device={sizes.device}", "--set", f"run.batch_size={sizes.eval_batch}",
               "--heatmaps", "0"], logs / "eval.log", log)
    metrics = json.loads((report_dir / "metrics.json").read_text())
    return {k: metrics[k] for k in ("n", "ciou_at_0.5", "mean_ciou", "auc") if k in metrics}


def split_counts(shards: Path) -> dict[str, int]:
    sizes = json.loads((shards / "sizes.json").read_text())
    return {split: sum(v for k, v in sizes.items() if k.startswith(f"{split}-")) for split in (*SPLITS, "all")}


# -------------------------------------------------------------------------------- main

def environment(sizes: Sizes) -> dict[str, Any]:
    env = {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
           "device": sizes.device}
    if sizes.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def run_all(sizes: Sizes, out: Path, log: Log) -> Report:
    report = Report(sizes=dataclasses.asdict(sizes), environment=environment(sizes))
    start = time.perf_counter()
    world, shards, logs = out / "world", out / "shards", out / "logs"
    timed_stage("world", report, log, sizes.clips, sizes.device, make_world, sizes, world, log)
    for name in sizes.flow_models:
        report.flow[name] = flow_rates(name, sizes)
        f = report.flow[name]
        log(f"[flow {name}] batched {f['batched_precision']}: {f['batched_pairs_per_s']} pairs/s, one pair "
            f"fp32: {f['single_fp32_pairs_per_s']} pairs/s, x{f['ratio_batched_vs_single_fp32']}")
    main_flow, *other_flows = sizes.flow_models
    timed_stage(f"flow_{main_flow}", report, log, sizes.clips, sizes.device,
                fill_flow_cache, sizes, world, shards, main_flow, logs, log)
    timed_stage(f"pipeline_{main_flow}", report, log, sizes.clips, sizes.device,
                run_pipeline, sizes, world, shards, main_flow, logs, log)
    counts = split_counts(shards)
    for name in other_flows:
        timed_stage(f"pipeline_{name}", report, log, sizes.clips, sizes.device,
                    run_pipeline, sizes, world, out / f"shards_{name}", name, logs, log, ("all",))
    run_dir = out / "run"
    timed_stage("train", report, log, sizes.train_steps * sizes.train_batch, sizes.device,
                run_training, sizes, shards, run_dir, logs, log)
    report.train = training_rates(run_dir)
    log(f"[train] steady state: {report.train['samples_per_s']} samples/s, data-wait "
        f"{report.train['data_wait_frac']:.1%} (first window {report.train['first_window_samples_per_s']})")
    report.eval = timed_stage("eval", report, log, counts["test"], sizes.device,
                              run_eval, sizes, shards, run_dir, out / "report", logs, log)
    log(f"[eval] {report.eval}")
    report.wall_s = round(time.perf_counter() - start, 1)
    report.within_time_target = report.wall_s < TIME_TARGET_S
    log(f"total {report.wall_s:.0f} s (target < {TIME_TARGET_S} s: {'met' if report.within_time_target else 'NOT met'})")
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", required=True, help="folder for gpu_e2e.json, gpu_e2e.log and every stage's files")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (the test suite's run)")
    p.add_argument("--clips", type=int, help="clips in the world (default 1200; smoke 10)")
    p.add_argument("--train-steps", type=int, help="training steps (default 300; smoke 3)")
    p.add_argument("--flow-models", nargs="+", help="ptlflow names; the first makes the training shards")
    p.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                   help="one more trainer override, applied after the script's own (repeatable)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpu_smoke:
        sizes = smoke_sizes()
    elif torch.cuda.is_available():
        sizes = gpu_sizes(os.cpu_count() or 4)
    else:
        print("error: no CUDA device visible to torch; run with --cpu-smoke for the CPU check", file=sys.stderr)
        return 2
    changes = {"clips": args.clips, "train_steps": args.train_steps,
               "flow_models": tuple(args.flow_models) if args.flow_models else None,
               "train_sets": tuple(args.train_set) or None}
    sizes = dataclasses.replace(sizes, **{k: v for k, v in changes.items() if v is not None})
    if sizes.clips < 10:
        print("error: --clips must be >= 10 (every split needs clips)", file=sys.stderr)
        return 2
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        print(f"error: --output {out} is not empty; choose a new folder", file=sys.stderr)
        return 2
    log = Log(out / "gpu_e2e.log")
    try:
        report = run_all(sizes, out, log)
    except StageFailed as err:
        log(f"error: {err}")
        return 1
    (out / "gpu_e2e.json").write_text(json.dumps(dataclasses.asdict(report), indent=2) + "\n")
    log(f"wrote {out / 'gpu_e2e.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
