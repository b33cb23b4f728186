"""Causal convolutions over time stream with their context as state; look-ahead is refused.

The models are written as users write them (trimmed symmetric padding, ``F.pad`` before an
unpadded convolution, dilated and depthwise stacks, conv → norm → activation, batch-first and
time-major), exported, then stepped and fed in chunks against PyTorch's whole-sequence forward.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import weight_norm

import rnnstream
from rnnstream.export import ParitySettings, export
from tests.export.streaming import (
    ModelSet,
    assert_pool_rows_match,
    assert_snapshot_restores,
    refusal,
    torch_batch_time,
)


class TrimmedPadding(nn.Module):
    """``Conv1d(padding=k-1)`` then ``[..., :-(k-1)]``, ReLU, LSTM; batch-first."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(6, 8, 3, padding=2)
        self.lstm = nn.LSTM(8, 12, batch_first=True)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x.transpose(1, 2))[..., :-2])
        return self.head(self.lstm(h.transpose(1, 2))[0])


class TrimmedToLength(nn.Module):
    """Dilated ``Conv1d`` trimmed with ``[..., :T]``, then a GRU; time-major."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(6, 8, 3, dilation=2, padding=4)
        self.gru = nn.GRU(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.shape[0]
        h = self.conv(x.permute(1, 2, 0))[..., :steps]
        return self.gru(torch.tanh(h).permute(2, 0, 1))[0]


class TemporalBlocks(nn.Module):
    """A TCN-style stack: ``F.pad(x, ((k-1)·d, 0))`` before unpadded convs, d = 1, 2, 4."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(6, 6, 3, dilation=d) for d in (1, 2, 4))
        self.gru = nn.GRU(6, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)
        for conv in self.convs:
            h = h + torch.relu(conv(F.pad(h, (2 * conv.dilation[0], 0))))
        return self.gru(h.transpose(1, 2))[0]


class DepthwiseBatchNorm(nn.Module):
    """Depthwise causal conv → pointwise conv → BatchNorm → ReLU, then an LSTM; time-major."""

    def __init__(self) -> None:
        super().__init__()
        self.front = nn.Sequential(
            nn.Conv1d(6, 6, 5, padding=4, groups=6),
            nn.Conv1d(6, 8, 1),
        )
        self.norm = nn.BatchNorm1d(8)
        self.lstm = nn.LSTM(8, 8, num_layers=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.front(x.permute(1, 2, 0))[..., : x.shape[0]]
        return self.lstm(torch.relu(self.norm(h)).permute(2, 0, 1))[0]


class LayerNormGelu(nn.Module):
    """Two stacked causal convs, each → LayerNorm over channels → GELU, then a GRU and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(6, 8, 2, padding=1)
        self.norm1 = nn.LayerNorm(8)
        self.conv2 = nn.Conv1d(8, 8, 3, padding=2, groups=2)
        self.norm2 = nn.LayerNorm(8)
        self.gru = nn.GRU(8, 8, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for conv, norm in ((self.conv1, self.norm1), (self.conv2, self.norm2)):
            trim = conv.padding[0]
            h = F.gelu(norm(conv(h.transpose(1, 2))[..., :-trim].transpose(1, 2)))
        return self.head(self.gru(h)[0])


class CausalConv1d(nn.Conv1d):
    """A causal convolution as a subclass that pads inside its own forward (``padding=0``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, dilation: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel, dilation=dilation)
        self.left = (kernel - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left, 0)))


class TrimmingCausalConv1d(nn.Conv1d):
    """The other common subclass: ``padding=(k-1)·d`` given to the constructor, the tail trimmed
    in its own forward."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, dilation: int = 1) -> None:
        self.trim = (kernel - 1) * dilation
        super().__init__(in_channels, out_channels, kernel, padding=self.trim, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[:, :, : -self.trim]


class Subclassed(nn.Module):
    """Both subclasses stacked with a ReLU between, then a GRU; batch-first."""

    def __init__(self) -> None:
        super().__init__()
        self.front = nn.Sequential(
            CausalConv1d(6, 8, 3), nn.ReLU(), TrimmingCausalConv1d(8, 8, 2, dilation=4)
        )
        self.gru = nn.GRU(8, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(self.front(x.transpose(1, 2)).transpose(1, 2))[0]


class Chomp1d(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, : -self.size].contiguous()


class TemporalBlock(nn.Module):
    """The TCN residual block of locuslab/TCN: weight-normed padded convs, ``Chomp1d``, ReLU, a
    1x1 downsample on the residual path."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, d: int) -> None:
        super().__init__()
        pad = (kernel - 1) * d
        self.net = nn.Sequential(
            weight_norm(nn.Conv1d(in_channels, out_channels, kernel, padding=pad, dilation=d)),
            Chomp1d(pad),
            nn.ReLU(),
            weight_norm(nn.Conv1d(out_channels, out_channels, kernel, padding=pad, dilation=d)),
            Chomp1d(pad),
            nn.ReLU(),
        )
        self.downsample = nn.Conv1d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.net(x) + self.downsample(x))


class TcnThenLstm(nn.Module):
    """Two TCN blocks (dilations 1 and 2), then an LSTM; time-major."""

    def __init__(self) -> None:
        super().__init__()
        self.tcn = nn.Sequential(TemporalBlock(6, 8, 3, 1), TemporalBlock(8, 8, 3, 2))
        self.lstm = nn.LSTM(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(self.tcn(x.permute(1, 2, 0)).permute(2, 0, 1))[0]


FEW_STEPS = ParitySettings(steps=64, chunk=7)

MODELS: dict[str, tuple[Callable[[], nn.Module], bool]] = {
    "trimmed_padding": (TrimmedPadding, True),
    "trimmed_to_length": (TrimmedToLength, False),
    "temporal_blocks": (TemporalBlocks, True),
    "depthwise_batchnorm": (DepthwiseBatchNorm, False),
    "layernorm_gelu": (LayerNormGelu, True),
    "subclassed": (Subclassed, True),
    "tcn_then_lstm": (TcnThenLstm, False),
}
ZOO = ModelSet(MODELS, features=6, seed=3)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return ZOO.export_all(tmp_path_factory.mktemp("conv"), FEW_STEPS, example=False)


@pytest.mark.parametrize("name", list(MODELS))
def test_steps_and_chunks_match_pytorch(exported: dict[str, Path], name: str) -> None:
    ZOO.assert_streams_like_pytorch(exported[name], name, batch=3, steps=23, chunk=5, seed=11)


def test_context_states_are_named_sized_and_hold_the_last_frames(
    exported: dict[str, Path],
) -> None:
    model = rnnstream.load(exported["temporal_blocks"])
    contexts = {s.input: s for s in model.signature.states if "ctx" in s.input}
    assert {name: spec.shape for name, spec in contexts.items()} == {
        "convs_0_ctx0": ("batch", 6, 2),
        "convs_1_ctx0": ("batch", 6, 4),
        "convs_2_ctx0": ("batch", 6, 8),
    }
    assert [contexts[n].output for n in sorted(contexts)] == [
        "convs_0_ctxn",
        "convs_1_ctxn",
        "convs_2_ctxn",
    ]
    stream = model.stream()
    x = ZOO.sequence(batch=1, steps=7, batch_first=True, seed=5)[0].numpy()
    assert np.all(stream.state["convs_0_ctx0"] == 0)
    stream.feed(x)
    # The first convolution reads the input itself: its context is the last two frames.
    np.testing.assert_array_equal(stream.state["convs_0_ctx0"][0], x[-2:].T)


def test_pool_streams_match_their_own_sequences(exported: dict[str, Path]) -> None:
    model, batch_first = ZOO.model("trimmed_padding")
    pool = rnnstream.load(exported["trimmed_padding"]).pool()
    xs = [ZOO.sequence(1, 9, batch_first, seed=20 + i)[0].numpy() for i in range(2)]

    def alone(frames: np.ndarray) -> np.ndarray:
        return torch_batch_time(model, torch.from_numpy(frames)[None], batch_first)[0]

    # the second stream sits out every third tick
    assert assert_pool_rows_match(pool, xs, lambda tick: tick % 3 == 0, alone) == [9, 6]


def test_a_state_snapshot_restores_the_context(exported: dict[str, Path]) -> None:
    stream = rnnstream.load(exported["layernorm_gelu"]).stream()
    x = ZOO.sequence(batch=1, steps=12, batch_first=True, seed=8)[0].numpy()
    assert_snapshot_restores(stream, x, split=6)


def test_info_lists_the_context_states(exported: dict[str, Path], cli) -> None:
    out = cli("info", str(exported["trimmed_padding"])).output
    assert "state   conv_ctx0 -> conv_ctxn: float32 ['batch', 6, 2], batch axis 0" in out
    assert "conv_ctxn  max abs" in out  # its parity against PyTorch's final context


# --- what cannot stream -----------------------------------------------------------------------


class Front(nn.Module):
    """``front`` over time (time-major input), then a GRU: the harness for the refusals."""

    def __init__(self, front: nn.Module, after: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.front = nn.Sequential(front)
        self.after = after
        self.gru = nn.GRU(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.after(self.front(x.permute(1, 2, 0)))
        return self.gru(h.permute(2, 0, 1))[0]


def _same(h: torch.Tensor) -> torch.Tensor:
    return h


REFUSED = {
    "centred": (nn.Conv1d(6, 6, 3, padding=1), _same, "looks 1 step(s) ahead"),
    "same": (nn.Conv1d(6, 6, 5, padding="same"), _same, "looks 2 step(s) ahead"),
    "strided": (nn.Conv1d(6, 6, 3, padding=2, stride=2), _same, "strides over time"),
    "pooled": (nn.MaxPool1d(2), _same, "pools over time"),
    "reflect": (
        nn.Conv1d(6, 6, 3, padding=2, padding_mode="reflect"),
        lambda h: h[..., :-2],
        "only zero padding streams",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_cannot_stream_is_refused_naming_the_module(tmp_path: Path, case: str) -> None:
    front, after, why = REFUSED[case]
    message = refusal(Front(front, after), tmp_path / "m.onnx", batch_first=False)
    assert "'front.0'" in message and why in message
    assert "whole-sequence use" in message  # the alternative


def test_an_untrimmed_padding_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(rnnstream.ExportError) as info:
        export(Front(nn.Conv1d(6, 6, 3, padding=2), _same), tmp_path / "m.onnx", batch_first=False)
    assert "outputs 10 steps for 8 input steps" in str(info.value)
    assert "trim the output of ['front.0']" in str(info.value)


def test_a_trim_from_the_left_is_refused_as_look_ahead(tmp_path: Path) -> None:
    model = Front(nn.Conv1d(6, 6, 3, padding=2), lambda h: h[..., 2:])
    with pytest.raises(rnnstream.ExportError, match="looks ahead") as info:
        export(model, tmp_path / "m.onnx", batch_first=False)
    assert "['front.0']" in str(info.value)


class BidirectionalCentred(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(6, 6, 3, padding=1)
        self.lstm = nn.LSTM(6, 4, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(self.conv(x.transpose(1, 2)).transpose(1, 2))[0]


def test_a_whole_sequence_model_keeps_its_centred_convolution(tmp_path: Path) -> None:
    torch.manual_seed(4)
    report = export(BidirectionalCentred().eval(), tmp_path / "m.onnx", parity=FEW_STEPS)
    assert not report.signature.streamable
    assert report.parity is not None and report.parity.passed
    assert [s.input for s in report.signature.states] == ["h0", "c0"]


class ActivatedCausalConv1d(nn.Conv1d):
    """A subclass that pads causally and applies tanh inside its own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(super().forward(F.pad(x, (2, 0))))


def test_a_subclass_computing_more_than_a_convolution_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    model = Front(ActivatedCausalConv1d(6, 6, 3), _same)
    with pytest.raises(rnnstream.ExportError) as info:
        export(model, tmp_path / "m.onnx", batch_first=False)
    message = str(info.value)
    assert "ActivatedCausalConv1d 'front.0' computes more in its forward" in message
    assert "whole-sequence use" in message
