"""bench/gpu_e2e.py: the GPU path end to end, run here on the CPU with tiny sizes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_e2e.py"


def run_script(*args: str, timeout: int = 560) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cpu_smoke_runs_every_stage_and_reports_rates(tmp_path):
    out = tmp_path / "e2e"
    run = run_script("--output", str(out), "--cpu-smoke")
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    report = json.loads((out / "gpu_e2e.json").read_text())
    assert list(report["stages"]) == ["world", "flow_neuflow2", "pipeline_neuflow2", "train", "eval"]
    for split in ("train", "val", "test"):     # the per-split runs read the flow the first stage cached
        log = (out / "logs" / f"pipeline_neuflow2_{split}.log").read_text()
        assert "flow: 0 computed" in log and "from cache" in log
    assert all(stage["clips_per_s"] > 0 for stage in report["stages"].values())
    flow = report["flow"]["neuflow2"]
    assert flow["batched_pairs_per_s"] > 0 and flow["single_fp32_pairs_per_s"] > 0
    assert flow["ratio_batched_vs_single_fp32"] == pytest.approx(
        flow["batched_pairs_per_s"] / flow["single_fp32_pairs_per_s"], rel=0.02)
    assert report["train"]["final_step"] == 3 and report["train"]["samples_per_s"] > 0
    assert 0 <= report["train"]["data_wait_frac"] <= 1
    sizes = json.loads((out / "shards" / "sizes.json").read_text())
    assert report["eval"]["n"] == sum(v for k, v in sizes.items() if k.startswith("test-")) > 0
    assert "total" in (out / "gpu_e2e.log").read_text()


def test_without_a_gpu_and_without_cpu_smoke_it_stops_with_one_error_line(tmp_path):
    run = run_script("--output", str(tmp_path / "e2e"), timeout=120)
    if "cuda" in run.stdout.lower() and run.returncode == 0:
        pytest.skip("a GPU is visible: the full run is not a unit test")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "error: no CUDA device visible to torch; run with --cpu-smoke for the CPU check"]


def test_a_non_empty_output_folder_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("someone's file")
    run = run_script("--output", str(tmp_path), "--cpu-smoke", timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"error: --output {tmp_path} is not empty; choose a new folder"]
    assert (tmp_path / "keep.txt").read_text() == "someone's file"


def test_training_workers_import_the_project_first_and_keep_packages_already_on_the_path():
    # A GPU image missing some packages gets them on PYTHONPATH (a side folder of wheels);
    # torchrun's workers must still see them.
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_e2e

    env = gpu_e2e.with_root_on_path({"PYTHONPATH": "/opt/site-extra", "OTHER": "kept"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/opt/site-extra"]
    assert env["OTHER"] == "kept"
    assert gpu_e2e.with_root_on_path({})["PYTHONPATH"] == str(ROOT)
