"""Shard streaming: endless equal batches per rank, seeded, split by rank; validation once."""
from __future__ import annotations

import itertools
import json
import random
import threading
import time

import pytest
import torch

from tests.train_helpers import write_shards
from htf.model_config import ModelConfig
from train.config import AugmentConfig, DataConfig
from htf.shards import count_samples, expand_shards
from train.data import TrainStream, ValStream, _SlotProgress, first_sample

MODEL = ModelConfig(width=8, image_size=56, audio_frames=32)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    return folder, write_shards(folder, "train", [5, 4, 3, 1])      # 13 samples, odd


def _stream(pattern, rank=0, world=1, seed=0, batch=4):
    data = DataConfig(batch_size=batch, workers=0, shuffle_buffer=6)
    return TrainStream(expand_shards(pattern), MODEL, AugmentConfig(), data, rank, world, seed)


def test_expand_shards_names_a_missing_shard(shards):
    folder, _ = shards
    with pytest.raises(FileNotFoundError, match="train-000004.tar.*6 missing"):
        expand_shards(str(folder / "train-{000000..000009}.tar"))


def test_count_samples_reads_tars_or_sizes_json(shards):
    folder, pattern = shards
    urls = expand_shards(pattern)
    assert count_samples(urls) == 13
    (folder / "sizes.json").write_text(json.dumps({"train-000000.tar": 50}))
    try:
        assert count_samples(urls) == 50 + 4 + 3 + 1
    finally:
        (folder / "sizes.json").unlink()


def test_train_stream_never_ends_and_yields_full_batches(shards):
    _, pattern = shards
    batches = list(itertools.islice(iter(_stream(pattern)), 10))     # 40 samples > 13 stored
    assert all(b["image"].shape == (4, 3, 56, 56) and b["flow"].shape == (4, 2, 56, 56)
               and b["spec"].shape == (4, 1, 16, 32) for b in batches)


def test_train_stream_is_reproducible_and_differs_by_rank_and_epoch(shards):
    _, pattern = shards
    first = lambda s: next(iter(s))["image"]   # noqa: E731
    torch.testing.assert_close(first(_stream(pattern, seed=3)), first(_stream(pattern, seed=3)))
    assert not torch.equal(first(_stream(pattern, seed=3)), first(_stream(pattern, rank=1, world=2, seed=3)))
    other = _stream(pattern, seed=3)
    other.set_epoch(1, 10)
    assert not torch.equal(first(_stream(pattern, seed=3)), first(other))


def test_ranks_draw_from_disjoint_shards_when_there_are_enough(shards):
    _, pattern = shards
    urls = expand_shards(pattern)
    s0, s1 = _stream(pattern, 0, 2), _stream(pattern, 1, 2)
    seen0, seen1 = ({raw["__url__"] for raw in itertools.islice(s._raw_samples(
        s._subset(0, 1), random.Random(0), _SlotProgress(urls)), 50)} for s in (s0, s1))
    assert seen0 == {urls[0], urls[2]} and seen1 == {urls[1], urls[3]}


def test_validation_streams_cover_every_sample_once_across_ranks(shards):
    _, pattern = shards
    urls = expand_shards(pattern)
    ids = []
    for rank in range(3):
        for _, metas in ValStream(urls, MODEL, 4, rank, 3):
            ids += [m["id"] for m in metas]
    assert len(ids) == 13 and len(set(ids)) == 13


def test_first_sample_gives_the_recorded_pipeline_settings(shards):
    _, pattern = shards
    assert first_sample(expand_shards(pattern)).meta.pipeline["flow"]["encoding"] == "signed"


def _write_undecodable_shard(path, n=3):
    """A well-formed tar whose samples all have a flow.npy that is not an array."""
    import webdataset as wds
    from htf.sample import encode_sample
    from tests.train_helpers import synthetic_sample

    with wds.TarWriter(str(path)) as sink:
        for i in range(n):
            raw = encode_sample(synthetic_sample(i))
            raw["flow.npy"] = b"not an array"
            sink.write(raw)


def test_train_stream_stops_with_an_error_naming_shards_that_give_no_sample(tmp_path):
    from train.data import NoUsableSamplesError

    (tmp_path / "train-000000.tar").write_bytes(b"\0" * 10)     # damaged
    (tmp_path / "train-000001.tar").write_bytes(b"")             # empty
    with pytest.raises(NoUsableSamplesError, match="train-000000.tar, train-000001.tar"):
        next(iter(_stream(str(tmp_path / "train-*.tar"))))


def test_train_stream_stops_when_no_sample_can_be_decoded(tmp_path, monkeypatch):
    import train.data
    from train.data import NoUsableSamplesError

    monkeypatch.setattr(train.data, "UNDECODABLE_LIMIT", 20)
    _write_undecodable_shard(tmp_path / "train-000000.tar")
    with pytest.raises(NoUsableSamplesError, match="none of the first 20 training samples"):
        next(iter(_stream(str(tmp_path / "train-*.tar"))))


def test_train_stream_goes_on_past_damaged_shards_while_one_gives_samples(tmp_path, capsys):
    write_shards(tmp_path, "train", [3])
    (tmp_path / "train-000001.tar").write_bytes(b"\0" * 10)
    _write_undecodable_shard(tmp_path / "train-000002.tar")
    batches = list(itertools.islice(iter(_stream(str(tmp_path / "train-*.tar"))), 5))
    assert len(batches) == 5
    warnings = capsys.readouterr().out
    assert "shard train-000001.tar" in warnings and "shard train-000002.tar, sample" in warnings


def test_a_loader_worker_reports_no_usable_samples_without_its_traceback(tmp_path):
    from train.data import NoUsableSamplesError, train_loader

    (tmp_path / "train-000000.tar").write_bytes(b"\0" * 10)
    stream = _stream(str(tmp_path / "train-*.tar"))
    with pytest.raises(NoUsableSamplesError) as caught:
        next(iter(train_loader(stream, DataConfig(batch_size=4, workers=1))))
    assert str(caught.value).startswith("no training shard gives a sample: train-000000.tar")
    assert "Traceback" not in str(caught.value)


# A lock that another thread of the trainer holds while loader workers start (as TensorBoard's
# writer thread or a queue feeder may): a worker forked from the trainer copies it held.
_LOCK_HELD_ELSEWHERE = threading.Lock()


class _TriesTheLock(torch.utils.data.IterableDataset):
    def __iter__(self):
        acquired = _LOCK_HELD_ELSEWHERE.acquire(timeout=3)
        yield torch.tensor(acquired)


class _SendsNothingFor(torch.utils.data.IterableDataset):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __iter__(self):
        time.sleep(self.seconds)
        yield torch.tensor(1)


def test_loader_workers_do_not_inherit_a_lock_another_thread_holds():
    from train.data import BatchLoader

    release = threading.Event()
    holder = threading.Thread(target=lambda: (_LOCK_HELD_ELSEWHERE.acquire(), release.wait(),
                                              _LOCK_HELD_ELSEWHERE.release()))
    holder.start()
    try:
        got = list(BatchLoader(_TriesTheLock(), workers=1, timeout_s=60))
    finally:
        release.set()
        holder.join()
    assert [bool(x) for x in got] == [True]


def test_a_worker_that_sends_no_batch_in_time_stops_with_an_error_naming_the_setting():
    from train.data import BatchLoader, StalledLoaderError

    with pytest.raises(StalledLoaderError, match=r"data\.loader_timeout_s"):
        list(BatchLoader(_SendsNothingFor(10.0), workers=1, timeout_s=1.0))


def test_loader_workers_give_the_batches_the_stream_gives_in_process(shards):
    from train.data import train_loader

    folder, _ = shards
    in_process = list(itertools.islice(iter(_stream(str(folder / "train-*.tar"))), 3))
    stream = _stream(str(folder / "train-*.tar"))
    from_worker = list(itertools.islice(iter(train_loader(stream, DataConfig(batch_size=4, workers=1))), 3))
    assert len(from_worker) == 3
    for a, b in zip(in_process, from_worker):
        assert all(torch.equal(x, y) if torch.is_tensor(x) else x == y for x, y in zip(a, b))
