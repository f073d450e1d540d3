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

One ``ArrayCache`` lives for one task: it reads each bucket's list of names once (not
per clip) and buffers writes, flushing them bucket by bucket (one open per bucket) when
the task ends or the buffer passes ``max_pending_bytes``. A task killed before its flush
loses only the buffered flows, which the rerun recomputes.
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

from htf.sample import sample_key

N_BUCKETS = 64


def to_float16(array: np.ndarray) -> np.ndarray:
    """float32 -> float16, the same bits as ``astype(np.float16)`` (round to nearest even).

    numpy converts values that become float16 subnormals (|x| < 6.1e-5, which flow is full
    of in still regions) ~20x slower than the rest: 5-25 ms per 256-px flow. OpenCV 4's
    ``convertFp16`` uses the CPU's F16C instructions (~0.03 ms); OpenCV 5 dropped it, and
    there torch's vectorised conversion does it (~0.5 ms, torch only imported then)."""
    import cv2

    a = np.ascontiguousarray(array, dtype=np.float32)
    if a.size == 0:
        return a.astype(np.float16)
    if hasattr(cv2, "convertFp16"):
        bits = cv2.convertFp16(a.reshape(-1, a.shape[-1]) if a.ndim != 2 else a)
        return np.ascontiguousarray(bits).view(np.float16).reshape(a.shape)
    import torch

    return torch.from_numpy(a).to(torch.float16).numpy()


class ArrayCache:
    """Arrays keyed by (clip id, keyframe index) under ``<cache_dir>/<kind>/<settings_key>``."""

    def __init__(self, cache_dir: str | os.PathLike, settings_key: str, kind: str = "flow",
                 max_pending_bytes: int = 64 << 20) -> None:
        self.root = Path(cache_dir) / kind / settings_key
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_pending_bytes = max_pending_bytes
        self._names: dict[Path, set[str]] = {}                    # bucket -> names seen there
        self._pending: dict[Path, dict[str, np.ndarray]] = {}     # bucket -> name -> float16
        self._pending_bytes = 0

    @staticmethod
    def entry_name(clip_id: str, keyframe_index: int) -> str:
        # HDF5 names may not contain '/': the shard key escaping keeps distinct ids distinct.
        return f"{sample_key(clip_id)}@{keyframe_index}"

    def _bucket(self, clip_id: str) -> Path:
        return self.root / f"{zlib.crc32(sample_key(clip_id).encode()) % N_BUCKETS:02d}.h5"

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

    def _known_names(self, bucket: Path) -> set[str]:
        """Names in ``bucket``, read once per cache object: a miss then costs no file open.
        Other processes write other clips (tasks hold disjoint clips), so the list only
        goes stale for entries this cache is never asked about."""
        names = self._names.get(bucket)
        if names is None:
            names = set()
            if bucket.exists():
                with self._locked(bucket):
                    f = self._open(bucket, "r")
                    if f is not None:
                        with f:
                            names = set(f.keys())
            self._names[bucket] = names
        return names

    def get(self, clip_id: str, keyframe_index: int) -> Optional[np.ndarray]:
        """The stored array (float16 for flow), or None when it is not cached."""
        bucket = self._bucket(clip_id)
        name = self.entry_name(clip_id, keyframe_index)
        pending = self._pending.get(bucket, {}).get(name)
        if pending is not None:
            return pending
        if name not in self._known_names(bucket):
            return None
        with self._locked(bucket):
            f = self._open(bucket, "r")
            if f is None:
                return None
            with f:
                if name not in f:
                    return None
                return np.asarray(f[name][()])

    def put(self, clip_id: str, keyframe_index: int, flow: np.ndarray) -> np.ndarray:
        """Buffer ``flow`` as float16 for the next flush; returns what the cache will hold."""
        bucket = self._bucket(clip_id)
        stored = flow if flow.dtype == np.float16 else to_float16(flow)
        self._pending.setdefault(bucket, {})[self.entry_name(clip_id, keyframe_index)] = stored
        self._pending_bytes += stored.nbytes
        if self._pending_bytes > self.max_pending_bytes:
            self.flush()
        return stored

    def flush(self) -> None:
        """Write the buffered arrays: one locked open per bucket."""
        for bucket, entries in sorted(self._pending.items()):
            with self._locked(bucket):
                with self._open(bucket, "a") as f:
                    for name, array in entries.items():
                        if name in f:
                            del f[name]
                        f.create_dataset(name, data=array)
                    f.flush()
            self._known_names(bucket).update(entries)
        self._pending.clear()
        self._pending_bytes = 0

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

