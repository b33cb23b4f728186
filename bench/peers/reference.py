"""The reference model in PyTorch for the torch-based workers (PyTorch eager, ExecuTorch,
OpenVINO): ``nn.LSTM``/``nn.GRU`` and a linear head with the orchestrator's seeded weights,
stepped with the recurrent state as explicit inputs and outputs (what every peer exports)."""

from __future__ import annotations

import numpy as np
import torch
from protocol import Reference
from torch import nn

__all__ = ["StepNet", "example_inputs", "zero_state"]


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


def zero_state(reference: Reference) -> tuple[torch.Tensor, ...]:
    """The zero state as ``StepNet`` takes it: ``(h, c)`` for an LSTM, ``(h,)`` for a GRU."""
    shape = (reference.num_layers, 1, reference.hidden_size)
    count = 2 if reference.cell == "lstm" else 1
    return tuple(torch.zeros(shape) for _ in range(count))


def example_inputs(reference: Reference) -> tuple[torch.Tensor, ...]:
    """One frame and the zero state, as exporters trace ``StepNet`` with."""
    x = torch.from_numpy(np.ascontiguousarray(reference.xs[:1]))
    return (x, *zero_state(reference))
