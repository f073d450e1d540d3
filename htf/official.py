"""The input settings the released Hear The Flow weights expect, from one file.

``configs/pipeline/htf-official.yaml`` is the single source of truth: the pipeline builds
test shards with it, and a checkpoint in the official format (``{'model': state_dict}``
.pth, Lightning .ckpt) expects exactly its ``frames``, ``flow`` and ``audio`` sections as
``data_settings``. Nothing else writes these values down, so the two cannot disagree.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

OFFICIAL_PIPELINE_PRESET = Path(__file__).resolve().parent.parent / "configs" / "pipeline" / "htf-official.yaml"
OFFICIAL_FLOW_ENCODING = "uint8_clip"
SAMPLE_SECTIONS = ("frames", "flow", "audio")


@functools.lru_cache(maxsize=1)
def _read_preset() -> dict[str, Any]:
    import yaml

    if not OFFICIAL_PIPELINE_PRESET.is_file():
        raise FileNotFoundError(f"{OFFICIAL_PIPELINE_PRESET} is missing: it defines what official "
                                "weights expect (restore it from the repository)")
    data = yaml.safe_load(OFFICIAL_PIPELINE_PRESET.read_text()) or {}
    return {k: dict(data.get(k) or {}) for k in SAMPLE_SECTIONS}


def official_data_settings() -> dict[str, Any]:
    """``{'frames': ..., 'flow': ..., 'audio': ...}`` as the htf-official preset sets them
    (the keys a shard's ``meta['pipeline']`` is compared on); a fresh copy each call."""
    return copy.deepcopy(_read_preset())
