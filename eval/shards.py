"""Read test shards sample by sample, reporting (not hiding) corrupt shards and samples.

A WebDataset shard is a plain tar whose members ``<key>.<ext>`` are grouped by key. This
reader walks the tar itself so that a truncated or corrupt shard is reported with its name
and the number of samples read before the damage, and the other shards still count.
"""
from __future__ import annotations

import glob
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from htf.sample import ClipSample, decode_sample


@dataclass
class Failure:
    shard: str
    key: str          # sample key, or "" for a whole-shard failure
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"shard": self.shard, "key": self.key, "reason": self.reason}


def _brace_expand(pattern: str) -> list[str]:
    """Expand ``{000000..000009}`` and ``{a,b}`` (the WebDataset URL notation)."""
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    end = pattern.find("}", start)
    if end < 0:
        raise ValueError(f"unbalanced '{{' in shard pattern {pattern!r}")
    body, head, tail = pattern[start + 1:end], pattern[:start], pattern[end + 1:]
    if ".." in body:
        lo, hi = body.split("..", 1)
        width = len(lo)
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        items = body.split(",")
    return [p for item in items for p in _brace_expand(head + item + tail)]


def expand_shards(shards: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard paths from a glob, a brace pattern, a folder, or a list of those; sorted, no
    duplicates. Raises when nothing matches, naming the pattern."""
    patterns = [shards] if isinstance(shards, (str, os.PathLike)) else list(shards)
    found: list[str] = []
    for pat in patterns:
        pat = str(pat)
        if os.path.isdir(pat):
            hits = sorted(glob.glob(os.path.join(pat, "*.tar")))
        else:
            hits = []
            for p in _brace_expand(pat):
                hits.extend(sorted(glob.glob(p)) if any(c in p for c in "*?[") else
                            ([p] if os.path.exists(p) else []))
        if not hits:
            raise FileNotFoundError(f"no shard matches {pat!r}")
        found.extend(hits)
    return list(dict.fromkeys(found))


def _split_member(name: str) -> tuple[str, str]:
    base = os.path.basename(name)
    dirname = os.path.dirname(name)
    key, _, ext = base.partition(".")
    return (f"{dirname}/{key}" if dirname else key), ext


def iter_raw(shard: str, failures: list[Failure]) -> Iterator[dict]:
    """Raw sample dicts of one shard; a damaged tar adds a Failure and ends the shard."""
    name = Path(shard).name
    current: dict | None = None
    count = 0
    try:
        with tarfile.open(shard, mode="r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _split_member(member.name)
                if not ext:
                    continue
                if current is not None and current["__key__"] != key:
                    count += 1
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key, "__url__": shard}
                data = tar.extractfile(member)
                current[ext] = data.read() if data is not None else b""
    except (tarfile.TarError, EOFError, OSError, ValueError) as err:
        failures.append(Failure(name, "", f"corrupt shard after {count} samples: "
                                          f"{type(err).__name__}: {err}"))
        return  # the partial sample at the damage is not trusted
    if current is not None:
        yield current


def iter_samples(shards: Sequence[str], failures: list[Failure]) -> Iterator[tuple[str, ClipSample]]:
    """(shard name, ClipSample) for every readable sample; unreadable ones become Failures."""
    for shard in shards:
        name = Path(shard).name
        for raw in iter_raw(shard, failures):
            try:
                sample = decode_sample(raw)
            except Exception as err:  # a corrupt member: name it and go on
                failures.append(Failure(name, raw.get("__key__", "?"), str(err)))
                continue
            yield name, sample
