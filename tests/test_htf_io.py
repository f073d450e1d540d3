"""htf.io: the one atomic write every part uses, and the one way to set a damaged file aside."""
import json

import pytest

from htf.io import atomic_path, atomic_write_json, read_json_lines, set_aside, temp_path


def test_atomic_write_json_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    atomic_write_json(target, {"a": 1.5}, indent=1)
    assert target.read_text() == json.dumps({"a": 1.5}, indent=1) + "\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_an_error_while_writing_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"previous"
    assert not temp_path(target).exists()


def test_set_aside_never_overwrites_an_earlier_damaged_copy(tmp_path):
    path = tmp_path / "sizes.json"
    for text in ("first", "second"):
        path.write_text(text)
        set_aside(path)
    assert not path.exists()
    assert (tmp_path / "sizes.json.damaged").read_text() == "first"
    assert (tmp_path / "sizes.json.damaged-2").read_text() == "second"


def test_read_json_lines_keeps_objects_and_counts_every_other_line(tmp_path):
    path = tmp_path / "failures.jsonl"
    path.write_text('{"id": "a"}\n\n[1, 2]\nnot json\n{"id": "b"}\n{"id": "c", "det')
    assert read_json_lines(path) == ([{"id": "a"}, {"id": "b"}], 3)
    assert read_json_lines(tmp_path / "missing.jsonl") == ([], 0)
