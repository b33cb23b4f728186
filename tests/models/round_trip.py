"""The checkpoint round trip every model kind's tests check."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rnnstream.models import load_checkpoint, save_checkpoint

__all__ = ["assert_checkpoint_round_trip"]


def assert_checkpoint_round_trip(model: nn.Module, path: Path, x: torch.Tensor) -> None:
    """``model`` saved to ``path`` and loaded back is the same class with the same config and
    the same outputs on ``x`` to the bit; its config round-trips through JSON."""
    model.eval()
    save_checkpoint(model, path)
    loaded = load_checkpoint(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model(x)[0], atol=0, rtol=0)
    assert type(model.config).from_json(model.config.to_json()) == model.config
