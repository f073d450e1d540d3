"""Where shards live, in one place: local paths, fsspec URLs and webdataset ``pipe:`` commands.

A shard spec is a brace pattern (``train-{000000..000009}.tar``), a glob, a folder (its
``*.tar``), or several of those joined with ``::`` or given as a list. Each item may be

- a local path;
- an fsspec URL: ``s3://bucket/shards/train-*.tar``, ``gs://...``, ``file://...``,
  ``http(s)://...`` (S3's endpoint comes from the standard ``AWS_ENDPOINT_URL``, the
  credentials from the usual AWS variables or files);
- a webdataset command, ``pipe:aws s3 cp s3://bucket/train-000000.tar -``: its standard
  output is the shard. It is run as given (it comes from the user, never from a file).

Sample counts come from ``sizes.json`` ({shard name: samples}) in the shards' folder, which
the pipeline writes; it is read through fsspec wherever the shards are (for a ``pipe:``
command: beside the URL or path the command names). A shard missing from it is counted by
reading its tar headers.
"""
from __future__ import annotations

import glob
import json
import os
import shlex
import subprocess
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import braceexpand

from htf.sample import ClipSample, decode_sample

PIPE = "pipe:"
GLOB_CHARS = "*?["
# Schemes that list and glob (http(s) cannot list: its shards are taken as given).
LISTABLE = ("s3", "gs", "gcs", "file", "memory")


def is_pipe(url: str) -> bool:
    return url.startswith(PIPE)


def scheme(url: str) -> str:
    """'s3', 'gs', 'file', 'http', 'pipe' or '' for a local path."""
    if is_pipe(url):
        return "pipe"
    head, sep, _ = url.partition("://")
    return head.lower() if sep and head.isalnum() else ""


def storage_options(url: str) -> dict[str, Any]:
    """fsspec options for ``url``: the S3 endpoint from AWS_ENDPOINT_URL when set (a local
    or non-AWS server such as MinIO)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if scheme(url) == "s3" and endpoint:
        return {"client_kwargs": {"endpoint_url": endpoint}}
    return {}


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a URL."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **storage_options(url))
    except ImportError as err:      # e.g. s3:// without s3fs
        raise FileNotFoundError(f"cannot read {url}: {err} (pip install 's3fs' for s3://, 'gcsfs' for gs://)") \
            from None
    return fs, path


def _with_protocol(url: str, path: str) -> str:
    return f"{scheme(url)}://{path.split('://', 1)[-1]}"


# ---------------------------------------------------------------------------- expansion

def _expand_local(item: str) -> list[str]:
    if os.path.isdir(item):
        return sorted(glob.glob(os.path.join(item, "*.tar")))
    if any(c in item for c in GLOB_CHARS):
        return sorted(glob.glob(item))
    return [item]


class ShardAccessError(FileNotFoundError):
    """Shards that cannot be listed or read (no credentials, no network, no permission)."""


def _remote_call(what: str, fn, *args):
    """``fn(*args)`` on a remote store; any failure but 'not found' becomes one
    ShardAccessError naming the location (callers print it as one error line)."""
    try:
        return fn(*args)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001  (botocore, aiohttp, gcsfs: each its own types)
        raise ShardAccessError(f"cannot read {what}: {type(err).__name__}: {err} (for s3:// check the "
                               f"AWS credentials and AWS_ENDPOINT_URL)") from None


def _expand_remote(item: str) -> list[str]:
    if scheme(item) not in LISTABLE or not any(c in item for c in GLOB_CHARS):
        return [item]
    fs, path = filesystem(item)
    return sorted(_with_protocol(item, p) for p in _remote_call(item, fs.glob, path))


def _missing(urls: list[str]) -> list[str]:
    """Shards that do not exist; one listing per remote folder, none for pipes and http."""
    missing, listings = [], {}
    for url in urls:
        kind = scheme(url)
        if kind == "":
            if not os.path.isfile(url):
                missing.append(url)
        elif kind in LISTABLE:
            folder, _, name = url.rpartition("/")
            if folder not in listings:
                fs, path = filesystem(folder)
                try:
                    names = _remote_call(folder, fs.ls, path, False)
                    listings[folder] = {p.rstrip("/").rpartition("/")[2] for p in names}
                except FileNotFoundError:
                    listings[folder] = set()
            if name not in listings[folder]:
                missing.append(url)
    return missing


def expand_shards(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Every shard of ``spec`` (see module docs), in order, without duplicates. Raises
    FileNotFoundError naming the pattern when nothing matches or a named shard is missing."""
    parts = [str(spec)] if isinstance(spec, (str, os.PathLike)) else [str(s) for s in spec]
    urls: list[str] = []
    for part in (p for whole in parts for p in whole.split("::")):
        if is_pipe(part):
            found = list(braceexpand.braceexpand(part))
        else:
            found = [u for item in braceexpand.braceexpand(part)
                     for u in (_expand_remote(item) if scheme(item) else _expand_local(item))]
        if not found:
            raise FileNotFoundError(f"no shard matches '{part}'")
        missing = _missing(found)
        if missing:
            raise FileNotFoundError(f"shard not found: {missing[0]} (from '{part}', {len(missing)} missing)")
        urls.extend(found)
    return list(dict.fromkeys(urls))


# ------------------------------------------------------------------------------ reading

class PipeStream:
    """The standard output of a ``pipe:`` command; closing it checks the exit status."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.proc = subprocess.Popen(url[len(PIPE):], shell=True, stdout=subprocess.PIPE)
        self.stream: IO[bytes] = self.proc.stdout  # type: ignore[assignment]

    def read(self, n: int = -1) -> bytes:
        return self.stream.read(n)

    def close(self) -> None:
        self.stream.close()
        status = self.proc.wait()
        # 141 / -13: the reader stopped early (SIGPIPE), not a failure of the command
        if status not in (0, 141, -13):
            raise OSError(f"'{self.url}' exited with status {status}")

    def __enter__(self) -> "PipeStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_shard(url: str) -> IO[bytes]:
    """A binary stream of the shard's bytes (read front to back)."""
    kind = scheme(url)
    if kind == "pipe":
        return PipeStream(url)  # type: ignore[return-value]
    if kind:
        import fsspec

        return fsspec.open(url, "rb", **storage_options(url)).open()
    return open(url, "rb")


def shard_name(url: str) -> str:
    """The shard's file name (for a pipe: the file its command names)."""
    return os.path.basename(shard_location(url).rstrip("/"))


def shard_location(url: str) -> str:
    """Where a shard's bytes live: the URL or path itself, or for ``pipe:`` the first word
    of the command that names a tar (``pipe:curl -s https://h/a.tar`` -> ``https://h/a.tar``)."""
    if not is_pipe(url):
        return url
    words = shlex.split(url[len(PIPE):])
    tars = [w for w in words if ".tar" in os.path.basename(w)]
    return tars[0] if tars else url


def parse_sizes(content: str | bytes) -> dict[str, int] | None:
    """``sizes.json``'s content as {shard name: samples}, or None when it is not that (damaged,
    not UTF-8 included)."""
    try:
        sizes = json.loads(content)
    except ValueError:
        return None
    if not isinstance(sizes, dict) or not all(type(v) is int for v in sizes.values()):
        return None
    return sizes


def read_sizes(folder: str) -> dict[str, int]:
    """``folder/sizes.json`` through fsspec (or the local disk); {} when absent or damaged
    (readers then count the shards themselves)."""
    path = f"{folder}/sizes.json" if folder else "sizes.json"
    try:
        if scheme(path):
            fs, inner = filesystem(path)
            content = fs.cat_file(inner)
        else:
            with open(path, "rb") as f:
                content = f.read()
    except OSError:
        return {}
    return parse_sizes(content) or {}


class ShardReadError(ValueError):
    """A shard cannot be read (damaged or truncated): the message names it."""


def count_tar_samples(url: str) -> int:
    """Samples in one shard by reading its tar headers (keys = member names up to the first dot)."""
    keys = set()
    try:
        with open_shard(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if member.isfile():
                    keys.add(os.path.basename(member.name).split(".", 1)[0])
    except (tarfile.TarError, EOFError) as err:
        raise ShardReadError(f"shard {url} is unreadable ({type(err).__name__}: {err}); make it "
                             f"again or leave it out") from None
    return len(keys)


def count_samples(urls: Sequence[str]) -> int:
    """Samples in ``urls``: from each folder's sizes.json, else from the tar headers."""
    total = 0
    sizes: dict[str, dict[str, int]] = {}
    for url in urls:
        folder, _, name = shard_location(url).rpartition("/")
        if folder not in sizes:
            sizes[folder] = read_sizes(folder)
        count = sizes[folder].get(name)
        total += count if count is not None else count_tar_samples(url)
    return total


def iter_members(url: str) -> Iterator[tuple[str, str, bytes]]:
    """(key, extension, bytes) of every file in a shard, in tar order (streamed)."""
    with open_shard(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            folder, base = os.path.split(member.name)
            key, _, ext = base.partition(".")
            data = tar.extractfile(member)
            yield (f"{folder}/{key}" if folder else key), ext, (data.read() if data is not None else b"")


def iter_raw_samples(url: str) -> Iterator[dict[str, Any]]:
    """Raw sample dicts (``__key__``, ``__url__``, one bytes entry per extension) of one
    shard, the way webdataset groups tar members. An error (a damaged tar, an unreachable
    URL) is raised after the last complete sample; the partial one at the damage is dropped."""
    current: dict[str, Any] | None = None
    for key, ext, data in iter_members(url):
        if not ext:
            continue
        if current is not None and current["__key__"] != key:
            yield current
            current = None
        if current is None:
            current = {"__key__": key, "__url__": url}
        current[ext.lower()] = data
    if current is not None:
        yield current


# ----------------------------------------------------------------- reading that goes on

@dataclass(frozen=True)
class ReadFailure:
    """A shard or sample that could not be read: shard name, sample key ("" for the whole
    shard), and why."""
    shard: str
    key: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"shard": self.shard, "key": self.key, "reason": self.reason}


OnFailure = Callable[[ReadFailure], None]


def readable_raw_samples(urls: Iterable[str], on_failure: OnFailure) -> Iterator[dict[str, Any]]:
    """Raw samples of every shard in turn. A damaged or unreachable shard is reported with
    the number of samples read before the damage; those samples and the other shards count."""
    for url in urls:
        count = 0
        try:
            for raw in iter_raw_samples(url):
                count += 1
                yield raw
        except Exception as err:  # noqa: BLE001  (tar, I/O and each object store's own errors)
            on_failure(ReadFailure(shard_name(url), "", f"corrupt shard after {count} "
                                                        f"samples: {type(err).__name__}: {err}"))


def decode_or_report(raw: dict[str, Any], on_failure: OnFailure) -> ClipSample | None:
    """The decoded sample, or None after reporting why it cannot be decoded."""
    try:
        return decode_sample(raw)
    except Exception as err:  # noqa: BLE001  (decode_sample names the key; numpy, PIL raise their own)
        on_failure(ReadFailure(shard_name(raw.get("__url__", "?")), raw.get("__key__", "?"), str(err)))
        return None


def read_samples(urls: Iterable[str], on_failure: OnFailure) -> Iterator[tuple[str, ClipSample]]:
    """(shard name, sample) for every sample that can be read and decoded, in shard order;
    everything else is reported to ``on_failure`` and skipped."""
    for raw in readable_raw_samples(urls, on_failure):
        sample = decode_or_report(raw, on_failure)
        if sample is not None:
            yield shard_name(raw["__url__"]), sample
