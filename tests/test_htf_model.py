"""HTFModel: shapes, the official key names, and the forward pass against an independent
implementation built from torchvision's resnet18 the way the official code builds it."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from htf.config import ConfigError
from htf.loss import lvs_loss
from htf.model import HTFModel, load_model
from htf.model_config import ModelConfig
from htf.official import official_data_settings


class ReferenceHTF(nn.Module):
    """Official structure from torchvision parts, written independently."""

    def __init__(self, flow: str = "cnn"):
        super().__init__()
        self.flow = flow
        self.imgnet = resnet18()
        self.imgnet.avgpool, self.imgnet.fc = nn.Identity(), nn.Identity()
        self.audnet = resnet18()
        self.audnet.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        self.audnet.avgpool, self.audnet.fc = nn.AdaptiveMaxPool2d(1), nn.Identity()
        if flow == "cnn":
            self.flownet = resnet18()
            self.flownet.conv1 = nn.Conv2d(2, 64, 7, 2, 3, bias=False)
            self.flownet.avgpool, self.flownet.fc = nn.Identity(), nn.Identity()
        kin = 512 if flow == "cnn" else 2
        if flow != "none":
            self.flowatt = nn.Module()
            self.flowatt.query_conv = nn.Conv2d(512, 64, 1)
            self.flowatt.key_conv = nn.Conv2d(kin, 64, 1)
            self.flowatt.value_conv = nn.Conv2d(512, 512, 1)

    def forward(self, image, flow, spec):
        img = self.imgnet(image).view(-1, 512, 7, 7)
        aud = F.normalize(self.audnet(spec), dim=1)
        if self.flow != "none":
            f = self.flownet(flow).view(-1, 512, 7, 7) if self.flow == "cnn" else F.adaptive_max_pool2d(flow, 7)
            b = img.shape[0]
            q = self.flowatt.query_conv(img).view(b, 64, 49)
            k = self.flowatt.key_conv(f).view(b, 64, 49)
            v = self.flowatt.value_conv(img).view(b, 512, 49)
            energy = torch.einsum("bci,bcj->bij", q, k) / math.sqrt(64)    # i: query, j: key
            attn = energy.softmax(-1)
            out = torch.einsum("bcj,bij->bci", v, attn).view(b, 512, 7, 7)
            img = img + out
        img = F.normalize(img, dim=1)
        return torch.einsum("bchw,bc->bhw", img, aud), img, aud


def _randomise(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(torch.randn(t.shape, generator=g) * (0.05 if "weight" in name else 0.01)
                        + (1.0 if "bn" in name and name.endswith("weight") else 0.0))
                if "running_var" in name:
                    t.abs_().add_(0.5)


def _inputs(b=2, s=224, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 3, s, s, generator=g), torch.randn(b, 2, s, s, generator=g),
            torch.randn(b, 1, 64, 40, generator=g))


@pytest.mark.parametrize("flow", ["cnn", "maxpool", "none"])
def test_official_pth_loads_by_key_mapping_and_gives_the_same_map(tmp_path, flow):
    ref = ReferenceHTF(flow)
    _randomise(ref, seed=1)
    ref.eval()
    path = tmp_path / "official.pth"
    torch.save({"model": ref.state_dict()}, path)
    model = load_model(path)
    assert model.cfg.flow == flow and model.data_settings == official_data_settings()
    image, flw, spec = _inputs(b=1)
    with torch.no_grad():
        want, _, _ = ref(image, flw, spec)
        got = model(image, flw, spec)["map"]
    assert got.shape == (1, 7, 7)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_lightning_ckpt_with_model_prefix_loads(tmp_path):
    ref = ReferenceHTF("maxpool")
    _randomise(ref, seed=2)
    path = tmp_path / "epoch=9.ckpt"
    torch.save({"epoch": 9, "state_dict": {f"model.{k}": v for k, v in ref.state_dict().items()}}, path)
    model = load_model(path)
    ref.eval()
    image, flw, spec = _inputs(b=1, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(model(image, flw, spec)["map"], ref(image, flw, spec)[0],
                                   atol=1e-5, rtol=1e-4)


def test_loss_from_model_equals_lvs_formula_on_its_features():
    model = HTFModel(ModelConfig(width=8, image_size=56, freeze_vision=False)).eval()
    image, flw, spec = _inputs(b=3, s=56, seed=5)
    out = model(image, flw, spec, return_loss=True)
    loss, amap = lvs_loss(out["image_features"], out["audio_features"], model.cfg.loss)
    assert torch.isfinite(out["loss"])
    torch.testing.assert_close(out["loss"], loss)
    torch.testing.assert_close(out["map"], amap)
    assert out["map"].abs().max() <= 1 + 1e-5


@pytest.mark.parametrize("size,width", [(112, 16), (56, 8)])
def test_small_backbone_keeps_a_7x7_map(size, width):
    model = HTFModel(ModelConfig(width=width, image_size=size))
    image, flw, spec = _inputs(b=1, s=size)
    out = model(image, flw, spec, return_loss=True)
    assert out["map"].shape == (1, 7, 7) and out["image_features"].shape[1] == 8 * width
    assert torch.isfinite(out["loss"])


def test_unsupported_image_size_is_rejected_naming_the_key():
    from htf.config import load_config
    with pytest.raises(ConfigError, match="image_size"):
        load_config(ModelConfig, overrides=["image_size=100"])


def test_frozen_vision_has_no_trainable_parameters_and_bn_mode_is_configurable():
    frozen = HTFModel(ModelConfig(width=8, image_size=56, freeze_vision=True, frozen_bn="eval")).train()
    assert not any(p.requires_grad for p in frozen.imgnet.parameters())
    assert all(p.requires_grad for p in frozen.audnet.parameters())
    assert not frozen.imgnet.bn1.training and frozen.audnet.bn1.training
    official = HTFModel(ModelConfig(width=8, image_size=56, freeze_vision=True)).train()
    assert official.imgnet.bn1.training          # official: BatchNorm stays in train mode


def test_audio_init_is_official_and_flow_stem_is_fresh():
    torch.manual_seed(0)
    model = HTFModel(ModelConfig(width=64, image_size=224))
    bn_w = torch.cat([m.weight for m in model.audnet.modules() if isinstance(m, nn.BatchNorm2d)])
    assert 0.01 < bn_w.std().item() < 0.03 and abs(bn_w.mean().item() - 1) < 0.01
    assert tuple(model.flownet.conv1.weight.shape) == (64, 2, 7, 7)
    # PyTorch default (kaiming-uniform, a=sqrt(5)) bound = 1/sqrt(fan_in)
    assert model.flownet.conv1.weight.abs().max() <= 1 / math.sqrt(2 * 49) + 1e-6


def test_missing_weights_file_fails_with_its_name():
    with pytest.raises(ConfigError, match="no_such_weights.pth"):
        HTFModel(ModelConfig(vision_weights="/nowhere/no_such_weights.pth"))


def test_local_torchvision_weights_file_is_loaded(tmp_path):
    tv = resnet18()
    _randomise(tv, seed=9)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    model = HTFModel(ModelConfig(vision_weights=str(path), flow_weights=str(path)))
    torch.testing.assert_close(model.imgnet.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)
    torch.testing.assert_close(model.flownet.layer1[0].bn1.bias, tv.layer1[0].bn1.bias)
    assert model.flownet.conv1.weight.shape[1] == 2


def test_mismatched_state_dict_names_the_file(tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"model": {"imgnet.conv1.weight": torch.zeros(64, 3, 7, 7)}}, path)
    with pytest.raises(ValueError, match="bad.pth"):
        load_model(path)


def _two_identical_objects_one_moving():
    """Visual map with the same feature at two places; flow features differ there."""
    torch.manual_seed(0)
    visual = torch.randn(1, 64, 7, 7)
    visual[..., 1, 1] = visual[..., 5, 5] = torch.randn(64)
    flow = torch.zeros(1, 64, 7, 7)
    flow[..., 1, 1] = 3.0          # only the first object moves
    return visual, flow


def test_official_flow_attention_cannot_tell_identical_objects_apart_by_motion():
    from htf.model import FlowAttention
    visual, flow = _two_identical_objects_one_moving()
    out = FlowAttention(64, 64)(visual, flow)
    assert torch.allclose(out[..., 1, 1], out[..., 5, 5], atol=1e-6)


def test_imagenet_weights_by_name_fail_fast_offline_naming_the_file_to_provide(tmp_path, monkeypatch):
    from htf.model_config import ModelConfig
    from htf.model import HTFModel
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))      # nothing cached here
    monkeypatch.setenv("HTF_OFFLINE", "1")               # and no download attempt in tests
    with pytest.raises(RuntimeError, match=r"not cached at .*resnet18-.*\.pth"):
        HTFModel(ModelConfig(width=64, vision_weights="IMAGENET1K_V1"))


def _htf(flow: str, **kw):
    from htf.model_config import ModelConfig
    from htf.model import HTFModel
    torch.manual_seed(0)
    return HTFModel(ModelConfig(flow=flow, width=16, image_size=112, freeze_vision=False, **kw)).eval()


@pytest.mark.parametrize("flow", ["cnn", "maxpool"])
def test_flow_local_starts_as_the_official_model(flow):
    image, flow_t, spec = torch.randn(2, 3, 112, 112), torch.randn(2, 2, 112, 112), torch.randn(2, 1, 64, 100)
    with torch.no_grad():
        local = _htf(flow, flow_local=True)(image, flow_t, spec)["map"]
        official = _htf(flow)(image, flow_t, spec)["map"]
    assert torch.allclose(local, official, atol=1e-6)


def test_flow_local_gives_identical_looking_places_different_features_when_one_moves():
    model = _htf("maxpool", flow_local=True)
    torch.nn.init.normal_(model.flow_local_conv.weight)      # as after some training
    image = torch.zeros(1, 3, 112, 112)                        # one flat colour: every place looks alike
    flow = torch.zeros(1, 2, 112, 112)
    flow[:, 0, 16:32, 16:32] = 2.0                              # only the top-left patch moves
    with torch.no_grad():
        img, _ = model.features(image, flow, torch.randn(1, 1, 64, 100))
    moving, still = img[0, :, 1, 1], img[0, :, 5, 5]
    assert not torch.allclose(moving, still, atol=1e-3)
    with torch.no_grad():       # the official block alone cannot tell them apart
        official, _ = _htf("maxpool").features(image, flow, torch.randn(1, 1, 64, 100))
    assert torch.allclose(official[0, :, 1, 1], official[0, :, 5, 5], atol=1e-6)


def test_checkpoints_saved_with_the_former_attention_option_load_when_official(tmp_path):
    from htf.config import to_dict
    from htf.model import checkpoint_payload, load_model
    model = _htf("maxpool")
    model.data_settings = None
    payload = checkpoint_payload(model, model.cfg)
    payload["config"] = {"model": {**to_dict(model.cfg), "attention": "official"}}
    torch.save(payload, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").cfg.flow == "maxpool"
    payload["config"]["model"]["attention"] = "flow_query"
    torch.save(payload, tmp_path / "query.pt")
    with pytest.raises(ValueError, match="flow_query"):
        load_model(tmp_path / "query.pt")


def _flow_matters(model) -> None:
    """Non-zero flow branches, so the flow path changes the map when it is used."""
    torch.manual_seed(1)
    for conv in (model.flowatt.value_conv, model.flow_local_conv):
        nn.init.normal_(conv.weight, std=0.5)


def _clip_inputs(batch: int = 2):
    torch.manual_seed(2)
    return torch.randn(batch, 3, 112, 112), 3 * torch.randn(batch, 2, 112, 112), torch.randn(batch, 1, 64, 100)


def test_closed_flow_gate_gives_exactly_the_no_flow_map_of_the_same_weights():
    gated = _htf("maxpool", flow_local=True, flow_gate=True)
    _flow_matters(gated)
    plain = _htf("none")
    plain.load_state_dict(gated.state_dict(), strict=False)     # the shared vision and audio nets
    image, flow, spec = _clip_inputs()
    with torch.no_grad():
        closed = gated(image, flow, spec)["map"]
        gated.flow_gate.fill_(1.0)
        opened = gated(image, flow, spec)["map"]
        no_flow = plain(image, None, spec)["map"]
    assert torch.equal(closed, no_flow)
    assert not torch.allclose(opened, no_flow, atol=1e-3)


def test_flow_gate_starts_closed_and_is_saved_only_with_the_option():
    assert float(_htf("maxpool", flow_gate=True).flow_gate) == 0.0
    assert "flow_gate" not in _htf("maxpool").state_dict()
    assert "flow_gate" not in _htf("none", flow_gate=True).state_dict()


def _dropped(model, image, flow, spec) -> torch.Tensor:
    """Per clip: is its training-mode visual map the visual net's alone (flow path dropped)?"""
    model.train()
    torch.manual_seed(3)
    with torch.no_grad():
        fused, _ = model.features(image, flow, spec)
        alone = F.normalize(model.imgnet(image), dim=1)      # same batch: same BatchNorm statistics
    return torch.isclose(fused, alone, atol=1e-5).flatten(1).all(dim=1)


def test_flow_dropout_drops_the_flow_path_for_about_its_fraction_of_clips_in_training_only():
    model = _htf("maxpool", flow_local=True, flow_dropout=0.5)
    _flow_matters(model)
    image, flow, spec = _clip_inputs(64)
    dropped = _dropped(model, image, flow, spec)
    assert 16 <= int(dropped.sum()) <= 48
    model.eval()
    with torch.no_grad():
        fused, _ = model.features(image, flow, spec)
        alone = F.normalize(model.imgnet(image), dim=1)
    assert not torch.isclose(fused, alone, atol=1e-5).flatten(1).all(dim=1).any()   # evaluation keeps flow


def test_without_flow_dropout_no_clip_is_dropped():
    model = _htf("maxpool", flow_local=True)
    _flow_matters(model)
    assert not _dropped(model, *_clip_inputs(16)).any()


def test_flow_dropout_must_be_a_fraction_below_one():
    with pytest.raises(ValueError, match="flow_dropout"):
        ModelConfig(flow="maxpool", flow_dropout=1.0).validate()


def test_a_closed_gate_with_a_twin_fallback_gives_the_twins_no_flow_map():
    model = _htf("maxpool", flow_local=True, flow_gate=True, flow_fallback="twin")
    _flow_matters(model)
    image, flow, spec = _clip_inputs()
    with torch.no_grad():
        closed = model(image, flow, spec)["map"]
        twin = model.twin(image, None, spec)["map"]
        model.flow_gate.fill_(1.0)
        opened = model(image, flow, spec)["map"]
    assert model.twin.cfg.flow == "none" and not hasattr(model.twin, "twin")
    assert torch.equal(closed, twin)
    assert not torch.allclose(opened, twin, atol=1e-3)


@pytest.mark.parametrize("flow", ["cnn", "maxpool"])
def test_the_flow_net_and_its_twin_start_as_one_function(flow):
    # Same vision and audio start, flow branches at zero: the gate compares what flow adds,
    # not two random starts.
    model = _htf(flow, flow_local=True, flow_gate=True, flow_fallback="twin", attention_value_init="zero")
    image, flow_in, spec = _clip_inputs()
    with torch.no_grad():
        twin = model(image, flow_in, spec)["map"]
        model.flow_gate.fill_(1.0)
        opened = model(image, flow_in, spec)["map"]
    assert torch.allclose(opened, twin, atol=1e-5)
    for net in ("imgnet", "audnet"):
        theirs = getattr(model.twin, net).state_dict()
        assert all(torch.equal(w, theirs[k]) for k, w in getattr(model, net).state_dict().items())


def test_the_twin_learns_from_every_training_batch_beside_the_flow_net():
    model = _htf("maxpool", flow_local=True, flow_gate=True, flow_fallback="twin").train()
    image, flow, spec = _clip_inputs(4)
    model(image, flow, spec, return_loss=True)["loss"].backward()
    for name, p in model.named_parameters():
        if name.startswith(("twin.", "imgnet.", "audnet.")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_a_twin_fallback_needs_a_gated_flow_model():
    with pytest.raises(ValueError, match="flow_fallback"):
        ModelConfig(flow="maxpool", flow_fallback="twin").validate()


def test_a_twin_preset_run_with_flow_none_is_one_plain_no_flow_network():
    # The preset's no-flow comparison overrides only model.flow; nothing is left to fall back from.
    cfg = ModelConfig(flow="none", flow_gate=True, flow_fallback="twin")
    cfg.validate()
    model = HTFModel(cfg)
    assert not hasattr(model, "twin") and not hasattr(model, "flow_gate")
    plain = HTFModel(ModelConfig(flow="none"))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
