"""Done-when check: official-format weights through our pipeline and evaluator give the
per-clip maps and the metrics of a straightforward re-creation of the official test path
(tests/official_recreation.py) on the same raw clips: maps within 1e-4, cIoU@0.5 and AUC
within 0.02."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import official_recreation as official
from tests.official_checkpoints import official_model, save_pth
from tests.real_layouts import ClipSpec, make_flickr, make_vggsound, vggss_entries, write_list
from tests.test_htf_model import ReferenceHTF
from tests.test_real_data import REPO, run_doc_command

FLICKR = [ClipSpec("5344317532", 160, 120, frames=90, audio_seconds=4.6),
          ClipSpec("10007936344", 160, 120, frames=80, audio_seconds=10.9),
          ClipSpec("10009662863", 128, 96, frames=100, audio_seconds=2.5),
          ClipSpec("10045181004", 176, 144, frames=76, audio_seconds=6.0)]
VGGSS = ["zpWuikVorYg_000032", "Db6Hjt0x28k_000056", "M1P1xla8rg0_000000"]


def _reference_maps(pth: Path, inputs: dict[str, tuple]) -> dict[str, np.ndarray]:
    ref = ReferenceHTF("cnn")
    ref.load_state_dict(torch.load(pth, weights_only=True)["model"])
    ref.eval()
    with torch.no_grad():
        return {k: ref(*(t[None] for t in v))[0][0].numpy() for k, v in inputs.items()}


def _our_maps(pth: Path, shards: Path) -> dict[str, np.ndarray]:
    from eval.runner import ModelPredictor
    from htf.model import load_model
    from htf.shards import expand_shards, read_samples

    predictor = ModelPredictor(load_model(pth))
    failures: list = []
    samples = [s for _, s in read_samples(expand_shards(str(shards / "test-*.tar")), failures.append)]
    assert not failures
    return {s.id: m for s, m in zip(samples, predictor.predict(samples))}


def _our_metrics(pth: Path, shards: Path, report: Path) -> tuple[dict, dict[str, float]]:
    done = run_doc_command("python -m eval --config configs/eval/htf-official.yaml --checkpoint vgg.pth "
                           "--shards OUT/test-*.tar --output REPORT", REPO, **{
                               "vgg.pth": str(pth), "OUT": str(shards), "REPORT": str(report)})
    assert done.returncode == 0, done.stderr
    rows = {r["id"]: float(r["ciou"]) for r in csv.DictReader(open(report / "per_clip.csv"))}
    return json.loads((report / "metrics.json").read_text()), rows


def _compare(ours_maps, ref_maps, metrics, our_cious, ref_cious):
    assert set(ours_maps) == set(ref_maps)
    for clip_id, ref in ref_maps.items():
        assert np.abs(ours_maps[clip_id] - ref).max() < 1e-4, clip_id
    ref_summary = official.summary(list(ref_cious.values()))
    assert abs(metrics["ciou_at_0.5"] - ref_summary["ciou_at_0.5"]) <= 0.02
    assert abs(metrics["auc"] - ref_summary["auc"]) <= 0.02
    for clip_id, value in ref_cious.items():
        assert our_cious[clip_id] == pytest.approx(value, abs=0.02), clip_id


def test_flickr_official_weights_match_the_official_test_path(tmp_path):
    raw, ann = make_flickr(tmp_path, FLICKR)
    listed = write_list(tmp_path / "list.txt", [s.id for s in FLICKR])
    out = tmp_path / "out"
    done = run_doc_command("python -m pipeline run --config configs/pipeline/htf-official.yaml --input RAW "
                           "--output OUT --split-list LIST --annotations ANN "
                           "--keyframes metadata/htf_flickr_test_keyframes.json --shard-prefix test", REPO,
                           RAW=str(raw), OUT=str(out), LIST=str(listed), ANN=str(ann))
    assert done.returncode == 0, done.stderr
    pth = save_pth(tmp_path / "flickr.pth", official_model(seed=3))
    entries = json.loads((REPO / "metadata/htf_flickr_test_keyframes.json").read_text())
    inputs, ref_cious, ref_maps = {}, {}, {}
    for spec in FLICKR:
        files = official.preprocess(raw / "video" / f"{spec.id}.mp4", raw / "audio" / f"{spec.id}.wav",
                                    entries[spec.id][0], tmp_path / "official" / spec.id)
        inputs[spec.id] = official.load_inputs(*files)
    ref_maps = _reference_maps(pth, inputs)
    ref_cious = {k: official.clip_ciou(m, official.flickr_gt(ann / f"{k}.xml")) for k, m in ref_maps.items()}
    metrics, our_cious = _our_metrics(pth, out, tmp_path / "report")
    _compare(_our_maps(pth, out), ref_maps, metrics, our_cious, ref_cious)


def test_vggss_official_weights_match_the_official_test_path(tmp_path):
    specs = [ClipSpec(i, 160, 120, frames=60 + 7 * n, audio_seconds=3.5 + 2.7 * n) for n, i in enumerate(VGGSS)]
    raw = make_vggsound(tmp_path, specs)
    listed = write_list(tmp_path / "list.txt", VGGSS)
    out = tmp_path / "out"
    done = run_doc_command("python -m pipeline run --config configs/pipeline/htf-official.yaml --input RAW "
                           "--output OUT --split-list LIST --annotations metadata/htf_vggss.json "
                           "--shard-prefix test", REPO, RAW=str(raw), OUT=str(out), LIST=str(listed))
    assert done.returncode == 0, done.stderr
    pth = save_pth(tmp_path / "vgg.pth", official_model(seed=4))
    inputs = {i: official.load_inputs(*official.preprocess(raw / f"{i}.mp4", None, None, tmp_path / "official" / i))
              for i in VGGSS}
    ref_maps = _reference_maps(pth, inputs)
    boxes = {e["file"]: e["bbox"] for e in vggss_entries(VGGSS)}
    ref_cious = {k: official.clip_ciou(m, official.vggss_gt(boxes[k])) for k, m in ref_maps.items()}
    metrics, our_cious = _our_metrics(pth, out, tmp_path / "report")
    _compare(_our_maps(pth, out), ref_maps, metrics, our_cious, ref_cious)
