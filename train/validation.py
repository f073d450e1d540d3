"""What the val split measures while training runs, and what it decides before training.

:func:`validate` gives the validation loss and, where the val clips carry boxes, cIoU@0.5,
mean cIoU and AUC with the evaluator's metric functions; :func:`selection_score` turns them
into the number that picks ``best.pt`` (``train.select_metric``). With ``model.flow_gate`` the
gate is set here too: closed unless flow gains more than ``train.flow_gate_min_gain``.
Before training, :func:`sync_target_for_run` decides from the val clips' sync maps whether
the sync target trains (``model.loss.sync_target_min_val``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from htf.config import ConfigError
from htf.inputs import sync_input
from htf.metrics import clip_ciou, summarize
from htf.model import HTFModel, smooth_maps
from htf.shards import read_samples
from train import distributed as du
from train.config import TrainConfig
from train.data import val_loader, warn_skipped
from train.precision import autocast


def scored_ciou(map7: np.ndarray, boxes: Any, box_format: str) -> float:
    """cIoU of one clip; a box lost when clipped scores 0, as the evaluator does."""
    try:
        return clip_ciou(map7, boxes, box_format)
    except ValueError:
        return 0.0


# Validation clips drawn as heat-map pictures in TensorBoard (rank 0's first clips with boxes).
VAL_PICTURES = 4


@torch.no_grad()
def validate(model: HTFModel, urls: list[str], cfg: TrainConfig, info: du.DistInfo,
             pictures: list[np.ndarray] | None = None) -> dict[str, Any]:
    """Validation loss (batches of >= 2) and, for clips with boxes, cIoU@0.5 / mean cIoU / AUC.

    With ``model.flow_gate`` the gate is chosen here by ``train.select_metric`` and set on the
    model (flow off is scored too and wins ties; flow opens only for a gain above
    ``train.flow_gate_min_gain``), reported as ``flow_gate``. The loss is the flow-on model's. With a
    ``pictures`` list, rank 0 appends the heat-map figures of its first VAL_PICTURES clips
    with boxes (the same picture as the evaluator's report)."""
    was_training = model.training
    model.eval()
    gated = hasattr(model, "flow_gate")
    loss_sum, loss_n, clips = 0.0, 0, []
    for batch, metas in val_loader(urls, cfg.model, cfg.data, info.rank, info.world):
        image, flow, spec = (batch[k].to(info.device) for k in ("image", "flow", "spec"))
        off = _maps_without_flow(model, image, flow, spec) if gated else None
        with autocast(cfg, info.device), gate_set_to(model, 1.0):
            out = model(image, flow, spec, return_loss=image.shape[0] > 1)
        if "loss" in out:
            loss_sum += float(out["loss"]) * image.shape[0]
            loss_n += image.shape[0]
        maps = out["map"].float().cpu().numpy()
        for i, meta in enumerate(metas):
            if meta["boxes"]:
                clips.append(ValClip(maps[i], None if off is None else off[i], meta["boxes"], meta["box_format"]))
                if pictures is not None and info.is_main and len(pictures) < VAL_PICTURES:
                    score = scored_ciou(maps[i], meta["boxes"], meta["box_format"])
                    pictures.append(_val_picture(batch["image"][i], maps[i], meta, score, cfg))
    model.train(was_training)
    gathered = du.gather_objects((loss_sum, loss_n, clips), info)
    loss_sum = sum(g[0] for g in gathered)
    loss_n = sum(g[1] for g in gathered)
    all_clips = [c for g in gathered for c in g[2]]
    metrics: dict[str, Any] = {"loss": loss_sum / loss_n if loss_n else float("nan")}
    if all_clips:
        metrics.update(box_metrics(model, all_clips, cfg))
    return metrics


@dataclass
class ValClip:
    """One val clip with boxes: its map with flow, and with the flow gate closed (flow gate only)."""
    with_flow: np.ndarray
    without_flow: np.ndarray | None
    boxes: Any
    box_format: str


@contextlib.contextmanager
def gate_set_to(model: HTFModel, value: float):
    """The flow gate (if any) set to ``value`` for the duration, then restored."""
    if not hasattr(model, "flow_gate"):
        yield
        return
    saved = model.flow_gate.clone()
    model.flow_gate.fill_(value)
    try:
        yield
    finally:
        model.flow_gate.copy_(saved)


def _maps_without_flow(model: HTFModel, image: torch.Tensor, flow: torch.Tensor,
                       spec: torch.Tensor) -> np.ndarray:
    """The maps of the same weights with the flow gate closed."""
    with gate_set_to(model, 0.0):
        return model(image, flow, spec)["map"].float().cpu().numpy()


def box_score(cious: list[float], cfg: TrainConfig) -> tuple[float, dict[str, Any]]:
    """(score by train.select_metric, summary) of val clips' cIoU values."""
    summary = summarize(cious)
    return selection_score({**summary, "loss": 0.0}, cfg.train.select_metric)[1], summary


def box_metrics(model: HTFModel, clips: list[ValClip], cfg: TrainConfig) -> dict[str, Any]:
    """Box metrics of the map with the val-chosen flow gate (set on the model): closed unless
    flow gains more than train.flow_gate_min_gain."""
    def scored(map_of: Any) -> tuple[float, dict[str, Any]]:
        return box_score([scored_ciou(map_of(c), c.boxes, c.box_format) for c in clips], cfg)

    score, summary = scored(lambda c: c.with_flow)
    if not (hasattr(model, "flow_gate") and clips[0].without_flow is not None):
        return summary
    off_score, off_summary = scored(lambda c: c.without_flow)
    gate_open = score > off_score + cfg.train.flow_gate_min_gain
    model.flow_gate.fill_(1.0 if gate_open else 0.0)
    return {**(summary if gate_open else off_summary), "flow_gate": int(gate_open),
            "flow_gate_scores": {"off": round(off_score, 6), "on": round(score, 6)}}


def _val_picture(image: torch.Tensor, map7: np.ndarray, meta: dict[str, Any], ciou: float,
                 cfg: TrainConfig) -> np.ndarray:
    """The model's input frame (normalisation undone), its map and boxes, as a figure."""
    from htf.pictures import heatmap_figure

    mean = torch.tensor(cfg.model.mean).view(3, 1, 1)
    std = torch.tensor(cfg.model.std).view(3, 1, 1)
    frame = ((image.float().cpu() * std + mean).clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).numpy()
    return heatmap_figure(np.ascontiguousarray(frame), map7, meta["boxes"], f"{meta['id']}   cIoU {ciou:.3f}")


def selection_score(metrics: dict[str, Any], name: str) -> tuple[str, float]:
    """(metric used, score where higher is better); losses are negated."""
    if name not in metrics or not math.isfinite(float(metrics[name])):
        name = "loss"
    value = float(metrics.get(name, float("nan")))
    return name, (-value if "loss" in name else value)


@torch.no_grad()
def val_sync_map_cious(urls: list[str], cfg: TrainConfig, info: du.DistInfo) -> list[float]:
    """cIoU of each val clip's sync map taken as a map, blurred as the model's map is
    (model.map_blur), as the evaluator's ``sync`` baseline scores it; clips without boxes are
    left out. Collective: every rank's clips are gathered, so every rank gets the same list."""
    cious: list[float] = []
    for _shard, sample in read_samples(urls[info.rank::info.world], warn_skipped):
        if not sample.boxes:
            continue
        sync = sync_input(sample, cfg.model)[None]
        if cfg.model.map_blur:
            sync = smooth_maps(sync, cfg.model.map_blur)
        cious.append(scored_ciou(sync[0].numpy(), sample.boxes, sample.meta.box_format))
    return [c for part in du.gather_objects(cious, info) for c in part]


def sync_target_for_run(cfg: TrainConfig, val_urls: list[str],
                        info: du.DistInfo) -> tuple[TrainConfig, dict[str, Any] | None]:
    """(the config this run trains with, the measurement behind it) under
    model.loss.sync_target_min_val: the target is switched off (sync_target 0) where the val
    clips' sync maps score under it, and where there is no val split to score (a target
    nothing vouched for stays off); no measurement where the key is not set."""
    loss = cfg.model.loss
    if loss.sync_target <= 0 or loss.sync_target_min_val <= 0:
        return cfg, None
    key = "model.loss.sync_target_min_val"
    off = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, loss=dataclasses.replace(loss, sync_target=0.0)))
    if not val_urls:
        return off, {"sync_map_val_score": None, "sync_map_val_clips": 0,
                     "sync_target_min_val": loss.sync_target_min_val, "sync_target": 0.0}
    cious = val_sync_map_cious(val_urls, cfg, info)
    if not cious:
        raise ConfigError(f"{key} scores the val clips' sync maps against their boxes, and no clip of "
                          f"{val_urls[0]} (or the other val shards) has boxes: give val shards with "
                          f"annotations or set {key}=0", key=key)
    score = float(summarize(cious)["ciou_at_0.5"])
    record = {"sync_map_val_score": round(score, 6), "sync_map_val_clips": len(cious),
              "sync_target_min_val": loss.sync_target_min_val}
    if score >= loss.sync_target_min_val:
        return cfg, {**record, "sync_target": loss.sync_target}
    return off, {**record, "sync_target": 0.0}


def sync_target_line(record: dict[str, Any]) -> str:
    """The log's sentence on the decision ``sync_target_for_run`` recorded."""
    if record["sync_map_val_score"] is None:
        return ("sync target off for this run (model.loss.sync_target 0 in its checkpoints): no --val-shards "
                "to score the sync maps on (model.loss.sync_target_min_val); give val shards to let val decide")
    measured = (f"the val clips' sync maps score {record['sync_map_val_score']:.4f} cIoU@0.5 "
                f"({record['sync_map_val_clips']} clips) against model.loss.sync_target_min_val "
                f"{record['sync_target_min_val']:g}")
    if record["sync_target"] > 0:
        return f"sync target on (weight {record['sync_target']:g}): {measured}"
    return (f"sync target off for this run (model.loss.sync_target 0 in its checkpoints): {measured}; a "
            f"teacher that points elsewhere more often than at the source would mislead")
