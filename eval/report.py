"""Reports a person reads at a glance: metrics, success curves, cIoU histogram, heat maps.

Writes ``report.md`` (readable on a code host) and ``report.html`` (opens in a browser).
Everything is linked by relative path (pictures, plots, metrics.json, per_clip.csv), so a
report folder can be moved as a whole. The HTML pieces here (:data:`REPORT_CSS`,
:func:`html_page`, :func:`html_table`, :func:`picture_row`) and the plots
(:func:`plot_success_curves`, :func:`plot_ciou_histogram`) are also what the demo's report
is made of: one look for every report of the project.
"""
from __future__ import annotations

import csv
import html
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from htf.io import atomic_write_text
from htf.metrics import AUC_THRESHOLDS, SUCCESS_THRESHOLD, auc, success_curve

SUMMARY_KEYS: tuple[tuple[str, str], ...] = (
    ("ciou_at_0.5", "cIoU@0.5 (fraction of clips with cIoU >= 0.5)"),
    ("auc", "AUC (area under the success curve, cIoU thresholds 0..1)"),
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
CURVES_PNG, HISTOGRAM_PNG = "success_curve.png", "ciou_histogram.png"

REPORT_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}"
    "h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{padding:3px 12px;border-bottom:1px solid #ddd;"
    "text-align:left}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".row{display:flex;gap:8px;overflow-x:auto;align-items:flex-start}"
    "figure{margin:0 0 8px 0;flex:0 0 auto}figure img{height:300px;border:1px solid #ddd}"
    "figcaption{font-size:12px;color:#555}img.plot{max-width:100%;height:auto}"
    ".plots{display:flex;gap:12px;flex-wrap:wrap}.plots img{width:calc(50% - 6px);min-width:420px;height:auto}"
    ".links a{margin-right:1.2em}p.note{color:#555;font-size:14px}")


# ------------------------------------------------------------------------------- pieces

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


def read_cious(per_clip_csv: str | os.PathLike) -> list[float]:
    """cIoU of every sounding clip of a per_clip.csv."""
    with open(per_clip_csv, newline="") as fh:
        return [float(r["ciou"]) for r in csv.DictReader(fh) if r["sounding"] == "1" and r["ciou"] != ""]


def html_table(rows: Sequence[Sequence[str]], header: bool = True) -> str:
    """A table; numbers right-aligned; the first row is the header when ``header``."""
    e = html.escape

    def cell(text: str, tag: str) -> str:
        numeric = tag == "td" and text.replace(".", "", 1).replace("-", "", 1).replace("+", "", 1).isdigit()
        return f"<{tag}{' class=num' if numeric else ''}>{e(text)}</{tag}>"

    out = []
    for i, row in enumerate(rows):
        tag = "th" if header and i == 0 else "td"
        out.append("<tr>" + "".join(cell(str(c), tag) for c in row) + "</tr>")
    return "<table>" + "".join(out) + "</table>"


def picture_row(pictures: list[dict[str, Any]], prefix: str = "") -> str:
    """One horizontal row of heat-map figures (paths relative to the page, under ``prefix``)."""
    e = html.escape
    figs = [f"<figure><a href='{e(prefix + p['path'])}'><img src='{e(prefix + p['path'])}' alt='{e(p['id'])}'>"
            f"</a><figcaption>{e(p['kind'])} #{p['rank']}: {e(p['id'])}, cIoU {p['ciou']:.3f}</figcaption></figure>"
            for p in pictures]
    return "<div class=row>" + "".join(figs) + "</div>"


def plots_row(paths: list[str]) -> str:
    """Plots side by side (they wrap on a narrow window)."""
    e = html.escape
    return "<div class=plots>" + "".join(f"<img src='{e(p)}' alt='{e(Path(p).stem)}'>" for p in paths) + "</div>"


def html_page(title: str, body: list[str]) -> str:
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{REPORT_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n")


def links(items: list[tuple[str, str]]) -> str:
    """A line of links: (label, relative href)."""
    e = html.escape
    return "<p class=links>" + "".join(f"<a href='{e(href)}'>{e(label)}</a>" for label, href in items) + "</p>"


# -------------------------------------------------------------------------------- plots

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _legend_below(ax) -> None:
    """Grid, and the legend under the axes so it never hides a curve."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)


def plot_success_curves(methods: dict[str, Sequence[float]], path: str | os.PathLike) -> Path:
    """Fraction of clips with cIoU >= t for t in 0..1, one line per method; the area under
    each line is its AUC (shown in the legend)."""
    plt = _pyplot()
    thresholds = np.asarray(AUC_THRESHOLDS)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, cious in methods.items():
        curve = success_curve(cious, thresholds)
        ax.plot(thresholds, curve, marker="o", markersize=3, label=f"{name} (AUC {auc(cious):.3f})")
    ax.axvline(SUCCESS_THRESHOLD, color="grey", linestyle="--", linewidth=1)
    ax.text(SUCCESS_THRESHOLD + 0.01, 0.96, "cIoU@0.5", color="grey", fontsize=9, va="top")
    ax.set(xlabel="cIoU threshold t", ylabel="fraction of clips with cIoU >= t",
           title="Success curve (area = AUC)", xlim=(0, 1), ylim=(0, 1.02))
    _legend_below(ax)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def plot_ciou_histogram(methods: dict[str, Sequence[float]], path: str | os.PathLike) -> Path:
    """Distribution of per-clip cIoU (fraction of each method's clips per 0.05 bin)."""
    plt = _pyplot()
    bins = np.linspace(0, 1, 21)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, cious in methods.items():
        values = np.asarray(list(cious), dtype=float)
        weights = np.full(values.shape, 1.0 / max(1, values.size))
        ax.hist(values, bins=bins, weights=weights, histtype="step", linewidth=1.8,
                label=f"{name} (mean {values.mean():.3f}, n={values.size})" if values.size else name)
    ax.axvline(SUCCESS_THRESHOLD, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel="cIoU", ylabel="fraction of clips", title="Per-clip cIoU", xlim=(0, 1))
    _legend_below(ax)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


# ----------------------------------------------------------------------- the eval report

def _problems(metrics: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [("Warnings", list(metrics.get("warnings", []))),
            ("Skipped", [f"{f['shard']} {f['key']}: {f['reason']}" for f in metrics.get("failures", [])])]


def _method_name(metrics: dict[str, Any]) -> str:
    return "checkpoint" if metrics.get("checkpoint") else str(metrics.get("predictor", "method"))


def markdown(metrics: dict[str, Any], others: dict[str, tuple[str, dict[str, Any]]] | None = None) -> str:
    lines = ["# Evaluation report", "", "[metrics.json](metrics.json) · [per_clip.csv](per_clip.csv) · "
             "[eval_config.yaml](eval_config.yaml)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v.replace('|', '/')} |" for k, v in metric_rows(metrics)]
    lines += ["", f"![success curve]({CURVES_PNG})", "", f"![cIoU histogram]({HISTOGRAM_PNG})"]
    for title, items in _problems(metrics):
        if items:
            lines += ["", f"## {title}", ""] + [f"- {x}" for x in items]
    for name, folder, pics in _picture_sets(metrics, others):
        for kind in ("best", "worst"):
            chosen = [p for p in pics if p["kind"] == kind]
            if chosen:
                lines += ["", f"## {name}: {kind} {len(chosen)} clips", ""]
                lines += [f"![{p['id']} cIoU {p['ciou']:.3f}]({folder}{p['path']})" for p in chosen]
    return "\n".join(lines) + "\n"


def _picture_sets(metrics: dict[str, Any], others: dict[str, tuple[str, dict[str, Any]]] | None
                  ) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(method name, folder prefix, pictures) for this run and each other method."""
    sets = [(_method_name(metrics), "", metrics.get("pictures", []))]
    sets += [(name, folder, m.get("pictures", [])) for name, (folder, m) in (others or {}).items()]
    return sets


def html_report(metrics: dict[str, Any], others: dict[str, tuple[str, dict[str, Any]]] | None = None) -> str:
    e = html.escape
    body = [links([("metrics.json", "metrics.json"), ("per_clip.csv", "per_clip.csv"),
                   ("eval_config.yaml", "eval_config.yaml"), ("report.md", "report.md")])]
    summary = [["metric", _method_name(metrics)] + list(others or {})]
    summary += [[label, _fmt(metrics[k])] + [_fmt(m.get(k, "")) for _, (_, m) in (others or {}).items()]
                for k, label in SUMMARY_KEYS if k in metrics]
    details = metric_rows(metrics)[len(summary) - 1:]
    body.append(html_table(summary))
    body.append(html_table([["detail", "value"]] + [list(r) for r in details]))
    for name, (folder, _) in (others or {}).items():
        body.append(links([(f"{name}: metrics.json", f"{folder}metrics.json"),
                           (f"{name}: per_clip.csv", f"{folder}per_clip.csv")]))
    body += ["<h2>How often is the sound found?</h2>",
             "<p class=note>The success curve gives, for every threshold t, the fraction of clips "
             "whose cIoU is at least t; its value at 0.5 is cIoU@0.5 and the area under it is the AUC.</p>",
             plots_row([CURVES_PNG, HISTOGRAM_PNG])]
    for title, items in _problems(metrics):
        if items:
            body.append(f"<h2>{title}</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in items) + "</ul>")
    sets = [s for s in _picture_sets(metrics, others) if s[2]]
    if sets:
        body.append("<h2>Heat maps: best and worst clips</h2><p class=note>Each picture: the frame and "
                    "the heat map over it, the ground-truth box, the outline of the predicted mask "
                    "(the mask cIoU is computed on) and a colour bar; click for full size.</p>")
    for name, folder, pics in sets:
        for kind in ("best", "worst"):
            chosen = [p for p in pics if p["kind"] == kind]
            if chosen:
                body.append(f"<h3>{e(name)}: {kind} {len(chosen)}</h3>" + picture_row(chosen, folder))
    return html_page("Evaluation report", body)


def write_report(metrics: dict[str, Any], output_dir: str | os.PathLike,
                 others: dict[str, tuple[str, dict[str, Any]]] | None = None) -> tuple[Path, Path]:
    """report.md, report.html and the plots in ``output_dir`` (next to per_clip.csv).

    ``others``: more methods on the same plots and page, name -> (folder relative to
    ``output_dir`` with a trailing '/', that method's metrics)."""
    out = Path(output_dir)
    methods = {_method_name(metrics): read_cious(out / "per_clip.csv")}
    for name, (folder, _) in (others or {}).items():
        methods[name] = read_cious(out / folder / "per_clip.csv")
    plot_success_curves(methods, out / CURVES_PNG)
    plot_ciou_histogram(methods, out / HISTOGRAM_PNG)
    md, page = out / "report.md", out / "report.html"
    atomic_write_text(md, markdown(metrics, others))
    atomic_write_text(page, html_report(metrics, others))
    return md, page
