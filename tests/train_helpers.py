"""Synthetic shards for the trainer's tests, written with htf.sample.encode_sample."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import webdataset as wds

from htf.sample import ClipSample, SampleMeta, encode_sample

PIPELINE = {"frames": {"short_side": 64}, "flow": {"method": "dis", "encoding": "signed"},
            "audio": {"feature": "logmel", "n_mels": 16}}


def synthetic_sample(i: int, size: int = 64, spec_shape=(16, 40), seed: int = 0,
                     boxes: bool = True) -> ClipSample:
    rng = np.random.default_rng([seed, i])
    frame = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    flow = rng.normal(0, 2, (2, size, size)).astype(np.float32)
    spec = rng.normal(0, 1, spec_shape).astype(np.float32)
    meta = SampleMeta(source="test", pipeline=PIPELINE, box_format="vggss")
    if boxes:
        x0, y0 = rng.uniform(0, 0.4, 2)
        meta.boxes = [[[float(x0), float(y0), float(x0 + 0.55), float(y0 + 0.55)]]]
    return ClipSample(id=f"clip{seed}_{i:05d}", frame=frame, flow=flow, spec=spec, meta=meta)


def write_shards(folder: Path, prefix: str, counts: list[int], seed: int = 0, **kw) -> str:
    """Shards ``prefix-000000.tar``... with the given sample counts; returns a brace pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    i = 0
    for s, count in enumerate(counts):
        with wds.TarWriter(str(folder / f"{prefix}-{s:06d}.tar")) as sink:
            for _ in range(count):
                sink.write(encode_sample(synthetic_sample(i, seed=seed, **kw)))
                i += 1
    return str(folder / f"{prefix}-{{000000..{len(counts) - 1:06d}}}.tar")
