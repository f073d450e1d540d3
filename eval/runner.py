"""Evaluate a model or a baseline on test shards: metrics.json, per_clip.csv, pictures, report.

``evaluate(model_or_baseline, shards, output_dir, cfg)`` is the in-process entry point (the
demo compares several predictors with it); ``python -m eval`` wraps it with a checkpoint
loader. A predictor is anything with ``predict(list[ClipSample]) -> list[2-D map]``; a
model (``model(image, flow, spec) -> {"map": [B, 7, 7]}``) is wrapped with the trainer's
own input preparation (``htf.inputs.eval_inputs``), and a baseline name (``center``,
``flow``, ``random``) becomes an :class:`eval.baselines.Baseline`.

No single clip stops a run. A clip whose ground truth is empty (VGG-SS boxes that cover
nothing as the official code reads them) is scored 0, as the protocol does, and listed under
``empty_ground_truth``. A clip without any boxes, a corrupt shard or sample, a duplicate id
or a non-finite map is skipped and listed under ``failures`` in metrics.json (and on
stderr), never scored; shards with no boxes at all stop the run, naming shard and clip.
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
import torch

from htf import metrics as M
from eval.baselines import BASELINES, Baseline
from eval.config import EvalConfig
from htf.shards import ReadFailure, expand_shards, read_samples
from htf.config import save_config
from htf.inputs import eval_inputs
from htf.sync import paired_series
from htf.io import atomic_write_json, read_json_lines
from htf.lists import normalise_id, read_split_list
from htf.model import load_model
from htf.sample import ClipSample, sample_key
from htf.settings import LOCAL_PATH_SETTINGS, RUNTIME_SETTINGS, flatten, upgrade_settings, without

METADATA_DIR = Path(__file__).resolve().parent.parent / "metadata"
SLAVC_LISTS = {"flickr": "slavc_flickr_test_plus_silent.csv", "vggss": "slavc_vggss_test_plus_silent.csv"}


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
def load_checkpoint(path: str, device: str, trust: bool = False) -> Any:
    """The model of ``path`` (our .pt, official .pth and Lightning .ckpt); problems as
    EvalError. A file holding classes outside the allow-list is refused unless ``trust``."""
    if not Path(path).is_file():
        raise EvalError(f"checkpoint not found: {path}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise EvalError(f"device '{device}': CUDA is not available on this machine (no GPU, or a "
                        f"CPU-only torch); use --device cpu (or --set run.device=cpu)")
    try:
        return load_model(path, map_location=device, trust=trust)
    except (KeyError, ValueError, RuntimeError) as err:
        raise EvalError(f"checkpoint {path}: {err}") from err


class ModelPredictor:
    """Wraps a trained model: inputs prepared as validation does, maps returned as numpy."""

    def __init__(self, model: Any, device: str = "cpu",
                 prepare: Callable[[ClipSample, Any], tuple] | None = None, name: str = "model"):
        self.model = model.to(device) if hasattr(model, "to") else model
        if hasattr(self.model, "eval"):
            self.model.eval()
        self.device = device
        self.prepare = prepare or eval_inputs   # validation's own preparation by default
        self.name = name
        self.data_settings = getattr(model, "data_settings", None)

    def _forward(self, tensors: list[tuple]) -> np.ndarray:
        stacked = [torch.stack([t[i] for t in tensors]).to(self.device) for i in range(len(tensors[0]))]
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
    describe = getattr(model_or_baseline, "describe", None)
    name = describe() if callable(describe) else type(model_or_baseline).__name__
    return ModelPredictor(model_or_baseline, cfg.run.device, name=name)


# --------------------------------------------------------------------------- settings
def _compared(settings: dict) -> dict[str, Any]:
    """Flat settings the check compares: today's shape (older flat flow keys upgraded),
    without runtime settings and machine-local paths."""
    return flatten(without(upgrade_settings(settings), RUNTIME_SETTINGS | LOCAL_PATH_SETTINGS))


def settings_differences(expected: dict, actual: dict) -> list[str]:
    """'key: shards X, checkpoint expects Y' for every shared setting that differs."""
    exp, act = _compared(expected), _compared(actual)
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
    ext_ciou: float = math.nan   # the extended protocol's cIoU (SLAVC's mask under slavc)


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
    recorded = sample.meta.box_format
    wanted = cfg.protocol.protocol
    if wanted == "auto":
        if recorded not in M.BOX_FORMATS:
            raise EvalError(f"shard {shard}, clip {sample.id}: box_format {recorded!r} is not flickr or "
                            "vggss; pass --protocol flickr|vggss")
        return recorded
    if recorded is not None and recorded != wanted and len(warnings) < 50:
        warnings.append(f"shard {shard}, clip {sample.id}: box_format {recorded!r} evaluated as {wanted!r}")
    return wanted


def count_boxes(boxes: Any) -> int:
    """Boxes of a sample: per-annotator lists (the contract) or a flat list of boxes."""
    if not boxes:
        return 0
    return sum(len(a) if a and isinstance(a[0], (list, tuple)) else (1 if a else 0) for a in boxes)


def _require_boxes(sample: ClipSample, shard: str) -> None:
    """A sample must say what its ground truth is; an empty list of boxes is an (empty)
    ground truth, absent boxes (``None``) are not."""
    if sample.boxes is None:
        raise MissingBoxesError(
            f"shard {shard}, clip {sample.id}: no ground-truth boxes. Metric evaluation needs test "
            "shards built with boxes (python -m pipeline run --annotations FILE: VGG-SS JSON, Flickr "
            "XML folder or 256-px JSON; see metadata/README.md). To look at heat maps without boxes use "
            "`python -m apps.localize` on the video.")


class _Run:
    """State of one evaluation pass (kept small: maps and frames only for the pictures)."""

    def __init__(self, predictor: Predictor, cfg: EvalConfig):
        self.p, self.cfg = predictor, cfg
        self.results: list[ClipResult] = []
        self.failures: list[ReadFailure] = []
        self.warnings: list[str] = []
        self.seen: set[str] = set()
        self.checked: set[str] = set()
        self.specs: dict[str, np.ndarray] = {}
        self.loudness: dict[str, np.ndarray] = {}    # extended protocol: each clip's loudness series
        self.extremes = _Extremes(cfg.pictures.heatmaps)
        self.formats: dict[str, str] = {}
        self.empty_gt: list[str] = []
        self.missing_boxes: list[MissingBoxesError] = []
        self.pair_only: dict[str, tuple[str, MissingBoxesError]] = {}

    def check_settings(self, sample: ClipSample, shard: str) -> None:
        expected = self.p.data_settings
        if expected is None or self.cfg.run.check_settings == "off":
            return
        actual = sample.meta.pipeline
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
                self.failures.append(ReadFailure(shard, sample.id, f"prediction map has {why}: not scored"))
                continue
            try:
                _, mask = M.prediction_mask(raw, size, interp)
                gt = M.gt_map(sample.boxes, fmt, size)
            except ValueError as err:
                self.failures.append(ReadFailure(shard, sample.id, f"cannot score: {err}"))
                continue
            value = M.ciou(mask, gt)
            if not gt.any():
                self.empty_gt.append(sample.id)
            confidence, ext_mask = self.extended_scores(raw)
            self.results.append(ClipResult(
                sample.id, sample.id, shard, fmt, True, value, confidence, M.is_constant(raw),
                count_boxes(sample.boxes), value if ext_mask is None else M.ciou(ext_mask, gt)))
            self.extremes.add(_Picked(value, sample.id, sample.frame, raw, sample.boxes))

    def keep_audio(self, sample: ClipSample) -> None:
        """What the extended pass pairs other clips' frames with: this clip's sound."""
        self.specs[sample.id] = sample.spec.astype(np.float16)
        if sample.loudness is not None:
            self.loudness[sample.id] = sample.loudness

    def extended_scores(self, raw: np.ndarray) -> tuple[float, np.ndarray | None]:
        """(confidence, mask for the extended cIoU or None for the main mask)."""
        ext = self.cfg.extended
        if ext.protocol == "htf":
            return M.map_confidence(raw, ext.confidence), None
        scores = M.slavc_scores(raw, ext.fixed_range, self.cfg.protocol.size, ext.slavc_interpolation)
        return M.slavc_confidence(scores), M.slavc_mask(scores, ext.relative_prediction, ext.pred_size,
                                                        ext.pred_thr)

    def first_pass(self, paths: list[str]) -> None:
        batch: list[tuple[str, ClipSample, str]] = []
        limit = self.cfg.run.max_clips
        for shard, sample in read_samples(paths, self.failures.append):
            if limit is not None and len(self.seen) >= limit:
                self.warnings.append(f"stopped after max_clips={limit} clips (run.max_clips)")
                break
            if sample.id in self.seen:
                self.failures.append(ReadFailure(shard, sample.id, "duplicate clip id: scored once only"))
                continue
            self.seen.add(sample.id)
            try:
                _require_boxes(sample, shard)
                fmt = _box_format(sample, shard, self.cfg, self.warnings)
            except MissingBoxesError as err:
                if self.cfg.extended.enabled:
                    # Maybe a clip only the pair lists need (its frame or audio); decided
                    # once the pairs are known (extended_pass).
                    self.check_settings(sample, shard)
                    self.pair_only[sample.id] = (shard, err)
                    self.keep_audio(sample)
                    continue
                self.missing_boxes.append(err)
                self.failures.append(ReadFailure(shard, sample.id, "no ground-truth boxes: not scored"))
                continue
            except EvalError as err:
                self.failures.append(ReadFailure(shard, sample.id, str(err)))
                continue
            self.check_settings(sample, shard)
            batch.append((shard, sample, fmt))
            if self.cfg.extended.enabled:
                self.keep_audio(sample)
            if len(batch) >= self.cfg.run.batch_size:
                self.score(batch)
                batch = []
        if batch:
            self.score(batch)
        for clip_id in self.empty_gt:
            print(f"warning: clip {clip_id}: empty ground truth (no box left): scored 0, as the "
                  "protocol does; listed under empty_ground_truth", file=sys.stderr)

    def extended_pass(self, paths: list[str]) -> dict:
        scored = {r.id: r for r in self.results}
        self.formats = {r.id: r.box_format for r in self.results}
        available = list(scored) + [i for i in self.pair_only if i not in scored]
        pairs, info = resolve_pairs(available, {r.box_format for r in scored.values()}, self.cfg)
        used = {x for pair in pairs for x in pair}
        for clip_id, (shard, err) in self.pair_only.items():
            if clip_id not in used:      # no pair needs it: a clip without boxes after all
                self.missing_boxes.append(err)
                self.failures.append(ReadFailure(shard, clip_id, "no ground-truth boxes: not scored"))
        info["pair_only_clips"] = sorted(used & set(self.pair_only))
        by_video: dict[str, list[str]] = {}
        for v, a in pairs:
            by_video.setdefault(v, []).append(a)
        batch: list[tuple[str, ClipSample, str]] = []
        done: set[str] = set()
        for shard, sample in read_samples(paths, lambda failure: None):  # failures were recorded in pass 1
            if sample.id not in by_video or sample.id in done:
                continue
            done.add(sample.id)
            for audio_id in by_video[sample.id]:
                # The frame's motion over time goes with the paired sound's loudness (the sync
                # map asks whether this place moves with *that* sound).
                motion, loudness = paired_series(sample.motion, self.loudness.get(audio_id))
                pair = ClipSample(id=sample.id, frame=sample.frame, flow=sample.flow,
                                  spec=self.specs[audio_id].astype(np.float32), meta=sample.meta,
                                  motion=motion, loudness=loudness)
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
                self.failures.append(ReadFailure(shard, f"{sample.id}+{audio_id}",
                                             "non-sounding pair: prediction map not finite: not scored"))
                continue
            self.results.append(ClipResult(
                sample.id, audio_id, shard, self.formats.get(sample.id, ""), False, math.nan,
                self.extended_scores(raw)[0], M.is_constant(raw), 0))


def pipeline_failures(paths: Sequence[str]) -> dict[str, str]:
    """id -> 'reason: detail' from the pipeline's failures.jsonl next to the shards (for the
    shards' prefixes): why a clip of the list never reached a shard."""
    out: dict[str, str] = {}
    by_folder: dict[Path, set[str]] = {}
    for p in paths:
        by_folder.setdefault(Path(p).parent, set()).add(Path(p).name.rsplit("-", 1)[0])
    for folder, prefixes in by_folder.items():
        for rec in read_json_lines(folder / "failures.jsonl")[0]:
            if rec.get("prefix") in prefixes and rec.get("id"):
                out.setdefault(str(rec["id"]), f"{rec.get('reason', '?')}: {rec.get('detail', '')}".rstrip(": "))
    return out


def list_coverage(list_path: str, scored: set[str], failures: list[ReadFailure],
                  pipeline: dict[str, str]) -> dict[str, Any]:
    """n against the list length, and every listed clip that was not scored, with why."""
    listed = read_split_list(list_path)
    known = scored | {f.key for f in failures} | set(pipeline)
    # VGGSound lists may write 'YTID_19' for the clip the shards call 'YTID_000019'.
    listed = [i if i in known else normalise_id(i, "vggsound") for i in listed]
    why = {f.key: f.reason for f in failures if f.key}
    not_scored = [{"id": i, "reason": why.get(i) or pipeline.get(i) or "not in the shards"}
                  for i in listed if i not in scored]
    return {"split_list": list_path, "n_listed": len(listed), "not_scored": not_scored,
            "n_unlisted": len(scored - set(listed))}


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
            "constant_map", "shard", "extended_ciou"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in results:
            w.writerow([r.id, r.audio_id, int(r.sounding), "" if math.isnan(r.ciou) else f"{r.ciou:.6f}",
                        f"{r.confidence:.6f}", r.box_format, r.n_boxes, int(r.constant_map), r.shard,
                        "" if math.isnan(r.ext_ciou) else f"{r.ext_ciou:.6f}"])
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
            rel = f"heatmaps/{kind}_{rank:02d}_{sample_key(item.id)}.png"      # any id: a short, safe name
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
        if run.missing_boxes or run.pair_only:
            raise (run.missing_boxes or [err for _, err in run.pair_only.values()])[0]
        raise EvalError(f"no clip could be scored in {len(paths)} shard(s); failures: "
                        + "; ".join(f"{f.shard} {f.key}: {f.reason}" for f in run.failures[:5]))
    metrics = _summaries(run.results)
    from_pipeline = pipeline_failures(paths)
    if cfg.run.split_list:
        scored = {r.id for r in run.results if r.sounding}
        metrics.update(list_coverage(cfg.run.split_list, scored, run.failures, from_pipeline))
    if cfg.extended.enabled:
        info = run.extended_pass(paths)
        s = [r.sounding for r in run.results]
        ext = M.summarize_extended(s, [r.ext_ciou for r in run.results], [r.confidence for r in run.results])
        metrics["extended"] = {**ext, "pairs": info["source"], "missing_pairs": info["missing_pairs"],
                               "pair_only_clips": info["pair_only_clips"], "protocol": cfg.extended.protocol,
                               "confidence": (cfg.extended.confidence if cfg.extended.protocol == "htf"
                                              else "slavc_top_quarter_mean"),
                               "relative_prediction": cfg.extended.relative_prediction}
    metrics.update({
        "predictor": predictor.describe(),
        "checkpoint": checkpoint,
        "shards": paths,
        "interpolation": cfg.protocol.interpolation,
        "size": cfg.protocol.size,
        "empty_ground_truth": run.empty_gt,
        "pipeline_failures": [{"id": k, "reason": v} for k, v in from_pipeline.items()],
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
    atomic_write_json(out / "metrics.json", metrics, indent=2, default=str)
    write_report(metrics, out)
    return metrics


