"""The synthetic audio-visual world: real files, boxes that match the pixels, class-specific sound."""
import json
import subprocess
import sys

import av
import numpy as np
import pytest

from apps.synth import CLASSES, WorldConfig, generate_world, keyframe_index, plan_clip, render_audio

SMALL = dict(size=128, seconds=2.0, fps=10, workers=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    cfg = WorldConfig(n=6, seed=3, **SMALL)
    generate_world(cfg, out, progress=False)
    return out, cfg


def decode_frames(path):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def decode_audio(path):
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [f.to_ndarray() for f in container.decode(audio=0)]
        return np.concatenate([c.reshape(-1, c.shape[-1])[0] for c in chunks]), stream.rate


def test_writes_h264_video_with_an_aac_track_for_every_clip(world):
    out, cfg = world
    files = sorted((out / "video").glob("*.mp4"))
    assert len(files) == cfg.n
    with av.open(str(files[0])) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"
        assert c.streams.video[0].width == cfg.size


def test_keyframe_contains_the_sounding_object_inside_its_box(world):
    out, cfg = world
    boxes = {b["file"]: b for b in json.loads((out / "boxes.json").read_text())}
    checked = 0
    for clip in json.loads((out / "world.json").read_text())["clips"]:
        frame = decode_frames(out / "video" / f"{clip['id']}.mp4")[keyframe_index(cfg)]
        x1, y1, x2, y2 = (np.array(boxes[clip["id"]]["bbox"][0]) * cfg.size).round().astype(int)
        sounder = CLASSES[clip["objects"][clip["sounding"]]["class"]]
        assert boxes[clip["id"]]["class"] == sounder.name
        # centre of the box, where every shape covers the pixel (the cross is hollow off-axis)
        cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
        patch = frame[cy - 2:cy + 3, cx - 2:cx + 3].reshape(-1, 3).astype(float)
        colour = np.array(sounder.color, float)
        # the texture alternates full and 0.55x shades of the class colour; both are
        # the colour's direction in RGB, which the background noise is not
        cos = (patch @ colour) / (np.linalg.norm(patch, axis=1) * np.linalg.norm(colour) + 1e-9)
        drawn_on_top = clip["draw_order"][-1] == clip["sounding"] or not _overlaps_centre(clip, cfg)
        if drawn_on_top:
            assert np.median(cos) > 0.97, (clip["id"], sounder.name, patch.mean(0))
            checked += 1
    assert checked >= 3  # most clips have the sounding object's centre unoccluded


def _overlaps_centre(clip, cfg):
    """Whether another object covers the sounding box's centre at the keyframe."""
    s = clip["objects"][clip["sounding"]]
    return any(abs(o["cx"] - s["cx"]) < o["w"] / 2 + 8 and abs(o["cy"] - s["cy"]) < o["h"] / 2 + 8
               for i, o in enumerate(clip["objects"]) if i != clip["sounding"])


def test_sounding_boxes_are_large_enough_to_reach_ciou_half_under_a_median_mask():
    cfg = WorldConfig(n=200, seed=0)
    for i in range(cfg.n):
        plan = plan_clip(cfg, i)
        obj = plan["objects"][plan["sounding"]]
        assert obj["w"] * obj["h"] / cfg.size**2 >= 0.27


def test_audio_peaks_at_the_sounding_class_fundamental(world):
    out, cfg = world
    for clip in json.loads((out / "world.json").read_text())["clips"][:3]:
        samples, rate = decode_audio(out / "video" / f"{clip['id']}.mp4")
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
        freqs = np.fft.rfftfreq(len(samples), 1 / rate)
        peak = freqs[np.argmax(spectrum[freqs > 80]) + np.sum(freqs <= 80)]
        f0 = clip["audio"]["f0"]
        assert abs(peak - f0) / f0 < 0.03, (clip["id"], peak, f0)


def test_each_class_has_a_distinct_pitch_so_sound_identifies_the_class():
    f0s = sorted(c.f0 for c in CLASSES)
    # per-clip jitter is +-3 %, class pitches are >= 20 % apart: no confusion possible
    assert all(b / a > 1.2 for a, b in zip(f0s, f0s[1:]))


def test_same_seed_gives_the_same_world_and_another_seed_a_different_one(tmp_path):
    a = WorldConfig(n=1, seed=5, **SMALL)
    assert plan_clip(a, 0) == plan_clip(a, 0)
    assert np.array_equal(render_audio(plan_clip(a, 0), a), render_audio(plan_clip(a, 0), a))
    assert plan_clip(a, 0) != plan_clip(WorldConfig(n=1, seed=6, **SMALL), 0)
    generate_world(a, tmp_path / "x", progress=False)
    generate_world(a, tmp_path / "y", progress=False)
    fx = decode_frames(tmp_path / "x" / "video" / "syn5_00000.mp4")
    fy = decode_frames(tmp_path / "y" / "video" / "syn5_00000.mp4")
    assert all(np.array_equal(p, q) for p, q in zip(fx, fy))
    assert (tmp_path / "x" / "boxes.json").read_text() == (tmp_path / "y" / "boxes.json").read_text()


def test_splits_are_disjoint_and_cover_every_clip(world):
    out, cfg = world
    splits = {s: (out / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    all_ids = [i for ids in splits.values() for i in ids]
    assert len(all_ids) == len(set(all_ids)) == cfg.n


def test_motion_is_a_prior_but_not_sufficient():
    cfg = WorldConfig(n=400, seed=1)
    sounder_moves = distractor_moves = 0
    for i in range(cfg.n):
        plan = plan_clip(cfg, i)
        for j, obj in enumerate(plan["objects"][:2]):
            moving = obj["motion"]["amp"] > 0
            if j == plan["sounding"]:
                sounder_moves += moving
            else:
                distractor_moves += moving
    assert 0.75 < sounder_moves / cfg.n < 0.95
    assert 0.3 < distractor_moves / cfg.n < 0.6


def test_rerun_skips_clips_already_written(tmp_path):
    cfg = WorldConfig(n=2, seed=9, **SMALL)
    generate_world(cfg, tmp_path, progress=False)
    first = tmp_path / "video" / "syn9_00000.mp4"
    stamp = first.stat().st_mtime_ns
    generate_world(cfg, tmp_path, progress=False)
    assert first.stat().st_mtime_ns == stamp


def test_command_line_prints_where_it_wrote_the_world(tmp_path):
    result = subprocess.run([sys.executable, "-m", "apps.synth", "--output", str(tmp_path / "w"),
                             "--n", "2", "--size", "64", "--seconds", "1", "--fps", "8", "--workers", "1"],
                            capture_output=True, text=True, check=True)
    assert str(tmp_path / "w") in result.stdout
    assert len(list((tmp_path / "w" / "video").glob("*.mp4"))) == 2


def test_same_class_pairs_appear_at_the_configured_rate_and_never_by_default():
    assert all(plan_clip(WorldConfig(n=1, seed=2), i)["objects"][0]["class"]
               != plan_clip(WorldConfig(n=1, seed=2), i)["objects"][1]["class"] for i in range(200))
    cfg = WorldConfig(n=400, seed=2, p_same_class=0.35)
    same = 0
    for i in range(cfg.n):
        plan = plan_clip(cfg, i)
        big = [o["class"] for o in plan["objects"] if not o["small"]]
        same += big[0] == big[1]
        small = [o["class"] for o in plan["objects"] if o["small"]]
        assert all(c not in big for c in small)  # the small distractor never shares a class
    assert 0.25 < same / cfg.n < 0.45


def test_sound_families_make_partner_classes_sound_alike_and_appear_together():
    cfg = WorldConfig(n=300, seed=4, sound_families=True, p_same_family=0.3)
    together = 0
    for i in range(cfg.n):
        plan = plan_clip(cfg, i)
        big = [o["class"] for o in plan["objects"] if not o["small"]]
        sounder = big[plan["sounding"]]
        # both members of a family make the sound of the family's first class
        assert plan["sound_class"] == sounder - sounder % 2
        assert abs(plan["audio"]["f0"] / CLASSES[plan["sound_class"]].f0 - 1) <= 0.03
        together += big[0] // 2 == big[1] // 2
    assert 0.3 < together / cfg.n < 0.55   # forced 30 % plus the pairs chance gives


def test_sound_families_leave_the_default_world_untouched():
    plain, families_off = WorldConfig(n=1, seed=0), WorldConfig(n=1, seed=0, p_same_family=0.9)
    assert all(plan_clip(plain, i) == plan_clip(families_off, i) for i in range(50))


def _axis_of(direction: float) -> str:
    degrees = round(np.degrees(direction)) % 180
    return {0: "horizontal", 90: "vertical", 45: "diagonal", 135: "diagonal"}[degrees]


def test_playing_motion_moves_a_sounding_object_along_its_class_axis_and_silent_ones_along_another():
    from apps.synth import playing_axis
    cfg = WorldConfig(n=300, seed=5, p_same_class=0.35, playing_motion=True)
    checked_sounding = checked_silent = 0
    for i in range(cfg.n):
        plan = plan_clip(cfg, i)
        for j, obj in enumerate(plan["objects"]):
            if obj["motion"]["amp"] == 0:
                continue
            if j == plan["sounding"]:
                assert _axis_of(obj["motion"]["dir"]) == playing_axis(obj["class"])
                checked_sounding += 1
            else:
                assert _axis_of(obj["motion"]["dir"]) != playing_axis(obj["class"])
                checked_silent += 1
    assert checked_sounding > 200 and checked_silent > 100


def test_playing_motion_keeps_the_motion_rates_of_the_default_world():
    cfg = WorldConfig(n=400, seed=1, playing_motion=True)
    plans = [plan_clip(cfg, i) for i in range(cfg.n)]
    sounder = np.mean([p["objects"][p["sounding"]]["motion"]["amp"] > 0 for p in plans])
    other = np.mean([p["objects"][1 - p["sounding"]]["motion"]["amp"] > 0 for p in plans])
    assert 0.75 < sounder < 0.95 and 0.3 < other < 0.6


def test_playing_motion_off_leaves_the_default_world_untouched():
    # Values of the default demo world (seed 0, 128 px) written before the option existed:
    # with the option off no extra random numbers are drawn, so old worlds stay reproducible.
    cfg = WorldConfig(n=2, seed=0, size=128)
    first, second = plan_clip(cfg, 0), plan_clip(cfg, 1)
    assert first["objects"][0]["motion"]["dir"] == pytest.approx(3.402101183476623, abs=1e-12)
    small = second["objects"][2]
    assert small["small"] and small["cx"] == pytest.approx(47.395186933749656, abs=1e-9)
    assert small["motion"]["dir"] == pytest.approx(2.726450353850007, abs=1e-12)


# ------------------------------------------------------------------------ the world family

def test_named_demo_world_is_the_demo_setting_and_default_is_the_generator_default():
    from apps.synth import world_config
    assert world_config("default", n=1, seed=2) == WorldConfig(n=1, seed=2)
    demo, explicit = world_config("demo", n=1, seed=2), WorldConfig(n=1, seed=2, p_same_class=0.35, playing_motion=True)
    assert all(plan_clip(demo, i) == plan_clip(explicit, i) for i in range(30))


def test_unknown_world_name_is_refused_with_the_known_names():
    from apps.synth import world_config
    with pytest.raises(ValueError, match="unknown world 'nope'.*indep"):
        world_config("nope")


@pytest.mark.parametrize("key,value", [("n_objects", (1, 3)), ("motion_pattern", "spin"),
                                       ("p_distractor_moves", 1.5), ("background", "sky")])
def test_out_of_range_world_setting_is_refused_naming_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        WorldConfig(**{key: value}).validate()


def test_indep_world_shows_two_to_four_large_objects_of_distinct_classes():
    from apps.synth import sounding_box, world_config
    cfg = world_config("indep", n=300, seed=1, size=128)
    counts = set()
    for i in range(cfg.n):
        plan = plan_clip(cfg, i)
        classes = [o["class"] for o in plan["objects"]]
        assert len(set(classes)) == len(classes) and not any(o["small"] for o in plan["objects"])
        counts.add(len(classes))
        x1, y1, x2, y2 = sounding_box(plan, cfg)
        assert (x2 - x1) * (y2 - y1) >= 0.25       # reachable: cIoU 0.5 under a median mask
    assert counts == {2, 3, 4}


def test_indep_motion_pattern_does_not_depend_on_the_class():
    from apps.synth import FREE_PATTERNS, world_config
    cfg = world_config("indep", n=600, seed=2, size=128)
    seen: dict[int, set] = {}
    for i in range(cfg.n):
        plan = plan_clip(cfg, i)
        m = plan["objects"][plan["sounding"]]["motion"]
        if m["amp"] > 0:
            seen.setdefault(plan["objects"][plan["sounding"]]["class"], set()).add(
                (m["pattern"], _axis_bin(m["dir"])))
    # every class's sounders use every pattern along directions of every quadrant
    assert len(seen) == len(CLASSES)
    assert all({p for p, _ in kinds} == set(FREE_PATTERNS) and len({d for _, d in kinds}) == 4
               for kinds in seen.values())


def _axis_bin(direction: float) -> int:
    return int((direction % (2 * np.pi)) // (np.pi / 2))


@pytest.mark.parametrize("name,lo,hi", [("indep", 0.25, 0.42), ("distractors", 0.7, 0.9), ("distractors-sync", 0.7, 0.9)])
def test_sounder_moves_in_most_clips_and_silent_objects_at_the_world_rate(name, lo, hi):
    from apps.synth import world_config
    cfg = world_config(name, n=400, seed=3, size=128)
    sounder = silent = silent_n = 0
    for i in range(cfg.n):
        plan = plan_clip(cfg, i)
        for j, obj in enumerate(plan["objects"]):
            if j == plan["sounding"]:
                sounder += obj["motion"]["amp"] > 0
            else:
                silent += obj["motion"]["amp"] > 0
                silent_n += 1
    assert 0.78 < sounder / cfg.n < 0.92
    assert lo < silent / silent_n < hi


def test_sounding_objects_motion_follows_the_sound_envelope_and_silent_movers_their_own():
    from apps.synth import world_config
    cfg = world_config("indep", n=100, seed=4, size=64, seconds=2.0)
    sounders = silent = 0
    for i in range(cfg.n):
        plan = plan_clip(cfg, i)
        for j, obj in enumerate(plan["objects"]):
            if obj["motion"]["amp"] == 0:
                continue
            if j == plan["sounding"]:
                assert obj["motion"]["envelope"] == plan["audio"]["envelope"]
                sounders += 1
            else:
                assert obj["motion"]["envelope"] != plan["audio"]["envelope"]
                silent += 1
    assert sounders > 50 and silent > 10


def test_in_distractors_sync_silent_movers_follow_the_sound_envelope_too():
    from apps.synth import world_config
    cfg = world_config("distractors-sync", n=60, seed=4, size=64, seconds=2.0)
    silent = 0
    for i in range(cfg.n):
        plan = plan_clip(cfg, i)
        for j, obj in enumerate(plan["objects"]):
            if obj["motion"]["amp"] > 0:
                assert obj["motion"]["envelope"] == plan["audio"]["envelope"]
                silent += j != plan["sounding"]
    assert silent > 30


def test_silent_movers_cannot_follow_a_sound_without_an_envelope():
    with pytest.raises(ValueError, match="silent_movers_follow_sound needs envelope_motion"):
        WorldConfig(silent_movers_follow_sound=True).validate()


def test_sound_loudness_follows_its_envelope():
    from apps.synth import envelope_at, world_config
    cfg = world_config("indep", n=50, seed=4, size=64, seconds=2.0)
    # a class without rhythm pulses, whose loudness is the contour alone
    plan = next(p for p in (plan_clip(cfg, i) for i in range(cfg.n)) if CLASSES[p["sound_class"]].rhythm_hz == 0)
    wave = render_audio(plan, cfg)
    hop = cfg.sample_rate // 20
    rms = np.sqrt([np.mean(wave[k:k + hop] ** 2) for k in range(0, len(wave) - hop, hop)])
    env = envelope_at(plan["audio"]["envelope"], np.arange(len(rms)) * hop / cfg.sample_rate + 0.025)
    assert np.corrcoef(rms, env)[0, 1] > 0.8


def test_envelope_scales_how_far_the_sounding_object_is_from_its_rest_position():
    from apps.synth import envelope_at, object_center
    obj = {"cx": 50.0, "cy": 50.0, "motion": {"amp": 10.0, "freq": 1.0, "dir": 0.0, "phase": 0.3,
                                              "pattern": "line", "ratio": 1.0, "freq2": 1.0, "phase2": 0.0,
                                              "envelope": [0.2, 1.0, 0.2, 1.0, 0.2, 1.0, 0.2]}}
    for t in (0.1, 0.35, 0.9):
        x, _ = object_center(obj, t, 0.0)
        expected = 10.0 * envelope_at(obj["motion"]["envelope"], t) * np.sin(2 * np.pi * t + 0.3)
        assert x - 50.0 == pytest.approx(expected)


def test_same_class_pairs_in_the_family_include_the_sounder_and_keep_the_others_distinct():
    from apps.synth import world_config
    cfg = world_config("indep-same", n=300, seed=5, size=128)
    pairs = 0
    for i in range(cfg.n):
        plan = plan_clip(cfg, i)
        classes = [o["class"] for o in plan["objects"]]
        if len(set(classes)) < len(classes):
            pairs += 1
            assert len(set(classes)) == len(classes) - 1
            assert classes.count(classes[plan["sounding"]]) == 2
    assert 0.25 < pairs / cfg.n < 0.45


def test_varied_world_draws_textures_per_object_and_textured_backgrounds(tmp_path):
    from apps.synth import BACKGROUND_PATTERNS, TEXTURES, render_frames, world_config
    cfg = world_config("indep", n=60, seed=6, size=64, seconds=1.0, fps=4)
    plans = [plan_clip(cfg, i) for i in range(cfg.n)]
    assert {o["texture"] for p in plans for o in p["objects"]} == set(TEXTURES)
    assert {p["background"]["pattern"] for p in plans} == set(BACKGROUND_PATTERNS)
    frame = next(render_frames(plans[0], cfg))
    assert frame.shape == (64, 64, 3) and frame.std() > 10


def test_command_line_makes_a_named_world_and_options_change_it(tmp_path):
    import yaml
    subprocess.run([sys.executable, "-m", "apps.synth", "--output", str(tmp_path / "w"), "--world", "indep",
                    "--p-silent-moves", "0.9", "--n", "1", "--size", "64", "--seconds", "1", "--fps", "8",
                    "--workers", "1"], capture_output=True, text=True, check=True)
    saved = yaml.safe_load((tmp_path / "w" / "synth_config.yaml").read_text())
    assert saved["motion_pattern"] == "free" and saved["background"] == "textured"
    assert saved["p_distractor_moves"] == 0.9


def test_command_line_refuses_an_out_of_range_world_option_naming_it(tmp_path):
    result = subprocess.run([sys.executable, "-m", "apps.synth", "--output", str(tmp_path / "w"),
                             "--world", "indep", "--n-objects", "1", "5"], capture_output=True, text=True)
    assert result.returncode == 2 and "n_objects" in result.stderr
    assert not (tmp_path / "w" / "video").exists()


# --------------------------------------------------------------- the most any map can score

STILL = {"amp": 0.0}
CONTOUR, OTHER_CONTOUR = [0.2, 0.9, 0.4], [0.7, 0.3, 0.8]


def pair_plan(sounder_motion, twin_motion, twin_class=0, twin_small=False):
    """A clip of two objects, the first sounding: the pair's motion is all that differs."""
    return {"objects": [{"class": 0, "small": False, "motion": sounder_motion},
                        {"class": twin_class, "small": twin_small, "motion": twin_motion}],
            "sounding": 0}


def moving(contour=None):
    return {"amp": 5.0} if contour is None else {"amp": 5.0, "envelope": contour}


def test_a_still_sounder_beside_a_still_twin_of_its_class_has_one_lookalike():
    from apps.synth import lookalikes, world_config
    assert lookalikes(pair_plan(STILL, STILL), world_config("indep-same")) == 1


def test_a_twin_that_moves_or_stands_still_unlike_the_sounder_is_told_apart():
    from apps.synth import lookalikes, world_config
    cfg = world_config("indep-same")
    assert lookalikes(pair_plan(STILL, moving(OTHER_CONTOUR)), cfg) == 0
    assert lookalikes(pair_plan(moving(CONTOUR), STILL), cfg) == 0


def test_a_moving_twin_is_a_lookalike_only_when_it_keeps_the_sounds_contour():
    from apps.synth import lookalikes, world_config
    assert lookalikes(pair_plan(moving(CONTOUR), moving(OTHER_CONTOUR)), world_config("indep-same")) == 0
    assert lookalikes(pair_plan(moving(CONTOUR), moving(CONTOUR)), world_config("distractors-sync")) == 1


def test_with_playing_motion_a_silent_mover_never_looks_like_a_moving_sounder():
    from apps.synth import lookalikes, world_config
    assert lookalikes(pair_plan(moving(), moving()), world_config("demo")) == 0
    assert lookalikes(pair_plan(moving(), moving()), WorldConfig(p_same_class=0.35)) == 1   # nothing tells


def test_other_classes_and_small_objects_are_never_lookalikes():
    from apps.synth import lookalikes, world_config
    cfg = world_config("indep-same")
    assert lookalikes(pair_plan(STILL, STILL, twin_class=3), cfg) == 0
    assert lookalikes(pair_plan(STILL, STILL, twin_small=True), cfg) == 0


def test_sound_families_make_a_partner_class_a_possible_lookalike():
    from apps.synth import family_partner, lookalikes
    cfg = WorldConfig(sound_families=True, p_same_family=0.5)
    assert lookalikes(pair_plan(STILL, STILL, twin_class=family_partner(0)), cfg) == 1


def test_best_possible_score_is_one_where_every_sounder_can_be_told_apart():
    from apps.synth import best_possible_score, world_config
    assert best_possible_score(world_config("indep", n=200, seed=8)) == 1.0


def test_best_possible_score_loses_half_a_clip_for_each_still_sounder_beside_a_still_twin():
    from apps.synth import best_possible_score, lookalikes, split_ids, world_config
    cfg = world_config("indep-same", n=200, seed=8)
    plans = [plan_clip(cfg, i) for i in range(cfg.n)]
    test = set(split_ids([p["id"] for p in plans], cfg.split, cfg.seed)["test"])
    still_pairs = sum(lookalikes(p, cfg) == 1 for p in plans if p["id"] in test)
    assert still_pairs > 0
    assert best_possible_score(cfg) == pytest.approx(1.0 - 0.5 * still_pairs / len(test))
