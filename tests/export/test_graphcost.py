"""``graph_cost``'s multiply-adds per step count convolutions (rnnstream/export/graphcost.py).

Each front-end is exported for real and its count compared with one worked out by hand from the
PyTorch modules: a convolution's weights once per output position of a step (once over time,
once per output frequency bin), each recurrent layer's W and R, each linear weight. ``rnnstream
info`` prints the number the export recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from rnnstream.export import ParitySettings, export
from rnnstream.export.graphcost import graph_cost

SETTINGS = ParitySettings(steps=12, chunk=5)
BINS = 10


def recurrent_macs(layer: nn.RNNBase) -> int:
    gates = {"LSTM": 4, "GRU": 3}.get(type(layer).__name__, 1)
    sizes = [layer.input_size] + [layer.hidden_size] * (layer.num_layers - 1)
    return sum(gates * layer.hidden_size * (size + layer.hidden_size) for size in sizes)


def conv_weights(conv: nn.Conv1d | nn.Conv2d) -> int:
    return conv.weight.numel()


class DilatedConv1dGru(nn.Module):
    """A causal dilated Conv1d stack (left padding trimmed) and a depthwise conv before a GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(4, 8, 3, padding=2)
        self.depthwise = nn.Conv1d(8, 8, 3, padding=4, dilation=2, groups=8)
        self.gru = nn.GRU(8, 6, batch_first=True)
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.shape[1]
        h = torch.relu(self.conv1(x.transpose(1, 2))[:, :, :steps])
        h = torch.relu(self.depthwise(h)[:, :, :steps])
        return self.fc(self.gru(h.transpose(1, 2))[0])

    def expected_macs(self) -> int:
        convs = conv_weights(self.conv1) + conv_weights(self.depthwise)
        return convs + recurrent_macs(self.gru) + 6 * 2


class TimeFreqConv2dLstm(nn.Module):
    """``[B, T, F]`` → Conv2d over ``[time, freq]`` (freq padding 1, stride 2 over freq: 5 bins
    out) → flatten → LSTM → head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, (3, 3), stride=(1, 2), padding=(2, 1))
        self.lstm = nn.LSTM(4 * 5, 6, batch_first=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.shape[1]
        h = torch.relu(self.conv(x.unsqueeze(1))[:, :, :steps])
        return self.fc(self.lstm(h.permute(0, 2, 1, 3).flatten(2))[0])

    def expected_macs(self) -> int:
        return conv_weights(self.conv) * 5 + recurrent_macs(self.lstm) + 6 * 3


class FreqTimeConv2dGru(nn.Module):
    """``[B, 1, F, T]`` (time last): a Conv2d with no freq padding (8 bins out), time-major GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, (3, 2), padding=(0, 1))
        self.gru = nn.GRU(2 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.shape[1]
        h = self.conv(x.transpose(1, 2).unsqueeze(1))[..., :steps]
        return self.gru(h.flatten(1, 2).permute(2, 0, 1))[0].transpose(0, 1)

    def expected_macs(self) -> int:
        return conv_weights(self.conv) * 8 + recurrent_macs(self.gru)


class ConvCellLoop(nn.Module):
    """A causal Conv1d front-end before a GRUCell loop (the conv runs inside the Scan body)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 2, padding=1)
        self.cell = nn.GRUCell(6, 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.conv(x.transpose(1, 2))[:, :, : x.shape[1]].transpose(1, 2)
        h, ys = x.new_zeros(x.shape[0], 5), []
        for t in range(x.shape[1]):
            h = self.cell(feats[:, t], h)
            ys.append(self.out(h))
        return torch.stack(ys, 1)

    def expected_macs(self) -> int:
        return conv_weights(self.conv) + 3 * 5 * (6 + 5) + 5 * 2


class SteppedLstm(nn.Module):
    """An ``nn.LSTM`` stepped in a Python loop: the layer runs inside the cell loop's Scan body,
    its weights beside it."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, num_layers=2, batch_first=True)
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, ys = None, []
        for t in range(x.shape[1]):
            y, h = self.lstm(x[:, t : t + 1], h)
            ys.append(self.fc(y))
        return torch.cat(ys, 1)

    def expected_macs(self) -> int:
        return recurrent_macs(self.lstm) + 6 * 2


@pytest.mark.parametrize(
    ("make", "features"),
    [
        (DilatedConv1dGru, 4),
        (TimeFreqConv2dLstm, BINS),
        (FreqTimeConv2dGru, BINS),
        (ConvCellLoop, 4),
        (SteppedLstm, 4),
    ],
    ids=[
        "conv1d_dilated_depthwise",
        "conv2d_time_freq",
        "conv2d_freq_time",
        "conv_cell_loop",
        "lstm_stepped_in_a_loop",
    ],
)
def test_exported_cost_counts_each_convolution_per_step(
    make, features: int, cli, tmp_path: Path
) -> None:
    torch.manual_seed(5)
    model = make().eval()
    example = torch.zeros(2, 4, features)
    report = export(model, tmp_path / "m.onnx", example=example, parity=SETTINGS)
    assert report.signature.cost["macs_per_step"] == model.expected_macs()
    assert graph_cost(onnx.load(report.path)) == report.signature.cost
    assert report.signature.cost["parameters"] == sum(p.numel() for p in model.parameters())
    info = json.loads(cli("-q", "info", report.path, "--json").output)
    assert info["cost"]["macs_per_step"] == model.expected_macs()
    text = cli("-q", "info", report.path).output
    assert f"{model.expected_macs():,} multiply-adds per step" in text
