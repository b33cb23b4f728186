"""Cell-loop models (nn.LSTMCell / GRUCell / RNNCell stepped in Python) export and stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import rnnstream
from rnnstream.errors import ExportError
from rnnstream.export import ParitySettings, export
from rnnstream.models import CellLoopNet, CellLoopNetConfig
from tests.models.round_trip import assert_checkpoint_round_trip
from tests.tolerances import PARITY, assert_close

ATOL = 1e-5

CASES = [  # cell, layers, batch_first, output_size
    ("lstm", 2, True, 3),
    ("lstm", 1, False, 0),
    ("gru", 2, False, 0),
    ("gru", 1, True, 4),
    ("rnn_tanh", 2, True, 0),
    ("rnn_relu", 2, False, 3),
]


def _net(cell: str, layers: int, batch_first: bool, output_size: int) -> CellLoopNet:
    torch.manual_seed(0)
    config = CellLoopNetConfig(
        cell=cell,
        input_size=5,
        hidden_size=10,
        num_layers=layers,
        output_size=output_size,
        batch_first=batch_first,
    )
    return CellLoopNet(config)


@pytest.mark.parametrize(("cell", "layers", "batch_first", "output_size"), CASES)
def test_cell_loop_exports_and_streams_with_parity(
    tmp_path: Path, cell: str, layers: int, batch_first: bool, output_size: int
) -> None:
    report = export(_net(cell, layers, batch_first, output_size), tmp_path / "m.onnx")
    parity = report.parity
    assert parity.passed and parity.steps == 1000
    for mode in ("step", "chunk"):
        for tensor, err in parity.errors[mode].items():
            assert err.max_abs_err <= ATOL, (mode, tensor, err)
    kinds = ("h", "c") if cell == "lstm" else ("h",)
    expected = [f"cells_{k}_{s}0" for k in range(layers) for s in kinds]
    sig = report.signature
    assert [s.input for s in sig.states] == expected
    assert [s.output for s in sig.states] == [n[:-1] + "n" for n in expected]
    assert sig.states[0].shape == ("batch", 10) and sig.streamable
    assert sig.source["cells"]["cells.0"]["cell"] == cell
    assert [n.op_type for n in onnx.load(tmp_path / "m.onnx").graph.node] == ["Scan"]


def test_a_hand_written_cell_loop_streams_like_pytorch(tmp_path: Path) -> None:
    class Net(nn.Module):
        """Two differently named cells, a tensor output, and the state made up in forward."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.GRUCell(4, 8)
            self.decoder = nn.LSTMCell(8, 6)
            self.out = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = x.new_zeros(x.shape[0], 8)
            state = None
            ys = []
            for x_t in x.unbind(1):
                h = self.encoder(torch.tanh(x_t), h)
                state = self.decoder(h, state)
                ys.append(self.out(state[0]))
            return torch.stack(ys, dim=1)

    torch.manual_seed(0)
    model = Net().eval()
    report = export(model, tmp_path / "net.onnx", parity=ParitySettings(steps=300))
    assert report.parity.passed
    assert [s.input for s in report.signature.states] == ["encoder_h0", "decoder_h0", "decoder_c0"]
    x = torch.randn(3, 50, 4)
    with torch.no_grad():
        want = model(x).numpy()
    stream = rnnstream.load(tmp_path / "net.onnx").stream(batch=3)
    got = np.concatenate([stream.feed(x[:, :17].numpy()), stream.feed(x[:, 17:].numpy())], axis=1)
    assert_close(got, want, PARITY)
    stream.reset()
    stepped = np.stack([stream.step(x[:, t].numpy()) for t in range(50)], axis=1)
    assert_close(stepped, want, PARITY)


def test_a_cell_run_twice_per_step_is_refused(tmp_path: Path) -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.GRUCell(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, ys = None, []
            for x_t in x.unbind(1):
                h = self.cell(x_t, h)
                h = self.cell(h, h)
                ys.append(h)
            return torch.stack(ys, dim=1)

    with pytest.raises(ExportError, match="more than once per step"):
        export(Twice(), tmp_path / "t.onnx")


def test_an_output_without_a_time_axis_is_refused(tmp_path: Path) -> None:
    class Last(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.RNNCell(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = None
            for x_t in x.unbind(1):
                h = self.cell(x_t, h)
            return h

    with pytest.raises(ExportError, match="one time axis"):
        export(Last(), tmp_path / "l.onnx")


def test_cell_loop_checkpoint_round_trip(tmp_path: Path) -> None:
    model = _net("gru", 2, True, 3)
    assert_checkpoint_round_trip(model, tmp_path / "c.safetensors", torch.randn(2, 9, 5))
