"""GPU check of the trainer's compute path: samples/s at batch 128 with AMP, GPU utilisation.

Full-size model (ResNet-18 vision frozen as the official recipe, audio ResNet-18, flow
ResNet-18 + flow attention, LVS loss), 224-px inputs and a 257x276 spectrogram, Adam.
Data are random tensors already on the GPU, so this measures the model step alone; the
loader's side is measured per CPU core (decode + augment of in-memory shard samples) to
say how many loader workers keep the GPU fed. Needs torch/torchvision/numpy/opencv only
(webdataset is not imported). Finishes in a few minutes on one GPU.

    python bench/gpu_train_check.py [--steps 40] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from htf.model_config import ModelConfig  # noqa: E402
from train.config import AugmentConfig  # noqa: E402
from htf.model import HTFModel  # noqa: E402


class UtilSampler:
    """Samples GPU utilisation (nvidia-smi, else torch.cuda.utilization) in a thread."""

    def __init__(self, period: float = 0.2, enabled: bool = True) -> None:
        self.period, self.values, self._stop, self.enabled = period, [], threading.Event(), enabled
        self.smi = shutil.which("nvidia-smi")
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> float | None:
        if self.smi:
            try:
                out = subprocess.run([self.smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      f"--id={torch.cuda.current_device()}"], capture_output=True,
                                     text=True, timeout=5).stdout.strip()
                return float(out.splitlines()[0])
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return None
        try:
            return float(torch.cuda.utilization())
        except Exception:  # pynvml missing
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            v = self._read()
            if v is not None:
                self.values.append(v)
            time.sleep(self.period)

    def __enter__(self) -> "UtilSampler":
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.enabled:
            self.thread.join()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def run_config(amp: str, batch: int, steps: int, freeze_vision: bool, dev: torch.device) -> dict:
    torch.manual_seed(0)
    cuda = dev.type == "cuda"
    model = HTFModel(ModelConfig(width=64, image_size=224, freeze_vision=freeze_vision)).to(dev).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp == "fp16")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp) if cuda else None
    image = torch.randn(batch, 3, 224, 224, device=dev)
    flow = torch.randn(batch, 2, 224, 224, device=dev)
    spec = torch.randn(batch, 1, 257, 276, device=dev)

    def step() -> float:
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            loss = model(image, flow, spec, return_loss=True)["loss"]
        value = loss.detach().float().item()     # the trainer's per-step NaN check syncs too
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return value

    for _ in range(8 if cuda else 1):
        step()
    _sync(dev)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with UtilSampler(enabled=cuda) as util:
        start = time.perf_counter()
        losses = [step() for _ in range(steps)]
        _sync(dev)
        elapsed = time.perf_counter() - start
    return {"amp": amp, "batch": batch, "freeze_vision": freeze_vision, "steps": steps,
            "samples_per_s": steps * batch / elapsed, "step_ms": 1000 * elapsed / steps,
            "gpu_util_pct": util.mean, "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
            "loss_finite": bool(np.isfinite(losses).all())}


def loader_rate_per_core(n: int = 64) -> float | None:
    """decode_sample + train_arrays (224 px, official augmentation), one thread; None
    when OpenCV is not installed on this machine."""
    try:
        import cv2

        from htf.sample import ClipSample, decode_sample, encode_sample
        from train.transforms import train_arrays
    except ImportError as err:
        print(f"loader rate skipped: {err}", flush=True)
        return None
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    raws = []
    for i in range(n):
        frame = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        frame = cv2.GaussianBlur(frame, (0, 0), 3)
        flow = rng.normal(0, 2, (2, 256, 256)).astype(np.float32)
        spec = rng.normal(-4, 1, (257, 276)).astype(np.float32)
        raws.append(encode_sample(ClipSample(f"c{i}", frame, flow, spec, {})))
    cfg, aug = ModelConfig(image_size=224), AugmentConfig(audio_time_shift=False)
    start = time.perf_counter()
    for raw in raws:
        train_arrays(decode_sample(raw), cfg, aug, rng)
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_train_check.json"))
    p.add_argument("--device", default="cuda", help="cuda (the check); cpu only to smoke-test the script")
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; this check needs a GPU", file=sys.stderr)
        return 1
    torch.backends.cudnn.benchmark = True
    t0 = time.time()
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    results = {"device": name, "torch": torch.__version__, "runs": []}
    for amp, frozen in (("bf16", True), ("fp16", True), ("none", True), ("bf16", False)):
        r = run_config(amp, args.batch, args.steps, frozen, dev)
        results["runs"].append(r)
        print(json.dumps(r), flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    per_core = loader_rate_per_core()
    best = max(r["samples_per_s"] for r in results["runs"])
    results["loader_samples_per_s_per_core"] = per_core
    results["loader_cores_to_feed_fastest"] = best / per_core if per_core else None
    results["wall_s"] = time.time() - t0
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\n{results['device']}, batch {args.batch}:")
    print("| AMP | vision | samples/s | step ms | GPU util % | peak GiB |")
    print("|---|---|---|---|---|---|")
    for r in results["runs"]:
        util = "n/a" if r["gpu_util_pct"] is None else f"{r['gpu_util_pct']:.0f}"
        print(f"| {r['amp']} | {'frozen' if r['freeze_vision'] else 'trained'} | {r['samples_per_s']:.0f} "
              f"| {r['step_ms']:.1f} | {util} | {r['peak_mem_gib']:.1f} |")
    if per_core:
        print(f"loader: {per_core:.0f} samples/s per CPU core -> {best / per_core:.1f} workers feed "
              f"the fastest run")
    print(f"total {results['wall_s']:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
