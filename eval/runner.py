"""Evaluate a model or a baseline on test shards: metrics.json, per_clip.csv, pictures, report.

``evaluate(model_or_baseline, shards, output_dir, cfg)`` is the in-process entry point (the
demo compares several predictors with it); ``python -m eval`` wraps it with a checkpoint
loader. A predictor is anything with ``predict(list[ClipSample]) -> list[2-D map]``; a
model (``model(image, flow, spec) -> {"map": [B, 7, 7]}``) is wrapped with the trainer's
own input preparation (``htf.inputs.eval_inputs``), and a baseline name (``center``,
``flow``, ``random``) becomes an :class:`eval.baselines.Baseline`.

Nothing is silently counted as zero: clips without boxes stop the run with the shard and
clip named; a corrupt shard or sample, a duplicate id or a non-finite map is skipped and
listed under ``failures`` in metrics.json (and on stderr), never scored.
"""
from __future__ import annotations

import csv
import hashlib
import heapq
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

from htf import metrics as M
from eval.baselines import BASELINES, Baseline
from eval.config import EvalConfig
from eval.shards import Failure, expand_shards, iter_samples
from htf.config import save_config
from htf.sample import ClipSample

METADATA_DIR = Path(__file__).resolve().parent.parent / "metadata"
SLAVC_LISTS = {"flickr": "slavc_flickr_test_plus_silent.csv", "vggss": "slavc_vggss_test_plus_silent.csv"}
# Settings that change how a sample is computed, not what it contains.
RUNTIME_SETTING_KEYS = {"flow.device", "flow.fp16", "flow.batch_size", "flow.allow_random_init",
                        "flow.ckpt"}


class EvalError(RuntimeError):
    """The evaluation cannot give honest numbers; the message says why and where."""


class MissingBoxesError(EvalError):
    """Test shards without ground-truth boxes cannot be scored (apps.localize still works)."""


class SettingsMismatchError(EvalError):
    """The shards were made with other settings than the checkpoint expects."""


class Predictor(Protocol):
    data_settings: dict | None

    def predict(self, samples: list[ClipSample]) -> list[np.ndarray]: ...

    def describe(self) -> str: ...


# --------------------------------------------------------------------------- predictors
class ModelPredictor:
    """Wraps a trained model: inputs prepared as validation does, maps returned as numpy."""

    def __init__(self, model: Any, device: str = "cpu",
                 prepare: Callable[[ClipSample, Any], tuple] | None = None, name: str = "model"):
        import torch

        if prepare is None:
            from htf.inputs import eval_inputs as prepare  # the trainer's own preparation
        self.torch = torch
        self.model = model.to(device) if hasattr(model, "to") else model
        if hasattr(self.model, "eval"):
            self.model.eval()
        self.device = device
        self.prepare = prepare
        self.name = name
        self.data_settings = getattr(model, "data_settings", None)

    def _forward(self, tensors: list[tuple]) -> np.ndarray:
        torch = self.torch
        stacked = [torch.stack([t[i] for t in tensors]).to(self.device) for i in range(3)]
        with torch.inference_mode():
            out = self.model(*stacked)
        maps = out["map"] if isinstance(out, dict) else out
        maps = maps.detach().float().cpu().numpy()
        if maps.ndim == 4 and maps.shape[1] == 1:
            maps = maps[:, 0]
        if maps.ndim != 3 or maps.shape[0] != len(tensors):
            raise EvalError(f"model returned maps of shape {maps.shape}; expected [{len(tensors)}, h, w]")
        return maps

    def predict(self, samples: list[ClipSample]) -> list[np.ndarray]:
        tensors = [self.prepare(s, self.model) for s in samples]
        shapes = {tuple(tuple(x.shape) for x in t) for t in tensors}
        if len(shapes) == 1:
            return list(self._forward(tensors))
        return [self._forward([t])[0] for t in tensors]  # ragged inputs: one at a time

    def describe(self) -> str:
        return self.name


def as_predictor(model_or_baseline: Any, cfg: EvalConfig) -> Predictor:
    """A baseline name, a Baseline, any object with ``predict``, or a model."""
    if isinstance(model_or_baseline, str):
        if model_or_baseline not in BASELINES:
            raise ValueError(f"unknown baseline {model_or_baseline!r}: expected one of {list(BASELINES)}")
        return Baseline(model_or_baseline, cfg.baseline, cfg.protocol.size)
    if hasattr(model_or_baseline, "predict"):
        return model_or_baseline
    return ModelPredictor(model_or_baseline, cfg.run.device, name=type(model_or_baseline).__name__)


# --------------------------------------------------------------------------- settings
def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def settings_differences(expected: dict, actual: dict) -> list[str]:
    """'key: shards X, checkpoint expects Y' for every shared setting that differs."""
    exp = {k: v for k, v in _flatten(expected).items() if k not in RUNTIME_SETTING_KEYS}
    act = {k: v for k, v in _flatten(actual).items() if k not in RUNTIME_SETTING_KEYS}
    common = sorted(set(exp) & set(act))
    if not common:
        return ["no setting in common between the shards and the checkpoint: cannot check them"]
    return [f"{k}: shards {act[k]!r}, checkpoint expects {exp[k]!r}" for k in common
            if _normal(act[k]) != _normal(exp[k])]


def _normal(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_normal(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


# --------------------------------------------------------------------------- pairs
def seeded_pairs(ids: Sequence[str], seed: int) -> list[tuple[str, str]]:
    """Each frame with another clip's audio: a seeded shuffle of the sorted ids, each paired
    with its successor (cyclically), so no clip is paired with itself."""
    order = sorted(ids)
    if len(order) < 2:
        raise EvalError("the extended protocol needs at least 2 clips to pair frames with other audio")
    perm = np.random.default_rng(seed).permutation(len(order))
    shuffled = [order[i] for i in perm]
    return [(shuffled[k], shuffled[(k + 1) % len(shuffled)]) for k in range(len(shuffled))]


def read_pair_list(path: str | os.PathLike) -> list[tuple[str, str]]:
    """SLAVC's ``video,audio,label`` CSV -> (video id, audio id) of the non-sounding rows."""
    pairs = []
    with open(path, newline="") as fh:
        for row in csv.reader(fh):
            if not row or row[0] == "video":
                continue
            if len(row) < 3:
                raise EvalError(f"{path}: row {row!r} is not video,audio,label")
            if row[2].strip() == "non-sounding":
                pairs.append((row[0].strip(), row[1].strip()))
    return pairs


def resolve_pairs(ids: Sequence[str], formats: set[str], cfg: EvalConfig) -> tuple[list[tuple[str, str]], dict]:
    """Non-sounding pairs to score and a description (source, pairs missing from the shards)."""
    choice = cfg.extended.pairs
    idset = set(ids)
    source, listed = "seeded", None
    if choice not in ("auto", "seeded"):
        listed, source = read_pair_list(choice), str(choice)
    elif choice == "auto":
        for fmt in sorted(formats):
            path = METADATA_DIR / SLAVC_LISTS.get(fmt, "")
            if fmt in SLAVC_LISTS and path.is_file():
                candidate = read_pair_list(path)
                if any(v in idset for v, _ in candidate):
                    listed = (listed or []) + candidate
                    source = f"metadata/{path.name}" if source == "seeded" else f"{source}+{path.name}"
    if listed is None:
        return seeded_pairs(ids, cfg.extended.seed), {"source": f"seeded (seed {cfg.extended.seed})",
                                                      "missing_pairs": 0}
    present = [(v, a) for v, a in listed if v in idset and a in idset]
    if not present:
        raise EvalError(f"none of the {len(listed)} pairs of {source} has both clips in the shards")
    return present, {"source": source, "missing_pairs": len(listed) - len(present)}


# --------------------------------------------------------------------------- records
@dataclass
class ClipResult:
    id: str
    audio_id: str
    shard: str
    box_format: str
    sounding: bool
    ciou: float            # NaN for non-sounding pairs (no ground truth)
    confidence: float
    constant_map: bool
    n_boxes: int


@dataclass
class _Picked:
    """A clip kept for the best/worst pictures (frame and map held only for these)."""
    ciou: float
    id: str
    frame: np.ndarray = field(repr=False)
    map: np.ndarray = field(repr=False)
    boxes: Any = field(repr=False)


class _Extremes:
    """The N highest and N lowest cIoU clips, ties broken by id."""

    def __init__(self, n: int):
        self.n, self.best, self.worst = n, [], []

    def add(self, item: _Picked) -> None:
        if self.n <= 0:
            return
        for heap, key in ((self.best, (item.ciou, _rev(item.id))), (self.worst, (-item.ciou, _rev(item.id)))):
            entry = (key, id(item), item)
            if len(heap) < self.n:
                heapq.heappush(heap, entry)
            elif key > heap[0][0]:
                heapq.heapreplace(heap, entry)

    def sorted_best(self) -> list[_Picked]:
        return [e[2] for e in sorted(self.best, key=lambda e: e[0], reverse=True)]

    def sorted_worst(self) -> list[_Picked]:
        return [e[2] for e in sorted(self.worst, key=lambda e: e[0], reverse=True)]


def _rev(text: str) -> tuple[int, ...]:
    """Sort key that prefers the smaller id among equal cIoU values in a max-heap."""
    return tuple(-ord(c) for c in text)


# --------------------------------------------------------------------------- evaluation
def _box_format(sample: ClipSample, shard: str, cfg: EvalConfig, warnings: list[str]) -> str:
    recorded = sample.meta.get("box_format")
    wanted = cfg.protocol.protocol
    if wanted == "auto":
        if recorded not in M.BOX_FORMATS:
            raise EvalError(f"shard {shard}, clip {sample.id}: box_format {recorded!r} is not flickr or "
                            "vggss; pass --protocol flickr|vggss")
        return recorded
    if recorded is not None and recorded != wanted and len(warnings) < 50:
        warnings.append(f"shard {shard}, clip {sample.id}: box_format {recorded!r} evaluated as {wanted!r}")
    return wanted


def _require_boxes(sample: ClipSample, shard: str) -> None:
    boxes = sample.boxes
    if not boxes or not any(len(a) for a in boxes):
        raise MissingBoxesError(
            f"shard {shard}, clip {sample.id}: no ground-truth boxes. Metric evaluation needs test "
            "shards built with boxes (pipeline --boxes: VGG-SS JSON, Flickr XML folder or 256-px "
            "JSON; see metadata/README.md). To look at heat maps without boxes use "
            "`python -m apps.localize` on the video.")


class _Run:
    """State of one evaluation pass (kept small: maps and frames only for the pictures)."""

    def __init__(self, predictor: Predictor, cfg: EvalConfig):
        self.p, self.cfg = predictor, cfg
        self.results: list[ClipResult] = []
        self.failures: list[Failure] = []
        self.warnings: list[str] = []
        self.seen: set[str] = set()
        self.checked: set[str] = set()
        self.specs: dict[str, np.ndarray] = {}
        self.extremes = _Extremes(cfg.pictures.heatmaps)
        self.formats: dict[str, str] = {}

    def check_settings(self, sample: ClipSample, shard: str) -> None:
        expected = self.p.data_settings
        if expected is None or self.cfg.run.check_settings == "off":
            return
        actual = sample.meta.get("pipeline")
        digest = hashlib.sha1(json.dumps(actual, sort_keys=True, default=str).encode()).hexdigest()
        if digest in self.checked:
            return
        self.checked.add(digest)
        diffs = (["the sample records no pipeline settings"] if actual is None
                 else settings_differences(expected, actual))
        if not diffs:
            return
        msg = (f"shard {shard} (first clip {sample.id}) was made with other settings than the "
               f"checkpoint expects: " + "; ".join(diffs))
        if self.cfg.run.check_settings == "error":
            raise SettingsMismatchError(msg)
        self.warnings.append(msg)
        print(f"warning: {msg}", file=sys.stderr)

    def score(self, batch: list[tuple[str, ClipSample, str]]) -> None:
        maps = self.p.predict([s for _, s, _ in batch])
        if len(maps) != len(batch):
            raise EvalError(f"predictor returned {len(maps)} maps for {len(batch)} clips")
        size, interp = self.cfg.protocol.size, self.cfg.protocol.interpolation
        for (shard, sample, fmt), raw in zip(batch, maps):
            raw = np.asarray(raw, dtype=np.float64)
            if raw.ndim != 2 or not np.isfinite(raw).all():
                why = "non-finite values" if raw.ndim == 2 else f"shape {raw.shape}"
                self.failures.append(Failure(shard, sample.id, f"prediction map has {why}: not scored"))
                continue
            _, mask = M.prediction_mask(raw, size, interp)
            value = M.ciou(mask, M.gt_map(sample.boxes, fmt, size))
            self.results.append(ClipResult(
                sample.id, sample.id, shard, fmt, True, value,
                M.map_confidence(raw, self.cfg.extended.confidence), M.is_constant(raw),
                sum(len(a) if a and isinstance(a[0], (list, tuple)) else 1 for a in sample.boxes)))
            self.extremes.add(_Picked(value, sample.id, sample.frame, raw, sample.boxes))

    def first_pass(self, paths: list[str]) -> None:
        batch: list[tuple[str, ClipSample, str]] = []
        limit = self.cfg.run.max_clips
        for shard, sample in iter_samples(paths, self.failures):
            if limit is not None and len(self.seen) >= limit:
                self.warnings.append(f"stopped after max_clips={limit} clips (run.max_clips)")
                break
            if sample.id in self.seen:
                self.failures.append(Failure(shard, sample.id, "duplicate clip id: scored once only"))
                continue
            _require_boxes(sample, shard)
            self.check_settings(sample, shard)
            self.seen.add(sample.id)
            batch.append((shard, sample, _box_format(sample, shard, self.cfg, self.warnings)))
            if self.cfg.extended.enabled:
                self.specs[sample.id] = sample.spec.astype(np.float16)
            if len(batch) >= self.cfg.run.batch_size:
                self.score(batch)
                batch = []
        if batch:
            self.score(batch)

    def extended_pass(self, paths: list[str]) -> dict:
        scored = {r.id: r for r in self.results}
        self.formats = {r.id: r.box_format for r in self.results}
        pairs, info = resolve_pairs(list(scored), {r.box_format for r in scored.values()}, self.cfg)
        by_video: dict[str, list[str]] = {}
        for v, a in pairs:
            if v in scored:
                by_video.setdefault(v, []).append(a)
        batch: list[tuple[str, ClipSample, str]] = []
        done: set[str] = set()
        for shard, sample in iter_samples(paths, []):  # failures were recorded in pass 1
            if sample.id not in by_video or sample.id in done:
                continue
            done.add(sample.id)
            for audio_id in by_video[sample.id]:
                pair = ClipSample(id=sample.id, frame=sample.frame, flow=sample.flow,
                                  spec=self.specs[audio_id].astype(np.float32), meta=sample.meta)
                batch.append((shard, pair, audio_id))
            if len(batch) >= self.cfg.run.batch_size:
                self._score_pairs(batch)
                batch = []
        if batch:
            self._score_pairs(batch)
        return info

    def _score_pairs(self, batch: list[tuple[str, ClipSample, str]]) -> None:
        maps = self.p.predict([s for _, s, _ in batch])
        for (shard, sample, audio_id), raw in zip(batch, maps):
            raw = np.asarray(raw, dtype=np.float64)
            if raw.ndim != 2 or not np.isfinite(raw).all():
                self.failures.append(Failure(shard, f"{sample.id}+{audio_id}",
                                             "non-sounding pair: prediction map not finite: not scored"))
                continue
            self.results.append(ClipResult(
                sample.id, audio_id, shard, self.formats.get(sample.id, ""), False, math.nan,
                M.map_confidence(raw, self.cfg.extended.confidence), M.is_constant(raw), 0))


def _summaries(results: list[ClipResult]) -> dict[str, Any]:
    own = [r for r in results if r.sounding]
    out: dict[str, Any] = dict(M.summarize([r.ciou for r in own]))
    formats = sorted({r.box_format for r in own})
    out["protocol"] = formats[0] if len(formats) == 1 else "mixed"
    if len(formats) > 1:
        out["by_protocol"] = {f: M.summarize([r.ciou for r in own if r.box_format == f]) for f in formats}
    out["n_constant_maps"] = sum(r.constant_map for r in own)
    return out


def write_per_clip(results: Iterable[ClipResult], path: str | os.PathLike) -> Path:
    path = Path(path)
    cols = ["id", "audio_id", "sounding", "ciou", "confidence", "box_format", "n_boxes",
            "constant_map", "shard"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in results:
            w.writerow([r.id, r.audio_id, int(r.sounding), "" if math.isnan(r.ciou) else f"{r.ciou:.6f}",
                        f"{r.confidence:.6f}", r.box_format, r.n_boxes, int(r.constant_map), r.shard])
    return path


def _write_pictures(run: _Run, out: Path) -> list[dict]:
    from htf.pictures import heatmap_figure, save_png

    pc, proto = run.cfg.pictures, run.cfg.protocol
    made = []
    for kind, items in (("best", run.extremes.sorted_best()), ("worst", run.extremes.sorted_worst())):
        for rank, item in enumerate(items, 1):
            title = (f"{kind} #{rank}: {item.id}   cIoU {item.ciou:.3f}"
                     + ("   (constant map)" if M.is_constant(item.map) else ""))
            image = heatmap_figure(item.frame, item.map, item.boxes, title, pc.alpha, pc.colormap,
                                   pc.box_thickness, proto.interpolation, proto.size)
            rel = f"heatmaps/{kind}_{rank:02d}_{item.id.replace('/', '_')}.png"
            save_png(image, out / rel)
            made.append({"kind": kind, "rank": rank, "id": item.id, "ciou": item.ciou, "path": rel})
    return made


def evaluate(model_or_baseline: Any, shards: str | Sequence[str], output_dir: str | os.PathLike,
             cfg: EvalConfig | None = None, checkpoint: str | None = None) -> dict[str, Any]:
    """Score every clip of ``shards``; write metrics.json, per_clip.csv (and pictures, report)
    under ``output_dir``; return the metrics dict."""
    from eval.report import write_report

    cfg = cfg or EvalConfig()
    start = time.time()
    predictor = as_predictor(model_or_baseline, cfg)
    paths = expand_shards(shards)
    out = Path(output_dir)
    run = _Run(predictor, cfg)
    run.first_pass(paths)
    for f in run.failures:
        print(f"skipped: shard {f.shard}{', clip ' + f.key if f.key else ''}: {f.reason}", file=sys.stderr)
    if not any(r.sounding for r in run.results):
        raise EvalError(f"no clip could be scored in {len(paths)} shard(s); failures: "
                        + "; ".join(f"{f.shard} {f.key}: {f.reason}" for f in run.failures[:5]))
    metrics = _summaries(run.results)
    if cfg.extended.enabled:
        info = run.extended_pass(paths)
        s = [r.sounding for r in run.results]
        ext = M.summarize_extended(s, [r.ciou for r in run.results], [r.confidence for r in run.results])
        metrics["extended"] = {**ext, "pairs": info["source"], "missing_pairs": info["missing_pairs"],
                               "confidence": cfg.extended.confidence}
    metrics.update({
        "predictor": predictor.describe(),
        "checkpoint": checkpoint,
        "shards": paths,
        "interpolation": cfg.protocol.interpolation,
        "size": cfg.protocol.size,
        "n_failed": len(run.failures),
        "failures": [f.as_dict() for f in run.failures],
        "warnings": run.warnings,
        "settings_checked": predictor.data_settings is not None and cfg.run.check_settings != "off",
        "config": asdict(cfg),
        "seconds": round(time.time() - start, 2),
    })
    # Created only now that every clip is scored: a run that fails leaves no report folder.
    out.mkdir(parents=True, exist_ok=True)
    write_per_clip(run.results, out / "per_clip.csv")
    metrics["pictures"] = _write_pictures(run, out) if cfg.pictures.heatmaps else []
    save_config(cfg, out / "eval_config.yaml")
    _write_json(metrics, out / "metrics.json")
    write_report(metrics, out)
    return metrics


def _write_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)
