"""Trainer and evaluator: user mistakes and environment problems end in one ``error:``
line that names the file or key and says what to do."""
from __future__ import annotations

import fractions
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import webdataset as wds

from eval.config import EvalConfig
from eval.runner import evaluate
from htf.config import load_config
from htf.sample import encode_sample
from tests.eval_shards import make_clip, standard_clips, write_shard
from tests.train_helpers import synthetic_sample, write_shards
from train import checkpoint as ckpt
from htf.model_config import ModelConfig
from train.config import TrainConfig
from train.data import ShardSettingsError, check_shard_settings
from train.engine import ResumeError, _check_same_model, wants_resume
from htf.model import HTFModel, load_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.width=8", "model.image_size=56", "model.freeze_vision=false", "model.audio_frames=32",
        "data.batch_size=4", "data.workers=0", "data.shuffle_buffer=8", "train.amp=none",
        "train.log_every_steps=1"]
OFFICIAL = {"frames": {"short_side": 0}, "flow": {"method": "farneback", "encoding": "uint8_clip"},
            "audio": {"feature": "linear"}}


def _shard(path: Path, pipeline: dict, n: int = 4) -> str:
    with wds.TarWriter(str(path)) as sink:
        for i in range(n):
            sample = synthetic_sample(i, seed=hash(path.name) % 1000)
            sample.meta.pipeline = pipeline
            sink.write(encode_sample(sample))
    return str(path)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("error: "), err
    return lines[-1]


def test_shards_of_two_presets_are_refused_naming_both_and_the_keys(tmp_path):
    ours = _shard(tmp_path / "a-000000.tar", synthetic_sample(0).meta.pipeline)
    theirs = _shard(tmp_path / "b-000000.tar", OFFICIAL)
    with pytest.raises(ShardSettingsError) as err:
        check_shard_settings([ours, theirs], {})
    text = str(err.value)
    assert ours in text and theirs in text and "audio.feature" in text and "flow.encoding" in text


def test_official_shards_with_the_tiny_preset_are_refused(tmp_path):
    theirs = _shard(tmp_path / "b-000000.tar", OFFICIAL)
    tiny = load_config(TrainConfig, ROOT / "configs/train/tiny.yaml")
    with pytest.raises(ShardSettingsError, match=r"audio\.feature='linear' \(expected 'logmel'\)"):
        check_shard_settings([theirs], tiny.data.expect_settings)


def test_resume_without_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(ResumeError, match="nothing to resume"):
        wants_resume(True, tmp_path)


def test_resume_auto_starts_when_there_is_nothing_to_resume(tmp_path):
    assert wants_resume("auto", tmp_path) is False
    ckpt.latest_path(tmp_path).parent.mkdir(parents=True)
    ckpt.latest_path(tmp_path).write_bytes(b"x")
    assert wants_resume("auto", tmp_path) is True


def test_resume_after_changing_the_width_names_the_key():
    saved_cfg = ModelConfig(width=16, image_size=56)
    saved = {"config": {"model": dataclasses.asdict(saved_cfg)}, "model": HTFModel(saved_cfg).state_dict()}
    with pytest.raises(ResumeError, match=r"model\.width \(16 -> 32\)"):
        _check_same_model(saved, HTFModel(ModelConfig(width=32, image_size=56)), Path("latest.pt"))


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint\n", bytes(range(256)) * 20])
def test_a_file_that_is_not_a_checkpoint_is_named_without_torch_advice(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        load_model(path)
    assert "not a checkpoint" in str(err.value) and "weights_only" not in str(err.value)


def test_checkpoint_that_pickles_objects_is_not_unpickled(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "hparams": fractions.Fraction(1, 3)}, path)   # no real checkpoint holds one
    with pytest.raises(ValueError, match="fractions.Fraction"):
        load_model(path)


def test_missing_imagenet_weights_give_only_the_message(tmp_path):
    train = write_shards(tmp_path / "data", "train", [4])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HTF_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "th")}
    cmd = [sys.executable, "-m", "train", "--config", "tiny", "--train-shards", train, "--output",
           str(tmp_path / "run"), "--set", "model.vision_weights=IMAGENET1K_V1", "--set", "model.image_size=56"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "not cached" in _one_error_line(done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1


def test_training_on_shards_with_no_usable_sample_stops_naming_them(tmp_path):
    (tmp_path / "data").mkdir()
    with wds.TarWriter(str(tmp_path / "data" / "train-000000.tar")) as sink:
        for i in range(3):
            raw = encode_sample(synthetic_sample(i))
            raw["flow.npy"] = b"damaged"
            sink.write(raw)
    cmd = [sys.executable, "-m", "train", "--config", "tiny", "--train-shards",
           str(tmp_path / "data" / "train-*.tar"), "--output", str(tmp_path / "run")]
    for item in [*TINY, "data.workers=1", "model.vision_weights=null", "model.flow_weights=null",
                 "data.expect_settings={}"]:
        cmd += ["--set", item]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "none of the first 1000 training samples read from train-000000.tar" in _one_error_line(done.stderr)
    warnings = [line for line in done.stdout.splitlines() if line.startswith("warning: skipped")]
    assert len(warnings) == 3            # each damaged sample named once, not at every pass


def test_ctrl_c_in_training_says_how_to_resume(tmp_path):
    train = write_shards(tmp_path / "data", "train", [8])
    cmd = [sys.executable, "-m", "train", "--config", "tiny", "--train-shards", train, "--output",
           str(tmp_path / "run"), "--set", "train.epochs=1000", "--set", "train.save_every_steps=1"]
    for item in TINY:
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not ckpt.latest_path(tmp_path / "run").exists() and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "--resume" in _one_error_line(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")
def test_eval_on_cuda_without_cuda_says_so(tmp_path, capsys):
    from eval.__main__ import main

    path = tmp_path / "m.pt"
    torch.save({"state_dict": {}}, path)
    write_shard(tmp_path / "test-000000.tar", standard_clips(2))
    assert main(["--checkpoint", str(path), "--shards", str(tmp_path / "test-*.tar"), "--output",
                 str(tmp_path / "r"), "--set", "run.device=cuda"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "CUDA is not available" in line and "checkpoint" not in line.split("CUDA")[0]


def test_one_clip_whose_box_was_lost_is_scored_zero_and_listed(tmp_path):
    lost = make_clip("lost", [0, 0, .5, .5])
    lost.meta.boxes = [[]]            # its only box clipped to nothing when the shards were made
    write_shard(tmp_path / "test-000000.tar", standard_clips(4) + [lost])
    m = evaluate("center", str(tmp_path / "test-*.tar"), tmp_path / "out", EvalConfig())
    assert m["n"] == 5 and m["empty_ground_truth"] == ["lost"]
    rows = (tmp_path / "out" / "per_clip.csv").read_text().splitlines()
    assert any(line.startswith("lost,") and ",0.0" in line for line in rows)


def test_a_box_too_small_for_the_grid_is_scored_zero_not_a_crash(tmp_path):
    clips = standard_clips(3) + [make_clip("speck", [0.5, 0.5, 0.501, 0.501])]
    write_shard(tmp_path / "test-000000.tar", clips)
    m = evaluate("center", str(tmp_path / "test-*.tar"), tmp_path / "out", EvalConfig())
    assert m["n"] == 4 and m["empty_ground_truth"] == ["speck"]


def test_eval_output_under_a_file_is_one_error_line(tmp_path, capsys):
    from eval.__main__ import main

    write_shard(tmp_path / "test-000000.tar", standard_clips(2))
    (tmp_path / "afile").write_text("x")
    assert main(["--baseline", "center", "--shards", str(tmp_path / "test-*.tar"),
                 "--output", str(tmp_path / "afile" / "r")]) == 2
    assert "afile" in _one_error_line(capsys.readouterr().err)
