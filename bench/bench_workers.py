"""Benchmark: the pipeline with several worker counts on one input folder, same samples.

    python bench/bench_workers.py --input WORLD [--config configs/pipeline/flickr.yaml]
                                  [--workers 1 2] [--set KEY=VALUE ...] [--out bench/results_pipeline.md]

Each worker count runs ``python -m pipeline run --config CONFIG --input WORLD --workers N``
into a fresh output folder (fresh flow cache: every run computes everything), timed from
process start to exit. Reported per run: wall seconds, clips/s, speed-up against the first
worker count, CPU seconds of the run and its workers (getrusage), the machine's load
average before the run, and whether its shards are byte-identical to the first run's.
The table replaces the section between the ``bench_workers`` markers of ``--out``
(appended the first time), so the rest of that file is kept.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- bench_workers: begin -->", "<!-- bench_workers: end -->"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _shard_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


def run_once(input_dir: Path, config: str, workers: int, overrides: list[str]) -> dict:
    """One pipeline run in a fresh folder: times, summary line, shard digests."""
    out = Path(tempfile.mkdtemp(prefix=f"bench_workers_{workers}_"))
    cmd = [sys.executable, "-m", "pipeline", "run", "--config", config, "--input", str(input_dir),
           "--output", str(out), "--workers", str(workers), "--no-progress"]
    for item in overrides:
        cmd += ["--set", item]
    load = _load()
    cpu0, start = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu0
    try:
        if proc.returncode != 0:
            raise SystemExit(f"error: {' '.join(cmd)} failed:\n{proc.stderr}")
        return {"workers": workers, "wall": wall, "cpu": cpu, "load": load,
                "summary": proc.stdout.strip().splitlines()[0], "shards": _shard_digests(out),
                "warnings": [line for line in proc.stderr.splitlines() if "warning" in line]}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def report(runs: list[dict], input_dir: Path, config: str, n_clips: int, overrides: list[str]) -> list[str]:
    base = runs[0]
    lines = [BEGIN, "", f"## Worker scaling: {n_clips} clips of `{input_dir.name}`, `{config}`"
             + (f" with {' '.join('--set ' + o for o in overrides)}" if overrides else ""), "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with "
             f"`python bench/bench_workers.py` on {os.cpu_count()} cores "
             "(load average 1/5/15 min before each run in the table; `uptime` at the end below).", "",
             "| workers | wall s | clips/s | x workers " + str(base["workers"]) + " (wall) | CPU s | CPU ms/clip "
             "| load before | shards | same bytes as first |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        lines.append(f"| {run['workers']} | {run['wall']:.1f} | {n_clips / run['wall']:.1f} "
                     f"| {base['wall'] / run['wall']:.2f} | {run['cpu']:.1f} | {run['cpu'] / n_clips * 1000:.0f} "
                     f"| {run['load']} | {len(run['shards'])} | {'yes' if run['shards'] == base['shards'] else 'NO'} |")
    lines += ["", "Summaries: " + "; ".join(f"{r['workers']} worker(s): {r['summary']}" for r in runs) + ".",
              f"Load average at the end: {_load()}.", "", END]
    return lines


def write_section(path: Path, lines: list[str]) -> None:
    text = path.read_text() if path.exists() else ""
    section = "\n".join(lines)
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="input folder (e.g. a synthetic world)")
    p.add_argument("--config", default="configs/pipeline/flickr.yaml", help="pipeline preset")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts; the first is the baseline")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="pipeline config override")
    p.add_argument("--out", default=str(ROOT / "bench" / "results_pipeline.md"))
    a = p.parse_args(argv)
    input_dir = Path(a.input).resolve()
    if not input_dir.is_dir():
        p.error(f"--input {a.input}: not a folder (make one with python -m apps.synth --output WORLD)")
    videos = input_dir / "video" if (input_dir / "video").is_dir() else input_dir
    n_clips = sum(1 for v in videos.iterdir() if v.is_file())
    runs = []
    for workers in a.workers:
        runs.append(run_once(input_dir, a.config, workers, a.set))
        print(f"{workers} worker(s): {runs[-1]['wall']:.1f} s ({runs[-1]['summary']})", flush=True)
    lines = report(runs, input_dir, a.config, n_clips, a.set)
    write_section(Path(a.out), lines)
    print("\n".join(lines))
    return 0 if all(r["shards"] == runs[0]["shards"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
