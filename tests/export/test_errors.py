"""What export refuses, and how: ExportError for unexportable models, ParityError for mismatches."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import rnnstream
from rnnstream.export import ParitySettings, export, measure_parity
from rnnstream.export.exporter import infer_input

# --- ExportError ----------------------------------------------------------------------------


class NoRecurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def test_no_recurrent_layer_with_explicit_layout(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    with pytest.raises(rnnstream.ExportError) as info:
        export(NoRecurrent(), path, batch_first=True)
    message = str(info.value)
    assert "NoRecurrent" in message
    assert "nn.LSTM, nn.GRU or nn.RNN" in message
    assert not path.exists()


def test_no_recurrent_layer_with_default_layout(tmp_path: Path) -> None:
    with pytest.raises(rnnstream.ExportError, match=r"nn\.LSTM, nn\.GRU or nn\.RNN"):
        export(NoRecurrent(), tmp_path / "m.onnx")


class Packed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True)
        y, _ = self.rnn(packed)
        y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True)
        return y


def test_packed_sequence(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    with pytest.raises(rnnstream.ExportError, match="PackedSequence") as info:
        export(Packed(), path)
    assert "rnn" in str(info.value)  # names the module
    assert not path.exists()


class CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(8, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, h = self.rnn(x)
        y, _ = self.rnn(y, h)
        return y


def test_recurrent_module_called_twice(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    with pytest.raises(rnnstream.ExportError, match="more than once") as info:
        export(CalledTwice(), path)
    assert "'rnn'" in str(info.value)
    assert not path.exists()


def test_float64_weights(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    with pytest.raises(rnnstream.ExportError, match="float32") as info:
        export(nn.LSTM(3, 4).double(), path)
    assert "weight_ih_l0" in str(info.value)
    assert "float64" in str(info.value)
    assert not path.exists()


def test_unbatched_input_in_forward(tmp_path: Path) -> None:
    class Unbatched(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(3, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rnn(x[0])[0]  # drops the batch axis: 2-D input to the GRU

    with pytest.raises(rnnstream.ExportError, match="2-D input"):
        export(Unbatched(), tmp_path / "m.onnx", example=torch.randn(3, 2, 3))


def test_export_errors_are_rnnstream_errors() -> None:
    assert issubclass(rnnstream.ExportError, rnnstream.RnnStreamError)
    assert issubclass(rnnstream.ParityError, rnnstream.RnnStreamError)


# --- ParityError ----------------------------------------------------------------------------


def _large_weight_rnn() -> nn.RNN:
    torch.manual_seed(0)
    module = nn.RNN(4, 16, 2)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(4.0)
    return module


def test_parity_error_when_tolerance_cannot_hold(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    with pytest.raises(rnnstream.ParityError) as info:
        export(_large_weight_rnn(), path, parity=ParitySettings(steps=200, atol=1e-12))
    error = info.value
    message = str(error)
    assert "max abs err" in message
    assert "atol=1e-12" in message
    report = error.report
    assert report.passed is False
    assert report.atol == 1e-12
    assert report.steps == 200
    assert report.max_abs_err > 1e-12
    assert report.max_rel_err > 0.0
    for mode in ("step", "chunk"):
        assert set(report.errors[mode]) == {"y", "hn"}
        for err in report.errors[mode].values():
            assert err.max_abs_err >= 0.0
    worst = max(e.max_abs_err for m in ("step", "chunk") for e in report.errors[m].values())
    assert report.max_abs_err == worst
    assert not path.exists()


def test_parity_error_leaves_an_existing_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous contents")
    with pytest.raises(rnnstream.ParityError):
        export(_large_weight_rnn(), path, parity=ParitySettings(steps=50, atol=1e-12))
    assert path.read_bytes() == b"previous contents"


@pytest.fixture(scope="module")
def exported_gru(tmp_path_factory) -> tuple[nn.Module, Path]:
    torch.manual_seed(7)
    module = nn.GRU(5, 12, 2, batch_first=True)
    path = tmp_path_factory.mktemp("gru") / "m.onnx"
    export(module, path, parity=ParitySettings(steps=100))
    return module, path


def test_measure_parity_detects_a_graph_that_differs(exported_gru) -> None:
    module, path = exported_gru
    inputs = infer_input(module, None, None)
    x = inputs.sample(2, 200, seed=3)
    onnx_model = rnnstream.load(path)

    same = measure_parity(module, onnx_model, x, 16, 1e-5)
    assert same.passed is True
    assert same.max_abs_err <= 1e-5

    changed = copy.deepcopy(module)
    with torch.no_grad():
        changed.weight_hh_l0 += 0.1
    report = measure_parity(changed, onnx_model, x, 16, 1e-5)
    assert report.passed is False
    assert report.max_abs_err > 1e-2
    for mode in ("step", "chunk"):
        assert report.errors[mode]["y"].max_abs_err > 1e-2
        assert report.errors[mode]["hn"].max_abs_err > 1e-2


def test_verify_raises_for_a_graph_that_differs(exported_gru) -> None:
    from rnnstream.export import verify

    module, path = exported_gru
    assert verify(path, module, ParitySettings(steps=100, seed=1)).passed is True
    changed = copy.deepcopy(module)
    with torch.no_grad():
        changed.weight_hh_l0 += 0.1
    with pytest.raises(rnnstream.ParityError, match="max abs err") as info:
        verify(path, changed, ParitySettings(steps=100, seed=1))
    assert info.value.report.max_abs_err > 1e-2
