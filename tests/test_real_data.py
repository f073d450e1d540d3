"""The released-weights recipe of docs/eval.md, run as written on raw downloads laid out as
the real ones (tests/real_layouts.py), with official-format checkpoints made in the test."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.official_checkpoints import official_model, save_lightning_ckpt, save_pth
from tests.real_layouts import ClipSpec, make_vggsound, vggss_entries

REPO = Path(__file__).resolve().parent.parent
VGGSS_IDS = ["zpWuikVorYg_000032", "gEvCUcZ6w88_000030", "JIemsK_0lXc_000364"]


def run_doc_command(command: str, cwd: Path, **paths: str) -> subprocess.CompletedProcess:
    """A documented command with only its paths substituted, run from the repository root."""
    for name, value in paths.items():
        command = command.replace(name, value)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = command.split()
    assert args[0] == "python"
    return subprocess.run([sys.executable, *args[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


PIPELINE_CMD = ("python -m pipeline run --config configs/pipeline/htf-official.yaml --input RAW_VGGSOUND "
                "--output OUT/vggss-official --split-list metadata/htf_vggss_test_trimmed.csv "
                "--annotations metadata/htf_vggss.json --shard-prefix test")
EVAL_CMD = ("python -m eval --config configs/eval/htf-official.yaml --checkpoint vgg.pth "
            "--shards OUT/vggss-official/test-*.tar --output reports/vggss-official")


@pytest.fixture(scope="module")
def official_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vggss")
    raw = make_vggsound(root, [ClipSpec(e["file"], frames=60) for e in vggss_entries(VGGSS_IDS)])
    done = run_doc_command(PIPELINE_CMD, REPO, RAW_VGGSOUND=str(raw), OUT=str(root / "out"))
    assert done.returncode == 0, done.stderr
    return root / "out"


@pytest.mark.parametrize("fmt", ["pth", "ckpt"])
def test_released_weights_recipe_runs_with_settings_check_error(official_shards, tmp_path, fmt):
    model = official_model(seed=1)
    ckpt = save_pth(tmp_path / "vgg.pth", model) if fmt == "pth" else save_lightning_ckpt(tmp_path / "vgg.ckpt", model)
    done = run_doc_command(EVAL_CMD, REPO, **{"vgg.pth": str(ckpt), "OUT": str(official_shards),
                                             "reports": str(tmp_path / "reports")})
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "reports" / "vggss-official" / "metrics.json").read_text())
    assert metrics["n"] == len(VGGSS_IDS)
    assert metrics["settings_checked"] and metrics["config"]["run"]["check_settings"] == "error"
    assert not metrics["warnings"]


def test_official_checkpoint_expects_exactly_the_official_pipeline_preset(tmp_path):
    from htf.config import load_config
    from pipeline.config import PipelineConfig, sample_settings
    from htf.model import load_model

    preset = sample_settings(load_config(PipelineConfig, REPO / "configs/pipeline/htf-official.yaml"))
    expected = load_model(save_pth(tmp_path / "w.pth", official_model(width=8))).data_settings
    for section, values in expected.items():
        for key, value in values.items():
            assert preset[section][key] == value, f"{section}.{key}"
    assert expected["frames"]["short_side"] == preset["frames"]["short_side"]


def test_vggss_clips_with_absurd_or_empty_boxes_count_with_ciou_zero_and_do_not_abort(tmp_path):
    ids = ["M1P1xla8rg0_000000", "Db6Hjt0x28k_000056", "zpWuikVorYg_000032"]
    raw = make_vggsound(tmp_path, [ClipSpec(i, frames=40) for i in ids])
    out = tmp_path / "out"
    done = run_doc_command("python -m pipeline run --config configs/pipeline/vggsound.yaml --input RAW "
                           "--output OUT --split-list metadata/lvs_vggss_test5158.csv "
                           "--annotations metadata/htf_vggss.json --shard-prefix test", REPO,
                           RAW=str(raw), OUT=str(out))
    assert done.returncode == 0, done.stderr
    done = run_doc_command("python -m eval --baseline center --shards OUT/test-*.tar --output REPORT",
                           REPO, OUT=str(out), REPORT=str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["empty_ground_truth"] == ["M1P1xla8rg0_000000"]
    import csv

    rows = {r["id"]: r for r in csv.DictReader(open(tmp_path / "report" / "per_clip.csv"))}
    assert float(rows["M1P1xla8rg0_000000"]["ciou"]) == 0.0
    assert rows["Db6Hjt0x28k_000056"]["n_boxes"] == "1"     # the absurd box is empty, as officially


def _flickr_split(tmp_path: Path) -> tuple[Path, Path, Path, list[str]]:
    """Four listed Flickr clips: normal, 0.5 s of audio, digital silence, and one not downloaded."""
    from tests.real_layouts import flickr_ids, make_flickr, write_list

    ids = flickr_ids(n=4)
    specs = [ClipSpec(ids[0]), ClipSpec(ids[1], audio_seconds=0.5), ClipSpec(ids[2], silent=True)]
    raw, ann = make_flickr(tmp_path, specs)
    return raw, ann, write_list(tmp_path / "list.txt", ids), ids


def _run_flickr(raw: Path, ann: Path, listed: Path, out: Path, prefix: str) -> subprocess.CompletedProcess:
    return run_doc_command(f"python -m pipeline run --config configs/pipeline/flickr.yaml --input RAW "
                           f"--output OUT --split-list LIST --annotations ANN --shard-prefix {prefix}", REPO,
                           RAW=str(raw), OUT=str(out), LIST=str(listed), ANN=str(ann))


def test_test_split_keeps_short_and_silent_clips_and_eval_names_the_missing_one(tmp_path):
    raw, ann, listed, ids = _flickr_split(tmp_path)
    out = tmp_path / "out"
    assert _run_flickr(raw, ann, listed, out, "test").returncode == 0
    report = tmp_path / "report"
    done = run_doc_command("python -m eval --baseline center --shards OUT/test-*.tar --output REPORT "
                           "--split-list LIST", REPO, OUT=str(out), REPORT=str(report), LIST=str(listed))
    assert done.returncode == 0, done.stderr
    m = json.loads((report / "metrics.json").read_text())
    assert m["n"] == 3 and m["n_listed"] == 4
    assert [x["id"] for x in m["not_scored"]] == [ids[3]]
    assert m["not_scored"][0]["reason"].startswith("missing_file")
    assert f"not scored: {ids[3]}" in done.stderr


def test_training_split_still_drops_short_and_silent_clips(tmp_path):
    raw, ann, listed, ids = _flickr_split(tmp_path)
    out = tmp_path / "out"
    assert _run_flickr(raw, ann, listed, out, "train").returncode == 0
    reasons = {json.loads(line)["id"]: json.loads(line)["reason"]
               for line in (out / "failures.jsonl").read_text().splitlines()}
    assert reasons == {ids[1]: "audio_too_short", ids[2]: "silent_audio", ids[3]: "missing_file"}


OFFICIAL_OVERRIDES = {"5344317532": 74, "10624261424": 514, "12158276143": 375}


def test_shipped_flickr_keyframe_map_is_imagetoframe_with_the_three_official_overrides():
    source = json.loads((REPO / "metadata/htf_imagetoframe.json").read_text())
    resolved = json.loads((REPO / "metadata/htf_flickr_test_keyframes.json").read_text())
    assert set(resolved) == set(source)
    for clip_id, entries in source.items():
        assert resolved[clip_id] == [OFFICIAL_OVERRIDES.get(clip_id, entries[0])], clip_id


def test_flickr_test_shards_use_the_overridden_keyframes(tmp_path):
    from htf.shards import read_samples
    from tests.real_layouts import make_flickr, write_list

    specs = [ClipSpec("5344317532", frames=90), ClipSpec("12158276143", frames=375)]
    raw, ann = make_flickr(tmp_path, specs)
    listed = write_list(tmp_path / "list.txt", [s.id for s in specs])
    done = run_doc_command("python -m pipeline run --config configs/pipeline/flickr.yaml --input RAW_FLICKR "
                           "--output OUT/flickr --split-list LIST --annotations YOUR_FLICKR_XML_FOLDER "
                           "--keyframes metadata/htf_flickr_test_keyframes.json --shard-prefix test", REPO,
                           RAW_FLICKR=str(raw), OUT=str(tmp_path / "out"), LIST=str(listed),
                           YOUR_FLICKR_XML_FOLDER=str(ann))
    assert done.returncode == 0, done.stderr
    failures: list = []
    frames = {s.id: s.meta.keyframe_index for _, s in read_samples(
        sorted(str(p) for p in (tmp_path / "out" / "flickr").glob("test-*.tar")), failures.append)}
    assert not failures
    # 74 - 1; and 375 is the last frame's number there, so 375 - 2 (the official end rule)
    assert frames == {"5344317532": 73, "12158276143": 373}


def _official_test_loader_audio(wav: Path) -> "np.ndarray":
    """The official test loader, from its rule: centre at half the whole seconds, Python
    slicing, /32767, tiled to 3 s."""
    import numpy as np
    from scipy.io import wavfile

    rate, samples = wavfile.read(wav)
    lower = float(len(samples) // 22050) / 2 - 1.5
    higher = float(len(samples) // 22050) / 2 + 1.5
    audio = samples[int(lower * 22050):int(higher * 22050)] / 32767
    if audio.shape[0] < rate * 3.0:
        audio = np.tile(audio, int(rate * 3.0 / audio.shape[0]) + 1)
    return audio[:int(rate * 3.0)]


@pytest.mark.parametrize("audio_seconds", [4.5, 10.9, 2.5, 1.2])
def test_htf_official_preset_cuts_test_audio_as_the_official_test_loader(tmp_path, audio_seconds):
    import numpy as np

    from htf.config import load_config
    from pipeline.config import PipelineConfig
    from pipeline.decode import decode_clip
    from tests.real_layouts import write_video, write_wav

    spec = ClipSpec("5344317532", frames=30, audio_seconds=audio_seconds)
    video = write_video(tmp_path / "video" / "c.mp4", spec, with_audio=False)
    wav = write_wav(tmp_path / "audio" / "c.wav", spec)
    cfg = load_config(PipelineConfig, REPO / "configs/pipeline/htf-official.yaml", ["pack.prefix=test"])
    ours = decode_clip(str(video), cfg, audio_path=str(wav)).waveform
    expected = _official_test_loader_audio(wav)
    assert ours.shape == expected.shape == (66150,)
    assert np.abs(ours - expected).max() < 1e-4


def test_train_without_config_runs_the_official_recipe_and_fails_fast_offline_naming_the_file(tmp_path):
    from tests.eval_shards import standard_clips, write_shard

    shards = write_shard(tmp_path / "train-000000.tar", standard_clips(2))
    env = dict(os.environ, PYTHONPATH=str(REPO), HTF_OFFLINE="1", TORCH_HOME=str(tmp_path / "hub"))
    # The shards are ours, not official ones: the settings check is switched off so that the
    # run reaches the weights it needs.
    done = subprocess.run([sys.executable, "-m", "train", "--train-shards", str(shards), "--output",
                           str(tmp_path / "run"), "--set", "data.expect_settings={}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "configs/train/htf-official.yaml" in done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert error and str(tmp_path / "hub" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in error[0]
    assert not (tmp_path / "run" / "checkpoints").exists()
    helped = subprocess.run([sys.executable, "-m", "train", "--help"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert "official recipe" in helped.stdout and "htf-official.yaml" in helped.stdout
