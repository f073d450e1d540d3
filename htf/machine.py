"""What a result was computed on: the CPU's model and vector extensions, core count, torch.

The same seed gives the same numbers on one machine; on another CPU the float sums of
training may run in another order, so results that sit side by side say where they ran."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# The vector extensions that change which kernels torch runs on a CPU.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


def _first(cpuinfo: str, key: str) -> str | None:
    """The value of ``key`` for /proc/cpuinfo's first processor, None where it has none."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return None


def cpu_model(cpuinfo: str) -> str:
    """The "model name" of /proc/cpuinfo's first processor, or "" without one."""
    return _first(cpuinfo, "model name") or ""


def vector_flags(cpuinfo: str) -> list[str]:
    """Which of VECTOR_FLAGS /proc/cpuinfo's first processor lists, in VECTOR_FLAGS' order."""
    have = set((_first(cpuinfo, "flags") or "").split())
    return [flag for flag in VECTOR_FLAGS if flag in have]


def machine_record(cpuinfo_path: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU (model, vector flags, cores), the system and torch's version and threads."""
    import torch

    try:
        cpuinfo = cpuinfo_path.read_text(errors="replace")
    except OSError:         # not Linux: the platform's own name, no flags
        cpuinfo = ""
    return {"cpu": cpu_model(cpuinfo) or platform.processor() or platform.machine(),
            "vector_flags": vector_flags(cpuinfo), "cores": os.cpu_count(), "system": platform.system(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def describe_machine(record: dict[str, Any]) -> str:
    """One line: "AMD EPYC (avx, avx2, fma), 2 cores, torch 2.x"."""
    flags = ", ".join(record.get("vector_flags") or []) or "no vector flags read"
    return f"{record.get('cpu') or 'unknown CPU'} ({flags}), {record.get('cores')} cores, torch {record.get('torch')}"
