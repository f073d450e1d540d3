"""Checkpoints: atomic writes, RNG states, resume discovery.

A checkpoint is written atomically (``htf.io``: a temporary file in the same folder, flushed
to disk, then renamed over the old file): a crash or ``kill -9`` in the middle leaves the previous checkpoint
intact. Everything in it loads with ``torch.load(weights_only=True)`` (no pickled objects).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from htf.interrupts import ctrl_c_deferred
from htf.io import atomic_path


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` whole or not at all. A Ctrl-C meanwhile waits for the write
    to finish: torch.save cut by one raises a RuntimeError ("unexpected pos"), not a
    KeyboardInterrupt, and the run would end as failed instead of interrupted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with ctrl_c_deferred(), atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)
    return path


def load(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:     # torch's own message is pages of advice on unpickling
        raise RuntimeError(f"cannot read checkpoint {path} ({type(err).__name__}): it is damaged or not "
                           f"a checkpoint; move it away and resume from an earlier copy, or start a "
                           f"new --output") from None


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU + CUDA) generator states, as plain lists and tensors."""
    np_state = np.random.get_state()
    state = {"python": list(random.getstate()[1]) + [random.getstate()[2]],
             "python_version": random.getstate()[0],
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((state["python_version"], tuple(py[:-1]), py[-1]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(output: str | os.PathLike) -> Path:
    return Path(output) / "checkpoints"


def latest_path(output: str | os.PathLike) -> Path:
    return checkpoint_dir(output) / "latest.pt"


def best_path(output: str | os.PathLike) -> Path:
    return checkpoint_dir(output) / "best.pt"


class RunSync:
    """Copies a run folder's checkpoints, metrics, config and rank logs to a bucket URL
    (``train.sync_url``) after each checkpoint: only files changed since the last copy.
    A failed copy is a warning, never the end of training: the local folder is complete."""

    PATTERNS = ("checkpoints/*.pt", "metrics.jsonl", "train.log", "config.yaml", "logs/*.json")

    def __init__(self, output: Path, url: str) -> None:
        self.output, self.url = output, url.rstrip("/")
        self.sent: dict[str, tuple[int, int]] = {}

    def __call__(self) -> int:
        from htf.shards import filesystem

        try:
            fs, root = filesystem(self.url)
            copied = 0
            for path in sorted(p for pattern in self.PATTERNS for p in self.output.glob(pattern)):
                rel = path.relative_to(self.output).as_posix()
                stamp = (path.stat().st_size, path.stat().st_mtime_ns)
                if self.sent.get(rel) != stamp:
                    fs.put_file(str(path), f"{root.rstrip('/')}/{rel}")
                    self.sent[rel] = stamp
                    copied += 1
            return copied
        except Exception as err:  # noqa: BLE001  (network, credentials: warn and train on)
            print(f"warning: copying {self.output} to {self.url} failed ({type(err).__name__}: {err}); "
                  f"will retry after the next checkpoint", flush=True)
            return 0
