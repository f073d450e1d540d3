"""The SLURM script of docs/cluster.md runs as written, on two 'nodes' of this machine."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_train_multinode import free_port, rank_summaries, tiny_overrides
from tests.train_helpers import write_shards

ROOT = Path(__file__).resolve().parents[1]

# Stand-ins for SLURM's commands: srun starts its command once per node (here all on this
# machine, as SLURM would with one task per node); scontrol names the nodes.
FAKE_SRUN = """#!/bin/bash
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do
    SLURM_NODEID=$node SLURM_PROCID=$node "$@" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""
FAKE_SCONTROL = """#!/bin/bash
[ "$1 $2" = "show hostnames" ] || { echo "fake scontrol: only 'show hostnames'" >&2; exit 2; }
# One line per write, as a long node list comes: a reader that stops after the first line
# would make the second write a SIGPIPE.
echo 127.0.0.1
sleep 0.2
echo 127.0.0.2
"""


def sbatch_script() -> str:
    """The ```bash block of docs/cluster.md that starts with #!/bin/bash."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    blocks = re.findall(r"```bash\n(#!/bin/bash\n.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "docs/cluster.md must hold exactly one sbatch script"
    return blocks[0]


def fake_bin(folder: Path) -> Path:
    folder.mkdir()
    for name, body in {"srun": FAKE_SRUN, "scontrol": FAKE_SCONTROL}.items():
        (folder / name).write_text(body)
        (folder / name).chmod(0o755)
    return folder


def test_the_sbatch_script_asks_for_one_torchrun_agent_per_node():
    script = sbatch_script()
    assert "#SBATCH --ntasks-per-node=1" in script
    assert re.search(r"srun torchrun --nnodes \"\$SLURM_NNODES\"", script)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_documented_sbatch_script_trains_on_two_nodes(tmp_path):
    script = tmp_path / "train.sbatch"
    script.write_text(sbatch_script())
    train = write_shards(tmp_path / "shards", "train", [8, 8])
    path = os.pathsep.join([str(fake_bin(tmp_path / "bin")), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = dict(os.environ, PATH=path, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", SLURM_NNODES="2",
               SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="node[1-2]", SLURM_GPUS_ON_NODE="1",
               RDZV_PORT=str(free_port()))
    run = subprocess.run(["bash", str(script), "--train-shards", train, "--output", str(tmp_path / "run"),
                          *tiny_overrides("train.max_steps=2")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    summaries = rank_summaries(tmp_path / "run", 2)
    assert sorted(s["node"] for s in summaries) == [0, 1]
    assert [s["steps_run"] for s in summaries] == [2, 2]
