"""Command line: ``python -m pipeline {run,index,decode,flow,audio,pack} ...`` (``htf-pipeline``).

``run`` and ``pack`` do everything up to the shards; the other commands stop after their
stage (``flow`` fills the flow cache, e.g. on a GPU machine, before ``pack`` on CPUs).
"""
from __future__ import annotations

import os

# One core per worker process: BLAS and OpenMP read these when numpy, OpenCV or torch load
# (imported below), so they must be set first; without them a single worker's small
# matrix products spin a thread per core and --workers N fights itself.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from htf.config import ConfigError, load_config  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.errors import FlowSetupError  # noqa: E402
from pipeline.publish import default_staging, is_remote, local_output, publish  # noqa: E402
from pipeline.runner import RunInputs, run_pipeline  # noqa: E402

COMMANDS = {"run": "pack", "index": "index", "decode": "decode", "flow": "flow", "audio": "audio", "pack": "pack"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        p = sub.add_parser(name, help=f"run the pipeline up to stage '{COMMANDS[name]}'")
        p.add_argument("--config", help="YAML preset, e.g. configs/pipeline/synthetic.yaml")
        p.add_argument("--input", required=True, help="folder with video/ (and audio/) or a flat folder of videos")
        p.add_argument("--output", required=True,
                       help="output folder (shards, reports, flow cache), or a bucket URL (s3://, gs://)")
        p.add_argument("--staging", help="local folder where a bucket --output is made before it is "
                                         "published (default ~/.cache/htf/pipeline-staging/<hash of the URL>)")
        p.add_argument("--split-list", help="txt (one id a line) or csv (id in column 0) of clips to use")
        p.add_argument("--annotations", help="VGG-SS JSON, Flickr 256-px JSON, or a folder of Flickr XML")
        p.add_argument("--keyframes", help="JSON id -> frame index (or official imagetoframe lists)")
        p.add_argument("--flow", help="flow method: farneback, dis, raft, raft_small, any ptlflow name")
        p.add_argument("--flow-ckpt", help="checkpoint for a learned flow method (local file or cached name)")
        p.add_argument("--device", help="cpu or cuda[:N] (learned flow only)")
        p.add_argument("--workers", type=int, help="parallel worker processes (or Ray CPUs)")
        p.add_argument("--executor", choices=["local", "ray"])
        p.add_argument("--ray-address", metavar="HOST:PORT",
                       help="run on this Ray cluster (implies --executor ray; 'auto' = the cluster "
                            "this node belongs to); docs/cluster.md")
        p.add_argument("--shard-prefix", help="shard names <prefix>-000000.tar (e.g. train, val, test)")
        p.add_argument("--cache", help="flow cache folder (default OUT/cache); share it between runs")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override any config key, e.g. --set audio.feature=linear (repeatable)")
    return parser


def _overrides(args: argparse.Namespace) -> list[str]:
    flags = {"flow.method": args.flow, "flow.ckpt": args.flow_ckpt, "flow.device": args.device,
             "run.workers": args.workers, "run.executor": args.executor, "pack.prefix": args.shard_prefix,
             "run.cache_dir": args.cache, "run.ray_address": args.ray_address}
    if args.ray_address is not None and args.executor is None:
        flags["run.executor"] = "ray"
    out = [f"{k}={v}" for k, v in flags.items() if v is not None]
    if args.no_progress:
        out.append("run.progress=false")
    # --set comes last: the most specific statement wins.
    return out + list(args.set)


def ray_address_problem(address: str, timeout_s: float = 5.0) -> str | None:
    """Why ``host:port`` cannot be a Ray head, or None. Checked before Ray is asked, which
    would otherwise retry an unreachable address for minutes."""
    if address in ("", "auto") or address.startswith("ray://"):
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return f"--ray-address {address}: expected HOST:PORT (e.g. 10.0.0.1:6379), 'auto' or ray://HOST:PORT"
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        return (f"--ray-address {address}: no Ray head answers there ({err}); start one with "
                f"`ray start --head --port {port}` (docs/cluster.md)")
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.ray_address is not None:
        problem = ("--ray-address needs --executor ray" if args.executor == "local"
                   else ray_address_problem(args.ray_address))
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    try:
        cfg = load_config(PipelineConfig, args.config, _overrides(args))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.flow_ckpt is not None and not Path(args.flow_ckpt).exists() and "/" in args.flow_ckpt:
        print(f"error: --flow-ckpt {args.flow_ckpt}: no such file", file=sys.stderr)
        return 2
    remote = is_remote(args.output)
    if args.staging and not remote:
        print(f"error: --staging is for a bucket --output (s3://, gs://); {args.output} is a local folder",
              file=sys.stderr)
        return 2
    output = str(Path(args.staging) if args.staging else default_staging(args.output)) if remote \
        else local_output(args.output)
    inputs = RunInputs(args.input, output, args.split_list, args.annotations, args.keyframes)
    try:
        summary = run_pipeline(cfg, inputs, COMMANDS[args.command])
    except (FlowSetupError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary.text())
    return publish_to(Path(output), args.output, cfg.pack.prefix) if remote else 0


def publish_to(folder: Path, url: str, prefix: str) -> int:
    try:
        counts = publish(folder, url, prefix)
    except Exception as err:  # noqa: BLE001  (credentials, network, permissions: one line, not a traceback)
        print(f"error: publishing {folder} to {url} failed ({type(err).__name__}: {err}); the outputs "
              f"are complete in {folder}: rerun the same command to publish them", file=sys.stderr)
        return 1
    print(f"published to {url}: {counts['uploaded']} file(s) uploaded, {counts['unchanged']} unchanged, "
          f"{counts['removed']} stale shard(s) removed (staging folder {folder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
