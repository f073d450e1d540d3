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

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from htf.cli import (add_config_flag, add_config_options, command, fail, flag_overrides,  # noqa: E402
                     make_parser, parse_args, resolve_config, wrap)
from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.errors import FlowSetupError  # noqa: E402
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
FLAGS = {"flow": ("flow.method", "--flow"), "flow_ckpt": ("flow.ckpt", "--flow-ckpt"),
         "device": ("flow.device", "--device"), "workers": ("run.workers", "--workers"),
         "executor": ("run.executor", "--executor"), "shard_prefix": ("pack.prefix", "--shard-prefix"),
         "cache": ("run.cache_dir", "--cache")}


def _add_stage_options(p: argparse.ArgumentParser) -> None:
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--input", required=True, metavar="DIR",
                    help="folder with video/ (and optional audio/) or a flat folder of videos")
    io.add_argument("--output", required=True, metavar="OUT",
                    help="output folder: shards, index/failure reports, flow cache, resolved config")
    io.add_argument("--split-list", metavar="FILE",
                    help="txt (one id a line) or csv (id in column 0) of the clips to use (default: all)")
    io.add_argument("--annotations", metavar="FILE",
                    help="boxes: VGG-SS JSON, Flickr 256-px JSON, or a folder of Flickr XML (default: none)")
    io.add_argument("--keyframes", metavar="FILE",
                    help="JSON id -> frame index, or the official imagetoframe lists (default: middle frame)")
    run = p.add_argument_group("flow and execution (shortcuts for config keys)")
    add_config_flag(run, "--flow", "flow.method", PipelineConfig,
                    "flow method: farneback, dis, raft, raft_small or any ptlflow name", metavar="METHOD")
    add_config_flag(run, "--flow-ckpt", "flow.ckpt", PipelineConfig,
                    "checkpoint of a learned flow method: a local file or a name already cached", metavar="CKPT")
    add_config_flag(run, "--device", "flow.device", PipelineConfig, "cpu or cuda[:N] (learned flow only)")
    add_config_flag(run, "--workers", "run.workers", PipelineConfig, "parallel worker processes (or Ray CPUs)",
                    type=int, metavar="N")
    add_config_flag(run, "--executor", "run.executor", PipelineConfig,
                    "local: a process pool on this machine; ray: a Ray cluster", choices=["local", "ray"])
    add_config_flag(run, "--shard-prefix", "pack.prefix", PipelineConfig,
                    "shard names PREFIX-000000.tar, so train/val/test can share OUT", metavar="PREFIX")
    add_config_flag(run, "--cache", "run.cache_dir", PipelineConfig,
                    "flow cache folder, shareable between runs (empty: OUT/cache)", metavar="DIR")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (config run.progress=false)")
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
    if args.no_progress:
        out.append(("run.progress=false", "--no-progress"))
    return out


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    cfg = resolve_config(args, PipelineConfig, "pipeline", _overrides(args))
    if args.flow_ckpt is not None and not Path(args.flow_ckpt).exists() and "/" in args.flow_ckpt:
        raise fail(f"--flow-ckpt {args.flow_ckpt}: no such file")
    inputs = RunInputs(args.input, args.output, args.split_list, args.annotations, args.keyframes)
    try:
        summary = run_pipeline(cfg, inputs, COMMANDS[args.command])
    except (FlowSetupError, FileNotFoundError, ValueError) as err:
        raise fail(err) from None
    print(summary.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
