"""Models the serving tests share: a time-first GRU over frames, exported with parity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rnnstream.export import ParitySettings, export


@pytest.fixture(scope="session")
def gru_path(tmp_path_factory) -> Path:
    """A 2-layer GRU over 5-feature frames, time-first: state [2, batch, 12]."""
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("serve") / "gru.onnx"
    export(
        torch.nn.GRU(5, 12, num_layers=2, batch_first=False), path, parity=ParitySettings(steps=50)
    )
    return path
