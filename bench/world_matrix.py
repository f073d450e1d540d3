"""World x method matrix: the demo's recipe (one preset, one budget) on every world of the family.

Each cell is one ``apps.demo`` run (world, pipeline, HTF and no-flow under torchrun, the
evaluator on the test split, training-free baselines) for a (world, clips, seed); model
selection, the flow gate included, is on the val split only. The script is
resumable: a finished cell is never rerun, an interrupted one continues where it stopped
(world clips, pipeline tasks and training resume), and after every cell the results files
are rewritten from every finished cell, so a partial matrix is always on disk and says
which cells ran.

    python bench/world_matrix.py [--worlds demo,indep,...,distractors-sync] [--sizes 1000,400]
                                 [--seeds 3,4,5] [--work DIR] [--max-cells N] [--report-only]
                                 [--rescore-from DIR] [--preset configs/train/CANDIDATE.yaml]

Every cell records the preset it was trained with (the SHA-256 of its file and the commit);
the default work folder is one per preset (bench/world_runs/preset-<sha>-scoring<N>), and a work
folder holding cells of another preset is refused, so one table never mixes presets. Cells
also record ``SCORING``, the revision of the code that scores them: a cell of another revision
counts as another preset's.

The claimed preset is the demo's, configs/train/tiny.yaml. A candidate (``--preset``, a full
copy of tiny.yaml with its changes) gets its matrix beside the claimed one, over as many
sessions as it takes: its results go to bench/results_worlds_<name>.json / .md and no page
is rewritten. If it does better, copying its file over tiny.yaml (same bytes, same SHA) and
moving its results to bench/results_worlds.* makes it the claim without rerunning a cell.

A preset that differs from an earlier one only in keys that act after training
(``AFTER_TRAINING_KEYS``: motion prior, averaged maps, the gate's margin) trains the same
networks; ``--rescore-from DIR`` makes its cells from that preset's finished cells (training runs kept; world, val and test shards remade and
the world checked to be the same; the post-training choice and HTF's test evaluation redone).
Where the presets differ only in the gate's rule (``GATE_RULE_KEYS``), a cell whose recorded
val scores put the gate where it was under today's rule is carried over unchanged (its
folder linked file by file), and only the others are rescored.

Cells run seed-major (every world and size at seed 0, then seed 1, ...) so the first hours
cover every world. Writes ``bench/results_worlds.json`` (every cell and the summary) and
``bench/results_worlds.md``, and the tables of docs/train.md and README.md between their
matrix markers.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apps.demo import (BASELINE_MARGIN, BASELINES, MOTION_MARGIN, NOFLOW_SYNC, NOFLOW_TOLERANCE,  # noqa: E402
                       DemoPlan, chosen_on_val, run_demo)
from apps.synth import WORLDS, best_possible_score, world_config  # noqa: E402
from htf.io import atomic_write_text  # noqa: E402
from htf.machine import describe_machine, machine_record  # noqa: E402
from train.after_training import AFTER_TRAINING_KEYS  # noqa: E402

# distractors-same (silent movers and same-class pairs: flow magnitude misleads and only motion
# with the sound tells) joined with the eighth preset, after its 24 cells, as the harder sibling.
# distractors-sync (silent movers keep time with the sound: the sync map points at every mover)
# joined after the map blur showed a blurred sync map close to HTF on indep, as its harder sibling.
DEFAULT_WORLDS = ("demo", "indep", "indep-same", "distractors", "distractors-same", "distractors-sync")
# Seeds 3-5: no development run used them (dev runs: 1, 2, 7; seeds 0-2 were read by the earlier
# presets' matrices, archived as bench/results_worlds_preset-<sha>.*).
DEFAULT_SIZES, DEFAULT_SEEDS = (1000, 400), (3, 4, 5)
METHODS = (("htf", "HTF"), ("noflow", "no flow"), (NOFLOW_SYNC, "no flow + sync prior"),
           ("flow", "flow magnitude"), ("center", "center"), ("sync", "sync"))
# sync: motion over time vs loudness; noflow_sync: the no-flow run with HTF's sync prior
# (apps.demo.NOFLOW_SYNC, beside the claim). A row shows a method only when every cell has it.
MIN_SEEDS = 3   # fewer seeds: a measurement, not yet the claim (apps.demo defines the claim's margins)
CLAIMED_PRESET = ROOT / "configs" / "train" / "tiny.yaml"    # the training preset of apps.demo
# The preset this run's cells are trained with: the claimed one, or a candidate (--preset)
# whose matrix is made beside the claimed one's until it replaces it.
PRESET = CLAIMED_PRESET


def shown(path: Path) -> str:
    """A preset's file as cells and tables name it: relative to the checkout where it is inside."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def default_outputs(preset: Path) -> dict[str, Path | None]:
    """Where a matrix of ``preset`` writes by default: the claimed preset's results and the
    tables of docs/train.md and README.md; a candidate's own results files and no page."""
    if preset.resolve() == CLAIMED_PRESET.resolve():
        return {"out": ROOT / "bench" / "results_worlds", "page": ROOT / "docs" / "train.md",
                "readme": ROOT / "README.md"}
    return {"out": ROOT / "bench" / f"results_worlds_{preset.stem}", "page": None, "readme": None}


def preset_id(path: Path | None = None) -> str:
    """The preset a cell is trained with, as the first 12 hex digits of its file's SHA-256."""
    return hashlib.sha256((path or PRESET).read_bytes()).hexdigest()[:12]


# What a preset's cells measure depends on code too; this is raised when code changes the
# numbers of an unchanged preset, so cells made the old way are neither reused nor mixed in.
# 1: cells before it was recorded; 2: the prior's weight is scored on the maps the model then
# gives (the prior added, then the blur), no longer on the blurred map plus the prior.
SCORING = 2


def cell_identity(cell: dict[str, Any]) -> str:
    """The preset SHA a cell was made with, marked with its scoring when that is not today's."""
    preset = cell.get("preset", {})
    sha, scoring = preset.get("sha256", "unrecorded"), preset.get("scoring", 1)
    return sha if scoring == SCORING else f"{sha} (scoring {scoring})"


def preset_record() -> dict[str, Any]:
    """What a cell records of how it was made: preset file, SHA, commit and scoring."""
    return {"file": shown(PRESET), "sha256": preset_id(), "commit": git_commit(), "scoring": SCORING}


# Files whose edits cannot change a cell: the pages and the results this script rewrites
# after every cell (so a running matrix does not call its own checkout dirty).
NOT_CODE = (":(exclude)*.md", ":(exclude)bench/results_worlds*.json")


def git_commit(root: Path = ROOT) -> str:
    """The checkout's commit (with '+dirty' when files other than pages and results differ
    from it), or 'unknown'."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def cell_name(world: str, n: int, seed: int) -> str:
    return f"{world}-{n}-s{seed}"


def run_cell(work: Path, world: str, n: int, seed: int) -> dict[str, Any]:
    """One demo run; keeps its results, drops the videos and shards (they can be remade)."""
    out = work / cell_name(world, n, seed)
    plan = DemoPlan(output=out.resolve(), n=n, seed=seed, world=world, heatmaps=0, train_config=PRESET)
    summary = run_demo(plan)
    results = json.loads((out / "results.json").read_text())
    cell = {"world": world, "n": n, "seed": seed, "preset": preset_record(),
            "results": results["results"],
            "by_kind": results["by_kind"], "seconds": summary["seconds"],
            "selected": chosen_on_val(out / "runs" / "htf"), "machine": results.get("machine") or machine_record()}
    for heavy in ("world/video", "shards"):
        shutil.rmtree(out / heavy, ignore_errors=True)
    atomic_write_text(out / "cell.json", json.dumps(cell, indent=1))
    return cell


def _after_training_keys() -> list[tuple[str, str]]:
    """train.after_training.AFTER_TRAINING_KEYS as (config section, key)."""
    return [tuple(dotted.split(".")) for dotted in AFTER_TRAINING_KEYS]


def _preset_at(record: dict[str, Any]) -> dict[str, Any]:
    """The preset a cell was trained with: the file it records at the commit it records (a
    candidate's cells name the candidate's file), checked against the SHA it records."""
    import yaml

    file = record.get("file") or shown(CLAIMED_PRESET)
    text = subprocess.run(["git", "show", f"{record['commit'].split('+')[0]}:{file}"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    if hashlib.sha256(text.encode()).hexdigest()[:12] != record["sha256"]:
        raise SystemExit(f"error: {file} at commit {record['commit']} is not the preset {record['sha256']} its "
                         f"cells record (a checkout with uncommitted changes?); run the cells instead")
    return yaml.safe_load(text)


def _without(preset: dict[str, Any], dotted_keys: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``preset`` without the (section, key) of each of ``dotted_keys``."""
    kept = {section: dict(values or {}) for section, values in preset.items()}
    for dotted in dotted_keys:
        section, key = dotted.split(".", 1)
        kept.get(section, {}).pop(key, None)
    return kept


def trains_the_same(record: dict[str, Any]) -> bool:
    """Does the preset of a cell's ``record`` differ from this run's preset only after training?"""
    import yaml

    old, new = _preset_at(record), yaml.safe_load(PRESET.read_text())
    # With the loss's sync guide or target, the sync maps (and their smoothing) shape training too.
    guided = any(float(((cfg.get("model") or {}).get("loss") or {}).get(key) or 0) > 0
                 for cfg in (old, new) for key in ("sync_guide", "sync_target"))
    keys = [k for k in AFTER_TRAINING_KEYS if not (guided and k == "model.sync_smooth_frames")]
    return _without(old, keys) == _without(new, keys)


# The keys that decide only the gate's position after training (train.after_training.gate_from_scores).
GATE_RULE_KEYS = ("train.gate_both_margin", "train.gate_both_peer_gap", "train.gate_position")


def only_the_gate_rule_differs(record: dict[str, Any]) -> bool:
    """Does the preset of a cell's ``record`` differ from this run's preset in GATE_RULE_KEYS alone?"""
    import yaml

    return _without(_preset_at(record), GATE_RULE_KEYS) == _without(yaml.safe_load(PRESET.read_text()), GATE_RULE_KEYS)


def gate_stays(old: Path) -> bool:
    """Does today's gate rule, given the val scores an old cell's HTF run recorded after training,
    put the gate where that run put it? Then its after-training choices, all made after the gate
    (the prior's weight is chosen for the gate's map), and so the cell's every number, stay.
    A decision within 1e-5 of a threshold (the scores are recorded rounded) is not taken as
    staying."""
    from htf.config import load_config
    from train.config import TrainConfig
    from train.after_training import GATE_POSITIONS, gate_from_scores, gate_scores_from_record

    log = old / "runs" / "htf" / "metrics.jsonl"
    after = [json.loads(line) for line in log.read_text().splitlines() if '"after_training"' in line] if log.is_file() else []
    if not after or not after[-1].get("flow_gate_scores"):
        return False
    scores = gate_scores_from_record(after[-1]["flow_gate_scores"])
    rule = load_config(TrainConfig, PRESET).train
    if rule.gate_position != "val":
        return GATE_POSITIONS[rule.gate_position] == after[-1]["flow_gate"]
    nudged = {gate_from_scores(scores, max(0.0, rule.gate_both_margin + d),
                               None if rule.gate_both_peer_gap is None else max(0.0, rule.gate_both_peer_gap + d))
              for d in (-1e-5, 0.0, 1e-5)}
    return nudged == {after[-1]["flow_gate"]}


def carry_cell(old: Path, work: Path, world: str, n: int, seed: int) -> dict[str, Any]:
    """A cell of today's preset that is an old cell unchanged (gate_stays): its folder linked
    file by file (runs kept for a later rescore), its cell.json naming today's preset and where
    it was carried from."""
    out = work / cell_name(world, n, seed)
    shutil.rmtree(out, ignore_errors=True)          # a half-made attempt
    shutil.copytree(old, out, copy_function=os.link)
    before = json.loads((old / "cell.json").read_text())
    cell = {**before, "preset": preset_record(), "carried_from": {"preset": before["preset"], "cell": str(old)}}
    out.joinpath("cell.json").unlink()              # a link to the old cell's file: replaced, not written through
    atomic_write_text(out / "cell.json", json.dumps(cell, indent=1))
    return cell


def with_todays_after_training_choice(old_best: Path, new_best: Path, val_urls: list[str]) -> dict[str, Any]:
    """``old_best`` as today's preset would have ended it: today's after-training keys, and the
    trainer's after-training choices on ``val_urls`` (train.after_training.choose_after_training_again),
    written to ``new_best``. Returns the choices and the step."""
    from htf.config import load_config
    from train.config import TrainConfig
    from train.after_training import choose_after_training_again

    today = load_config(TrainConfig, PRESET)
    changes = {f"{section}.{key}": getattr(getattr(today, section), key) for section, key in _after_training_keys()}
    return choose_after_training_again(old_best, new_best, val_urls, changes)


def remake_eval_shards(plan: DemoPlan, world: Path) -> Path:
    """The val and test shards of a cell whose shards were dropped (its world made again)."""
    from apps.demo import make_shards

    return make_shards(plan, world, ("val", "test"))


def lacks_noflow_sync(cell_dir: Path) -> bool:
    """A finished cell made before apps.demo read the no-flow run with the sync prior, whose
    no-flow run is kept (a cell taken back from the results file has no runs)."""
    cell = json.loads((cell_dir / "cell.json").read_text())
    return NOFLOW_SYNC not in cell["results"] and (cell_dir / "runs" / "noflow" / "checkpoints" / "best.pt").is_file()


def add_noflow_sync(work: Path, world: str, n: int, seed: int) -> dict[str, Any]:
    """The "no flow + sync prior" readout (apps.demo.noflow_with_sync_prior) for a finished
    cell that lacks it, from its kept no-flow run: the world and its val and test shards made
    again (checked to be the same world), the readout, and its test evaluation added to the
    cell. Nothing else in the cell changes."""
    from apps.demo import clip_kinds, evaluate, make_world, noflow_with_sync_prior, results_by_kind

    out = work / cell_name(world, n, seed)
    cell = json.loads((out / "cell.json").read_text())
    plan = DemoPlan(output=out.resolve(), n=n, seed=seed, world=world, heatmaps=0, train_config=PRESET)
    kept = (out / "world" / "world.json").read_bytes()
    made = make_world(plan)
    if (made / "world.json").read_bytes() != kept:
        raise SystemExit(f"error: {made} is no longer the world of cell {out.name}; rerun the cell instead")
    shards = remake_eval_shards(plan, made)
    with_sync = noflow_with_sync_prior(plan, shards, out / "runs" / "noflow")
    if with_sync is not None:
        metrics = evaluate(plan, shards, NOFLOW_SYNC, checkpoint=with_sync)
        cell["results"][NOFLOW_SYNC] = {k: metrics[k] for k in ("ciou_at_0.5", "mean_ciou", "auc", "n")}
        cell["by_kind"][NOFLOW_SYNC] = results_by_kind(out / "eval" / NOFLOW_SYNC, clip_kinds(made))
        cell["added_later"] = {NOFLOW_SYNC: git_commit()}
    for heavy in ("world/video", "shards"):
        shutil.rmtree(out / heavy, ignore_errors=True)
    atomic_write_text(out / "cell.json", json.dumps(cell, indent=1))
    return cell


def rescore_cell(old: Path, work: Path, world: str, n: int, seed: int) -> dict[str, Any]:
    """A cell of today's preset from a finished cell of a preset that trains the same networks
    (trains_the_same): the world and its val and test shards are made again (checked to be the
    same world), each old best.pt (HTF, no flow) gets today's after-training keys and the
    trainer's after-training choices on val (make_after_training_choices), and a run that has
    any is evaluated again on test. The baselines are evaluated again too (their blur follows
    today's model.map_blur, apps.demo.map_blur)."""
    from apps.demo import BASELINES, clip_kinds, evaluate, make_world, results_by_kind

    before = json.loads((old / "cell.json").read_text())
    out = work / cell_name(world, n, seed)
    plan = DemoPlan(output=out.resolve(), n=n, seed=seed, world=world, heatmaps=0, train_config=PRESET)
    made = make_world(plan)
    if (made / "world.json").read_bytes() != (old / "world" / "world.json").read_bytes():
        raise SystemExit(f"error: {made} is not the world of {old}; rerun the cell instead")
    shards = remake_eval_shards(plan, made)
    results, by_kind = dict(before["results"]), dict(before["by_kind"])
    for method in ("htf", "noflow"):
        run = out / "runs" / method
        best = run / "checkpoints" / "best.pt"
        chosen = with_todays_after_training_choice(old / "runs" / method / "checkpoints" / "best.pt", best,
                                                   [str(p) for p in sorted(shards.glob("val-*.tar"))])
        if len(chosen) == 1:      # the step only: nothing acts after training on this run
            continue
        metrics = "".join(line for line in (old / "runs" / method / "metrics.jsonl").read_text().splitlines(True)
                          if '"kind": "motion_prior"' not in line and '"kind": "after_training"' not in line)
        atomic_write_text(run / "metrics.jsonl", metrics + json.dumps({"kind": "after_training", **chosen}) + "\n")
        results[method] = evaluate(plan, shards, method, checkpoint=best)
        by_kind[method] = results_by_kind(out / "eval" / method, clip_kinds(made))
    for baseline in BASELINES:
        results[baseline] = evaluate(plan, shards, baseline, baseline=baseline)
        by_kind[baseline] = results_by_kind(out / "eval" / baseline, clip_kinds(made))
    run = out / "runs" / "htf"
    cell = {"world": world, "n": n, "seed": seed, "preset": preset_record(),
            "results": {k: results[k] for k in before["results"]}, "by_kind": by_kind,
            "seconds": before["seconds"], "selected": chosen_on_val(run),
            "rescored_from": {"preset": before["preset"], "cell": str(old)}, "machine": machine_record(),
            "trained_on": before.get("machine")}
    for heavy in ("world/video", "shards"):
        shutil.rmtree(out / heavy, ignore_errors=True)
    atomic_write_text(out / "cell.json", json.dumps(cell, indent=1))
    return cell


# ---------------------------------------------------------------------------- summary

def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample sd (None for a single seed: one run says nothing about spread)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarize_row(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over seeds of each method's test cIoU@0.5, and the goal's checks."""
    row: dict[str, Any] = {"world": cells[0]["world"], "n": cells[0]["n"],
                           "seeds": sorted(c["seed"] for c in cells)}
    for key, _ in METHODS:
        scores = [c["results"][key]["ciou_at_0.5"] for c in cells if key in c["results"]]
        row[key] = _mean_sd(scores) if scores and len(scores) == len(cells) else None
    htf = [c["results"]["htf"]["ciou_at_0.5"] for c in cells]
    noflow = [c["results"]["noflow"]["ciou_at_0.5"] for c in cells]
    bases = [best_baseline_of(c) for c in cells]
    best_base = [c["results"][b]["ciou_at_0.5"] for c, b in zip(cells, bases)]
    row["htf_minus_noflow"] = _mean_sd([h - f for h, f in zip(htf, noflow)])
    row["htf_minus_best_baseline"] = _mean_sd([h - b for h, b in zip(htf, best_base)])
    row["never_costs"] = row["htf_minus_noflow"][0] >= -NOFLOW_TOLERANCE - 1e-9   # float slack
    row["beats_baselines"] = row["htf_minus_best_baseline"][0] >= BASELINE_MARGIN - 1e-9
    # No method can meet the margin over a baseline whose mean is above the most any map can score, less the margin
    row["best_baseline"] = statistics.fmean(best_base)
    row["best_possible"] = statistics.fmean(best_possible(c["world"], c["n"], c["seed"]) for c in cells)
    row["baseline_check_reachable"] = row["best_baseline"] <= row["best_possible"] - BASELINE_MARGIN + 1e-9
    same = [c for c in cells if "same" in c["by_kind"].get("htf", {})]
    if same:
        row["same_class_n"] = same[0]["by_kind"]["htf"]["same"]["n"]
        row["same_htf"] = _mean_sd([c["by_kind"]["htf"]["same"]["ciou_at_0.5"] for c in same])
        row["same_noflow"] = _mean_sd([c["by_kind"]["noflow"]["same"]["ciou_at_0.5"] for c in same])
        row["motion_tells"] = row["same_htf"][0] - row["same_noflow"][0] >= MOTION_MARGIN - 1e-9
        if all("same" in c["by_kind"].get(NOFLOW_SYNC, {}) for c in same):
            row["same_noflow_sync"] = _mean_sd([c["by_kind"][NOFLOW_SYNC]["same"]["ciou_at_0.5"] for c in same])
        shares = [margin_by_kind(c, b) for c, b in zip(cells, bases)]
        if all(shares):
            row["baseline_margin_by_kind"] = {key: statistics.fmean(s[key] for s in shares) for key in shares[0]}
    row["flow_gates"] = [c["selected"].get("flow_gate") for c in cells]
    row["motion_prior_weights"] = [c["selected"].get("motion_prior_weight") for c in cells]
    row["sync_targets"] = [c["selected"].get("sync_target") for c in cells]
    row["enough_seeds"] = len(cells) >= MIN_SEEDS
    return row


@functools.lru_cache(maxsize=None)
def best_possible(world: str, n: int, seed: int) -> float:
    """The most any map can score on the cell's test split (cIoU@0.5): 1 but for clips whose
    sounder has lookalikes, same-class objects that stand still or move as it does
    (apps.synth.best_possible_score, from the world's plans; nothing is rendered)."""
    return best_possible_score(world_config(world, n=n, seed=seed, size=DemoPlan.size))


def best_baseline_of(cell: dict[str, Any]) -> str:
    """The training-free baseline with the cell's highest test cIoU@0.5."""
    return max((b for b in BASELINES if b in cell["results"]), key=lambda b: cell["results"][b]["ciou_at_0.5"])


def margin_by_kind(cell: dict[str, Any], base: str) -> dict[str, float] | None:
    """HTF - ``base`` (the cell's best baseline; cIoU@0.5) split into what the distinct-class and the same-class
    test clips add (each kind's difference times its share of the clips: the two sum to the
    cell's margin), and ``distinct_most``, the most the distinct-class clips can add (HTF right
    on all of them). None where the cell has no same-class clips. Where ``distinct_most`` is
    at most the margin, appearance alone meets it only by being right on every distinct-class
    clip: otherwise HTF must beat the baseline where only motion can tell."""
    htf, other = cell["by_kind"].get("htf", {}), cell["by_kind"].get(base, {})
    kinds = ("distinct", "same")
    if not all(k in htf and k in other for k in kinds) or any(k not in kinds for k in htf):
        return None
    total = sum(htf[k]["n"] for k in kinds)
    share = {k: htf[k]["n"] / total for k in kinds}
    out = {k: share[k] * (htf[k]["ciou_at_0.5"] - other[k]["ciou_at_0.5"]) for k in kinds}
    out["distinct_most"] = share["distinct"] * (1.0 - other["distinct"]["ciou_at_0.5"])
    return out


def _fmt(ms: tuple[float, float | None] | None, signed: bool = False) -> str:
    if ms is None:
        return "—"
    mean, sd = ms
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return text if sd is None else f"{text} ± {sd:.3f}"


def _check(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "**no**")


def cell_preset(path: Path) -> str | None:
    """The preset a finished cell was made with (cell_identity); None: not finished;
    'unrecorded': made before cells recorded their preset."""
    if not path.is_file():
        return None
    return cell_identity(json.loads(path.read_text()))


def write_results(work: Path, planned: list[tuple[str, int, int]], json_path: Path, md_path: Path,
                  preset: str | None = None, page: Path | None = None,
                  readme: Path | None = None) -> list[dict]:
    """Summaries of the finished cells made with ``preset`` (default: the current one); with
    ``page`` (docs/train.md) and ``readme``, their tables between the matrix markers are
    replaced too."""
    preset = preset or preset_id()
    cells = {}
    for world, n, seed in planned:
        path = work / cell_name(world, n, seed) / "cell.json"
        if path.is_file() and cell_preset(path) == preset:
            cells[cell_name(world, n, seed)] = json.loads(path.read_text())
    rows = []
    for world, n in dict.fromkeys((w, n) for w, n, _ in planned):
        group = [c for c in cells.values() if c["world"] == world and c["n"] == n]
        if group:
            rows.append(summarize_row(group))
    missing = [cell_name(*p) for p in planned if cell_name(*p) not in cells]
    commits = sorted({c["preset"]["commit"] for c in cells.values()})
    atomic_write_text(json_path, json.dumps({"preset": {"file": shown(PRESET), "sha256": preset,
                                                "commits": commits, "scoring": SCORING},
                                     "cells": cells, "rows": rows, "not_run": missing,
                                     "goal": {"noflow_tolerance": NOFLOW_TOLERANCE,
                                              "baseline_margin": BASELINE_MARGIN,
                                              "motion_margin": MOTION_MARGIN, "min_seeds": MIN_SEEDS}},
                                    indent=1))
    markdown = render_markdown(rows, missing, preset, commits, machines_of(list(cells.values())))
    atomic_write_text(md_path, markdown)
    if page is not None:
        kept = [line for line in markdown.splitlines() if line.startswith(("|", "Cells not run yet"))]
        update_between(page, PAGE_BEGIN, PAGE_END, kept)
    if readme is not None:
        update_between(readme, README_BEGIN, README_END, render_readme_table(rows))
    return rows


def reported_cells(planned: list[tuple[str, int, int]], seeds: list[int], work: Path,
                   preset: str) -> list[tuple[str, int, int]]:
    """What the results cover: every default world and size at the seeds asked for and at the
    seeds of every finished cell (a run limited to some cells never drops the others from the
    table, and a candidate measured on other seeds than the claimed preset's is not listed as
    missing the claimed preset's seeds), then any planned cell beyond that."""
    finished = {json.loads(p.read_text())["seed"] for p in work.glob("*/cell.json") if cell_preset(p) == preset}
    everything = [(w, n, s) for s in sorted(set(seeds) | finished) for n in DEFAULT_SIZES for w in DEFAULT_WORLDS]
    return everything + [c for c in planned if c not in everything]


def recover_cells(json_path: Path, work: Path, preset: str) -> int:
    """Put the finished cells the committed results hold back into ``work``: the work folder is
    not in git, so a fresh clone continues the matrix instead of dropping them from the table."""
    if not json_path.is_file():
        return 0
    recovered = 0
    for name, cell in json.loads(json_path.read_text()).get("cells", {}).items():
        target = work / name / "cell.json"
        if cell_identity(cell) == preset and not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target, json.dumps(cell, indent=1))
            recovered += 1
    return recovered


PAGE_BEGIN = "<!-- matrix table: copied from bench/results_worlds.md -->"
PAGE_END = "<!-- end of matrix table -->"
README_BEGIN = "<!-- matrix: from bench/results_worlds.json -->"
README_END = "<!-- end of matrix -->"


def update_between(page: Path, begin: str, end: str, lines: list[str]) -> None:
    """Replace what lies between the markers ``begin`` and ``end`` of ``page`` by ``lines``."""
    text = page.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"error: {page} has no matrix markers ({begin} ... {end})")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    atomic_write_text(page, head + begin + "\n" + "\n".join(lines) + "\n" + end + tail)


def _claim(row: dict[str, Any]) -> str:
    holds = row["never_costs"] and row["beats_baselines"] and row.get("motion_tells") is not False
    text = "holds" if holds else "does not hold"
    return text if row["enough_seeds"] else f"{text} ({len(row['seeds'])} seed{'s' * (len(row['seeds']) > 1)})"


def render_readme_table(rows: list[dict[str, Any]]) -> list[str]:
    """The README's short table: each method's score, the val-chosen gates and the claim."""
    lines = ["| world | seeds | HTF | no flow | no flow + sync prior | flow magnitude | center | sync | "
             "same-class clips: HTF / no flow | flow gate (val) | motion prior (val) | claim |", "|" + "---|" * 12]
    for r in rows:
        same = f"{r['same_htf'][0]:.3f} / {r['same_noflow'][0]:.3f}" if "same_htf" in r else "—"
        lines.append(f"| `{r['world']}` ({r['n']}) | {','.join(str(s) for s in r['seeds'])} | {_fmt(r['htf'])} | "
                     f"{_fmt(r['noflow'])} | {_fmt(r.get('noflow_sync'))} | {_fmt(r['flow'])} | {_fmt(r['center'])} | "
                     f"{_fmt(r.get('sync'))} | "
                     f"{same} | {_choices(r.get('flow_gates', []))} | "
                     f"{_choices(r.get('motion_prior_weights', []))} | {_claim(r)} |")
    return lines


def _choices(values: list[Any]) -> str:
    return ", ".join(f"{v:g}" for v in values if v is not None) or "—"


def machines_of(cells: list[dict[str, Any]]) -> dict[str, int]:
    """How many cells each machine made (its one-line description; "unrecorded" for cells made
    before cells recorded it). A rescored cell counts where it was trained."""
    counts: dict[str, int] = {}
    for cell in cells:
        made_on = cell.get("trained_on") if "rescored_from" in cell else cell.get("machine")
        name = describe_machine(made_on) if made_on else "unrecorded"
        counts[name] = counts.get(name, 0) + 1
    return counts


def render_markdown(rows: list[dict[str, Any]], missing: list[str], preset: str, commits: list[str],
                    machines: dict[str, int] | None = None) -> str:
    lines = ["# World x method matrix (test cIoU@0.5, mean ± sd over seeds)", "",
             "Written by `python bench/world_matrix.py`; every cell is one `apps.demo --world NAME` run "
             "(selection on the val split only). Every row was made with one preset: "
             f"`{shown(PRESET)}` of SHA-256 `{preset}…`"
             + (f" (commit {', '.join(commits)})" if commits else "") + f", scored the way revision {SCORING} "
             "scores (`SCORING` in bench/world_matrix.py).", "",
             "| world | clips | seeds | HTF | no flow | no flow + sync prior | flow magnitude | center | sync | "
             "HTF − no flow | HTF − best baseline | same-class clips: HTF / no flow / no flow + sync prior | "
             "never costs (≥ −0.02) | beats baselines (≥ +0.15) | motion tells (≥ +0.10) | flow gate (val) | "
             "motion prior (val) |",
             "|" + "---|" * 17]
    for r in rows:
        seeds = ",".join(str(s) for s in r["seeds"]) + ("" if r["enough_seeds"] else " (< 3)")
        same = (f"{r['same_htf'][0]:.3f} / {r['same_noflow'][0]:.3f} / {_fmt(r.get('same_noflow_sync'))} "
                f"(n={r['same_class_n']})" if "same_htf" in r else "—")
        lines.append(f"| {r['world']} | {r['n']} | {seeds} | {_fmt(r['htf'])} | {_fmt(r['noflow'])} | "
                     f"{_fmt(r.get('noflow_sync'))} | "
                     f"{_fmt(r['flow'])} | {_fmt(r['center'])} | {_fmt(r.get('sync'))} | "
                     f"{_fmt(r['htf_minus_noflow'], True)} | "
                     f"{_fmt(r['htf_minus_best_baseline'], True)} | {same} | {_check(r['never_costs'])} | "
                     f"{_check(r['beats_baselines'])} | {_check(r.get('motion_tells'))} | "
                     f"{_choices(r.get('flow_gates', []))} | {_choices(r.get('motion_prior_weights', []))} |")
    lines += ["", "A row with fewer than 3 seeds is a measurement, not yet a claim. No flow + sync prior: the "
              "no-flow run's best.pt with HTF's sync prior, its weight chosen on val (the sync map needs no "
              "optical flow); beside the claim, whose \"no flow\" is the no-flow run as trained. Flow gate and motion prior: "
              "what val chose in each seed's cell (gate 1 = open, 0 = closed, 0.5 = both: the mean of the "
              "flow net's and the twin's maps; prior weight 0 = none)."]
    out_of_reach = [f"{r['world']} {r['n']} ({r['best_baseline']:.3f}; at most {r['best_possible']:.3f})"
                    for r in rows if not r.get("baseline_check_reachable", True)]
    if out_of_reach:
        lines += ["", f"Beats baselines is out of reach for any method where the best training-free baseline's "
                  f"mean (per seed, the best of the baselines) is above the most any map can score less "
                  f"{BASELINE_MARGIN}: " + "; ".join(out_of_reach) + ". There the world is too easy for that "
                  "comparison; the row's \"no\" stands as measured."]
    limited = [r for r in rows if r.get("best_possible", 1.0) < 1.0]
    if limited:
        lines += ["", "The most any map can score (test cIoU@0.5, mean over seeds): 1, but where the sounder has "
                  "lookalikes, objects of its class that stand still or move as it does, which nothing seen or "
                  "heard tells apart (a fair guess scores 1 / (1 + lookalikes) of such a clip; "
                  "`apps.synth.best_possible_score`). What HTF took of the room over the best baseline: "
                  + "; ".join(f"{r['world']} {r['n']}: at most {r['best_possible']:.3f}, best baseline "
                              f"{r['best_baseline']:.3f}, HTF {r['htf'][0]:.3f} "
                              f"({r['htf_minus_best_baseline'][0]:+.3f} of {r['best_possible'] - r['best_baseline']:+.3f})"
                              for r in limited) + "."]
    split = [r for r in rows if "baseline_margin_by_kind" in r]
    if split:
        lines += ["", "HTF − best baseline split by kind of test clip (means over seeds; each kind's difference "
                  "times its share of the clips, so the two add up to the margin), and the most the distinct-class "
                  "clips can add (HTF right on every one): "
                  + "; ".join(f"{r['world']} {r['n']}: distinct-class {m['distinct']:+.3f} (at most "
                              f"{m['distinct_most']:+.3f}), same-class {m['same']:+.3f}"
                              for r in split for m in [r["baseline_margin_by_kind"]]) + "."]
        motion_only = [f"{r['world']} {r['n']} ({r['baseline_margin_by_kind']['distinct_most']:+.3f})" for r in split
                       if r["baseline_margin_by_kind"]["distinct_most"] <= BASELINE_MARGIN + 1e-9]
        if motion_only:
            lines += ["", f"Where the distinct-class clips can add no more than the margin ({BASELINE_MARGIN}), what "
                      "things look like meets it only with every distinct-class clip right and the same-class clips "
                      "no worse than the baseline's; short of that, HTF must beat the baseline on the same-class "
                      "clips, where only motion can tell: " + "; ".join(motion_only) + "."]
    targets = [f"{r['world']} {r['n']}: {_choices(r['sync_targets'])}" for r in rows
               if any(v is not None for v in r.get("sync_targets", []))]
    if targets:
        lines += ["", "Sync target HTF trained with, decided on val before training (model.loss.sync_target_min_val; "
                  "0 = off), per seed: " + "; ".join(targets) + "."]
    if machines:
        lines += ["", "Trained on (runs repeat to the digit on one machine, not across CPUs): "
                  + "; ".join(f"{name}: {count} cell{'s' * (count > 1)}" for name, count in machines.items()) + "."]
    if missing:
        lines += ["", f"Cells not run yet ({len(missing)}; rerun the script to complete them): "
                  + ", ".join(missing)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/world_matrix.py", description=__doc__.split("\n")[0])
    p.add_argument("--worlds", default=",".join(DEFAULT_WORLDS))
    p.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    p.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)))
    p.add_argument("--preset", default=str(CLAIMED_PRESET.relative_to(ROOT)), metavar="YAML",
                   help="training preset of every cell (default: the demo's, configs/train/tiny.yaml); another "
                        "one is a candidate: its results go to bench/results_worlds_<name>.* and no page is "
                        "rewritten, so the claimed matrix stays until the candidate's file replaces tiny.yaml")
    p.add_argument("--work", default=None,
                   help="one folder per cell (default: bench/world_runs/preset-<sha of the preset>-scoring<SCORING>)")
    p.add_argument("--max-cells", type=int, default=None, help="stop after running this many cells")
    p.add_argument("--report-only", action="store_true", help="rewrite the results from finished cells")
    p.add_argument("--out", default=None,
                   help="results path without suffix (default: bench/results_worlds, or bench/results_worlds_<name> "
                        "for a candidate preset)")
    p.add_argument("--page", default=None,
                   help="page whose matrix table is rewritten with the results ('' for none; default: "
                        "docs/train.md for the claimed preset, none for a candidate)")
    p.add_argument("--readme", default=None,
                   help="README whose short matrix table is rewritten ('' for none; default: README.md for the "
                        "claimed preset, none for a candidate)")
    p.add_argument("--rescore-from", default=None, metavar="DIR",
                   help="a work folder of a preset that differs from today's only in keys that act after "
                        "training (model.motion_prior_*): its cells' training runs are kept and only the "
                        "post-training choice and HTF's test evaluation are redone")
    a = p.parse_args(argv)
    global PRESET
    claimed_before = PRESET
    given = Path(a.preset)
    PRESET = (given if given.exists() else ROOT / given).resolve()
    try:
        return _matrix(a)
    finally:
        PRESET = claimed_before        # a call from Python (the tests) leaves the module as it was


def _matrix(a: argparse.Namespace) -> int:
    worlds = [w for w in a.worlds.split(",") if w]
    unknown = [w for w in worlds if w not in WORLDS]
    if unknown:
        print(f"error: unknown world(s) {unknown}; known: {', '.join(WORLDS)}", file=sys.stderr)
        return 2
    try:
        sizes = [int(v) for v in a.sizes.split(",") if v]
        seeds = [int(v) for v in a.seeds.split(",") if v]
    except ValueError:
        print("error: --sizes and --seeds take comma-separated integers", file=sys.stderr)
        return 2
    planned = [(w, n, s) for s in seeds for n in sizes for w in worlds]
    if not PRESET.is_file():
        print(f"error: --preset {a.preset}: no such file; give a training preset (configs/train/*.yaml)",
              file=sys.stderr)
        return 2
    defaults = default_outputs(PRESET)
    out = Path(a.out) if a.out else defaults["out"]
    page = Path(a.page) if a.page else (defaults["page"] if a.page is None else None)
    readme = Path(a.readme) if a.readme else (defaults["readme"] if a.readme is None else None)
    preset = preset_id()
    work = Path(a.work) if a.work else ROOT / "bench" / "world_runs" / f"preset-{preset}-scoring{SCORING}"
    foreign = [cell_name(*p) for p in planned
               if cell_preset(work / cell_name(*p) / "cell.json") not in (None, preset)]
    if foreign:
        print(f"error: {work} holds cells made with another preset ({', '.join(foreign[:3])}); this run "
              f"uses {shown(PRESET)} {preset}: pass another --work", file=sys.stderr)
        return 2
    json_path, md_path = out.with_suffix(".json"), out.with_suffix(".md")
    recovered = recover_cells(json_path, work, preset)
    if recovered:
        print(f"[matrix] {recovered} finished cell(s) taken from {json_path} (the work folder lacked them)")
    reported = reported_cells(planned, seeds, work, preset)
    rescore_from = Path(a.rescore_from) if a.rescore_from else None
    carry = False
    if rescore_from is not None:
        records = [json.loads(r) for r in sorted({json.dumps(json.loads(c.read_text())["preset"], sort_keys=True)
                                                  for c in rescore_from.glob("*/cell.json")})]
        differing = [r["commit"] for r in records if not trains_the_same(r)]
        if not records or differing:
            print(f"error: {rescore_from}: " + (f"its preset (commit {differing[0]}) trains other networks than "
                  f"today's {shown(PRESET)}; run the cells instead" if differing else "no finished cell"),
                  file=sys.stderr)
            return 2
        carry = all(only_the_gate_rule_differs(r) for r in records)
    ran = 0
    for world, n, seed in planned:
        if a.report_only or (a.max_cells is not None and ran >= a.max_cells):
            break
        if (work / cell_name(world, n, seed) / "cell.json").is_file():
            if rescore_from is None and lacks_noflow_sync(work / cell_name(world, n, seed)):
                t0 = time.time()
                print(f"[matrix] cell {cell_name(world, n, seed)}: adding the no flow + sync prior readout "
                      f"(its no-flow run is kept)", flush=True)
                add_noflow_sync(work, world, n, seed)
                print(f"[matrix] cell {cell_name(world, n, seed)} readout added in {time.time() - t0:.0f} s", flush=True)
                write_results(work, reported, json_path, md_path, page=page, readme=readme)
            continue
        t0 = time.time()
        print(f"[matrix] cell {cell_name(world, n, seed)}", flush=True)
        if rescore_from is not None:
            old = rescore_from / cell_name(world, n, seed)
            if not (old / "cell.json").is_file():
                print(f"[matrix] {old} has no finished cell: skipped", flush=True)
                continue
            if carry and gate_stays(old):
                print(f"[matrix] cell {cell_name(world, n, seed)}: today's gate rule keeps its gate; carried over",
                      flush=True)
                carry_cell(old, work, world, n, seed)
            else:
                rescore_cell(old, work, world, n, seed)
        else:
            run_cell(work, world, n, seed)
        ran += 1
        print(f"[matrix] cell {cell_name(world, n, seed)} done in {time.time() - t0:.0f} s", flush=True)
        write_results(work, reported, json_path, md_path, page=page, readme=readme)
    rows = write_results(work, reported, json_path, md_path, page=page, readme=readme)
    print(f"[matrix] {len(rows)} row(s) with results -> {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
