"""Typed configuration: YAML presets -> nested dataclasses, with ``--set a.b=value`` overrides.

Every stage takes one config object. Unknown keys and wrong types are rejected with a
message that names the full dotted key (and the closest valid key), so a typo in a preset
never silently falls back to a default; an error caused by an override is blamed on that
override, not on the file. A preset is a file path or a bare name (``flickr`` ->
``configs/<part>/flickr.yaml``). ``save_config`` writes the resolved config next to an
output so a result can be reproduced from the folder alone; ``config_keys`` lists every
key with its type and default.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
_EXPONENT_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"

# An override is "key=value", or ("key=value", origin) where origin names the command-line
# option it came from (e.g. "--workers"), so an error can be blamed on what the user typed.
Override = typing.Union[str, tuple[str, str]]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the offending key."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# ------------------------------------------------------------------------------ presets

def presets(part: str) -> list[str]:
    """Names of the shipped presets of one part (``configs/<part>/*.yaml``)."""
    folder = CONFIG_ROOT / part
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def resolve_preset(name: str | os.PathLike, part: str | None) -> Path:
    """A config file path, or a bare preset name of ``part`` -> its file under configs/."""
    path = Path(name)
    if path.is_file():
        return path
    text = str(name)
    bare = part is not None and "/" not in text and os.sep not in text and path.suffix not in (".yaml", ".yml")
    if bare and (CONFIG_ROOT / part / f"{text}.yaml").is_file():
        return CONFIG_ROOT / part / f"{text}.yaml"
    if part is None:
        raise ConfigError(f"config file not found: {path}")
    names = presets(part)
    hint = did_you_mean(path.stem, names) if bare else ""
    raise ConfigError(f"config '{text}' is neither a file nor a preset of configs/{part}/{hint}; "
                      f"presets: {', '.join(names) or 'none'}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    if typing.get_args(tp):
        return str(tp).replace("typing.", "").replace("NoneType", "None")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert only lossless cases (int -> float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}", key=key)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}", key=key)
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for section '{key}', got {value!r}", key=key)
        return _build(tp, value, prefix=f"{key}.")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}", key=key)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}", key=key)
        return dict(value)
    if tp is float:
        if isinstance(value, str) and _EXPONENT_NUMBER.match(value):
            value = float(value)  # YAML 1.1 reads 3e-4 (no dot) as text; it is plainly a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected float, got {value!r}", key=key)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {value!r}", key=key)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected bool (true/false), got {value!r}", key=key)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected str, got {value!r}", key=key)
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}", key=key)
    return value


def _build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'{did_you_mean(unknown[0], names)} (valid keys "
            f"under '{prefix.rstrip('.') or '<top>'}': {', '.join(sorted(names))})", key=f"{prefix}{unknown[0]}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ConfigError:
            raise
        except ValueError as err:
            section = prefix.rstrip('.')
            raise ConfigError(f"{section or 'config'}: {err}", key=section) from err
    return obj


def _parse_scalar(text: str) -> Any:
    """Parse the right-hand side of ``--set key=value`` with YAML rules (1 -> int, true -> bool)."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text  # e.g. an unbalanced bracket: keep the text; the type check names the key


def _split_override(item: Override) -> tuple[str, str, str]:
    """(key, raw value, origin shown in errors) of one override."""
    text, origin = (item, None) if isinstance(item, str) else item
    if "=" not in text:
        raise ConfigError(f"--set {text}: must look like KEY=VALUE (e.g. --set flow.method=dis)")
    key, raw = text.split("=", 1)
    return key.strip(), raw, origin or f"--set {text}"


def apply_overrides(data: dict[str, Any], overrides: list[Override]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a nested dict (in place) and return it."""
    for item in overrides:
        key, raw, origin = _split_override(item)
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{origin}: '{part}' is not a section", key=key)
            node = child
        node[parts[-1]] = _parse_scalar(raw)
    return data


def _check_override_keys(cls: type, overrides: list[Override]) -> None:
    """Unknown keys in overrides are named with the override and the closest valid key."""
    known = {k for k, _, _ in config_keys(cls)}
    sections = {k.rsplit(".", 1)[0] for k in known if "." in k}
    for item in overrides:
        key, _, origin = _split_override(item)
        if key in known or any(k.startswith(key + ".") for k in known):
            continue
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        if parent and parent not in sections and parent in known:
            continue  # a free-form mapping (dict-typed key): its items are not checked
        raise ConfigError(f"{origin}: unknown config key '{key}'{did_you_mean(key, known)}; "
                          f"list the keys with --list-keys", key=key)


def _origin_of(err: ConfigError, overrides: list[Override]) -> str | None:
    """The override an error comes from: the last one whose key is or contains the failing key."""
    key = err.key or ""
    found = None
    for item in overrides:
        k, _, origin = _split_override(item)
        if key and (k == key or k.startswith(key + ".") or key.startswith(k + ".") or key.startswith(k + "[")):
            found = origin
    return found


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Any) -> str:
    """The resolved config as YAML text (what ``--print-config`` shows and runs save)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_keys(cls: type, prefix: str = "") -> list[tuple[str, str, Any]]:
    """Every leaf key of a config dataclass: (dotted key, type, default), in declaration order."""
    hints = typing.get_type_hints(cls)
    rows: list[tuple[str, str, Any]] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += config_keys(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        rows.append((f"{prefix}{f.name}", _type_name(tp), default))
    return rows


def format_keys(cls: type) -> str:
    """``--list-keys`` text: one key a line, its type and default."""
    rows = config_keys(cls)
    width = max(len(k) for k, _, _ in rows)
    kinds = max(len(t) for _, t, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {t.ljust(kinds)}  {yaml.safe_dump(d, default_flow_style=True).strip().removesuffix('...').strip()}"
                     for k, t, d in rows) + "\n"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys")
    return loaded


def load_config(cls: type[T], path: str | os.PathLike | None = None,
                overrides: list[Override] | None = None, base: dict[str, Any] | None = None,
                part: str | None = None) -> T:
    """Build ``cls`` from the YAML at ``path`` (optional), then ``overrides``.

    ``path`` may be a bare preset name of ``part`` (``flickr`` -> configs/<part>/flickr.yaml).
    Keys missing from the file keep the dataclass defaults; unknown keys or wrong types
    raise :class:`ConfigError` naming the key and whichever is at fault: the file or the
    override.
    """
    overrides = list(overrides or [])
    data: dict[str, Any] = dict(base or {})
    file: Path | None = None
    if path is not None:
        file = resolve_preset(path, part)
        data = _deep_merge(data, _read_yaml(file))
        try:
            _build(cls, data)  # the file alone must be valid: its errors are the file's
        except ConfigError as err:
            raise ConfigError(f"{file}: {err}", key=err.key) from None
    _check_override_keys(cls, overrides)
    data = apply_overrides(data, overrides)
    try:
        return _build(cls, data)
    except ConfigError as err:
        origin = _origin_of(err, overrides) or ("the overrides" if overrides else None)
        where = f"{origin}: " if origin else (f"{file}: " if file is not None else "")
        raise ConfigError(f"{where}{err}", key=err.key) from None


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically) so the output can be reproduced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dump_config(cfg))
    os.replace(tmp, path)
    return path
