"""Shard streaming: endless equal batches per rank, seeded, split by rank; validation once."""
from __future__ import annotations

import itertools
import json
import random

import pytest
import torch

from tests.train_helpers import write_shards
from htf.model_config import ModelConfig
from train.config import AugmentConfig, DataConfig
from train.data import TrainStream, ValStream, count_samples, expand_urls, first_sample

MODEL = ModelConfig(width=8, image_size=56, audio_frames=32)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    return folder, write_shards(folder, "train", [5, 4, 3, 1])      # 13 samples, odd


def _stream(pattern, rank=0, world=1, seed=0, batch=4):
    data = DataConfig(batch_size=batch, workers=0, shuffle_buffer=6)
    return TrainStream(expand_urls(pattern), MODEL, AugmentConfig(), data, rank, world, seed)


def test_expand_urls_names_a_missing_shard(shards):
    folder, _ = shards
    with pytest.raises(FileNotFoundError, match="train-000004.tar.*6 missing"):
        expand_urls(str(folder / "train-{000000..000009}.tar"))


def test_count_samples_reads_tars_or_sizes_json(shards):
    folder, pattern = shards
    urls = expand_urls(pattern)
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
    urls = expand_urls(pattern)
    s0, s1 = _stream(pattern, 0, 2), _stream(pattern, 1, 2)
    seen0 = {d["url"] for d in itertools.islice(s0._shards(0, 1, random.Random(0)), 50)}
    seen1 = {d["url"] for d in itertools.islice(s1._shards(0, 1, random.Random(0)), 50)}
    assert seen0 == {urls[0], urls[2]} and seen1 == {urls[1], urls[3]}


def test_validation_streams_cover_every_sample_once_across_ranks(shards):
    _, pattern = shards
    urls = expand_urls(pattern)
    ids = []
    for rank in range(3):
        for _, metas in ValStream(urls, MODEL, 4, rank, 3):
            ids += [m["id"] for m in metas]
    assert len(ids) == 13 and len(set(ids)) == 13


def test_first_sample_gives_the_recorded_pipeline_settings(shards):
    _, pattern = shards
    assert first_sample(expand_urls(pattern)).meta["pipeline"]["flow"]["encoding"] == "signed"
