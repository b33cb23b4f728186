"""Models that mix time steps outside their recurrent layers: parity fails step by step while
one whole-sequence run matches, and the ParityError says so, naming the ONNX nodes that act
across the time axis (attention, softmax or pooling over time, cumsum, flip, an unstreamed
convolution), written the ways real code writes them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnnstream
from rnnstream.export import ParitySettings, export
from rnnstream.export.exporter import infer_input, to_onnx
from rnnstream.export.time_mixing import nodes_across_time

SETTINGS = ParitySettings(steps=12, chunk=4)


class MeanPool(nn.Module):
    """``out.mean(dim=1)``: a classifier on the average of the GRU's outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return self.fc(out.mean(dim=1))


class MaxPoolTimeMajor(nn.Module):
    """``torch.max(out, 0).values`` over a time-major LSTM."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return torch.max(out, 0).values


class AttentionPool(nn.Module):
    """Additive attention pooling: ``softmax(score(out), dim=1)``, weighted sum over time."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True)
        self.score = nn.Linear(4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        weights = F.softmax(self.score(out), dim=1)
        return self.fc(torch.sum(weights * out, dim=1))


class SelfAttention(nn.Module):
    """Dot-product self-attention over the GRU's outputs with ``torch.bmm``."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        scores = torch.bmm(out, out.transpose(1, 2)) / 2.0
        return torch.bmm(scores.softmax(-1), out)


class EinsumAttention(nn.Module):
    """Attention over time written with ``torch.einsum``."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)
        self.query = nn.Parameter(torch.randn(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        weights = torch.einsum("bth,h->bt", out, self.query).softmax(dim=1)
        return torch.einsum("bt,bth->bh", weights, out)


class CumulativeSum(nn.Module):
    """``out.cumsum(0)`` on a time-major GRU: each step adds all the earlier ones."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return out.cumsum(0)


class Flipped(nn.Module):
    """``x.flip(1)``: the sequence read backwards."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(torch.flip(x, dims=[1]))[0]


class FunctionalConv(nn.Module):
    """A centred convolution over time with ``F.conv1d`` (no nn.Conv1d to stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(3, 3, 3) * 0.3)
        self.gru = nn.GRU(3, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        smoothed = F.conv1d(x.transpose(1, 2), self.kernel, padding=1)
        return self.gru(smoothed.transpose(1, 2))[0]


@pytest.mark.parametrize(
    ("make", "nodes"),
    [
        (MeanPool, r"ReduceMean '\w+' \(axis 1\)"),
        (MaxPoolTimeMajor, r"ReduceMax '\w+' \(axis 0\)"),
        (AttentionPool, r"Softmax '\w+' \(axis 1\), ReduceSum '\w+' \(axis 1\)"),
        (SelfAttention, r"Softmax '\w+' \(axis 2\), MatMul '\w+' \(axis 2\)"),
        (EinsumAttention, r"Softmax '\w+' \(axis 1\), Einsum '\w+' \(axis 1\)"),
        (CumulativeSum, r"CumSum '\w+' \(axis 0\)"),
        (Flipped, r"Slice '\w+' \(axis 1\)"),
        (FunctionalConv, r"Conv '\w+' \(axis 2\)"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_time_mixing_is_named_in_the_parity_error(make: type, nodes: str, tmp_path: Path) -> None:
    torch.manual_seed(3)
    path = tmp_path / "m.onnx"
    with pytest.raises(rnnstream.ParityError) as info:
        export(make(), path, parity=SETTINGS)
    text = str(info.value)
    lines = text.splitlines()
    assert len(lines) == 3 and "Traceback" not in text
    assert lines[0].startswith("parity failed:") and "(step): max abs err" in lines[0]
    assert lines[1].startswith("One whole-sequence run matches PyTorch (max abs err ")
    assert "mixes time steps outside its recurrent layers" in lines[1]
    assert lines[2].startswith("ONNX nodes acting across the time axis: ")
    assert re.search(nodes, lines[2]), lines[2]
    assert not info.value.report.passed
    assert not path.exists()


class Noisy(nn.Module):
    """Noise added in ``forward``: wrong step by step and on whole sequences alike."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return out + 0.1 * torch.randn_like(out)


def test_a_failure_that_is_not_time_mixing_says_nothing_of_it(tmp_path: Path) -> None:
    torch.manual_seed(4)
    with pytest.raises(rnnstream.ParityError) as info:
        export(Noisy(), tmp_path / "m.onnx", parity=SETTINGS)
    text = str(info.value)
    assert text.startswith("parity failed:") and "(step): max abs err" in text
    assert "whole-sequence" not in text and len(text.splitlines()) == 1


class PerStepHeads(nn.Module):
    """A streamable model full of per-step MatMuls, softmaxes and reductions over features."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.lstm = nn.LSTM(4, 5, num_layers=2)
        self.norm = nn.LayerNorm(5)
        self.out = nn.Linear(5, 7)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, _ = self.lstm(self.embed(x))
        out = self.norm(out)
        logits = F.log_softmax(self.out(out).view(-1, 7), dim=1)
        energy = torch.einsum("tbh,tbh->tb", out, out).unsqueeze(-1)
        return logits, energy + out.mean(dim=-1, keepdim=True) + out.flip(-1)[..., :1]


def test_per_step_operations_are_not_named() -> None:
    torch.manual_seed(5)
    model = PerStepHeads().eval()
    proto = to_onnx(model, infer_input(model, None, None))
    assert nodes_across_time(proto, time_axis=0) == []
