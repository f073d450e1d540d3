"""The choices ``best.pt`` gets on the val split once training has ended.

The trained networks stay as they are; what changes is how their maps are read: the mirror
average (``model.mirror_average``), the blur (``model.map_blur``), the flow gate's position
among both, closed and open (``model.twin_average``; :func:`gate_from_scores`), and the motion
prior's weight (:func:`calibrate_motion_prior`). Runs that differ only in the keys of
:data:`AFTER_TRAINING_KEYS` train the same networks, so :func:`choose_after_training_again`
ends a kept ``best.pt`` with other values instead of training again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from htf.config import load_config
from htf.model import GATE_BOTH, HTFModel, model_from_state
from train import checkpoint as ckpt
from train import distributed as du
from train.config import TrainConfig
from train.data import val_loader
from train.precision import autocast
from train.validation import box_score, scored_ciou


# The keys make_after_training_choices reads (see the module's docstring).
AFTER_TRAINING_KEYS = ("model.motion_prior_weights", "model.motion_prior_floor", "model.motion_prior",
                       "model.sync_smooth_frames", "model.sync_prior_without_flow", "model.mirror_average",
                       "model.twin_average", "model.map_blur", "train.gate_both_margin",
                       "train.gate_both_peer_gap", "train.gate_position", "train.motion_prior_min_gain")


def after_training_choices(model: HTFModel) -> list[str]:
    """The buffers best.pt gets after training: the mirror average, the blur, the gate chosen again with
    its third position (model.twin_average), the motion prior weight."""
    names = [name for name in ("mirror_averaged", "map_blurred") if hasattr(model, name)]
    if model.cfg.twin_average and hasattr(model, "twin"):
        names.append("flow_gate")
    return names + (["motion_prior_weight"] if hasattr(model, "motion_prior_weight") else [])


def make_after_training_choices(model: HTFModel, val_urls: list[str], cfg: TrainConfig,
                                info: du.DistInfo) -> dict[str, Any]:
    """Switch on the mirror average (model.mirror_average) and the blur (model.map_blur), choose the gate's position again
    with its third, both (model.twin_average), then the motion prior weight for that map, all
    on val. Collective."""
    chosen: dict[str, Any] = {}
    if hasattr(model, "motion_prior_weight"):
        model.motion_prior_weight.zero_()     # the gate is chosen on the network's map (a resumed run had one)
    if hasattr(model, "mirror_averaged"):
        model.mirror_averaged.fill_(1.0)
        chosen["mirror_averaged"] = 1
    if hasattr(model, "map_blurred"):        # the gate and the prior are chosen for the map the model gives, blurred
        model.map_blurred.fill_(1.0)
        chosen["map_blur"] = model.cfg.map_blur
    if "flow_gate" in after_training_choices(model):
        chosen.update(choose_gate_position(model, val_urls, cfg, info))
    if hasattr(model, "motion_prior_weight"):
        chosen.update(calibrate_motion_prior(model, val_urls, cfg, info))
    return chosen


GATE_POSITIONS = {"both": GATE_BOTH, "closed": 0.0, "open": 1.0}   # train.gate_position
GATE_SCORE_NAMES = {GATE_BOTH: "both", 0.0: "off", 1.0: "on"}      # keys of the recorded flow_gate_scores


def gate_scores_from_record(recorded: dict[str, float]) -> dict[float, float]:
    """The gate's val scores by position, from a recorded ``flow_gate_scores``."""
    return {position: recorded[name] for position, name in GATE_SCORE_NAMES.items()}


def first_best(scores: dict[float, float]) -> float:
    """The candidate with the highest score; ties keep the earlier one."""
    chosen = next(iter(scores))
    for candidate, score in scores.items():
        if score > scores[chosen]:
            chosen = candidate
    return chosen


def gate_from_scores(scores: dict[float, float], both_margin: float, peer_gap: float | None = None) -> float:
    """The gate's position from its val scores: both, unless closed or open scores more than
    ``both_margin`` above it; between those two the higher, ties keeping closed. With margin 0
    this is the first best of both, closed, open. With ``peer_gap``, the margin shelters both
    against closed only while open scores at least closed - peer_gap: an average with a net
    that val already ranks lower has no claim to the benefit of the doubt."""
    others = {position: score for position, score in scores.items() if position != GATE_BOTH}
    challenger = first_best(others)
    if challenger == 0.0 and peer_gap is not None and others[1.0] < others[0.0] - peer_gap:
        both_margin = 0.0
    return challenger if others[challenger] > scores[GATE_BOTH] + both_margin else GATE_BOTH


@torch.no_grad()
def choose_gate_position(model: HTFModel, urls: list[str], cfg: TrainConfig, info: du.DistInfo) -> dict[str, Any]:
    """Set ``model.flow_gate`` to the position whose maps score best on the val clips with boxes
    by ``train.select_metric``: both (the mean of the flow net's and the twin's maps), closed or
    open, both kept unless beaten by more than ``train.gate_both_margin`` (gate_from_scores),
    or where ``train.gate_position`` names one, that one. Collective."""
    positions = (GATE_BOTH, 0.0, 1.0)
    was_training = model.training
    model.eval()
    mine: dict[float, list[float]] = {position: [] for position in positions}
    for batch, metas in val_loader(urls, cfg.model, cfg.data, info.rank, info.world):
        image, flow, spec = (batch[k].to(info.device) for k in ("image", "flow", "spec"))
        boxed = [i for i, meta in enumerate(metas) if meta["boxes"]]
        for position in positions:      # one read of the val split scores all three
            model.flow_gate.fill_(position)
            with autocast(cfg, info.device):
                maps = model(image, flow, spec)["map"].float().cpu().numpy()
            mine[position] += [scored_ciou(maps[i], metas[i]["boxes"], metas[i]["box_format"]) for i in boxed]
    model.train(was_training)
    ranks = du.gather_objects(mine, info)
    cious = {position: [c for part in ranks for c in part[position]] for position in positions}
    scores = {position: box_score(values, cfg)[0] for position, values in cious.items()} if cious[GATE_BOTH] else {}
    if cfg.train.gate_position != "val":
        chosen = GATE_POSITIONS[cfg.train.gate_position]
    elif scores:
        chosen = gate_from_scores(scores, cfg.train.gate_both_margin, cfg.train.gate_both_peer_gap)
    else:       # no val clip has boxes
        chosen = GATE_BOTH
    model.flow_gate.fill_(chosen)
    return {"flow_gate": chosen, "flow_gate_scores": {GATE_SCORE_NAMES[p]: round(s, 6) for p, s in scores.items()}}


def prior_from_scores(scores: dict[float, float], min_gain: float) -> float:
    """The motion prior's weight from its val scores (weight 0, the map alone, first): the best,
    ties keeping the smaller, unless it beats weight 0 by ``min_gain`` or less, then 0."""
    best = first_best(scores)
    return best if scores[best] > scores[0.0] + min_gain else 0.0


@torch.no_grad()
def calibrate_motion_prior(model: HTFModel, urls: list[str], cfg: TrainConfig,
                           info: du.DistInfo) -> dict[str, Any]:
    """Set ``model.motion_prior_weight`` to the candidate (0, the map alone, or one of
    ``model.motion_prior_weights``) whose maps score best on the val clips with boxes by
    ``train.select_metric`` (prior_from_scores: a weight must beat every smaller one, and the
    map alone by more than ``train.motion_prior_min_gain``). Collective (every rank's clips
    count); returns the choice and every candidate's score."""
    was_training = model.training
    model.eval()
    model.motion_prior_weight.zero_()
    clips = []
    for batch, metas in val_loader(urls, cfg.model, cfg.data, info.rank, info.world):
        image, flow, spec = (batch[k].to(info.device) for k in ("image", "flow", "spec"))
        with autocast(cfg, info.device):
            maps = model(image, flow, spec, finish=False)["map"].float().cpu()
        sync = batch["sync"].to(info.device) if "sync" in batch else None
        motion = model.prior_map(flow, sync).cpu()
        clips += [(maps[i], motion[i], meta["boxes"], meta["box_format"])
                  for i, meta in enumerate(metas) if meta["boxes"]]
    model.train(was_training)
    clips = [c for part in du.gather_objects(clips, info) for c in part]
    if not clips:
        return {"motion_prior_weight": 0.0, "motion_prior_source": cfg.model.motion_prior,
                "motion_prior_scores": {}, "motion_prior_clips": 0}
    scores: dict[float, float] = {}
    for weight in [0.0, *sorted(cfg.model.motion_prior_weights)]:
        cious = [scored_ciou(model.finish_map(m[None], mo[None], weight)[0].float().numpy(), boxes, fmt)
                 for m, mo, boxes, fmt in clips]
        scores[weight] = box_score(cious, cfg)[0]
    chosen = prior_from_scores(scores, cfg.train.motion_prior_min_gain)
    model.motion_prior_weight.fill_(chosen)
    return {"motion_prior_weight": chosen, "motion_prior_source": cfg.model.motion_prior,
            "motion_prior_scores": {str(w): round(s, 6) for w, s in scores.items()},
            "motion_prior_clips": len(clips)}


def choose_after_training_again(old_best: Path, new_best: Path, val_urls: list[str],
                                changes: dict[str, Any]) -> dict[str, Any]:
    """``old_best`` with after-training keys changed (``changes``: dotted key -> value, keys of
    AFTER_TRAINING_KEYS only) and the after-training choices made again on ``val_urls``, in
    this process, written to ``new_best``. Returns the step and the choices."""
    others = sorted(set(changes) - set(AFTER_TRAINING_KEYS))
    if others:
        raise ValueError(f"{', '.join(others)} act(s) in training: train a run with the change instead")
    saved = ckpt.load(old_best)
    for dotted, value in changes.items():
        section, key = dotted.split(".", 1)
        saved["config"].setdefault(section, {})[key] = value
    cfg = load_config(TrainConfig, base=saved["config"])
    names = after_training_choices(HTFModel(cfg.model))
    for name in names:
        saved["model"].setdefault(name, torch.zeros(()))      # a buffer the old settings had not
    model = model_from_state(saved["model"], cfg.model, str(old_best)).eval()
    model.data_settings = saved.get("data_settings")
    chosen = make_after_training_choices(model, val_urls, cfg, du.DistInfo())
    for name in names:
        saved["model"][name] = getattr(model, name).detach().clone()
    saved["best_metrics"] = {**saved.get("best_metrics", {}), **chosen}
    ckpt.save_atomic(saved, new_best)
    return {"step": saved["step"], **chosen}
