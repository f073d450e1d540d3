"""``python -m train`` / ``htf-train``: train Hear The Flow on WebDataset shards.

    torchrun --nproc-per-node N -m train --config configs/train/<preset>.yaml \\
        --train-shards 'OUT/train-{000000..000009}.tar' --val-shards 'OUT/val-*.tar' \\
        --output RUN [--set key=value ...] [--resume [auto]]

Plain ``python -m train ...`` runs one process. See docs/train.md.
"""
from __future__ import annotations

import argparse
import sys

from htf.config import ConfigError, load_config
from train.config import TrainConfig


def _resume_mode(text: str) -> str:
    if text != "auto":
        raise argparse.ArgumentTypeError(f"'{text}': the only value --resume takes is 'auto'")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="htf-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML preset (configs/train/*.yaml); defaults = official recipe")
    p.add_argument("--train-shards", required=True, help="brace pattern or glob of training shards")
    p.add_argument("--val-shards", help="validation shards (a split that is not the test set)")
    p.add_argument("--output", required=True, help="run folder: checkpoints/, metrics.jsonl, tb/")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=3e-4 (repeatable)")
    p.add_argument("--resume", nargs="?", const=True, choices=[True, "auto"], type=_resume_mode,
                   help="continue from OUTPUT/checkpoints/latest.pt, which must exist; '--resume auto': "
                        "continue if it exists, else start (a torchrun restart resumes by itself)")
    return p.parse_args(argv)


def _how_to_go_on(output: str) -> str:
    from train.checkpoint import latest_path

    latest = latest_path(output)
    if latest.is_file():
        return (f"continue with the same command plus --resume (from {latest}, saved every "
                f"train.save_every_steps steps and at each epoch end)")
    return ("no checkpoint was saved yet (the first comes after train.save_every_steps steps or one "
            "epoch); run the same command again to start over")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from train.data import ShardSettingsError
    from train.engine import NonFiniteLossError, ResumeError, fit
    from htf.model import WeightsUnavailableError
    try:
        fit(cfg, args.train_shards, args.val_shards, args.output, resume=args.resume)
    except (NonFiniteLossError, ResumeError, FileNotFoundError, ConfigError, ShardSettingsError,
            WeightsUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:         # disk full, an unwritable --output...
        print(f"error: {err.filename + ': ' if err.filename else ''}{err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: interrupted; {_how_to_go_on(args.output)}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
