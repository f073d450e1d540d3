"""Streaming shards with webdataset: resampled training stream, one-pass validation stream.

Training (in the style of open_clip's ``training/data.py``): every (rank, worker) pair is
one *slot*. When there are at least as many shards as slots, each slot owns a disjoint
subset (split by node, then by worker); otherwise all slots share the full list. A slot
draws shards from its subset at random with replacement (resampling), expands them into
samples, shuffles them in a buffer and yields batches, without end. The loop takes exactly
``steps_per_epoch`` batches per rank, so every rank does the same number of steps whatever
the shard counts: no DDP hang. Seeds come from (seed, epoch, start step, rank, worker).

Validation reads every sample once: shards are split by rank and worker; results are
gathered across ranks by the caller.
"""
from __future__ import annotations

import glob
import json
import os
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import braceexpand
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from htf.inputs import eval_arrays
from htf.model_config import ModelConfig
from htf.sample import ClipSample, decode_sample
from train.config import AugmentConfig, DataConfig
from train.transforms import train_arrays


# --------------------------------------------------------------------------------- shards

def expand_urls(spec: str) -> list[str]:
    """``'a-{000..009}.tar'``, globs and ``::``-separated lists -> sorted, checked shard paths."""
    urls: list[str] = []
    for part in spec.split("::"):
        for item in braceexpand.braceexpand(part):
            found = sorted(glob.glob(item)) if any(c in item for c in "*?[") else [item]
            urls.extend(found)
    if not urls:
        raise FileNotFoundError(f"no shards match '{spec}'")
    missing = [u for u in urls if "://" not in u and not os.path.isfile(u)]
    if missing:
        raise FileNotFoundError(f"shard not found: {missing[0]} (from '{spec}', {len(missing)} missing)")
    return urls


def _count_tar(url: str) -> int:
    keys = set()
    with tarfile.open(url) as tar:
        for member in tar:
            if member.isfile():
                keys.add(os.path.basename(member.name).split(".", 1)[0])
    return len(keys)


def count_samples(urls: list[str]) -> int:
    """Samples in ``urls``: from a ``sizes.json`` ({shard name: count}) beside them, else by
    reading the tar headers."""
    total = 0
    sizes_cache: dict[str, dict[str, int]] = {}
    for url in urls:
        folder = os.path.dirname(url)
        if folder not in sizes_cache:
            path = Path(folder) / "sizes.json"
            try:
                sizes_cache[folder] = json.loads(path.read_text()) if path.is_file() else {}
            except (OSError, ValueError):
                sizes_cache[folder] = {}
        count = sizes_cache[folder].get(os.path.basename(url))
        total += int(count) if isinstance(count, int) else _count_tar(url)
    return total


def first_sample(urls: list[str]) -> ClipSample:
    """The first sample of the first shard (to record the data settings before training)."""
    for raw in wds.tarfile_to_samples()([{"url": urls[0]}]):
        return decode_sample(raw)
    raise ValueError(f"shard {urls[0]} holds no samples")


def _slot() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def _log_and_continue(exn: Exception) -> bool:
    print(f"warning: skipped a sample: {exn}", flush=True)
    return True


def _buffer_shuffle(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    buf: list[Any] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        i = rng.randrange(size)
        buf[i], item = item, buf[i]
        yield item
    rng.shuffle(buf)
    yield from buf


def collate(items: list[tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
    image, flow, spec = (torch.stack(t) for t in zip(*items))
    return {"image": image, "flow": flow, "spec": spec}


# ---------------------------------------------------------------------------- train stream

class TrainStream(IterableDataset):
    """Endless batches for one rank (see module docs); ``set_epoch`` reseeds the stream."""

    def __init__(self, urls: list[str], model_cfg: ModelConfig, aug: AugmentConfig,
                 data: DataConfig, rank: int, world: int, seed: int) -> None:
        super().__init__()
        self.urls, self.model_cfg, self.aug, self.data = urls, model_cfg, aug, data
        self.rank, self.world, self.seed = rank, world, seed
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def _shards(self, worker: int, workers: int, rng: random.Random) -> Iterator[dict[str, str]]:
        slots = self.world * workers
        slot = self.rank * workers + worker
        subset = self.urls[slot::slots] if len(self.urls) >= slots else self.urls
        while True:
            yield {"url": rng.choice(subset)}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker, workers = _slot()
        key = [self.seed, self.epoch, self.start_step, self.rank, worker]
        rng = random.Random("-".join(map(str, key)))
        np_rng = np.random.default_rng(key)
        samples = wds.tarfile_to_samples(handler=_log_and_continue)(self._shards(worker, workers, rng))
        if self.data.shuffle_buffer > 1:
            samples = _buffer_shuffle(samples, self.data.shuffle_buffer, rng)
        batch: list[tuple[torch.Tensor, ...]] = []
        for raw in samples:
            try:
                sample = decode_sample(raw)
                batch.append(train_arrays(sample, self.model_cfg, self.aug, np_rng))
            except ValueError as err:
                _log_and_continue(err)
                continue
            if len(batch) == self.data.batch_size:
                yield collate(batch)
                batch = []


def train_loader(stream: TrainStream, data: DataConfig) -> DataLoader:
    kwargs: dict[str, Any] = {}
    if data.workers > 0:
        kwargs = {"prefetch_factor": data.prefetch_factor, "persistent_workers": False}
    return DataLoader(stream, batch_size=None, num_workers=data.workers,
                      pin_memory=torch.cuda.is_available(), **kwargs)


# ----------------------------------------------------------------------------- validation

class ValStream(IterableDataset):
    """Every sample of this rank's shards once: (inputs batch, list of metadata)."""

    def __init__(self, urls: list[str], model_cfg: ModelConfig, batch_size: int,
                 rank: int, world: int) -> None:
        super().__init__()
        self.urls = urls[rank::world]
        self.model_cfg, self.batch_size = model_cfg, batch_size

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], list[dict[str, Any]]]]:
        worker, workers = _slot()
        shards = [{"url": u} for u in self.urls[worker::workers]]
        items: list[tuple[torch.Tensor, ...]] = []
        metas: list[dict[str, Any]] = []
        for raw in wds.tarfile_to_samples()(iter(shards)):
            sample = decode_sample(raw)
            items.append(eval_arrays(sample, self.model_cfg))
            metas.append({"id": sample.id, "boxes": sample.boxes,
                          "box_format": sample.meta.get("box_format", "vggss")})
            if len(items) == self.batch_size:
                yield collate(items), metas
                items, metas = [], []
        if items:
            yield collate(items), metas


def val_loader(urls: list[str], model_cfg: ModelConfig, data: DataConfig,
               rank: int, world: int) -> DataLoader:
    stream = ValStream(urls, model_cfg, data.val_batch_size, rank, world)
    workers = min(data.workers, max(1, len(stream.urls)))
    return DataLoader(stream, batch_size=None, num_workers=workers if data.workers else 0)

