"""Negatives across processes: batch 64 on each of 2 processes gives the loss and the
gradients of batch 128 in one process (2 CPU processes, Gloo, DDP)."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from htf.model_config import LossConfig
from htf.loss import localization_loss

BATCH, WORLD = 128, 2


class TinyFeatures(nn.Module):
    """Image map [B, 16, 7, 7] and audio vector [B, 16], L2-normalised, no BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.img = nn.Conv2d(3, 16, 1)
        self.aud = nn.Linear(10, 16)

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.img(x), dim=1), F.normalize(self.aud(a), dim=1)


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 3, 7, 7, generator=g), torch.randn(BATCH, 10, generator=g)


def _loss_and_grads(kind: str, negatives: str) -> tuple[float, dict[str, torch.Tensor]]:
    model = TinyFeatures()
    x, a = _inputs()
    loss, _ = localization_loss(*model(x, a), LossConfig(kind=kind, negatives=negatives))
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters()}


def _worker(rank: int, port: int, kind: str, negatives: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model = nn.parallel.DistributedDataParallel(TinyFeatures())
        x, a = _inputs()
        part = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        loss, _ = localization_loss(*model(x[part], a[part]), LossConfig(kind=kind, negatives=negatives))
        loss.backward()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        if rank == 0:
            torch.save({"loss": float(mean) / WORLD,
                        "grads": {n: p.grad.clone() for n, p in model.module.named_parameters()}}, out)
    finally:
        dist.destroy_process_group()


def _two_processes(tmp_path: Path, kind: str, negatives: str) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / f"{kind}-{negatives}.pt")
    mp.spawn(_worker, args=(port, kind, negatives, out), nprocs=WORLD, join=True)
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("kind", ["lvs", "ezvsl"])
def test_global_negatives_on_two_processes_equal_one_process_with_the_whole_batch(tmp_path, kind):
    loss, grads = _loss_and_grads(kind, "global")
    two = _two_processes(tmp_path, kind, "global")
    assert two["loss"] == pytest.approx(loss, abs=1e-5)
    for name, grad in grads.items():
        assert torch.allclose(two["grads"][name], grad, atol=1e-5, rtol=0), name


def test_local_negatives_stay_available_and_contrast_only_the_own_batch(tmp_path):
    loss, _ = _loss_and_grads("lvs", "global")
    two = _two_processes(tmp_path, "lvs", "local")
    model = TinyFeatures()
    x, a = _inputs()
    halves = [float(localization_loss(*model(x[s], a[s]), LossConfig(negatives="local"))[0].detach())
              for s in (slice(0, BATCH // 2), slice(BATCH // 2, BATCH))]
    assert two["loss"] == pytest.approx(sum(halves) / 2, abs=1e-5)
    assert abs(two["loss"] - loss) > 1e-3
