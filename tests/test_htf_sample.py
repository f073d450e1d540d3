"""The typed sample metadata (htf.sample.SampleMeta) and its json bytes."""
import pytest

from htf.sample import SampleMeta

# A json member as the pipeline writes it (key order, float formatting, null-free).
PIPELINE_JSON = (b'{"id": "syn3_00000", "source": "synthetic", "video": "syn3_00000.mp4", "keyframe_index": 50, '
                 b'"keyframe_time": 2.0, "fps": 25.0, "vfr": false, "frame_count": 100, "orig_size": [256, 256], '
                 b'"frame_size": [256, 256], "audio_window": [0.5, 3.5], "audio_tiled": false, '
                 b'"pipeline": {"frames": {"short_side": 256}, "flow": {"method": "dis", "dis": {"preset": "medium"}}}, '
                 b'"boxes": [[[0.20702, 0.43469, 0.74066, 1.0]]], "box_format": "vggss", "audio_rms_dbfs": -17.3}')


def test_pipeline_json_reads_into_fields_and_writes_back_byte_for_byte():
    meta = SampleMeta.from_json(PIPELINE_JSON)
    assert meta.keyframe_index == 50 and meta.box_format == "vggss" and meta.extra == {}
    assert meta.to_json() == PIPELINE_JSON


def test_keys_the_class_does_not_name_are_kept_after_the_fields():
    meta = SampleMeta.from_json(b'{"camera": "x", "id": "a", "fps": 30.0}')
    assert meta.extra == {"camera": "x"}
    assert meta.to_json() == b'{"id": "a", "fps": 30.0, "camera": "x"}'


def test_boxes_without_a_box_format_are_refused_naming_the_sample():
    with pytest.raises(ValueError, match="sample 'k1'.*box_format"):
        SampleMeta.from_json(b'{"id": "c", "boxes": [[[0, 0, 1, 1]]]}', "k1")


def test_json_that_is_not_an_object_is_refused_naming_the_sample():
    with pytest.raises(ValueError, match="sample 'k2': json is a list"):
        SampleMeta.from_json(b"[1, 2]", "k2")
    with pytest.raises(ValueError, match="sample 'k3': unreadable json"):
        SampleMeta.from_json(b"{nope", "k3")
