"""The recurrent cell kinds rnnstream builds, exports and offers on the command line.

Torch-free, so the CLI can list them without importing PyTorch; ``rnnstream.models`` builds
``nn.LSTM``/``nn.GRU``/``nn.RNN`` (and their cells) from these names, and export records them.
"""

from __future__ import annotations

__all__ = ["CELLS", "check_cell"]

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")  # rnn_*: nn.RNN with that nonlinearity


def check_cell(cell: str) -> None:
    """Raise ``ValueError`` unless ``cell`` is one of :data:`CELLS`."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
