"""``make demo``: the main job on the embedded synthetic world.

Stages: generate the world -> (pipeline -> train -> evaluate -> report, as they land).
Prints where everything was written.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.synth import WorldConfig, generate_world


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m htf.demo", description=__doc__.split("\n")[0])
    p.add_argument("--output", default="demo_out", help="folder for every output of the demo")
    p.add_argument("--n", type=int, default=600, help="clips in the synthetic world")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = Path(a.output)
    start = time.time()
    summary = generate_world(WorldConfig(n=a.n, seed=a.seed), out / "world")
    print(f"[demo] synthetic world: {summary['clips']} clips -> {out / 'world'} "
          f"({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
