"""python -m train / htf-train: train Hear The Flow on WebDataset shards (see docs/train.md)."""
from __future__ import annotations

import argparse
import sys

from htf.interrupts import normal_ctrl_c, quiet_ctrl_c_while_starting

if __name__ == "__main__":      # a Ctrl-C while the modules below load ends quietly
    quiet_ctrl_c_while_starting()

from htf.cli import add_config_options, command, make_parser, parse_args, reported_errors, resolve_config
from htf.config import ConfigError
from train.config import TrainConfig

OFFICIAL_RECIPE = "htf-official"      # what runs without --config

EXAMPLES = """\
  # one process (CPU or one GPU), the small preset
  %(prog)s --config tiny --train-shards 'OUT/train-*.tar' --val-shards 'OUT/val-*.tar' --output RUN
  # 2 processes on this machine (DDP); a killed run continues with --resume (or --resume auto)
  torchrun --nproc-per-node 2 -m train --config vggsound \\
      --train-shards 'OUT/train-{000000..000009}.tar' --val-shards 'OUT/val-*.tar' --output RUN \\
      --set optim.lr=3e-4
  # what the run will use, and every key you can --set
  %(prog)s --config tiny --set train.epochs=5 --print-config
"""


def _resume_mode(text: str) -> str:
    if text != "auto":
        raise argparse.ArgumentTypeError(f"'{text}': the only value --resume takes is 'auto'")
    return text


def _how_to_go_on(output: str) -> str:
    from train.checkpoint import latest_path

    latest = latest_path(output)
    if latest.is_file():
        return (f"continue with the same command plus --resume (from {latest}, saved every "
                f"train.save_every_steps steps and at each epoch end)")
    return ("no checkpoint was saved yet (the first comes after train.save_every_steps steps or one "
            "epoch); run the same command again to start over")


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("train", "Train Hear The Flow on WebDataset shards, on one process or under "
                    "torchrun (DDP). The run folder gets checkpoints/ (latest.pt, best.pt), "
                    "config.yaml, train.log, metrics.jsonl and tb/ (TensorBoard).", EXAMPLES)
    data = p.add_argument_group("data and run folder")
    data.add_argument("--train-shards", required=True, metavar="PATTERN",
                      help="training shards: brace pattern ('OUT/train-{000000..000009}.tar') or glob")
    data.add_argument("--val-shards", metavar="PATTERN",
                      help="validation shards (a split that is not the test set); selects best.pt. "
                           "Without them best.pt is the last checkpoint (default: none)")
    data.add_argument("--output", required=True, metavar="RUN",
                      help="run folder: checkpoints/, config.yaml, train.log, metrics.jsonl, tb/")
    data.add_argument("--resume", nargs="?", const=True, type=_resume_mode, metavar="auto",
                      help="continue from RUN/checkpoints/latest.pt, which must exist; '--resume auto': "
                           "continue if it exists, else start (a torchrun restart resumes by itself)")
    add_config_options(p, "train", "optim.lr=3e-4")
    config = next(a for a in p._actions if a.dest == "config")
    config.help = (f"preset name or a YAML file (default: {OFFICIAL_RECIPE}, the official recipe in "
                   f"configs/train/{OFFICIAL_RECIPE}.yaml: ImageNet-initialised ResNet-18s; offline, "
                   "their weights file must already be in the torch hub cache, or the run stops at "
                   "once naming the file to provide)")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    if args.config is None:
        args.config = OFFICIAL_RECIPE
        print(f"no --config: the official recipe, configs/train/{OFFICIAL_RECIPE}.yaml", file=sys.stderr)
    cfg = resolve_config(args, TrainConfig, "train")
    from htf.model import UntrustedCheckpointError, WeightsUnavailableError
    from htf.shards import ShardReadError
    from train.data import ShardSettingsError, StalledLoaderError
    from train.engine import NonFiniteLossError, ResumeError, fit
    errors = (NonFiniteLossError, ResumeError, FileNotFoundError, ConfigError, UntrustedCheckpointError,
              ShardSettingsError, ShardReadError, WeightsUnavailableError, StalledLoaderError)
    with reported_errors(errors, on_interrupt=lambda: _how_to_go_on(args.output), code=1):
        fit(cfg, args.train_shards, args.val_shards, args.output, resume=args.resume)
    return 0


if __name__ == "__main__":
    normal_ctrl_c()
    sys.exit(main())
