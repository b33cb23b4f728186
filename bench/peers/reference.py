"""The reference model in PyTorch for the torch-based workers (PyTorch eager, ExecuTorch,
OpenVINO): ``nn.LSTM``/``nn.GRU`` and a linear head with the orchestrator's seeded weights,
stepped with the recurrent state as explicit inputs and outputs (what every peer exports)."""

from __future__ import annotations

import numpy as np
import torch
from protocol import Reference
from torch import nn

__all__ = ["LinearCellsStepNet", "StepNet", "example_inputs", "step_net", "zero_state"]


class StepNet(nn.Module):
    """``forward(x [1, input], h [layers, 1, hidden](, c)) -> (y [1, output], h'(, c'))``: one step
    of the reference ``RecurrentNet`` (same module names, so its state dict loads as it is)."""

    def __init__(self, reference: Reference) -> None:
        super().__init__()
        kinds = {"lstm": nn.LSTM, "gru": nn.GRU}
        if reference.cell not in kinds:
            raise ValueError(f"cell {reference.cell!r}: the peers bench runs lstm and gru")
        self.rnn = kinds[reference.cell](
            reference.input_size, reference.hidden_size, reference.num_layers, batch_first=True
        )
        self.head = nn.Linear(reference.hidden_size, reference.output_size)
        state = {k: torch.from_numpy(v) for k, v in reference.weights.items()}
        self.load_state_dict(state, strict=True)
        self.eval()

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = state if len(state) > 1 else state[0]
        y, new = self.rnn(x.unsqueeze(1), hidden)
        new = new if isinstance(new, tuple) else (new,)
        return (self.head(y.squeeze(1)), *new)


class LinearCellsStepNet(nn.Module):
    """``StepNet`` with each layer's cell written out with ``nn.Linear`` (the same weights and
    arithmetic as ``nn.LSTM``/``nn.GRU``): what a user rewrites to let a quantiser that takes
    linear layers only (XNNPACK's, NNCF's) reach the recurrent weights."""

    def __init__(self, reference: Reference) -> None:
        super().__init__()
        source = StepNet(reference)
        self.cells = nn.ModuleList()
        for layer in range(reference.num_layers):
            pair = nn.ModuleList()
            for kind in ("ih", "hh"):
                weight = getattr(source.rnn, f"weight_{kind}_l{layer}")
                linear = nn.Linear(weight.shape[1], weight.shape[0])
                linear.weight.data.copy_(weight.data)
                linear.bias.data.copy_(getattr(source.rnn, f"bias_{kind}_l{layer}").data)
                pair.append(linear)
            self.cells.append(pair)
        self.head = source.head
        self.lstm = reference.cell == "lstm"
        self.eval()

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        new_h, new_c = [], []
        for layer, (ih, hh) in enumerate(self.cells):
            h = state[0][layer]
            if self.lstm:
                i, f, g, o = (ih(x) + hh(h)).chunk(4, dim=1)
                c = torch.sigmoid(f) * state[1][layer] + torch.sigmoid(i) * torch.tanh(g)
                x = torch.sigmoid(o) * torch.tanh(c)
                new_c.append(c)
            else:
                x_r, x_z, x_n = ih(x).chunk(3, dim=1)
                h_r, h_z, h_n = hh(h).chunk(3, dim=1)
                reset, update = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
                n = torch.tanh(x_n + reset * h_n)
                x = n + update * (h - n)
            new_h.append(x)
        new = (torch.stack(new_h), *([torch.stack(new_c)] if self.lstm else []))
        return (self.head(x), *new)


def step_net(reference: Reference, linear_cells: bool) -> nn.Module:
    """The reference's step module, its cells written with ``nn.Linear`` if ``linear_cells``."""
    return (LinearCellsStepNet if linear_cells else StepNet)(reference)


def zero_state(reference: Reference) -> tuple[torch.Tensor, ...]:
    """The zero state as ``StepNet`` takes it: ``(h, c)`` for an LSTM, ``(h,)`` for a GRU."""
    shape = (reference.num_layers, 1, reference.hidden_size)
    count = 2 if reference.cell == "lstm" else 1
    return tuple(torch.zeros(shape) for _ in range(count))


def example_inputs(reference: Reference) -> tuple[torch.Tensor, ...]:
    """One frame and the zero state, as exporters trace ``StepNet`` with."""
    x = torch.from_numpy(np.ascontiguousarray(reference.xs[:1]))
    return (x, *zero_state(reference))
