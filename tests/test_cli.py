"""Every command line teaches: defaults, examples, groups, the real program name; presets by
name, "did you mean" for keys, errors blamed on what the user typed, --print-config, --list-keys."""
from __future__ import annotations

import configparser
import importlib
import sys
from pathlib import Path

import pytest
import yaml

from htf.config import ConfigError, load_config, presets, resolve_preset

REPO = Path(__file__).resolve().parents[1]
# module with main(), how it is run, a default its help must show, a preset part (or None)
COMMANDS = {
    "pipeline": ("pipeline.__main__", ["run"], "default 1", "pipeline"),
    "apps.synth": ("apps.synth", [], "(default: 500)", None),
    "train": ("train.__main__", [], "(default: htf-official, the official recipe", "train"),
    "eval": ("eval.__main__", [], "default 0", "eval"),
    "apps.localize": ("apps.localize", [], "(default: cpu)", None),
    "apps.demo": ("apps.demo", [], "(default: 1000)", None),
    "apps.demo_real": ("apps.demo_real", [], "(default: 10)", None),
}


def _help(module: str, sub: list[str], capsys, monkeypatch, argv0: str = "__main__.py") -> str:
    monkeypatch.setattr(sys, "argv", [argv0])
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as done:
        main([*sub, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_names_the_program_shows_defaults_and_examples(name, capsys, monkeypatch):
    module, sub, default, _ = COMMANDS[name]
    text = _help(module, sub, capsys, monkeypatch)
    assert text.startswith(f"usage: python -m {name}")
    assert default in " ".join(text.split())   # help lines are wrapped
    examples = text.split("\nexamples:\n", 1)[1]
    assert f"python -m {name}" in examples and "%(prog)" not in examples
    assert "``" not in text and ":func:" not in text


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_has_help(name):
    module, sub, _, _ = COMMANDS[name]
    parser = importlib.import_module(module).build_parser()
    if sub:
        parser = next(a for a in parser._actions if a.dest == "command").choices[sub[0]]
    missing = [a.option_strings for a in parser._actions if a.option_strings and not a.help]
    assert not missing


def test_help_under_a_console_script_uses_its_name(capsys, monkeypatch):
    text = _help("train.__main__", [], capsys, monkeypatch, argv0="/usr/bin/htf-train")
    assert text.startswith("usage: htf-train")


def test_every_command_has_a_console_script():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    scripts = dict(line.split(" = ") for line in cfg["options.entry_points"]["console_scripts"].split("\n") if line)
    targets = {v.split(":")[0] for v in scripts.values()}
    assert {m for m, *_ in COMMANDS.values()} <= targets
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))


def test_bare_preset_name_resolves_to_the_parts_file():
    assert resolve_preset("flickr", "pipeline") == REPO / "configs" / "pipeline" / "flickr.yaml"
    assert "tiny" in presets("train") and "synthetic" in presets("pipeline")


def test_unknown_preset_lists_the_presets_and_the_closest_one():
    with pytest.raises(ConfigError) as err:
        resolve_preset("flikr", "eval")
    text = str(err.value)
    assert "did you mean 'flickr'" in text and "presets: flickr, htf-official, tiny, vggsound" in text


def test_key_typo_in_yaml_is_blamed_on_the_file_with_a_suggestion(tmp_path):
    from train.config import TrainConfig

    preset = tmp_path / "mine.yaml"
    preset.write_text(yaml.safe_dump({"optim": {"lrr": 0.1}}))
    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, preset)
    assert str(err.value).startswith(str(preset)) and "did you mean 'lr'" in str(err.value)


def test_set_errors_are_blamed_on_set_not_on_the_file(capsys):
    from train.__main__ import main

    assert main(["--config", "tiny", "--set", "optim.lr=fast", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set optim.lr=fast: optim.lr: expected float") and "tiny.yaml" not in err


def test_set_key_typo_gets_did_you_mean(capsys):
    from eval.__main__ import main

    assert main(["--set", "protocol.interpolaton=bilinear", "--print-config"]) == 2
    assert "did you mean 'protocol.interpolation'" in capsys.readouterr().err


def test_flag_errors_are_blamed_on_the_flag(capsys):
    from pipeline.__main__ import main

    assert main(["run", "--workers", "0", "--print-config"]) == 2
    assert capsys.readouterr().err.startswith("error: --workers 0: run: workers must be >= 1")


@pytest.mark.parametrize("argv, module, expected", [
    (["run", "--config", "synthetic", "--flow", "farneback"], "pipeline.__main__", ("flow", "method", "farneback")),
    (["--config", "tiny", "--set", "train.epochs=7"], "train.__main__", ("train", "epochs", 7)),
    (["--config", "flickr", "--heatmaps", "3"], "eval.__main__", ("pictures", "heatmaps", 3)),
])
def test_print_config_prints_the_resolved_yaml_without_the_required_options(argv, module, expected, capsys):
    main = importlib.import_module(module).main
    assert main([*argv, "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    section, key, value = expected
    assert printed[section][key] == value


def test_print_config_of_synth_and_demo(capsys):
    from apps.demo import main as demo
    from apps.synth import main as synth

    assert synth(["--n", "7", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["n"] == 7
    assert demo(["--n", "9", "--set", "train.epochs=2", "--print-config"]) == 0
    plan = yaml.safe_load(capsys.readouterr().out)
    assert plan["n"] == 9 and plan["train_overrides"] == ["train.epochs=2"]


def test_list_keys_names_every_key_with_type_and_default(capsys):
    from train.__main__ import main

    assert main(["--list-keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    lr = next(line for line in lines if line.startswith("optim.lr "))
    assert lr.split() == ["optim.lr", "float", "0.001"]
    assert any(line.startswith("model.loss.epsilon ") for line in lines)


def test_localize_print_config_shows_the_checkpoints_settings_after_set(tmp_path, capsys):
    from apps.localize import main
    from tests.test_eval_cli import _tiny_checkpoint

    ckpt = _tiny_checkpoint(tmp_path / "tiny.pt")
    assert main(["--checkpoint", str(ckpt), "--set", "flow.device=cuda", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["flow"]["device"] == "cuda"


def test_demo_real_without_a_folder_of_videos_stops_with_one_error_line(tmp_path, capsys):
    from apps.demo_real import main

    missing = tmp_path / "no_such_folder"
    assert main(["--videos", str(missing), "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --videos {missing}: not a folder; give the folder that holds the video files"]
    assert not (tmp_path / "out").exists()
