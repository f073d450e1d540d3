"""Learned optical flow (RAFT and the other ptlflow models), batched, fp16 on CUDA.

Imports only torch and numpy at module level, so the GPU check script can use exactly
this code on a machine without the rest of the project's dependencies.

Weights are never downloaded: a checkpoint is a local path, or a ptlflow checkpoint name
whose file already sits in the torch hub cache. Anything else fails at once with a
message saying what to pass instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F


try:  # the GPU check may import this file alone; inside the project share the error type
    from pipeline.errors import FlowSetupError
except ImportError:  # pragma: no cover
    class FlowSetupError(RuntimeError):  # type: ignore[no-redef]
        """A flow method cannot be set up."""


def _ptlflow():
    try:
        import ptlflow  # noqa: F401  (heavy import: only when a learned model is asked for)
    except ImportError as err:
        raise FlowSetupError(f"learned flow needs the ptlflow package ({err})") from None
    return ptlflow


def resolve_checkpoint(method: str, ckpt: Optional[str], allow_random_init: bool) -> Optional[str]:
    """Local checkpoint file for (method, ckpt), or None for random weights when allowed."""
    if ckpt is None or ckpt == "":
        if allow_random_init:
            return None
        raise FlowSetupError(
            f"flow method '{method}' is a learned model and needs weights: pass --flow-ckpt "
            f"PATH (a local checkpoint file) or a ptlflow checkpoint name already in the torch "
            f"hub cache; set flow.learned.allow_random_init=true only for benchmarks (the flow is "
            f"meaningless without trained weights)")
    if Path(ckpt).is_file():
        return str(ckpt)
    model_cls = _ptlflow().get_model_reference(method)
    urls = getattr(model_cls, "pretrained_checkpoints", {}) or {}
    if ckpt not in urls:
        raise FlowSetupError(f"flow checkpoint '{ckpt}' is neither a file nor a known checkpoint "
                             f"name of '{method}' (known: {', '.join(sorted(urls)) or 'none'})")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urls[ckpt]).name
    if cached.is_file():
        return str(cached)
    raise FlowSetupError(
        f"pretrained weights '{ckpt}' for '{method}' are not available offline (expected "
        f"{cached}); this pipeline never downloads weights: fetch {urls[ckpt]} on a machine "
        f"with internet and pass --flow-ckpt /path/to/file")


def load_ptlflow_model(method: str, ckpt: Optional[str], allow_random_init: bool) -> torch.nn.Module:
    ptlflow = _ptlflow()
    if method not in ptlflow.get_model_names():
        raise FlowSetupError(f"unknown flow method '{method}': use farneback, dis, or a ptlflow "
                             f"model name (e.g. raft, raft_small)")
    path = resolve_checkpoint(method, ckpt, allow_random_init)
    if path is None:
        # Random weights, seeded: every worker and every rerun builds the same network, so
        # benchmark and resume runs stay reproducible.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return ptlflow.get_model(method).eval()
    return ptlflow.get_model(method, ckpt_path=path).eval()


class BatchedFlow:
    """Run a flow network on batches of same-size RGB uint8 pairs.

    ``kind`` 'ptlflow' feeds {'images': [B,2,3,H,W] BGR in 0..1} (ptlflow pads internally);
    'torchvision' feeds two [B,3,H,W] RGB tensors in -1..1 padded to a multiple of 8.
    On CUDA with ``fp16`` the network runs under autocast: about 2x the pairs/s of fp32.
    """

    def __init__(self, model: torch.nn.Module, device: str = "cpu", fp16: bool = True,
                 kind: str = "ptlflow") -> None:
        self.device = torch.device(device)
        self.fp16 = bool(fp16) and self.device.type == "cuda"
        self.kind = kind
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, frames0: np.ndarray, frames1: np.ndarray) -> np.ndarray:
        """[B,H,W,3] uint8 RGB x2 -> float32 [B,2,H,W] flow in pixels."""
        a = torch.from_numpy(np.ascontiguousarray(frames0)).to(self.device, non_blocking=True)
        b = torch.from_numpy(np.ascontiguousarray(frames1)).to(self.device, non_blocking=True)
        a = a.permute(0, 3, 1, 2).float() / 255.0
        b = b.permute(0, 3, 1, 2).float() / 255.0
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.fp16):
            flow = self._forward(a, b)
        return flow.float().cpu().numpy()

    def _forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.kind == "ptlflow":
            images = torch.stack([a.flip(1), b.flip(1)], dim=1).contiguous()      # RGB -> BGR
            return self.model({"images": images})["flows"][:, 0]
        h, w = a.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        a2 = F.pad(a * 2 - 1, pad, mode="replicate")
        b2 = F.pad(b * 2 - 1, pad, mode="replicate")
        flow = self.model(a2, b2)[-1]
        return flow[..., pad[2]:pad[2] + h, pad[0]:pad[0] + w]
