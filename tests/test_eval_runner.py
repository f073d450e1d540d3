"""Behaviour of eval.runner.evaluate on tiny shards, with baselines and a fake model."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from htf import metrics as M
from eval.baselines import center_prior
from eval.config import EvalConfig
from eval.runner import (METADATA_DIR, read_pair_list, MissingBoxesError, ModelPredictor, SettingsMismatchError,
                         evaluate, seeded_pairs, settings_differences)
from tests.eval_shards import corrupt_member, make_clip, standard_clips, write_shard


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def shards(tmp_path):
    clips = standard_clips(6)
    write_shard(tmp_path / "test-000000.tar", clips[:3])
    write_shard(tmp_path / "test-000001.tar", clips[3:])
    return str(tmp_path / "test-*.tar")


def test_flow_baseline_localises_the_only_moving_object(shards, tmp_path):
    m = evaluate("flow", shards, tmp_path / "out", EvalConfig())
    assert m["n"] == 6 and m["ciou_at_0.5"] == 1.0 and m["protocol"] == "vggss"
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["ciou_at_0.5"] == 1.0 and len(saved["shards"]) == 2
    assert saved["config"]["protocol"]["interpolation"] == "bicubic"


def test_center_baseline_per_clip_ciou_equals_the_metric_function(shards, tmp_path):
    evaluate("center", shards, tmp_path / "out", EvalConfig())
    rows = _rows(tmp_path / "out" / "per_clip.csv")
    clips = {c.id: c for c in standard_clips(6)}
    for row in rows:
        expected = M.clip_ciou(center_prior(7, 0.25), clips[row["id"]].boxes, "vggss")
        assert float(row["ciou"]) == pytest.approx(expected, abs=1e-6)


def test_random_baseline_is_reproducible(shards, tmp_path):
    a = evaluate("random", shards, tmp_path / "a", EvalConfig())
    b = evaluate("random", shards, tmp_path / "b", EvalConfig())
    assert (tmp_path / "a" / "per_clip.csv").read_text() == (tmp_path / "b" / "per_clip.csv").read_text()
    assert a["mean_ciou"] == b["mean_ciou"]


def test_shards_without_boxes_are_refused_naming_shard_and_clip(tmp_path):
    write_shard(tmp_path / "nobox-000000.tar", [make_clip("nobox1", [0, 0, .5, .5], boxes=False)])
    with pytest.raises(MissingBoxesError, match=r"nobox-000000\.tar, clip nobox1: no ground-truth boxes"):
        evaluate("center", str(tmp_path / "nobox-*.tar"), tmp_path / "out", EvalConfig())


def test_truncated_shard_is_reported_by_name_and_the_rest_still_counts(shards, tmp_path):
    bad = tmp_path / "test-000001.tar"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    m = evaluate("flow", shards, tmp_path / "out", EvalConfig())
    named = [f for f in m["failures"] if f["shard"] == "test-000001.tar" and "corrupt shard" in f["reason"]]
    assert named and m["n"] < 6 and m["n"] >= 3


def test_corrupt_sample_is_skipped_with_its_key(shards, tmp_path):
    corrupt_member(tmp_path / "test-000000.tar", "clip001")
    m = evaluate("center", shards, tmp_path / "out", EvalConfig())
    assert m["n"] == 5 and m["n_failed"] == 1
    assert m["failures"][0]["key"] == "clip001" and "jpeg" in m["failures"][0]["reason"].lower()
    assert "clip001" not in {r["id"] for r in _rows(tmp_path / "out" / "per_clip.csv")}


def test_duplicate_clip_is_scored_once_and_reported(tmp_path):
    clips = standard_clips(3)
    write_shard(tmp_path / "a-0.tar", clips)
    write_shard(tmp_path / "a-1.tar", clips[:1])
    m = evaluate("center", str(tmp_path / "a-*.tar"), tmp_path / "out", EvalConfig())
    assert m["n"] == 3 and "duplicate" in m["failures"][0]["reason"]


def test_no_shard_matching_is_an_error_naming_the_pattern(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-"):
        evaluate("center", str(tmp_path / "nothing-*.tar"), tmp_path / "out", EvalConfig())


class FlowModel(torch.nn.Module):
    """A fake model: the map is the pooled x-flow; it carries data settings like HTFModel."""

    def __init__(self, settings):
        super().__init__()
        self.data_settings = settings

    def forward(self, image, flow, spec):
        return {"map": torch.nn.functional.adaptive_avg_pool2d(flow[:, 0:1], 7)[:, 0]}


def _prepare(sample, model):
    return (torch.from_numpy(sample.frame).permute(2, 0, 1).float() / 255,
            torch.from_numpy(sample.flow), torch.from_numpy(sample.spec)[None])


def test_model_predictor_runs_a_model_in_batches(shards, tmp_path):
    from tests.eval_shards import SETTINGS
    cfg = EvalConfig()
    cfg.run.batch_size = 4
    m = evaluate(ModelPredictor(FlowModel(SETTINGS), prepare=_prepare), shards, tmp_path / "out", cfg)
    assert m["n"] == 6 and m["ciou_at_0.5"] == 1.0 and m["settings_checked"] and not m["warnings"]


def test_shard_settings_that_differ_from_the_checkpoint_are_warned(shards, tmp_path):
    expected = {"flow": {"method": "farneback", "encoding": "uint8_clip"}, "audio": {"feature": "linear"}}
    m = evaluate(ModelPredictor(FlowModel(expected), prepare=_prepare), shards, tmp_path / "out", EvalConfig())
    assert any("flow.method: shards 'dis', checkpoint expects 'farneback'" in w for w in m["warnings"])


def test_settings_mismatch_can_be_made_an_error(shards, tmp_path):
    cfg = EvalConfig()
    cfg.run.check_settings = "error"
    with pytest.raises(SettingsMismatchError, match="audio.feature"):
        evaluate(ModelPredictor(FlowModel({"audio": {"feature": "linear"}}), prepare=_prepare),
                 shards, tmp_path / "out", cfg)


def test_settings_differences_ignore_runtime_keys():
    assert settings_differences({"flow": {"method": "dis", "device": "cuda"}},
                                {"flow": {"method": "dis", "device": "cpu"}}) == []


def test_non_finite_map_is_skipped_not_scored_zero(shards, tmp_path):
    class NaNFor:
        data_settings = None

        def predict(self, samples):
            return [np.full((7, 7), np.nan) if s.id == "clip002" else center_prior(7, .25) for s in samples]

        def describe(self):
            return "nan-for-clip002"

    m = evaluate(NaNFor(), shards, tmp_path / "out", EvalConfig())
    assert m["n"] == 5 and m["failures"][0]["key"] == "clip002"


def test_seeded_pairs_never_pair_a_clip_with_itself_and_are_stable():
    ids = [f"c{i}" for i in range(9)]
    pairs = seeded_pairs(ids, 3)
    assert pairs == seeded_pairs(list(reversed(ids)), 3)
    assert all(v != a for v, a in pairs) and sorted(v for v, _ in pairs) == sorted(ids)
    assert sorted(a for _, a in pairs) == sorted(ids)


def test_extended_protocol_adds_non_sounding_pairs_ap_and_max_f1(shards, tmp_path):
    cfg = EvalConfig()
    cfg.extended.enabled = True
    m = evaluate("flow", shards, tmp_path / "out", cfg)
    ext = m["extended"]
    assert ext["n_sounding"] == 6 and ext["n_non_sounding"] == 6 and ext["pairs"].startswith("seeded")
    assert 0 <= ext["ap"] <= 1 and 0 < ext["max_f1"] <= 1
    rows = _rows(tmp_path / "out" / "per_clip.csv")
    silent = [r for r in rows if r["sounding"] == "0"]
    assert len(silent) == 6 and all(r["ciou"] == "" and r["id"] != r["audio_id"] for r in silent)


def test_extended_uses_slavc_list_for_flickr_ids(tmp_path):
    # the first rows of metadata/slavc_flickr_test_plus_silent.csv
    pairs = [("10000130166", "10437048305"), ("10007936344", "10079676496")]
    ids = sorted({i for p in pairs for i in p})
    clips = [make_clip(i, [0.1, 0.1, 0.8, 0.8], seed=k, box_format="flickr") for k, i in enumerate(ids)]
    write_shard(tmp_path / "f-0.tar", clips)
    cfg = EvalConfig()
    cfg.extended.enabled = True
    m = evaluate("center", str(tmp_path / "f-0.tar"), tmp_path / "out", cfg)
    assert m["extended"]["pairs"] == "metadata/slavc_flickr_test_plus_silent.csv"
    silent = {(r["id"], r["audio_id"]) for r in _rows(tmp_path / "out" / "per_clip.csv") if r["sounding"] == "0"}
    assert silent == set(pairs)
    listed = read_pair_list(METADATA_DIR / "slavc_flickr_test_plus_silent.csv")
    assert m["extended"]["missing_pairs"] == len(listed) - 2


def test_heatmaps_writes_best_and_worst_pictures_and_a_report(shards, tmp_path):
    cfg = EvalConfig()
    cfg.pictures.heatmaps = 2
    m = evaluate("random", shards, tmp_path / "out", cfg)
    pics = m["pictures"]
    assert [p["kind"] for p in pics] == ["best", "best", "worst", "worst"]
    assert pics[0]["ciou"] >= pics[1]["ciou"] and pics[2]["ciou"] <= pics[3]["ciou"]
    assert pics[0]["ciou"] == pytest.approx(max(float(r["ciou"]) for r in _rows(tmp_path / "out" / "per_clip.csv")), abs=1e-6)
    html = (tmp_path / "out" / "report.html").read_text()
    for p in pics:
        assert (tmp_path / "out" / p["path"]).is_file() and p["path"] in html
    assert "cIoU@0.5" in (tmp_path / "out" / "report.md").read_text()


def test_empty_ground_truth_scores_zero_and_a_clip_without_boxes_is_listed_not_fatal(tmp_path):
    empty = make_clip("emptygt", [0, 0, .5, .5])
    empty.meta.boxes = [[]]                       # annotated: every box covers nothing
    clips = [make_clip("ok1", [0, 0, .6, .7], seed=1), empty, make_clip("nobox", [0, 0, .5, .5], boxes=False)]
    write_shard(tmp_path / "mix-000000.tar", clips)
    m = evaluate("center", str(tmp_path / "mix-*.tar"), tmp_path / "out", EvalConfig())
    assert m["n"] == 2 and m["empty_ground_truth"] == ["emptygt"]
    rows = {r["id"]: r for r in csv.DictReader(open(tmp_path / "out" / "per_clip.csv"))}
    assert float(rows["emptygt"]["ciou"]) == 0.0 and rows["emptygt"]["n_boxes"] == "0"
    assert [f["key"] for f in m["failures"]] == ["nobox"]


def test_pictures_of_a_clip_with_empty_ground_truth_are_drawn(tmp_path):
    empty = make_clip("emptygt", [0, 0, .5, .5])
    empty.meta.boxes = [[]]
    write_shard(tmp_path / "e-000000.tar", [empty, make_clip("ok", [0, 0, .6, .7], seed=1)])
    cfg = EvalConfig()
    cfg.pictures.heatmaps = 2
    m = evaluate("center", str(tmp_path / "e-*.tar"), tmp_path / "out", cfg)
    assert any(p["id"] == "emptygt" for p in m["pictures"])
def test_settings_check_compares_an_older_flat_checkpoint_with_per_method_shards():
    old_checkpoint = {"flow": {"method": "farneback", "farneback_levels": 3, "ckpt": "/elsewhere/raft.pth"}}
    shards = {"flow": {"method": "farneback", "farneback": {"levels": 5}}}
    assert settings_differences(old_checkpoint, shards) == ["flow.farneback.levels: shards 5, checkpoint expects 3"]
