"""``python -m train`` / ``htf-train``: train Hear The Flow on WebDataset shards.

    torchrun --nproc-per-node N -m train --config configs/train/<preset>.yaml \\
        --train-shards 'OUT/train-{000000..000009}.tar' --val-shards 'OUT/val-*.tar' \\
        --output RUN [--set key=value ...] [--resume]

Plain ``python -m train ...`` runs one process. Without ``--config`` the official recipe
runs (configs/train/htf-official.yaml: ImageNet-initialised ResNet-18s, official loss and
optimiser); offline, its ImageNet weights must already be in the torch hub cache, and the
command stops at once naming the file to put there. See docs/train.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from htf.config import ConfigError, load_config
from train.config import TrainConfig

OFFICIAL_RECIPE = Path(__file__).resolve().parent.parent / "configs" / "train" / "htf-official.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="htf-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML preset (configs/train/*.yaml). Without it: the official recipe, "
                                    "configs/train/htf-official.yaml (ImageNet-initialised; offline, the "
                                    "weights file must be in the torch hub cache, or the run stops naming it)")
    p.add_argument("--train-shards", required=True, help="brace pattern or glob of training shards")
    p.add_argument("--val-shards", help="validation shards (a split that is not the test set)")
    p.add_argument("--output", required=True, help="run folder: checkpoints/, metrics.jsonl, tb/")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=3e-4 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUTPUT/checkpoints/latest.pt (a torchrun restart does this itself)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(TrainConfig, args.config or OFFICIAL_RECIPE, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from train.engine import NonFiniteLossError, ResumeError, fit
    from htf.model import UntrustedCheckpointError, WeightsUnavailableError
    if args.config is None:
        print(f"no --config: the official recipe, {OFFICIAL_RECIPE.relative_to(OFFICIAL_RECIPE.parents[2])}",
              file=sys.stderr)
    try:
        fit(cfg, args.train_shards, args.val_shards, args.output, resume=args.resume)
    except (NonFiniteLossError, ResumeError, FileNotFoundError, ConfigError, UntrustedCheckpointError,
            WeightsUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
