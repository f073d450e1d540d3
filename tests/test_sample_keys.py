"""Shard keys: one per distinct clip id, reversible, short enough for a tar name."""
from __future__ import annotations

import numpy as np
import pytest

from htf.sample import MAX_KEY_LENGTH, ClipSample, key_to_id, sample_key
import tarfile

from pipeline.pack import PartWriter, assemble_shard, sample_members

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


def test_a_shard_keeps_one_sample_per_key_and_names_the_one_left_out(tmp_path):
    part = PartWriter(tmp_path / "part-0")
    for _ in range(2):
        key, members = sample_members(_sample("a.b"))
        part.append("a.b", key, members)
    part.commit()
    written, dropped = assemble_shard(tmp_path / "s-000000.tar", [(part.path, part.samples)])
    assert written == 1 and dropped == [("a.b", sample_key("a.b"))]
    with tarfile.open(tmp_path / "s-000000.tar") as tar:
        names = tar.getnames()
    assert len(names) == len(set(names)) == 4       # jpg, flow.npy, spec.npy, json of one sample


def test_an_id_of_exactly_the_maximum_length_is_its_own_key():
    assert sample_key("a" * MAX_KEY_LENGTH) == "a" * MAX_KEY_LENGTH


# ----------------------------------------------------------------- decode_sample refusals

def _raw(clip_id: str = "k.1") -> dict:
    from htf.sample import encode_sample

    return encode_sample(_sample(clip_id))


def test_sample_without_an_id_in_its_json_takes_it_from_the_key():
    import json

    from htf.sample import decode_sample

    raw = _raw("k.1")
    meta = json.loads(raw["json"])
    del meta["id"]
    raw["json"] = json.dumps(meta).encode()
    assert decode_sample(raw).id == "k.1"
    hashed = _raw("x" * 300)
    hashed["json"] = b"{}"
    assert decode_sample(hashed).id == hashed["__key__"]       # a hashed key stands for itself


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw.pop("spec.npy"), "missing fields"),
    (lambda raw: raw.__setitem__("json", b"[1, 2]"), "not an object"),
    (lambda raw: raw.__setitem__("json", b"{\"id\": "), "unreadable json"),
])
def test_damaged_sample_is_refused_by_key(damage, message):
    from htf.sample import decode_sample

    raw = _raw()
    damage(raw)
    with pytest.raises(ValueError, match=message):
        decode_sample(raw)


def _with_arrays(flow: np.ndarray, spec: np.ndarray) -> dict:
    from htf.sample import _npy_bytes

    raw = _raw()
    raw["flow.npy"], raw["spec.npy"] = _npy_bytes(flow.astype(np.float16)), _npy_bytes(spec.astype(np.float16))
    return raw


def test_flow_of_another_size_than_the_frame_is_refused():
    from htf.sample import decode_sample

    with pytest.raises(ValueError, match="flow.npy has shape"):
        decode_sample(_with_arrays(np.zeros((2, 8, 8), np.float32), np.zeros((4, 4), np.float32)))


def test_a_one_band_spectrogram_is_a_valid_sample():
    from htf.sample import decode_sample

    sample = decode_sample(_with_arrays(np.zeros((2, 16, 16), np.float32), np.ones((1, 5), np.float32)))
    assert sample.spec.shape == (1, 5)


def test_a_spectrogram_that_is_not_two_dimensional_is_refused():
    from htf.sample import decode_sample

    with pytest.raises(ValueError, match="spec.npy has shape"):
        decode_sample(_with_arrays(np.zeros((2, 16, 16), np.float32), np.ones((1, 4, 5), np.float32)))
