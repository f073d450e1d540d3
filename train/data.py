"""Streaming shards: resampled training stream, one-pass validation stream.

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

import json
import multiprocessing
import random
import tarfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from htf.inputs import eval_arrays
from htf.model_config import ModelConfig
from htf.sample import ClipSample, decode_sample
from htf.shards import (ReadFailure, decode_or_report, is_pipe, iter_members, iter_raw_samples,
                        read_samples, readable_raw_samples, scheme, shard_name)
from train.config import AugmentConfig, DataConfig
from train.transforms import train_arrays


# --------------------------------------------------------------------------------- shards

class ShardSettingsError(ValueError):
    """A shard is unreadable, or shards were made with different pipeline settings or not
    with the ones the preset expects."""


def first_sample(urls: list[str]) -> ClipSample:
    """The first sample of the first shard (to record the data settings before training)."""
    for raw in iter_raw_samples(urls[0]):
        return decode_sample(raw)
    raise ValueError(f"shard {urls[0]} holds no samples")


def recorded_settings(url: str) -> dict[str, Any] | None:
    """``meta["pipeline"]`` of the first sample of a shard (local, URL or ``pipe:``),
    reading only up to its json."""
    try:
        for _key, ext, data in iter_members(url):
            if ext == "json":
                meta = json.loads(data)
                return meta.get("pipeline") if isinstance(meta, dict) else None
    except (tarfile.TarError, OSError, ValueError, EOFError) as err:
        raise ShardSettingsError(f"shard {url} is unreadable ({type(err).__name__}: {err}); "
                                 f"make it again or leave it out") from None
    raise ShardSettingsError(f"shard {url} holds no sample")


def _is_local(url: str) -> bool:
    return not is_pipe(url) and scheme(url) in ("", "file")


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {'a.b': value} (the dotted names ``--set`` uses)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    la, lb = _leaves(a), _leaves(b)
    return [f"{k} ({la.get(k, 'unset')!r} vs {lb.get(k, 'unset')!r})"
            for k in sorted(set(la) | set(lb)) if la.get(k) != lb.get(k)]


def check_shard_settings(urls: list[str], expect: dict[str, Any]) -> dict[str, Any] | None:
    """The pipeline settings all ``urls`` were made with. Refuses shards that differ from
    each other (naming two and the keys), or from ``expect`` (``data.expect_settings``):
    a batch must not mix kinds of input, nor feed a model inputs it was not built for."""
    # Every local shard is checked; of remote ones (a bucket, a pipe) only the first: each
    # check is a request.
    local = [u for u in urls if _is_local(u)] + [u for u in urls if not _is_local(u)][:1]
    if not local:
        return None
    first = recorded_settings(local[0])
    for url in local[1:]:
        other = recorded_settings(url)
        if other != first:
            keys = _differences(first or {}, other or {})
            raise ShardSettingsError(
                f"shards {local[0]} and {url} were made with different pipeline settings: "
                f"{'; '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}. Train on shards of one "
                f"pipeline preset at a time")
    recorded = _leaves(first or {})
    wrong = [f"{k}={recorded.get(k, 'unset')!r} (expected {v!r})"
             for k, v in _leaves(expect).items() if recorded.get(k) != v]
    if wrong:
        raise ShardSettingsError(
            f"shard {local[0]} was made with {', '.join(wrong)}, not what this preset's model "
            f"takes (data.expect_settings). Make shards with the matching pipeline preset, or "
            f"choose the training preset made for these shards")
    return first


def _slot() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def warn_skipped(failure: ReadFailure) -> None:
    where = f"shard {failure.shard}" + (f", sample {failure.key}" if failure.key else "")
    print(f"warning: skipped: {where}: {failure.reason}", flush=True)


def _warn_once() -> Callable[[ReadFailure], None]:
    """``warn_skipped`` for a resampled stream, which meets the same damage again and again."""
    seen: set[tuple[str, str]] = set()

    def warn(failure: ReadFailure) -> None:
        if (failure.shard, failure.key) not in seen:
            seen.add((failure.shard, failure.key))
            warn_skipped(failure)
    return warn


class NoUsableSamplesError(ShardSettingsError):
    """No shard of a slot gives a sample the model can take: a resampled stream would draw
    forever. Raised in a loader worker, it reaches the main process with the worker's
    traceback in its text, so ``str`` keeps only the message."""

    def __str__(self) -> str:
        last = super().__str__().strip().splitlines()[-1]
        prefix = f"{type(self).__module__}.{type(self).__name__}: "
        return last[len(prefix):] if last.startswith(prefix) else last


# A slot stops when it has read this many samples (at least) and could decode none of them.
UNDECODABLE_LIMIT = 1000


class _SlotProgress:
    """Whether a slot's stream can ever yield: stops it with an error naming its shards
    when every shard was tried and none gave a sample, or when no sample of the first
    ``UNDECODABLE_LIMIT`` could be decoded."""

    def __init__(self, subset: list[str]) -> None:
        self.subset, self.empty = set(subset), set()
        self.read_any = self.decoded_any = False
        self.undecodable = 0

    def shard_done(self, url: str, samples: int) -> None:
        self.read_any = self.read_any or samples > 0
        if samples == 0:
            self.empty.add(url)
        if not self.read_any and self.empty >= self.subset:
            raise NoUsableSamplesError(
                f"no training shard gives a sample: {_names(self.subset)} are empty, damaged or "
                "unreachable (each named in a warning above); make them again or leave them out")

    def sample_done(self, decoded: bool) -> None:
        self.decoded_any = self.decoded_any or decoded
        self.undecodable += not decoded
        if not self.decoded_any and self.undecodable >= UNDECODABLE_LIMIT:
            raise NoUsableSamplesError(
                f"none of the first {self.undecodable} training samples read from {_names(self.subset)} "
                "can be decoded (each named in a warning above); make the shards again")


def _names(urls: set[str]) -> str:
    names = sorted(shard_name(u) for u in urls)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


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
    """(image, flow, spec[, sync]) per clip -> a batch dict of stacked tensors."""
    return dict(zip(("image", "flow", "spec", "sync"), (torch.stack(t) for t in zip(*items))))


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

    def _subset(self, worker: int, workers: int) -> list[str]:
        slots = self.world * workers
        slot = self.rank * workers + worker
        return self.urls[slot::slots] if len(self.urls) >= slots else self.urls

    def _raw_samples(self, subset: list[str], rng: random.Random, progress: _SlotProgress,
                     warn: Callable[[ReadFailure], None] = warn_skipped) -> Iterator[dict[str, Any]]:
        """Shards drawn at random with replacement, expanded into raw samples, forever."""
        while True:
            url = rng.choice(subset)
            count = 0
            for raw in readable_raw_samples([url], warn):
                count += 1
                yield raw
            progress.shard_done(url, count)

    def _arrays(self, raw: dict[str, Any], np_rng: np.random.Generator,
                warn: Callable[[ReadFailure], None]) -> tuple[torch.Tensor, ...] | None:
        """The augmented model inputs of a raw sample, or None after a warning naming it."""
        sample = decode_or_report(raw, warn)
        if sample is None:
            return None
        try:
            return train_arrays(sample, self.model_cfg, self.aug, np_rng)
        except ValueError as err:     # e.g. a spectrogram shorter than the model takes
            warn(ReadFailure(shard_name(raw["__url__"]), raw["__key__"], str(err)))
            return None

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker, workers = _slot()
        key = [self.seed, self.epoch, self.start_step, self.rank, worker]
        rng = random.Random("-".join(map(str, key)))
        np_rng = np.random.default_rng(key)
        subset = self._subset(worker, workers)
        progress, warn = _SlotProgress(subset), _warn_once()
        samples = self._raw_samples(subset, rng, progress, warn)
        if self.data.shuffle_buffer > 1:
            samples = _buffer_shuffle(samples, self.data.shuffle_buffer, rng)
        batch: list[tuple[torch.Tensor, ...]] = []
        for raw in samples:
            arrays = self._arrays(raw, np_rng, warn)
            progress.sample_done(arrays is not None)
            if arrays is None:
                continue
            batch.append(arrays)
            if len(batch) == self.data.batch_size:
                yield collate(batch)
                batch = []


# ------------------------------------------------------------------------------- loaders

class StalledLoaderError(RuntimeError):
    """No batch came from a DataLoader worker within ``data.loader_timeout_s``."""


def worker_start_method() -> multiprocessing.context.BaseContext:
    """How DataLoader workers start: from a fresh single-threaded server process, never by
    forking the trainer. The trainer runs threads (TensorBoard's writer, queue feeders); a
    fork copies a lock one of them holds, and the worker then waits on it forever."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":      # the server imports these once; each worker then starts fast
        context.set_forkserver_preload(["torch", "train.data"])
    return context


class BatchLoader(DataLoader):
    """A DataLoader whose workers start cleanly (``worker_start_method``) and whose wait
    for a batch ends in ``StalledLoaderError`` naming the setting, not in a silent hang."""

    def __init__(self, dataset: IterableDataset, workers: int, timeout_s: float, **kwargs: Any) -> None:
        if workers > 0:
            kwargs.update(multiprocessing_context=worker_start_method(), timeout=timeout_s)
        super().__init__(dataset, batch_size=None, num_workers=workers, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except RuntimeError as err:
                if "timed out" not in str(err):
                    raise
                raise StalledLoaderError(
                    f"no batch from a DataLoader worker in {self.timeout:g} s: a worker hung or the "
                    f"shards are too slow to read; check the shards' storage or raise "
                    f"data.loader_timeout_s") from None
            yield batch


def train_loader(stream: TrainStream, data: DataConfig) -> DataLoader:
    kwargs = {"prefetch_factor": data.prefetch_factor} if data.workers > 0 else {}
    return BatchLoader(stream, data.workers, data.loader_timeout_s,
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
        for _shard, sample in read_samples(self.urls[worker::workers], warn_skipped):
            items.append(eval_arrays(sample, self.model_cfg))
            metas.append({"id": sample.id, "boxes": sample.boxes,
                          "box_format": sample.meta.box_format})
            if len(items) == self.batch_size:
                yield collate(items), metas
                items, metas = [], []
        if items:
            yield collate(items), metas


def val_loader(urls: list[str], model_cfg: ModelConfig, data: DataConfig,
               rank: int, world: int) -> DataLoader:
    stream = ValStream(urls, model_cfg, data.val_batch_size, rank, world)
    workers = min(data.workers, max(1, len(stream.urls)))
    return BatchLoader(stream, workers if data.workers else 0, data.loader_timeout_s)

