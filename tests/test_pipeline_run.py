"""Whole runs: outputs, per-clip failures, determinism, prefixes, flow cache reuse, CLI."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.__main__ import main
from pipeline.runner import RunInputs, run_pipeline
from tests.nasty import ffmpeg
from tests.pipeline_helpers import HANG_LIMIT_S, failures, read_shards, shard_bytes, small_config, world

CONTRACT_META_KEYS = {"id", "source", "keyframe_index", "keyframe_time", "fps", "frame_count",
                      "orig_size", "frame_size", "boxes", "box_format", "pipeline"}


def _run(out: Path, *overrides: str, stage: str = "pack", **inputs) -> object:
    root = inputs.pop("input_dir", world())
    return run_pipeline(small_config(*overrides), RunInputs(str(root), str(out), **inputs), stage)


def test_run_writes_shards_sizes_reports_and_contract_samples(tmp_path: Path):
    root = world()
    summary = _run(tmp_path, annotations=str(root / "boxes.json"))
    assert summary.written == 6 and sum(summary.failures.values()) == 0
    sizes = json.loads((tmp_path / "sizes.json").read_text())
    assert sizes == {"shard-000000.tar": 2, "shard-000001.tar": 2, "shard-000002.tar": 2}
    assert (tmp_path / "failures.jsonl").read_text() == ""
    saved = yaml.safe_load((tmp_path / "pipeline_config_shard.yaml").read_text())
    assert saved["frames"]["short_side"] == 64
    samples = read_shards(tmp_path)
    assert [s.id for s in samples] == sorted(p.stem for p in (root / "video").glob("*.mp4"))
    for s in samples:
        assert CONTRACT_META_KEYS <= set(json.loads(s.meta.to_json()))
        assert s.meta.box_format == "vggss" and len(s.meta.boxes[0][0]) == 4
        assert s.meta.pipeline["flow"]["method"] == "dis"
        assert s.frame.shape == (64, 64, 3) and s.flow.shape == (2, 64, 64) and s.spec.shape == (32, 301)


def test_bad_files_are_recorded_with_their_reason_and_good_clips_still_written(tmp_path: Path):
    raw = tmp_path / "raw" / "video"
    raw.mkdir(parents=True)
    videos = sorted((world() / "video").glob("*.mp4"))
    shutil.copy(videos[0], raw / "good.mp4")
    (raw / "empty.mp4").write_bytes(b"")
    (raw / "notes.mp4").write_text("this is not a video")
    (raw / "truncated.mp4").write_bytes(videos[1].read_bytes()[: videos[1].stat().st_size // 3])
    ffmpeg("-i", str(videos[2]), "-an", "-c", "copy", str(raw / "noaudio.mp4"))
    ffmpeg("-i", str(videos[3]), "-frames:v", "1", "-c:a", "copy", str(raw / "oneframe.mp4"))
    shutil.copy(videos[4], raw / "good.mkv")                       # duplicate id 'good'
    split = tmp_path / "list.csv"
    split.write_text("id,label\ngood,x\nempty,x\nnotes,x\ntruncated,x\nnoaudio,x\noneframe,x\nghost,x\n")
    out = tmp_path / "out"
    summary = _run(out, input_dir=tmp_path / "raw", split_list=str(split))
    reasons = {f["id"]: f["reason"] for f in failures(out)}
    assert summary.written == 1 and [s.id for s in read_shards(out)] == ["good"]
    assert reasons == {"good": "duplicate_id", "empty": "empty_file", "notes": "unreadable_container",
                       "truncated": "unreadable_container", "noaudio": "no_audio_stream",
                       "oneframe": "too_few_frames", "ghost": "missing_file"}
    for record in failures(out):
        assert record["stage"] in {"index", "decode"} and record["detail"]


def test_shards_are_identical_whatever_the_worker_count(tmp_path: Path):
    _run(tmp_path / "w1", "run.workers=1")
    _run(tmp_path / "w2", "run.workers=2")
    one, two = shard_bytes(tmp_path / "w1"), shard_bytes(tmp_path / "w2")
    assert len(one) == 3 and one == two


def test_changing_audio_settings_reuses_every_cached_flow(tmp_path: Path):
    first = _run(tmp_path)
    second = _run(tmp_path, "audio.feature=linear", "audio.sample_rate=22050")
    assert first.flow_computed == 6
    assert second.flow_computed == 0 and second.flow_cached == 6
    assert read_shards(tmp_path)[0].spec.shape == (257, 276)


def test_prefixes_share_one_folder_and_sizes_json_merges(tmp_path: Path):
    root = world()
    _run(tmp_path, "pack.prefix=train", split_list=str(root / "train.txt"))
    _run(tmp_path, "pack.prefix=test", split_list=str(root / "test.txt"))
    sizes = json.loads((tmp_path / "sizes.json").read_text())
    n_train = len((root / "train.txt").read_text().split())
    n_test = len((root / "test.txt").read_text().split())
    assert sum(v for k, v in sizes.items() if k.startswith("train-")) == n_train
    assert sum(v for k, v in sizes.items() if k.startswith("test-")) == n_test
    assert (tmp_path / "train-000000.tar").exists() and (tmp_path / "test-000000.tar").exists()


def _train_then_test(out: Path) -> None:
    root = world()
    _run(out, "pack.prefix=train", split_list=str(root / "train.txt"))
    _run(out, "pack.prefix=test", split_list=str(root / "test.txt"))


def test_a_damaged_sizes_json_is_set_aside_and_other_prefixes_recounted(tmp_path: Path, capsys):
    _train_then_test(tmp_path)
    good = (tmp_path / "sizes.json").read_text()
    (tmp_path / "sizes.json").write_text('{"train-000000.tar": 4, "te')
    _run(tmp_path, "pack.prefix=test", split_list=str(world() / "test.txt"))
    assert (tmp_path / "sizes.json").read_text() == good
    assert (tmp_path / "sizes.json.damaged").read_text() == '{"train-000000.tar": 4, "te'
    assert "sizes.json is damaged (kept as sizes.json.damaged)" in capsys.readouterr().err


@pytest.mark.parametrize("report", ["failures.jsonl", "warnings.jsonl"])
def test_a_damaged_report_line_is_set_aside_and_the_readable_lines_kept(tmp_path: Path, report: str, capsys):
    _train_then_test(tmp_path)
    path = tmp_path / report
    other = json.dumps({"id": "x", "reason": "kept", "prefix": "train"})
    path.write_text(f"{other}\n[1, 2]\n{{\"id\": \"cut")
    _run(tmp_path, "pack.prefix=test", split_list=str(world() / "test.txt"))
    assert path.read_text().splitlines()[0] == other
    assert (tmp_path / f"{report}.damaged").read_text().endswith('{"id": "cut')
    assert f"{report}: 2 damaged line(s)" in capsys.readouterr().err


def test_a_clip_over_the_time_limit_is_a_failure_not_a_hang(tmp_path: Path):
    summary = _run(tmp_path, "run.clip_timeout_s=0.0001")
    assert summary.written == 0
    assert summary.failures == {"timeout": 6}


def test_cli_runs_with_presets_flags_and_set_overrides(tmp_path: Path, capsys):
    code = main(["run", "--config", "configs/pipeline/synthetic.yaml", "--input", str(world()),
                 "--output", str(tmp_path), "--flow", "farneback", "--shard-prefix", "val",
                 "--no-progress", "--set", "pack.samples_per_shard=4", "--set", "frames.short_side=64"])
    assert code == 0
    assert "6 written" in capsys.readouterr().out
    assert json.loads((tmp_path / "sizes.json").read_text()) == {"val-000000.tar": 4, "val-000001.tar": 2}
    assert read_shards(tmp_path, "val")[0].meta.pipeline["flow"]["method"] == "farneback"


def test_cli_rejects_an_unknown_config_key_naming_it(tmp_path: Path, capsys):
    code = main(["run", "--input", str(world()), "--output", str(tmp_path), "--set", "flow.methd=dis"])
    assert code == 2 and "flow.methd" in capsys.readouterr().err


def test_cli_refuses_a_learned_flow_without_weights_before_touching_clips(tmp_path: Path, capsys):
    code = main(["run", "--input", str(world()), "--output", str(tmp_path), "--flow", "raft", "--no-progress"])
    assert code == 2 and "--flow-ckpt" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.tar"))


def test_clips_a_keyframe_map_or_box_file_leaves_out_are_named_in_warnings(tmp_path: Path):
    root = world()
    ids = sorted(p.stem for p in (root / "video").glob("*.mp4"))
    keyframes = tmp_path / "keyframes.json"
    keyframes.write_text(json.dumps({ids[0]: 10}))
    boxes = [b for b in json.loads((root / "boxes.json").read_text()) if b["file"] != ids[1]]
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    summary = _run(tmp_path / "out", keyframes=str(keyframes), annotations=str(tmp_path / "boxes.json"))
    assert summary.written == 6                     # still processed, not dropped
    warned = [json.loads(line) for line in (tmp_path / "out" / "warnings.jsonl").read_text().splitlines()]
    no_keyframe = {w["id"] for w in warned if w["reason"] == "no_keyframe_entry"}
    assert no_keyframe == set(ids[1:])
    assert {w["id"] for w in warned if w["reason"] == "no_boxes"} == {ids[1]}
    by_id = {s.id: s for s in read_shards(tmp_path / "out")}
    assert by_id[ids[0]].meta.keyframe_index == 10
    assert not by_id[ids[1]].meta.boxes


def test_workers_take_the_biggest_tasks_first_and_missing_files_count_as_empty(tmp_path: Path):
    from pipeline.config import PipelineConfig
    from pipeline.runner import largest_first
    from pipeline.index import ClipInput
    from pipeline.tasks import Task

    def task(index: int, sizes: list[int]) -> Task:
        clips = []
        for j, size in enumerate(sizes):
            path = tmp_path / f"{index}_{j}.mp4"
            if size >= 0:
                path.write_bytes(b"x" * size)
            clips.append(ClipInput(id=path.stem, video=str(path)))
        return Task(index=index, prefix="train", stage="pack", clips=clips, cfg=PipelineConfig(),
                    output=str(tmp_path), cache_dir=str(tmp_path))

    tasks = [task(0, [10, 10]), task(1, [500]), task(2, [-1, 30]), task(3, [10, 10])]
    assert [t.index for t in largest_first(tasks)] == [1, 2, 0, 3]   # ties keep their order


def _lavfi_clip(path: Path, size: str, rate: str, seconds: float = 3.0) -> None:
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
           "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path))


def test_huge_portrait_and_odd_rate_files_each_get_their_own_outcome(tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    _lavfi_clip(raw / "huge.mp4", "3840x2160", "2")            # 8.3 Mpx, over the limit set below
    _lavfi_clip(raw / "portrait.mp4", "72x128", "25")
    _lavfi_clip(raw / "ntsc.mp4", "96x64", "30000/1001")       # 29.97 fps
    out = tmp_path / "out"
    summary = _run(out, "frames.max_source_pixels=4000000", input_dir=raw)
    assert {f["id"]: f["reason"] for f in failures(out)} == {"huge": "resolution_too_large"}
    assert summary.written == 2
    samples = {s.id: s for s in read_shards(out)}
    assert samples["portrait"].frame.shape[:2] == (114, 64)    # short side 64, aspect kept
    ntsc = samples["ntsc"].meta
    assert ntsc.fps == pytest.approx(29.97, abs=0.01)
    assert ntsc.keyframe_index == ntsc.frame_count // 2
    assert ntsc.keyframe_time == pytest.approx(ntsc.keyframe_index * 1001 / 30000, abs=1e-3)


def test_a_worker_stuck_in_native_code_is_killed_and_only_its_clip_is_lost(tmp_path: Path):
    import functools

    from pipeline.executors import execute
    from pipeline.runner import plan_tasks
    from tests.pipeline_helpers import run_task_stuck_in_native_code_on

    cfg = small_config(f"run.clip_timeout_s={HANG_LIMIT_S}", "run.task_clips=2")
    tasks, _, _ = plan_tasks(cfg, RunInputs(str(world()), str(tmp_path)), "pack")
    stuck = tasks[1].clips[0].id
    run = functools.partial(run_task_stuck_in_native_code_on, stuck_id=stuck)
    results = {r.task: r for r in execute(tasks, "local", workers=2, fn=run)}
    assert sorted(results) == [t.name for t in tasks]                   # every task finished
    failed = [f for r in results.values() for f in r.failures]
    assert [(f["id"], f["reason"], f["stage"]) for f in failed] == [(stuck, "clip_hung", "decode")]
    assert "killed" in failed[0]["detail"]
    assert sum(r.written for r in results.values()) == sum(len(t.clips) for t in tasks) - 1


def test_a_hung_clip_is_skipped_on_rerun_unless_the_time_limit_was_raised(tmp_path: Path):
    from pipeline.runner import plan_tasks
    from pipeline.tasks import run_task
    from pipeline.watchdog import record_hung

    def first_task(timeout: float):
        tasks, _, _ = plan_tasks(small_config(f"run.clip_timeout_s={timeout}"),
                                 RunInputs(str(world()), str(tmp_path)), "pack")
        return tasks[0]

    task = first_task(1.0)
    hung = task.clips[0].id
    record_hung(task, {"id": hung, "stage": "decode", "pid": 0, "deadline": 0.0}, "stuck")
    same = run_task(task)
    assert [(f["id"], f["reason"]) for f in same.failures] == [(hung, "clip_hung")]
    assert same.written == len(task.clips) - 1
    raised = run_task(first_task(60.0))           # a longer limit: the clip gets another chance
    assert raised.failures == [] and raised.written == len(task.clips)


def test_a_hung_clip_record_cut_by_a_kill_gives_that_clip_another_chance(tmp_path: Path):
    from pipeline import watchdog
    from pipeline.runner import plan_tasks

    tasks, _, _ = plan_tasks(small_config("run.task_clips=3"), RunInputs(str(world()), str(tmp_path)), "pack")
    first, second = tasks[0].clips[:2]
    watchdog.record_hung(tasks[0], {"id": first.id, "stage": "flow"}, "killed")
    with open(watchdog.hung_path(tasks[0]), "a") as f:       # the parent was killed mid-append
        f.write(f'{{"failure": {{"id": "{second.id}", "sta')
    assert list(watchdog.hung_clips(tasks[0])) == [first.id]


def test_each_prefix_keeps_its_own_resolved_config_in_a_shared_folder(tmp_path: Path):
    _run(tmp_path, "pack.prefix=train", "audio.feature=logmel", stage="index")
    _run(tmp_path, "pack.prefix=val", "audio.feature=linear", stage="index")
    train = yaml.safe_load((tmp_path / "pipeline_config_train.yaml").read_text())
    val = yaml.safe_load((tmp_path / "pipeline_config_val.yaml").read_text())
    assert train["audio"]["feature"] == "logmel" and val["audio"]["feature"] == "linear"


def test_a_run_with_a_missing_input_leaves_no_output_folder(tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--input", str(tmp_path / "absent"), "--output", str(out)]) == 2
    assert "input folder not found" in capsys.readouterr().err and not out.exists()


def test_a_run_with_a_missing_split_list_leaves_no_output_folder(tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--input", str(world()), "--output", str(out),
                 "--split-list", str(tmp_path / "nope.txt")]) == 2
    assert "split list not found" in capsys.readouterr().err and not out.exists()
