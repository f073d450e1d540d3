"""Command line: python -m pipeline {run,index,decode,flow,audio,pack} ... (htf-pipeline).

run and pack do everything up to the shards; the other commands stop after their stage
(flow fills the flow cache, e.g. on a GPU machine, before pack on CPUs).
"""
from __future__ import annotations

import os

# One core per worker process: BLAS and OpenMP read these when numpy, OpenCV or torch load
# (imported below), so they must be set first; without them a single worker's small
# matrix products spin a thread per core and --workers N fights itself.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from htf.interrupts import normal_ctrl_c, quiet_ctrl_c_while_starting  # noqa: E402

if __name__ == "__main__":      # a Ctrl-C while the modules below load ends quietly
    quiet_ctrl_c_while_starting()

import argparse  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from htf.cli import (add_config_flag, add_config_options, command, fail, flag_overrides,  # noqa: E402
                     make_parser, parse_args, resolve_config, wrap)
from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.errors import FlowSetupError  # noqa: E402
from pipeline.publish import default_staging, is_remote, local_output, publish  # noqa: E402
from pipeline.runner import RunInputs, run_pipeline  # noqa: E402

COMMANDS = {"run": "pack", "index": "index", "decode": "decode", "flow": "flow", "audio": "audio", "pack": "pack"}
STAGE_HELP = {
    "run": "every stage: raw videos -> WebDataset shards (same as pack)",
    "index": "list the clips, probe them, pick keyframes (index.jsonl)",
    "decode": "index, then decode each keyframe pair (checks every file decodes)",
    "flow": "up to the flow cache (e.g. on a GPU machine, before pack on CPUs)",
    "audio": "up to the spectrograms (checks every audio track)",
    "pack": "every stage up to the shards, reusing the flow cache",
}
EXAMPLES = """\
  # the synthetic world (python -m apps.synth) -> train/val/test shards in OUT
  %(prog)s run --config synthetic --input WORLD --output OUT \\
      --split-list WORLD/train.txt --annotations WORLD/boxes.json --shard-prefix train
  # VGG-SS test shards with boxes, 4 worker processes
  %(prog)s run --config vggsound --input RAW --output OUT --shard-prefix test --workers 4 \\
      --split-list metadata/htf_vggss_test_trimmed.csv --annotations metadata/htf_vggss.json
  # what a preset resolves to, and every key you can --set
  %(prog)s run --config flickr --set flow.method=farneback --print-config
  %(prog)s run --list-keys
"""
# dest -> (config key, flag) of the shortcut options
FLAGS = {"flow": ("flow.method", "--flow"), "flow_ckpt": ("flow.learned.ckpt", "--flow-ckpt"),
         "device": ("flow.device", "--device"), "workers": ("run.workers", "--workers"),
         "executor": ("run.executor", "--executor"), "shard_prefix": ("pack.prefix", "--shard-prefix"),
         "cache": ("run.cache_dir", "--cache"), "ray_address": ("run.ray_address", "--ray-address")}


def _add_stage_options(p: argparse.ArgumentParser) -> None:
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--input", required=True, metavar="DIR",
                    help="folder with video/ (and optional audio/) or a flat folder of videos")
    io.add_argument("--output", required=True, metavar="OUT",
                    help="output folder: shards, index/failure reports, flow cache, resolved config; "
                         "or a bucket URL (s3://, gs://): made in --staging, then published")
    io.add_argument("--staging", metavar="DIR",
                    help="local folder where a bucket --output is made before it is published "
                         "(default ~/.cache/htf/pipeline-staging/<hash of the URL>)")
    io.add_argument("--split-list", metavar="FILE",
                    help="txt (one id a line) or csv (id in column 0) of the clips to use (default: all)")
    io.add_argument("--annotations", metavar="FILE",
                    help="boxes: VGG-SS JSON, Flickr 256-px JSON, or a folder of Flickr XML (default: none)")
    io.add_argument("--keyframes", metavar="FILE",
                    help="JSON id -> frame index, or the official imagetoframe lists (default: middle frame)")
    run = p.add_argument_group("flow and execution (shortcuts for config keys)")
    add_config_flag(run, "--flow", "flow.method", PipelineConfig,
                    "flow method: farneback, dis, raft, raft_small or any ptlflow name", metavar="METHOD")
    add_config_flag(run, "--flow-ckpt", "flow.learned.ckpt", PipelineConfig,
                    "checkpoint of a learned flow method: a local file or a name already cached", metavar="CKPT")
    add_config_flag(run, "--device", "flow.device", PipelineConfig, "cpu or cuda[:N] (learned flow only)")
    add_config_flag(run, "--workers", "run.workers", PipelineConfig, "parallel worker processes (or Ray CPUs)",
                    type=int, metavar="N")
    add_config_flag(run, "--executor", "run.executor", PipelineConfig,
                    "local: a process pool on this machine; ray: a Ray cluster", choices=["local", "ray"])
    add_config_flag(run, "--ray-address", "run.ray_address", PipelineConfig,
                    "run on this Ray cluster (implies --executor ray; 'auto': the cluster of this node; "
                    "docs/cluster.md)", metavar="HOST:PORT")
    add_config_flag(run, "--shard-prefix", "pack.prefix", PipelineConfig,
                    "shard names PREFIX-000000.tar, so train/val/test can share OUT", metavar="PREFIX")
    add_config_flag(run, "--cache", "run.cache_dir", PipelineConfig,
                    "flow cache folder, shareable between runs (empty: OUT/cache)", metavar="DIR")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar or progress lines (config run.progress=false)")
    add_config_options(p, "pipeline", "audio.feature=linear")


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("pipeline", "Raw videos -> keyframes, cached optical flow, spectrograms -> "
                         "WebDataset shards. Each command runs the stages up to its own; a killed run "
                         "resumes where it stopped. Details: docs/pipeline.md.", EXAMPLES)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands (each runs the stages up to its own)")
    for name in COMMANDS:
        p = sub.add_parser(name, help=STAGE_HELP[name], description=wrap(STAGE_HELP[name]),
                           epilog="examples:\n" + EXAMPLES.strip("\n").replace("%(prog)s run", "%(prog)s"),
                           formatter_class=parser.formatter_class)
        _add_stage_options(p)
    return parser


def _overrides(args: argparse.Namespace) -> list:
    out = flag_overrides(args, FLAGS)
    if args.ray_address is not None and args.executor is None:
        out.append(("run.executor=ray", f"--ray-address {args.ray_address}"))
    if args.no_progress:
        out.append(("run.progress=false", "--no-progress"))
    return out


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


def output_folder(args: argparse.Namespace) -> str:
    """The local folder the run writes: OUT itself, or the staging folder of a bucket URL."""
    if not is_remote(args.output):
        if args.staging:
            raise fail(f"--staging is for a bucket --output (s3://, gs://); {args.output} is a local folder")
        return local_output(args.output)
    return str(Path(args.staging) if args.staging else default_staging(args.output))


def publish_to(folder: Path, url: str, prefix: str) -> int:
    try:
        counts = publish(folder, url, prefix)
    except Exception as err:  # noqa: BLE001  (credentials, network, permissions: one line, not a traceback)
        raise fail(f"publishing {folder} to {url} failed ({type(err).__name__}: {err}); the outputs "
                   f"are complete in {folder}: rerun the same command to publish them", code=1) from None
    print(f"published to {url}: {counts['uploaded']} file(s) uploaded, {counts['unchanged']} unchanged, "
          f"{counts['removed']} stale shard(s) removed (staging folder {folder})")
    return 0


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    if args.ray_address is not None:
        problem = ("--ray-address needs --executor ray" if args.executor == "local"
                   else ray_address_problem(args.ray_address))
        if problem:
            raise fail(problem)
    cfg = resolve_config(args, PipelineConfig, "pipeline", _overrides(args))
    if args.flow_ckpt is not None and not Path(args.flow_ckpt).exists() and "/" in args.flow_ckpt:
        raise fail(f"--flow-ckpt {args.flow_ckpt}: no such file")
    output = output_folder(args)
    inputs = RunInputs(args.input, output, args.split_list, args.annotations, args.keyframes)
    stage = COMMANDS[args.command]
    if stage == "pack" and cfg.pack.prefix.startswith("test") and not args.annotations:
        print(f"warning: building '{cfg.pack.prefix}' shards without boxes: the evaluator cannot score "
              "them (give --annotations: VGG-SS JSON, Flickr XML folder or 256-px JSON)", file=sys.stderr)
    try:
        check_output_folder(Path(output))
        summary = run_pipeline(cfg, inputs, stage)
    except (FlowSetupError, FileNotFoundError, ValueError) as err:
        raise fail(err) from None
    except OSError as err:          # disk full, permissions changed during the run...
        raise fail(f"{err.filename + ': ' if err.filename else ''}{err.strerror or err}; fix this and "
                   "rerun the same command: finished work is kept", 1) from None
    except RuntimeError as err:     # e.g. a worker died with no clip to blame, Ray missing
        raise fail(err, 1) from None
    except KeyboardInterrupt:
        raise fail(f"interrupted; rerun the same command to resume (finished tasks and shards in "
                   f"{output} are kept)", 130) from None
    print(summary.text())
    return publish_to(Path(output), args.output, cfg.pack.prefix) if is_remote(args.output) else 0


def check_output_folder(out: Path) -> None:
    """Say in one line why ``out`` cannot be made or written, before any work (and without
    making it: no folder is left behind by a run that fails on its inputs)."""
    existing = next(p for p in [out, *out.parents] if p.exists() or p.is_symlink())
    if not existing.is_dir():
        raise OutputFolderError(f"--output {out}: {existing} is a file, not a folder; choose another "
                                "--output")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputFolderError(f"--output {out}: {existing} is not writable (permission denied or a "
                                "read-only file system); choose a writable folder")


class OutputFolderError(ValueError):
    """The output folder cannot be made or written."""


if __name__ == "__main__":
    normal_ctrl_c()
    sys.exit(main())
