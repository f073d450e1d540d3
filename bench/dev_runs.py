"""The development runs: where a training idea is measured before any matrix cell sees it.

Seven ``apps.demo`` runs at 400 clips, on seeds the matrix never uses (bench/world_matrix.py
runs seeds 3-5): demo s7, distractors s7, indep s1 and s7, indep-same s1, s2 and s7. Every
run keeps its checkpoints and shards, so an after-training idea can be read again from them
without training. One folder per setting; a folder holding runs of other settings is
refused. Resumable: a finished run is kept, an interrupted one continues.

    python bench/dev_runs.py --name NAME [--preset configs/train/tiny.yaml] [--set KEY=VALUE ...]
                             [--runs demo-s7,indep-s1,...] [--against NAME] [--work DIR]

Writes ``<work>/<name>/dev.md`` / ``dev.json``: test cIoU@0.5 of HTF, no flow and the sync
map per run and their means, and with ``--against`` the other setting's beside them.
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
DEV_CLIPS = 400
METHODS = (("htf", "HTF"), ("noflow", "no flow"), ("sync", "sync map"))
PRESET = ROOT / "configs" / "train" / "tiny.yaml"
WORK = ROOT / "bench" / "dev_runs"


def run_name(world: str, seed: int) -> str:
    return f"{world}-s{seed}"


def settings_of(preset: Path, overrides: list[str]) -> dict[str, Any]:
    """What makes two dev runs comparable: the preset's bytes and the overrides, in order."""
    return {"preset": str(preset.relative_to(ROOT)) if preset.is_relative_to(ROOT) else str(preset),
            "sha256": hashlib.sha256(preset.read_bytes()).hexdigest()[:12], "overrides": list(overrides)}


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
                   help="which dev runs (default: all seven)")
    p.add_argument("--against", default=None, metavar="NAME", help="another setting's runs to put beside these")
    p.add_argument("--work", default=str(WORK), help="one folder per setting (default: bench/dev_runs)")
    p.add_argument("--n", type=int, default=DEV_CLIPS, help=argparse.SUPPRESS)   # tests: a smaller world
    a = p.parse_args(argv)
    preset = Path(a.preset) if Path(a.preset).is_file() else ROOT / a.preset
    if not preset.is_file():
        print(f"error: --preset {a.preset}: no such file; give a training preset (configs/train/*.yaml)",
              file=sys.stderr)
        return 2
    known = {run_name(w, s): (w, s) for w, s in DEV_RUNS}
    wanted = [r for r in a.runs.split(",") if r]
    unknown = [r for r in wanted if r not in known]
    if unknown:
        print(f"error: --runs: unknown dev run(s) {unknown}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    work = Path(a.work)
    folder = work / a.name
    settings = settings_of(preset, a.overrides)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
