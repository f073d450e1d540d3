"""Checkpoints are untrusted files: one that would run code when unpickled is refused by
every path that loads weights (eval, apps.localize, train.init_from), naming the class."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.eval_shards import standard_clips, write_shard
from tests.official_checkpoints import official_model, save_lightning_ckpt


class _RunsCode:
    """Unpickling this calls os.system: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil_ckpt(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "code-ran"
    state = {f"model.{k}": v for k, v in official_model(width=8).state_dict().items()}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"args": _RunsCode(marker)}}, path)
    return path, marker


def test_eval_refuses_a_code_running_checkpoint_naming_the_class(evil_ckpt, tmp_path, capsys):
    from eval.__main__ import main

    shards = write_shard(tmp_path / "test-000000.tar", standard_clips(2))
    assert main(["--checkpoint", str(evil_ckpt[0]), "--shards", str(shards), "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert not evil_ckpt[1].exists()
    assert err.startswith("error:") and "system" in err and "--trust-checkpoint" in err


def test_localize_refuses_a_code_running_checkpoint(evil_ckpt, tmp_path, capsys):
    from apps.localize import main

    video = tmp_path / "v.mp4"
    video.write_bytes(b"")          # never reached
    assert main(["--checkpoint", str(evil_ckpt[0]), "--video", str(video), "--output", str(tmp_path / "o")]) == 2
    assert not evil_ckpt[1].exists() and "system" in capsys.readouterr().err


def test_train_init_from_refuses_a_code_running_checkpoint(evil_ckpt, tmp_path, capsys):
    from train.__main__ import main

    shards = write_shard(tmp_path / "train-000000.tar", standard_clips(4))
    rc = main(["--config", "configs/train/tiny.yaml", "--train-shards", str(shards), "--output",
               str(tmp_path / "run"), "--set", f"train.init_from={evil_ckpt[0]}"])
    assert rc != 0 and not evil_ckpt[1].exists()
    assert "system" in capsys.readouterr().err


def test_trust_flag_loads_it_anyway(evil_ckpt):
    from htf.model import load_model

    load_model(evil_ckpt[0], trust=True)
    assert evil_ckpt[1].exists()


def test_a_real_lightning_checkpoint_loads_without_trust(tmp_path):
    from htf.model import load_model

    model = official_model(width=8)
    loaded = load_model(save_lightning_ckpt(tmp_path / "best.ckpt", model))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
