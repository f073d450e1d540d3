"""Heat-map overlays: boxes drawn pixel-exactly over the blended frame; real Flickr samples
when ../shared/data is present, a synthetic frame otherwise."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from htf.pictures import BOX_COLORS, blend, box_pixels, heat_for_frame, outline_mask, overlay

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FLICKR_IDS = ("10006434483", "10602295346")


def _flickr_samples():
    """(frame, per-annotator normalised boxes) of the two real Flickr samples."""
    boxes256 = json.loads((SHARED / "metadata" / "flickr_soundnet_boxes256.json").read_text())
    for clip in FLICKR_IDS:
        bgr = cv2.imread(str(SHARED / "flickr_samples" / f"{clip}.jpg"))
        yield clip, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), [[[v / 256 for v in b]] for b in boxes256[clip]]


def _cases():
    if (SHARED / "flickr_samples").is_dir():
        return list(_flickr_samples())
    rng = np.random.default_rng(0)  # ../shared/data absent: same check on a synthetic frame
    return [("synthetic", rng.integers(0, 255, (256, 256, 3), dtype=np.uint8),
             [[[0.1, 0.2, 0.6, 0.9]], [[0.3, 0.1, 0.8, 0.7]]])]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_overlay_draws_each_annotators_box_outline_pixel_exactly(case):
    clip, frame, boxes = case
    map7 = np.random.default_rng(1).random((7, 7))
    h, w = frame.shape[:2]
    plain = blend(frame, heat_for_frame(map7, h, w), 0.5)
    drawn = overlay(frame, map7, boxes, alpha=0.5, thickness=2)
    assert drawn.shape == frame.shape
    union = np.zeros((h, w), bool)
    for a, annotator in enumerate(boxes):
        rect = box_pixels(annotator[0], h, w)
        outline = outline_mask(h, w, rect, 2)
        later = np.zeros((h, w), bool)  # later annotators draw over earlier ones
        for b in boxes[a + 1:]:
            later |= outline_mask(h, w, box_pixels(b[0], h, w), 2)
        own = outline & ~later
        assert own.any(), f"{clip}: annotator {a} box drew nothing"
        assert (drawn[own] == BOX_COLORS[a]).all(), f"{clip}: annotator {a} outline colour"
        union |= outline
    # every pixel off the outlines is the plain blend of frame and heat map
    np.testing.assert_array_equal(drawn[~union], plain[~union])


def test_box_pixels_cover_the_flickr_256_box_exactly():
    # a 256-px Flickr box [69, 1, 216, 256] on a 256x256 frame: columns 69..215, rows 1..255
    assert box_pixels([69 / 256, 1 / 256, 216 / 256, 256 / 256], 256, 256) == (69, 1, 215, 255)


def test_overlay_label_goes_in_the_top_left_corner():
    frame = np.full((256, 256, 3), 128, np.uint8)
    with_label = overlay(frame, np.zeros((7, 7)), None, label="cIoU 0.731", alpha=0.0)
    without = overlay(frame, np.zeros((7, 7)), None, alpha=0.0)
    diff = np.argwhere((with_label != without).any(axis=2))
    assert diff.size and diff[:, 0].max() < 40 and diff[:, 1].min() < 10


def test_figure_keeps_the_aspect_ratio_at_a_readable_size():
    from htf.pictures import display_size, heatmap_figure

    wide = np.zeros((256, 455, 3), np.uint8)              # a 16:9 stored frame
    fig = heatmap_figure(wide, np.random.default_rng(0).random((7, 7)), [[[0.1, 0.1, 0.5, 0.5]]], "t")
    assert display_size(256, 455) == (256, 455)
    assert fig.shape[1] == 2 * 455 + 84                   # frame | heat map | colour bar, side by side
    assert display_size(128, 128) == (256, 256)           # small frames are enlarged
    assert display_size(720, 1280) == (360, 640)          # large ones shrunk, aspect kept


def test_figure_draws_the_predicted_mask_outline_the_box_and_a_legend():
    from htf.pictures import MASK_COLOR, heatmap_figure, predicted_mask

    frame = np.full((256, 256, 3), 90, np.uint8)
    map7 = np.zeros((7, 7))
    map7[1:3, 1:3] = 1.0                                   # heat in the top-left
    mask = predicted_mask(map7, 256, 256)
    assert mask[40, 40] and not mask[220, 220]
    fig = heatmap_figure(frame, map7, [[[0.5, 0.5, 0.9, 0.9]]], "t")
    head = 50                                               # title strip above the panels
    left = fig[head:head + 256, :256]
    assert (left == MASK_COLOR).all(axis=2).any()          # the outline of the mask cIoU scores
    assert (left == BOX_COLORS[0]).all(axis=2).sum() > 4 * 100   # the ground-truth box
    assert fig.shape[0] > head + 256 + 40                  # legend lines below the panels
