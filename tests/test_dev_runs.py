"""The development runs (bench/dev_runs.py): seeds apart from the matrix's, one folder per
setting, finished runs kept, and a table that puts two settings side by side."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import dev_runs as dr  # noqa: E402
import world_matrix as wm  # noqa: E402


def _fake_demo(calls: list):
    def run_demo(plan):
        calls.append(plan)
        value = 0.5 + plan.seed / 100 + (0.1 if plan.train_overrides else 0.0)
        return {"results": {"htf": {"ciou_at_0.5": value}, "noflow": {"ciou_at_0.5": value - 0.2},
                            "sync": {"ciou_at_0.5": 0.4}}, "seconds": {"total": 1.0}}
    return run_demo


def test_no_dev_run_uses_a_seed_of_the_matrix():
    assert not {seed for _, seed in dr.DEV_RUNS} & set(wm.DEFAULT_SEEDS)


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
