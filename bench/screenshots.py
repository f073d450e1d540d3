"""Screenshots of the reports and pictures as a browser shows them (headless Chromium).

    python bench/screenshots.py [--work DIR] [--out bench/screens] [--n 24]

Makes the outputs a person reads, then photographs them:

1. a miniature demo (``apps.demo`` with --n clips): the demo's report.html and one
   evaluation's report.html (success curve, histogram, heat-map rows, links);
2. ``apps.localize`` on a 1280x720 test video with the demo's HTF checkpoint: the keyframe
   still and a frame of the overlay video.

Each page is rendered by ``chromium --headless --screenshot`` at a desktop window size and
saved, shrunk to a small PNG, under --out; every relative link of each report is checked to
point to an existing file. Needs the Debian package ``chromium`` and ffmpeg.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    raise SystemExit("error: no chromium found: apt-get install -y chromium")


def screenshot(page: Path, png: Path, size: tuple[int, int] = (1280, 2400)) -> Path:
    """What a browser window of ``size`` shows of ``page`` (the top ``size[1]`` pixels)."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={size[0]},{size[1]}", f"--screenshot={png}", page.resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return png


def shrink(png: Path, width: int = 900) -> Path:
    """Keep the screenshots small in the repository: at most ``width`` px, 256 colours."""
    from PIL import Image

    img = Image.open(png).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    img.quantize(colors=256).save(png, optimize=True)
    return png


def broken_links(page: Path) -> list[str]:
    """Relative src/href targets of ``page`` that do not exist."""
    targets = re.findall(r"(?:src|href)='([^']+)'", page.read_text())
    return [t for t in targets if "://" not in t and not (page.parent / t).exists()]


def rerender(plan) -> None:
    """Write the demo's and each evaluation's reports again from the files they are made of."""
    from apps.demo import ROWS, clip_kinds, results_by_kind, write_report
    from eval.report import write_report as write_eval_report

    results = {}
    for key, _ in ROWS:
        folder = plan.output / "eval" / key
        results[key] = json.loads((folder / "metrics.json").read_text())
        write_eval_report(results[key], folder)
    saved = json.loads((plan.output / "results.json").read_text())
    kinds = clip_kinds(plan.output / "world")
    by_kind = {k: results_by_kind(plan.output / "eval" / k, kinds) for k in results}
    write_report(plan, results, saved["seconds"], plan.output / "training_curves.png", by_kind)


def video_frame(video: Path, png: Path, second: float = 1.0) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(second), "-i", str(video), "-frames:v", "1",
                    str(png)], check=True)
    return png


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/htf_screens"), help="scratch folder")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "screens", help="where the PNGs go")
    p.add_argument("--n", type=int, default=24, help="clips of the miniature demo")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    from apps.demo import DemoPlan, run_demo

    demo = a.work / "demo"
    plan = DemoPlan(output=demo, n=a.n, seed=0, nproc=2, heatmaps=2,
                    train_overrides=["train.steps=2", "data.batch_size=4", "data.val_batch_size=4"])
    if not (demo / "report.html").is_file():
        run_demo(plan)
    else:
        rerender(plan)   # an earlier run's outputs, its reports written again by this code
    pages = {"demo_report": (demo / "report.html", 4400),
             "eval_report": (demo / "eval" / "htf" / "report.html", 2000)}
    problems = {name: broken_links(page) for name, (page, _) in pages.items()}
    for name, (page, height) in pages.items():
        shrink(screenshot(page, a.out / f"{name}.png", (1280, height)))
        print(f"{name}: {a.out / (name + '.png')} (broken links: {problems[name] or 'none'})")

    video = a.work / "wide_720p.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25:duration=3",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:a", "aac", "-shortest",
                    "-pix_fmt", "yuv420p", str(video)], check=True)
    from apps.localize import main as localize

    ckpt = demo / "runs" / "htf" / "checkpoints" / "best.pt"
    if localize(["--checkpoint", str(ckpt), "--video", str(video), "--output", str(a.work / "localize"),
                 "--every", "25"]) != 0:
        raise SystemExit("error: localize failed")
    still = a.work / "localize" / "wide_720p_keyframe.png"
    shrink(Path(shutil.copyfile(still, a.out / "localize_still_720p.png")), 1000)
    shrink(video_frame(a.work / "localize" / "wide_720p_overlay.mp4", a.out / "localize_video_frame.png"), 1000)
    h, w = cv2.imread(str(still)).shape[:2]
    print(f"localize still of a 1280x720 video: {w}x{h} px -> {a.out / 'localize_still_720p.png'}")
    return 1 if any(problems.values()) else 0

if __name__ == "__main__":
    sys.exit(main())
