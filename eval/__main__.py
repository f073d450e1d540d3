"""``python -m eval`` / ``htf-eval``: metrics of a checkpoint or a baseline on test shards.

    python -m eval --checkpoint CKPT --shards 'OUT/test-*.tar' --output REPORT \\
        [--protocol flickr|vggss|auto] [--baseline center|flow|random] [--extended] \\
        [--heatmaps N] [--config configs/eval/flickr.yaml] [--set key=value ...]

Without ``--checkpoint``, ``--baseline`` is evaluated into REPORT. With both, the checkpoint
is evaluated into REPORT and the baseline into REPORT/baseline_<name>, and the baseline's
summary is added to REPORT/metrics.json under ``baselines``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from eval.baselines import BASELINES
from eval.config import EvalConfig
from eval.runner import EvalError, evaluate
from htf.config import ConfigError, load_config

SUMMARY = ("ciou_at_0.5", "auc", "mean_ciou", "n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="htf-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="our .pt checkpoint, the official {'model': ...} .pth or Lightning .ckpt")
    p.add_argument("--shards", required=True, nargs="+",
                   help="test shards: glob ('OUT/test-*.tar'), brace pattern, folder or files")
    p.add_argument("--output", required=True, help="report folder (metrics.json, per_clip.csv, ...)")
    p.add_argument("--protocol", choices=["auto", "flickr", "vggss"], help="ground-truth protocol")
    p.add_argument("--baseline", choices=list(BASELINES), help="a baseline that needs no training")
    p.add_argument("--extended", action="store_true", help="SLAVC's extended protocol (AP, max-F1)")
    p.add_argument("--heatmaps", type=int, metavar="N", help="overlays of the N best and N worst clips")
    p.add_argument("--config", help="eval preset YAML (configs/eval/*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set protocol.interpolation=bilinear")
    return p


def make_config(args: argparse.Namespace) -> EvalConfig:
    overrides = list(args.overrides)
    if args.protocol:
        overrides.append(f"protocol.protocol={args.protocol}")
    if args.extended:
        overrides.append("extended.enabled=true")
    if args.heatmaps is not None:
        overrides.append(f"pictures.heatmaps={args.heatmaps}")
    return load_config(EvalConfig, args.config, overrides)


def load_checkpoint(path: str, device: str) -> Any:
    """The model of ``path`` through the trainer's loader (our, official .pth and .ckpt)."""
    if not Path(path).is_file():
        raise EvalError(f"checkpoint not found: {path}")
    from htf.model import load_model

    try:
        return load_model(path, map_location=device)
    except (KeyError, ValueError, RuntimeError) as err:
        raise EvalError(f"checkpoint {path}: {err}") from err


def _line(name: str, m: dict) -> str:
    parts = [f"{k}={m[k]:.4f}" if isinstance(m[k], float) else f"{k}={m[k]}" for k in SUMMARY]
    ext = m.get("extended")
    if ext:
        parts += [f"ap={ext['ap']:.4f}", f"max_f1={ext['max_f1']:.4f}"]
    return f"{name}: " + " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.checkpoint and not args.baseline:
        print("error: give --checkpoint CKPT or --baseline center|flow|random", file=sys.stderr)
        return 2
    try:
        cfg = make_config(args)
        out = Path(args.output)
        if args.checkpoint:
            model = load_checkpoint(args.checkpoint, cfg.run.device)
            metrics = evaluate(model, args.shards, out, cfg, checkpoint=args.checkpoint)
            print(_line(args.checkpoint, metrics))
            if args.baseline:
                base = evaluate(args.baseline, args.shards, out / f"baseline_{args.baseline}", cfg)
                metrics["baselines"] = {args.baseline: {k: base[k] for k in SUMMARY}}
                (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
                print(_line(f"baseline {args.baseline}", base))
        else:
            metrics = evaluate(args.baseline, args.shards, out, cfg)
            print(_line(f"baseline {args.baseline}", metrics))
    except (EvalError, ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if metrics.get("n_failed"):
        print(f"note: {metrics['n_failed']} item(s) skipped, listed in {out / 'metrics.json'} "
              "under 'failures'", file=sys.stderr)
    print(f"report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
