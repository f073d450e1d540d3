"""The development runs (bench/dev_runs.py): seeds apart from the matrix's, one folder per
setting, finished runs kept, and a table that puts two settings side by side."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import dev_runs as dr  # noqa: E402
import world_matrix as wm  # noqa: E402
from train.after_training import GATE_POSITIONS  # noqa: E402


def _fake_demo(calls: list):
    def run_demo(plan):
        calls.append(plan)
        value = 0.5 + plan.seed / 100 + (0.1 if plan.train_overrides else 0.0)
        return {"results": {"htf": {"ciou_at_0.5": value}, "noflow": {"ciou_at_0.5": value - 0.2},
                            "sync": {"ciou_at_0.5": 0.4}}, "seconds": {"total": 1.0}}
    return run_demo


def test_no_dev_run_uses_a_seed_of_the_matrix():
    assert not {seed for _, seed in dr.DEV_RUNS + dr.NAMED_DEV_RUNS} & set(wm.DEFAULT_SEEDS)


def test_each_run_trains_once_with_the_setting_and_is_kept(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(dr, "run_demo", _fake_demo(calls))
    args = ["--name", "wide", "--work", str(tmp_path), "--runs", "indep-s1,demo-s7", "--set", "model.width=32"]
    assert dr.main(args) == 0
    assert [(c.world, c.seed, c.n, c.train_overrides) for c in calls] == [
        ("indep", 1, 400, ["model.width=32"]), ("demo", 7, 400, ["model.width=32"])]
    assert dr.main(args) == 0 and len(calls) == 2          # finished runs are read, not rerun
    record = json.loads((tmp_path / "wide" / "indep-s1" / "dev_run.json").read_text())
    assert record["results"] == {"htf": 0.61, "noflow": 0.41, "sync": 0.4}


def test_a_folder_of_another_setting_is_refused_naming_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dr, "run_demo", _fake_demo([]))
    assert dr.main(["--name", "x", "--work", str(tmp_path), "--runs", "indep-s1"]) == 0
    assert dr.main(["--name", "x", "--work", str(tmp_path), "--runs", "indep-s1", "--set", "model.width=32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "indep-s1" in err and "another --name" in err


def test_the_table_puts_the_other_setting_beside_each_run_and_averages_both(tmp_path, monkeypatch):
    monkeypatch.setattr(dr, "run_demo", _fake_demo([]))
    dr.main(["--name", "base", "--work", str(tmp_path), "--runs", "indep-s1,indep-s7"])
    assert dr.main(["--name", "wide", "--work", str(tmp_path), "--runs", "indep-s1,indep-s7",
                    "--set", "model.width=32", "--against", "base"]) == 0
    table = (tmp_path / "wide" / "dev.md").read_text()
    assert "| dev run | HTF (wide) | HTF (base) | no flow (wide) | no flow (base) | sync map |" in table
    assert "| `indep` s1 | 0.610 | 0.510 | 0.410 | 0.310 | 0.400 |" in table
    assert "| mean | 0.640 | 0.540 | 0.440 | 0.340 | 0.400 |" in table


def test_an_unknown_dev_run_is_refused_with_the_known_ones(tmp_path, capsys):
    assert dr.main(["--name", "x", "--work", str(tmp_path), "--runs", "indep-s3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --runs") and "indep-same-s7" in err


def _study(world, seed, val, test):
    return {"world": world, "seed": seed, "n": 400,
            "positions": {p: {"val": v, "test": t, "prior_weight": 0.0} for p, v, t in zip(GATE_POSITIONS, val, test)}}


def test_the_gate_study_shows_what_each_peer_gap_would_pick_from_val_and_its_test_score():
    flow_net_behind = _study("distractors-sync", 1, (0.5955, 0.6080, 0.5500), (0.95, 0.98, 0.90))
    outcomes = dr.rule_outcomes(flow_net_behind, margin=0.02)
    assert outcomes["none"] == ("both", 0.95)            # closed leads by 0.0125 < margin
    assert outcomes["0.03"] == ("closed", 0.98)          # open trails closed by 0.058 > gap
    assert outcomes["0.05"] == ("closed", 0.98)
    runs = [{"world": "distractors-sync", "seed": 1, "results": {"noflow": 0.97}}]
    table = dr.render_gate_study([flow_net_behind], runs, margin=0.02)
    assert "| `distractors-sync` s1 | 0.5955 / 0.950 | 0.6080 / 0.980 | 0.5500 / 0.900 | 0.970 | both, 0.950 |" in table
    assert table.splitlines()[-1].endswith("| 0.950 | 0.980 | 0.980 | 0.980 | 0.980 | 0.980 |")


def test_the_gate_study_sets_each_position_after_training_and_evaluates_it_on_test(tmp_path, monkeypatch):
    from apps import demo
    from train import after_training
    set_to, evaluated = [], []

    def choose(old, new, val, changes):
        set_to.append(changes)
        return {"flow_gate_scores": {"both": 0.6, "off": 0.61, "on": 0.55}, "motion_prior_weight": 0.25}

    monkeypatch.setattr(after_training, "choose_after_training_again", choose)
    monkeypatch.setattr(demo, "evaluate", lambda plan, shards, name, checkpoint: evaluated.append(
        (name, checkpoint.name)) or {"ciou_at_0.5": {"htf_gate_both": 0.9, "htf_gate_closed": 0.95,
                                                     "htf_gate_open": 0.8}[name]})
    study = dr.gate_position_study(tmp_path, "distractors-sync", 1, 1000)
    assert set_to == [{"train.gate_position": p} for p in ("both", "closed", "open")]
    assert evaluated == [("htf_gate_both", "both.pt"), ("htf_gate_closed", "closed.pt"), ("htf_gate_open", "open.pt")]
    assert study["positions"]["closed"] == {"val": 0.61, "test": 0.95, "prior_weight": 0.25}
    assert dr.gate_position_study(tmp_path, "distractors-sync", 1, 1000) == study and len(set_to) == 3   # kept
