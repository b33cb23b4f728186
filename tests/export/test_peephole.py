"""PeepholeLSTM: exports as ONNX LSTM operators with the peephole input and streams with parity."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

import rnnstream
from rnnstream.export import export
from rnnstream.models import PeepholeLSTM, PeepholeLSTMConfig
from tests.models.round_trip import assert_checkpoint_round_trip
from tests.tolerances import assert_close

ATOL = 1e-5


def _peephole(layers: int, batch_first: bool, seed: int = 0) -> PeepholeLSTM:
    torch.manual_seed(seed)
    config = PeepholeLSTMConfig(
        input_size=5, hidden_size=12, num_layers=layers, batch_first=batch_first
    )
    return PeepholeLSTM(config)


def _assert_parity(parity: dict) -> None:
    assert parity.passed and parity.steps == 1000
    for mode in ("step", "chunk"):
        assert parity.errors[mode], mode
        for tensor, err in parity.errors[mode].items():
            assert err.max_abs_err <= ATOL, (mode, tensor, err)


# Each layer count and each layout once (2 layers batch-first again in the model with a head).
@pytest.mark.parametrize(("layers", "batch_first"), [(1, True), (2, False)])
def test_peephole_exports_and_streams_with_parity(
    tmp_path: Path, layers: int, batch_first: bool
) -> None:
    model = _peephole(layers, batch_first)
    report = export(model, tmp_path / "p.onnx")
    _assert_parity(report.parity)
    assert [s.input for s in report.signature.states] == ["h0", "c0"]
    assert report.signature.states[0].shape == (layers, "batch", 12)
    graph = onnx.load(tmp_path / "p.onnx").graph
    lstms = [n for n in graph.node if n.op_type == "LSTM"]
    assert len(lstms) == layers and all(len(n.input) == 8 and n.input[7] for n in lstms)


def test_peephole_inside_a_model_with_a_head(tmp_path: Path) -> None:
    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.core = _peephole(2, True)
            self.head = nn.Linear(12, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.core(x)[0])

    report = export(Tagger(), tmp_path / "t.onnx")
    _assert_parity(report.parity)
    assert [s.input for s in report.signature.states] == ["h0", "c0"]
    stream = rnnstream.load(tmp_path / "t.onnx").stream()
    assert stream.feed(torch.randn(7, 5).numpy()).shape == (7, 3)


def test_zero_peepholes_compute_what_nn_lstm_computes() -> None:
    model = _peephole(2, True)
    torch.manual_seed(1)
    reference = nn.LSTM(5, 12, num_layers=2, batch_first=True)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("weight_ph"):
                param.zero_()
            else:
                param.copy_(getattr(reference, name))
        x = torch.randn(3, 40, 5)
        y, (h, c) = model(x)
        y_ref, (h_ref, c_ref) = reference(x)
    for got, want in ((y, y_ref), (h, h_ref), (c, c_ref)):
        assert_close(got.numpy(), want.numpy())


def test_peepholes_change_the_output() -> None:
    model = _peephole(1, True)
    x = torch.randn(2, 20, 5)
    with torch.no_grad():
        y = model(x)[0]
        model.weight_ph_l0.zero_()
        assert (model(x)[0] - y).abs().max() > 1e-3


def test_peephole_checkpoint_round_trip(tmp_path: Path) -> None:
    model = _peephole(2, False)
    assert_checkpoint_round_trip(model, tmp_path / "p.safetensors", torch.randn(6, 2, 5))
