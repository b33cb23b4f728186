"""Parity matrix: many recurrent configurations exported and checked, real torch vs onnxruntime.

A covering set of configurations rather than the full cartesian product: every cell type meets
both biases, both layouts, batch 1 and batch 3, and a spread of layer counts, hidden sizes and
input sizes. Hidden 1024 is one LSTM (time-major, batch 3, 1000 steps): the widest dot products,
which onnxruntime computes with the same GEMM for every cell; the GRU and RNN cells (and the
batch-first LSTM) meet the wide end at hidden 256, a sixteenth of the weights, for a short run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import rnnstream
from rnnstream.export import ParitySettings, export

ATOL = 1e-5
STEPS = 1000

# PyTorch's own (reference) LSTM with proj_size warns that oneDNN does not support it.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")


@dataclass(frozen=True)
class Case:
    cell: str  # "lstm", "gru", "rnn_tanh", "rnn_relu"
    input_size: int
    hidden: int
    layers: int
    bias: bool
    batch_first: bool
    batch: int
    proj: int = 0

    @property
    def id(self) -> str:
        parts = [
            self.cell,
            f"i{self.input_size}",
            f"h{self.hidden}",
            f"l{self.layers}",
            "bias" if self.bias else "nobias",
            "bf" if self.batch_first else "tm",
            f"b{self.batch}",
        ]
        if self.proj:
            parts.append(f"p{self.proj}")
        return "-".join(parts)

    def build(self, bidirectional: bool = False) -> nn.RNNBase:
        kw = dict(
            input_size=self.input_size,
            hidden_size=self.hidden,
            num_layers=self.layers,
            bias=self.bias,
            batch_first=self.batch_first,
            bidirectional=bidirectional,
        )
        if self.cell == "lstm":
            return nn.LSTM(**kw, proj_size=self.proj)
        if self.cell == "gru":
            return nn.GRU(**kw)
        return nn.RNN(**kw, nonlinearity=self.cell.removeprefix("rnn_"))


C = Case
CASES = [
    # LSTM
    C("lstm", 1, 1, 1, True, False, 1),
    C("lstm", 1, 2, 1, False, False, 3),
    C("lstm", 3, 2, 2, False, True, 3),
    C("lstm", 8, 64, 3, True, False, 3),
    C("lstm", 5, 64, 4, False, True, 1),
    C("lstm", 2, 256, 1, True, True, 1),
    C("lstm", 1, 1024, 1, False, False, 3),
    # LSTM with proj_size (a Scan over an explicit cell)
    C("lstm", 4, 16, 1, True, False, 3, proj=4),
    C("lstm", 1, 64, 2, False, True, 1, proj=8),
    C("lstm", 6, 2, 3, True, True, 3, proj=1),
    C("lstm", 16, 64, 4, True, False, 1, proj=32),
    # GRU
    C("gru", 1, 1, 1, False, True, 3),
    C("gru", 4, 2, 2, True, False, 1),
    C("gru", 8, 64, 1, True, True, 3),
    C("gru", 3, 64, 3, False, False, 3),
    C("gru", 2, 256, 1, False, False, 3),
    C("gru", 1, 2, 4, True, True, 1),
    C("gru", 12, 64, 2, True, False, 1),
    # RNN tanh
    C("rnn_tanh", 1, 1, 1, True, True, 1),
    C("rnn_tanh", 5, 2, 2, False, False, 3),
    C("rnn_tanh", 8, 64, 4, True, False, 3),
    C("rnn_tanh", 3, 64, 1, False, True, 1),
    C("rnn_tanh", 2, 256, 1, True, False, 3),
    C("rnn_tanh", 1, 2, 3, True, True, 3),
    # RNN relu
    C("rnn_relu", 1, 1, 1, False, False, 3),
    C("rnn_relu", 4, 2, 3, True, True, 1),
    C("rnn_relu", 6, 64, 2, True, False, 3),
    C("rnn_relu", 2, 64, 4, False, True, 3),
    C("rnn_relu", 1, 256, 1, False, True, 1),
    C("rnn_relu", 3, 2, 1, True, False, 3),
]


def _state_names(cell: str) -> tuple[list[str], list[str]]:
    if cell == "lstm":
        return ["h0", "c0"], ["hn", "cn"]
    return ["h0"], ["hn"]


def _assert_parity(parity: dict, modes: tuple[str, ...], tensors: set[str]) -> None:
    assert parity.passed is True
    assert parity.max_abs_err <= ATOL
    for mode in modes:
        assert set(parity.errors[mode]) == tensors, mode
        for tensor, err in parity.errors[mode].items():
            assert np.isfinite(err.max_abs_err), (mode, tensor)
            assert err.max_abs_err <= ATOL, (mode, tensor, err)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_unidirectional_parity(case: Case, tmp_path: Path) -> None:
    torch.manual_seed(CASES.index(case))
    module = case.build()
    report = export(
        module, tmp_path / "m.onnx", parity=ParitySettings(steps=STEPS, batch=case.batch)
    )

    parity = report.parity
    assert parity.steps == STEPS
    assert parity.batch == case.batch
    ins, outs = _state_names(case.cell)
    _assert_parity(parity, ("step", "chunk"), {"y", *outs})

    sig = report.signature
    assert sig.streamable
    assert [s.input for s in sig.states] == ins
    assert [s.output for s in sig.states] == outs
    out_size = case.proj or case.hidden
    assert sig.states[0].shape == (case.layers, "batch", out_size)
    if case.cell == "lstm":
        assert sig.states[1].shape == (case.layers, "batch", case.hidden)
    assert sig.outputs[0].shape[-1] == out_size
    # The parity record travels inside the written file.
    assert rnnstream.load(tmp_path / "m.onnx").signature.parity == parity


BIDIRECTIONAL = [
    C("lstm", 3, 8, 2, True, False, 3),
    C("gru", 4, 16, 1, False, True, 1),
    C("rnn_tanh", 2, 8, 3, True, True, 3),
    C("lstm", 5, 16, 2, True, True, 3, proj=4),
]


@pytest.mark.parametrize("case", BIDIRECTIONAL, ids=[c.id for c in BIDIRECTIONAL])
def test_bidirectional_exports_for_whole_sequences(case: Case, tmp_path: Path) -> None:
    torch.manual_seed(100 + BIDIRECTIONAL.index(case))
    module = case.build(bidirectional=True)
    path = tmp_path / "m.onnx"
    report = export(module, path, parity=ParitySettings(steps=200, batch=case.batch))

    sig = report.signature
    assert sig.streamable is False
    _, outs = _state_names(case.cell)
    parity = report.parity
    assert set(parity.errors) == {"sequence"} and parity.chunk_size is None
    _assert_parity(parity, ("sequence",), {"y", *outs})
    out_size = case.proj or case.hidden
    assert sig.states[0].shape == (2 * case.layers, "batch", out_size)
    assert sig.outputs[0].shape[-1] == 2 * out_size

    model = rnnstream.load(path)
    with pytest.raises(rnnstream.SignatureError, match="not streamable"):
        model.stream()
    with pytest.raises(rnnstream.SignatureError, match="bidirectional"):
        model.stream(batch=2)


# --- composite models -----------------------------------------------------------------------


class CharLM(nn.Module):
    """Embedding -> LSTM (batch_first) -> Linear; forward(x, state=None) -> (logits, state)."""

    def __init__(self, vocab: int = 11, emb: int = 6, hidden: int = 32, layers: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.rnn = nn.LSTM(emb, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor, state: tuple | None = None) -> tuple:
        y, state = self.rnn(self.emb(x), state)
        return self.head(y), state


class ProjectedGRU(nn.Module):
    """Linear input projection -> GRU (time-major) -> head; forward(x) -> tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(7, 12)
        self.gru = nn.GRU(12, 20, 2)
        self.head = nn.Linear(20, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.gru(torch.tanh(self.proj(x)))
        return self.head(y)


class EncoderDecoder(nn.Module):
    """Two recurrent modules in sequence: LSTM then GRU, each carrying its own state."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.LSTM(5, 16, batch_first=True)
        self.dec = nn.GRU(16, 8, 2, batch_first=True)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.enc(x)
        y, _ = self.dec(y)
        return self.head(y)


class Nested(nn.Module):
    """A recurrent module inside a submodule: its state names come from the dotted path."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Module()
        self.block.rnn = nn.RNN(3, 6, batch_first=True)
        self.top = nn.GRU(6, 5, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.block.rnn(x)
        y, _ = self.top(y)
        return y


@pytest.mark.parametrize("batch", [1, 3])
def test_embedding_lstm_head(batch: int, tmp_path: Path) -> None:
    torch.manual_seed(1)
    report = export(CharLM(), tmp_path / "m.onnx", parity=ParitySettings(steps=STEPS, batch=batch))
    sig = report.signature
    assert sig.input.dtype == "int64"
    assert sig.input.shape == ("batch", "time")
    assert [(s.input, s.output, s.shape) for s in sig.states] == [
        ("h0", "hn", (2, "batch", 32)),
        ("c0", "cn", (2, "batch", 32)),
    ]
    assert sig.outputs[0].shape == ("batch", "time", 11)
    _assert_parity(report.parity, ("step", "chunk"), {"y", "hn", "cn"})


@pytest.mark.parametrize("batch", [1, 3])
def test_linear_gru_head_time_major(batch: int, tmp_path: Path) -> None:
    torch.manual_seed(2)
    report = export(
        ProjectedGRU(), tmp_path / "m.onnx", parity=ParitySettings(steps=STEPS, batch=batch)
    )
    sig = report.signature
    assert sig.input.dtype == "float32"
    assert sig.input.shape == ("time", "batch", 7)
    assert (sig.input.time_axis, sig.input.batch_axis) == (0, 1)
    assert [(s.input, s.output, s.shape) for s in sig.states] == [("h0", "hn", (2, "batch", 20))]
    assert sig.outputs[0].shape == ("time", "batch", 3)
    _assert_parity(report.parity, ("step", "chunk"), {"y", "hn"})


def test_two_recurrent_modules_prefix_state_names(tmp_path: Path) -> None:
    torch.manual_seed(3)
    path = tmp_path / "m.onnx"
    report = export(EncoderDecoder(), path, parity=ParitySettings(steps=STEPS, batch=3))
    sig = report.signature
    assert [(s.input, s.output, s.shape) for s in sig.states] == [
        ("enc_h0", "enc_hn", (1, "batch", 16)),
        ("enc_c0", "enc_cn", (1, "batch", 16)),
        ("dec_h0", "dec_hn", (2, "batch", 8)),
    ]
    _assert_parity(report.parity, ("step", "chunk"), {"y", "enc_hn", "enc_cn", "dec_hn"})
    stream = rnnstream.load(path).stream()
    assert sorted(stream.state) == ["dec_h0", "enc_c0", "enc_h0"]


def test_nested_module_path_becomes_state_prefix(tmp_path: Path) -> None:
    torch.manual_seed(4)
    # Registration order (block.rnn, then top) is also the order they run in.
    report = export(Nested(), tmp_path / "m.onnx", parity=ParitySettings(steps=300, batch=2))
    names = [s.input for s in report.signature.states]
    assert names == ["block_rnn_h0", "top_h0"]
    _assert_parity(report.parity, ("step", "chunk"), {"y", "block_rnn_hn", "top_hn"})


class DecoderRegisteredFirst(nn.Module):
    """Two recurrent modules registered in the opposite order to the one they run in."""

    def __init__(self) -> None:
        super().__init__()
        self.dec = nn.GRU(8, 8, batch_first=True)
        self.enc = nn.GRU(4, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.enc(x)
        y, _ = self.dec(y)
        return y


def test_recurrent_modules_registered_out_of_call_order(tmp_path: Path) -> None:
    torch.manual_seed(5)
    example = torch.randn(2, 3, 4)
    report = export(DecoderRegisteredFirst(), tmp_path / "m.onnx", example=example)
    assert [s.input for s in report.signature.states] == ["dec_h0", "enc_h0"]
    _assert_parity(report.parity, ("step", "chunk"), {"y", "dec_hn", "enc_hn"})


def test_wrong_inferred_input_size_is_an_export_error(tmp_path: Path) -> None:
    message = r"DecoderRegisteredFirst.forward fails on a random input of shape \[2, 3, 8\] "
    message += r"\(RuntimeError: .*Expected 4, got 8\)[\s\S]*Pass example="
    with pytest.raises(rnnstream.ExportError, match=message):
        export(DecoderRegisteredFirst(), tmp_path / "m.onnx", parity=ParitySettings(steps=10))
