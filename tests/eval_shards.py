"""Tiny test shards for the evaluator tests: the sounding object moves, the rest is still."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import webdataset as wds

from htf.sample import ClipSample, SampleMeta, encode_sample

SETTINGS = {"frames": {"short_side": 64}, "flow": {"method": "dis", "encoding": "signed"},
            "audio": {"feature": "logmel", "sample_rate": 16000}}


def make_clip(clip_id: str, box: list[float], seed: int = 0, size: int = 64,
              boxes: bool = True, box_format: str = "vggss") -> ClipSample:
    """A frame with a bright object in ``box`` whose pixels (only) move."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    x1, y1, x2, y2 = (int(round(v * size)) for v in box)
    frame[y1:y2, x1:x2] = (200, 80, 40)
    flow = np.zeros((2, size, size), np.float32)
    flow[0, y1:y2, x1:x2] = 3.0
    spec = rng.normal(size=(16, 20)).astype(np.float32)
    meta = SampleMeta(id=clip_id, source="test", box_format=box_format, pipeline=SETTINGS,
                      boxes=[[list(box)]] if boxes else None)
    return ClipSample(clip_id, frame, flow, spec, meta)


def write_shard(path: Path, clips: list[ClipSample]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as sink:
        for clip in clips:
            sink.write(encode_sample(clip))
    return path


def standard_clips(n: int = 6, prefix: str = "clip") -> list[ClipSample]:
    """n clips with large boxes (>= 36 % of the frame) at varied places."""
    boxes = [[0.0, 0.0, 0.6, 0.7], [0.4, 0.3, 1.0, 1.0], [0.1, 0.2, 0.8, 0.8],
             [0.0, 0.4, 0.7, 1.0], [0.3, 0.0, 1.0, 0.6], [0.2, 0.1, 0.9, 0.9]]
    return [make_clip(f"{prefix}{i:03d}", boxes[i % len(boxes)], seed=i) for i in range(n)]


def corrupt_member(path: Path, key: str, ext: str = "jpg") -> Path:
    """Rewrite a shard with one member's bytes replaced by garbage."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar if m.isfile()]
    with tarfile.open(path, "w") as tar:
        for m, data in members:
            if m.name == f"{key}.{ext}":
                data = b"not an image"
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    return path
