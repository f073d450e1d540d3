"""python -m eval / htf-eval: metrics of a checkpoint or a baseline on test shards (docs/eval.md).

Without --checkpoint, --baseline is evaluated into REPORT. With both, the checkpoint is
evaluated into REPORT and the baseline into REPORT/baseline_<name>, and the baseline's
summary is added to REPORT/metrics.json under "baselines".
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from htf.interrupts import normal_ctrl_c, quiet_ctrl_c_while_starting

if __name__ == "__main__":      # a Ctrl-C while the modules below load ends quietly
    quiet_ctrl_c_while_starting()

from eval.baselines import BASELINES
from eval.config import EvalConfig
from eval.report import write_report
from eval.runner import EvalError, evaluate, load_checkpoint
from htf.cli import (RERUN, WRITABLE, add_config_flag, add_config_options, command, fail, flag_overrides,
                     make_parser, parse_args, reported_errors, resolve_config)
from htf.config import ConfigError
from htf.io import atomic_write_json

SUMMARY = ("ciou_at_0.5", "auc", "mean_ciou", "n")
EXAMPLES = """\
  # a trained checkpoint on the test shards, 8 best and 8 worst heat maps in the report
  %(prog)s --checkpoint RUN/checkpoints/best.pt --shards 'OUT/test-*.tar' --output REPORT --heatmaps 8
  # the released weights with the official protocol, and the flow baseline next to them
  %(prog)s --config htf-official --checkpoint vggss.pth --shards 'OUT/test-*.tar' --output REPORT \\
      --baseline flow
  # a baseline alone (no training needed)
  %(prog)s --baseline center --shards 'OUT/test-*.tar' --output REPORT_CENTER
"""
FLAGS = {"protocol": ("protocol.protocol", "--protocol"), "heatmaps": ("pictures.heatmaps", "--heatmaps"),
         "split_list": ("run.split_list", "--split-list")}


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("eval", "Score a checkpoint or a training-free baseline on test shards with "
                    "boxes: cIoU@0.5, AUC, mean cIoU (optionally SLAVC's AP and max-F1). REPORT gets "
                    "metrics.json, per_clip.csv, report.html/.md (success curve, cIoU histogram, "
                    "heat maps) and the resolved eval_config.yaml.", EXAMPLES)
    what = p.add_argument_group("what to evaluate (at least one)")
    what.add_argument("--checkpoint", metavar="CKPT",
                      help="our .pt checkpoint, the official {'model': ...} .pth or a Lightning .ckpt")
    what.add_argument("--baseline", choices=list(BASELINES),
                      help="a baseline that needs no training: center prior, flow magnitude or random")
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--shards", required=True, nargs="+", metavar="SHARDS",
                    help="test shards: glob ('OUT/test-*.tar'), brace pattern, folder or files; "
                         "also s3://... or other fsspec URLs and pipe: commands")
    io.add_argument("--output", required=True, metavar="REPORT",
                    help="report folder (metrics.json, per_clip.csv, report.html, heatmaps/)")
    proto = p.add_argument_group("protocol and pictures (shortcuts for config keys)")
    add_config_flag(proto, "--protocol", "protocol.protocol", EvalConfig,
                    "ground-truth protocol; auto: each sample's recorded box format",
                    choices=["auto", "flickr", "vggss"])
    proto.add_argument("--extended", action="store_true",
                       help="SLAVC's extended protocol: non-sounding pairs, AP and max-F1 "
                            "(config extended.enabled)")
    add_config_flag(proto, "--heatmaps", "pictures.heatmaps", EvalConfig,
                    "pictures of the N best and N worst clips in the report", type=int, metavar="N")
    add_config_flag(io, "--split-list", "run.split_list", EvalConfig,
                    "the test list the shards were built from: n is reported against its length "
                    "and every listed clip not scored is named", metavar="LIST")
    what.add_argument("--trust-checkpoint", action="store_true",
                      help="load a checkpoint even if it holds classes real ones do not (unpickling "
                           "it may run code); only for files you trust")
    add_config_options(p, "eval", "protocol.interpolation=bilinear")
    return p


def make_config(args: argparse.Namespace) -> EvalConfig:
    flags = flag_overrides(args, FLAGS)
    if args.extended:
        flags.append(("extended.enabled=true", "--extended"))
    return resolve_config(args, EvalConfig, "eval", flags)


def _line(name: str, m: dict) -> str:
    parts = [f"{k}={m[k]:.4f}" if isinstance(m[k], float) else f"{k}={m[k]}" for k in SUMMARY]
    ext = m.get("extended")
    if ext:
        parts += [f"ap={ext['ap']:.4f}", f"max_f1={ext['max_f1']:.4f}"]
    if "n_listed" in m:
        parts.append(f"(of {m['n_listed']} listed; {len(m['not_scored'])} not scored)")
    return f"{name}: " + " ".join(parts)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    cfg = make_config(args)
    if not args.checkpoint and not args.baseline:
        raise fail("give --checkpoint CKPT or --baseline center|flow|random")
    out = Path(args.output)
    with reported_errors((EvalError, ConfigError, FileNotFoundError, ValueError), os_hint=WRITABLE,
                         on_interrupt=RERUN):
        if args.checkpoint:
            model = load_checkpoint(args.checkpoint, cfg.run.device, args.trust_checkpoint)
            metrics = evaluate(model, args.shards, out, cfg, checkpoint=args.checkpoint)
            print(_line(args.checkpoint, metrics))
            if args.baseline:
                base = evaluate(args.baseline, args.shards, out / f"baseline_{args.baseline}", cfg)
                metrics["baselines"] = {args.baseline: {k: base[k] for k in SUMMARY}}
                atomic_write_json(out / "metrics.json", metrics, indent=2, default=str)
                write_report(metrics, out, {f"baseline {args.baseline}": (f"baseline_{args.baseline}/", base)})
                print(_line(f"baseline {args.baseline}", base))
        else:
            metrics = evaluate(args.baseline, args.shards, out, cfg)
            print(_line(f"baseline {args.baseline}", metrics))
    for item in metrics.get("not_scored", [])[:20]:
        print(f"not scored: {item['id']}: {item['reason']}", file=sys.stderr)
    if metrics.get("n_failed"):
        print(f"note: {metrics['n_failed']} item(s) skipped, listed in {out / 'metrics.json'} "
              "under 'failures'", file=sys.stderr)
    print(f"report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    normal_ctrl_c()
    sys.exit(main())
