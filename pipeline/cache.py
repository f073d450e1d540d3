"""HDF5 cache of computed flow, shared by all workers, so no flow is ever computed twice.

Layout: ``<cache_dir>/flow/<settings key>/<bucket>.h5`` holding one float16 dataset per
clip id. The settings key hashes everything the flow depends on (frames and flow
settings, see ``pipeline.config.flow_cache_key``) plus the keyframe index in the dataset
name, so changing audio or packing settings reuses the flow and changing the flow method
does not mistake one flow for another.

Clips are spread over 64 bucket files by a hash of their id; each write takes an
exclusive ``flock`` on the bucket, so many processes (and Ray workers on one machine) can
share the cache. A process killed in the middle of a write can leave a bucket unreadable:
it is then moved aside (``*.corrupt-<time>``) and its clips are recomputed, never trusted.
"""
from __future__ import annotations

import fcntl
import os
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

N_BUCKETS = 64


class ArrayCache:
    """Arrays keyed by (clip id, keyframe index) under ``<cache_dir>/<kind>/<settings_key>``."""

    def __init__(self, cache_dir: str | os.PathLike, settings_key: str, kind: str = "flow") -> None:
        self.root = Path(cache_dir) / kind / settings_key
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def entry_name(clip_id: str, keyframe_index: int) -> str:
        # HDF5 names may not contain '/', and '.' would be confusing next to extensions.
        return f"{clip_id.replace('/', '_')}@{keyframe_index}"

    def _bucket(self, clip_id: str) -> Path:
        return self.root / f"{zlib.crc32(clip_id.encode()) % N_BUCKETS:02d}.h5"

    @contextmanager
    def _locked(self, bucket: Path) -> Iterator[None]:
        with open(bucket.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _open(self, bucket: Path, mode: str):
        import h5py

        try:
            return h5py.File(bucket, mode, locking=False)
        except (OSError, RuntimeError):
            if not bucket.exists() and mode == "r":
                return None
            # Damaged by a killed writer: keep it for inspection, start the bucket afresh.
            bucket.rename(bucket.with_name(f"{bucket.name}.corrupt-{int(time.time() * 1000)}"))
            return h5py.File(bucket, mode, locking=False) if mode != "r" else None

    def get(self, clip_id: str, keyframe_index: int) -> Optional[np.ndarray]:
        bucket = self._bucket(clip_id)
        if not bucket.exists():
            return None
        name = self.entry_name(clip_id, keyframe_index)
        with self._locked(bucket):
            f = self._open(bucket, "r")
            if f is None:
                return None
            with f:
                if name not in f:
                    return None
                return np.asarray(f[name][()], dtype=np.float32)

    def put(self, clip_id: str, keyframe_index: int, flow: np.ndarray) -> None:
        bucket = self._bucket(clip_id)
        name = self.entry_name(clip_id, keyframe_index)
        with self._locked(bucket):
            with self._open(bucket, "a") as f:
                if name in f:
                    del f[name]
                f.create_dataset(name, data=np.asarray(flow, dtype=np.float16))
                f.flush()

    def __len__(self) -> int:
        """Number of cached arrays (reads every bucket: for tests and reports)."""
        total = 0
        for bucket in sorted(self.root.glob("*.h5")):
            with self._locked(bucket):
                f = self._open(bucket, "r")
                if f is not None:
                    with f:
                        total += len(f.keys())
        return total


FlowCache = ArrayCache
