"""A scratch folder laid out as the working directory the documentation assumes.

The pages name their inputs with placeholders that are real paths here:

==================  ===========================================================
``configs/``        the repository's presets (link)
``metadata/``       the shipped lists and boxes (link)
``RAW_FLICKR/``     a Flickr-SoundNet download: video/<id>.mp4, audio/<id>.wav,
                    annotations/<id>.xml, ids from the shipped lists
``RAW_VGGSOUND/``   a VGGSound download: video/<YTID>_<start:06d>.mp4, VGG-SS ids
``flickr.pth``,     released-weights files in the official ``{'model': ...}``
``vgg.pth``         format (random values: the recipe is tested, not the numbers)
``torch-home/``     TORCH_HOME with ImageNet ResNet-18 weights where torchvision
                    looks for them (random values, the real file's name), as a user
                    on an offline cluster provides them
==================  ===========================================================
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def plant_imagenet_weights(torch_home: Path) -> Path:
    """Random ResNet-18 weights under the file name torchvision downloads to."""
    from torchvision.models import ResNet18_Weights, resnet18

    target = torch_home / "hub" / "checkpoints" / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(resnet18().state_dict(), target)
    return target


def save_official_weights(path: Path, seed: int) -> Path:
    """A released-weights file as the authors publish them: ``{'model': state_dict}`` of the
    official architecture (ResNet-18 width 64, flow CNN, flow attention)."""
    from htf.model import HTFModel
    from htf.model_config import ModelConfig

    torch.manual_seed(seed)
    model = HTFModel(ModelConfig(flow="cnn", width=64, image_size=224))
    torch.save({"model": model.state_dict()}, path)
    return path


def prepare_workspace(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("configs", "metadata"):
        (folder / name).symlink_to(ROOT / name, target_is_directory=True)
    plant_imagenet_weights(folder / "torch-home")
    save_official_weights(folder / "flickr.pth", seed=1)
    save_official_weights(folder / "vgg.pth", seed=2)
    from tests.real_layouts import make_flickr_download, make_vggsound_download
    make_flickr_download(folder / "RAW_FLICKR")
    make_vggsound_download(folder / "RAW_VGGSOUND")
    return folder
