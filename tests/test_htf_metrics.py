"""Behaviour of htf.metrics against hand-computed cases of the field's protocol."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from htf import metrics as M


def _box_image(size: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    img = np.zeros((size, size), np.float32)
    img[y1:y2, x1:x2] = 1
    return img


def test_map_equal_to_the_box_gives_ciou_one():
    box = [[[0.1, 0.2, 0.5, 0.7]]]  # one annotator, one box, under half the frame
    gt = M.gt_map(box, "vggss")
    assert M.clip_ciou(gt, box, "vggss") == pytest.approx(1.0)


def test_inverted_map_gives_ciou_zero():
    box = [[[0.0, 0.0, 0.8, 0.8]]]  # 64 % of the frame: the inverted mask is the rest
    gt = M.gt_map(box, "vggss")
    _, mask = M.prediction_mask(1.0 - gt)
    assert mask.sum() == 224 * 224 - gt.sum()
    assert M.ciou(mask, gt) == 0.0


def test_flickr_consensus_half_region_counts_half():
    # size 8: annotator A covers px 0..4, B covers 2..6 (both axes); overlap 2..4
    a, b = [0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]
    gt = M.gt_map([[a], [b]], "flickr", size=8)
    assert gt[2:4, 2:4].tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert gt[0, 0] == 0.5 and gt[5, 5] == 0.5 and gt[7, 7] == 0.0
    mask = _box_image(8, 0, 0, 4, 4).astype(bool)  # annotator A's box
    # intersection 4*1 + 12*0.5 = 10; denominator sum(gt) = 4 + 24*0.5 = 16
    assert M.ciou(mask, gt) == pytest.approx(10 / 16)


def test_flickr_three_agreeing_annotators_clip_at_one():
    box = [0.25, 0.25, 0.75, 0.75]
    gt = M.gt_map([[box], [box], [box]], "flickr", size=8)
    assert gt.max() == 1.0 and set(np.unique(gt)) == {0.0, 1.0}


def test_vggss_union_is_binary():
    gt = M.gt_map([[[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]]], "vggss", size=8)
    assert set(np.unique(gt)) == {0.0, 1.0}
    assert gt.sum() == 16 + 16 - 4


def test_flickr_256_boxes_scale_by_224_over_256_with_floor():
    xyxy256 = [10, 20, 100, 200]
    gt = M.gt_map([[[v / 256 for v in xyxy256]]], "flickr")
    expected = _box_image(224, *(int(224 * v / 256) for v in xyxy256)) / 2
    np.testing.assert_array_equal(gt, expected)


def test_flickr_pixels_survive_the_six_decimal_rounding_of_stored_boxes():
    # shards store normalised boxes rounded to 6 decimals; every 256-px coordinate must
    # still land on the official pixel int(224 * v / 256)
    for v in range(257):
        assert M.box_to_pixels([round(v / 256, 6)] * 2 + [1.0, 1.0])[0] == int(224 * v / 256), v


@pytest.mark.parametrize("name,mode,align", [("bicubic", "bicubic", False),
                                              ("bilinear", "bilinear", False),
                                              ("bilinear_align_corners", "bilinear", True)])
def test_upsample_matches_torch_interpolate(name, mode, align):
    m = np.random.default_rng(0).normal(size=(7, 7))
    ref = F.interpolate(torch.from_numpy(m)[None, None], size=(224, 224), mode=mode,
                        align_corners=align)[0, 0].numpy()
    np.testing.assert_allclose(M.upsample(m, 224, name), ref, atol=1e-9)


def test_mask_is_strictly_above_the_official_median():
    heat, mask = M.prediction_mask(np.random.default_rng(1).normal(size=(7, 7)))
    assert heat.min() == 0.0 and heat.max() == pytest.approx(1.0)
    thr = np.sort(heat.ravel())[224 * 224 // 2]
    np.testing.assert_array_equal(mask, heat > thr)


def test_constant_map_localises_nothing_and_is_flagged():
    heat, mask = M.prediction_mask(np.full((7, 7), 0.3))
    assert not mask.any() and M.is_constant(np.full((7, 7), 0.3))


def test_nan_map_is_rejected():
    bad = np.zeros((7, 7)); bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        M.prediction_mask(bad)


def test_empty_ground_truth_is_an_error_not_zero():
    with pytest.raises(ValueError, match="empty"):
        M.ciou(np.ones((8, 8), bool), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="no ground-truth boxes"):
        M.gt_map([], "vggss")


def test_malformed_box_is_named():
    with pytest.raises(ValueError, match=r"x2 <= x1"):
        M.gt_map([[[0.5, 0.1, 0.2, 0.9]]], "flickr")


def test_auc_of_a_known_success_curve():
    # success: 1 at t=0, 2/3 for 0<t<=0.5, 1/3 for 0.5<t<=1 -> 0.05*(1+2/3)/2 + 0.45*2/3
    # + 0.05*(2/3+1/3)/2 + 0.45*1/3 = 31/60
    assert M.auc([0.0, 0.5, 1.0]) == pytest.approx(31 / 60)


def test_summarize_reports_fraction_mean_auc_and_n():
    s = M.summarize([0.0, 0.5, 1.0, 0.49])
    assert s["ciou_at_0.5"] == pytest.approx(0.5)
    assert s["mean_ciou"] == pytest.approx(1.99 / 4)
    assert s["n"] == 4 and 0 < s["auc"] < 1


def test_summarize_refuses_an_empty_list():
    with pytest.raises(ValueError, match="empty"):
        M.summarize([])


def test_extended_precision_recall_ap_and_max_f1_by_hand():
    sounding = [True, True, False, True]
    cious = [0.9, 0.1, np.nan, 0.7]
    conf = [0.9, 0.8, 0.7, 0.6]
    assert M.precision_recall(sounding, cious, conf, 0.75) == (0.5, 0.5)
    # thresholds 0.8, 0.7, 0.6: (p, r) = (.5, .5), (1/3, .5), (.5, 1) -> AP = .5 * .5
    assert M.extended_ap(sounding, cious, conf) == pytest.approx(0.25)
    # best F1 at threshold 0.6: p = .5, r = 1
    assert M.extended_max_f1(sounding, cious, conf) == pytest.approx(2 / 3)
    s = M.summarize_extended(sounding, cious, conf)
    assert (s["n_sounding"], s["n_non_sounding"]) == (3, 1)
