"""Pipeline output to a bucket: run in a local staging folder, then publish to the URL.

Shards are written, resumed and checked on a local disk exactly as for a local ``--output``
(temporary files, atomic renames, the flow cache); publishing then copies what changed
since the last publish to ``s3://...`` / ``gs://...``: shards first, ``sizes.json`` last (a
reader that finds a shard in sizes.json finds the shard), and removes the bucket's shards
of the run's prefix that the run no longer produced. The staging folder stays, so a
rerun resumes and publishes only what changed.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from htf.io import atomic_write_json
from htf.shards import filesystem, scheme

MANIFEST = ".published.json"       # name -> [size, mtime_ns] at the last publish, per URL


def is_remote(output: str) -> bool:
    """An object-store URL (file:// is a local folder)."""
    return scheme(output) not in ("", "file")


def local_output(output: str) -> str:
    """file:///a/b -> /a/b; anything else unchanged."""
    return output[len("file://"):] if scheme(output) == "file" else output


def default_staging(url: str) -> Path:
    """A per-URL folder under the user's cache: the same URL resumes in the same place."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "htf" / "pipeline-staging" / hashlib.sha1(url.encode()).hexdigest()[:16]


def _publishable(folder: Path) -> list[Path]:
    """Files of the output folder to publish: not the flow cache, not temporary files."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def publish(folder: Path, url: str, prefix: str) -> dict[str, int]:
    """Copy ``folder``'s outputs to ``url`` (see module docs); returns counts."""
    fs, root = filesystem(url)
    root = root.rstrip("/")
    manifest_path = folder / MANIFEST
    try:
        manifests: dict[str, dict[str, list[int]]] = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifests = {}
    sent = manifests.get(url, {})
    files = _publishable(folder)
    order = [p for p in files if p.suffix == ".tar"] + [p for p in files if p.suffix != ".tar" and p.name != "sizes.json"] \
        + [p for p in files if p.name == "sizes.json"]
    uploaded = 0
    for path in order:
        if sent.get(path.name) == _stamp(path):
            continue
        fs.put_file(str(path), f"{root}/{path.name}")
        sent[path.name] = _stamp(path)
        uploaded += 1
    removed = _remove_stale_shards(fs, root, prefix, {p.name for p in files})
    manifests[url] = sent
    atomic_write_json(manifest_path, manifests, indent=1)
    return {"uploaded": uploaded, "unchanged": len(order) - uploaded, "removed": removed}


def _remove_stale_shards(fs, root: str, prefix: str, local_names: set[str]) -> int:
    """Delete the bucket's ``<prefix>-NNNNNN.tar`` that the local run no longer has."""
    pattern = re.compile(rf"^{re.escape(prefix)}-\d+\.tar$")
    try:
        remote = [p.rstrip("/").rpartition("/")[2] for p in fs.ls(root, detail=False)]
    except FileNotFoundError:
        return 0
    stale = [name for name in remote if pattern.match(name) and name not in local_names]
    for name in stale:
        fs.rm_file(f"{root}/{name}")
    return len(stale)
