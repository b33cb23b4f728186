"""verify() and quantize_file(against=) refuse another model before parity, naming the file and
what differs; the model a file came from (flattened heads included) passes the check."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnnstream
from rnnstream.errors import ModelMismatchError
from rnnstream.export import ParitySettings, export, quantize_file, verify
from rnnstream.export.same_model import refuse_other_model
from rnnstream.models import RecurrentNet, RecurrentNetConfig

SETTINGS = ParitySettings(steps=12, chunk=4)


def _net(cell: str = "gru", hidden: int = 8, input_size: int = 3) -> RecurrentNet:
    config = RecurrentNetConfig(cell=cell, hidden_size=hidden, input_size=input_size, output_size=2)
    return RecurrentNet(config)


class FlatLM(nn.Module):
    """A time-major word LM whose log-softmax head is ``view(-1, V)``."""

    def __init__(self, vocab: int = 11, hidden: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.rnn = nn.LSTM(hidden, hidden)
        self.decoder = nn.Linear(hidden, vocab)
        self.vocab = vocab

    def forward(self, tokens: torch.Tensor, hidden: object = None) -> tuple:
        out, hidden = self.rnn(self.embed(tokens), hidden)
        return F.log_softmax(self.decoder(out).view(-1, self.vocab), dim=1), hidden


@pytest.mark.parametrize(
    "other, expected",
    [
        (lambda: _net(hidden=9), r"states have shapes .*9.*the file's .*8"),
        (lambda: _net(input_size=4), r"does not take x float32 \[1, 2, 3\]"),
        (lambda: _net(cell="lstm"), r"states have shapes"),
    ],
    ids=["other-hidden", "other-input", "other-cell"],
)
def test_another_model_is_refused_before_parity(tmp_path, other, expected):
    path = tmp_path / "m.onnx"
    export(_net(), path, parity=SETTINGS)

    with pytest.raises(ModelMismatchError, match=expected) as verify_error:
        verify(path, other(), SETTINGS)
    assert str(path) in str(verify_error.value)

    with pytest.raises(ModelMismatchError, match=expected):
        quantize_file(path, tmp_path / "q.onnx", "int8", against=other(), parity=SETTINGS)
    assert not (tmp_path / "q.onnx").exists()


def test_the_exported_model_passes_the_check_with_a_flattened_head(tmp_path):
    model = FlatLM().eval()
    path = tmp_path / "lm.onnx"
    export(model, path, parity=SETTINGS)

    refuse_other_model(model, rnnstream.load(path), str(path))
    assert verify(path, model, SETTINGS).passed
