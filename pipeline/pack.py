"""Stage 5, pack: samples -> WebDataset tar shards, written atomically and deterministically.

A shard is written to a hidden temporary name and renamed into place only when complete,
so an interrupted run never leaves a partial ``*.tar`` behind. Tar headers carry fixed
owner and time, so the same samples give byte-identical shards whatever the worker count.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from htf.io import atomic_write_json, replace_into_place, temp_path
from htf.sample import ClipSample, encode_sample
from pipeline.audio import feature_shape
from pipeline.config import PipelineConfig

_TAR_MTIME = 0


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


class ShardWriter:
    """Write samples to ``final_path`` via ``.<name>.tmp``; ``commit`` renames it into place."""

    def __init__(self, final_path: str | os.PathLike) -> None:
        self.final_path = Path(final_path)
        self.tmp_path = temp_path(self.final_path)
        self._file = open(self.tmp_path, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        self.count = 0
        self.keys: set[str] = set()

    def write(self, sample: ClipSample) -> None:
        fields = encode_sample(sample)
        key = fields.pop("__key__")
        if key in self.keys:        # two ids mapping to one key would corrupt the shard
            raise ValueError(f"duplicate sample key '{key}' in {self.final_path.name}")
        self.keys.add(key)
        for ext, data in fields.items():
            self._add(f"{key}.{ext}", data)
        self.count += 1

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = _TAR_MTIME
        info.mode = 0o444
        info.uname = info.gname = "htf"
        self._tar.addfile(info, io.BytesIO(data))

    def commit(self) -> bool:
        """Close and rename into place; an empty shard is removed instead (returns False)."""
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self.count == 0:
            self.tmp_path.unlink(missing_ok=True)
            return False
        replace_into_place(self.tmp_path, self.final_path)
        return True

    def abort(self) -> None:
        try:
            self._tar.close()
            self._file.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)


def estimated_sample_bytes(cfg: PipelineConfig) -> int:
    """Rough stored size of one sample (16:9 frame at the configured size)."""
    short = cfg.frames.short_side or 360
    long = min(cfg.frames.max_long_side, int(short * 16 / 9)) if cfg.frames.short_side else 640
    pixels = short * long
    jpeg, flow = int(pixels * 3 * 0.15), pixels * 2 * 2
    f, t = feature_shape(cfg.audio)
    return jpeg + flow + f * t * 2 + 8 * 1024        # + json and tar headers


def samples_per_shard(cfg: PipelineConfig) -> int:
    if cfg.pack.samples_per_shard > 0:
        return cfg.pack.samples_per_shard
    return max(1, int(cfg.pack.target_shard_mb * 1e6 // estimated_sample_bytes(cfg)))


def merge_sizes(out_dir: Path, prefix: str, sizes: dict[str, int]) -> dict[str, int]:
    """Update ``sizes.json``: entries of this prefix are replaced, other prefixes kept."""
    path = out_dir / "sizes.json"
    current: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    merged = {k: v for k, v in current.items() if not k.startswith(f"{prefix}-")}
    merged.update(sizes)
    merged = dict(sorted(merged.items()))
    atomic_write_json(path, merged, indent=1)
    return merged
