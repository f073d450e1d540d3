"""The training loop: set-up, steps, checkpoints and logs.

Read top to bottom: :func:`fit` builds everything and runs the epochs; one optimisation
step is :func:`train_step`. What the val split measures and decides is in
:mod:`train.validation` (during training) and :mod:`train.after_training` (once it ends).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from htf.config import dump_config, save_config, to_dict
from htf.io import atomic_path, atomic_write_json
from htf.model import GATE_BOTH, HTFModel, checkpoint_payload, load_model
from htf.shards import count_samples, expand_shards
from train import checkpoint as ckpt
from train import distributed as du
from train.after_training import after_training_choices, make_after_training_choices
from train.config import TrainConfig
from train.data import ShardSettingsError, TrainStream, check_shard_settings, first_sample, train_loader
from train.precision import autocast, use_channels_last
from train.validation import selection_score, sync_target_for_run, sync_target_line, validate
from train.weight_average import WeightAverage


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf: training stops instead of learning from garbage."""


class ResumeError(RuntimeError):
    """The output folder and the resume request disagree."""


@dataclass
class RunState:
    step: int = 0
    epoch: int = 0
    best_score: float = -math.inf
    best_metrics: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------- set-up

def seed_everything(seed: int, rank: int) -> None:
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    torch.manual_seed(seed + rank)


def build_optimizer(model: HTFModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam; ``flow_local_conv`` is its own group when ``optim.flow_local_lr_mult`` != 1, and
    a ``model.flow_fallback: twin`` network is its own group tagged ``network: twin`` (its
    gradients are clipped apart: two networks, two norms)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    twin = [p for n, p in named if n.startswith("twin.")]
    named = [(n, p) for n, p in named if not n.startswith("twin.")]
    local = [p for n, p in named if n.startswith("flow_local_conv.")]
    if cfg.optim.flow_local_lr_mult == 1.0 or not local:
        groups: list[dict] = [{"params": [p for _, p in named]}]
    else:
        groups = [{"params": [p for n, p in named if not n.startswith("flow_local_conv.")]},
                  {"params": local, "lr": cfg.optim.lr * cfg.optim.flow_local_lr_mult}]
    if twin:
        groups.append({"params": twin, "network": "twin"})
    return torch.optim.Adam(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                            weight_decay=cfg.optim.weight_decay)


def clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    """Clip each network's gradient norm to ``max_norm`` (the param groups' ``network`` tag):
    a twin's gradients neither shrink nor are shrunk by the flow net's."""
    networks: dict[str, list[torch.Tensor]] = {}
    for group in optimizer.param_groups:
        networks.setdefault(group.get("network", "main"), []).extend(group["params"])
    for params in networks.values():
        torch.nn.utils.clip_grad_norm_(params, max_norm)


def planned_step_count(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """The run's budget: ``train.steps`` when set (independent of the data's size), else
    ``train.epochs`` full passes. ``train.max_steps`` can only cut it short."""
    return cfg.train.steps if cfg.train.steps is not None else steps_per_epoch * cfg.train.epochs


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then constant or cosine decay to 0 at ``total`` steps."""
    warm = cfg.optim.warmup_steps
    if warm and step < warm:
        return (step + 1) / warm
    if cfg.optim.schedule == "cosine":
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def wants_resume(resume: bool | str | None, output: Path) -> bool:
    """Whether to continue from ``latest.pt``.

    ``resume`` True (``--resume``): there must be a checkpoint; ``"auto"`` (``--resume
    auto``): continue if there is one, else start; falsy: start fresh. A torchrun restart
    (``--max-restarts``) of a run that saved a checkpoint continues by itself. A fresh
    start on a folder that already holds a checkpoint is refused, so a typo in --output
    never overwrites a run."""
    latest = ckpt.latest_path(output)
    has_latest = latest.is_file()
    if resume == "auto" or du.restart_count() > 0:
        return has_latest
    if resume:
        if not has_latest:
            raise ResumeError(f"--resume: nothing to resume, {latest} does not exist; check --output, "
                              f"start without --resume, or pass --resume auto to start when there "
                              f"is no checkpoint")
        return True
    if has_latest:
        raise ResumeError(f"{latest} exists: pass --resume to continue that run, "
                          f"or choose another --output")
    return False


# ------------------------------------------------------------------------------ logging

class Logger:
    """metrics.jsonl + TensorBoard + console mirrored into train.log, on rank 0 only."""

    def __init__(self, output: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.tb = None
        if enabled:
            self.jsonl = open(output / "metrics.jsonl", "a", buffering=1)
            self.text = open(output / "train.log", "a", buffering=1)
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(output / "tb"))
            except ImportError:  # tensorboard is optional at run time
                self.print("warning: tensorboard not installed; logging to metrics.jsonl only")

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"kind": kind, "step": step, "time": time.time(), **values}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def print(self, text: str) -> None:
        """Console and train.log (warnings, the config, progress, the closing block)."""
        if self.enabled:
            print(text, flush=True)
            self.text.write(time.strftime("%Y-%m-%d %H:%M:%S ") + text.replace("\n", "\n" + " " * 20) + "\n")

    def config(self, cfg: TrainConfig) -> None:
        """The resolved config on the console, in train.log and as TensorBoard text."""
        text = dump_config(cfg)
        self.print("resolved config (saved as config.yaml):\n" + text.rstrip())
        if self.tb is not None:
            # TensorBoard renders text as Markdown: indent by 4 spaces for a code block.
            self.tb.add_text("config", "\n".join("    " + line for line in text.splitlines()), 0)

    def images(self, tag: str, images: list[np.ndarray], step: int) -> None:
        if self.tb is not None:
            for i, img in enumerate(images):
                self.tb.add_image(f"{tag}/{i}", img, step, dataformats="HWC")

    def hparams(self, cfg: TrainConfig, best: dict[str, Any]) -> None:
        """Hyper-parameters (flattened config) against the best validation metrics."""
        if self.tb is None:
            return
        params = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                  for k, v in _flatten(to_dict(cfg)).items()}
        metrics = {f"hparam/best_{k}": float(v) for k, v in best.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
        self.tb.add_hparams(params, metrics or {"hparam/best_loss": float("nan")}, run_name=".")

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.text.close()
            if self.tb is not None:
                self.tb.close()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def format_duration(seconds: float) -> str:
    """3725 -> '1h02m05s', 65 -> '1m05s', 4.2 -> '4s'."""
    s = int(round(max(0.0, seconds)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


# ---------------------------------------------------------------------------- one step

def train_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, cfg: TrainConfig, info: du.DistInfo, step: int,
               epoch: int) -> float | None:
    """Forward, finiteness check, backward, clip, update. Returns the rank-mean loss when checked."""
    dev = info.device
    fmt = torch.channels_last if use_channels_last(cfg, dev) else torch.contiguous_format
    image, flow = (batch[k].to(dev, non_blocking=True, memory_format=fmt) for k in ("image", "flow"))
    spec = batch["spec"].to(dev, non_blocking=True)
    guide = batch["sync"].to(dev, non_blocking=True) if "sync" in batch else None   # loss.sync_guide / sync_target
    with autocast(cfg, dev):
        loss = model(image, flow, spec, sync=guide, return_loss=True)["loss"]
    mean_loss = None
    if step % cfg.train.check_finite_every == 0:
        total = du.all_reduce_sum(loss.detach().float().reshape(1).clone(), info)
        mean_loss = total.item() / info.world
        if not math.isfinite(mean_loss):
            raise NonFiniteLossError(f"loss is {mean_loss} at step {step + 1} (epoch {epoch}); stopping "
                                     f"before the update. {non_finite_advice(cfg, info.device)}; the last "
                                     f"good weights are in checkpoints/latest.pt")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if cfg.optim.grad_clip:
        scaler.unscale_(optimizer)
        clip_gradients(optimizer, cfg.optim.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return mean_loss


def non_finite_advice(cfg: TrainConfig, device: torch.device) -> str:
    """What to change after a NaN/Inf loss. A compiled bf16 run from random weights gave NaN at
    its second step on an H200 where the same run uncompiled did not (bench/gpu/README.md)."""
    advice = "Lower optim.lr, set optim.grad_clip, or check the data"
    if cfg.train.compile and device.type == "cuda":
        advice += ", or set train.compile=false (a compiled run has given NaN where the same run uncompiled did not)"
    return advice


# --------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: Path, model: HTFModel, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, scheduler: Any, state: RunState,
                    cfg: TrainConfig, info: du.DistInfo, average: WeightAverage | None = None) -> None:
    """Collective (gathers every rank's RNG state); rank 0 writes. ``average``
    (optim.ema_decay) travels with the raw weights so that a resumed run continues it."""
    rngs = du.gather_objects(ckpt.rng_state(), info)
    if not info.is_main:
        return
    payload = checkpoint_payload(model, cfg)
    payload.update({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": state.step, "epoch": state.epoch,
                    "best_score": state.best_score, "best_metrics": state.best_metrics,
                    "rng": rngs, "world_size": info.world})
    if average is not None:
        payload["weight_average"] = average.state_dict()
    ckpt.save_atomic(payload, path)


def _check_same_model(saved: dict[str, Any], model: HTFModel, path: Path) -> None:
    """The checkpoint's model settings must be this run's: name the keys that changed
    instead of torch's list of every mismatched tensor."""
    before = (saved.get("config") or {}).get("model") or {}
    now = dataclasses.asdict(model.cfg)
    changed = [f"model.{k} ({before[k]!r} -> {now[k]!r})" for k in sorted(now)
               if k in before and before[k] != now[k] and k not in _MODEL_KEYS_SAFE_TO_CHANGE]
    if changed:
        raise ResumeError(f"{path} was trained with other model settings: {', '.join(changed)}; "
                          f"resume with the run's own settings (its config.yaml) or start a new "
                          f"--output")
    own = model.state_dict()
    wrong = [k for k, v in saved["model"].items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in saved["model"]]
    if wrong or missing:
        raise ResumeError(f"{path} does not fit this model ({len(wrong)} tensor(s) of another shape, "
                          f"e.g. {(wrong or missing)[0]}); resume with the run's own settings or start "
                          f"a new --output")


# Settings that change no tensor shape and no learned value (weights files only matter at
# the start of a run; the loss settings may be changed on purpose when resuming).
_MODEL_KEYS_SAFE_TO_CHANGE = {"vision_weights", "flow_weights", "loss", "frozen_bn"}


def restore(path: Path, model: HTFModel, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
            scheduler: Any, info: du.DistInfo, average: WeightAverage | None = None) -> RunState:
    try:
        saved = ckpt.load(path, map_location=info.device)
    except RuntimeError as err:
        raise ResumeError(str(err)) from None
    _check_same_model(saved, model, path)
    model.load_state_dict(saved["model"])
    model.data_settings = saved.get("data_settings")
    try:
        optimizer.load_state_dict(saved["optimizer"])
    except (ValueError, KeyError) as err:     # e.g. other parameter groups (optim.* changed)
        raise ResumeError(f"{path}: the optimizer state does not fit this run ({err}); resume with "
                          f"the run's own optim settings or start a new --output") from None
    scaler.load_state_dict(saved["scaler"])
    scheduler.load_state_dict(saved["scheduler"])
    if average is not None:
        if "weight_average" not in saved:
            raise ResumeError(f"{path} was trained without optim.ema_decay, so it holds no weight average to "
                              f"continue; resume with the run's own optim settings or start a new --output")
        try:
            average.load_state_dict(saved["weight_average"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise ResumeError(f"{path}: {err}; resume with the run's own settings or start a new --output") from None
    rngs = saved.get("rng") or []
    if len(rngs) == info.world:
        ckpt.set_rng_state(rngs[info.rank])
    return RunState(step=saved["step"], epoch=saved["epoch"], best_score=saved["best_score"],
                    best_metrics=saved.get("best_metrics", {}))


# ----------------------------------------------------------------------------------- fit

def _data_settings(urls: list[str], val_urls: list[str], cfg: TrainConfig) -> dict[str, Any] | None:
    """The pipeline settings of the shards; refuses mixed shards (validation included) and
    shards the preset's model does not take (``data.expect_settings``)."""
    settings = check_shard_settings(urls + val_urls, cfg.data.expect_settings)
    if settings is None and urls:       # remote shards: read from the stream, not checked
        settings = first_sample(urls).meta.pipeline
    if cfg.model.uses_sync() and val_urls and settings is not None and not (settings.get("motion") or {}).get("series"):
        raise ShardSettingsError(
            f"model.motion_prior: sync chooses its weight on the val clips' sync maps, made from the motion "
            f"series, but the shards ({val_urls[0]}) were made without them: remake every split with the "
            f"pipeline's --set motion.series=eval (series on val and test only) or true, or set model.motion_prior=flow")
    return settings


def _check_training_series(urls: list[str], settings: dict[str, Any] | None, cfg: TrainConfig) -> None:
    """Refuses training shards without motion series where the loss reads them. Checked on the
    config the run trains with: a sync target that val turned off needs none."""
    series = (settings.get("motion") or {}).get("series") if settings is not None else None
    if cfg.model.trains_with_sync() and urls and settings is not None and series is not True:
        raise ShardSettingsError(
            f"{_sync_loss_keys(cfg)} reads every training clip's sync map, made from the motion series, but the "
            f"shards ({urls[0]}) were made with motion.series: {series}: remake the training shards with the "
            f"pipeline's --set motion.series=true, or set {_sync_loss_keys(cfg, '=0')}")


def _sync_loss_keys(cfg: TrainConfig, suffix: str = "") -> str:
    """The loss keys that read the training clips' sync maps, as the error names them."""
    keys = [f"model.loss.{k}{suffix}" for k in ("sync_guide", "sync_target") if getattr(cfg.model.loss, k) > 0]
    return " and ".join(keys)


def fit(cfg: TrainConfig, train_shards: str, val_shards: str | None, output: str | Path,
        resume: bool = False) -> dict[str, Any]:
    """Train as configured; returns the final state (step, epoch, best metrics)."""
    info = du.init_distributed(cfg.train.dist_timeout_s)
    try:
        return _fit(cfg, train_shards, val_shards, Path(output), resume, info)
    finally:
        du.cleanup(info)


def _fit(cfg: TrainConfig, train_shards: str, val_shards: str | None, output: Path,
         resume: bool, info: du.DistInfo) -> dict[str, Any]:
    seed_everything(cfg.train.seed, info.rank)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # Shards are checked before the run folder exists: a typo leaves no half-made folder.
    urls = expand_shards(train_shards)
    val_urls = expand_shards(val_shards) if val_shards else []
    settings = _data_settings(urls, val_urls, cfg)      # mixed or mismatched shards are refused
    # Decided from val alone, so a resumed run decides the same; the config saved says what trains.
    cfg, sync_target_record = sync_target_for_run(cfg, val_urls, info)
    _check_training_series(urls, settings, cfg)
    do_resume = wants_resume(resume, output)
    du.barrier(info)
    if info.is_main:
        (output / "logs").mkdir(parents=True, exist_ok=True)
        save_config(cfg, output / "config.yaml")
    du.barrier(info)
    log = Logger(output, info.is_main)
    log.config(cfg)
    if sync_target_record:
        log.print(sync_target_line(sync_target_record))
        log.log("sync_target", 0, sync_target_record)
    # The model first: missing pretrained weights stop the run before any shard is read.
    model = HTFModel(cfg.model)
    if not val_urls:
        log.print("note: no --val-shards: no validation, so no model selection; at the end "
                  "checkpoints/best.pt is a copy of the last checkpoint (latest.pt)")
    epoch_samples = cfg.data.epoch_samples or du.broadcast_object(
        count_samples(urls) if info.is_main else None, info)
    steps_per_epoch = max(1, epoch_samples // (cfg.data.batch_size * info.world))
    planned_steps = planned_step_count(cfg, steps_per_epoch)
    total_steps = planned_steps
    if cfg.train.max_steps is not None:
        total_steps = min(total_steps, cfg.train.max_steps)

    if cfg.train.init_from:
        start = load_model(cfg.train.init_from, trust=cfg.train.trust_init_from)
        model.load_state_dict(start.state_dict())
    model.data_settings = settings
    model.to(info.device)
    if use_channels_last(cfg, info.device):
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    average = WeightAverage(model, cfg.optim.ema_decay) if cfg.optim.ema_decay else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, planned_steps, cfg))
    scaler = torch.amp.GradScaler("cuda", enabled=info.device.type == "cuda" and cfg.train.amp == "fp16")
    state = RunState()
    if do_resume:
        state = restore(ckpt.latest_path(output), model, optimizer, scaler, scheduler, info, average)
        log.print(f"resumed from {ckpt.latest_path(output)} at step {state.step} (epoch {state.epoch})")
    ddp_model: torch.nn.Module = model
    if info.enabled:
        ddp_model = DistributedDataParallel(
            model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
    if cfg.train.compile and info.device.type == "cuda":
        # Compiled for training only; checkpoints and validation use the plain module.
        ddp_model = torch.compile(ddp_model)

    log.print(f"training on {info.world} process(es), {info.device}: {epoch_samples} samples/epoch, "
              f"{steps_per_epoch} steps/epoch of {cfg.data.batch_size}/process, "
              f"{total_steps} steps in total")
    stream = TrainStream(urls, cfg.model, cfg.augment, cfg.data, info.rank, info.world, cfg.train.seed)
    steps_run = 0
    clock = {"t0": time.perf_counter(), "steps_at_start": state.step}
    sync = ckpt.RunSync(output, cfg.train.sync_url) if cfg.train.sync_url and info.is_main else None

    def save(path: Path) -> None:
        save_checkpoint(path, model, optimizer, scaler, scheduler, state, cfg, info, average)
        if sync is not None:
            sync()
    while state.step < total_steps:
        state.epoch = state.step // steps_per_epoch
        stream.set_epoch(state.epoch, state.step)
        batches = iter(train_loader(stream, cfg.data))
        end_of_epoch = min((state.epoch + 1) * steps_per_epoch, total_steps)
        window = {"loss": 0.0, "n": 0, "wait": 0.0, "steps": 0, "t0": time.perf_counter()}
        ddp_model.train()
        while state.step < end_of_epoch:
            t_wait = time.perf_counter()
            batch = next(batches)
            window["wait"] += time.perf_counter() - t_wait
            loss = train_step(ddp_model, batch, optimizer, scaler, cfg, info, state.step, state.epoch)
            scheduler.step()
            if average is not None:
                average.update(model)
            state.step += 1
            steps_run += 1
            window["steps"] += 1
            if loss is not None:
                window["loss"] += loss
                window["n"] += 1
            if state.step % cfg.train.log_every_steps == 0 or state.step == end_of_epoch:
                _log_window(log, window, state, cfg, info, optimizer, total_steps, clock)
                window = {"loss": 0.0, "n": 0, "wait": 0.0, "steps": 0, "t0": time.perf_counter()}
            if state.step % cfg.train.save_every_steps == 0 and state.step < end_of_epoch:
                save(ckpt.latest_path(output))
        del batches
        epoch_done = state.step % steps_per_epoch == 0
        plan_done = state.step == planned_steps   # a budget in steps may end inside an epoch
        if val_urls and ((epoch_done and (state.step // steps_per_epoch) % cfg.train.val_every_epochs == 0)
                         or plan_done):
            # Validation, and best.pt, see the weight average where there is one.
            with average.applied(model) if average is not None else contextlib.nullcontext():
                _validate_and_select(model, val_urls, cfg, info, state, log, output, save)
        save(ckpt.latest_path(output))
    _write_rank_summary(output, info, state, steps_run)
    if val_urls and state.best_metrics and after_training_choices(model):
        _calibrate_best(model, val_urls, cfg, info, state, log, output)
    if info.is_main:
        selected_by_validation = ckpt.best_path(output).is_file() and bool(state.best_metrics)
        if not selected_by_validation:
            _copy_atomic(ckpt.latest_path(output), ckpt.best_path(output))
        log.print(closing_block(output, state, cfg, time.perf_counter() - clock["t0"], selected_by_validation))
        log.hparams(cfg, state.best_metrics)
    du.barrier(info)
    if sync is not None:
        sync()      # best.pt, every rank's summary, the last metrics
    log.close()
    return {"step": state.step, "epoch": state.epoch, "best_metrics": state.best_metrics,
            "steps_run": steps_run}


def _log_window(log: Logger, window: dict[str, float], state: RunState, cfg: TrainConfig,
                info: du.DistInfo, optimizer: torch.optim.Optimizer, total_steps: int,
                clock: dict[str, float]) -> None:
    elapsed = max(time.perf_counter() - window["t0"], 1e-9)
    values = {"epoch": state.epoch, "loss": window["loss"] / max(1, window["n"]),
              "lr": optimizer.param_groups[0]["lr"],
              "samples_per_s": window["steps"] * cfg.data.batch_size * info.world / elapsed,
              "data_wait_frac": window["wait"] / elapsed}
    log.log("train", state.step, values)
    # ETA from this process's own pace since it started (validation time included).
    done = state.step - clock["steps_at_start"]
    spent = time.perf_counter() - clock["t0"]
    eta = spent / done * (total_steps - state.step) if done else float("nan")
    log.print(f"epoch {state.epoch} step {state.step}/{total_steps} ({state.step / total_steps:.0%}) "
              f"loss {values['loss']:.4f} lr {values['lr']:.2e} {values['samples_per_s']:.1f} samples/s "
              f"data-wait {values['data_wait_frac']:.1%} elapsed {format_duration(spent)} "
              f"ETA {format_duration(eta) if math.isfinite(eta) else '?'}")


def closing_block(output: Path, state: RunState, cfg: TrainConfig, seconds: float,
                  selected_by_validation: bool) -> str:
    """What a person needs when the run ends: where the checkpoints are, what chose best.pt,
    and how to look at the curves."""
    best = state.best_metrics
    if selected_by_validation:
        shown = ", ".join(f"{k} {best[k]:.4f}" for k in ("ciou_at_0.5", "auc", "mean_ciou", "loss")
                          if isinstance(best.get(k), float))
        chosen = (f"selected on validation {best.get('selected_on')} (config train.select_metric: "
                  f"{cfg.train.select_metric}) at step {best.get('step')}: {shown}")
        if best.get("flow_gate") == GATE_BOTH:
            chosen += "; flow gate both (the mean of the flow net's and the twin's maps, chosen after training)"
        if best.get("mirror_averaged"):
            chosen += "; maps averaged with the mirror image"
        if best.get("map_blur"):
            chosen += f"; maps blurred by {best['map_blur']:g} cells"
        if "motion_prior_weight" in best:
            source = "sync" if cfg.model.motion_prior == "sync" else "motion"
            chosen += f"; {source} prior weight {best['motion_prior_weight']:g} (chosen on validation after training)"
    else:
        chosen = "a copy of latest.pt: no validation ran (no --val-shards), so nothing was selected"
    lines = [
        f"training finished: step {state.step}, epoch {state.epoch}, {format_duration(seconds)}",
        f"  best checkpoint    {ckpt.best_path(output)}",
        f"                     {chosen}",
        f"  latest checkpoint  {ckpt.latest_path(output)} (step {state.step}; --resume continues from it)",
        f"  config             {output / 'config.yaml'}",
        f"  log                {output / 'train.log'}, {output / 'metrics.jsonl'}",
        f"  curves             tensorboard --logdir {output}",
    ]
    return "\n".join(lines)


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _validate_and_select(model: HTFModel, val_urls: list[str], cfg: TrainConfig, info: du.DistInfo,
                         state: RunState, log: Logger, output: Path, save: Any) -> None:
    pictures: list[np.ndarray] = []
    metrics = validate(model, val_urls, cfg, info, pictures)
    log.images("val/heatmaps", pictures, state.step)
    name, score = selection_score(metrics, cfg.train.select_metric)
    improved = score > state.best_score
    if improved:
        state.best_score, state.best_metrics = score, {**metrics, "step": state.step, "selected_on": name}
    log.log("val", state.step, {**metrics, "selected_on": name, "best": improved})
    log.print(f"validation at step {state.step}: " + ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        + (" (best so far)" if improved else ""))
    if improved:
        save(ckpt.best_path(output))


def _calibrate_best(model: HTFModel, val_urls: list[str], cfg: TrainConfig, info: du.DistInfo,
                    state: RunState, log: Logger, output: Path) -> None:
    """After training: best.pt's averaged maps and motion prior weight (chosen on val), written
    into best.pt. Runs again on a resumed finished run, with the same result."""
    du.barrier(info)      # best.pt is complete on disk
    best = ckpt.best_path(output)
    saved = ckpt.load(best, map_location=info.device)
    model.load_state_dict(saved["model"])
    chosen = make_after_training_choices(model, val_urls, cfg, info)
    state.best_metrics.update(chosen)
    log.log("after_training", state.step, chosen)
    if "flow_gate_scores" in chosen:
        how = (f"chosen on validation {cfg.train.select_metric}" if cfg.train.gate_position == "val"
               else f"set by train.gate_position={cfg.train.gate_position}")
        log.print(f"flow gate: {model.describe()} {how} after "
                  f"training (candidates: {chosen['flow_gate_scores'] or 'no val clip has boxes'})")
    if "motion_prior_weight" in chosen:
        source = "sync" if cfg.model.motion_prior == "sync" else "motion"
        log.print(f"{source} prior: weight {chosen['motion_prior_weight']:g} chosen on validation "
                  f"{cfg.train.select_metric} (candidates: {chosen['motion_prior_scores'] or 'no val clip has boxes'}"
                  + (f"; a weight must gain more than {cfg.train.motion_prior_min_gain:g} over 0)"
                     if cfg.train.motion_prior_min_gain else ")"))
    if info.is_main:
        for name in after_training_choices(model):
            saved["model"][name] = getattr(model, name).detach().clone()
        saved["best_metrics"] = state.best_metrics
        ckpt.save_atomic(saved, best)


def _write_rank_summary(output: Path, info: du.DistInfo, state: RunState, steps_run: int) -> None:
    # node: torchrun's agent (group) rank, so a multi-node run shows every node took part.
    summary = {"rank": info.rank, "world_size": info.world, "node": int(os.environ.get("GROUP_RANK", 0)),
               "local_rank": info.local_rank, "final_step": state.step, "steps_run": steps_run}
    atomic_write_json(output / "logs" / f"rank{info.rank}.json", summary)
