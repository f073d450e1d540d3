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

import functools
import json
import os
import shutil
from pathlib import Path

import torch

from tests.scratch import process_scratch

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


def _ids(list_name: str, head: int = 0, tail: int = 0) -> list[str]:
    """The first ``head`` and last ``tail`` ids of a shipped list (csv: column 0)."""
    import csv

    with open(ROOT / "metadata" / list_name, newline="") as fh:
        ids = [row[0].strip() for row in csv.reader(fh) if row and row[0].strip()
               and row[0].strip().lower() not in ("id", "file", "video")]
    return ids[:head] + (ids[-tail:] if tail else [])


def make_flickr_download(root: Path) -> Path:
    """RAW_FLICKR: video/<id>.mp4 without sound, audio/<id>.wav, annotations/<id>.xml for
    the test clips; training, validation (the 144k list's tail) and test ids."""
    from tests.real_layouts import ClipSpec, default_flickr_boxes, write_flickr_xml, write_video, write_wav

    train = _ids("htf_flickr_train_10k.txt", head=2)
    val = _ids("htf_flickr_train_144k.txt", tail=1)
    test = _ids("htf_flickr_test_trimmed.csv", head=2)          # in the 178 and the 249 lists
    keyframes = json.loads((ROOT / "metadata" / "htf_flickr_test_keyframes.json").read_text())
    for i, clip_id in enumerate(train + val + test):
        # Test clips run as long as the annotated keyframe needs (the real ones are ~20 s).
        spec = ClipSpec(clip_id, frames=max([40] + [e + 2 for e in keyframes.get(clip_id, [])]))
        write_video(root / "video" / f"{clip_id}.mp4", spec, with_audio=False)
        write_wav(root / "audio" / f"{clip_id}.wav", spec)
        if clip_id in test:
            write_flickr_xml(root / "annotations" / f"{clip_id}.xml", default_flickr_boxes(i))
    return root


def make_vggsound_download(root: Path) -> Path:
    """RAW_VGGSOUND: a flat folder of <YTID>_<start:06d>.mp4 with sound; training, validation
    and VGG-SS test ids (in both the 4,670 and the 5,158 lists), and a clip of the extended
    protocol's pair list."""
    from tests.real_layouts import ClipSpec, write_video

    train = _ids("htf_vgg_train_10k.txt", head=2)
    val = _ids("htf_vgg_train_144k.txt", tail=1)
    trimmed = set(_ids("htf_vggss_test_trimmed.csv", head=100000))
    test = [i for i in _ids("lvs_vggss_test5158.csv", head=200) if i in trimmed][:2]
    pairs_only = _ids("slavc_vggss_pairs_extra.txt", head=1)     # a clip only SLAVC's pairs name
    for clip_id in train + val + test + pairs_only:
        write_video(root / f"{clip_id}.mp4", ClipSpec(clip_id, frames=40), with_audio=True)
    return root


@functools.lru_cache(maxsize=None)
def _workspace_template() -> Path:
    """The workspace's files, made once per test process (the pages copy it)."""
    folder = process_scratch("htf_doc_ws_")
    plant_imagenet_weights(folder / "torch-home")
    save_official_weights(folder / "flickr.pth", seed=1)
    save_official_weights(folder / "vgg.pth", seed=2)
    make_flickr_download(folder / "RAW_FLICKR")
    make_vggsound_download(folder / "RAW_VGGSOUND")
    return folder


def prepare_workspace(folder: Path) -> Path:
    """A fresh user's working directory: the downloads, weights and the repository's
    configs/ and metadata/ (linked)."""
    shutil.copytree(_workspace_template(), folder)
    for name in ("configs", "metadata"):
        (folder / name).symlink_to(ROOT / name, target_is_directory=True)
    return folder
