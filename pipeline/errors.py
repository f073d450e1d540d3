"""Per-clip failures: a reason code (stable, countable) plus a human detail naming the file."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


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


@dataclass(frozen=True)
class Failure:
    """A clip that failed (failures.jsonl) or was warned about (warnings.jsonl): which clip,
    at which stage, a stable reason code, what exactly happened, and the file (if known)."""
    id: str
    stage: str
    reason: str
    detail: str = ""
    path: Optional[str] = None

    def record(self, **extra: Any) -> dict[str, Any]:
        """The JSON line: id, stage, reason, detail, then path when known, then ``extra``."""
        out: dict[str, Any] = {"id": self.id, "stage": self.stage, "reason": self.reason, "detail": self.detail}
        if self.path is not None:
            out["path"] = self.path
        return {**out, **extra}


def failure_record(clip_id: str, stage: str, reason: str, detail: str = "",
                   path: str | None = None) -> dict[str, Any]:
    """A ``Failure`` as its JSON line, the form a task's result carries across processes."""
    return Failure(clip_id, stage, reason, detail, path).record()
