"""The evaluator's one typed config object (loaded with :func:`htf.config.load_config`).

Presets live in ``configs/eval/*.yaml``; any key can be overridden with ``--set a.b=value``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from htf.metrics import INTERPOLATIONS


@dataclass
class ProtocolConfig:
    # auto: each sample's meta["box_format"]; flickr | vggss: force one (a sample whose
    # box_format differs is reported in the warnings).
    protocol: Literal["auto", "flickr", "vggss"] = "auto"
    size: int = 224                  # side of the ground-truth and prediction maps
    interpolation: str = "bicubic"   # 7x7 -> size; official Hear The Flow: bicubic

    def validate(self) -> None:
        if self.size < 8:
            raise ValueError(f"size must be >= 8, got {self.size}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {list(INTERPOLATIONS)}, got {self.interpolation!r}")


@dataclass
class ExtendedConfig:
    """SLAVC's extended protocol (``--extended``): non-sounding pairs, AP and max-F1."""
    enabled: bool = False
    # auto: SLAVC's list for Flickr / VGG-SS ids (metadata/), seeded pairs otherwise;
    # seeded: always seeded pairs; or a path to a `video,audio,label` CSV.
    pairs: str = "auto"
    seed: int = 0
    # htf: confidence from the raw 7x7 map (extended.confidence), the main protocol's mask.
    # slavc: as SLAVC's test code: the map upsampled to 224 (slavc_interpolation), rescaled
    # by its fixed range; confidence = mean of the top quarter; SLAVC's mask (absolute
    # threshold pred_thr, or with relative_prediction the min-max map above its pred_size
    # quantile).
    protocol: Literal["htf", "slavc"] = "htf"
    confidence: Literal["max", "mean"] = "max"   # htf: of the raw (unnormalised) map
    relative_prediction: bool = False
    pred_size: float = 0.5
    pred_thr: float = 0.5
    fixed_range: list[float] = field(default_factory=lambda: [-1.0, 1.0])  # of a cosine map
    slavc_interpolation: str = "bicubic_align_corners"

    def validate(self) -> None:
        if len(self.fixed_range) != 2 or not self.fixed_range[1] > self.fixed_range[0]:
            raise ValueError(f"fixed_range must be [lo, hi] with lo < hi, got {self.fixed_range}")
        if not 0 <= self.pred_size < 1:
            raise ValueError("pred_size must be in [0, 1)")
        if self.slavc_interpolation not in INTERPOLATIONS:
            raise ValueError(f"slavc_interpolation must be one of {list(INTERPOLATIONS)}")


@dataclass
class BaselineConfig:
    center_sigma: float = 0.25       # Gaussian std as a fraction of the frame side
    # map: flow magnitude average-pooled to the model's 7x7 grid (same resolution as a
    # model, so the comparison measures the prior, not the resolution); full: magnitude
    # at stored resolution, area-resized to the metric size.
    flow_resolution: Literal["map", "full"] = "map"
    map_size: int = 7
    seed: int = 0                    # random baseline: per clip seeded by (seed, clip id)
    sync_smooth_frames: int = 12     # sync baseline: both series smoothed over this many frames
    # Every baseline's map blurred as a model's is by model.map_blur (htf.model.smooth_maps: a
    # 5x5 Gaussian of this many map cells); 0: none. Give both the same value, or neither.
    map_blur: float = 0.0

    def validate(self) -> None:
        if self.center_sigma <= 0 or self.map_size < 1:
            raise ValueError("center_sigma must be > 0 and map_size >= 1")
        if self.sync_smooth_frames < 1:
            raise ValueError("sync_smooth_frames must be >= 1")
        if self.map_blur < 0:
            raise ValueError(f"map_blur must be >= 0 map cells (0: no blur), got {self.map_blur}")
        if self.map_blur and self.flow_resolution == "full":
            raise ValueError("map_blur is in cells of the map_size grid; flow_resolution 'full' makes no grid: "
                             "set one of them back (map_blur: 0 or flow_resolution: map)")


@dataclass
class PicturesConfig:
    heatmaps: int = 0                # N best and N worst overlays (0: none)
    alpha: float = 0.5               # heat-map opacity over the frame
    colormap: str = "jet"            # OpenCV colormap name
    box_thickness: int = 2

    def validate(self) -> None:
        if self.heatmaps < 0 or not 0 <= self.alpha <= 1 or self.box_thickness < 1:
            raise ValueError("heatmaps >= 0, alpha in 0..1, box_thickness >= 1")


@dataclass
class RunOptions:
    batch_size: int = 16
    device: str = "cpu"
    # warn | error | off: shard settings (meta["pipeline"]) against the model's data_settings
    check_settings: Literal["warn", "error", "off"] = "warn"
    max_clips: int | None = None     # stop after this many clips (quick looks; reported)
    # The test list the shards were built from (txt or csv, id in column 0): metrics then
    # report n against the list length and name every listed clip that was not scored.
    split_list: str | None = None

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.max_clips is not None and self.max_clips < 1:
            raise ValueError("max_clips must be >= 1 or null")


@dataclass
class EvalConfig:
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    extended: ExtendedConfig = field(default_factory=ExtendedConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    pictures: PicturesConfig = field(default_factory=PicturesConfig)
    run: RunOptions = field(default_factory=RunOptions)
