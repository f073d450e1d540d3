"""``make demo``: the whole method on the embedded synthetic world, from raw videos to a report.

Stages, each the project's own command (printed as it runs, so a researcher can rerun any):

1. world     ``python -m apps.synth``: videos with sound, boxes, train/val/test lists
2. pipeline  ``python -m pipeline run`` once per split: keyframes, cached DIS flow, log-mel
3. train     ``torchrun --nproc-per-node 2 -m train``: HTF (flow attention), then ``flow: none``
4. evaluate  ``python -m eval`` on the held-out test shards: both models and the
             training-free baselines center, flow, random and sync
5. report    ``OUT/report.md`` / ``report.html``: metrics table, training curves, heat maps

The test split is never used for training or model selection (that is the val split).
Same seed, same numbers: every stage is seeded and the trainer is deterministic on CPU.
"""
from __future__ import annotations

import argparse
import csv
import html
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from htf.cli import command, make_parser, parse_args
from htf.io import atomic_write_json, atomic_write_text
from htf.machine import describe_machine, machine_record
from htf.model_config import GATE_BOTH
from apps.synth import WORLDS, generate_world, world_config
from eval.baselines import BASELINES

REPO = Path(__file__).resolve().parent.parent
SPLITS = ("train", "val", "test")


@dataclass
class DemoPlan:
    output: Path
    n: int = 1000
    seed: int = 0
    size: int = 128
    # A named world of apps.synth.WORLDS. "demo" gives motion a job (README, "What the
    # demo shows"): a third of the clips show two objects of one class, and sounding
    # objects move the way their class plays.
    world: str = "demo"
    nproc: int = 2
    pipeline_config: Path = REPO / "configs/pipeline/synthetic.yaml"
    train_config: Path = REPO / "configs/train/tiny.yaml"
    eval_config: Path = REPO / "configs/eval/tiny.yaml"
    train_overrides: list[str] = field(default_factory=list)
    heatmaps: int = 4


class StageClock:
    """Wall time per stage, printed as it goes and kept for the report."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.time()

    def run(self, name: str, fn, *args, **kwargs):
        t0 = time.time()
        result = fn(*args, **kwargs)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.time() - t0
        print(f"[demo] {name}: {time.time() - t0:.0f} s", flush=True)
        return result

    @property
    def total(self) -> float:
        return time.time() - self._start


def run_command(cmd: list[str], log: Path) -> None:
    """Run one stage's command; on failure show the end of its log and stop the demo."""
    print("[demo] $ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise SystemExit(f"[demo] stage failed (exit {proc.returncode}); log {log}:\n{tail}")


# ---------------------------------------------------------------------------- stages

def make_world(plan: DemoPlan) -> Path:
    world = plan.output / "world"
    cfg = world_config(plan.world, n=plan.n, seed=plan.seed, size=plan.size, workers=os.cpu_count() or 1)
    summary = generate_world(cfg, world, progress=False)
    print(f"[demo] world '{plan.world}': {summary['clips']} clips (train {summary['n_train']}, val "
          f"{summary['n_val']}, test {summary['n_test']}) -> {world}")
    return world


def run_pipeline(config: Path, videos: Path, shards: Path, prefix: str, workers: int, log: Path,
                 extra: list[str] | None = None) -> None:
    """One ``python -m pipeline run`` (the command a researcher would type)."""
    run_command([sys.executable, "-m", "pipeline", "run", "--config", str(config), "--input", str(videos),
                 "--output", str(shards), "--shard-prefix", prefix, "--workers", str(workers),
                 "--no-progress", *(extra or [])], log)


def pipeline_overrides(plan: DemoPlan) -> list[str]:
    """What the shards need beyond the pipeline preset for this training preset: motion series
    on every split when the loss reads the training clips' sync maps (model.loss.sync_guide or sync_target)."""
    from htf.config import load_config
    from train.config import TrainConfig

    model = load_config(TrainConfig, plan.train_config, plan.train_overrides).model
    return ["--set", "motion.series=true"] if model.trains_with_sync() else []


def make_shards(plan: DemoPlan, world: Path, splits: tuple[str, ...] = SPLITS) -> Path:
    shards = plan.output / "shards"
    extra = pipeline_overrides(plan)
    for split in splits:
        run_pipeline(plan.pipeline_config, world, shards, split, plan.nproc,
                     plan.output / "logs" / f"pipeline_{split}.log",
                     ["--split-list", str(world / f"{split}.txt"), "--annotations", str(world / "boxes.json"), *extra])
    sizes = json.loads((shards / "sizes.json").read_text())
    failures = (shards / "failures.jsonl").read_text().splitlines() if (shards / "failures.jsonl").exists() else []
    print(f"[demo] shards: {sum(sizes.values())} samples in {len(sizes)} shard(s), "
          f"{len(failures)} failure(s) -> {shards}")
    return shards


def make_shards_from_folder(videos: Path, shards: Path, logs: Path, config: Path, workers: int = 2) -> Path:
    """The pipeline over a flat folder of videos (no split list, no boxes)."""
    run_pipeline(config, videos, shards, "real", workers, logs / "pipeline_real.log")
    return shards


def split_pattern(shards: Path, split: str) -> str:
    return str(shards / f"{split}-*.tar")


def train_model(plan: DemoPlan, shards: Path, name: str, overrides: list[str]) -> Path:
    run_dir = plan.output / "runs" / name
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(plan.nproc),
           "-m", "train", "--config", str(plan.train_config),
           "--train-shards", split_pattern(shards, "train"), "--val-shards", split_pattern(shards, "val"),
           "--output", str(run_dir), "--set", f"train.seed={plan.seed}"]
    for o in plan.train_overrides + overrides:
        cmd += ["--set", o]
    if (run_dir / "checkpoints" / "latest.pt").exists():
        cmd.append("--resume")   # an interrupted demo continues its training
    run_command(cmd, plan.output / "logs" / f"train_{name}.log")
    return run_dir


# The no-flow run read again with HTF's sync prior: the sync map needs no optical flow, so
# HTF's lead over this is what the flow path adds beyond motion over time (no claim rests on it).
NOFLOW_SYNC = "noflow_sync"


def noflow_with_sync_prior(plan: DemoPlan, shards: Path, run_dir: Path) -> Path | None:
    """The no-flow run's best.pt with the sync prior (model.sync_prior_without_flow), its weight
    chosen on val as HTF's is, in ``best_sync_prior.pt`` beside it; None when the preset adds
    no sync prior. The network is the no-flow run's: only the after-training choice is new."""
    from htf.config import load_config
    from train.config import TrainConfig
    from train.after_training import choose_after_training_again

    model = load_config(TrainConfig, plan.train_config, plan.train_overrides).model
    if model.motion_prior != "sync" or not model.motion_prior_weights:
        return None
    best = run_dir / "checkpoints" / "best.pt"
    out = run_dir / "checkpoints" / "best_sync_prior.pt"
    print(f"[demo] {out}: {best} with model.sync_prior_without_flow=true, the prior's weight chosen on val "
          f"(train.after_training.choose_after_training_again)", flush=True)
    val = [str(p) for p in sorted(shards.glob("val-*.tar"))]
    chosen = choose_after_training_again(best, out, val, {"model.sync_prior_without_flow": True})
    atomic_write_json(run_dir / "sync_prior_chosen_on_val.json", chosen)
    return out


def map_blur(plan: DemoPlan) -> float:
    """The blur of the models' maps (model.map_blur of the training preset and overrides), which
    the baselines get too: a blur lifts every map, so a comparison blurs all or none."""
    from htf.config import load_config
    from train.config import TrainConfig

    return load_config(TrainConfig, plan.train_config, plan.train_overrides).model.map_blur


def evaluate(plan: DemoPlan, shards: Path, name: str, checkpoint: Path | None = None,
             baseline: str | None = None) -> dict[str, Any]:
    report = plan.output / "eval" / name
    cmd = [sys.executable, "-m", "eval", "--shards", split_pattern(shards, "test"),
           "--output", str(report), "--config", str(plan.eval_config), "--heatmaps", str(plan.heatmaps)]
    cmd += ["--checkpoint", str(checkpoint)] if checkpoint else ["--baseline", str(baseline)]
    blur = map_blur(plan) if baseline else 0.0
    if blur:
        cmd += ["--set", f"baseline.map_blur={blur}"]
    run_command(cmd, plan.output / "logs" / f"eval_{name}.log")
    return json.loads((report / "metrics.json").read_text())


# ---------------------------------------------------------------------------- report

ROWS = (("htf", "HTF (flow attention + local flow)"), ("noflow", "no flow (flow: none)"),
        (NOFLOW_SYNC, "no flow + sync prior (the no-flow best.pt, weight chosen on val)"),
        ("center", "center (baseline)"), ("flow", "flow magnitude (baseline)"),
        ("random", "random (baseline)"), ("sync", "sync map (baseline)"))


def results_table(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = [["method", "cIoU@0.5", "mean cIoU", "AUC", "n"]]
    for key, label in ROWS:
        if key not in results:      # results made before that method existed
            continue
        m = results[key]
        rows.append([label, f"{m['ciou_at_0.5']:.3f}", f"{m['mean_ciou']:.3f}", f"{m['auc']:.3f}", str(m["n"])])
    return rows


CLIP_KINDS = (("distinct", "two classes: the sound names the object"),
              ("same", "two objects of one class: only motion tells"))


def clip_kinds(world: Path) -> dict[str, str]:
    """Clip id -> 'same' or 'distinct': do its two large objects share a class?"""
    kinds = {}
    for clip in json.loads((world / "world.json").read_text())["clips"]:
        large = [o["class"] for o in clip["objects"] if not o["small"]]
        kinds[clip["id"]] = "same" if len(set(large)) < len(large) else "distinct"
    return kinds


def results_by_kind(eval_dir: Path, kinds: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The evaluator's per-clip cIoU, summarised per kind of clip (same metric functions)."""
    from htf.metrics import summarize

    with open(eval_dir / "per_clip.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {kind: summarize([float(r["ciou"]) for r in rows if kinds.get(r["id"]) == kind])
            for kind, _ in CLIP_KINDS if any(kinds.get(r["id"]) == kind for r in rows)}


def kinds_table(by_kind: dict[str, dict[str, dict[str, Any]]]) -> list[list[str]]:
    """cIoU@0.5 per method (rows) and kind of clip (columns)."""
    kinds = [(k, label) for k, label in CLIP_KINDS if any(k in v for v in by_kind.values())]
    rows = [["method"] + [f"{label} (n={next(v[k]['n'] for v in by_kind.values() if k in v)})"
                          for k, label in kinds]]
    for key, label in ROWS:
        if key in by_kind:
            rows.append([label] + [f"{by_kind[key][k]['ciou_at_0.5']:.3f}" if k in by_kind[key] else "-"
                                   for k, _ in kinds])
    return rows


# The claim, one definition for the demo's report and the world matrix (test cIoU@0.5):
BASELINE_MARGIN = 0.15    # HTF >= best training-free baseline + 0.15
NOFLOW_TOLERANCE = 0.02   # HTF >= the same model without flow - 0.02 (the flow path never costs)
MOTION_MARGIN = 0.10      # on clips where only motion can tell (same-class pairs): HTF - no flow >= 0.10


def verdict(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The demo's claims, measured: HTF beats the best training-free baseline by at least
    BASELINE_MARGIN cIoU@0.5 and the flow path does not cost (NOFLOW_TOLERANCE)."""
    best_baseline = max((b for b in BASELINES if b in results), key=lambda b: results[b]["ciou_at_0.5"])
    htf = results["htf"]["ciou_at_0.5"]
    margin = htf - results[best_baseline]["ciou_at_0.5"]
    vs_noflow = htf - results["noflow"]["ciou_at_0.5"]
    out = {"best_baseline": best_baseline, "margin_over_best_baseline": round(margin, 6),
           "beats_baselines": margin >= BASELINE_MARGIN - 1e-9,
           "htf_vs_noflow": round(vs_noflow, 6),
           "flow_never_costs": vs_noflow >= -NOFLOW_TOLERANCE - 1e-9}
    if NOFLOW_SYNC in results:     # a measurement beside the claims, not one of them
        out["htf_vs_noflow_sync"] = round(htf - results[NOFLOW_SYNC]["ciou_at_0.5"], 6)
    return out


MATRIX_RESULTS = REPO / "bench" / "results_worlds.json"
# The same preset on seeds that no development run or preset choice looked at: a second test.
FRESH_SEED_RESULTS = REPO / "bench" / "results_worlds_fresh-seeds.json"


def matrix_sections(claimed: Path, fresh: Path) -> list[tuple[str, list[list[str]], str]]:
    """(title, table rows, note) for the claimed matrix and, where it was made with the same
    preset, for its run on fresh seeds; a fresh-seed file of another preset says nothing of this one."""
    claimed_data, fresh_data = _read_matrix(claimed), _read_matrix(fresh)
    sections = [("The claim on other worlds (committed matrix, bench/results_worlds.md)",
                 *matrix_claims(claimed_data, claimed))]
    preset = (claimed_data or {}).get("preset", {}).get("sha256")
    if preset and fresh_data and fresh_data.get("preset", {}).get("sha256") == preset:
        sections.append((f"The same preset on fresh seeds ({fresh.with_suffix('.md').name}: seeds nothing "
                         "was chosen on)", *matrix_claims(fresh_data, fresh)))
    return sections


def _read_matrix(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def matrix_claims(data: dict | None, path: Path) -> tuple[list[list[str]], str]:
    """On which worlds of a matrix's results (``data``, read from ``path`` by bench/world_matrix.py's
    output) the claim holds: (table rows, a note); no rows and a note when it has not been run."""
    if data is None:
        return [], f"No world matrix at {path} (run `python bench/world_matrix.py`)."
    rows = [["world", "clips", "seeds", "HTF − no flow", "HTF − best baseline", "claim holds"]]
    for r in data.get("rows", []):
        checks = [r["never_costs"], r["beats_baselines"]] + ([r["motion_tells"]] if "motion_tells" in r else [])
        holds = ("yes" if all(checks) else "no") + ("" if r["enough_seeds"] else " (fewer than 3 seeds)")
        rows.append([r["world"], str(r["n"]), str(len(r["seeds"])), f"{r['htf_minus_noflow'][0]:+.3f}",
                     f"{r['htf_minus_best_baseline'][0]:+.3f}", holds])
    note = (f"The claim: HTF >= no flow - {NOFLOW_TOLERANCE}, HTF >= best training-free baseline + "
            f"{BASELINE_MARGIN}, and on same-class clips HTF - no flow >= {MOTION_MARGIN} (means over "
            f"seeds, test cIoU@0.5).")
    if data.get("not_run"):
        note += f" Cells not run yet: {', '.join(data['not_run'])}."
    return rows, note


def plot_training_curves(runs: dict[str, Path], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, run_dir in runs.items():
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        train = [r for r in records if r.get("kind") == "train"]
        val = [r for r in records if r.get("kind") == "val" and "ciou_at_0.5" in r]
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label=name)
        ax_val.plot([r["step"] for r in val], [r["ciou_at_0.5"] for r in val], marker="o", label=name)
    ax_loss.set(xlabel="step", ylabel="training loss", title="training loss")
    ax_val.set(xlabel="step", ylabel="cIoU@0.5", title="validation cIoU@0.5 (val split)", ylim=(0, 1))
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def chosen_on_val(run: Path) -> dict[str, Any]:
    """What the trainer chose on val for a run: the kept checkpoint's step and val metrics, its
    flow gate, and the motion prior weight chosen after training (where the run has them);
    empty for a run without a metrics log."""
    if not (run / "metrics.jsonl").is_file():
        return {}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = [r for r in records if r.get("kind") == "val" and r.get("best")]
    if not best:
        return {}
    chosen = {k: best[-1][k] for k in ("step", "ciou_at_0.5", "auc", "flow_gate") if k in best[-1]}
    after = [r for r in records if r.get("kind") in ("after_training", "motion_prior")]   # motion_prior: older logs
    if after:
        chosen.update({k: after[-1][k] for k in ("flow_gate", "mirror_averaged", "map_blur", "motion_prior_weight",
                                                 "motion_prior_source") if k in after[-1]})
    decided = [r for r in records if r.get("kind") == "sync_target"]
    if decided:
        chosen.update({k: decided[-1][k] for k in ("sync_target", "sync_map_val_score")})
    return chosen


def _chosen_line(chosen: dict[str, Any]) -> str:
    """One sentence on HTF's val choices, for the report."""
    if not chosen:
        return "HTF: nothing was chosen on val (no validation ran)."
    parts = [f"checkpoint of step {chosen['step']}"]
    if "flow_gate" in chosen:
        parts.append("flow gate " + {GATE_BOTH: "both (the mean of the flow net's and the twin's maps)", 0: "closed (the no-flow twin)"}
                     .get(chosen["flow_gate"], "open (the flow net)"))
    if chosen.get("mirror_averaged"):
        parts.append("maps averaged with the mirror image")
    if "motion_prior_weight" in chosen:
        source = "sync" if chosen.get("motion_prior_source") == "sync" else "motion"
        parts.append(f"{source} prior weight {chosen['motion_prior_weight']:g}")
    if chosen.get("map_blur"):
        parts.append(f"maps blurred by {chosen['map_blur']:g} cells")
    if "sync_target" in chosen:
        parts.append(f"sync target {'on' if chosen['sync_target'] > 0 else 'off'} in training (val's sync maps "
                     f"scored {chosen['sync_map_val_score']:.3f})")
    return "HTF, chosen on the val split: " + ", ".join(parts) + "."


def _verdict_lines(v: dict[str, Any]) -> list[str]:
    return [f"HTF vs best training-free baseline ({v['best_baseline']}): "
            f"{v['margin_over_best_baseline']:+.3f} cIoU@0.5 (target >= +{BASELINE_MARGIN}: "
            f"{'met' if v['beats_baselines'] else 'NOT met'})",
            f"HTF vs no flow: {v['htf_vs_noflow']:+.3f} cIoU@0.5 (target >= -{NOFLOW_TOLERANCE}: "
            f"{'met' if v['flow_never_costs'] else 'NOT met'})"] + (
            [f"HTF vs no flow + sync prior: {v['htf_vs_noflow_sync']:+.3f} cIoU@0.5 (what optical flow adds "
             f"beyond motion over time; no target)"] if "htf_vs_noflow_sync" in v else [])


def _blur_lines(plan: DemoPlan) -> list[str]:
    sigma = map_blur(plan)
    return [f"Every map blurred by {sigma:g} cells (model.map_blur), the baselines' as the models'."] if sigma else []


def _md_table(table: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
            + ["| " + " | ".join(r) + " |" for r in table[1:]])


def write_report(plan: DemoPlan, results: dict[str, dict[str, Any]], seconds: dict[str, float],
                 curves: Path, by_kind: dict[str, dict[str, dict[str, Any]]] | None = None) -> tuple[Path, Path]:
    """report.md, report.html (the evaluator's report style), the success curves and the cIoU
    histogram of every method, and results.json, in the demo's output folder."""
    from eval.report import (html_page, html_table, links, picture_row, plot_ciou_histogram,
                             plot_success_curves, plots_row, read_cious)

    out = plan.output
    table = results_table(results)
    per_kind = kinds_table(by_kind) if by_kind else []
    v = verdict(results)
    chosen = chosen_on_val(out / "runs" / "htf")
    labels = dict(ROWS)
    methods = {labels[k]: read_cious(out / "eval" / k / "per_clip.csv") for k, _ in ROWS if k in results}
    success = plot_success_curves(methods, out / "success_curves.png")
    histogram = plot_ciou_histogram(methods, out / "ciou_histogram.png")
    files = [[labels[k], f"eval/{k}/metrics.json", f"eval/{k}/per_clip.csv", f"eval/{k}/report.html"]
             for k, _ in ROWS if k in results]

    md = ["# Hear The Flow demo on the synthetic world", "",
          f"World `{plan.world}`, {plan.n} clips, seed {plan.seed}; test split never used for training "
          f"or model selection.", ""]
    notes = _verdict_lines(v) + [_chosen_line(chosen)] + _blur_lines(plan)
    md += _md_table(table) + [""] + [f"- {line}" for line in notes] + [""]
    if per_kind:
        md += ["## cIoU@0.5 by kind of test clip", ""] + _md_table(per_kind) + [""]
    sections = matrix_sections(MATRIX_RESULTS, FRESH_SEED_RESULTS)
    for title, claims, claims_note in sections:
        md += [f"## {title}", ""] + (_md_table(claims) + [""] if claims else []) + [claims_note, ""]
    md += ["## Success curves and cIoU histogram", "", f"![success curves]({success.name})", "",
           f"![cIoU histogram]({histogram.name})", "", "## Training", "", f"![training curves]({curves.name})",
           "", "## Files per method", "", "| method | metrics | per clip | report |", "|---|---|---|---|"]
    md += [f"| {name} | [metrics.json]({m}) | [per_clip.csv]({c}) | [report.html]({r}) |" for name, m, c, r in files]
    md += ["", "## Heat maps (best and worst test clips)", ""]
    for key, label in ROWS:
        pics = results.get(key, {}).get("pictures", [])
        if pics:
            md += [f"### {label}", ""] + [f"![{p['kind']} {p['id']} cIoU {p['ciou']:.3f}](eval/{key}/{p['path']})"
                                          for p in pics] + [""]
    machine = machine_record()
    md += ["## Wall time per stage", "", "| stage | seconds |", "|---|---|"]
    md += [f"| {k} | {s:.0f} |" for k, s in seconds.items()]
    md += ["", f"Machine: {describe_machine(machine)} (the same seed repeats these numbers on this machine; "
           "another CPU may sum floats in another order)."]
    md_path = out / "report.md"
    atomic_write_text(md_path, "\n".join(md) + "\n")

    e = html.escape
    body = [f"<p>World {e(plan.world)}, {plan.n} clips, seed {plan.seed}; the test split is never used for training or "
            "model selection (that is the val split).</p>", html_table(table),
            "<ul>" + "".join(f"<li>{e(line)}</li>" for line in notes) + "</ul>"]
    if per_kind:
        body += ["<h2>cIoU@0.5 by kind of test clip</h2>", html_table(per_kind)]
    for title, claims, claims_note in sections:
        body += [f"<h2>{e(title)}</h2>"] + ([html_table(claims)] if claims else []) + [f"<p>{e(claims_note)}</p>"]
    body += ["<h2>How often is the sound found?</h2><p class=note>Success curve: for every threshold "
             "t, the fraction of test clips whose cIoU is at least t (its value at 0.5 is cIoU@0.5, "
             "the area under it the AUC); histogram: the per-clip cIoU.</p>",
             plots_row([success.name, histogram.name]),
             f"<h2>Training</h2><img class=plot src='{curves.name}' alt='training curves'>",
             "<h2>Files per method</h2><table><tr><th>method</th><th>metrics</th><th>per clip</th>"
             "<th>report</th></tr>" + "".join(
                 f"<tr><td>{e(n)}</td>" + "".join(f"<td><a href='{e(h)}'>{e(Path(h).name)}</a></td>"
                                                  for h in (m, c, r)) + "</tr>" for n, m, c, r in files)
             + "</table>"]
    body.append("<h2>Heat maps: best and worst test clips per method</h2><p class=note>Each picture: the "
                "frame and the heat map over it, the ground-truth box, the outline of the predicted mask "
                "(the mask cIoU is computed on) and a colour bar; click for full size.</p>")
    for key, label in ROWS:
        pics = results.get(key, {}).get("pictures", [])
        if pics:
            body.append(f"<h3>{e(label)}</h3>" + picture_row(pics, f"eval/{key}/"))
    body.append("<h2>Wall time</h2>" + html_table([["stage", "seconds"]] + [[k, f"{s:.0f}"] for k, s in seconds.items()])
                + f"<p class=note>Machine: {e(describe_machine(machine))}.</p>")
    body.append(links([("report.md", "report.md"), ("results.json", "results.json")]))
    html_path = out / "report.html"
    atomic_write_text(html_path, html_page("Hear The Flow demo on the synthetic world", body))
    atomic_write_json(out / "results.json", {
        "world": plan.world, "by_kind": by_kind or {}, "verdict": v, "htf_chosen_on_val": chosen, "seconds": seconds,
        "machine": machine,
        "results": {k: {m: results[k][m] for m in ("ciou_at_0.5", "mean_ciou", "auc", "n")} for k in results}},
        indent=1)
    return md_path, html_path


# ---------------------------------------------------------------------------- main

def run_demo(plan: DemoPlan) -> dict[str, Any]:
    clock = StageClock()
    plan.output.mkdir(parents=True, exist_ok=True)
    world = clock.run("world", make_world, plan)
    shards = clock.run("pipeline", make_shards, plan, world)
    runs = {"htf": clock.run("train htf", train_model, plan, shards, "htf", []),
            "noflow": clock.run("train no-flow", train_model, plan, shards, "noflow", ["model.flow=none"])}
    results: dict[str, dict[str, Any]] = {}
    for name, run_dir in runs.items():
        results[name] = clock.run("evaluate", evaluate, plan, shards, name,
                                  checkpoint=run_dir / "checkpoints" / "best.pt")
    with_sync = clock.run("no flow + sync prior", noflow_with_sync_prior, plan, shards, runs["noflow"])
    if with_sync is not None:
        results[NOFLOW_SYNC] = clock.run("evaluate", evaluate, plan, shards, NOFLOW_SYNC, checkpoint=with_sync)
    for b in BASELINES:
        results[b] = clock.run("evaluate", evaluate, plan, shards, b, baseline=b)
    curves = plot_training_curves(runs, plan.output / "training_curves.png")
    kinds = clip_kinds(world)
    by_kind = {name: results_by_kind(plan.output / "eval" / name, kinds) for name in results}
    seconds = dict(clock.seconds, total=clock.total)
    md_path, html_path = write_report(plan, results, seconds, curves, by_kind)
    for row in results_table(results):
        print("  " + "".join(c.ljust(36 if i == 0 else 11) for i, c in enumerate(row)))
    v = verdict(results)
    print(f"[demo] HTF - best baseline ({v['best_baseline']}): {v['margin_over_best_baseline']:+.3f}; "
          f"HTF - no flow: {v['htf_vs_noflow']:+.3f}")
    print(f"[demo] total {seconds['total']:.0f} s. Wrote:\n"
          f"  world        {world}\n  shards       {shards}\n  runs         {plan.output / 'runs'}\n"
          f"  evaluations  {plan.output / 'eval'}\n  report       {html_path}\n"
          f"               {md_path}\n  logs         {plan.output / 'logs'}")
    return {"results": results, "verdict": v, "seconds": seconds}


DEMO_EXAMPLES = """\
  # the whole demo (what `make demo` runs); open OUT/report.html afterwards
  %(prog)s --output demo_out
  # a smaller, faster world and another seed
  %(prog)s --output demo_small --n 300 --seed 1 --set train.steps=20
  # the same recipe on the independently designed world
  %(prog)s --output demo_indep --world indep
  # what the demo will run, without running it
  %(prog)s --print-config
"""


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("apps.demo", "The whole method on a synthetic world: videos -> shards -> torchrun "
                    "training of HTF and of the same model without flow -> evaluation with the "
                    "training-free baselines -> OUT/report.html. Every stage is the project's own "
                    "command, printed as it runs.", DEMO_EXAMPLES)
    g = p.add_argument_group("the demo")
    g.add_argument("--output", default="demo_out", metavar="OUT", help="folder for every output of the demo")
    g.add_argument("--world", default="demo", choices=list(WORLDS),
                   help="named synthetic world (apps.synth.WORLDS)")
    g.add_argument("--n", type=int, default=1000, help="clips in the synthetic world")
    g.add_argument("--seed", type=int, default=0, help="seed of the world and of both trainings")
    g.add_argument("--size", type=int, default=128, help="frame side of the synthetic videos")
    g.add_argument("--nproc", type=int, default=2, help="torchrun processes per training")
    c = p.add_argument_group("configuration")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training config key for both models (repeatable), e.g. --set train.steps=20")
    c.add_argument("--print-config", action="store_true",
                   help="print the demo's plan (world, presets, overrides) as YAML and exit")
    return p


def plan_text(plan: DemoPlan) -> str:
    """The plan as YAML (paths as text)."""
    import yaml

    data = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(plan).items()}
    return yaml.safe_dump(data, sort_keys=False)


@command
def main(argv: list[str] | None = None) -> int:
    a = parse_args(build_parser(), argv)
    plan = DemoPlan(output=Path(a.output).resolve(), n=a.n, seed=a.seed, size=a.size, nproc=a.nproc,
                    world=a.world, train_overrides=a.overrides)
    if a.print_config:
        sys.stdout.write(plan_text(plan))
        return 0
    run_demo(plan)
    return 0


if __name__ == "__main__":
    sys.exit(main())
