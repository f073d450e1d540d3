"""Fuzzing the readers (seeded, bounded): shards cut short or with flipped bits, annotation
and keyframe files with wrong types or cut short. Every case ends in a clear error (an
exception type the commands turn into one ``error:`` line) or a failure record, never an
unexpected exception; readers never change what they read."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from htf.shards import read_samples
from htf.sample import ClipSample
from pipeline.annotations import load_annotations, load_keyframes
from tests.train_helpers import write_shards
from htf.shards import ShardReadError, count_samples
from train.data import ShardSettingsError, ValStream, check_shard_settings
from htf.model_config import ModelConfig

N_SHARD_CASES = 24
N_JSON_CASES = 60


@pytest.fixture(scope="module")
def good_shard(tmp_path_factory) -> bytes:
    folder = tmp_path_factory.mktemp("fuzz_src")
    write_shards(folder, "s", [3])
    return (folder / "s-000000.tar").read_bytes()


def _damage(data: bytes, rng: random.Random) -> bytes:
    """Cut the tar short, flip bits, or both."""
    out = bytearray(data)
    kind = rng.choice(["cut", "flip", "both"])
    if kind in ("flip", "both"):
        for _ in range(rng.randint(1, 40)):
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
    if kind in ("cut", "both"):
        out = out[:rng.randrange(1, len(out))]
    return bytes(out)


@pytest.fixture(scope="module")
def damaged_shards(good_shard, tmp_path_factory) -> list[tuple[Path, bytes]]:
    folder = tmp_path_factory.mktemp("fuzz_shards")
    rng = random.Random(2026)
    cases = []
    for i in range(N_SHARD_CASES):
        data = _damage(good_shard, rng)
        path = folder / f"case{i:02d}-000000.tar"
        path.write_bytes(data)
        cases.append((path, data))
    return cases


def test_sample_reader_records_damage_and_yields_only_whole_samples(damaged_shards):
    for path, data in damaged_shards:
        failures: list = []
        samples = [s for _, s in read_samples([str(path)], failures.append)]
        assert all(isinstance(s, ClipSample) for s in samples)
        assert len(samples) + len(failures) >= 1, path.name     # nothing vanishes without a word
        assert path.read_bytes() == data


def test_validation_stream_skips_damaged_samples_without_raising(damaged_shards, capsys):
    cfg = ModelConfig(width=8, image_size=56, audio_frames=16)
    for path, _ in damaged_shards:
        for batch, metas in ValStream([str(path)], cfg, batch_size=2, rank=0, world=1):
            assert batch["image"].shape[0] == len(metas)


def test_trainer_shard_checks_give_a_clear_error_or_an_answer(damaged_shards, good_shard, tmp_path):
    good = tmp_path / "good-000000.tar"
    good.write_bytes(good_shard)
    for path, _ in damaged_shards:
        for check in (lambda: count_samples([str(path)]),
                      lambda: check_shard_settings([str(good), str(path)], {})):
            try:
                check()
            except (ShardSettingsError, ShardReadError) as err:
                assert str(path) in str(err)


def _wrong_value(rng: random.Random, depth: int = 0):
    """A JSON value of a random type (the types annotation files get wrong)."""
    kinds = ["null", "bool", "int", "float", "str", "list", "dict"] if depth < 3 else ["null", "int", "str"]
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-300, 300)
    if kind == "float":
        return rng.choice([rng.uniform(-2, 300), float("nan"), float("inf"), 1e308])
    if kind == "str":
        return rng.choice(["", "0.5", "x", "[1,2,3,4]", "nan"])
    if kind == "list":
        return [_wrong_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {rng.choice(["file", "bbox", "id", "a"]): _wrong_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _annotation_document(rng: random.Random):
    shape = rng.choice(["vggss", "flickr", "anything"])
    if shape == "vggss":
        return [rng.choice([{"file": _wrong_value(rng), "bbox": _wrong_value(rng)},
                            {"file": f"clip{i}", "bbox": _wrong_value(rng)}, _wrong_value(rng)])
                for i in range(rng.randint(0, 6))]
    if shape == "flickr":
        return {f"{i}": _wrong_value(rng) for i in range(rng.randint(0, 6))}
    return _wrong_value(rng)


def test_annotation_files_with_wrong_types_load_or_fail_naming_the_file(tmp_path):
    rng = random.Random(7)
    for i in range(N_JSON_CASES):
        path = tmp_path / f"ann{i}.json"
        text = json.dumps(_annotation_document(rng))
        if rng.random() < 0.25:
            text = text[:rng.randrange(len(text) + 1)]           # cut short
        path.write_text(text)
        try:
            ann = load_annotations(path)
        except ValueError as err:
            assert str(path) in str(err)
            continue
        for clip_id, annotators in ann.boxes.items():
            for boxes in annotators:
                for box in boxes:
                    assert len(box) == 4 and all(0.0 <= v <= 1.0 for v in box), (clip_id, box)
                    assert box[0] < box[2] and box[1] < box[3]


def test_keyframe_files_with_wrong_types_load_or_fail_naming_the_file(tmp_path):
    rng = random.Random(8)
    for i in range(N_JSON_CASES):
        path = tmp_path / f"kf{i}.json"
        doc = {f"c{j}": _wrong_value(rng) for j in range(rng.randint(0, 4))} if rng.random() < 0.8 \
            else _wrong_value(rng)
        path.write_text(json.dumps(doc))
        try:
            frames = load_keyframes(path)
        except ValueError as err:
            assert str(path) in str(err)
            continue
        assert all(isinstance(v, int) and v >= 0 for entry in frames.values() for v in entry.values())
