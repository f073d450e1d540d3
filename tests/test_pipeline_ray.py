"""The Ray executor runs the same tasks as the local pool and writes the same shards."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.runner import RunInputs, run_pipeline
from tests.pipeline_helpers import shard_bytes, small_config, world


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
