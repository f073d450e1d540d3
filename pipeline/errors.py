"""Per-clip failures: a reason code (stable, countable) plus a human detail naming the file."""
from __future__ import annotations

from typing import Any


class ClipError(Exception):
    """A clip cannot be processed. ``reason`` is a short code used in failures.jsonl and
    the closing summary (e.g. ``no_audio_stream``); ``detail`` says what exactly happened."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class FlowSetupError(RuntimeError):
    """A flow method cannot be set up (unknown name, weights not available offline...):
    raised before any clip is processed."""


class ClipTimeout(BaseException):
    """The per-clip time limit fired. A BaseException so that no ``except Exception`` in
    decoding code can swallow it and misreport the clip."""

    reason = "timeout"

    def __init__(self, seconds: float) -> None:
        self.detail = f"clip took longer than {seconds:g} s (run.clip_timeout_s)"
        super().__init__(self.detail)


def failure_record(clip_id: str, stage: str, reason: str, detail: str = "",
                   path: str | None = None) -> dict[str, Any]:
    """One line of failures.jsonl."""
    record: dict[str, Any] = {"id": clip_id, "stage": stage, "reason": reason, "detail": detail}
    if path is not None:
        record["path"] = path
    return record
