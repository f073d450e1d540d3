"""GPU flow check: RAFT pairs/s batched fp16 vs one pair at a time fp32, and CUDA vs CPU flow.

Run on a single-GPU machine (about 2-4 minutes, hard cap --budget-s, default 420 s):

    python bench/gpu_flow_check.py [--model raft] [--size 256 448] [--pairs 64] [--batch 16]

Needs only torch and numpy plus ptlflow; without ptlflow it falls back to torchvision's
RAFT (same architecture) and says so. Weights are random (seeded): nothing is downloaded,
and the check is about speed and numerical agreement, not flow quality.

Checks (exit status 1 if any fails):
  1. batched fp16 on CUDA is faster than single-pair fp32 on CUDA, on the same pairs;
  2. CUDA fp32 flow agrees with CPU fp32 flow (same weights, same pairs);
  3. CUDA fp16 flow agrees with CUDA fp32 flow within fp16 tolerance.
Agreement = mean end-point error relative to the mean flow magnitude.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.flow_learned import BatchedFlow  # noqa: E402  (torch + numpy only)


def build_model(name: str) -> tuple[torch.nn.Module, str, str]:
    torch.manual_seed(0)
    try:
        import ptlflow

        return ptlflow.get_model(name).eval(), "ptlflow", f"ptlflow {name} (random init, seed 0)"
    except ImportError:
        from torchvision.models.optical_flow import raft_large, raft_small

        tv = raft_small if name.endswith("small") else raft_large
        return tv(weights=None).eval(), "torchvision", f"torchvision {tv.__name__} (random init, seed 0; ptlflow missing)"


def make_pairs(n: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random textures and the same textures shifted by a few pixels."""
    rng = np.random.default_rng(0)
    low = rng.uniform(0, 255, (n, h // 8 + 4, w // 8 + 4, 3)).astype(np.float32)
    big = torch.nn.functional.interpolate(torch.from_numpy(low).permute(0, 3, 1, 2), scale_factor=8,
                                          mode="bicubic", align_corners=False).clamp(0, 255)
    big = big.permute(0, 2, 3, 1).numpy().astype(np.uint8)
    a = big[:, 16:16 + h, 16:16 + w]
    shifts = rng.integers(-6, 7, (n, 2))
    b = np.stack([big[i, 16 - dy:16 - dy + h, 16 - dx:16 - dx + w] for i, (dx, dy) in enumerate(shifts)])
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


def timed(run, a: np.ndarray, b: np.ndarray, batch: int, device: str) -> tuple[np.ndarray, float]:
    out = []
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(a), batch):
        out.append(run(a[i:i + batch], b[i:i + batch]))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return np.concatenate(out), time.perf_counter() - start


def relative_epe(x: np.ndarray, ref: np.ndarray) -> float:
    epe = np.sqrt(((x - ref) ** 2).sum(axis=1)).mean()
    magnitude = np.sqrt((ref ** 2).sum(axis=1)).mean()
    return float(epe / max(magnitude, 1e-6))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="raft")
    p.add_argument("--size", type=int, nargs=2, default=[256, 448], metavar=("H", "W"))
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--cpu-pairs", type=int, default=4, help="pairs compared against CPU (slow)")
    p.add_argument("--budget-s", type=float, default=420.0)
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("FAIL: no CUDA device visible to torch", file=sys.stderr)
        return 1
    t_start = time.time()
    model, kind, label = build_model(a.model)
    h, w = a.size
    frames0, frames1 = make_pairs(a.pairs, h, w)
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; model: {label}")
    print(f"pairs: {a.pairs} at {h}x{w}; batch {a.batch}")

    fp16 = BatchedFlow(model, "cuda", fp16=True, kind=kind)
    fp32 = BatchedFlow(model, "cuda", fp16=False, kind=kind)
    timed(fp16, frames0[:a.batch], frames1[:a.batch], a.batch, "cuda")      # warm-up (cudnn, allocator)
    timed(fp32, frames0[:2], frames1[:2], 1, "cuda")
    flow16, t16 = timed(fp16, frames0, frames1, a.batch, "cuda")
    flow32, t32 = timed(fp32, frames0, frames1, 1, "cuda")
    rate16, rate32 = a.pairs / t16, a.pairs / t32
    print(f"batched fp16: {rate16:8.1f} pairs/s   single fp32: {rate32:8.1f} pairs/s   speed-up x{rate16 / rate32:.2f}")

    checks: list[tuple[str, bool, str]] = [("batched fp16 faster than single fp32", rate16 > rate32,
                                            f"x{rate16 / rate32:.2f}")]
    err16 = relative_epe(flow16, flow32)
    checks.append(("CUDA fp16 agrees with CUDA fp32", err16 < 0.05, f"relative EPE {err16:.4f} (< 0.05)"))
    if time.time() - t_start < a.budget_s - 120:
        n = min(a.cpu_pairs, a.pairs)
        cpu = BatchedFlow(model, "cpu", fp16=False, kind=kind)
        flow_cpu, t_cpu = timed(cpu, frames0[:n], frames1[:n], 1, "cpu")
        err_cpu = relative_epe(flow32[:n], flow_cpu)
        print(f"CPU fp32: {n / t_cpu:.2f} pairs/s on {torch.get_num_threads()} threads")
        checks.append(("CUDA fp32 agrees with CPU fp32", err_cpu < 1e-2, f"relative EPE {err_cpu:.2e} (< 1e-2)"))
    else:
        checks.append(("CUDA fp32 agrees with CPU fp32", False, "skipped: time budget spent"))

    print("\nsummary")
    for name, ok, detail in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    print(f"total {time.time() - t_start:.0f} s")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
