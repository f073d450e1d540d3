"""htf.shards: one way to name, open and count shards, wherever they are."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from htf.shards import count_samples, expand_shards, iter_raw_samples, shard_name
from tests.test_train_trainer import TINY
from tests.train_helpers import write_shards

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_shards(out, "train", [3, 2, 4])
    return out


def test_brace_glob_folder_and_file_urls_expand_to_the_same_shards(folder):
    names = [str(folder / f"train-00000{i}.tar") for i in range(3)]
    assert expand_shards(str(folder / "train-{000000..000002}.tar")) == names
    assert expand_shards(str(folder / "train-*.tar")) == names
    assert expand_shards(str(folder)) == names
    assert expand_shards(f"file://{folder}/train-*.tar") == [f"file://{n}" for n in names]


def test_a_missing_shard_is_named_with_the_pattern(folder):
    with pytest.raises(FileNotFoundError, match=r"train-000003.tar \(from '.*train-\{000000..000004\}.tar', 2 missing"):
        expand_shards(str(folder / "train-{000000..000004}.tar"))
    with pytest.raises(FileNotFoundError, match="no shard matches '.*nothing-"):
        expand_shards(str(folder / "nothing-*.tar"))


def test_pipe_commands_expand_without_checks_and_stream_the_shard(folder):
    urls = expand_shards(f"pipe:cat {folder}/train-{{000000..000001}}.tar")
    assert urls == [f"pipe:cat {folder}/train-000000.tar", f"pipe:cat {folder}/train-000001.tar"]
    assert shard_name(urls[1]) == "train-000001.tar"
    assert [len(list(iter_raw_samples(u))) for u in urls] == [3, 2]


def test_counts_come_from_sizes_json_beside_the_shards_for_paths_urls_and_pipes(folder):
    plain = expand_shards(str(folder / "train-*.tar"))
    assert count_samples(plain) == 9                                 # tar headers: no sizes.json yet
    (folder / "sizes.json").write_text(json.dumps({"train-000000.tar": 30, "train-000001.tar": 20}))
    try:
        assert count_samples(plain) == 30 + 20 + 4
        assert count_samples([f"file://{u}" for u in plain]) == 54
        assert count_samples([f"pipe:cat {u}" for u in plain]) == 54
    finally:
        (folder / "sizes.json").unlink()


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"train-000000.tar": "30"}',
                                     b'{"train-000000.tar": true}', b'{"train-000000.tar\xff": 30}'])
def test_a_damaged_sizes_json_is_ignored_and_the_shards_are_counted_from_their_headers(folder, content):
    (folder / "sizes.json").write_bytes(content)
    try:
        assert count_samples(expand_shards(str(folder / "train-*.tar"))) == 9
    finally:
        (folder / "sizes.json").unlink()


def test_a_failing_pipe_command_is_an_error_naming_it(folder):
    url = f"pipe:cat {folder}/absent.tar"
    with pytest.raises(OSError, match="absent.tar"):
        list(iter_raw_samples(url))


@pytest.mark.timeout(300)
def test_the_trainer_streams_pipe_shards_without_epoch_samples(folder, tmp_path):
    cmd = [sys.executable, "-m", "train", "--train-shards", f"pipe:cat {folder}/train-{{000000..000002}}.tar",
           "--output", str(tmp_path / "run")]
    for item in TINY + ["train.epochs=1"]:
        cmd += ["--set", item]
    run = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
                         capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "9 samples/epoch" in run.stdout
    assert json.loads((tmp_path / "run/logs/rank0.json").read_text())["steps_run"] == 2
