"""Shards in a bucket: pipeline -> S3 -> torchrun trainer streaming from S3 -> evaluator on S3.

The S3 server is moto's, started by the test on 127.0.0.1; every command finds it through
the standard AWS_ENDPOINT_URL, as it would find MinIO or a cloud endpoint."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.test_train_multinode import rank_summaries, tiny_overrides
from tests.pipeline_helpers import world

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["frames.short_side=64", "frames.max_long_side=128", "pack.samples_per_shard=2", "audio.n_mels=32"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 server on loopback with one new empty bucket: (s3fs filesystem, bucket)."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    s3fs = pytest.importorskip("s3fs", reason="s3fs is not installed")
    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]}, skip_instance_cache=True)
    bucket = f"htf-{uuid.uuid4().hex[:12]}"   # moto keeps buckets for the whole process
    fs.mkdir(bucket)
    try:
        yield fs, bucket
    finally:
        server.stop()


def run(cmd: list[str], timeout: int = 280) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def pipeline_to_bucket(url: str, staging: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline", "run", "--input", str(world()), "--output", url,
           "--staging", str(staging), "--annotations", str(world() / "boxes.json"), "--shard-prefix", "train",
           "--no-progress", *extra]
    for item in SMALL:
        cmd += ["--set", item]
    return run(cmd)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pipeline_to_bucket_then_torchrun_training_and_evaluation_read_the_bucket(s3, tmp_path):
    s3, BUCKET = s3
    shards = f"s3://{BUCKET}/shards"
    made = pipeline_to_bucket(shards, tmp_path / "staging")
    assert made.returncode == 0, made.stderr[-3000:]
    staged = sorted(p.name for p in (tmp_path / "staging").iterdir() if p.is_file() and not p.name.startswith("."))
    assert {"sizes.json", "train-000000.tar", "train-000001.tar", "train-000002.tar"} <= set(staged)
    assert sorted(p.rpartition("/")[2] for p in s3.ls(f"{BUCKET}/shards")) == staged   # reports too, no cache
    assert json.loads(s3.cat_file(f"{BUCKET}/shards/sizes.json")) == {f"train-00000{i}.tar": 2 for i in range(3)}

    train = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                 "-m", "train", "--train-shards", f"{shards}/train-*.tar", "--output", str(tmp_path / "run"),
                 *tiny_overrides("data.batch_size=2", "data.workers=1", "train.epochs=1",
                                 f"train.sync_url=s3://{BUCKET}/runs/first")])
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-3000:]
    assert "6 samples/epoch" in train.stdout            # counted from the bucket's sizes.json
    assert [s["steps_run"] for s in rank_summaries(tmp_path / "run", 2)] == [1, 1]
    synced = {p.split("/runs/first/", 1)[1] for p in s3.find(f"{BUCKET}/runs/first")}
    assert {"checkpoints/latest.pt", "metrics.jsonl", "config.yaml", "logs/rank0.json", "logs/rank1.json"} <= synced
    assert s3.cat_file(f"{BUCKET}/runs/first/checkpoints/latest.pt") == \
        (tmp_path / "run/checkpoints/latest.pt").read_bytes()

    report = run([sys.executable, "-m", "eval", "--checkpoint", str(tmp_path / "run/checkpoints/latest.pt"),
                  "--shards", f"{shards}/train-{{000000..000002}}.tar", "--output", str(tmp_path / "report"),
                  "--config", "configs/eval/tiny.yaml", "--heatmaps", "0"])
    assert report.returncode == 0, report.stderr[-3000:]
    metrics = json.loads((tmp_path / "report/metrics.json").read_text())
    assert metrics["n"] == 6 and metrics["n_failed"] == 0
    assert metrics["shards"] == [f"{shards}/train-00000{i}.tar" for i in range(3)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_rerun_publishes_only_changes_and_removes_shards_the_run_no_longer_makes(s3, tmp_path):
    s3, BUCKET = s3
    shards, staging = f"s3://{BUCKET}/shards", tmp_path / "staging"
    assert pipeline_to_bucket(shards, staging).returncode == 0
    again = pipeline_to_bucket(shards, staging)
    assert again.returncode == 0, again.stderr[-3000:]
    unchanged = int(re.search(r"(\d+) unchanged", again.stdout).group(1))
    assert unchanged >= 3                                   # the three shards were not sent again
    fewer = pipeline_to_bucket(shards, staging, "--split-list", str(world() / "test.txt"))
    assert fewer.returncode == 0, fewer.stderr[-3000:]
    local = {p.name: p.read_bytes() for p in staging.glob("train-*.tar")}
    assert 0 < len(local) < 3
    remote = {p.rpartition("/")[2]: s3.cat_file(p) for p in s3.ls(f"{BUCKET}/shards") if p.endswith(".tar")}
    assert remote == local
    assert json.loads(s3.cat_file(f"{BUCKET}/shards/sizes.json")) == json.loads((staging / "sizes.json").read_text())


def test_an_unreachable_bucket_stops_the_evaluator_with_one_error_line(s3, tmp_path):
    s3, BUCKET = s3
    report = run([sys.executable, "-m", "eval", "--baseline", "center", "--shards",
                  f"s3://{BUCKET}/nothing/test-*.tar", "--output", str(tmp_path / "report")], timeout=120)
    assert report.returncode != 0
    assert report.stderr.strip().splitlines()[-1].startswith("error: ")
    assert f"s3://{BUCKET}/nothing/test-*.tar" in report.stderr


@pytest.mark.timeout(300)
def test_a_failed_publish_is_one_error_line_and_the_staging_folder_keeps_the_shards(s3, tmp_path):
    made = pipeline_to_bucket("s3://no-such-bucket-for-htf/shards", tmp_path / "staging")
    assert made.returncode == 1
    err = made.stderr.strip().splitlines()
    assert err[-1].startswith("error: publishing ") and "rerun the same command" in err[-1]
    assert len(list((tmp_path / "staging").glob("train-*.tar"))) == 3


def test_staging_with_a_local_output_is_refused(tmp_path, capsys):
    from pipeline.__main__ import main as pipeline_main

    code = pipeline_main(["run", "--input", str(tmp_path), "--output", str(tmp_path / "out"),
                          "--staging", str(tmp_path / "stage")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --staging is for a bucket --output (s3://, gs://); {tmp_path / 'out'} is a local folder"]


@pytest.mark.slow          # s3fs retries the dead endpoint for about a minute before giving up
@pytest.mark.timeout(300)
def test_an_unreachable_endpoint_is_one_error_line_from_the_trainer(s3, tmp_path):
    s3, bucket = s3
    env = dict(os.environ, PYTHONPATH=str(ROOT), AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="",
               AWS_ENDPOINT_URL="http://127.0.0.1:9")          # nothing listens on port 9
    train = subprocess.run([sys.executable, "-m", "train", "--train-shards", f"s3://{bucket}/shards/train-*.tar",
                            "--output", str(tmp_path / "run")], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=240)
    assert train.returncode != 0
    last = train.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot read s3://{bucket}/shards/train-*.tar: ") and "Traceback" not in train.stderr
    assert not (tmp_path / "run").exists()
