"""The trainer in one process: outputs, checkpoint loading, NaN stop, resume rules."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from htf.sample import encode_sample
from tests.train_helpers import PIPELINE, synthetic_sample, write_shards
from train import checkpoint as ckpt
from train.__main__ import main
from train.validation import ValClip
from htf.model import load_model

TINY = ["model.width=8", "model.image_size=56", "model.freeze_vision=false", "model.audio_frames=32",
        "data.batch_size=4", "data.workers=0", "data.shuffle_buffer=8", "data.val_batch_size=8",
        "train.epochs=2", "train.log_every_steps=1", "train.save_every_steps=2", "train.amp=none",
        # No --config runs the official recipe; these tests train from scratch (offline), on
        # shards of our own pipeline settings.
        "model.vision_weights=null", "model.flow_weights=null", "data.expect_settings={}"]


def _args(train: str, out: Path, val: str | None = None, extra: list[str] = ()) -> list[str]:
    argv = ["--train-shards", train, "--output", str(out)]
    if val:
        argv += ["--val-shards", val]
    for item in TINY + list(extra):
        argv += ["--set", item]
    return argv


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return write_shards(folder, "train", [6, 5]), write_shards(folder, "val", [6], seed=1)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(_args(data[0], out, data[1])) == 0
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_checkpoints_metrics_and_tensorboard(run):
    assert ckpt.latest_path(run).is_file() and ckpt.best_path(run).is_file()
    records = _records(run)
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]      # 11 samples // batch 4 = 2 steps x 2 epochs
    assert all(np.isfinite(r["loss"]) and r["samples_per_s"] > 0 and 0 <= r["data_wait_frac"] <= 1
               for r in train)
    val = [r for r in records if r["kind"] == "val"]
    assert len(val) == 2 and all(r["n"] == 6 and 0 <= r["auc"] <= 1 for r in val)
    assert list((run / "tb").iterdir())
    assert torch.load(ckpt.latest_path(run), weights_only=True)["step"] == 4


def test_checkpoint_loads_as_model_with_its_data_and_input_settings(run):
    model = load_model(ckpt.best_path(run))
    assert model.data_settings == PIPELINE
    assert model.cfg.image_size == 56 and model.cfg.width == 8 and not model.training
    sample = synthetic_sample(0)
    from htf.inputs import eval_inputs
    image, flow, spec = eval_inputs(sample, model)
    out = model(image[None], flow[None], spec[None])
    assert out["map"].shape == (1, 7, 7)


def test_existing_run_is_not_overwritten_without_resume(run, data, capsys):
    assert main(_args(data[0], run)) == 1
    assert "--resume" in capsys.readouterr().err


def test_torchrun_restart_resumes_from_latest_by_itself(data, tmp_path, monkeypatch):
    assert main(_args(data[0], tmp_path, extra=["train.max_steps=3"])) == 0
    assert torch.load(ckpt.latest_path(tmp_path), weights_only=True)["step"] == 3
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert main(_args(data[0], tmp_path)) == 0
    steps = [r["step"] for r in _records(tmp_path) if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4]                             # the second run did step 4 only


def test_nan_loss_stops_with_a_message_naming_the_step(tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    with wds.TarWriter(str(folder / "train-000000.tar")) as sink:
        for i in range(8):
            sample = synthetic_sample(i)
            sample.spec[:] = np.nan
            sink.write(encode_sample(sample))
    assert main(_args(str(folder / "train-000000.tar"), tmp_path / "run")) == 1
    err = capsys.readouterr().err
    assert "loss is nan at step 1" in err


def test_bad_override_names_the_key(data, tmp_path, capsys):
    assert main(_args(data[0], tmp_path, extra=["optim.lrr=1"])) == 2
    assert "optim.lrr" in capsys.readouterr().err


def test_atomic_save_keeps_the_previous_checkpoint_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    ckpt.save_atomic({"step": 1}, path)

    def broken_save(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        ckpt.save_atomic({"step": 2}, path)
    monkeypatch.undo()
    assert ckpt.load(path)["step"] == 1


def test_a_ctrl_c_during_a_checkpoint_write_waits_for_the_whole_checkpoint(tmp_path, monkeypatch):
    import os
    import signal

    real_save = torch.save

    def save_with_ctrl_c_halfway(obj, fh):
        fh.write(b"")
        os.kill(os.getpid(), signal.SIGINT)      # cut in half, torch.save raises a RuntimeError
        real_save(obj, fh)
    monkeypatch.setattr(torch, "save", save_with_ctrl_c_halfway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_atomic({"step": 3}, tmp_path / "latest.pt")
    monkeypatch.undo()
    assert ckpt.load(tmp_path / "latest.pt")["step"] == 3


def test_flow_local_lr_mult_gives_the_flow_branch_its_own_learning_rate():
    from htf.config import load_config
    from train.config import TrainConfig
    from train.engine import build_optimizer
    from htf.model import HTFModel

    cfg = load_config(TrainConfig, Path(__file__).parents[1] / "configs/train/tiny.yaml",
                      ["model.flow=maxpool", "model.flow_local=true", "model.flow_fallback=shared",
                       "optim.flow_local_lr_mult=10"])
    model = HTFModel(cfg.model)
    base, flow = build_optimizer(model, cfg).param_groups
    assert flow["lr"] == pytest.approx(10 * base["lr"])
    flow_ids = {id(p) for p in flow["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in flow_ids) == name.startswith("flow_local_conv."), name


def test_a_twin_fallback_has_its_own_param_group_and_its_gradients_are_clipped_apart():
    from htf.config import load_config
    from htf.model import HTFModel
    from train.config import TrainConfig
    from train.engine import build_optimizer, clip_gradients

    cfg = load_config(TrainConfig, Path(__file__).parents[1] / "configs/train/tiny.yaml",
                      ["model.flow_fallback=twin"])
    model = HTFModel(cfg.model)
    optimizer = build_optimizer(model, cfg)
    twin_group = optimizer.param_groups[-1]
    assert twin_group["network"] == "twin"
    assert {id(p) for p in twin_group["params"]} == {id(p) for p in model.twin.parameters()}
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-5)      # the twin's norm is under it
    for p in model.imgnet.parameters():
        p.grad = torch.full_like(p, 10.0)        # the flow net's norm is far above the clip
    clip_gradients(optimizer, 1.0)
    assert all(torch.all(p.grad == 1e-5) for p in model.twin.parameters())
    flow_net = [p.grad for n, p in model.named_parameters() if not n.startswith("twin.")]
    assert torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in flow_net])) == pytest.approx(1.0, rel=1e-4)


def test_a_twin_trained_inside_htf_follows_the_same_no_flow_network_trained_alone():
    # "A closed twin gate is a model trained without flow": the same seed gives the same start;
    # same batches, the same optimizer and clipping give the same weights, step for step.
    from htf.config import load_config
    from htf.model import HTFModel
    from train.config import TrainConfig
    from train.engine import build_optimizer, clip_gradients

    tiny = Path(__file__).parents[1] / "configs/train/tiny.yaml"
    cfg = load_config(TrainConfig, tiny, ["optim.grad_clip=0.01"])   # a clip that bites
    alone_cfg = load_config(TrainConfig, tiny, ["optim.grad_clip=0.01", "model.flow=none"])
    torch.manual_seed(0)
    htf = HTFModel(cfg.model).train()
    torch.manual_seed(0)
    alone = HTFModel(alone_cfg.model).train()
    opt_htf, opt_alone = build_optimizer(htf, cfg), build_optimizer(alone, alone_cfg)
    side = cfg.model.image_size
    for step in range(3):
        torch.manual_seed(10 + step)
        image, flow, spec = torch.randn(4, 3, side, side), torch.randn(4, 2, side, side), torch.randn(4, 1, 64, 100)
        for model, opt, flow_in in ((htf, opt_htf, flow), (alone, opt_alone, None)):
            opt.zero_grad()
            model(image, flow_in, spec, return_loss=True)["loss"].backward()
            clip_gradients(opt, cfg.optim.grad_clip)
            opt.step()
    alone_state = alone.state_dict()      # by name: after-training buffers are the holder's, not the twin's
    for name, a in htf.twin.state_dict().items():
        assert torch.allclose(a, alone_state[name], atol=1e-6), name


def test_a_closed_twin_gate_scores_on_val_exactly_as_the_no_flow_run_of_the_same_seed(data, tmp_path):
    # Two runs of the trainer, as the demo and the world matrix make them: the twin's val scores
    # (the gate's 'off' side) are the no-flow run's, every validation, and its weights end equal.
    twin = ["model.flow=maxpool", "model.flow_local=true", "model.flow_gate=true", "model.flow_fallback=twin"]
    assert main(_args(data[0], tmp_path / "htf", data[1], extra=twin)) == 0
    assert main(_args(data[0], tmp_path / "none", data[1], extra=["model.flow=none"])) == 0
    htf_val = [r for r in _records(tmp_path / "htf") if r["kind"] == "val"]
    none_val = [r for r in _records(tmp_path / "none") if r["kind"] == "val"]
    assert [r["step"] for r in htf_val] == [r["step"] for r in none_val] and len(none_val) == 2
    for with_twin, alone in zip(htf_val, none_val):
        assert with_twin["flow_gate_scores"]["off"] == round(alone["auc"], 6)
    htf_weights = ckpt.load(ckpt.latest_path(tmp_path / "htf"))["model"]
    alone_weights = ckpt.load(ckpt.latest_path(tmp_path / "none"))["model"]
    for name, weight in alone_weights.items():
        assert torch.equal(htf_weights[f"twin.{name}"], weight), name


@pytest.mark.parametrize("preset", sorted(p.stem for p in (Path(__file__).parents[1] / "configs/train").glob("*.yaml")))
def test_every_train_preset_also_loads_as_its_no_flow_comparison(preset):
    from htf.config import load_config
    from htf.model import HTFModel
    from train.config import TrainConfig

    path = Path(__file__).parents[1] / f"configs/train/{preset}.yaml"
    cfg = load_config(TrainConfig, path, ["model.flow=none", "model.vision_weights=null",
                                          "model.flow_weights=null"])   # tests never download
    assert HTFModel(cfg.model).cfg.flow == "none"


def test_budget_in_steps_ends_inside_an_epoch_and_validates_at_the_end(data, tmp_path):
    # 11 samples // batch 4 = 2 steps per epoch; 3 steps end one step into the second epoch
    assert main(_args(data[0], tmp_path, data[1], extra=["train.steps=3", "train.epochs=50"])) == 0
    records = _records(tmp_path)
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    assert [r["step"] for r in records if r["kind"] == "val"] == [2, 3]


def _fake_clip(with_flow: np.ndarray, without_flow: np.ndarray) -> ValClip:
    """A val clip whose box is on the left object."""
    return ValClip(with_flow, without_flow, [[0.0, 0.0, 3 / 7, 1.0]], "vggss")


def _gated_setup(min_gain: float = 0.0):
    from htf.config import load_config
    from htf.metrics import summarize
    from htf.model import HTFModel
    from train.config import TrainConfig
    from train.validation import scored_ciou

    cfg = load_config(TrainConfig, Path(__file__).parents[1] / "configs/train/tiny.yaml",
                      ["model.flow_gate=true", f"train.flow_gate_min_gain={min_gain}"])
    return cfg, HTFModel(cfg.model), (scored_ciou, summarize)


def _map_on(left: bool) -> np.ndarray:
    """A map that peaks on the left (the sounding object's box) or on the right."""
    m = np.zeros((7, 7), np.float32)
    m[:, slice(0, 3) if left else slice(4, 7)] = 1.0
    return m


@pytest.mark.parametrize("flow_on_finds,flow_off_finds,expect_open", [
    (True, False, True),      # only flow finds the sounder: the gate opens
    (False, True, False),     # flow misleads: closed
    (True, True, False),      # a tie: closed (flow must earn its place)
])
def test_flow_gate_is_chosen_on_validation_and_ties_stay_closed(flow_on_finds, flow_off_finds, expect_open):
    from train.validation import box_metrics

    cfg, model, fns = _gated_setup()
    clips = [_fake_clip(_map_on(left=flow_on_finds), _map_on(left=flow_off_finds)) for _ in range(4)]
    metrics = box_metrics(model, clips, cfg)
    assert metrics["flow_gate"] == int(expect_open)
    assert float(model.flow_gate) == float(expect_open)
    chosen = clips[0].with_flow if expect_open else clips[0].without_flow
    assert metrics["ciou_at_0.5"] == fns[1]([fns[0](chosen, c.boxes, c.box_format) for c in clips])["ciou_at_0.5"]


def test_flow_gate_stays_closed_when_flow_gains_less_than_the_minimum():
    from train.validation import box_metrics

    cfg, model, fns = _gated_setup(min_gain=0.5)
    # flow on finds the sounder in 3 of 4 clips, flow off in 2: a gain of 0.25 AUC-ish, under 0.5
    clips = [_fake_clip(_map_on(left=i < 3), _map_on(left=i < 2)) for i in range(4)]
    metrics = box_metrics(model, clips, cfg)
    on, off = metrics["flow_gate_scores"]["on"], metrics["flow_gate_scores"]["off"]
    assert 0 < on - off < 0.5
    assert metrics["flow_gate"] == 0 and float(model.flow_gate) == 0.0


def _event_tags(run: Path) -> tuple[set[str], set[str], set[str], set[str]]:
    """(image tags, text tags, scalar tags, plugin names) of every event file under run/tb."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    images, texts, scalars, plugins = set(), set(), set(), set()
    for path in (run / "tb").rglob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                plugins.add(plugin)
                {"images": images, "text": texts, "scalars": scalars}.get(plugin, set()).add(value.tag)
    return images, texts, scalars, plugins


def test_tensorboard_gets_validation_heatmaps_config_text_and_hparams(run):
    images, texts, scalars, plugins = _event_tags(run)
    assert any(t.startswith("val/heatmaps/") for t in images)
    assert any(t.startswith("config") for t in texts)
    assert "hparams" in plugins and "val/auc" in scalars


def test_train_log_mirrors_the_console_with_config_progress_and_closing_block(run):
    log = (run / "train.log").read_text()
    assert "resolved config" in log and "select_metric: auc" in log
    assert "step 4/4 (100%)" in log and "ETA" in log
    assert "training finished" in log and f"tensorboard --logdir {run}" in log
    assert f"best checkpoint    {ckpt.best_path(run)}" in log and "selected on validation auc" in log
    assert f"latest checkpoint  {ckpt.latest_path(run)}" in log


def test_without_validation_best_is_the_latest_checkpoint_and_the_run_says_so(data, tmp_path, capsys):
    assert main(_args(data[0], tmp_path, extra=["train.max_steps=2"])) == 0
    out = capsys.readouterr().out
    assert "no --val-shards" in out and "a copy of latest.pt" in out
    assert ckpt.best_path(tmp_path).read_bytes() == ckpt.latest_path(tmp_path).read_bytes()


def test_missing_shards_leave_no_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(str(tmp_path / "nope-*.tar"), out)) == 1
    assert "no shard matches" in capsys.readouterr().err and not out.exists()


def test_after_a_nan_a_compiled_cuda_run_is_also_told_to_try_without_compiling():
    from htf.config import load_config
    from train.config import TrainConfig
    from train.engine import non_finite_advice
    compiled = load_config(TrainConfig, None, ["train.compile=true"])
    plain = load_config(TrainConfig, None, [])
    assert "train.compile=false" in non_finite_advice(compiled, torch.device("cuda"))
    assert "train.compile" not in non_finite_advice(compiled, torch.device("cpu"))     # compiling is CUDA-only
    assert non_finite_advice(plain, torch.device("cuda")).startswith("Lower optim.lr, set optim.grad_clip")
