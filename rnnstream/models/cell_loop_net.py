"""``CellLoopNet``: stacked ``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell`` stepped in a loop.

The pattern this class shows is what :func:`rnnstream.export.export` accepts as a *cell-loop*
model: ``forward`` loops over time, and at every step calls each cell exactly once, as
``cell(x_t, state)`` with a ``[batch, features]`` input, returning one output per step (a time
axis in the output). Copy it and change the step as you need: export traces one step, feeding
every cell its state from the graph's inputs, and runs that step in an ONNX ``Scan`` over time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rnnstream.cells import check_cell
from rnnstream.models.common import JsonConfig

__all__ = ["CellLoopNet", "CellLoopNetConfig", "make_cell"]

CellState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def make_cell(cell: str, input_size: int, hidden_size: int, bias: bool = True) -> nn.RNNCellBase:
    """``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell`` (tanh or relu) for a cell name."""
    check_cell(cell)
    if cell == "lstm":
        return nn.LSTMCell(input_size, hidden_size, bias=bias)
    if cell == "gru":
        return nn.GRUCell(input_size, hidden_size, bias=bias)
    return nn.RNNCell(input_size, hidden_size, bias=bias, nonlinearity=cell.removeprefix("rnn_"))


@dataclass(frozen=True)
class CellLoopNetConfig(JsonConfig):
    """The architecture of a :class:`CellLoopNet`; round-trips through JSON."""

    cell: str = "lstm"
    input_size: int = 16
    hidden_size: int = 64
    num_layers: int = 2  # stacked cells, each feeding the next
    output_size: int = 0  # a linear head on the last cell's h; 0: no head
    bias: bool = True
    batch_first: bool = True

    def __post_init__(self) -> None:
        check_cell(self.cell)
        for name in ("input_size", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


class CellLoopNet(nn.Module):
    """``forward(x, state=None) -> (y, state)``: a Python loop over time through stacked cells.

    ``x`` is ``[batch, time, input]`` (``[time, batch, input]`` unless ``batch_first``); ``y`` is
    the last cell's ``h`` at every step (through the head when there is one); ``state`` is one
    entry per cell: ``(h, c)`` for LSTM cells, ``h`` otherwise, each ``[batch, hidden]``.
    """

    def __init__(self, config: CellLoopNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.cells = nn.ModuleList(
            make_cell(c.cell, c.input_size if k == 0 else c.hidden_size, c.hidden_size, c.bias)
            for k in range(c.num_layers)
        )
        self.head = nn.Linear(c.hidden_size, c.output_size) if c.output_size else None

    def forward(
        self, x: torch.Tensor, state: tuple[CellState, ...] | None = None
    ) -> tuple[torch.Tensor, tuple[CellState, ...]]:
        time_axis = 1 if self.config.batch_first else 0
        states: list[CellState | None] = [None] * len(self.cells) if state is None else list(state)
        outputs = []
        for x_t in x.unbind(time_axis):
            for k, cell in enumerate(self.cells):
                states[k] = cell(x_t, states[k])
                x_t = states[k][0] if isinstance(states[k], tuple) else states[k]
            outputs.append(x_t)
        y = torch.stack(outputs, dim=time_axis)
        if self.head is not None:
            y = self.head(y)
        return y, tuple(states)

    def example_input(self, batch: int = 2, steps: int = 3) -> torch.Tensor:
        """A random input of the right layout (used by export)."""
        lead = (batch, steps) if self.config.batch_first else (steps, batch)
        return torch.randn(*lead, self.config.input_size)
