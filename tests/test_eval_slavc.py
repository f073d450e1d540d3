"""SLAVC's extended protocol as SLAVC's test code computes it: confidence, masks, @75,
and the pair lists' extra clips (frames or audio the lists need beyond the test set)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eval.config import EvalConfig
from eval.runner import evaluate
from htf import metrics as M
from tests.eval_shards import make_clip, standard_clips, write_shard


def _slavc_reference(map7: np.ndarray, relative: bool) -> tuple[float, np.ndarray]:
    """SLAVC's rules written from its test code: torch bicubic upsampling with
    align_corners=True, fixed-range rescale, top-quarter mean, its two mask rules."""
    up = F.interpolate(torch.from_numpy(map7)[None, None], size=(224, 224), mode="bicubic",
                       align_corners=True)[0, 0].numpy()
    scores = (up - (-1.0)) / (1.0 - (-1.0))
    n = scores.size
    conf = np.sort(scores.flatten())[-n // 4:].mean()
    if relative:
        pred = (scores - scores.min()) / (scores.max() - scores.min())
        thr = np.sort(pred.flatten())[int(n * 0.5)]
    else:
        pred, thr = scores, 0.5
    return float(conf), pred >= thr


@pytest.mark.parametrize("relative", [False, True])
def test_slavc_confidence_and_mask_match_its_test_code(relative):
    rng = np.random.default_rng(3)
    map7 = np.tanh(rng.normal(0, 0.6, (7, 7)))
    conf, mask = _slavc_reference(map7, relative)
    scores = M.slavc_scores(map7)
    assert M.slavc_confidence(scores) == pytest.approx(conf, abs=1e-6)
    assert np.array_equal(M.slavc_mask(scores, relative), mask)


def test_slavc_protocol_reports_at_75_and_uses_its_confidence(tmp_path):
    shards = write_shard(tmp_path / "test-000000.tar", standard_clips(6))
    cfg = EvalConfig()
    cfg.extended.enabled, cfg.extended.protocol = True, "slavc"
    m = evaluate("flow", str(shards), tmp_path / "out", cfg)
    ext = m["extended"]
    assert {"ap", "ap_at_75", "max_f1", "max_f1_at_75", "precision", "precision_at_75"} <= set(ext)
    assert ext["protocol"] == "slavc" and ext["confidence"] == "slavc_top_quarter_mean"
    rows = list(csv.DictReader(open(tmp_path / "out" / "per_clip.csv")))
    assert all(r["extended_ciou"] for r in rows if r["sounding"] == "1")


def test_a_clip_only_the_pair_list_needs_is_used_not_failed(tmp_path):
    clips = standard_clips(3)
    extra = make_clip("extra_clip", [0, 0, .5, .5], seed=9, boxes=False)   # no boxes: pair material
    write_shard(tmp_path / "test-000000.tar", clips)
    write_shard(tmp_path / "pairs-000000.tar", [extra])
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("video,audio,label\nclip000,clip001,non-sounding\nextra_clip,clip002,non-sounding\n"
                     "clip001,extra_clip,non-sounding\n")
    cfg = EvalConfig()
    cfg.extended.enabled, cfg.extended.pairs = True, str(pairs)
    m = evaluate("center", [str(tmp_path / "test-*.tar"), str(tmp_path / "pairs-*.tar")], tmp_path / "out", cfg)
    assert m["n"] == 3 and m["n_failed"] == 0
    assert m["extended"]["n_non_sounding"] == 3 and m["extended"]["missing_pairs"] == 0
    assert m["extended"]["pair_only_clips"] == ["extra_clip"]
