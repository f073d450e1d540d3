"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

The new content goes to a hidden ``.<name>.tmp`` in the same folder (same file system, so
the rename is atomic), is flushed to disk, then renamed over the target; the folder is
synced so the rename itself survives a power cut. On any error the temporary file is
removed and the target is left as it was.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name ``path`` is written under before the rename."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def replace_into_place(tmp: Path, path: str | os.PathLike) -> None:
    """Rename a complete, synced ``tmp`` onto ``path`` and make the rename durable."""
    path = Path(path)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield the temporary path to write; when the block succeeds it replaces ``path``."""
    tmp = temp_path(path)
    try:
        yield tmp
        fsync_file(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    replace_into_place(tmp, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps_args: Any) -> Path:
    """``json.dumps(obj, **dumps_args)`` plus a final newline."""
    return atomic_write_text(path, json.dumps(obj, **dumps_args) + "\n")
