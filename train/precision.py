"""How the model computes on the device: mixed precision and memory format, from ``train.amp``
and ``train.channels_last`` (both act on CUDA only)."""
from __future__ import annotations

import contextlib

import torch

from train.config import TrainConfig


def autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if device.type != "cuda" or cfg.train.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def use_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    # CUDA only: on CPU this torch build crashes in a channels_last backward (double free).
    return cfg.train.channels_last and device.type == "cuda"
