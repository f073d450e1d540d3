"""Box parsers: VGG-SS JSON, Flickr 256-px JSON, Flickr XML folder; keyframe maps."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.annotations import load_annotations, load_keyframes


def test_vggss_json_gives_one_annotator_with_all_boxes(tmp_path: Path):
    path = tmp_path / "vggss.json"
    path.write_text(json.dumps([{"file": "abc_000010", "class": "dog", "bbox": [[0.1, 0.2, 0.5, 0.6], [0.5, 0.5, 0.9, 1.0]]}]))
    ann = load_annotations(path)
    assert ann.box_format == "vggss"
    assert ann.boxes == {"abc_000010": [[[0.1, 0.2, 0.5, 0.6], [0.5, 0.5, 0.9, 1.0]]]}


def test_flickr_json_is_normalised_from_256_pixels_one_box_per_annotator(tmp_path: Path):
    path = tmp_path / "flickr.json"
    path.write_text(json.dumps({"123": [[0, 64, 128, 256], [32, 32, 96, 96]]}))
    ann = load_annotations(path)
    assert ann.box_format == "flickr"
    assert ann.boxes == {"123": [[[0.0, 0.25, 0.5, 1.0]], [[0.125, 0.125, 0.375, 0.375]]]}


def test_flickr_xml_folder_skips_each_bboxs_first_child(tmp_path: Path):
    folder = tmp_path / "xml"
    folder.mkdir()
    annotators = "".join(
        f"<object><bbox><label>person</label><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bbox></object>"
        for a, b, c, d in [(0, 0, 128, 128), (64, 64, 192, 256), (10, 20, 30, 40)])
    (folder / "4567.xml").write_text(f"<annotation><filename>4567.jpg</filename>{annotators}</annotation>")
    ann = load_annotations(folder)
    assert ann.box_format == "flickr"
    assert ann.boxes["4567"][0] == [[0.0, 0.0, 0.5, 0.5]]
    assert ann.boxes["4567"][1] == [[0.25, 0.25, 0.75, 1.0]]
    assert len(ann.boxes["4567"]) == 3


def test_vggss_boxes_outside_the_frame_are_clipped_and_reported(tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"file": "a", "bbox": [[-0.2, 0.1, 1.3, 0.5]]},
                                {"file": "b", "bbox": [[1.2, 1.2, 1.5, 1.5]]}]))
    ann = load_annotations(path)
    assert ann.boxes["a"] == [[[0.0, 0.1, 1.0, 0.5]]]
    assert ann.boxes["b"] == [[]]            # annotated, but the ground truth is empty
    reasons = {(w.id, w.reason) for w in ann.warnings}
    assert ("a", "box_out_of_range") in reasons and ("b", "empty_box") in reasons
    assert ("b", "empty_ground_truth") in reasons


def _official_gt(boxes: list[list[float]]) -> "np.ndarray":
    """The official VGG-SS ground truth, from its rule: int(224 * max(v, 0)), slices."""
    import numpy as np

    gt = np.zeros((224, 224))
    for box in boxes:
        x1, y1, x2, y2 = (int(224 * max(v, 0)) for v in box)
        gt[y1:y2, x1:x2] = 1
    return gt


def test_published_vggss_boxes_give_the_official_ground_truth():
    import numpy as np

    from htf.metrics import gt_map
    from htf.lists import normalise_id

    path = Path(__file__).resolve().parent.parent / "metadata" / "htf_vggss.json"
    ann = load_annotations(path, "vggsound")
    absurd = [e for e in json.loads(path.read_text()) if min(min(b) for b in e["bbox"]) < -1]
    assert len(absurd) == 12
    for entry in absurd + [e for e in json.loads(path.read_text()) if e["file"] == "M1P1xla8rg0_000000"]:
        ours = gt_map(ann.boxes[normalise_id(entry["file"], "vggsound")], "vggss")
        assert np.array_equal(ours, _official_gt(entry["bbox"])), entry["file"]
    assert ann.boxes["M1P1xla8rg0_000000"] == [[]]


def test_keyframe_map_accepts_indices_and_official_imagetoframe_lists(tmp_path: Path):
    path = tmp_path / "kf.json"
    path.write_text(json.dumps({"x": 12, "y": [40, 55]}))
    assert load_keyframes(path) == {"x": {"index": 12}, "y": {"entry": 40}}


def test_missing_annotation_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_annotations(tmp_path / "nope.json")
