"""Randomly initialised checkpoints in the released formats (no download, no real weights).

- ``{'model': state_dict}`` .pth, as the released flickr.pth / vgg.pth;
- a PyTorch Lightning .ckpt as the official trainer writes it: ``state_dict`` with the
  ``model.`` prefix, the hyper-parameters as an ``argparse.Namespace``, callback and loop
  states with tensors, the Lightning version string.
"""
from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path

import torch

from htf.model_config import ModelConfig
from htf.model import HTFModel


def official_model(seed: int = 0, width: int = 64) -> HTFModel:
    torch.manual_seed(seed)
    return HTFModel(ModelConfig(flow="cnn", width=width, image_size=224)).eval()


def official_args() -> argparse.Namespace:
    return argparse.Namespace(name="htf", trainset="vggsound_10k", testset="vggss", image_size=224,
                              epsilon=0.65, epsilon_margin=0.25, logit_temperature=0.07, trimap=1,
                              pretrain_flow=1, pretrain_vision=1, epochs=100, batch_size=128, lr=0.001,
                              num_workers=8, gpus=1, flow=1, flowtype="cnn", freeze_vision=1, tau=0.03,
                              gt_all={})


def save_pth(path: Path, model: HTFModel) -> Path:
    torch.save({"model": model.state_dict()}, path)
    return path


def save_lightning_ckpt(path: Path, model: HTFModel) -> Path:
    state = OrderedDict((f"model.{k}", v) for k, v in model.state_dict().items())
    callback = "ModelCheckpoint{'monitor': 'val/cIoU', 'mode': 'max', 'every_n_train_steps': 0}"
    torch.save({
        "epoch": 3, "global_step": 1200, "pytorch-lightning_version": "1.7.7",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
        "callbacks": {callback: {"monitor": "val/cIoU", "best_model_score": torch.tensor(0.81),
                                 "best_model_path": "logs/htf/best.ckpt", "current_score": torch.tensor(0.8),
                                 "dirpath": "logs/htf/", "best_k_models": {"logs/htf/best.ckpt": torch.tensor(0.81)},
                                 "kth_best_model_path": "", "kth_value": torch.tensor(float("-inf")),
                                 "last_model_path": "logs/htf/last.ckpt"}},
        "optimizer_states": [], "lr_schedulers": [],
        "hparams_name": "kwargs", "hyper_parameters": {"args": official_args()},
    }, path)
    return path
