"""What the model classes share: the cell choice, building the recurrent core, JSON configs."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

from torch import nn

from rnnstream.cells import check_cell

__all__ = ["JsonConfig", "make_recurrent"]


def make_recurrent(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    *,
    bias: bool = True,
    batch_first: bool = True,
    dropout: float = 0.0,
    bidirectional: bool = False,
    proj_size: int = 0,
) -> nn.RNNBase:
    """``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (tanh or relu) for a name in ``rnnstream.cells``."""
    check_cell(cell)
    common: dict[str, Any] = {
        "input_size": input_size,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "bias": bias,
        "batch_first": batch_first,
        "dropout": dropout if num_layers > 1 else 0.0,  # torch warns on dropout with one layer
        "bidirectional": bidirectional,
    }
    if cell == "lstm":
        return nn.LSTM(**common, proj_size=proj_size)
    if proj_size:
        raise ValueError("proj_size is an LSTM option")
    if cell == "gru":
        return nn.GRU(**common)
    return nn.RNN(**common, nonlinearity=cell.removeprefix("rnn_"))


class JsonConfig:
    """Mixin for frozen dataclass configs: a JSON round trip that refuses unknown fields."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, text: str) -> Any:
        """The config in ``text``; ``ValueError`` naming the problem if it is not a valid one."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"a config is a JSON object, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as e:  # a value of the wrong type, e.g. a string where a size goes
            raise ValueError(f"a config value has the wrong type: {e}") from e
