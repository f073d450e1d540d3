"""An exponential moving average of the network's weights (``optim.ema_decay``).

Validation, and so ``best.pt``, reads the averaged weights; the optimiser keeps stepping
the raw ones. With a few hundred training clips one step's weights carry that step's
batch: the average over the last ~1/(1 - decay) steps is a smoother network, and val's
choice among checkpoints is less a choice among draws.

The average starts at zero and is divided by 1 - decay^t (as Adam corrects its moments),
so after t updates it weighs exactly the t weights seen, never the untrained start.
Averaged: every parameter and the batch-norm running statistics. Other buffers (the flow
gate, the motion prior's weight) are choices made on val, not learned, and stay the
model's own.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.nn.modules.batchnorm import _BatchNorm


def averaged_names(model: torch.nn.Module) -> list[str]:
    """State-dict keys the average covers: parameters and batch-norm running statistics."""
    names = [name for name, _ in model.named_parameters()]
    for prefix, module in model.named_modules():
        if isinstance(module, _BatchNorm):
            names += [f"{prefix}.{b}" if prefix else b for b in ("running_mean", "running_var")
                      if getattr(module, b, None) is not None]
    return names


class WeightAverage:
    """``update`` after every optimiser step; ``applied`` puts the average in the model for
    the duration of a block (validation, saving best.pt) and then the raw weights back."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"optim.ema_decay must be in (0, 1) to average, got {decay}")
        self.decay = decay
        self.updates = 0
        state = model.state_dict()
        self.sums = {name: torch.zeros_like(state[name], dtype=torch.float32) for name in averaged_names(model)}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        state = model.state_dict()
        for name, total in self.sums.items():
            total.mul_(self.decay).add_(state[name].float(), alpha=1.0 - self.decay)
        self.updates += 1

    def averaged(self) -> dict[str, torch.Tensor]:
        """The bias-corrected average (empty before the first update)."""
        if self.updates == 0:
            return {}
        correction = 1.0 - self.decay ** self.updates
        return {name: total / correction for name, total in self.sums.items()}

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        average = self.averaged()
        if not average:
            yield
            return
        state = model.state_dict()
        raw = {name: state[name].detach().clone() for name in average}
        with torch.no_grad():
            for name, value in average.items():
                state[name].copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in raw.items():
                    state[name].copy_(value)

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "updates": self.updates, "sums": self.sums}

    def load_state_dict(self, saved: dict[str, object]) -> None:
        sums = saved["sums"]
        if not isinstance(sums, dict) or set(sums) != set(self.sums):
            raise ValueError("the saved weight average covers other tensors than this model's")
        for name, total in self.sums.items():
            total.copy_(sums[name])
        self.updates = int(saved["updates"])
