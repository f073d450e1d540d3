"""One-page report of an evaluation: the metrics table and the best/worst pictures.

Writes ``report.md`` (readable on a code host) and ``report.html`` (opens in a browser;
images by relative path, so the folder can be moved as a whole).
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

SUMMARY_KEYS: tuple[tuple[str, str], ...] = (
    ("ciou_at_0.5", "cIoU@0.5 (fraction of clips with cIoU >= 0.5)"),
    ("auc", "AUC (success rate over cIoU thresholds 0..1)"),
    ("mean_ciou", "mean cIoU"),
    ("n", "clips scored"),
)
EXTENDED_KEYS: tuple[tuple[str, str], ...] = (
    ("ap", "AP (extended protocol)"),
    ("max_f1", "max-F1 (extended protocol)"),
    ("ap_at_75", "AP@75 (extended protocol)"),
    ("max_f1_at_75", "max-F1@75 (extended protocol)"),
    ("protocol", "extended protocol's confidence and mask"),
    ("n_sounding", "sounding pairs"),
    ("n_non_sounding", "non-sounding pairs"),
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows shown in both report formats."""
    rows = [(label, _fmt(metrics[k])) for k, label in SUMMARY_KEYS if k in metrics]
    ext = metrics.get("extended")
    if ext:
        rows += [(label, _fmt(ext[k])) for k, label in EXTENDED_KEYS if k in ext]
        rows.append(("non-sounding pairs from", str(ext.get("pairs"))))
    rows += [
        ("protocol", str(metrics.get("protocol"))),
        ("prediction upsampling", f"{metrics.get('interpolation')} to {metrics.get('size')} px"),
        ("predictor", str(metrics.get("predictor"))),
        ("checkpoint", str(metrics.get("checkpoint"))),
        ("shards", str(len(metrics.get("shards", [])))),
        ("maps that were constant", str(metrics.get("n_constant_maps", 0))),
        ("skipped (see failures)", str(metrics.get("n_failed", 0))),
        ("empty ground truth (scored 0)", str(len(metrics.get("empty_ground_truth", [])))),
    ]
    if "n_listed" in metrics:
        rows.append(("listed clips not scored", f"{len(metrics['not_scored'])} of {metrics['n_listed']}"))
    return rows


def markdown(metrics: dict[str, Any]) -> str:
    lines = ["# Evaluation report", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v.replace('|', '/')} |" for k, v in metric_rows(metrics)]
    for title, items in (("Warnings", metrics.get("warnings", [])),
                         ("Skipped", [f"{f['shard']} {f['key']}: {f['reason']}" for f in metrics.get("failures", [])])):
        if items:
            lines += ["", f"## {title}", ""] + [f"- {x}" for x in items]
    for kind in ("best", "worst"):
        pics = [p for p in metrics.get("pictures", []) if p["kind"] == kind]
        if pics:
            lines += ["", f"## {kind.capitalize()} {len(pics)} clips", ""]
            lines += [f"![{p['id']} cIoU {p['ciou']:.3f}]({p['path']})" for p in pics]
    return "\n".join(lines) + "\n"


def html_page(metrics: dict[str, Any]) -> str:
    e = html.escape
    rows = "\n".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in metric_rows(metrics))
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Evaluation report</title>",
             "<style>body{font-family:sans-serif;margin:2em}td{padding:2px 12px;border-bottom:1px solid #ddd}"
             "figure{display:inline-block;margin:4px}img{width:224px}figcaption{font-size:12px}</style>",
             "</head><body><h1>Evaluation report</h1>", f"<table>{rows}</table>"]
    for title, items in (("Warnings", metrics.get("warnings", [])),
                         ("Skipped", [f"{f['shard']} {f['key']}: {f['reason']}" for f in metrics.get("failures", [])])):
        if items:
            parts.append(f"<h2>{title}</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in items) + "</ul>")
    for kind in ("best", "worst"):
        pics = [p for p in metrics.get("pictures", []) if p["kind"] == kind]
        if pics:
            parts.append(f"<h2>{kind.capitalize()} {len(pics)} clips</h2><div>")
            parts += [f"<figure><img src='{e(p['path'])}' alt='{e(p['id'])}'>"
                      f"<figcaption>{e(p['id'])} cIoU {p['ciou']:.3f}</figcaption></figure>" for p in pics]
            parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(metrics: dict[str, Any], output_dir: str | os.PathLike) -> tuple[Path, Path]:
    out = Path(output_dir)
    md, page = out / "report.md", out / "report.html"
    md.write_text(markdown(metrics))
    page.write_text(html_page(metrics))
    return md, page
