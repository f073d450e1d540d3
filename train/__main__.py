"""python -m train / htf-train: train Hear The Flow on WebDataset shards (see docs/train.md)."""
from __future__ import annotations

import argparse
import sys

from htf.cli import add_config_options, command, fail, make_parser, parse_args, resolve_config
from htf.config import ConfigError
from train.config import TrainConfig

EXAMPLES = """\
  # one process (CPU or one GPU), the small preset
  %(prog)s --config tiny --train-shards 'OUT/train-*.tar' --val-shards 'OUT/val-*.tar' --output RUN
  # 2 processes on this machine (DDP); a killed run continues with --resume
  torchrun --nproc-per-node 2 -m train --config vggsound \\
      --train-shards 'OUT/train-{000000..000009}.tar' --val-shards 'OUT/val-*.tar' --output RUN \\
      --set optim.lr=3e-4
  # what the run will use, and every key you can --set
  %(prog)s --config tiny --set train.epochs=5 --print-config
"""


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
    data.add_argument("--resume", action="store_true",
                      help="continue from RUN/checkpoints/latest.pt (a torchrun restart does this itself)")
    add_config_options(p, "train", "optim.lr=3e-4")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    cfg = resolve_config(args, TrainConfig, "train")
    from train.engine import NonFiniteLossError, ResumeError, fit
    try:
        fit(cfg, args.train_shards, args.val_shards, args.output, resume=args.resume)
    except (NonFiniteLossError, ResumeError, FileNotFoundError, ConfigError) as err:
        raise fail(err, code=1) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
