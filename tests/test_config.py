"""The typed config loader: presets + overrides -> dataclasses, errors that name the key."""
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
import yaml

from htf.config import ConfigError, load_config, save_config


@dataclass
class FlowSection:
    method: Literal["dis", "farneback", "raft"] = "dis"
    short_side: Optional[int] = 256
    scale: float = 1.0


@dataclass
class ExampleConfig:
    name: str = "x"
    workers: int = 2
    flow: FlowSection = field(default_factory=FlowSection)
    tags: list[str] = field(default_factory=list)


def write(tmp_path, data) -> str:
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_missing_keys_keep_defaults(tmp_path):
    cfg = load_config(ExampleConfig, write(tmp_path, {"workers": 4}))
    assert cfg.workers == 4 and cfg.flow.method == "dis" and cfg.flow.short_side == 256


def test_unknown_nested_key_is_named_with_its_section(tmp_path):
    with pytest.raises(ConfigError, match=r"flow\.metod"):
        load_config(ExampleConfig, write(tmp_path, {"flow": {"metod": "dis"}}))


def test_unknown_top_level_key_names_the_file(tmp_path):
    path = write(tmp_path, {"wrokers": 4})
    with pytest.raises(ConfigError) as err:
        load_config(ExampleConfig, path)
    assert "wrokers" in str(err.value) and "preset.yaml" in str(err.value)


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"workers: expected int"):
        load_config(ExampleConfig, write(tmp_path, {"workers": "four"}))


def test_bool_is_not_accepted_as_int(tmp_path):
    with pytest.raises(ConfigError, match="workers"):
        load_config(ExampleConfig, write(tmp_path, {"workers": True}))


def test_literal_choice_outside_the_set_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"flow\.method: expected one of"):
        load_config(ExampleConfig, overrides=["flow.method=pwc"])


def test_overrides_parse_yaml_scalars_and_win_over_the_file(tmp_path):
    cfg = load_config(ExampleConfig, write(tmp_path, {"workers": 4}),
                      overrides=["workers=8", "flow.scale=2", "flow.short_side=null", "tags=[a, b]"])
    assert cfg.workers == 8 and cfg.flow.scale == 2.0 and isinstance(cfg.flow.scale, float)
    assert cfg.flow.short_side is None and cfg.tags == ["a", "b"]


def test_override_without_equals_sign_is_explained():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(ExampleConfig, overrides=["workers"])


def test_override_of_an_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match="flow.nope"):
        load_config(ExampleConfig, overrides=["flow.nope=1"])


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="absent.yaml"):
        load_config(ExampleConfig, tmp_path / "absent.yaml")


def test_saved_config_reloads_to_the_same_object(tmp_path):
    cfg = load_config(ExampleConfig, overrides=["workers=3", "flow.method=raft", "tags=[q]"])
    path = save_config(cfg, tmp_path / "out" / "resolved.yaml")
    assert load_config(ExampleConfig, path) == cfg


def test_exponent_without_a_dot_is_a_float_for_float_keys():
    # YAML 1.1 reads 3e-4 as text; for a float key it is plainly the number
    cfg = load_config(ExampleConfig, overrides=["flow.scale=3e-4"])
    assert cfg.flow.scale == 3e-4


def test_text_for_a_float_key_is_still_rejected():
    with pytest.raises(ConfigError, match=r"flow\.scale: expected float"):
        load_config(ExampleConfig, overrides=["flow.scale=fast"])
