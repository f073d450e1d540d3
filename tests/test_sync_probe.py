"""bench/sync_probe.py: a training-free map from motion over time against the loudness."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import sync_probe  # noqa: E402


def _world(steps: int = 99) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    loudness = 0.5 + 0.5 * np.sin(np.linspace(0, 6 * np.pi, steps)) ** 2
    cells = np.full((steps, 7, 7), 0.1) + 0.01 * rng.random((steps, 7, 7))
    cells[:, 2, 3] += 2.0 * loudness                                  # moves with the sound
    cells[:, 5, 1] += 2.0 * rng.random(steps)                         # moves as much, on its own
    cells[:, 0, 6] += 2.0                                             # moves steadily
    return cells, loudness


def test_the_place_that_moves_with_the_sound_tops_the_map():
    cells, loudness = _world()
    amap = sync_probe.sync_map(cells, loudness, window=6)
    assert np.unravel_index(amap.argmax(), amap.shape) == (2, 3)
    assert amap[2, 3] > 0.9 and abs(amap[5, 1]) < 0.5


def test_more_motion_alone_does_not_make_a_place_win():
    cells, loudness = _world()
    mean_change = cells.mean(axis=0)
    assert np.unravel_index(mean_change.argmax(), mean_change.shape) == (0, 6)   # the steady mover moves most
    amap = sync_probe.sync_map(cells, loudness, window=6)
    assert amap[0, 6] < amap[2, 3] - 0.3


def test_smoothing_keeps_the_length_and_averages_over_the_window():
    series = np.arange(10, dtype=float)
    smoothed = sync_probe.smooth(series, 3)
    assert smoothed.shape == series.shape and smoothed[5] == 5.0


def test_a_folder_without_a_world_is_refused_with_one_error_line(tmp_path, capsys):
    assert sync_probe.main(["--world-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(tmp_path) in err[0]
