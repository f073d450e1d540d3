"""The one failure/warning record of the pipeline and its JSON line."""
import json

from pipeline.errors import Failure, failure_record


def test_a_failure_line_lists_id_stage_reason_detail_path_then_extra_keys():
    line = Failure("clip1", "decode", "no_audio_stream", "no audio in a.mp4", "a.mp4").record(prefix="test")
    assert json.dumps(line) == ('{"id": "clip1", "stage": "decode", "reason": "no_audio_stream", '
                                '"detail": "no audio in a.mp4", "path": "a.mp4", "prefix": "test"}')


def test_a_failure_without_a_known_file_has_no_path_key():
    assert failure_record("clip2", "index", "missing_file") == {
        "id": "clip2", "stage": "index", "reason": "missing_file", "detail": ""}
