"""Shard keys: one per distinct clip id, reversible, short enough for a tar name."""
from __future__ import annotations

import numpy as np
import pytest

from htf.sample import MAX_KEY_LENGTH, ClipSample, key_to_id, sample_key
from pipeline.pack import ShardWriter

AWKWARD = ["k.1", "k_1", "k%2E1", "vid.part1", "a/b", "with space", "née", "x" * 300,
           "x" * 299 + "y", "dots...", "-lead", "%", "~tilde", "caf\udce9"]   # last: a non-UTF-8 byte


def test_plain_ids_are_their_own_key():
    assert sample_key("abc_000019") == "abc_000019"
    assert sample_key("4588269123") == "4588269123"


def test_distinct_ids_never_share_a_key():
    keys = [sample_key(i) for i in AWKWARD]
    assert len(set(keys)) == len(AWKWARD)


@pytest.mark.parametrize("clip_id", AWKWARD)
def test_key_has_no_dot_or_slash_and_fits_a_tar_name(clip_id):
    key = sample_key(clip_id)
    assert "." not in key and "/" not in key
    assert len(key.encode()) <= MAX_KEY_LENGTH


@pytest.mark.parametrize("clip_id", [i for i in AWKWARD if len(sample_key(i)) < MAX_KEY_LENGTH])
def test_short_key_turns_back_into_its_id(clip_id):
    assert key_to_id(sample_key(clip_id)) == clip_id


def test_long_key_says_its_id_is_in_the_json():
    assert key_to_id(sample_key("x" * 300)) is None


def test_empty_id_is_refused():
    with pytest.raises(ValueError):
        sample_key("")


def _sample(clip_id: str) -> ClipSample:
    return ClipSample(clip_id, np.zeros((16, 16, 3), np.uint8), np.zeros((2, 16, 16), np.float32),
                      np.zeros((4, 4), np.float32), {})


def test_shard_writer_refuses_a_second_sample_with_the_same_key(tmp_path):
    writer = ShardWriter(tmp_path / "s-000000.tar")
    writer.write(_sample("a.b"))
    with pytest.raises(ValueError, match="duplicate sample key"):
        writer.write(_sample("a.b"))
    writer.abort()
