"""``PeepholeLSTM``: an LSTM whose gates also see the cell state (peephole connections)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from rnnstream.models.common import JsonConfig

__all__ = ["PeepholeLSTM", "PeepholeLSTMConfig"]


@dataclass(frozen=True)
class PeepholeLSTMConfig(JsonConfig):
    """The architecture of a :class:`PeepholeLSTM`; round-trips through JSON."""

    input_size: int = 16
    hidden_size: int = 128
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = True

    def __post_init__(self) -> None:
        for name in ("input_size", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


class PeepholeLSTM(nn.Module):
    """``forward(x, state=None) -> (y, (h, c))``: a stacked LSTM with peephole connections.

    Per layer and step, with ``p_i, p_f, p_o`` the rows of ``weight_ph_l{k}`` (``[3, hidden]``)
    and ``*`` the elementwise product::

        i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi + p_i * c_{t-1})
        f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf + p_f * c_{t-1})
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
        c_t = f_t * c_{t-1} + i_t * g_t
        o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho + p_o * c_t)
        h_t = o_t * tanh(c_t)

    The other weights are named and laid out as in ``nn.LSTM`` (gate blocks ``i, f, g, o``);
    with zero peephole weights the module computes exactly what ``nn.LSTM`` computes. ``x`` is
    ``[batch, time, input]`` (``[time, batch, input]`` unless ``batch_first``); ``h`` and ``c``
    are ``[num_layers, batch, hidden]``.
    """

    def __init__(self, config: PeepholeLSTMConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden_size
        for layer in range(config.num_layers):
            size_in = config.input_size if layer == 0 else h
            self.register_parameter(
                f"weight_ih_l{layer}", nn.Parameter(torch.empty(4 * h, size_in))
            )
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(4 * h, h)))
            if config.bias:
                self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(4 * h)))
                self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(4 * h)))
            self.register_parameter(f"weight_ph_l{layer}", nn.Parameter(torch.empty(3, h)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in ``±1/sqrt(hidden)``, as ``nn.LSTM`` (peephole weights too)."""
        bound = 1.0 / math.sqrt(self.config.hidden_size)
        for param in self.parameters():
            nn.init.uniform_(param, -bound, bound)

    @property
    def input_size(self) -> int:
        return self.config.input_size

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def bias(self) -> bool:
        return self.config.bias

    @property
    def batch_first(self) -> bool:
        return self.config.batch_first

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if x.dim() != 3:
            raise ValueError(f"PeepholeLSTM takes 3-D input, got shape {list(x.shape)}")
        seq = x.transpose(0, 1) if self.batch_first else x  # [T, B, I]
        if state is None:
            zeros = seq.new_zeros(self.num_layers, seq.shape[1], self.hidden_size)
            state = (zeros, zeros)
        h_finals, c_finals = [], []
        for layer in range(self.num_layers):
            seq, h, c = self._layer(layer, seq, state[0][layer], state[1][layer])
            h_finals.append(h)
            c_finals.append(c)
        y = seq.transpose(0, 1) if self.batch_first else seq
        return y, (torch.stack(h_finals), torch.stack(c_finals))

    def _layer(
        self, layer: int, seq: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w_ih, w_hh = getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}")
        b_ih = getattr(self, f"bias_ih_l{layer}", None)
        b_hh = getattr(self, f"bias_hh_l{layer}", None)
        p_i, p_f, p_o = getattr(self, f"weight_ph_l{layer}")
        xw = F.linear(seq, w_ih, b_ih)  # the input projection of every step at once
        outputs = []
        for x_t in xw:
            i, f, g, o = (x_t + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
            i = torch.sigmoid(i + p_i * c)
            f = torch.sigmoid(f + p_f * c)
            c = f * c + i * torch.tanh(g)
            h = torch.sigmoid(o + p_o * c) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs), h, c
