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

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from htf.inputs import eval_arrays
from htf.model_config import ModelConfig
from htf.sample import ClipSample, decode_sample
from htf.shards import iter_raw_samples
from train.config import AugmentConfig, DataConfig
from train.transforms import train_arrays


# --------------------------------------------------------------------------------- shards

def first_sample(urls: list[str]) -> ClipSample:
    """The first sample of the first shard (to record the data settings before training)."""
    for raw in iter_raw_samples(urls[0]):
        return decode_sample(raw)
    raise ValueError(f"shard {urls[0]} holds no samples")


def _slot() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def _log_and_continue(exn: Exception) -> bool:
    print(f"warning: skipped a sample: {exn}", flush=True)
    return True


def _samples_of(shards: Iterator[dict[str, str]]) -> Iterator[dict[str, Any]]:
    """Raw samples of each shard in turn; a shard that fails (damaged, unreachable) is
    reported and the stream goes on with the next one."""
    for shard in shards:
        try:
            yield from iter_raw_samples(shard["url"])
        except Exception as exn:  # noqa: BLE001  (any I/O or tar error: skip, never stall training)
            _log_and_continue(exn)


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
        samples = _samples_of(self._shards(worker, workers, rng))
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
        items: list[tuple[torch.Tensor, ...]] = []
        metas: list[dict[str, Any]] = []
        for raw in (r for url in self.urls[worker::workers] for r in iter_raw_samples(url)):
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

