"""Typed settings of the preprocessing pipeline (loaded with ``htf.config.load_config``).

Sections ``frames``, ``flow``, ``audio`` and ``motion`` decide what a sample contains and are copied
into every sample's ``meta["pipeline"]`` (of the flow methods' own settings, only the
chosen method's block; see ``htf.settings``), so a model always knows the data it was
trained on. ``pack`` and ``run`` only decide how the work is organised.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Optional

from htf.settings import RUNTIME_SETTINGS, chosen_method_only, without


@dataclass
class FramesConfig:
    # Stored frames: short side resized to this many pixels (0 keeps the native size).
    short_side: int = 256
    # The long side is capped too, so a panorama or a portrait video stays bounded.
    max_long_side: int = 512
    # Files with more source pixels than this are rejected: decoding one 16k frame
    # costs more memory than a worker should hold.
    max_source_pixels: int = 8192 * 8192
    # Clips with fewer frames cannot give a flow pair (keyframe, keyframe + 1).
    min_frames: int = 2

    def validate(self) -> None:
        if self.short_side < 0 or (0 < self.short_side < 16):
            raise ValueError("short_side must be 0 (native) or >= 16")
        if self.max_long_side < self.short_side:
            raise ValueError("max_long_side must be >= short_side")
        if self.min_frames < 2:
            raise ValueError("min_frames must be >= 2 (flow needs a pair)")


@dataclass
class FarnebackConfig:
    """OpenCV Farneback parameters; the defaults are the official ones."""
    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2


@dataclass
class DisConfig:
    preset: Literal["ultrafast", "fast", "medium"] = "medium"    # OpenCV DIS preset


@dataclass
class LearnedFlowConfig:
    """Settings of every ptlflow model (``flow.method`` names the model)."""
    # A checkpoint path, or a ptlflow checkpoint name (e.g. 'things') that must already be
    # in the torch hub cache: nothing is ever downloaded.
    ckpt: Optional[str] = None
    # Without a checkpoint a learned model has random weights (meaningless flow); only
    # benchmarks and tests should ask for that.
    allow_random_init: bool = False


@dataclass
class FlowConfig:
    # farneback | dis | any ptlflow model name (raft, raft_small, ...)
    method: str = "dis"
    # 'stored': flow of the stored (resized) frames; 'native': of the source-size frames,
    # then resized to the stored size (what the official preprocessing does).
    resolution: Literal["stored", "native"] = "stored"
    # Scale vectors with the resize. The official code does not (a defect kept only in
    # the htf-official preset).
    rescale_vectors: bool = True
    # 'signed': float flow in stored-frame pixels. 'uint8_clip': the official JPEG round
    # trip (rounded, clipped to 0..255, divided by 255: negative motion is lost).
    encoding: Literal["signed", "uint8_clip"] = "signed"
    # Each method's own settings; only the chosen method's block is recorded in samples
    # and hashed into the flow cache key.
    farneback: FarnebackConfig = field(default_factory=FarnebackConfig)
    dis: DisConfig = field(default_factory=DisConfig)
    learned: LearnedFlowConfig = field(default_factory=LearnedFlowConfig)
    # Execution details (htf.settings.RUNTIME_SETTINGS: they do not change what is computed).
    device: str = "cpu"
    fp16: bool = True
    batch_size: int = 8

    def validate(self) -> None:
        if not self.method:
            raise ValueError("method must be a flow method name")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be cpu or cuda[:N], got {self.device!r}")


@dataclass
class AudioConfig:
    # 'logmel': log-mel spectrogram; 'linear': the official 257-bin linear log spectrogram.
    feature: Literal["logmel", "linear"] = "logmel"
    sample_rate: int = 16000
    seconds: float = 3.0
    # Window centre: the keyframe time (default), the middle of the clip, or
    # 'official_test': the official test loader's window of the whole track (centre at half
    # its whole seconds, Python slice semantics, tiled when short; see pipeline/decode.py).
    center: Literal["keyframe", "clip_middle", "official_test"] = "keyframe"
    # log-mel parameters (25 ms window, 10 ms hop at 16 kHz -> 301 frames for 3 s)
    n_mels: int = 80
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    fmin: float = 20.0
    fmax: Optional[float] = None
    # linear (official): scipy.signal.spectrogram(nperseg=512, noverlap=274), log(S+1e-7)/12
    nperseg: int = 512
    noverlap: int = 274
    # Drop rules, for training shards only (see DropConfig): a track shorter than the
    # window is tiled (official behaviour) unless it covers less than this fraction of it:
    # then the clip is dropped as audio_too_short.
    min_coverage: float = 0.3
    # A window quieter than this (RMS, dB full scale) is digital silence: dropped.
    min_rms_dbfs: float = -80.0

    def validate(self) -> None:
        if self.sample_rate < 1000 or self.seconds <= 0:
            raise ValueError("sample_rate must be >= 1000 and seconds > 0")
        if self.noverlap >= self.nperseg:
            raise ValueError("noverlap must be < nperseg")
        if not 0 < self.min_coverage <= 1:
            raise ValueError("min_coverage must be in (0, 1]")


@dataclass
class MotionConfig:
    # Motion over time, for the sync map (htf.sync: the `sync` baseline, model.motion_prior:
    # sync): every frame of the audio window in grey at side x side, its change from the
    # previous frame averaged per cell of a grid x grid grid, stored with the audio's
    # loudness over the same intervals. Off by default: decoding every frame of the window
    # costs 2-3x the CPU of the rest of a clip (bench/results_pipeline.md). 'eval': only
    # the evaluation splits (drop.eval_prefixes) get them, which is all the sync baseline
    # and the after-training sync prior read; training shards skip the cost.
    series: bool | Literal["eval"] = False
    grid: int = 7
    side: int = 112

    def validate(self) -> None:
        if self.grid < 1 or self.side < self.grid or self.side % self.grid:
            raise ValueError(f"motion.side ({self.side}) must be a multiple of motion.grid ({self.grid}) "
                             f"and grid >= 1")


@dataclass
class PackConfig:
    # Shard names: <prefix>-000000.tar; the prefix lets train/val/test share a folder.
    prefix: str = "shard"
    # Samples per shard; 0 = estimate from target_shard_mb and the stored sample size.
    samples_per_shard: int = 0
    target_shard_mb: float = 640.0

    def validate(self) -> None:
        if not self.prefix or "/" in self.prefix or "." in self.prefix:
            raise ValueError(f"prefix must be a plain name without '/' or '.', got {self.prefix!r}")
        if self.samples_per_shard < 0 or self.target_shard_mb <= 0:
            raise ValueError("samples_per_shard must be >= 0 and target_shard_mb > 0")


@dataclass
class RunConfig:
    workers: int = 1
    executor: Literal["local", "ray"] = "local"
    # Ray cluster address ('auto' joins a running cluster); empty starts a local instance.
    ray_address: str = ""
    # Per-clip wall-clock limit: a pathological file is recorded as a failure, not a hang.
    clip_timeout_s: float = 120.0
    # Flow cache folder; empty = <output>/cache
    cache_dir: str = ""
    # Clips per task (a shard is cut into tasks so that every worker has work); 0 = about
    # 8 tasks per worker, at most 64 clips each. Never changes what is written.
    task_clips: int = 0
    # Progress: a bar on a terminal; otherwise (a batch job's log) one line this often.
    progress: bool = True
    progress_interval_s: float = 30.0

    def validate(self) -> None:
        if self.workers < 1 or self.clip_timeout_s <= 0:
            raise ValueError("workers must be >= 1 and clip_timeout_s > 0")
        if self.task_clips < 0 or self.progress_interval_s <= 0:
            raise ValueError("task_clips must be >= 0 (0 = automatic) and progress_interval_s > 0")


@dataclass
class DropConfig:
    """Which shards may lose clips to the audio drop rules (audio.min_coverage,
    audio.min_rms_dbfs). They apply to training data only: shards whose prefix
    (``pack.prefix``, ``--shard-prefix``) is listed here are evaluation splits and keep
    every clip of their list (short audio tiled, silence kept, as the official test
    loader does), so a test set's denominator is its list length."""
    eval_prefixes: list[str] = field(default_factory=lambda: ["val", "test", "pairs"])


@dataclass
class InputConfig:
    # 'flickr' | 'vggsound' | 'generic': how ids in lists map to file stems.
    # VGGSound lists use 'YTID_000019' where VGG-SS files are named the same; a list
    # entry with a start second in other forms ('YTID_19') is normalised to 6 digits.
    id_style: Literal["generic", "flickr", "vggsound"] = "generic"
    video_extensions: list[str] = field(default_factory=lambda: [
        ".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp", ".ts"])
    audio_extensions: list[str] = field(default_factory=lambda: [
        ".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus"])


@dataclass
class PipelineConfig:
    frames: FramesConfig = field(default_factory=FramesConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    run: RunConfig = field(default_factory=RunConfig)
    input: InputConfig = field(default_factory=InputConfig)
    drop: DropConfig = field(default_factory=DropConfig)
    # Free text: which preset this is (recorded in samples as meta['source']).
    source: str = "generic"


def applies_drop_rules(cfg: PipelineConfig) -> bool:
    """True for training shards: the audio drop rules may remove clips; evaluation splits
    (``drop.eval_prefixes``) keep every clip."""
    return cfg.pack.prefix not in cfg.drop.eval_prefixes


def writes_motion_series(cfg: PipelineConfig) -> bool:
    """True when this run's samples carry motion series: ``motion.series`` true, or 'eval'
    and the shards are an evaluation split."""
    return cfg.motion.series is True or (cfg.motion.series == "eval" and not applies_drop_rules(cfg))


def sample_settings(cfg: PipelineConfig) -> dict[str, Any]:
    """What goes into ``meta['pipeline']``: the settings that decide a sample's content
    (of the flow methods, only the chosen one's)."""
    return {"frames": asdict(cfg.frames), "flow": chosen_method_only(asdict(cfg.flow)),
            "audio": asdict(cfg.audio), "motion": asdict(cfg.motion)}


# Bumped when decoding changes what a clip's frames are (2: display rotation applied,
# frame counts from decodable frames), so caches and shards made before are not reused.
DECODE_VERSION = 2


def flow_cache_key(cfg: PipelineConfig) -> str:
    """Short hash of everything the cached flow depends on (frames + the chosen method's
    flow settings, runtime settings left out)."""
    settings = sample_settings(cfg)
    # flow_version 2: native-resolution flow sees grayscale made from RGB (BT.601), and the
    # uint8_clip encoding includes the official JPEG round trip; older cached flow is not reused.
    return _digest({**without({"frames": settings["frames"], "flow": settings["flow"]}, RUNTIME_SETTINGS),
                    "flow_version": 2, "decode": DECODE_VERSION})


def content_fingerprint(cfg: PipelineConfig) -> str:
    """Hash of every setting that changes shard content (a finished shard with another
    fingerprint is rebuilt on the next run)."""
    return _digest({"settings": without(sample_settings(cfg), RUNTIME_SETTINGS), "source": cfg.source,
                    "drops": applies_drop_rules(cfg), "decode": DECODE_VERSION})


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]
