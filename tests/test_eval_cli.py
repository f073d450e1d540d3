"""The command line: python -m eval (htf-eval) with baselines, checkpoints and bad input."""
from __future__ import annotations

import json

import pytest
import torch

from eval.__main__ import main
from tests.eval_shards import SETTINGS, standard_clips, write_shard


@pytest.fixture
def shards(tmp_path):
    write_shard(tmp_path / "test-000000.tar", standard_clips(4))
    return str(tmp_path / "test-*.tar")


def _tiny_checkpoint(path, settings=SETTINGS):
    from htf.model_config import ModelConfig
    from train.config import TrainConfig
    from htf.model import HTFModel, checkpoint_payload

    cfg = TrainConfig(model=ModelConfig(width=8, image_size=56))
    torch.manual_seed(0)
    model = HTFModel(cfg.model)
    model.data_settings = settings
    torch.save(checkpoint_payload(model, cfg), path)
    return path


def test_baseline_run_writes_metrics_and_exits_zero(shards, tmp_path, capsys):
    assert main(["--baseline", "flow", "--shards", shards, "--output", str(tmp_path / "r"),
                 "--set", "protocol.interpolation=bilinear"]) == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["predictor"] == "baseline:flow" and m["interpolation"] == "bilinear" and m["n"] == 4
    assert "ciou_at_0.5=" in capsys.readouterr().out


def test_neither_checkpoint_nor_baseline_is_a_usage_error(shards, tmp_path, capsys):
    assert main(["--shards", shards, "--output", str(tmp_path / "r")]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_unknown_config_key_is_named(shards, tmp_path, capsys):
    assert main(["--baseline", "center", "--shards", shards, "--output", str(tmp_path / "r"),
                 "--set", "protocol.interpolaton=bilinear"]) == 2
    assert "protocol.interpolaton" in capsys.readouterr().err


def test_eval_preset_files_load(tmp_path):
    from pathlib import Path

    from eval.config import EvalConfig
    from htf.config import load_config

    presets = sorted((Path(__file__).resolve().parents[1] / "configs" / "eval").glob("*.yaml"))
    assert {p.stem for p in presets} >= {"flickr", "vggsound", "tiny", "htf-official"}
    for p in presets:
        load_config(EvalConfig, p)


def test_checkpoint_with_a_baseline_reports_both(shards, tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "r"
    assert main(["--checkpoint", str(ckpt), "--shards", shards, "--output", str(out),
                 "--baseline", "center", "--heatmaps", "1"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["checkpoint"] == str(ckpt) and m["n"] == 4 and m["settings_checked"] and not m["warnings"]
    assert set(m["baselines"]["center"]) == {"ciou_at_0.5", "auc", "mean_ciou", "n"}
    assert (out / "baseline_center" / "metrics.json").is_file() and len(m["pictures"]) == 2


def test_checkpoint_with_missing_keys_is_refused_naming_them(shards, tmp_path, capsys):
    ckpt = tmp_path / "broken.pt"
    payload = torch.load(_tiny_checkpoint(tmp_path / "ok.pt"), weights_only=False)
    del payload["model"]["audnet.conv1.weight"]
    torch.save(payload, ckpt)
    assert main(["--checkpoint", str(ckpt), "--shards", shards, "--output", str(tmp_path / "r")]) == 2
    assert "audnet.conv1.weight" in capsys.readouterr().err


def _official_state(width=8):
    from htf.model_config import ModelConfig
    from htf.model import HTFModel

    torch.manual_seed(0)
    return HTFModel(ModelConfig(width=width, image_size=224)).state_dict()


def test_official_pth_on_non_official_shards_warns_naming_the_settings(shards, tmp_path):
    pth = tmp_path / "flickr.pth"
    torch.save({"model": _official_state()}, pth)
    assert main(["--checkpoint", str(pth), "--shards", shards, "--output", str(tmp_path / "r")]) == 0
    warnings = json.loads((tmp_path / "r" / "metrics.json").read_text())["warnings"]
    assert any("flow.method: shards 'dis', checkpoint expects 'farneback'" in w for w in warnings)


def test_official_lightning_ckpt_with_htf_official_preset_refuses_other_shards(shards, tmp_path, capsys):
    from pathlib import Path

    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in _official_state().items()}}, ckpt)
    preset = Path(__file__).resolve().parents[1] / "configs" / "eval" / "htf-official.yaml"
    assert main(["--checkpoint", str(ckpt), "--shards", shards, "--output", str(tmp_path / "r"),
                 "--config", str(preset)]) == 2
    assert "audio.feature: shards 'logmel', checkpoint expects 'linear'" in capsys.readouterr().err
