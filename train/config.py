"""The trainer's one typed config object (loaded with :func:`htf.config.load_config`).

Sections: ``model`` (architecture, input settings and loss: everything needed to rebuild
the network from a checkpoint; ``htf.model_config.ModelConfig``), ``augment`` (train-time only), ``data`` (streaming),
``optim`` and ``train`` (loop, precision, checkpoints, logging). Defaults are the official
Hear The Flow recipe; ``configs/train/*.yaml`` presets override them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from htf.model_config import ModelConfig


@dataclass
class AugmentConfig:
    """Train-time augmentation; frame and flow always receive the same geometric transform."""
    crop_fraction: list[float] = field(default_factory=lambda: [224 / 246, 224 / 246])
    hflip: float = 0.5              # probability; negates x flow (unless official uint8 flow)
    brightness: float = 0.0         # max relative brightness/contrast jitter
    audio_time_shift: bool = True   # random crop of audio_frames within the stored spectrogram
    audio_gain: float = 0.0         # max |offset| added to the (log) feature: a gain change
    audio_noise: float = 0.0        # std of Gaussian noise added to the feature
    freq_masks: int = 0             # SpecAugment-style masks (count; width up to 1/8 of axis)
    time_masks: int = 0

    def validate(self) -> None:
        lo, hi = self.crop_fraction if len(self.crop_fraction) == 2 else (0.0, 0.0)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_fraction must be [lo, hi] with 0 < lo <= hi <= 1, got {self.crop_fraction}")
        if not 0 <= self.hflip <= 1:
            raise ValueError("hflip must be a probability")


@dataclass
class DataConfig:
    batch_size: int = 128           # per process
    workers: int = 4                # DataLoader workers per process
    shuffle_buffer: int = 1000      # samples; 0 disables
    epoch_samples: int | None = None  # samples per epoch (all ranks); None: count the shards
    val_batch_size: int = 64
    prefetch_factor: int = 2
    # Seconds to wait for one batch from a DataLoader worker before the run stops with an
    # error naming this key (a worker that can never answer would otherwise wait forever).
    loader_timeout_s: float = 1800.0
    # Pipeline settings the model's inputs assume, as in a shard's meta["pipeline"] (e.g.
    # {audio: {feature: logmel}}): shards made otherwise are refused. Empty: any settings,
    # as long as all shards agree.
    expect_settings: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.batch_size < 1 or self.val_batch_size < 1 or self.workers < 0:
            raise ValueError("batch sizes must be >= 1 and workers >= 0")
        if self.loader_timeout_s <= 0:
            raise ValueError("loader_timeout_s must be > 0")


@dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    grad_clip: float | None = None  # max global grad norm; None: off (official)
    # Learning-rate multiplier for model.flow_local's projection: it starts at zero and an
    # Adam step moves it by about lr whatever the gradient's size, too slowly for a short run.
    flow_local_lr_mult: float = 1.0
    # Validation and best.pt read an exponential moving average of the weights with this
    # decay (train/weight_average.py); 0: the raw weights (official).
    ema_decay: float = 0.0

    def validate(self) -> None:
        if self.lr <= 0 or self.flow_local_lr_mult <= 0:
            raise ValueError("optim.lr and optim.flow_local_lr_mult must be > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"optim.ema_decay must be >= 0 and < 1, got {self.ema_decay}")


@dataclass
class LoopConfig:
    epochs: int = 100
    # The budget in optimisation steps, whatever the data's size (epochs then follow from
    # it; the last one may be partial and is validated too): 400 clips get the same
    # optimisation as 1,000. None: ``epochs`` full passes.
    steps: int | None = None
    max_steps: int | None = None    # stop (with a checkpoint) after this many steps in total
    seed: int = 0
    amp: Literal["none", "bf16", "fp16"] = "bf16"  # GPU only; CPU runs in float32
    channels_last: bool = False     # NHWC images, flow and conv weights (CUDA only; CPU stays NCHW)
    compile: bool = False           # torch.compile the model (CUDA only; CPU runs eager)
    save_every_steps: int = 500
    log_every_steps: int = 20
    val_every_epochs: int = 1
    select_metric: str = "auc"      # from val metrics; falls back to -loss without boxes
    check_finite_every: int = 1     # steps between NaN/Inf loss checks (all ranks agree)
    dist_timeout_s: int = 1800
    init_from: str | None = None    # start from these weights (ours or official)
    # Load init_from even if it holds classes real checkpoints do not (it may run code).
    trust_init_from: bool = False
    # Copy checkpoints, metrics, config and rank logs here after each checkpoint (s3://, gs://);
    # the run folder stays the source of truth (resume reads it).
    sync_url: str | None = None
    # model.flow_gate opens (flow used at evaluation) only where the flow-on score on the val
    # split beats the flow-off score of the same weights by more than this (select_metric units).
    flow_gate_min_gain: float = 0.0
    # After training (model.twin_average), the gate leaves its third position, both, only for a
    # position that scores more than this above it on val (select_metric units): the mean of two
    # nets errs least where 40 val clips cannot tell the positions apart.
    gate_both_margin: float = 0.0
    # The margin shelters both against closed only where the flow net alone scores within this
    # of the twin alone on val (select_metric units); farther behind, the mean carries a net val
    # has shown weaker, and closed takes the gate on any lead. None: always sheltered; 0: the
    # margin shelters both against open only.
    gate_both_peer_gap: float | None = None
    # After training, the gate's position: "val" chooses it (above); "both", "closed" or "open"
    # set it whatever val says (studies of what each position gives; its val scores are still
    # recorded).
    gate_position: Literal["val", "both", "closed", "open"] = "val"
    # After training, the motion prior (model.motion_prior_weights) is added only with a weight
    # whose val score beats the map alone by more than this (select_metric units): a gain
    # smaller than what 40-100 val clips can tell apart is not worth risking the map on.
    motion_prior_min_gain: float = 0.0

    def validate(self) -> None:
        for key in ("flow_gate_min_gain", "gate_both_margin", "motion_prior_min_gain", "gate_both_peer_gap"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ValueError(f"train.{key} must be >= 0, got {getattr(self, key)}")
        if self.epochs < 1 or self.save_every_steps < 1 or self.log_every_steps < 1:
            raise ValueError("epochs, save_every_steps and log_every_steps must be >= 1")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"train.steps must be >= 1 or null, got {self.steps}")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
