"""Clip lists and clip ids, read one way by the pipeline and the evaluator.

A list is a txt file (one id a line, taken whole: ids may contain spaces) or a csv (id in column 0); a header row
('id', 'file', ...), blank lines and '#' comments are skipped. VGGSound ids name a YouTube
id and a start second: 'YTID_19' and 'YTID_000019' are the same clip ('YTID_000019').
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

_HEADER_NAMES = {"id", "file", "filename", "video", "video_id", "ytid", "youtube_id", "name"}
_VGGSOUND_ID = re.compile(r"^(?P<ytid>[A-Za-z0-9_-]{11})_(?P<sec>\d+)$")


def normalise_id(raw_id: str, id_style: str) -> str:
    """Clip id as the pipeline uses it. VGGSound: 'YTID_19' and 'YTID_000019' -> 'YTID_000019'."""
    clip_id = raw_id.strip()
    if id_style == "vggsound":
        m = _VGGSOUND_ID.match(clip_id)
        if m:
            return f"{m['ytid']}_{int(m['sec']):06d}"
    return clip_id


def read_split_list(path: str | Path, id_style: str = "generic") -> list[str]:
    """Ids from a txt (one per line) or csv (id in column 0) list, in file order, de-duplicated.

    A csv header row ('id', 'file', ...) is skipped; blank lines and '#' comments too.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}")
    rows: list[str] = []
    with path.open(newline="") as f:
        if path.suffix.lower() == ".csv":
            rows = [r[0] for r in csv.reader(f) if r and r[0].strip()]
        else:
            # One id a line, taken whole: ids may contain spaces (file names do).
            rows = [line.strip() for line in f if line.strip()]
    rows = [r.strip() for r in rows if not r.strip().startswith("#")]
    if rows and rows[0].lower() in _HEADER_NAMES:
        rows = rows[1:]
    seen: dict[str, None] = {}
    for r in rows:
        seen.setdefault(normalise_id(r, id_style), None)
    return list(seen)
