"""Every output head a model returns besides its state is exported, named, and parity-checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import rnnstream
from rnnstream.export import ParitySettings, export
from rnnstream.export.heads import output_heads
from tests.tolerances import PARITY, assert_close


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


def _pytorch_heads(model: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(x)
    if isinstance(out, dict):
        return [out["logits"].numpy(), out["value"].numpy()]
    if isinstance(out[0], tuple):
        return [head.numpy() for head in out[0]]
    return [out[0].numpy(), out[1].numpy()]


@pytest.mark.parametrize(
    ("model", "names"),
    [
        (TwoHeadsThenState(), ["y0", "y1"]),
        (DictOfHeads(), ["logits", "value"]),
        (HeadsAndHiddenTuple(), ["y0", "y1", "y2"]),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None,
)
def test_every_head_is_exported_and_streamed(
    model: nn.Module, names: list[str], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model.eval()
    report = export(model, tmp_path / "m.onnx", parity=ParitySettings(steps=40, chunk=7))
    assert [o.name for o in report.signature.outputs] == names
    assert report.parity is not None and report.parity.passed
    for mode in ("step", "chunk"):
        assert set(names) <= set(report.parity.errors[mode])
    loaded = rnnstream.load(report.path)
    x = torch.randn(2, 9, 3, generator=torch.Generator().manual_seed(5))
    stream = loaded.stream(batch=2)
    steps = [stream.step(x[:, t].numpy()) for t in range(9)]
    pool = loaded.pool()
    ids = [pool.open(), pool.open()]
    pooled = [pool.step({i: x[row, t].numpy() for row, i in enumerate(ids)}) for t in range(9)]
    for name, ref in zip(names, _pytorch_heads(model, x)):
        got = np.stack([out[name] for out in steps], axis=1)
        assert_close(got, ref, PARITY)
        for row, i in enumerate(ids):
            alone = np.stack([out[i][name] for out in pooled])
            np.testing.assert_allclose(alone, got[row], rtol=1e-6, atol=1e-6)


def test_output_names_name_the_heads_in_order(tmp_path: Path) -> None:
    torch.manual_seed(3)
    report = export(
        TwoHeadsThenState(),
        tmp_path / "m.onnx",
        output_names=["policy", "value"],
        parity=ParitySettings(steps=20),
    )
    assert [o.name for o in report.signature.outputs] == ["policy", "value"]
    with pytest.raises(rnnstream.ExportError, match="output_names has 1 names but"):
        export(TwoHeadsThenState(), tmp_path / "n.onnx", output_names=["policy"])
    assert not (tmp_path / "n.onnx").exists()


def test_a_cell_loop_with_two_heads_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(4)
    path = tmp_path / "m.onnx"
    with pytest.raises(rnnstream.ExportError) as info:
        export(CellLoopTwoHeads(), path, parity=ParitySettings(steps=10))
    message = str(info.value)
    assert "CellLoopTwoHeads loops over cells and returns 2 output tensors" in message
    assert "(output[0], output[1])" in message
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
