"""``python -m pipeline``: user mistakes and interruptions end in one ``error:`` line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.__main__ import OutputFolderError, check_output_folder, main
from pipeline.annotations import load_annotations, load_keyframes
from tests.pipeline_helpers import world

ROOT = Path(__file__).resolve().parents[1]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _run(tmp_path: Path, *extra: str) -> int:
    return main(["run", "--input", str(world(2, 64, 2.0)), "--output", str(tmp_path / "out"),
                 "--no-progress", *extra])


def test_output_path_under_a_file_is_one_error_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    rc = main(["run", "--input", str(world(2, 64, 2.0)), "--output", str(tmp_path / "afile" / "out"),
               "--no-progress"])
    assert rc == 2
    assert "afile is a file" in _one_error_line(capsys)


def test_read_only_output_folder_is_named(tmp_path, monkeypatch):
    # As root every folder is writable: stand in a read-only file system for tmp_path.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    with pytest.raises(OutputFolderError, match=f"{tmp_path} is not writable"):
        check_output_folder(tmp_path / "out" / "deeper")
    assert not (tmp_path / "out").exists()


def test_annotation_with_null_bbox_is_a_warning_not_a_crash(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps([{"file": "a", "bbox": None}, {"file": "b", "bbox": [[0.1, 0.1, 0.5, 0.5]]},
                                {"file": "c", "bbox": [["x", 1, 2, 3]]}, "not a record"]))
    ann = load_annotations(path)
    assert list(ann.boxes) == ["b"]
    assert {w.reason for w in ann.warnings} == {"bad_box", "bad_annotation"}


def test_flickr_annotation_with_wrong_types_is_a_warning(tmp_path):
    path = tmp_path / "flickr.json"
    path.write_text(json.dumps({"1": None, "2": [[10, 10, 100, 100]], "3": [[1, 2]], "4": "box"}))
    ann = load_annotations(path)
    assert list(ann.boxes) == ["2"]
    assert {w.id for w in ann.warnings} == {"1", "3", "4"}


@pytest.mark.parametrize("text", ['[{"file": "a", "bbox": [[0.1, 0.1', "\xff\xfe garbage", ""])
def test_damaged_annotation_json_names_the_file(tmp_path, capsys, text):
    path = tmp_path / "boxes.json"
    path.write_bytes(text.encode("latin-1"))
    assert _run(tmp_path, "--annotations", str(path)) == 2
    assert str(path) in _one_error_line(capsys)


def test_keyframes_with_wrong_types_name_the_clip(tmp_path):
    path = tmp_path / "keyframes.json"
    path.write_text(json.dumps({"a": 3, "b": "middle"}))
    with pytest.raises(ValueError, match="'b'"):
        load_keyframes(path)


def test_test_shards_without_boxes_are_warned_about(tmp_path, capsys):
    assert _run(tmp_path, "--shard-prefix", "test") == 0
    assert "without boxes" in capsys.readouterr().err


def test_ctrl_c_says_how_to_resume_without_traceback(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline", "run", "--input", str(world(8, 64, 4.0)), "--output", str(out),
           "--no-progress", "--workers", "2", "--set", "pack.samples_per_shard=1",
           "--set", "frames.short_side=128"]
    # Ctrl-C goes to the whole process group, workers included.
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    # Once a worker is in a clip (its step file exists): Ctrl-C in the middle of the work.
    while not list(out.glob(".work/*/*.step")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "rerun the same command to resume" in err
