"""The world matrix: summaries over seeds, the goal's checks, and a partial matrix that says
which cells ran (bench/world_matrix.py; the demo report reads its results)."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import world_matrix as wm  # noqa: E402


def _cell(world, n, seed, htf, noflow, flow, same=None, preset=None, prior=None):
    m = lambda c: {"ciou_at_0.5": c, "mean_ciou": c, "auc": c, "n": 200}  # noqa: E731
    by_kind = {}
    if same is not None:
        by_kind = {"htf": {"same": {"ciou_at_0.5": same[0], "n": 60}},
                   "noflow": {"same": {"ciou_at_0.5": same[1], "n": 60}}}
    selected = {"flow_gate": 1} if prior is None else {"flow_gate": 1, "motion_prior_weight": prior}
    return {"world": world, "n": n, "seed": seed, "by_kind": by_kind, "selected": selected,
            "preset": {"file": "configs/train/tiny.yaml", "sha256": preset or wm.preset_id(), "commit": "abc1234",
                       "scoring": wm.SCORING},
            "results": {"htf": m(htf), "noflow": m(noflow), "flow": m(flow), "center": m(0.0), "random": m(0.0)}}


def test_row_gives_mean_and_sd_over_seeds_and_checks_the_goal():
    cells = [_cell("indep-same", 1000, s, h, 0.6, 0.4, same=(0.6, 0.3)) for s, h in enumerate((0.7, 0.8, 0.75))]
    row = wm.summarize_row(cells)
    assert row["htf"][0] == pytest.approx(0.75) and row["htf"][1] == pytest.approx(0.05)
    assert wm.summarize_row(cells[:1])["htf"] == (0.7, None)      # one seed: no spread to report
    assert row["htf_minus_noflow"][0] == pytest.approx(0.15)
    assert row["htf_minus_best_baseline"][0] == pytest.approx(0.35)
    assert row["never_costs"] and row["beats_baselines"] and row["motion_tells"] and row["enough_seeds"]


def test_row_reports_a_missed_goal():
    row = wm.summarize_row([_cell("indep", 400, 0, 0.5, 0.6, 0.4)])
    assert not row["never_costs"] and not row["beats_baselines"] and not row["enough_seeds"]
    assert "motion_tells" not in row       # no same-class clips in this world


def test_the_sync_baseline_counts_as_a_baseline_where_cells_have_it_and_shows_a_dash_where_not():
    with_sync = [_cell("indep", 400, s, 0.8, 0.7, 0.5) for s in range(3)]
    for cell in with_sync:
        cell["results"]["sync"] = {**cell["results"]["flow"], "ciou_at_0.5": 0.7}
    row = wm.summarize_row(with_sync)
    assert row["sync"][0] == pytest.approx(0.7) and row["htf_minus_best_baseline"][0] == pytest.approx(0.1)
    assert not row["beats_baselines"]
    older = wm.summarize_row([_cell("indep", 400, 0, 0.8, 0.7, 0.5)])
    assert older["sync"] is None and older["htf_minus_best_baseline"][0] == pytest.approx(0.3)
    assert "| 0.000 | — | +0.100 |" in wm.render_markdown([older], [], "abc", [])


def test_a_row_whose_best_baseline_leaves_less_than_the_margin_below_one_is_named_out_of_reach():
    easy = [_cell("indep", 400, s, 0.95, 0.9, 0.5) for s in range(3)]
    for cell, sync in zip(easy, (0.9, 0.85, 0.86)):
        cell["results"]["sync"] = {**cell["results"]["flow"], "ciou_at_0.5": sync}
    row, fair = wm.summarize_row(easy), wm.summarize_row([_cell("demo", 400, s, 0.9, 0.7, 0.6) for s in range(3)])
    assert not row["beats_baselines"] and not row["baseline_check_reachable"]
    assert fair["baseline_check_reachable"]
    page = wm.render_markdown([row, fair], [], "abc", [])
    assert "out of reach" in page and "indep 400 (0.870; at most 1.000)" in page and "demo 400 (" not in page
    assert "out of reach" not in wm.render_markdown([fair], [], "abc", [])


def test_the_most_any_map_can_score_is_the_worlds_own_limit_on_each_seeds_test_split():
    from apps.synth import best_possible_score, world_config
    same = wm.summarize_row([_cell("indep-same", 400, s, 0.9, 0.7, 0.6) for s in range(3)])
    expected = sum(best_possible_score(world_config("indep-same", n=400, seed=s)) for s in range(3)) / 3
    assert same["best_possible"] == pytest.approx(expected) and same["best_possible"] < 1.0
    assert wm.summarize_row([_cell("indep", 400, s, 0.9, 0.7, 0.6) for s in range(3)])["best_possible"] == 1.0


def test_a_baseline_closer_than_the_margin_to_the_worlds_limit_is_named_out_of_reach():
    cells = [_cell("indep-same", 400, s, 0.9, 0.7, 0.6) for s in range(3)]
    limit = wm.summarize_row(cells)["best_possible"]
    for cell in cells:       # below 1 - margin, but within the margin of what any map can score
        cell["results"]["sync"] = {**cell["results"]["flow"], "ciou_at_0.5": limit - 0.14}
    row = wm.summarize_row(cells)
    assert row["best_baseline"] < 0.85 and not row["baseline_check_reachable"]
    assert f"indep-same 400 ({limit - 0.14:.3f}; at most {limit:.3f})" in wm.render_markdown([row], [], "abc", [])


def test_the_page_says_what_htf_took_of_the_room_over_the_baseline_where_the_limit_is_below_one():
    same = wm.summarize_row([_cell("indep-same", 400, s, 0.9, 0.7, 0.6) for s in range(3)])
    plain = wm.summarize_row([_cell("indep", 400, s, 0.9, 0.7, 0.6) for s in range(3)])
    page = wm.render_markdown([same, plain], [], "abc", [])
    room = same["best_possible"] - 0.6        # flow magnitude, the best baseline
    assert f"indep-same 400: at most {same['best_possible']:.3f}, best baseline 0.600, HTF 0.900 (+0.300 of {room:+.3f})" in page
    assert "indep 400: at most" not in page


def _kinds(cell, method, distinct, same, n_distinct=140, n_same=60):
    k = lambda c, n: {"ciou_at_0.5": c, "mean_ciou": c, "auc": c, "n": n}  # noqa: E731
    cell["by_kind"][method] = {"distinct": k(distinct, n_distinct), "same": k(same, n_same)}


def test_the_baseline_margin_splits_by_kind_of_clip_and_bounds_what_distinct_clips_can_add():
    cells = []
    for seed in range(3):
        cell = _cell("indep-same", 1000, seed, 0.86, 0.7, 0.5)
        cell["results"]["sync"] = {**cell["results"]["flow"], "ciou_at_0.5": 0.74}
        _kinds(cell, "htf", 0.98, 0.58)
        _kinds(cell, "noflow", 0.98, 0.3)
        _kinds(cell, "sync", 0.80, 0.60)
        cells.append(cell)
    row = wm.summarize_row(cells)
    split = row["baseline_margin_by_kind"]
    assert split["distinct"] == pytest.approx(0.7 * 0.18) and split["same"] == pytest.approx(0.3 * -0.02)
    assert split["distinct"] + split["same"] == pytest.approx(row["htf_minus_best_baseline"][0])
    assert split["distinct_most"] == pytest.approx(0.7 * 0.20)
    page = wm.render_markdown([row], [], "abc", [])
    assert "indep-same 1000: distinct-class +0.126 (at most +0.140), same-class -0.006" in page
    assert "only motion can tell: indep-same 1000 (+0.140)" in page


def test_a_row_whose_distinct_clips_can_add_more_than_the_margin_is_not_named_motion_only():
    cell = _cell("indep-same", 1000, 0, 0.9, 0.7, 0.5)
    cell["results"]["sync"] = {**cell["results"]["flow"], "ciou_at_0.5": 0.6}
    _kinds(cell, "htf", 0.98, 0.7)
    _kinds(cell, "noflow", 0.98, 0.3)
    _kinds(cell, "sync", 0.6, 0.6)
    page = wm.render_markdown([wm.summarize_row([cell])], [], "abc", [])
    assert "at most +0.280" in page and "only motion can tell" not in page


def test_a_row_without_same_class_clips_has_no_split_by_kind():
    cell = _cell("indep", 1000, 0, 0.9, 0.7, 0.5)
    cell["by_kind"]["htf"] = {"distinct": {"ciou_at_0.5": 0.9, "n": 200}}
    cell["by_kind"]["flow"] = {"distinct": {"ciou_at_0.5": 0.5, "n": 200}}
    row = wm.summarize_row([cell])
    assert "baseline_margin_by_kind" not in row and "split by kind" not in wm.render_markdown([row], [], "abc", [])


def test_partial_matrix_lists_the_cells_not_run_and_the_demo_report_reads_it(tmp_path):
    cell = _cell("indep", 1000, 0, 0.8, 0.7, 0.5)
    (tmp_path / "indep-1000-s0").mkdir()
    (tmp_path / "indep-1000-s0" / "cell.json").write_text(json.dumps(cell))
    planned = [("indep", 1000, 0), ("indep", 1000, 1)]
    rows = wm.write_results(tmp_path, planned, tmp_path / "r.json", tmp_path / "r.md")
    assert len(rows) == 1 and rows[0]["seeds"] == [0]
    assert "indep-1000-s1" in (tmp_path / "r.md").read_text()
    assert json.loads((tmp_path / "r.json").read_text())["not_run"] == ["indep-1000-s1"]
    from apps.demo import matrix_claims
    table, note = matrix_claims(json.loads((tmp_path / "r.json").read_text()), tmp_path / "r.json")
    assert table[1][0] == "indep" and table[1][-1] == "yes (fewer than 3 seeds)"
    assert "indep-1000-s1" in note


def test_the_demo_report_shows_the_fresh_seed_matrix_only_when_it_is_the_claimed_presets(tmp_path):
    from apps.demo import matrix_sections
    for name, seeds in (("claimed", (3, 4, 5)), ("fresh", (8, 9))):
        work = tmp_path / f"{name}-cells"
        for seed in seeds:
            (work / f"indep-1000-s{seed}").mkdir(parents=True)
            (work / f"indep-1000-s{seed}" / "cell.json").write_text(json.dumps(_cell("indep", 1000, seed, 0.8, 0.7, 0.5)))
        wm.write_results(work, [("indep", 1000, s) for s in seeds], tmp_path / f"{name}.json", tmp_path / f"{name}.md")
    sections = matrix_sections(tmp_path / "claimed.json", tmp_path / "fresh.json")
    assert [title.split(" (")[0] for title, _, _ in sections] == ["The claim on other worlds",
                                                                 "The same preset on fresh seeds"]
    assert sections[0][1][1][-1] == "yes" and sections[1][1][1][-1] == "yes (fewer than 3 seeds)"
    other = json.loads((tmp_path / "fresh.json").read_text())
    other["preset"]["sha256"] = "another"
    (tmp_path / "fresh.json").write_text(json.dumps(other))
    assert len(matrix_sections(tmp_path / "claimed.json", tmp_path / "fresh.json")) == 1
    assert len(matrix_sections(tmp_path / "claimed.json", tmp_path / "absent.json")) == 1


def test_unknown_world_is_refused_with_one_error_line(capsys):
    assert wm.main(["--worlds", "nope", "--report-only"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown world")


def _write_cell(work: Path, cell: dict) -> None:
    folder = work / wm.cell_name(cell["world"], cell["n"], cell["seed"])
    folder.mkdir(parents=True)
    (folder / "cell.json").write_text(json.dumps(cell))


def test_results_use_only_cells_of_the_current_preset_and_name_it(tmp_path):
    _write_cell(tmp_path, _cell("indep", 400, 0, 0.8, 0.7, 0.5))
    _write_cell(tmp_path, _cell("indep", 400, 1, 0.1, 0.7, 0.5, preset="0123456789ab"))
    rows = wm.write_results(tmp_path, [("indep", 400, 0), ("indep", 400, 1)], tmp_path / "r.json", tmp_path / "r.md")
    assert rows[0]["seeds"] == [0] and rows[0]["htf"] == (0.8, None)
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["preset"]["sha256"] == wm.preset_id() and data["preset"]["commits"] == ["abc1234"]
    assert wm.preset_id() in (tmp_path / "r.md").read_text()


def test_a_work_folder_with_cells_of_another_preset_is_refused(tmp_path, capsys):
    _write_cell(tmp_path, _cell("indep", 400, 0, 0.8, 0.7, 0.5, preset="0123456789ab"))
    args = ["--worlds", "indep", "--sizes", "400", "--seeds", "0", "--work", str(tmp_path),
            "--out", str(tmp_path / "r")]
    assert wm.main(args) == 2
    assert capsys.readouterr().err.startswith("error: ") and not (tmp_path / "r.md").exists()


def test_the_page_table_between_the_markers_is_rewritten_and_the_rest_kept(tmp_path):
    (tmp_path / "indep-1000-s0").mkdir()
    (tmp_path / "indep-1000-s0" / "cell.json").write_text(json.dumps(_cell("indep", 1000, 0, 0.8, 0.7, 0.5)))
    page = tmp_path / "train.md"
    page.write_text(f"before\n{wm.PAGE_BEGIN}\n| old table |\n{wm.PAGE_END}\nafter\n")
    wm.write_results(tmp_path, [("indep", 1000, 0), ("indep", 1000, 1)], tmp_path / "r.json",
                     tmp_path / "r.md", page=page)
    text = page.read_text()
    assert text.startswith("before\n") and text.endswith(f"{wm.PAGE_END}\nafter\n")
    assert "| old table |" not in text and "| indep | 1000 | 0 (< 3) | 0.800 |" in text
    assert "Cells not run yet (1; rerun the script to complete them): indep-1000-s1" in text


def test_a_fresh_work_folder_continues_from_the_cells_the_results_file_holds(tmp_path):
    kept, foreign = _cell("indep", 400, 0, 0.8, 0.7, 0.5), _cell("indep", 400, 1, 0.1, 0.7, 0.5, preset="0123456789ab")
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"cells": {"indep-400-s0": kept, "indep-400-s1": foreign}}))
    work = tmp_path / "work"
    assert wm.recover_cells(results, work, wm.preset_id()) == 1
    assert json.loads((work / "indep-400-s0" / "cell.json").read_text()) == kept
    assert not (work / "indep-400-s1").exists()
    rows = wm.write_results(work, [("indep", 400, 0), ("indep", 400, 1)], results, tmp_path / "r.md")
    assert rows[0]["seeds"] == [0] and rows[0]["htf"] == (0.8, None)


def test_the_readme_table_gives_each_row_its_claim_and_names_single_seed_rows(tmp_path):
    for seed in (0, 1, 2):
        _write_cell(tmp_path, _cell("demo", 400, seed, 0.9, 0.6, 0.5, same=(0.8, 0.3), prior=0.25 * seed))
    _write_cell(tmp_path, _cell("distractors", 1000, 0, 0.6, 0.7, 0.3))     # made before the prior existed
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{wm.README_BEGIN}\n| stale |\n{wm.README_END}\nrest\n")
    wm.write_results(tmp_path, [("demo", 400, s) for s in (0, 1, 2)] + [("distractors", 1000, 0)],
                     tmp_path / "r.json", tmp_path / "r.md", readme=readme)
    text = readme.read_text()
    assert "| stale |" not in text and text.startswith("intro\n") and text.endswith(f"{wm.README_END}\nrest\n")
    assert "| `demo` (400) | 0,1,2 | 0.900 ± 0.000 | 0.600 ± 0.000 | — | 0.500 ± 0.000 | 0.000 ± 0.000 | — | 0.800 / 0.300 | 1, 1, 1 | 0, 0.25, 0.5 | holds |" in text
    assert "| `distractors` (1000) | 0 | 0.600 | 0.700 | — | 0.300 | 0.000 | — | — | 1 | — | does not hold (1 seed) |" in text


def test_a_cell_calls_its_checkout_dirty_for_code_edits_not_for_pages_or_results(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    for name in ("train.py", "README.md", "bench/results_worlds.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("v1\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "v1")
    (tmp_path / "README.md").write_text("v2\n")              # the matrix rewrites its tables
    (tmp_path / "bench/results_worlds.json").write_text("v2\n")
    assert not wm.git_commit(tmp_path).endswith("+dirty")
    (tmp_path / "train.py").write_text("v2\n")
    assert wm.git_commit(tmp_path).endswith("+dirty")


OLD_RECORD = {"file": "configs/train/tiny.yaml", "sha256": "0123456789ab", "commit": "abc1234", "scoring": 2}


@pytest.mark.parametrize("today", [
    "model: {flow: maxpool, motion_prior_weights: [0.5, 1.0]}\ntrain: {steps: 120}\n",
    "model: {flow: maxpool}\ntrain: {steps: 120, gate_both_margin: 0.02}\n",
], ids=["motion-prior", "gate-margin"])
def test_presets_that_differ_only_after_training_train_the_same_networks(monkeypatch, tmp_path, today):
    (tmp_path / "tiny.yaml").write_text(today)
    monkeypatch.setattr(wm, "PRESET", tmp_path / "tiny.yaml")
    monkeypatch.setattr(wm, "_preset_at", lambda record: {"model": {"flow": "maxpool"}, "train": {"steps": 120}})
    assert wm.trains_the_same(OLD_RECORD)
    monkeypatch.setattr(wm, "_preset_at", lambda record: {"model": {"flow": "maxpool"}, "train": {"steps": 60}})
    assert not wm.trains_the_same(OLD_RECORD)


def test_with_the_sync_guide_the_sync_maps_smoothing_acts_in_training(monkeypatch, tmp_path):
    guided = {"model": {"flow": "maxpool", "loss": {"sync_guide": 0.5}, "sync_smooth_frames": 12}}
    (tmp_path / "tiny.yaml").write_text("model: {flow: maxpool, loss: {sync_guide: 0.5}, sync_smooth_frames: 6}\n")
    monkeypatch.setattr(wm, "PRESET", tmp_path / "tiny.yaml")
    monkeypatch.setattr(wm, "_preset_at", lambda record: guided)
    assert not wm.trains_the_same(OLD_RECORD)
    (tmp_path / "tiny.yaml").write_text("model: {flow: maxpool, loss: {sync_guide: 0.5}, sync_smooth_frames: 12,"
                                        " map_blur: 1.5}\n")
    assert wm.trains_the_same(OLD_RECORD)


def test_rescoring_from_cells_of_a_preset_that_trains_otherwise_is_refused(monkeypatch, tmp_path, capsys):
    old = tmp_path / "old"
    _write_cell(old, _cell("indep", 400, 0, 0.8, 0.7, 0.5, preset="0123456789ab"))
    monkeypatch.setattr(wm, "trains_the_same", lambda record: False)
    args = ["--worlds", "indep", "--sizes", "400", "--seeds", "0", "--work", str(tmp_path / "new"),
            "--out", str(tmp_path / "r"), "--page", "", "--readme", "", "--rescore-from", str(old)]
    assert wm.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "abc1234" in err and not (tmp_path / "new").exists()


@pytest.mark.parametrize("model", [["model.flow_gate=true", "model.flow_fallback=twin"], ["model.flow=none"]],
                         ids=["htf", "noflow"])
def test_an_old_best_checkpoint_given_todays_after_training_choice_is_the_new_run_best(tmp_path, model):
    # The equivalence --rescore-from rests on: a run of the preset without the after-training
    # keys, ended as today's preset ends it, is tensor for tensor the run of today's preset.
    from tests.test_motion_prior import TINY
    from tests.test_sync import _sync_shards     # with motion series: today's prior may be the sync map
    from train import checkpoint as ckpt
    from train.__main__ import main
    from htf.config import load_config
    from train.config import TrainConfig

    train = _sync_shards(tmp_path / "data", "train", True, 8)
    val = _sync_shards(tmp_path / "data", "val", True, 8)
    today = load_config(TrainConfig, wm.PRESET)
    todays_keys = [f"{dotted}={json.dumps(getattr(getattr(today, dotted.split('.')[0]), dotted.split('.')[1]))}"
                   for dotted in wm.AFTER_TRAINING_KEYS]      # JSON is YAML: None as null
    runs = {}
    for name, extra in (("old", model), ("new", model + todays_keys)):
        argv = ["--train-shards", train, "--val-shards", val, "--output", str(tmp_path / name)]
        for item in TINY + extra:
            argv += ["--set", item]
        assert main(argv) == 0
        runs[name] = ckpt.load(ckpt.best_path(tmp_path / name))
    chosen = wm.with_todays_after_training_choice(ckpt.best_path(tmp_path / "old"), tmp_path / "rescored.pt", [val])
    rescored = ckpt.load(tmp_path / "rescored.pt")
    assert chosen.get("mirror_averaged") == 1 == int(runs["new"]["model"]["mirror_averaged"])
    if "twin" in model[-1]:
        assert chosen["flow_gate"] == float(runs["new"]["model"]["flow_gate"]) and set(chosen["flow_gate_scores"]) == {"both", "off", "on"}
    if "motion_prior_weight" in runs["new"]["model"]:
        assert chosen["motion_prior_weight"] == float(runs["new"]["model"]["motion_prior_weight"]) > 0
    assert rescored["config"]["model"] == runs["new"]["config"]["model"]
    assert rescored["config"]["train"]["gate_both_margin"] == runs["new"]["config"]["train"]["gate_both_margin"]
    assert set(rescored["model"]) == set(runs["new"]["model"])
    for name, weight in runs["new"]["model"].items():
        assert torch.equal(rescored["model"][name], weight), name


def test_a_candidate_preset_writes_its_own_results_and_no_page():
    claimed = wm.default_outputs(wm.CLAIMED_PRESET)
    assert claimed == {"out": wm.ROOT / "bench" / "results_worlds", "page": wm.ROOT / "docs" / "train.md",
                       "readme": wm.ROOT / "README.md"}
    candidate = wm.default_outputs(wm.ROOT / "configs" / "train" / "tiny-next.yaml")
    assert candidate == {"out": wm.ROOT / "bench" / "results_worlds_tiny-next", "page": None, "readme": None}


def test_a_cell_of_the_same_preset_scored_by_older_code_is_neither_recovered_nor_reported(tmp_path):
    today, older = _cell("indep", 400, 0, 0.8, 0.7, 0.5), _cell("indep", 400, 1, 0.6, 0.7, 0.5)
    older["preset"].pop("scoring")                     # made before cells recorded it: revision 1
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"cells": {"indep-400-s0": today, "indep-400-s1": older}}))
    work = tmp_path / "work"
    assert wm.recover_cells(results, work, wm.preset_id()) == 1
    _write_cell(work, older)
    assert wm.cell_preset(work / "indep-400-s1" / "cell.json") == f"{wm.preset_id()} (scoring 1)"
    rows = wm.write_results(work, [("indep", 400, 0), ("indep", 400, 1)], results, tmp_path / "r.md")
    assert rows[0]["seeds"] == [0]
    assert wm.main(["--worlds", "indep", "--sizes", "400", "--seeds", "1", "--work", str(work),
                    "--out", str(tmp_path / "r"), "--page", "", "--readme", ""]) == 2   # refused, not rerun over it


def test_no_flow_with_the_sync_prior_is_shown_only_where_every_seed_has_it():
    m = lambda c: {"ciou_at_0.5": c, "mean_ciou": c, "auc": c, "n": 80}  # noqa: E731
    cells = [_cell("indep", 400, s, 0.9, 0.7, 0.5) for s in range(3)]
    for cell, value in zip(cells, (0.8, 0.85, 0.9)):
        cell["results"]["noflow_sync"] = m(value)
    assert wm.summarize_row(cells)["noflow_sync"] == pytest.approx((0.85, 0.05))
    del cells[2]["results"]["noflow_sync"]                     # a cell made before the readout
    row = wm.summarize_row(cells)
    assert row["noflow_sync"] is None and row["noflow"] == pytest.approx((0.7, 0.0))
    line = [x for x in wm.render_markdown([row], [], "abc", []).splitlines() if x.startswith("| indep")][0]
    assert line.startswith("| indep | 400 | 0,1,2 | 0.900 ± 0.000 | 0.700 ± 0.000 | — |")


def test_a_finished_cell_lacks_the_readout_only_while_its_no_flow_run_is_kept(tmp_path):
    cell = _cell("indep", 400, 0, 0.9, 0.7, 0.5)
    _write_cell(tmp_path, cell)
    folder = tmp_path / "indep-400-s0"
    assert not wm.lacks_noflow_sync(folder)                    # taken back from the results: no runs
    (folder / "runs/noflow/checkpoints").mkdir(parents=True)
    (folder / "runs/noflow/checkpoints/best.pt").write_bytes(b"")
    assert wm.lacks_noflow_sync(folder)
    cell["results"]["noflow_sync"] = cell["results"]["noflow"]
    (folder / "cell.json").write_text(json.dumps(cell))
    assert not wm.lacks_noflow_sync(folder)


def test_a_candidate_matrix_names_its_preset_and_leaves_the_claimed_one_alone(tmp_path):
    candidate = tmp_path / "tiny-next.yaml"
    candidate.write_bytes(wm.CLAIMED_PRESET.read_bytes() + b"# candidate: one more line\n")
    sha = wm.preset_id(candidate)
    assert sha != wm.preset_id(wm.CLAIMED_PRESET)
    cell = _cell("indep", 400, 0, 0.8, 0.7, 0.5, preset=sha)
    cell["preset"]["file"] = str(candidate)
    _write_cell(tmp_path / "work", cell)
    claimed_pages = {p: p.read_text() for p in (wm.ROOT / "README.md", wm.ROOT / "docs" / "train.md")}
    args = ["--preset", str(candidate), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "r"),
            "--report-only"]
    assert wm.main(args) == 0
    text = (tmp_path / "r.md").read_text()
    assert f"`{candidate}` of SHA-256 `{sha}…`" in text and "| indep | 400 | 0 (< 3) | 0.800 |" in text
    assert json.loads((tmp_path / "r.json").read_text())["preset"] == {"file": str(candidate), "sha256": sha,
                                                                       "commits": ["abc1234"],
                                                                       "scoring": wm.SCORING}
    assert {p: p.read_text() for p in claimed_pages} == claimed_pages
    assert wm.PRESET == wm.CLAIMED_PRESET           # the run does not leave its preset behind


def test_a_missing_preset_file_is_refused_with_one_error_line(tmp_path, capsys):
    assert wm.main(["--preset", str(tmp_path / "nope.yaml"), "--report-only"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --preset ") and "nope.yaml" in err and len(err.strip().splitlines()) == 1


def test_a_matrix_on_other_seeds_reports_those_seeds_and_keeps_every_finished_one(tmp_path):
    _write_cell(tmp_path, _cell("indep", 400, 0, 0.8, 0.7, 0.5))
    _write_cell(tmp_path, _cell("demo", 400, 1, 0.8, 0.7, 0.5, preset="0123456789ab"))   # another preset's
    reported = wm.reported_cells([("indep-same", 400, 3)], [3], tmp_path, wm.preset_id())
    assert {s for _, _, s in reported} == {0, 3}
    assert set(reported) >= {(w, n, s) for w in wm.DEFAULT_WORLDS for n in wm.DEFAULT_SIZES for s in (0, 3)}


def test_the_page_says_per_seed_whether_htf_trained_with_the_sync_target():
    cells = [_cell("demo", 400, s, 0.8, 0.7, 0.5) for s in (3, 4)]
    cells[0]["selected"]["sync_target"], cells[1]["selected"]["sync_target"] = 0.0, 1.0
    page = wm.render_markdown([wm.summarize_row(cells)], [], "abc", [])
    assert "per seed: demo 400: 0, 1." in page
    assert "sync_target_min_val" not in wm.render_markdown([wm.summarize_row([_cell("demo", 400, 3, 0.8, 0.7, 0.5)])],
                                                           [], "abc", [])


def test_the_page_says_which_machines_trained_its_cells_counting_a_rescored_cell_where_it_was_trained():
    epyc = {"cpu": "AMD EPYC", "vector_flags": ["avx", "avx2"], "cores": 2, "torch": "2.4"}
    xeon = {"cpu": "Intel Xeon", "vector_flags": ["avx512f"], "cores": 2, "torch": "2.4"}
    cells = [_cell("demo", 400, s, 0.8, 0.7, 0.5) for s in (3, 4, 5)]
    cells[0]["machine"] = epyc
    cells[1].update(machine=epyc, rescored_from={"cell": "x"}, trained_on=xeon)
    machines = wm.machines_of(cells)
    assert machines == {"AMD EPYC (avx, avx2), 2 cores, torch 2.4": 1,
                        "Intel Xeon (avx512f), 2 cores, torch 2.4": 1, "unrecorded": 1}
    page = wm.render_markdown([wm.summarize_row(cells)], [], "abc", [], machines)
    assert "Trained on (runs repeat to the digit on one machine, not across CPUs): AMD EPYC" in page
    assert "unrecorded: 1 cell." in page


def test_a_cells_preset_is_read_from_the_file_and_commit_it_records_and_checked_against_its_sha():
    head = wm.git_commit().split("+")[0]
    record = {"file": "configs/train/tiny.yaml", "commit": head, "sha256": wm.preset_id(wm.CLAIMED_PRESET)}
    if wm.git_commit().endswith("+dirty") or wm.preset_id(wm.CLAIMED_PRESET) != _committed_sha(head):
        pytest.skip("the preset has uncommitted changes")
    assert wm._preset_at(record)["train"]["steps"] == 120
    with pytest.raises(SystemExit, match="is not the preset 0123456789ab"):
        wm._preset_at({**record, "sha256": "0123456789ab"})


def _committed_sha(commit):
    import hashlib
    import subprocess
    text = subprocess.run(["git", "show", f"{commit}:configs/train/tiny.yaml"], cwd=wm.ROOT, capture_output=True,
                          check=True).stdout
    return hashlib.sha256(text).hexdigest()[:12]


def _old_cell_with_gate(work, seed, scores, gate):
    cell = _cell("distractors-sync", 400, seed, 0.8, 0.7, 0.5, preset="0123456789ab")
    cell["preset"] = dict(OLD_RECORD)
    _write_cell(work, cell)
    run = work / wm.cell_name("distractors-sync", 400, seed) / "runs" / "htf"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "after_training", "flow_gate": gate,
                                                   "flow_gate_scores": scores}) + "\n")
    return work / wm.cell_name("distractors-sync", 400, seed)


FLOW_NET_BEHIND = {"both": 0.5955, "off": 0.6080, "on": 0.5500}      # closed +0.0125, open -0.058
FLOW_NET_ALONGSIDE = {"both": 0.6000, "off": 0.6100, "on": 0.6050}   # closed +0.01, open -0.005


@pytest.fixture
def gate_rule_changed(monkeypatch, tmp_path):
    """Today's preset: the old one with a peer gap for the gate's margin (a gate rule key only)."""
    old = {"model": {"flow": "maxpool", "twin_average": True}, "train": {"steps": 120, "gate_both_margin": 0.02}}
    (tmp_path / "today.yaml").write_text("model: {flow: maxpool, twin_average: true}\n"
                                         "train: {steps: 120, gate_both_margin: 0.02, gate_both_peer_gap: 0.03}\n")
    monkeypatch.setattr(wm, "PRESET", tmp_path / "today.yaml")
    monkeypatch.setattr(wm, "_preset_at", lambda record: old)
    return tmp_path


def test_a_cell_whose_recorded_val_scores_put_the_gate_where_it_was_stays(gate_rule_changed):
    assert wm.only_the_gate_rule_differs(OLD_RECORD)
    assert wm.gate_stays(_old_cell_with_gate(gate_rule_changed / "old", 3, FLOW_NET_ALONGSIDE, 0.5))
    assert not wm.gate_stays(_old_cell_with_gate(gate_rule_changed / "old", 4, FLOW_NET_BEHIND, 0.5))


def test_a_decision_at_a_threshold_is_not_taken_as_staying(gate_rule_changed):
    at_the_margin = {"both": 0.60, "off": 0.62, "on": 0.615}             # closed exactly +0.02
    assert not wm.gate_stays(_old_cell_with_gate(gate_rule_changed / "old", 3, at_the_margin, 0.5))


def test_another_after_training_key_is_not_a_gate_rule_change(gate_rule_changed, monkeypatch):
    monkeypatch.setattr(wm, "_preset_at", lambda record: {"model": {"flow": "maxpool", "twin_average": True,
                                                                    "map_blur": 1.0},
                                                          "train": {"steps": 120, "gate_both_margin": 0.02}})
    assert wm.trains_the_same(OLD_RECORD) and not wm.only_the_gate_rule_differs(OLD_RECORD)


def test_a_gate_rule_rescore_carries_the_cells_whose_gate_stays_and_rescores_the_others(gate_rule_changed,
                                                                                          monkeypatch):
    old = gate_rule_changed / "old"
    stays = _old_cell_with_gate(old, 3, FLOW_NET_ALONGSIDE, 0.5)
    _old_cell_with_gate(old, 4, FLOW_NET_BEHIND, 0.5)
    rescored = []
    monkeypatch.setattr(wm, "rescore_cell", lambda o, work, world, n, seed: rescored.append(seed) or _write_cell(
        work, _cell(world, n, seed, 0.9, 0.7, 0.5)))
    new = gate_rule_changed / "new"
    args = ["--worlds", "distractors-sync", "--sizes", "400", "--seeds", "3,4", "--work", str(new),
            "--out", str(gate_rule_changed / "r"), "--page", "", "--readme", "", "--rescore-from", str(old),
            "--preset", str(gate_rule_changed / "today.yaml")]
    assert wm.main(args) == 0
    assert rescored == [4]
    carried = json.loads((new / stays.name / "cell.json").read_text())
    before = json.loads((stays / "cell.json").read_text())
    assert carried["results"] == before["results"] and carried["carried_from"]["cell"] == str(stays)
    assert carried["preset"]["sha256"] == wm.preset_id(gate_rule_changed / "today.yaml")
    assert json.loads((stays / "cell.json").read_text()) == before                 # the old cell is untouched
    assert (new / stays.name / "runs" / "htf" / "metrics.jsonl").read_text() == (
        stays / "runs" / "htf" / "metrics.jsonl").read_text()                      # runs kept for a later rescore
