"""The Ray executor runs the same tasks as the local pool and writes the same shards."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.runner import RunInputs, run_pipeline
from tests.pipeline_helpers import HANG_LIMIT_S, shard_bytes, small_config, world


@pytest.mark.timeout(240)  # a wedged Ray start must fail this test, not stall the suite
def test_ray_executor_on_a_local_instance_writes_the_same_shards_as_the_process_pool(tmp_path: Path):
    ray = pytest.importorskip("ray", reason="ray is not installed")
    local = run_pipeline(small_config("run.workers=2"), RunInputs(str(world()), str(tmp_path / "local")))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as err:  # e.g. no shared memory in a sandbox
        pytest.skip(f"a local Ray instance cannot start here: {err}")
    try:
        remote = run_pipeline(small_config("run.workers=2", "run.executor=ray"),
                              RunInputs(str(world()), str(tmp_path / "ray")))
    finally:
        ray.shutdown()
    assert remote.written == local.written == 6
    assert shard_bytes(tmp_path / "ray") == shard_bytes(tmp_path / "local")


@pytest.mark.timeout(240)
def test_ray_task_stuck_in_native_code_is_cancelled_and_only_its_clip_is_lost(tmp_path: Path):
    import functools

    ray = pytest.importorskip("ray", reason="ray is not installed")
    import cloudpickle

    import tests.pipeline_helpers as helpers
    from pipeline.executors import execute
    from pipeline.runner import plan_tasks

    cfg = small_config(f"run.clip_timeout_s={HANG_LIMIT_S}", "run.task_clips=2")
    tasks, _, _ = plan_tasks(cfg, RunInputs(str(world()), str(tmp_path)), "pack")
    stuck = tasks[2].clips[1].id
    cloudpickle.register_pickle_by_value(helpers)    # Ray workers need not import tests/
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as err:
        pytest.skip(f"a local Ray instance cannot start here: {err}")
    try:
        run = functools.partial(helpers.run_task_stuck_in_native_code_on, stuck_id=stuck)
        results = {r.task: r for r in execute(tasks, "ray", workers=2, fn=run)}
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(helpers)
    assert sorted(results) == [t.name for t in tasks]
    failed = [(f["id"], f["reason"]) for r in results.values() for f in r.failures]
    assert failed == [(stuck, "clip_hung")]
    assert sum(r.written for r in results.values()) == sum(len(t.clips) for t in tasks) - 1
