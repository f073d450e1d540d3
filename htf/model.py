"""The Hear The Flow model and loading of ours and the official weights.

Module names follow torchvision's ResNet-18 and the official code (``imgnet``, ``audnet``,
``flownet``, ``flowatt.{query,key,value}_conv``) so released state dicts load by a pure key
mapping (strip ``model.`` / ``module.`` prefixes). The module needs torch and torchvision
only (YAML and the config loader are imported where used), so GPU checks run on bare images. ``width`` < 64 gives the same structure
with fewer channels for CPU runs; ``image_size`` 112 or 56 drops the stem max-pool (and the
stem stride) so the map stays 7x7.

BatchNorm of a frozen vision net: the official code only sets ``requires_grad=False``, so
its BatchNorm layers stay in train mode (batch statistics, running stats keep moving).
``frozen_bn: train`` reproduces that; ``frozen_bn: eval`` keeps them in eval mode (fixed
ImageNet statistics), the usual choice when fine-tuning on small batches.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

from htf.loss import localization_loss, own_maps
from htf.model_config import GATE_BOTH, MAP_SIZE, ModelConfig
from htf.official import OFFICIAL_FLOW_ENCODING, official_data_settings

CHECKPOINT_FORMAT = "htf-train-v1"


# ------------------------------------------------------------------------------ backbones

class ResNetTrunk(nn.Module):
    """ResNet-18 without avgpool/fc: ``[B, in_ch, S, S] -> [B, 8*width, S/stride, S/stride]``.

    Same child names as torchvision's ``resnet18`` (conv1, bn1, relu, maxpool, layer1-4).
    """

    def __init__(self, in_channels: int = 3, width: int = 64, stride: int = 32) -> None:
        super().__init__()
        stem_stride = 1 if stride == 8 else 2
        self.conv1 = nn.Conv2d(in_channels, width, 7, stem_stride, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stride == 32 else nn.Identity()
        self._inplanes = width
        self.layer1 = self._make_layer(width, 1)
        self.layer2 = self._make_layer(2 * width, 2)
        self.layer3 = self._make_layer(4 * width, 2)
        self.layer4 = self._make_layer(8 * width, 2)
        for m in self.modules():     # torchvision's ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes:
            downsample = nn.Sequential(conv1x1(self._inplanes, planes, stride), nn.BatchNorm2d(planes))
        blocks = [BasicBlock(self._inplanes, planes, stride, downsample), BasicBlock(planes, planes)]
        self._inplanes = planes
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class AudioNet(ResNetTrunk):
    """Audio ResNet-18 from scratch: 1-channel stem, global max-pool -> [B, 8*width]."""

    def __init__(self, width: int = 64) -> None:
        super().__init__(in_channels=1, width=width, stride=32)
        for m in self.modules():     # official audio initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, mean=1.0, std=0.02)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_max_pool2d(super().forward(x), 1).flatten(1)


class FlowAttention(nn.Module):
    """Cross attention: queries and values from the visual map, keys from the flow map.

    In the official block a location's output depends on its own position only through
    its *visual* query: two identical-looking objects, one moving, get identical outputs,
    so flow cannot say which of them sounds (``model.flow_local`` adds that cue).
    """

    def __init__(self, dim: int, key_in_dim: int) -> None:
        super().__init__()
        self.query_conv = nn.Conv2d(dim, dim // 8, 1)
        self.key_conv = nn.Conv2d(key_in_dim, dim // 8, 1)
        self.value_conv = nn.Conv2d(dim, dim, 1)
        self.scale = 1.0 / math.sqrt(dim // 8)

    def forward(self, visual: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        b, c, h, w = visual.shape
        q = self.query_conv(visual).flatten(2).transpose(1, 2)     # [B, N, C/8]
        k = self.key_conv(flow).flatten(2)                         # [B, C/8, N]
        attn = torch.softmax(torch.bmm(q, k) * self.scale, dim=-1)  # [B, N, N]
        v = self.value_conv(visual).flatten(2)                     # [B, C, N]
        return torch.bmm(v, attn.transpose(1, 2)).view(b, c, h, w)


# ---------------------------------------------------------------------- pretrained weights

class WeightsUnavailableError(RuntimeError):
    """Pretrained weights by name are neither cached nor downloadable: the message names
    the file to provide and where to put it."""


def _fetch_torchvision_resnet18(name: str) -> dict[str, torch.Tensor]:
    """ImageNet weights by torchvision name; fails fast, with what to do, when offline."""
    from torchvision.models import ResNet18_Weights

    from htf.config import ConfigError
    try:
        weights = ResNet18_Weights[name]
    except KeyError:
        raise ConfigError(f"unknown torchvision ResNet-18 weights '{name}' "
                          f"(known: {[w.name for w in ResNet18_Weights]}) and no such file") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.is_file() and os.environ.get("HTF_OFFLINE", "") not in ("", "0"):
        raise WeightsUnavailableError(f"weights '{name}' are not cached at {cached} and HTF_OFFLINE is "
                                      f"set; download {weights.url} there or give a local path")
    try:
        return weights.get_state_dict(progress=False)
    except Exception as err:  # URLError, socket errors, ...
        raise WeightsUnavailableError(f"could not download ResNet-18 weights '{name}' from {weights.url} "
                                      f"({err}); on an offline machine put the file at {cached} or set "
                                      f"the weights option to a local .pth path") from None


def load_backbone_weights(trunk: ResNetTrunk, source: str, skip: tuple[str, ...] = ()) -> None:
    """Load torchvision-style ResNet-18 weights (path or name) into ``trunk``; fc is ignored."""
    from htf.config import ConfigError
    if Path(source).suffix in (".pth", ".pt", ".bin") or os.path.sep in source:
        if not Path(source).is_file():
            raise ConfigError(f"backbone weights file not found: {source}")
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ConfigError(f"backbone weights {source}: not a weights file torch can read safely "
                              f"({type(err).__name__})") from None
        if not isinstance(state, dict):
            raise ConfigError(f"backbone weights {source}: holds a {type(state).__name__}, not a state dict")
        state = state.get("state_dict", state.get("model", state))
    else:
        state = _fetch_torchvision_resnet18(source)
    state = {k: v for k, v in state.items() if not k.startswith("fc.") and not k.startswith(skip)}
    own = trunk.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise ConfigError(f"backbone weights {source}: shape mismatch for {wrong[:3]} "
                          f"(pretrained weights need width 64)")
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(skip)]
    if missing or unexpected:
        raise ConfigError(f"backbone weights {source}: missing {missing[:5]}, unexpected {unexpected[:5]}")


# --------------------------------------------------------------------------------- model

class HTFModel(nn.Module):
    """Vision + audio (+ flow attention) -> 7x7 cosine map; optionally the training loss."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.data_settings: dict[str, Any] | None = None
        gated = cfg.flow != "none" and cfg.flow_gate
        stride = cfg.image_size // MAP_SIZE
        dim = cfg.feat_dim
        self.imgnet = ResNetTrunk(3, cfg.width, stride)
        self.audnet = AudioNet(cfg.width)
        if cfg.flow == "cnn":
            self.flownet: nn.Module = ResNetTrunk(2, cfg.width, stride)
            self.flownet.conv1.reset_parameters()   # a fresh 2-channel stem, as the official code
            self.flowatt = FlowAttention(dim, dim)
        elif cfg.flow == "maxpool":
            self.flownet = nn.AdaptiveMaxPool2d(MAP_SIZE)
            self.flowatt = FlowAttention(dim, 2)
        if cfg.flow != "none" and cfg.flow_local:
            # Our option: a 1x1 projection of each location's own flow features is added at
            # that location (after the attended map is normalised, so its size is measured
            # against unit features): a spatial motion cue the official block cannot
            # express. It starts at zero, so the model begins as the official one.
            # maxpool: the max-pooled rectified components (+x, +y, -x, -y), which say how
            # fast and along which axis a place moves (signed max-pooling alone cannot see
            # leftward motion).
            self.flow_local_conv = nn.Conv2d(dim if cfg.flow == "cnn" else 4, dim, 1)
            nn.init.zeros_(self.flow_local_conv.weight)
            nn.init.zeros_(self.flow_local_conv.bias)
        if gated:
            # Chosen on the validation split by the trainer (train.flow_gate_min_gain); starts
            # closed, so an unvalidated model is the no-flow model of its weights (or its twin).
            self.register_buffer("flow_gate", torch.zeros(()))
        if cfg.has_motion_prior():
            # Chosen on the validation split after training (train.after_training.calibrate_motion_prior);
            # 0 until then, so the map is the network's own.
            self.register_buffer("motion_prior_weight", torch.zeros(()))
        if cfg.mirror_average:
            # Set by the trainer in best.pt after training; 0 until then (the clip as it is).
            self.register_buffer("mirror_averaged", torch.zeros(()))
        if cfg.map_blur > 0:
            # Set by the trainer in best.pt after training; 0 until then (the map as it is).
            self.register_buffer("map_blurred", torch.zeros(()))
        if cfg.flow != "none" and cfg.attention_value_init == "zero":
            # Residual branch starts at zero: the model begins as the no-flow model and
            # adds flow context only as far as it helps (from-scratch training on a CPU).
            nn.init.zeros_(self.flowatt.value_conv.weight)
            nn.init.zeros_(self.flowatt.value_conv.bias)
        if cfg.vision_weights:
            load_backbone_weights(self.imgnet, cfg.vision_weights)
        if cfg.flow == "cnn" and cfg.flow_weights:
            load_backbone_weights(self.flownet, cfg.flow_weights, skip=("conv1.",))
        if cfg.freeze_vision:
            for p in self.imgnet.parameters():
                p.requires_grad_(False)
        if gated and cfg.flow_fallback == "twin":
            self.twin = self._twin_from_the_same_start()
        self.train()

    def _twin_from_the_same_start(self) -> "HTFModel":
        """The flow-free twin, starting from this model's vision and audio weights. These are
        the first weights drawn, as in a `flow: none` model seeded alike, so with the same
        batches the twin *is* the no-flow run (tests/test_train_trainer.py compares the two
        runs); and with zero-initialised flow branches both networks start as one function,
        so the gate compares what flow adds, not two random starts."""
        twin = HTFModel(dataclasses.replace(self.cfg, flow="none", flow_local=False, flow_dropout=0.0, flow_gate=False,
                                            flow_fallback="shared", vision_weights=None,   # copied below
                                            mirror_average=False, twin_average=False,  # the holder averages,
                                            map_blur=0.0, sync_prior_without_flow=False))  # blurs, adds
        twin.imgnet.load_state_dict(self.imgnet.state_dict())
        twin.audnet.load_state_dict(self.audnet.state_dict())
        return twin

    def train(self, mode: bool = True) -> "HTFModel":
        super().train(mode)
        if mode and self.cfg.freeze_vision and self.cfg.frozen_bn == "eval":
            self.imgnet.eval()
        return self

    def _local_flow(self, flow: torch.Tensor, flow_features: torch.Tensor) -> torch.Tensor:
        if self.cfg.flow == "cnn":
            return flow_features
        rectified = F.relu(torch.cat([flow, -flow], dim=1))
        return F.adaptive_max_pool2d(rectified, MAP_SIZE)

    def features(self, image: torch.Tensor, flow: torch.Tensor | None,
                 spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(attended visual map [B, C, 7, 7], audio vector [B, C]), both L2-normalised, float32."""
        if hasattr(self, "twin") and not self.flow_enabled():
            return self.twin.features(image, None, spec)
        img = self.imgnet(image)
        if self.flow_enabled():
            if flow is None:
                raise ValueError(f"model has flow '{self.cfg.flow}' but no flow was given")
            img = self._add_flow(img, flow)
        aud = self.audnet(spec)
        return F.normalize(img.float(), dim=1), F.normalize(aud.float(), dim=1)

    def flow_enabled(self) -> bool:
        """False when the flow path is skipped: no flow, or evaluation with the gate closed."""
        if self.cfg.flow == "none":
            return False
        return self.training or not hasattr(self, "flow_gate") or float(self.flow_gate) > 0

    def _flow_keep(self, batch: int, device: torch.device) -> torch.Tensor | None:
        """Training with ``flow_dropout``: a per-clip factor [B, 1, 1, 1] on the flow path, 0
        for a dropped clip (probability ``flow_dropout``), else 1. Otherwise None (every clip
        keeps its flow; a closed gate skips the path before this is asked)."""
        if self.training and self.cfg.flow_dropout > 0:
            return (torch.rand(batch, 1, 1, 1, device=device) >= self.cfg.flow_dropout).float()
        return None

    def _add_flow(self, img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """The visual map with the flow path's attention (and local term) added; a clip whose
        keep factor is 0 gets its visual map back (the same map after normalisation)."""
        keep = self._flow_keep(img.shape[0], img.device)
        flow_features = self.flownet(flow)
        attended = self.flowatt(img, flow_features)
        img = img + (attended if keep is None else attended * keep)
        if self.cfg.flow_local:
            local = self.flow_local_conv(self._local_flow(flow, flow_features)).float()
            img = F.normalize(img.float(), dim=1) + (local if keep is None else local * keep)
        return img

    def forward(self, image: torch.Tensor, flow: torch.Tensor | None, spec: torch.Tensor,
                sync: torch.Tensor | None = None, return_loss: bool = False,
                finish: bool = True) -> dict[str, torch.Tensor]:
        """``sync`` [B, 7, 7]: the clips' sync prior (htf.inputs.sync_input), needed only by a
        model whose map adds it (``model.motion_prior: sync`` with a weight chosen).
        ``finish`` False: the evaluation map before the prior and the blur (``finish_map``), the
        map the trainer weighs prior weights on."""
        img, aud = self.features(image, flow, spec)
        out: dict[str, torch.Tensor] = {"image_features": img, "audio_features": aud}
        if return_loss:
            guide = sync if self.training and self.cfg.trains_with_sync() else None
            out["loss"], amap = localization_loss(img, aud, self.cfg.loss, training=self.training, guide=guide)
            if self.training and hasattr(self, "twin"):   # the fallback learns on the same batch
                out["loss"] = out["loss"] + self.twin(image, None, spec, sync=guide, return_loss=True)["loss"]
        elif not self.training and (self.gate_is_both() or self.mirrors()):
            amap = self._averaged_map(image, flow, spec, own_maps(img, aud))
        else:
            amap = own_maps(img, aud)
        if not self.training and finish:
            weight = self.motion_prior()
            amap = self.finish_map(amap, self.prior_map(flow, sync) if weight > 0 else None, weight)
        out["map"] = amap
        return out

    def finish_map(self, amap: torch.Tensor, prior: torch.Tensor | None, weight: float) -> torch.Tensor:
        """The evaluation map's last steps: ``weight`` x the prior added (with_motion_prior),
        then the blur once switched on. The trainer scores each candidate weight through this
        too, so val weighs the very maps the model then gives."""
        if weight > 0:
            amap = with_motion_prior(amap, prior, weight)
        if self.blurs():
            amap = smooth_maps(amap, self.cfg.map_blur)
        return amap

    def prior_map(self, flow: torch.Tensor | None, sync: torch.Tensor | None) -> torch.Tensor:
        """[B, 7, 7] the motion the prior adds: the flow's (``motion_map``) or the sync map."""
        if self.cfg.motion_prior == "sync":
            if sync is None:
                raise ValueError("this model adds the sync map to its map (model.motion_prior: sync) but no "
                                 "sync map was given: prepare inputs with htf.inputs.eval_inputs")
            return sync.float()
        if flow is None:
            raise ValueError(f"model has flow '{self.cfg.flow}' but no flow was given")
        return motion_map(flow, self.cfg.motion_prior_floor)

    def gate_is_both(self) -> bool:
        """The gate's third position (model.twin_average, set after training): the mean of the
        flow net's and the twin's maps."""
        return hasattr(self, "twin") and hasattr(self, "flow_gate") and float(self.flow_gate) == GATE_BOTH

    def mirrors(self) -> bool:
        """True once the trainer has switched on model.mirror_average (after training)."""
        return hasattr(self, "mirror_averaged") and float(self.mirror_averaged) > 0

    def blurs(self) -> bool:
        """True once the trainer has switched on model.map_blur (after training)."""
        return hasattr(self, "map_blurred") and float(self.map_blurred) > 0

    def _averaged_map(self, image: torch.Tensor, flow: torch.Tensor | None, spec: torch.Tensor,
                      first: torch.Tensor) -> torch.Tensor:
        """The mean of the min-max scaled maps of the networks the gate names (both: the flow net
        and the twin; else the gate's own) on the clip and, with the mirror average, on its
        mirror image, brought back into the range of ``first``, the gate's own map of the clip
        (with both open, the flow net's), so values stay cosines."""
        both = self.gate_is_both()

        def twin_map(img: torch.Tensor) -> list[torch.Tensor]:
            return [own_maps(*self.twin.features(img, None, spec))] if both else []

        maps = [first] + twin_map(image)
        if self.mirrors():
            mirrored_image, mirrored_flow = self._mirrored(image, flow)
            mirrored = [own_maps(*self.features(mirrored_image, mirrored_flow, spec))] + twin_map(mirrored_image)
            maps += [m.flip(-1) for m in mirrored]
        low = first.amin(dim=(1, 2), keepdim=True)
        span = first.amax(dim=(1, 2), keepdim=True) - low
        return low + span * torch.stack([_min_max(m) for m in maps]).mean(dim=0)

    def _mirrored(self, image: torch.Tensor, flow: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The clip flipped left-right as training's augmentation flips it: flow vectors negate
        x, except the official uint8 encoding, whose values training flips without a sign change."""
        if flow is None:
            return image.flip(-1), None
        mirrored_flow = flow.flip(-1)
        if ((self.data_settings or {}).get("flow") or {}).get("encoding") != OFFICIAL_FLOW_ENCODING:
            mirrored_flow = torch.cat([-mirrored_flow[:, :1], mirrored_flow[:, 1:]], dim=1)
        return image.flip(-1), mirrored_flow

    def describe(self) -> str:
        """The map this model gives at evaluation, in words (for reports)."""
        parts = [f"flow: {self.cfg.flow}"]
        if hasattr(self, "flow_gate"):
            closed = "closed" + (" (the no-flow twin's map)" if hasattr(self, "twin") else "")
            position = ("both (the mean of the flow net's and the twin's maps)" if self.gate_is_both()
                        else "open" if float(self.flow_gate) > 0 else closed)
            parts.append(f"flow gate {position}")
        if self.mirrors():
            parts.append("averaged with the mirror image")
        if hasattr(self, "motion_prior_weight"):
            source = "sync" if self.cfg.motion_prior == "sync" else "motion"
            parts.append(f"{source} prior weight {self.motion_prior():g}")
        if self.blurs():
            parts.append(f"blurred by {self.cfg.map_blur:g} cells")
        return f"HTFModel ({', '.join(parts)})"

    def motion_prior(self) -> float:
        """The weight of the motion prior added to the map at evaluation (0: none)."""
        return float(self.motion_prior_weight) if hasattr(self, "motion_prior_weight") else 0.0


def _min_max(amap: torch.Tensor) -> torch.Tensor:
    """[B, h, w] -> each map scaled to [0, 1] (a constant map to 0)."""
    low = amap.amin(dim=(1, 2), keepdim=True)
    return (amap - low) / (amap.amax(dim=(1, 2), keepdim=True) - low).clamp(min=1e-6)


# The blur's reach: 2 cells each side (a 5x5 kernel), a third of the 7x7 map.
BLUR_RADIUS = 2


def smooth_maps(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """[B, h, w] -> each map blurred by a (2 BLUR_RADIUS + 1)-tap Gaussian of ``sigma`` cells
    along each axis, edges replicated; sigma 0 gives the maps back. The one map blur, for
    models (model.map_blur) and baselines (eval's baseline.map_blur)."""
    if sigma <= 0:
        return maps
    offsets = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=torch.float32, device=maps.device)
    taps = torch.exp(-offsets ** 2 / (2.0 * sigma ** 2))
    taps = taps / taps.sum()
    r = BLUR_RADIUS
    x = F.pad(maps[:, None].float(), (r, r, r, r), mode="replicate")
    x = F.conv2d(F.conv2d(x, taps.view(1, 1, 1, -1)), taps.view(1, 1, -1, 1))
    return x[:, 0].to(maps.dtype)


def motion_map(flow: torch.Tensor, floor: float) -> torch.Tensor:
    """[B, 2, H, W] flow -> [B, 7, 7] motion in [0, 1]: the magnitude average-pooled to the
    map's grid, shifted so the stillest cell is 0 and divided by the largest value, or by
    ``floor`` pixels where nothing moves more (a still clip's noise stays near 0)."""
    pooled = F.adaptive_avg_pool2d(flow.float().norm(dim=1, keepdim=True), MAP_SIZE)[:, 0]
    low = pooled.amin(dim=(1, 2), keepdim=True)
    span = (pooled.amax(dim=(1, 2), keepdim=True) - low).clamp(min=floor)
    return (pooled - low) / span


def with_motion_prior(amap: torch.Tensor, motion: torch.Tensor, weight: float) -> torch.Tensor:
    """Per clip, (the map min-max scaled to [0, 1]) + ``weight`` x (the motion map), brought
    back into the map's own range: where two places are equally likely by sight and sound,
    the moving one wins, and the values stay cosines (a confidence read from the map keeps
    its scale). Weight 0 gives the map back."""
    low = amap.amin(dim=(1, 2), keepdim=True)
    span = amap.amax(dim=(1, 2), keepdim=True) - low
    return low + span * (_min_max(amap) + weight * motion.to(amap.dtype)) / (1.0 + weight)


# ------------------------------------------------------------------------------- loading

def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for prefix in ("model.", "module."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def _official_config(state: dict[str, torch.Tensor]) -> ModelConfig:
    """Infer the official variant from its state dict (flow type and width)."""
    if "imgnet.conv1.weight" not in state:
        raise ValueError(f"not a Hear The Flow state dict: no 'imgnet.conv1.weight' "
                         f"(first keys: {list(state)[:5]})")
    if any(k.startswith("flownet.") for k in state):
        flow = "cnn"
    elif "flowatt.key_conv.weight" in state:
        flow = "maxpool"
    else:
        flow = "none"
    width = int(state["imgnet.conv1.weight"].shape[0])
    return ModelConfig(flow=flow, width=width, image_size=224)


class UntrustedCheckpointError(ValueError):
    """A checkpoint holds objects outside the allow-list: loading it could run code."""


def _lightning_safe_globals() -> list[Any]:
    """Classes a real Lightning checkpoint of this model holds besides tensors and plain
    containers: the hyper-parameters (an ``argparse.Namespace``), paths in callback
    states, NumPy scalars in logged metrics. Nothing here runs code when unpickled."""
    import argparse
    import pathlib

    import numpy as np

    allowed: list[Any] = [argparse.Namespace, pathlib.PosixPath, pathlib.WindowsPath,
                          pathlib.PurePosixPath, pathlib.PureWindowsPath, np.dtype]
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # NumPy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    allowed.append(scalar)
    return allowed


def _unsafe_globals(path: Path) -> list[str]:
    """Names of the globals ``path`` would import that the allow-list does not cover
    (read from the pickle without running it)."""
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in _lightning_safe_globals()}
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:
        return []
    return [g for g in found if g not in allowed]


def _torch_load(path: Path, map_location: Any, trust: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` and the Lightning allow-list; a file that
    needs anything else is refused (naming the class) unless ``trust`` is set."""
    try:
        with torch.serialization.safe_globals(_lightning_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        if trust:
            return torch.load(path, map_location=map_location, weights_only=False)
        names = _unsafe_globals(path)
        if not names:       # nothing it would import: not a file torch.save wrote
            raise ValueError(f"{path}: not a checkpoint (not a file torch.save wrote, or a damaged "
                             "one)") from None
        raise UntrustedCheckpointError(
            f"{path}: refused: it holds {', '.join(names)}, which real checkpoints of this model do "
            "not contain (loading it could run code). Only if you trust the file's origin, pass "
            "--trust-checkpoint (training: --set train.trust_init_from=true).") from None
    except Exception as err:
        text = str(err)
        if "cuda" in text.lower() and not torch.cuda.is_available():
            raise ValueError(f"{path}: asked to load onto {map_location}, but CUDA is not available "
                             f"on this machine; use the CPU") from None
        raise ValueError(f"{path}: not a checkpoint (not a file torch.save wrote, or a damaged one)") from None


def model_from_state(state: dict[str, torch.Tensor], cfg: ModelConfig, source: str) -> HTFModel:
    cfg = dataclasses.replace(cfg, vision_weights=None, flow_weights=None)  # never download here
    model = HTFModel(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{source}: weights do not match the model (flow={cfg.flow}, width={cfg.width}): "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    return model


def load_model(path: str | os.PathLike, map_location: Any = "cpu", trust: bool = False) -> HTFModel:
    """Our checkpoint, the official ``{'model': state_dict}`` .pth, or a Lightning .ckpt -> model.

    Loaded with ``weights_only=True`` (plus the classes real Lightning checkpoints hold); a
    file needing any other class is refused unless ``trust`` (it could run code).

    The model is returned in eval mode with ``model.data_settings`` set (the shards'
    ``meta["pipeline"]`` it was trained on; the htf-official settings for official weights).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = _torch_load(path, map_location, trust)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    if ckpt.get("format") == CHECKPOINT_FORMAT:
        from htf.config import load_config
        saved = dict(ckpt["config"]["model"])
        # 'attention' (official | flow_query) was an option until flow_query was removed.
        if saved.pop("attention", "official") != "official":
            raise ValueError(f"{path}: made with model.attention=flow_query, which no longer exists")
        cfg = load_config(ModelConfig, base=saved)
        model = model_from_state(ckpt["model"], cfg, str(path))
        model.data_settings = ckpt.get("data_settings")
    else:
        state = ckpt.get("state_dict", ckpt.get("model", ckpt))
        if not isinstance(state, dict):
            raise ValueError(f"{path}: no state dict under 'model' or 'state_dict'")
        state = _strip_prefix(state)
        model = model_from_state(state, _official_config(state), str(path))
        model.data_settings = official_data_settings()
    return model.eval()


def checkpoint_payload(model: HTFModel, full_config: Any) -> dict[str, Any]:
    """The model part of our checkpoint (the trainer adds optimizer, step, RNG, ...)."""
    from htf.config import to_dict
    return {"format": CHECKPOINT_FORMAT, "model": model.state_dict(),
            "config": to_dict(full_config), "data_settings": model.data_settings}
