"""Export's layering: it imports no training code, and the cell kinds have one torch-free home."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from torch import nn

from rnnstream.cells import CELLS, check_cell
from rnnstream.export.layers import RecurrentSpec
from rnnstream.export.trace_cell_loop import cell_kind

PROBE = """
import json, sys
import rnnstream.export, rnnstream.export.quality, rnnstream.cells
print(json.dumps(sorted(m for m in sys.modules if m.startswith("rnnstream."))))
"""


def test_export_imports_no_training_code() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert "rnnstream.export.quality" in loaded and "rnnstream.models.scoring" in loaded
    assert [m for m in loaded if m.startswith("rnnstream.train")] == []


def test_the_cell_list_is_torch_free() -> None:
    probe = "import sys, rnnstream.cells; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_cell_kind_is_what_export_records() -> None:
    torch.manual_seed(0)
    layers = {
        "lstm": nn.LSTM(2, 3),
        "gru": nn.GRU(2, 3),
        "rnn_tanh": nn.RNN(2, 3),
        "rnn_relu": nn.RNN(2, 3, nonlinearity="relu"),
    }
    cells = {
        "lstm": nn.LSTMCell(2, 3),
        "gru": nn.GRUCell(2, 3),
        "rnn_tanh": nn.RNNCell(2, 3),
        "rnn_relu": nn.RNNCell(2, 3, nonlinearity="relu"),
    }
    assert tuple(layers) == CELLS
    for name in CELLS:
        check_cell(name)
        assert RecurrentSpec.of(layers[name]).cell == name
        assert cell_kind(cells[name]) == name
