"""A model with two or more output heads is refused (ExportError), never exported on its first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import rnnstream
from rnnstream.export import ParitySettings, export
from rnnstream.export.heads import output_heads


class TwoHeadsThenState(nn.Module):
    """``(a, b, h)``: a tuple of heads, then the GRU's state."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(3, 6, batch_first=True)
        self.a, self.b = nn.Linear(6, 2), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, h = self.rnn(x)
        return self.a(y), self.b(y), h


class DictOfHeads(nn.Module):
    """``{"logits": ..., "value": ..., "state": (h, c)}``."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(3, 5, batch_first=True)
        self.logits, self.value = nn.Linear(5, 7), nn.Linear(5, 1)

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        y, state = self.rnn(x)
        return {"logits": self.logits(y), "value": self.value(y), "state": state}


class HeadsAndHiddenTuple(nn.Module):
    """``((a, b, c), (h, c))``: the heads in one tuple, the LSTM's hidden tuple in another."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(3, 5, num_layers=2, batch_first=True)
        self.heads = nn.ModuleList(nn.Linear(5, 2) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], object]:
        y, state = self.rnn(x)
        return tuple(head(y) for head in self.heads), state


class CellLoopTwoHeads(nn.Module):
    """A cell loop returning ``(y, y_doubled, h)``."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.GRUCell(3, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, ys = None, []
        for x_t in x.unbind(1):
            h = self.cell(x_t, h)
            ys.append(h)
        y = torch.stack(ys, dim=1)
        return y, 2 * y, h


@pytest.mark.parametrize(
    ("model", "count", "places"),
    [
        (TwoHeadsThenState(), 2, "output[0], output[1]"),
        (DictOfHeads(), 2, "output['logits'], output['value']"),
        (HeadsAndHiddenTuple(), 3, "output[0][0], output[0][1], output[0][2]"),
        (CellLoopTwoHeads(), 2, "output[0], output[1]"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None,
)
def test_several_heads_are_refused_by_number(
    model: nn.Module, count: int, places: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    with pytest.raises(rnnstream.ExportError) as info:
        export(model, path, parity=ParitySettings(steps=10))
    message = str(info.value)
    assert f"returns {count} output tensors besides the recurrent state ({places})" in message
    assert type(model).__name__ in message and "multi-output export does not exist" in message
    assert not path.exists()


class OneHeadStateAsViews(nn.Module):
    """One head; the state returned as views of what the GRU gave (last layer, detached)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(3, 6, num_layers=2, batch_first=True)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, h = self.rnn(x)
        return self.head(y), h.detach(), h[-1]


def test_state_returned_as_views_is_not_a_head(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = OneHeadStateAsViews().eval()
    x = torch.randn(2, 3, 3)
    assert output_heads(model, x) == ["output[0]"]
    report = export(model, tmp_path / "m.onnx", parity=ParitySettings(steps=50))
    assert report.parity is not None and report.parity.passed
    assert [o.name for o in report.signature.outputs] == ["y"]


def test_a_plain_recurrent_layer_has_one_head() -> None:
    torch.manual_seed(2)
    assert output_heads(nn.LSTM(3, 4, batch_first=True), torch.randn(2, 5, 3)) == ["output[0]"]
