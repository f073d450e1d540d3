"""The data settings a sample records (``meta["pipeline"]``) and which of them matter.

A sample's ``pipeline`` block holds the ``frames``, ``flow`` and ``audio`` sections of the
pipeline config that made it. Inside ``flow``, the shared settings (method, resolution,
rescale_vectors, encoding) sit beside one block of the chosen method's own settings: the
block named after the method (``farneback``, ``dis``), else ``learned`` (every ptlflow model).

Runtime settings change how a sample is computed, not what it contains: they stay out of
the flow cache key, the shard fingerprint and the evaluator's comparison. This list is
the one definition of them.
"""
from __future__ import annotations

from typing import Any

RUNTIME_SETTINGS = frozenset({"flow.device", "flow.fp16", "flow.batch_size",
                              "flow.learned.allow_random_init"})
# Settings that name a file of one machine (the same weights lie elsewhere on another):
# recorded, but not compared by the evaluator.
LOCAL_PATH_SETTINGS = frozenset({"flow.learned.ckpt"})

# Flat names of samples and checkpoints made before the per-method blocks.
_LEGACY_FLOW_KEYS = {"dis_preset": ("dis", "preset"), "ckpt": ("learned", "ckpt"),
                     "allow_random_init": ("learned", "allow_random_init")}


def chosen_method_only(flow: dict[str, Any]) -> dict[str, Any]:
    """The flow settings without the blocks of the methods not chosen (order kept). The
    blocks are the dict values; a method without a block of its own name uses ``learned``."""
    method = flow.get("method")
    keep = method if isinstance(flow.get(method), dict) else "learned"
    return {k: v for k, v in flow.items() if not isinstance(v, dict) or k == keep}


def upgrade_settings(settings: dict[str, Any] | None) -> dict[str, Any] | None:
    """A ``meta["pipeline"]`` block (or a checkpoint's data settings) in today's shape:
    flat flow keys of older samples (``farneback_levels``, ``dis_preset``, ``ckpt``...)
    moved into their method's block."""
    if not isinstance(settings, dict) or not isinstance(settings.get("flow"), dict):
        return settings
    flow: dict[str, Any] = {}
    for key, value in settings["flow"].items():
        if key.startswith("farneback_"):
            flow.setdefault("farneback", {})[key[len("farneback_"):]] = value
        elif key in _LEGACY_FLOW_KEYS:
            block, name = _LEGACY_FLOW_KEYS[key]
            flow.setdefault(block, {})[name] = value
        else:
            flow[key] = value
    return {**settings, "flow": chosen_method_only(flow)}


def flatten(settings: Any, prefix: str = "") -> dict[str, Any]:
    """``{"flow": {"dis": {"preset": "fast"}}}`` -> ``{"flow.dis.preset": "fast"}``."""
    if not isinstance(settings, dict):
        return {prefix.rstrip("."): settings}
    out: dict[str, Any] = {}
    for key, value in settings.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def without(settings: dict[str, Any], dotted: frozenset[str], prefix: str = "") -> dict[str, Any]:
    """A copy of nested ``settings`` without the keys named in ``dotted``."""
    return {k: without(v, dotted, f"{prefix}{k}.") if isinstance(v, dict) else v
            for k, v in settings.items() if f"{prefix}{k}" not in dotted}
