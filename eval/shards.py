"""Read test shards sample by sample, reporting (not hiding) corrupt shards and samples.

A WebDataset shard is a plain tar whose members ``<key>.<ext>`` are grouped by key. Shards
may be local, behind fsspec URLs or ``pipe:`` commands (htf.shards expands and opens them);
a truncated or corrupt shard is reported with its name and the number of samples read
before the damage, and the other shards still count.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass
from typing import Iterator, Sequence

from htf.sample import ClipSample, decode_sample
from htf.shards import iter_raw_samples, shard_name



@dataclass
class Failure:
    shard: str
    key: str          # sample key, or "" for a whole-shard failure
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"shard": self.shard, "key": self.key, "reason": self.reason}


def iter_raw(shard: str, failures: list[Failure]) -> Iterator[dict]:
    """Raw sample dicts of one shard; a damaged or unreadable shard adds a Failure and ends."""
    count = 0
    try:
        for raw in iter_raw_samples(shard):
            count += 1
            yield raw
    except (tarfile.TarError, EOFError, OSError, ValueError) as err:
        failures.append(Failure(shard_name(shard), "", f"corrupt shard after {count} samples: "
                                                       f"{type(err).__name__}: {err}"))


def iter_samples(shards: Sequence[str], failures: list[Failure]) -> Iterator[tuple[str, ClipSample]]:
    """(shard name, ClipSample) for every readable sample; unreadable ones become Failures."""
    for shard in shards:
        name = shard_name(shard)
        for raw in iter_raw(shard, failures):
            try:
                sample = decode_sample(raw)
            except Exception as err:  # a corrupt member: name it and go on
                failures.append(Failure(name, raw.get("__key__", "?"), str(err)))
                continue
            yield name, sample
