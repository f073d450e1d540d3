"""Localisation losses on L2-normalised features.

``lvs_loss`` is the official Hear The Flow / LVS trimap loss, formula for
formula. The soft-trimap averages Σ w·A / Σ w are computed from log-weights
(``logsigmoid``) normalised by their maximum: mathematically the same ratio, but it never
becomes 0/0 when every weight underflows (e.g. 1 - σ(20) is exactly 0 in float32, which
makes the plain formula NaN on an all-equal map of ones).

``sync_target_loss`` (``loss.sync_target``, added to either) pulls each clip's map with its
own sound towards its sync map, a self-supervised target: where motion keeps time with the
sound.

``ezvsl_loss`` is EZ-VSL's multiple-instance contrastive loss: the score of an
(image, audio) pair is the max over the map, and a symmetric InfoNCE over the batch.

Negatives across processes (``loss.negatives: global``, the default): in training under
DDP every process contrasts its own clips with the features of *all* processes' clips,
gathered with their gradients (as open_clip does), so batch 64 on each of 2 processes
gives the loss and the gradients of batch 128 in one process. ``local`` contrasts each
process's batch with itself only (the negatives shrink with the per-process batch).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from htf.model_config import LossConfig


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums every rank's gradient for this rank's
    slice (all_reduce, which Gloo and NCCL both support). Needs equal per-rank batches."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather_negatives(x: torch.Tensor, enabled: bool) -> tuple[torch.Tensor, int]:
    """(every process's ``x`` concatenated in rank order, offset of this process's rows);
    ``(x, 0)`` in a single process or when ``enabled`` is False."""
    if not enabled or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return x, 0
    return _GatherWithGrad.apply(x), dist.get_rank() * x.shape[0]


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


def lvs_loss(img: torch.Tensor, aud: torch.Tensor, cfg: LossConfig,
             gather: bool = False, guide: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Official trimap loss. ``img`` [B, C, H, W] and ``aud`` [B, C], both L2-normalised.
    ``gather``: every process's audio serves as negatives (rows stay this process's clips).
    ``guide`` [B, H, W] (with ``cfg.sync_guide`` > 0): each clip's sync map; the trimap of
    the clip with its own sound is read from A + sync_guide x guide, the averages stay of A.

    Returns (loss, own-pair map [B, H, W]).
    """
    b = img.shape[0]
    aud_all, offset = gather_negatives(aud, gather)
    a = own_maps(img, aud)                       # A: [B, H, W]
    a0 = pair_maps(img, aud_all)                 # A0: [B, B_all, H, W]
    eps, eps2, tau = cfg.epsilon, cfg.epsilon - cfg.epsilon_margin, cfg.tau
    # Where the trimap is read: A itself (official), or A pointed at motion that follows the sound.
    region = a if guide is None or cfg.sync_guide <= 0 else a + cfg.sync_guide * guide.to(a.dtype)
    log_pos = F.logsigmoid((region - eps) / tau)                   # log σ((A-ε)/τ)
    neg_eps = eps2 if cfg.trimap else eps
    log_neg = F.logsigmoid(-(region - neg_eps) / tau)              # log(1 - σ((A-ε₂)/τ))
    log_pos_all = F.logsigmoid((a0 - eps) / tau)
    sim1 = _soft_mean(a, log_pos)                                  # [B]
    own = torch.zeros(b, a0.shape[1], device=img.device, dtype=a0.dtype)
    own[torch.arange(b), offset + torch.arange(b)] = 1.0
    mask = 1.0 - 100.0 * own
    sim = _soft_mean(a0, log_pos_all) * mask                       # [B, B_all]
    sim2 = _soft_mean(a, log_neg)                                  # [B]
    logits = torch.cat([sim1[:, None], sim, sim2[:, None]], dim=1) / cfg.logit_temperature
    target = torch.zeros(b, dtype=torch.long, device=img.device)
    return F.cross_entropy(logits, target), a


def ezvsl_loss(img: torch.Tensor, aud: torch.Tensor, cfg: LossConfig,
               gather: bool = False, guide: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multiple-instance InfoNCE: pair score = max over locations, symmetric over the batch
    (this process's images against every audio, this process's audio against every image).
    It has no trimap for a ``guide`` to shape (LossConfig refuses sync_guide with it)."""
    img_all, offset = gather_negatives(img, gather)
    aud_all, _ = gather_negatives(aud, gather)
    t = cfg.ezvsl_temperature
    by_image = pair_maps(img, aud_all).flatten(-2).amax(dim=-1) / t            # [B, B_all]
    by_audio = pair_maps(img_all, aud).flatten(-2).amax(dim=-1).t() / t        # [B, B_all]
    target = offset + torch.arange(img.shape[0], device=img.device)
    loss = 0.5 * (F.cross_entropy(by_image, target) + F.cross_entropy(by_audio, target))
    return loss, own_maps(img, aud)


LOSSES = {"lvs": lvs_loss, "ezvsl": ezvsl_loss}


def sync_target_loss(amap: torch.Tensor, sync: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of each own-sound map ``amap`` [B, H, W], as a softmax over places at
    ``temperature``, against its clip's sync map ``sync`` [B, H, W] (negatives at 0) taken as
    a distribution, each clip weighted by its sync map's peak; 0 when no clip has one."""
    target = sync.clamp(min=0).flatten(1)
    peak = target.amax(dim=1)
    if not bool((peak > 0).any()):
        return amap.sum() * 0.0
    share = target / target.sum(dim=1, keepdim=True).clamp(min=1e-12)
    log_q = F.log_softmax(amap.flatten(1) / temperature, dim=1)
    per_clip = -(share * log_q).sum(dim=1)
    return (peak * per_clip).sum() / peak.sum()


def localization_loss(img: torch.Tensor, aud: torch.Tensor, cfg: LossConfig,
                      training: bool = True, guide: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch on ``cfg.kind``; features are cast to float32 so AMP never changes the loss.
    Negatives are gathered across processes only in training with ``negatives: global``
    (validation batches differ in size and count between processes). ``guide``: the clips'
    sync maps for ``cfg.sync_guide`` (lvs only) and ``cfg.sync_target`` (None: the loss without them)."""
    gather = training and cfg.negatives == "global"
    guide = None if guide is None else guide.float()
    loss, amap = LOSSES[cfg.kind](img.float(), aud.float(), cfg, gather, guide)
    if guide is not None and cfg.sync_target > 0:
        loss = loss + cfg.sync_target * sync_target_loss(amap, guide, cfg.sync_target_temperature)
    return loss, amap
