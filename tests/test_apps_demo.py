"""The demo's report: the verdict it prints is computed from the measured metrics."""
import json
from pathlib import Path

import pytest

from apps.demo import ROWS, plot_training_curves, results_table, verdict


def metrics(c: float) -> dict:
    return {"ciou_at_0.5": c, "mean_ciou": c / 2, "auc": c / 3, "n": 10}


def test_verdict_measures_the_margin_over_the_best_baseline():
    results = {"htf": metrics(0.8), "noflow": metrics(0.7), "center": metrics(0.1),
               "flow": metrics(0.55), "random": metrics(0.0)}
    v = verdict(results)
    assert v["best_baseline"] == "flow"
    assert v["margin_over_best_baseline"] == pytest.approx(0.25)
    assert v["beats_baselines"] and v["flow_never_costs"]


def test_verdict_reports_a_missed_target_instead_of_hiding_it():
    results = {"htf": metrics(0.6), "noflow": metrics(0.7), "center": metrics(0.5),
               "flow": metrics(0.3), "random": metrics(0.0)}
    v = verdict(results)
    assert not v["beats_baselines"] and not v["flow_never_costs"]
    assert v["htf_vs_noflow"] == pytest.approx(-0.1)


def test_verdict_measures_htf_against_no_flow_with_the_sync_prior_beside_the_claims():
    results = {"htf": metrics(0.8), "noflow": metrics(0.6), "noflow_sync": metrics(0.78), "center": metrics(0.0),
               "flow": metrics(0.5), "random": metrics(0.0)}
    v = verdict(results)
    assert v["htf_vs_noflow_sync"] == pytest.approx(0.02) and v["htf_vs_noflow"] == pytest.approx(0.2)
    assert "htf_vs_noflow_sync" not in verdict({k: m for k, m in results.items() if k != "noflow_sync"})


def test_verdict_tolerates_a_flow_path_within_two_points_of_no_flow():
    results = {"htf": metrics(0.69), "noflow": metrics(0.70), "center": metrics(0.0),
               "flow": metrics(0.54), "random": metrics(0.0)}
    v = verdict(results)
    assert v["flow_never_costs"] and v["beats_baselines"]


def test_results_table_has_one_row_per_method_in_a_fixed_order():
    results = {k: metrics(0.1 * i) for i, (k, _) in enumerate(ROWS)}
    table = results_table(results)
    assert table[0][:2] == ["method", "cIoU@0.5"]
    assert [r[0] for r in table[1:]] == [label for _, label in ROWS]
    assert table[2][1] == "0.100"


def test_training_curves_are_drawn_from_each_runs_metrics_log(tmp_path):
    runs = {}
    for name in ("htf", "noflow"):
        run = tmp_path / name
        run.mkdir()
        lines = [{"kind": "train", "step": s, "loss": 3 - 0.1 * s} for s in range(1, 6)]
        lines += [{"kind": "val", "step": 5, "ciou_at_0.5": 0.4, "loss": 2.0}]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        runs[name] = run
    png = plot_training_curves(runs, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_what_val_chose_is_read_from_the_run_log_gate_and_motion_prior_included(tmp_path):
    from apps.demo import _chosen_line, chosen_on_val

    lines = [{"kind": "val", "step": 4, "auc": 0.5, "flow_gate": 1, "best": True},
             {"kind": "val", "step": 8, "auc": 0.4, "flow_gate": 0, "best": False},
             {"kind": "motion_prior", "step": 8, "motion_prior_weight": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    chosen = chosen_on_val(tmp_path)
    assert chosen == {"step": 4, "auc": 0.5, "flow_gate": 1, "motion_prior_weight": 0.5}
    assert _chosen_line(chosen) == ("HTF, chosen on the val split: checkpoint of step 4, flow gate open "
                                    "(the flow net), motion prior weight 0.5.")


def test_the_choices_after_training_override_the_gate_of_the_kept_checkpoint(tmp_path):
    from apps.demo import _chosen_line, chosen_on_val

    lines = [{"kind": "val", "step": 4, "auc": 0.5, "flow_gate": 1, "best": True},
             {"kind": "after_training", "step": 8, "mirror_averaged": 1, "flow_gate": 0.5, "motion_prior_weight": 0.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    chosen = chosen_on_val(tmp_path)
    assert chosen == {"step": 4, "auc": 0.5, "flow_gate": 0.5, "mirror_averaged": 1, "motion_prior_weight": 0.0}
    assert _chosen_line(chosen) == ("HTF, chosen on the val split: checkpoint of step 4, flow gate both (the mean "
                                    "of the flow net's and the twin's maps), maps averaged with the mirror image, "
                                    "motion prior weight 0.")


def test_whether_htf_trained_with_the_sync_target_is_read_from_the_run_log(tmp_path):
    from apps.demo import _chosen_line, chosen_on_val

    lines = [{"kind": "sync_target", "step": 0, "sync_target": 0.0, "sync_map_val_score": 0.275,
              "sync_map_val_clips": 40, "sync_target_min_val": 0.5},
             {"kind": "val", "step": 4, "auc": 0.5, "best": True}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    chosen = chosen_on_val(tmp_path)
    assert chosen == {"step": 4, "auc": 0.5, "sync_target": 0.0, "sync_map_val_score": 0.275}
    assert _chosen_line(chosen) == ("HTF, chosen on the val split: checkpoint of step 4, sync target off in "
                                    "training (val's sync maps scored 0.275).")


def _miniature_plan(output):
    from apps.demo import DemoPlan

    return DemoPlan(output=output, n=24, seed=3, nproc=2, heatmaps=1,
                    train_overrides=["train.steps=4", "data.batch_size=4", "data.val_batch_size=4"])


@pytest.fixture(scope="module")
def miniature_demo(tmp_path_factory):
    """The whole main job at toy scale: world, pipeline, two torchrun trainings, five
    evaluations, report. Numbers at this scale mean nothing; the wiring is what is tested."""
    from apps.demo import run_demo

    plan = _miniature_plan(tmp_path_factory.mktemp("demo") / "demo")
    return plan, run_demo(plan)


@pytest.mark.slow
def test_miniature_demo_runs_every_stage_and_writes_the_report(miniature_demo):
    plan, summary = miniature_demo
    assert set(summary["results"]) == {"htf", "noflow", "noflow_sync", "center", "flow", "random", "sync"}
    for m in summary["results"].values():
        assert 0.0 <= m["ciou_at_0.5"] <= 1.0 and m["n"] == len((plan.output / "world" / "test.txt").read_text().split())
    for name in ("report.md", "report.html", "training_curves.png", "results.json"):
        assert (plan.output / name).stat().st_size > 0
    assert (plan.output / "runs" / "htf" / "checkpoints" / "best.pt").is_file()
    assert ROWS[0][1] in (plan.output / "report.md").read_text()
    # the tiny preset's post-training choice ran under torchrun and the report says what val chose
    chosen = json.loads((plan.output / "results.json").read_text())["htf_chosen_on_val"]
    assert chosen["motion_prior_weight"] in (0.0, 0.25, 0.5, 1.0, 2.0) and chosen["flow_gate"] in (0, 0.5, 1)
    source = "sync" if chosen.get("motion_prior_source") == "sync" else "motion"
    report = (plan.output / "report.md").read_text()
    assert f"{source} prior weight {chosen['motion_prior_weight']:g}" in report
    assert chosen["map_blur"] == 1.5 and "Every map blurred by 1.5 cells" in report   # the baselines too
    # the no-flow run read again with the sync prior: the same network, a weight chosen on val
    readout = json.loads((plan.output / "runs" / "noflow" / "sync_prior_chosen_on_val.json").read_text())
    assert readout["motion_prior_weight"] in (0.0, 0.25, 0.5, 1.0, 2.0)
    assert f"HTF vs no flow + sync prior: {summary['verdict']['htf_vs_noflow_sync']:+.3f}" in report
    predictor = json.loads((plan.output / "eval" / "noflow_sync" / "metrics.json").read_text())["predictor"]
    assert "flow: none" in predictor and f"sync prior weight {readout['motion_prior_weight']:g}" in predictor

@pytest.mark.slow
def test_the_demo_report_says_which_machine_made_its_numbers(miniature_demo):
    from htf.machine import describe_machine
    plan, _ = miniature_demo
    machine = json.loads((plan.output / "results.json").read_text())["machine"]
    assert machine["cores"] >= 1 and machine["torch"]
    assert f"Machine: {describe_machine(machine)}" in (plan.output / "report.md").read_text()


@pytest.mark.slow
def test_the_demo_report_gives_each_committed_matrix_of_its_preset_a_section(miniature_demo):
    from apps.demo import FRESH_SEED_RESULTS, MATRIX_RESULTS, matrix_sections
    plan, _ = miniature_demo
    report = (plan.output / "report.md").read_text()
    for title, _, note in matrix_sections(MATRIX_RESULTS, FRESH_SEED_RESULTS):
        assert f"## {title}" in report and note in report



@pytest.mark.slow
def test_a_second_miniature_demo_with_the_same_seed_gives_the_same_metrics(miniature_demo, tmp_path):
    from apps.demo import run_demo

    first = miniature_demo[1]["results"]
    second = run_demo(_miniature_plan(tmp_path / "again"))["results"]
    for method in first:
        for key in ("ciou_at_0.5", "mean_ciou", "auc"):
            assert first[method][key] == pytest.approx(second[method][key], abs=1e-6), (method, key)
    # the trained models really produced maps (not a constant fallback)
    assert first["htf"]["mean_ciou"] != first["random"]["mean_ciou"]


def test_demo_real_localises_accepted_clips_and_lists_rejected_ones_with_reasons(tmp_path):
    import dataclasses
    import subprocess

    import torch

    from htf.config import load_config
    from apps.demo_real import main as demo_real
    from pipeline.config import PipelineConfig
    from apps.synth import WorldConfig, generate_world
    from train.config import TrainConfig
    from htf.model import HTFModel, checkpoint_payload

    world = tmp_path / "world"
    generate_world(WorldConfig(n=2, seed=4, size=128, seconds=4.0, workers=1), world, progress=False)
    videos = tmp_path / "videos"
    videos.mkdir()
    for clip in sorted((world / "video").glob("*.mp4")):
        (videos / clip.name).write_bytes(clip.read_bytes())
    silent = videos / "no_sound.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-an", "-c", "copy", str(silent)], check=True)

    cfg = load_config(TrainConfig, "configs/train/tiny.yaml")
    model = HTFModel(cfg.model)
    pipe = load_config(PipelineConfig, "configs/pipeline/synthetic.yaml")
    model.data_settings = {k: dataclasses.asdict(getattr(pipe, k)) for k in ("frames", "flow", "audio")}
    checkpoint = tmp_path / "model.pt"
    torch.save(checkpoint_payload(model, cfg), checkpoint)

    out = tmp_path / "real"
    assert demo_real(["--output", str(out), "--videos", str(videos), "--checkpoint", str(checkpoint),
                      "--videos-with-overlay", "0"]) == 0
    summary = (out / "summary.md").read_text()
    assert "accepted by the pipeline (became samples): 2" in summary
    assert "`no_sound` (decode): no_audio_stream" in summary
    assert len(list((out / "localize").glob("*_keyframe.png"))) == 2
    assert len(list((out / "sync").glob("*_keyframe.png"))) == 2 and "sync maps written: 2" in summary
    assert all(f"](sync/{clip.stem}_keyframe.png) |" in summary for clip in (world / "video").glob("*.mp4"))


def test_results_are_split_by_kind_of_clip_with_the_evaluators_threshold(tmp_path):
    from apps.demo import clip_kinds, kinds_table, results_by_kind
    big = {"small": False}
    clips = [{"id": "a", "objects": [dict(big, **{"class": 1}), dict(big, **{"class": 1})]},
             {"id": "b", "objects": [dict(big, **{"class": 1}), dict(big, **{"class": 2}),
                                     {"class": 1, "small": True}]},
             {"id": "c", "objects": [dict(big, **{"class": 3}), dict(big, **{"class": 4})]}]
    (tmp_path / "world.json").write_text(json.dumps({"clips": clips}))
    kinds = clip_kinds(tmp_path)
    assert kinds == {"a": "same", "b": "distinct", "c": "distinct"}   # the small one does not count
    (tmp_path / "per_clip.csv").write_text("id,ciou\na,0.2\nb,0.5\nc,0.49\n")
    by_kind = results_by_kind(tmp_path, kinds)
    assert by_kind["same"]["ciou_at_0.5"] == 0.0 and by_kind["same"]["n"] == 1
    assert by_kind["distinct"]["ciou_at_0.5"] == 0.5 and by_kind["distinct"]["n"] == 2
    table = kinds_table({"htf": by_kind})
    assert table[1][0].startswith("HTF") and table[1][1:] == ["0.500", "0.000"]


@pytest.mark.parametrize("overrides,series", [
    (["model.loss.sync_guide=0", "model.loss.sync_target=0"], False),
    (["model.loss.sync_guide=0.5", "model.loss.sync_target=0"], True),
    ([], True),                     # the tiny preset's sync target
], ids=["neither", "sync_guide", "tiny_preset"])
def test_every_split_gets_motion_series_when_the_preset_trains_with_the_sync_maps(tmp_path, monkeypatch,
                                                                                 overrides, series):
    import apps.demo as demo
    commands = []

    def fake_run(cmd, log):
        commands.append(cmd)
        shards = Path(cmd[cmd.index("--output") + 1])
        shards.mkdir(parents=True, exist_ok=True)
        (shards / "sizes.json").write_text('{"x": 1}')

    monkeypatch.setattr(demo, "run_command", fake_run)
    plan = demo.DemoPlan(output=tmp_path, train_overrides=overrides)
    demo.make_shards(plan, tmp_path / "world")
    assert len(commands) == 3
    assert all(("motion.series=true" in cmd) == series for cmd in commands)


@pytest.mark.parametrize("blur", [0.0, 1.5])
def test_baselines_are_blurred_as_the_preset_blurs_the_models_maps(tmp_path, monkeypatch, blur):
    import apps.demo as demo
    commands = []

    def fake_run(cmd, log):
        commands.append(cmd)
        report = Path(cmd[cmd.index("--output") + 1])
        report.mkdir(parents=True)
        (report / "metrics.json").write_text("{}")

    monkeypatch.setattr(demo, "run_command", fake_run)
    plan = demo.DemoPlan(output=tmp_path, train_overrides=[f"model.map_blur={blur}"])
    demo.evaluate(plan, tmp_path / "shards", "sync", baseline="sync")
    demo.evaluate(plan, tmp_path / "shards", "htf", checkpoint=tmp_path / "best.pt")
    baseline_cmd, model_cmd = commands
    assert (f"baseline.map_blur={blur}" in baseline_cmd) == bool(blur)
    assert not any("map_blur" in part for part in model_cmd)    # a model's blur is in its checkpoint
    assert (f"Every map blurred by {blur:g} cells" in " ".join(demo._blur_lines(plan))) == bool(blur)
