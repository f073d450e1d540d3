"""The model's typed config (architecture, input settings, loss).

Everything needed to rebuild the network from a checkpoint lives here, in the core, so the
trainer, the evaluator and the apps read one definition; ``train.config.TrainConfig`` holds
it as its ``model`` section.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
MAP_SIZE = 7                        # the localisation map is always 7x7
GATE_BOTH = 0.5   # the flow gate's after-training third position (model.twin_average)
SUPPORTED_STRIDES = (32, 16, 8)     # image_size / 7


@dataclass
class LossConfig:
    """``lvs``: the official trimap loss; ``ezvsl``: multiple-instance InfoNCE."""
    kind: Literal["lvs", "ezvsl"] = "lvs"
    epsilon: float = 0.65           # positive threshold
    epsilon_margin: float = 0.25    # negative threshold = epsilon - epsilon_margin
    tau: float = 0.03               # sigmoid sharpness of the soft trimap
    trimap: bool = True             # False: Neg = 1 - Pos (no uncertain band)
    logit_temperature: float = 0.07
    ezvsl_temperature: float = 0.03
    # global: under DDP each process's clips are contrasted with every process's clips
    # (features gathered with gradients: 64 x 2 processes = batch 128); local: only with
    # the clips of its own batch.
    negatives: Literal["global", "local"] = "global"
    # sync_guide (lvs only): in training, the trimap's positive and negative regions of a clip
    # with its own sound are read from its map plus sync_guide x its sync map (htf.sync: where
    # the change over the audio window follows the loudness; negatives at 0), while the values
    # averaged stay the network's. Motion that keeps time with the sound points the loss at
    # the place to learn, a self-supervised hint that needs no label; 0: the official loss.
    # Needs training shards with motion series (the pipeline's motion.series: true).
    sync_guide: float = 0.0
    # sync_target: in training, this weight times a cross-entropy that pulls each clip's map
    # with its own sound (a softmax over the places at sync_target_temperature) towards where
    # its sync map lies, each clip counted by its sync map's peak (a clip whose motion keeps
    # no time with the sound teaches nothing). The sync map says which object sounds; the
    # network, which sees only the frame (and its flow), must learn what that object looks
    # like, a cue that still holds where the sounding object stands still. Any loss kind;
    # 0: none. Needs training shards with motion series, as sync_guide does.
    sync_target: float = 0.0
    sync_target_temperature: float = 0.1
    # sync_target_min_val: before training, the val clips' sync maps are scored as maps
    # (cIoU@0.5, blurred as the model's map is: the share of clips where the sync map points at
    # the source); under this share the run trains without the target (its checkpoints record
    # sync_target 0): at 0.5, a teacher wrong more often than right would mislead. 0: always on.
    sync_target_min_val: float = 0.0

    def validate(self) -> None:
        if self.tau <= 0 or self.logit_temperature <= 0 or self.ezvsl_temperature <= 0:
            raise ValueError("tau, logit_temperature and ezvsl_temperature must be > 0")
        if self.sync_guide < 0:
            raise ValueError(f"sync_guide must be >= 0 (0: no guide), got {self.sync_guide}")
        if self.sync_guide > 0 and self.kind != "lvs":
            raise ValueError(f"sync_guide shapes the lvs loss's trimap; kind '{self.kind}' has none: "
                             f"set loss.kind=lvs or loss.sync_guide=0")
        if self.sync_target < 0 or self.sync_target_temperature <= 0:
            raise ValueError(f"sync_target must be >= 0 (0: none) and sync_target_temperature > 0, got "
                             f"{self.sync_target} and {self.sync_target_temperature}")
        if not 0.0 <= self.sync_target_min_val <= 1.0:
            raise ValueError(f"sync_target_min_val is a val score between 0 (the target always on) and 1, "
                             f"got {self.sync_target_min_val}")


@dataclass
class ModelConfig:
    flow: Literal["cnn", "maxpool", "none"] = "cnn"   # none = audio-visual baseline (ablation)
    attention_value_init: Literal["default", "zero"] = "default"  # zero: flow branch starts silent
    flow_local: bool = False        # also add each location's own flow features (see HTFModel)
    # Flow dropout: in training, the flow path (attention and local term) is skipped for this
    # fraction of clips, drawn per clip, so the visual path also learns to localise alone and
    # "flow off" is a model that was trained to work without flow.
    flow_dropout: float = 0.0
    # A gate on the whole flow path at evaluation (the buffer ``flow_gate``, 0 or 1; 0.5, both,
    # only after training with twin_average below). It starts
    # closed (0: the map is exactly the no-flow map of the same weights); the trainer opens it
    # only where flow scores better on the validation split (train.flow_gate_min_gain).
    flow_gate: bool = False
    # What a closed gate runs. shared: the same weights without the flow path (pair it with
    # flow_dropout so they learn to work alone). twin: a second, flow-free network held in the
    # same model (its own visual and audio nets), trained beside it on every batch with its
    # own loss; the gate then chooses on val between a flow net and a real no-flow net.
    # With flow: none there is no flow path, so no gate and no twin (the preset's no-flow run).
    flow_fallback: Literal["shared", "twin"] = "shared"
    # A motion prior on the map at evaluation: map' = minmax(map) + w * motion (rescaled into
    # the map's own range, htf.model.with_motion_prior), where motion is
    # the flow magnitude average-pooled to 7x7, shifted to 0 and divided by its largest value
    # (at least motion_prior_floor pixels of the S x S input, so a still clip gets almost no
    # prior). The contrastive loss cannot learn "sounds come from what moves" (it is the same
    # for every sound), so w is not learned: after training, the trainer picks it on the
    # validation split from 0 and these candidates (the buffer ``motion_prior_weight``; 0 is
    # the map itself). Empty: no prior. With flow: none there is no flow, so no prior.
    motion_prior_weights: list[float] = field(default_factory=list)
    motion_prior_floor: float = 0.25
    # Where the prior's motion comes from. flow: the keyframe pair's flow magnitude (above).
    # sync: the sync map (htf.sync), the correlation over time of each place's change with the
    # clip's loudness, negative counting as 0: motion that follows the sound, not any motion.
    # Needs shards with motion series (the pipeline's motion.series) at validation and test.
    motion_prior: Literal["flow", "sync"] = "flow"
    sync_smooth_frames: int = 12        # the sync map's smoothing, in frames
    # The sync prior on a `flow: none` model too: the sync map is made from grey-level change,
    # not from flow. Off in the presets, so their no-flow run stays a model with no motion
    # cue; apps.demo turns it on after training to read the no-flow run with the sync prior
    # (what optical flow adds beyond it). After training only, like the prior itself.
    sync_prior_without_flow: bool = False
    # After training only (the trainer sets them in best.pt; validation during training and
    # checkpoint selection see one network's map on the clip as it is).
    # mirror_average: the map is the mean of the clip's map and its mirror image's map
    # (flipped back; the flip training augments with); each map min-max scaled, the mean
    # brought into the first map's range. The buffer ``mirror_averaged``.
    mirror_average: bool = False
    # twin_average (flow_fallback twin): the gate gets a third position, 0.5: the mean of the
    # flow net's and the twin's maps, two networks that differ only in the flow path. The
    # position is chosen again on val among the mean, closed and open, ties keeping the mean;
    # the gate chosen during training then only picks the checkpoint. A model without a twin
    # (flow: none, or flow_fallback shared, as ablations of a preset set them) has nothing to
    # average: the key does nothing there.
    twin_average: bool = False
    # map_blur: the map (with any prior) blurred by a 5x5 Gaussian of this many map cells,
    # edges replicated; 0: none. The median threshold keeps half the frame, and a noisy 7x7
    # map spends it on scattered cells; blurred, the half it keeps gathers around the peaks.
    # The buffer ``map_blurred``. Any model, `flow: none` included (the no-flow run of a
    # preset is blurred alike); eval's `baseline.map_blur` does the same to a baseline.
    map_blur: float = 0.0
    width: int = 64                 # ResNet-18 base width: 64 is the standard (and official) net
    image_size: int = 224           # input side S; the backbone stride is S / 7 (32, 16 or 8)
    freeze_vision: bool = True      # official: vision ResNet has requires_grad=False
    frozen_bn: Literal["train", "eval"] = "train"   # BatchNorm of a frozen vision net (see docs)
    vision_weights: str | None = None   # None | torchvision name (IMAGENET1K_V1) | path to .pth
    flow_weights: str | None = None     # same; conv1 (2 input channels) always starts fresh
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    flow_scale: float = 1.0         # multiplies the flow tensor (pixels of the S x S input)
    audio_frames: int | None = None  # spectrogram frames fed to the net (None: as stored)
    loss: LossConfig = field(default_factory=LossConfig)

    def has_motion_prior(self) -> bool:
        """True when a prior weight is chosen after training: candidates given, and motion to
        add (flow, or the sync map, which a flow-free model adds with sync_prior_without_flow)."""
        motion = self.flow != "none" or (self.motion_prior == "sync" and self.sync_prior_without_flow)
        return bool(self.motion_prior_weights) and motion

    def uses_sync(self) -> bool:
        """True when the map may add the sync prior: the model's inputs then include the sync map."""
        return self.has_motion_prior() and self.motion_prior == "sync"

    def trains_with_sync(self) -> bool:
        """True when the loss reads each training clip's sync map (loss.sync_guide or loss.sync_target)."""
        return self.loss.sync_guide > 0 or self.loss.sync_target > 0

    def validate(self) -> None:
        if self.width < 8 or self.width % 8:
            raise ValueError(f"width must be a multiple of 8 (>= 8), got {self.width}")
        stride = self.image_size // MAP_SIZE
        if self.image_size % MAP_SIZE or stride not in SUPPORTED_STRIDES:
            sizes = [MAP_SIZE * s for s in SUPPORTED_STRIDES]
            raise ValueError(f"image_size must be one of {sizes} (7x7 map), got {self.image_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values each (std > 0)")
        if not 0 <= self.flow_dropout < 1:
            raise ValueError(f"flow_dropout must be in [0, 1), got {self.flow_dropout}")
        if self.flow_fallback == "twin" and self.flow != "none" and not self.flow_gate:
            raise ValueError("flow_fallback 'twin' is what a closed flow gate runs: a flow model "
                             "(flow: cnn or maxpool) with it needs flow_gate: true")
        if any(w <= 0 for w in self.motion_prior_weights):
            raise ValueError(f"motion_prior_weights must all be > 0 (0, the map alone, is always a "
                             f"candidate), got {self.motion_prior_weights}")
        if self.sync_prior_without_flow and self.motion_prior != "sync":
            raise ValueError("sync_prior_without_flow gives a flow-free model the sync prior: it needs "
                             f"motion_prior: sync, got motion_prior: {self.motion_prior}")
        if self.sync_smooth_frames < 1:
            raise ValueError(f"sync_smooth_frames must be >= 1, got {self.sync_smooth_frames}")
        if self.map_blur < 0:
            raise ValueError(f"map_blur must be >= 0 map cells (0: no blur), got {self.map_blur}")
        if self.motion_prior_floor <= 0:
            raise ValueError(f"motion_prior_floor must be > 0 pixels, got {self.motion_prior_floor}")
        if self.audio_frames is not None and self.audio_frames < 1:
            raise ValueError("audio_frames must be >= 1 or null")

    @property
    def feat_dim(self) -> int:
        return 8 * self.width
