"""Localisation losses on L2-normalised features.

``lvs_loss`` is the official Hear The Flow / LVS trimap loss (DESIGN.md §2), formula for
formula. The soft-trimap averages Σ w·A / Σ w are computed from log-weights
(``logsigmoid``) normalised by their maximum: mathematically the same ratio, but it never
becomes 0/0 when every weight underflows (e.g. 1 - σ(20) is exactly 0 in float32, which
makes the plain formula NaN on an all-equal map of ones).

``ezvsl_loss`` is EZ-VSL's multiple-instance contrastive loss: the score of an
(image, audio) pair is the max over the map, and a symmetric InfoNCE over the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from htf.model_config import LossConfig


def pair_maps(img: torch.Tensor, aud: torch.Tensor) -> torch.Tensor:
    """All image-audio cosine maps: ``[B, C, H, W] x [B, C] -> [B(image), B(audio), H, W]``."""
    return torch.einsum("nchw,mc->nmhw", img, aud)


def own_maps(img: torch.Tensor, aud: torch.Tensor) -> torch.Tensor:
    """Each image with its own audio: ``[B, H, W]``."""
    return torch.einsum("nchw,nc->nhw", img, aud)


def _soft_mean(values: torch.Tensor, log_w: torch.Tensor) -> torch.Tensor:
    """Σ w·v / Σ w over the last two axes, with w = exp(log_w), computed without underflow."""
    log_w = log_w.flatten(-2)
    w = torch.exp(log_w - log_w.amax(dim=-1, keepdim=True))
    return (w * values.flatten(-2)).sum(-1) / w.sum(-1)


def lvs_loss(img: torch.Tensor, aud: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Official trimap loss. ``img`` [B, C, H, W] and ``aud`` [B, C], both L2-normalised.

    Returns (loss, own-pair map [B, H, W]).
    """
    b = img.shape[0]
    a = own_maps(img, aud)                       # A: [B, H, W]
    a0 = pair_maps(img, aud)                     # A0: [B, B, H, W]
    eps, eps2, tau = cfg.epsilon, cfg.epsilon - cfg.epsilon_margin, cfg.tau
    log_pos = F.logsigmoid((a - eps) / tau)                        # log σ((A-ε)/τ)
    neg_eps = eps2 if cfg.trimap else eps
    log_neg = F.logsigmoid(-(a - neg_eps) / tau)                   # log(1 - σ((A-ε₂)/τ))
    log_pos_all = F.logsigmoid((a0 - eps) / tau)
    sim1 = _soft_mean(a, log_pos)                                  # [B]
    mask = 1.0 - 100.0 * torch.eye(b, device=img.device, dtype=a0.dtype)
    sim = _soft_mean(a0, log_pos_all) * mask                       # [B, B]
    sim2 = _soft_mean(a, log_neg)                                  # [B]
    logits = torch.cat([sim1[:, None], sim, sim2[:, None]], dim=1) / cfg.logit_temperature
    target = torch.zeros(b, dtype=torch.long, device=img.device)
    return F.cross_entropy(logits, target), a


def ezvsl_loss(img: torch.Tensor, aud: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Multiple-instance InfoNCE: pair score = max over locations, symmetric over the batch."""
    scores = pair_maps(img, aud).flatten(-2).amax(dim=-1) / cfg.ezvsl_temperature   # [B, B]
    target = torch.arange(img.shape[0], device=img.device)
    loss = 0.5 * (F.cross_entropy(scores, target) + F.cross_entropy(scores.t(), target))
    return loss, own_maps(img, aud)


LOSSES = {"lvs": lvs_loss, "ezvsl": ezvsl_loss}


def localization_loss(img: torch.Tensor, aud: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch on ``cfg.kind``; features are cast to float32 so AMP never changes the loss."""
    return LOSSES[cfg.kind](img.float(), aud.float(), cfg)
