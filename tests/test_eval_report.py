"""Reports: success curve and histogram per method, heat-map rows, links that resolve."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from eval.__main__ import main
from tests.eval_shards import standard_clips, write_shard


def _targets(page: Path) -> list[str]:
    return re.findall(r"(?:src|href)='([^']+)'", page.read_text())


def _assert_links_resolve(page: Path) -> list[str]:
    targets = _targets(page)
    missing = [t for t in targets if not (page.parent / t).is_file()]
    assert not missing, f"{page}: links to missing files {missing}"
    return targets


@pytest.fixture
def report(tmp_path):
    write_shard(tmp_path / "test-000000.tar", standard_clips(6))
    out = tmp_path / "r"
    assert main(["--baseline", "flow", "--shards", str(tmp_path / "test-*.tar"), "--output", str(out),
                 "--heatmaps", "2"]) == 0
    return out


def test_eval_report_links_metrics_csv_plots_and_pictures_that_exist(report):
    targets = _assert_links_resolve(report / "report.html")
    assert {"metrics.json", "per_clip.csv", "success_curve.png", "ciou_histogram.png"} <= set(targets)
    assert sum(t.startswith("heatmaps/") and t.endswith(".png") for t in targets) >= 4  # img + link, 2 x 2


def test_eval_report_markdown_links_resolve_too(report):
    md = (report / "report.md").read_text()
    targets = re.findall(r"\]\(([^)]+)\)", md)
    assert "metrics.json" in targets and "success_curve.png" in targets
    assert all((report / t).is_file() for t in targets)


def test_success_curve_and_histogram_are_pngs(report):
    for name in ("success_curve.png", "ciou_histogram.png"):
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_checkpoint_and_baseline_share_one_report_with_both_methods(tmp_path):
    from tests.test_eval_cli import _tiny_checkpoint

    write_shard(tmp_path / "test-000000.tar", standard_clips(4))
    out = tmp_path / "r"
    assert main(["--checkpoint", str(_tiny_checkpoint(tmp_path / "m.pt")), "--shards", str(tmp_path / "test-*.tar"),
                 "--output", str(out), "--baseline", "center", "--heatmaps", "1"]) == 0
    page = out / "report.html"
    targets = _assert_links_resolve(page)
    assert "baseline_center/metrics.json" in targets and "baseline_center/per_clip.csv" in targets
    assert any(t.startswith("baseline_center/heatmaps/") for t in targets)
    assert "baseline center" in page.read_text()


def _fake_eval(folder: Path, cious: list[float]) -> dict:
    """An evaluation folder as the evaluator leaves it: per_clip.csv, metrics.json, one picture."""
    from htf.metrics import summarize

    folder.mkdir(parents=True)
    with open(folder / "per_clip.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "audio_id", "sounding", "ciou", "confidence", "box_format", "n_boxes", "constant_map", "shard"])
        for i, c in enumerate(cious):
            w.writerow([f"c{i}", f"c{i}", 1, f"{c:.6f}", "0.5", "vggss", 1, 0, "s.tar"])
    (folder / "metrics.json").write_text("{}")
    (folder / "report.html").write_text("<html></html>")
    (folder / "heatmaps").mkdir()
    (folder / "heatmaps" / "best_01_c0.png").write_bytes(b"\x89PNG")
    return {**summarize(cious), "pictures": [{"kind": "best", "rank": 1, "id": "c0", "ciou": cious[0],
                                              "path": "heatmaps/best_01_c0.png"}]}


def test_demo_report_has_curves_histogram_per_method_rows_and_working_links(tmp_path):
    from apps.demo import ROWS, DemoPlan, write_report

    plan = DemoPlan(output=tmp_path, n=10)
    results = {key: _fake_eval(tmp_path / "eval" / key, [0.1 * (i + 1), 0.6, 0.3])
               for i, (key, _) in enumerate(ROWS)}
    curves = tmp_path / "training_curves.png"
    curves.write_bytes(b"\x89PNG")
    md, page = write_report(plan, results, {"world": 1.0}, curves)
    text = page.read_text()
    assert "](" not in text                               # no literal Markdown link in the HTML
    targets = _assert_links_resolve(page)
    assert {"success_curves.png", "ciou_histogram.png"} <= set(targets)
    for key, label in ROWS:
        assert f"eval/{key}/metrics.json" in targets and f"eval/{key}/per_clip.csv" in targets
        assert f"eval/{key}/heatmaps/best_01_c0.png" in targets and f"<h3>{label}</h3>" in text
    md_targets = re.findall(r"\]\(([^)]+)\)", md.read_text())
    assert all((tmp_path / t).is_file() for t in md_targets)
    from eval.report import REPORT_CSS

    assert REPORT_CSS in text                              # one stylesheet for every report


def test_an_evaluation_that_scores_nothing_leaves_no_report_folder(tmp_path, capsys):
    from tests.eval_shards import corrupt_member

    shard = write_shard(tmp_path / "test-000000.tar", standard_clips(1))
    corrupt_member(shard, standard_clips(1)[0].id)
    out = tmp_path / "r"
    assert main(["--baseline", "center", "--shards", str(shard), "--output", str(out)]) == 2
    assert "no clip could be scored" in capsys.readouterr().err and not out.exists()
