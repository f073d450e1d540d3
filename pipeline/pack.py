"""Stage 5, pack: samples -> WebDataset tar shards, whole samples only, deterministic bytes.

Tasks and shards are separate units: a task (a bounded run of clips) appends each
finished sample, as complete tar members built in memory first, to its own *part* file
in ``.work/pack/``; a shard is assembled from the part files of its tasks, in clip
order, once they are all done. So:
- a shard holds only whole samples: a sample is written with one append after all its
  bytes exist, an append that fails is cut off again, and a part becomes visible (is
  renamed from its temp name) only when its task finished; the shard itself is written
  to a hidden temporary name and renamed into place when complete;
- tar headers carry fixed owner and time and the samples come in plan order, so the same
  samples give byte-identical shards whatever the worker count or task size.
"""
from __future__ import annotations

import io
import os
import sys
import tarfile
from pathlib import Path
from typing import Any, Iterable

from htf.io import atomic_write_json, replace_into_place, set_aside, temp_path
from htf.sample import ClipSample, encode_sample
from htf.shards import ShardReadError, count_tar_samples, parse_sizes
from pipeline.audio import feature_shape
from pipeline.config import PipelineConfig

_TAR_MTIME = 0
_END_OF_ARCHIVE = b"\0" * (2 * tarfile.BLOCKSIZE)


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


def sample_members(sample: ClipSample) -> tuple[str, bytes]:
    """(key, the sample's tar members: header, data and padding of each field)."""
    fields = encode_sample(sample)
    key = fields.pop("__key__")
    out = io.BytesIO()
    for ext, data in fields.items():
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size = len(data)
        info.mtime = _TAR_MTIME
        info.mode = 0o444
        info.uname = info.gname = "htf"
        out.write(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape"))
        out.write(data)
        out.write(b"\0" * (-len(data) % tarfile.BLOCKSIZE))
    return key, out.getvalue()


class PartWriter:
    """A task's samples, appended whole to ``.<name>.tmp``; ``commit`` renames it to ``path``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.tmp_path = temp_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.tmp_path, "wb")
        self.samples: list[list[Any]] = []          # [key, clip id, bytes] in write order

    def append(self, clip_id: str, key: str, members: bytes) -> None:
        """Append one sample, or nothing: an append interrupted for any reason is cut off."""
        start = self._file.tell()
        try:
            self._file.write(members)
            self._file.flush()
        except BaseException:
            self._file.seek(start)
            self._file.truncate()
            raise
        self.samples.append([key, clip_id, len(members)])

    def commit(self) -> None:
        # No fsync: a part is an intermediate (the shard made from it is synced), and its
        # size is checked against its record before it is used again.
        self._file.close()
        os.replace(self.tmp_path, self.path)

    def abort(self) -> None:
        try:
            self._file.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)


def part_is_whole(path: str | os.PathLike, samples: list[list[Any]]) -> bool:
    """The part file is there and holds exactly the listed samples' bytes."""
    try:
        return os.path.getsize(path) == sum(size for _, _, size in samples)
    except OSError:
        return False


def assemble_shard(final_path: str | os.PathLike, parts: Iterable[tuple[str | os.PathLike, list[list[Any]]]]
                   ) -> tuple[int, list[tuple[str, str]]]:
    """Concatenate whole samples of ``parts`` (path, [key, id, bytes] list) into a shard,
    via a temp name. Returns (samples written, [(clip id, key)] left out because an earlier
    sample already had their key: two samples with one key would read back as one)."""
    final_path = Path(final_path)
    tmp = temp_path(final_path)
    seen: set[str] = set()
    dropped: list[tuple[str, str]] = []
    size = 0
    try:
        with open(tmp, "wb") as out:
            for path, samples in parts:
                with open(path, "rb") as part:
                    for key, clip_id, n in samples:
                        data = part.read(n)
                        if len(data) != n:
                            raise OSError(f"{path}: shorter than its record says (damaged); rerun to rebuild it")
                        if key in seen:
                            dropped.append((clip_id, key))
                            continue
                        seen.add(key)
                        out.write(data)
                        size += n
            # What tarfile writes on close: two zero blocks, padded to a whole record.
            out.write(_END_OF_ARCHIVE)
            size += len(_END_OF_ARCHIVE)
            out.write(b"\0" * (-size % tarfile.RECORDSIZE))
            out.flush()
            os.fsync(out.fileno())
        if not seen:
            tmp.unlink()
            return 0, dropped
        replace_into_place(tmp, final_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(seen), dropped


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
    """Update ``sizes.json``: entries of this prefix are replaced, other prefixes kept. A
    damaged file is set aside and other prefixes' counts are read again from their shards."""
    path = out_dir / "sizes.json"
    current = parse_sizes(path.read_bytes()) if path.exists() else {}
    if current is None:
        aside = set_aside(path)
        current = _count_shards(out_dir, prefix)
        print(f"warning: {path} is damaged (kept as {aside.name}); the sample counts of the other "
              f"shards in {out_dir} were read again from their tar headers", file=sys.stderr)
    merged = {k: v for k, v in current.items() if not k.startswith(f"{prefix}-")}
    merged.update(sizes)
    merged = dict(sorted(merged.items()))
    atomic_write_json(path, merged, indent=1)
    return merged


def _count_shards(out_dir: Path, prefix: str) -> dict[str, int]:
    """Samples in each shard of ``out_dir`` but ``prefix``'s, from the tar headers; a shard
    that cannot be read is left out (readers count it themselves, or report it)."""
    counts = {}
    for shard in sorted(out_dir.glob("*.tar")):
        if shard.name.startswith((f"{prefix}-", ".")):
            continue
        try:
            counts[shard.name] = count_tar_samples(str(shard))
        except ShardReadError:
            continue
    return counts
