"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

The content goes to a hidden ``.<name>.tmp`` in the same folder (same file system: the
rename is atomic), is synced to disk and renamed over the target; the folder is synced so
the rename survives a power cut. On any error the temporary file goes, the target stays.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator


def temp_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def replace_into_place(tmp: Path, path: str | os.PathLike) -> None:
    """Rename a complete, synced ``tmp`` onto ``path`` and make the rename durable."""
    os.replace(tmp, path)
    dir_fd = os.open(Path(path).parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield the temporary path to write; when the block succeeds it replaces ``path``.
    ``durable=False`` skips the syncs, for live status files that a power cut may lose."""
    tmp = temp_path(path)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        replace_into_place(tmp, path)
    else:
        os.replace(tmp, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> Path:
    with atomic_path(path, durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode(), durable)


def read_json_lines(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """The lines of a JSON-lines file that are JSON objects, and how many lines are not (cut by
    a kill during an append, edited by hand); blank lines count as neither, a missing file
    has none."""
    path = Path(path)
    if not path.exists():
        return [], 0
    records, damaged = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            damaged += 1
    return records, damaged


def set_aside(path: str | os.PathLike) -> Path:
    """Rename a damaged file to ``<name>.damaged`` (``.damaged-2``, ... when taken), so a new
    one can be written and nothing that was in the old one is lost."""
    path = Path(path)
    target, n = path.with_name(f"{path.name}.damaged"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{n}")
    os.replace(path, target)
    return target


def atomic_write_json(path: str | os.PathLike, obj: Any, *, durable: bool = True, **dumps_args: Any) -> Path:
    """``json.dumps(obj, **dumps_args)`` and a final newline."""
    return atomic_write_text(path, json.dumps(obj, **dumps_args) + "\n", durable)
