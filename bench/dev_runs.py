"""The development runs: where a training idea is measured before any matrix cell sees it.

Seven ``apps.demo`` runs at 400 clips, on seeds the matrix never uses (bench/world_matrix.py
runs seeds 3-5): demo s7, distractors s7, indep s1 and s7, indep-same s1, s2 and s7. Three
more, named with ``--runs``: distractors-sync s1, s2 and s7 (silent movers that follow the
sound's loudness; the matrix's one failing row is that world at 1,000 clips, so ``--n 1000``). Every
run keeps its checkpoints and shards, so an after-training idea can be read again from them
without training. One folder per setting; a folder holding runs of other settings is
refused. Resumable: a finished run is kept, an interrupted one continues.

    python bench/dev_runs.py --name NAME [--preset configs/train/tiny.yaml] [--set KEY=VALUE ...]
                             [--runs demo-s7,indep-s1,...] [--n 400] [--against NAME] [--work DIR]

Writes ``<work>/<name>/dev.md`` / ``dev.json``: test cIoU@0.5 of HTF, no flow and the sync
map per run and their means, and with ``--against`` the other setting's beside them. A
setting is the preset's bytes, the overrides and the world size.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apps.demo import DemoPlan, chosen_on_val, run_demo  # noqa: E402
from htf.io import atomic_write_text  # noqa: E402

# (world, seed): the development runs of docs/train.md since the eighth preset.
DEV_RUNS = (("demo", 7), ("distractors", 7), ("indep", 1), ("indep", 7),
            ("indep-same", 1), ("indep-same", 2), ("indep-same", 7))
# Known, run only when named: the world of the matrix's failing row, on seeds the matrix never uses.
NAMED_DEV_RUNS = (("distractors-sync", 1), ("distractors-sync", 2), ("distractors-sync", 7))
DEV_CLIPS = 400
METHODS = (("htf", "HTF"), ("noflow", "no flow"), ("sync", "sync map"))
PRESET = ROOT / "configs" / "train" / "tiny.yaml"
WORK = ROOT / "bench" / "dev_runs"


def run_name(world: str, seed: int) -> str:
    return f"{world}-s{seed}"


def settings_of(preset: Path, overrides: list[str], n: int = DEV_CLIPS) -> dict[str, Any]:
    """What makes two dev runs comparable: the preset's bytes, the overrides in order, the world's size."""
    return {"preset": str(preset.relative_to(ROOT)) if preset.is_relative_to(ROOT) else str(preset),
            "sha256": hashlib.sha256(preset.read_bytes()).hexdigest()[:12], "overrides": list(overrides), "n": n}


def run_one(folder: Path, world: str, seed: int, settings: dict[str, Any], preset: Path,
            n: int = DEV_CLIPS) -> dict[str, Any]:
    """One dev run (kept whole: world, shards, checkpoints); its ``dev_run.json``."""
    out = folder / run_name(world, seed)
    record = out / "dev_run.json"
    if record.is_file():
        return json.loads(record.read_text())
    plan = DemoPlan(output=out.resolve(), n=n, seed=seed, world=world, heatmaps=0, train_config=preset,
                    train_overrides=settings["overrides"])
    summary = run_demo(plan)
    out.mkdir(parents=True, exist_ok=True)
    done = {"world": world, "seed": seed, "n": n, "settings": settings,
            "results": {m: summary["results"][m]["ciou_at_0.5"] for m, _ in METHODS},
            "selected": chosen_on_val(out / "runs" / "htf"), "seconds": summary["seconds"]["total"]}
    atomic_write_text(record, json.dumps(done, indent=1))
    return done


# The rules a study reads from the gate positions' val scores (train.after_training.GATE_POSITIONS):
# the preset's margin, and that margin with each peer gap.
PEER_GAPS = (None, 0.0, 0.01, 0.02, 0.03, 0.05)


def gate_position_study(folder: Path, world: str, seed: int, n: int) -> dict[str, Any]:
    """A finished dev run's HTF with the gate set to each position after training (the rest of
    the after-training choices, the prior's weight included, made again for it on val) and
    evaluated on test; kept in ``gate_positions.json``. Reads the kept best.pt and shards."""
    from apps.demo import evaluate
    from train import after_training

    out = folder / run_name(world, seed)
    record = out / "gate_positions.json"
    if record.is_file():
        return json.loads(record.read_text())
    plan = DemoPlan(output=out.resolve(), n=n, seed=seed, world=world, heatmaps=0)
    best = out / "runs" / "htf" / "checkpoints" / "best.pt"
    val = [str(p) for p in sorted((out / "shards").glob("val-*.tar"))]
    study: dict[str, Any] = {"world": world, "seed": seed, "n": n, "positions": {}}
    for position in after_training.GATE_POSITIONS:
        moved = out / "runs" / "htf" / "gate_positions" / f"{position}.pt"
        moved.parent.mkdir(parents=True, exist_ok=True)
        chosen = after_training.choose_after_training_again(best, moved, val, {"train.gate_position": position})
        metrics = evaluate(plan, out / "shards", f"htf_gate_{position}", checkpoint=moved)
        name = after_training.GATE_SCORE_NAMES[after_training.GATE_POSITIONS[position]]
        study["positions"][position] = {"val": chosen["flow_gate_scores"][name],
                                        "test": metrics["ciou_at_0.5"],
                                        "prior_weight": chosen.get("motion_prior_weight")}
    atomic_write_text(record, json.dumps(study, indent=1))
    return study


def rule_outcomes(study: dict[str, Any], margin: float) -> dict[str, tuple[str, float]]:
    """Per peer gap: the position train.after_training.gate_from_scores picks from the study's val scores, and its test score."""
    from train.after_training import GATE_POSITIONS, gate_from_scores

    scores = {GATE_POSITIONS[p]: study["positions"][p]["val"] for p in GATE_POSITIONS}
    named = {v: k for k, v in GATE_POSITIONS.items()}
    picked = {gap: named[gate_from_scores(scores, margin, gap)] for gap in PEER_GAPS}
    return {("none" if gap is None else f"{gap:g}"): (pos, study["positions"][pos]["test"]) for gap, pos in picked.items()}


def render_gate_study(studies: list[dict[str, Any]], runs: list[dict[str, Any]], margin: float) -> str:
    """Per run: each position's val and test score, the no-flow run's test score, and what each peer gap picks."""
    from train.after_training import GATE_POSITIONS

    noflow = {(r["world"], r["seed"]): r["results"]["noflow"] for r in runs}
    gaps = ["none" if g is None else f"{g:g}" for g in PEER_GAPS]
    header = (["dev run"] + [f"{p}: val / test" for p in GATE_POSITIONS] + ["no flow: test"]
              + [f"gap {g}" for g in gaps])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    sums: dict[str, list[float]] = {g: [] for g in gaps}
    for st in studies:
        cells = [f"{st['positions'][p]['val']:.4f} / {st['positions'][p]['test']:.3f}" for p in GATE_POSITIONS]
        outcomes = rule_outcomes(st, margin)
        for g in gaps:
            sums[g].append(outcomes[g][1])
        lines.append(f"| `{st['world']}` s{st['seed']} | " + " | ".join(cells)
                     + f" | {noflow[(st['world'], st['seed'])]:.3f} | "
                     + " | ".join(f"{outcomes[g][0]}, {outcomes[g][1]:.3f}" for g in gaps) + " |")
    mean_noflow = statistics.fmean(noflow[(st["world"], st["seed"])] for st in studies)
    lines.append("| mean | " + " | ".join("" for _ in GATE_POSITIONS) + f" | {mean_noflow:.3f} | "
                 + " | ".join(_mean(sums[g]) for g in gaps) + " |")
    return "\n".join(lines) + "\n"


def foreign_runs(folder: Path, settings: dict[str, Any]) -> list[str]:
    """Runs in ``folder`` made with other settings."""
    return sorted(p.parent.name for p in folder.glob("*/dev_run.json")
                  if json.loads(p.read_text())["settings"] != settings)


def _mean(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f}" if values else "—"


def render_table(name: str, runs: list[dict[str, Any]], against: tuple[str, list[dict[str, Any]]] | None) -> str:
    """Per run and on average: each method's test cIoU@0.5, the other setting's beside it."""
    other = {(r["world"], r["seed"]): r for r in (against[1] if against else [])}
    columns = [(m, label, name) for m, label in METHODS]
    if against:
        columns = [c for m, label in METHODS[:2] for c in ((m, label, name), (m, label, against[0]))] + [columns[2]]
    header = ["dev run"] + [f"{label} ({setting})" if against and m != "sync" else label
                            for m, label, setting in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    sums: dict[int, list[float]] = {i: [] for i in range(len(columns))}
    for r in runs:
        cells = []
        for i, (m, _, setting) in enumerate(columns):
            source = r if setting == name else other.get((r["world"], r["seed"]))
            value = None if source is None else source["results"][m]
            cells.append("—" if value is None else f"{value:.3f}")
            if value is not None:
                sums[i].append(value)
        lines.append(f"| `{r['world']}` s{r['seed']} | " + " | ".join(cells) + " |")
    lines.append("| mean | " + " | ".join(_mean(sums[i]) for i in range(len(columns))) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/dev_runs.py", description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True, help="this setting's name (its folder under --work)")
    p.add_argument("--preset", default=str(PRESET.relative_to(ROOT)), metavar="YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training config key for both models (repeatable)")
    p.add_argument("--runs", default=",".join(run_name(w, s) for w, s in DEV_RUNS),
                   help="which dev runs (default: the seven; distractors-sync-s1,-s2,-s7 when named)")
    p.add_argument("--against", default=None, metavar="NAME", help="another setting's runs to put beside these")
    p.add_argument("--work", default=str(WORK), help="one folder per setting (default: bench/dev_runs)")
    p.add_argument("--gate-positions", action="store_true",
                   help="after the runs: HTF with each gate position set after training, evaluated on test, and "
                        "what the gate's rule with each train.gate_both_peer_gap picks (gate_positions.md)")
    p.add_argument("--n", type=int, default=DEV_CLIPS, help=f"clips per world (default {DEV_CLIPS})")
    a = p.parse_args(argv)
    preset = Path(a.preset) if Path(a.preset).is_file() else ROOT / a.preset
    if not preset.is_file():
        print(f"error: --preset {a.preset}: no such file; give a training preset (configs/train/*.yaml)",
              file=sys.stderr)
        return 2
    known = {run_name(w, s): (w, s) for w, s in DEV_RUNS + NAMED_DEV_RUNS}
    wanted = [r for r in a.runs.split(",") if r]
    unknown = [r for r in wanted if r not in known]
    if unknown:
        print(f"error: --runs: unknown dev run(s) {unknown}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    work = Path(a.work)
    folder = work / a.name
    settings = settings_of(preset, a.overrides, a.n)
    foreign = foreign_runs(folder, settings)
    if foreign:
        print(f"error: {folder} holds dev runs of other settings ({', '.join(foreign[:3])}); "
              f"give this setting another --name", file=sys.stderr)
        return 2
    runs = []
    for name in wanted:
        print(f"[dev] {a.name}: {name}", flush=True)
        runs.append(run_one(folder, *known[name], settings, preset, a.n))
    against = None
    if a.against:
        records = [json.loads(p.read_text()) for p in sorted((work / a.against).glob("*/dev_run.json"))]
        if not records:
            print(f"error: --against {a.against}: no finished dev run in {work / a.against}", file=sys.stderr)
            return 2
        against = (a.against, records)
    table = render_table(a.name, runs, against)
    atomic_write_text(folder / "dev.json", json.dumps({"settings": settings, "runs": runs}, indent=1))
    atomic_write_text(folder / "dev.md", f"# Dev runs: {a.name}\n\nSettings: `{json.dumps(settings)}`\n\n"
                      f"Test cIoU@0.5 at {a.n} clips:\n\n{table}")
    print(table, end="")
    if a.gate_positions:
        from htf.config import load_config
        from train.config import TrainConfig

        margin = load_config(TrainConfig, preset, a.overrides).train.gate_both_margin
        studies = [gate_position_study(folder, r["world"], r["seed"], a.n) for r in runs]
        study_table = render_gate_study(studies, runs, margin)
        atomic_write_text(folder / "gate_positions.md",
                          f"# Gate positions after training: {a.name}\n\nSettings: `{json.dumps(settings)}`; "
                          f"train.gate_both_margin {margin:g}.\n\nTest cIoU@0.5 at {a.n} clips; val in "
                          f"select_metric units. The gap columns: the position the rule picks, and its test "
                          f"score.\n\n{study_table}")
        print(study_table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
