"""Conv2d front-ends with one time axis stream with their context as state; look-ahead is refused.

The models are CRNNs written the ways keyword spotters and speech enhancers write them: a channel
added with ``x.unsqueeze(1)``, time as the third or the last axis, causal padding trimmed or
``F.pad`` before the convolution, any padding and stride over frequency, conv → BatchNorm2d →
ReLU, pooling over frequency, then ``permute``/``transpose`` and ``flatten`` into a batch-first or
time-major GRU/LSTM. Each is exported, then stepped and fed in chunks against PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnnstream
from rnnstream.export import ParitySettings, export, quantize_file
from tests.export.streaming import (
    ModelSet,
    assert_pool_rows_match,
    assert_snapshot_restores,
    assert_steps_and_chunks_match,
    prepared,
    refusal,
    sequence,
    torch_batch_time,
)

BINS = 10  # frequency bins per frame


class TimeFreqKws(nn.Module):
    """``[B, T, F]`` → unsqueeze(1) → two Conv2d over ``[time, freq]`` (padding (2, 1) trimmed to
    T; the second strides 2 over frequency) with BatchNorm2d and ReLU → permute + flatten(2) →
    batch-first GRU → linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, (3, 3), padding=(2, 1))
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, (3, 3), stride=(1, 2), padding=(2, 1))
        self.bn2 = nn.BatchNorm2d(8)
        self.gru = nn.GRU(8 * 5, 16, batch_first=True)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.shape[1]
        h = x.unsqueeze(1)
        h = torch.relu(self.bn1(self.conv1(h)[:, :, :steps]))
        h = torch.relu(self.bn2(self.conv2(h)[:, :, :steps]))
        h = h.permute(0, 2, 1, 3).flatten(2)
        return self.fc(self.gru(h)[0])


class FreqTimeBlocks(nn.Module):
    """``[B, T, F]`` → transpose + unsqueeze(1) to ``[B, 1, freq, time]`` → ``F.pad`` on the left
    of time before each dilated Conv2d (freq padding 1) → ReLU → MaxPool2d over frequency →
    flatten(1, 2) → transpose → batch-first LSTM."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, (3, 3), padding=(1, 0))
        self.conv2 = nn.Conv2d(4, 4, (3, 2), padding=(1, 0), dilation=(1, 3))
        self.pool = nn.MaxPool2d((2, 1))
        self.lstm = nn.LSTM(4 * 5, 12, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2).unsqueeze(1)
        h = torch.relu(self.conv1(F.pad(h, (2, 0))))
        h = self.pool(torch.relu(self.conv2(F.pad(h, (3, 0)))))
        return self.lstm(h.flatten(1, 2).transpose(1, 2))[0]


class TimeMajorReflectFreq(nn.Module):
    """Time-major ``[T, B, F]`` → permute + unsqueeze(1) → Conv2d padded by reflection over
    frequency only (time padded with ``F.pad``) → GELU → transpose + flatten(2) → transpose to
    time-major → two-layer GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, (2, 3), padding=(0, 1), padding_mode="reflect")
        self.gru = nn.GRU(6 * BINS, 8, num_layers=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.permute(1, 0, 2).unsqueeze(1)
        h = F.gelu(self.conv(F.pad(h, (0, 0, 1, 0))))
        return self.gru(h.transpose(1, 2).flatten(2).transpose(0, 1))[0]


class DepthwiseSeparable(nn.Module):
    """A depthwise-separable Conv2d block (depthwise 3x3 causal in time, BatchNorm2d, ReLU,
    pointwise 1x1) → AdaptiveAvgPool2d over frequency → squeeze → batch-first GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, (2, 3), padding=(1, 1))
        self.block = nn.Sequential(
            nn.Conv2d(8, 8, (3, 3), padding=(2, 1), groups=8),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 1),
        )
        self.pool = nn.AdaptiveAvgPool2d((None, 1))
        self.gru = nn.GRU(8, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.shape[1]
        h = self.stem(x.unsqueeze(1))[:, :, :-1]
        h = self.block(h)[:, :, :steps]
        return self.gru(self.pool(h).squeeze(-1).transpose(1, 2))[0]


class SequentialBlocksViewReshape(nn.Module):
    """``x.view(b, 1, t, f)`` → ``nn.Sequential`` blocks of Conv2d (padding (2, 1)) → BatchNorm2d
    → ReLU, the time padding trimmed after the block → ``permute`` + ``contiguous().reshape(b, t,
    -1)`` → two-layer batch-first LSTM → head."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(1, 4, 3, padding=(2, 1)), nn.BatchNorm2d(4), nn.ReLU())
        self.lstm = nn.LSTM(4 * BINS, 8, num_layers=2, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, f = x.shape
        h = self.block(x.view(b, 1, t, f))[:, :, :t]
        h = h.permute(0, 2, 1, 3).contiguous().reshape(b, t, -1)
        return self.head(self.lstm(h)[0])


class ZeroPadModule(nn.Module):
    """``nn.ZeroPad2d((1, 1, 2, 0))`` (both sides of frequency, the left of time) before an
    unpadded Conv2d → ReLU → ``transpose(1, 2).flatten(2)`` → batch-first GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((1, 1, 2, 0))
        self.conv = nn.Conv2d(1, 4, 3)
        self.gru = nn.GRU(4 * BINS, 8, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(self.pad(x.unsqueeze(1))))
        return self.gru(h.transpose(1, 2).flatten(2))[0]


FEW_STEPS = ParitySettings(steps=48, chunk=7)

MODELS: dict[str, tuple[Callable[[], nn.Module], bool]] = {
    "time_freq_kws": (TimeFreqKws, True),
    "freq_time_blocks": (FreqTimeBlocks, True),
    "time_major_reflect_freq": (TimeMajorReflectFreq, False),
    "depthwise_separable": (DepthwiseSeparable, True),
    "sequential_blocks_view_reshape": (SequentialBlocksViewReshape, True),
    "zero_pad_module": (ZeroPadModule, True),
}
ZOO = ModelSet(MODELS, features=BINS, seed=5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return ZOO.export_all(tmp_path_factory.mktemp("conv2d"), FEW_STEPS, example=True)


@pytest.mark.parametrize("name", list(MODELS))
def test_steps_and_chunks_match_pytorch(exported: dict[str, Path], name: str) -> None:
    ZOO.assert_streams_like_pytorch(exported[name], name, batch=3, steps=19, chunk=4, seed=13)


def test_contexts_keep_the_frequency_axis_where_the_model_has_it(
    exported: dict[str, Path],
) -> None:
    def contexts(name: str) -> dict[str, tuple]:
        states = rnnstream.load(exported[name]).signature.states
        return {s.input: s.shape for s in states if "ctx" in s.input}

    # [batch, ch, time, freq]: (k_t - 1) * d_t frames of every frequency bin of the conv's input.
    assert contexts("time_freq_kws") == {
        "conv1_ctx0": ("batch", 1, 2, BINS),
        "conv2_ctx0": ("batch", 8, 2, BINS),
    }
    # [batch, ch, freq, time]: the context is the last axis; the dilation 3 reads 3 frames back.
    assert contexts("freq_time_blocks") == {
        "conv1_ctx0": ("batch", 1, BINS, 2),
        "conv2_ctx0": ("batch", 4, BINS, 3),
    }
    assert contexts("time_major_reflect_freq") == {"conv_ctx0": ("batch", 1, 1, BINS)}


def test_the_context_holds_the_last_frames_as_the_convolution_sees_them(
    exported: dict[str, Path],
) -> None:
    stream = rnnstream.load(exported["freq_time_blocks"]).stream()
    x = ZOO.sequence(batch=1, steps=6, batch_first=True, seed=2)[0].numpy()  # [time, bins]
    stream.feed(x)
    # conv1 reads [1, freq, time]: its context is the last two frames, frequency first.
    np.testing.assert_array_equal(stream.state["conv1_ctx0"][0, 0], x[-2:].T)


def test_pool_and_snapshots_carry_the_contexts(exported: dict[str, Path]) -> None:
    model, batch_first = ZOO.model("time_freq_kws")
    loaded = rnnstream.load(exported["time_freq_kws"])
    xs = [ZOO.sequence(1, 8, batch_first, seed=30 + i)[0].numpy() for i in range(2)]

    def alone(frames: np.ndarray) -> np.ndarray:
        return torch_batch_time(model, torch.from_numpy(frames)[None], batch_first)[0]

    # the second stream sits out every other tick
    assert assert_pool_rows_match(loaded.pool(), xs, lambda tick: tick % 2 == 0, alone) == [8, 4]
    assert_snapshot_restores(loaded.stream(), xs[0], split=4)


def test_int8_keeps_the_contexts_and_parity_at_the_int8_tolerance(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    model, _ = ZOO.model("time_freq_kws")
    path = tmp_path / "kws.int8.onnx"
    report = quantize_file(exported["time_freq_kws"], path, "int8", against=model)
    assert report.parity is not None and report.parity.passed  # int8 tolerance, vs PyTorch
    assert report.parity.reference == "pytorch"
    states = [s.input for s in rnnstream.load(path).signature.states]
    assert states == ["h0", "conv1_ctx0", "conv2_ctx0"]


# --- what cannot stream -----------------------------------------------------------------------


class Front2d(nn.Module):
    """``[B, T, F]`` → unsqueeze(1) → ``front`` over ``[time, freq]`` → ``after`` → GRU."""

    def __init__(self, front: nn.Module, after: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.front = nn.Sequential(front)
        self.after = after
        self.gru = nn.GRU(4 * BINS, 6, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.after(self.front(x.unsqueeze(1)))
        return self.gru(h.permute(0, 2, 1, 3).flatten(2))[0]


def _same(h: torch.Tensor) -> torch.Tensor:
    return h


def _freq_pooled(h: torch.Tensor) -> torch.Tensor:
    return h.repeat_interleave(2, dim=-1)  # the GRU's input size again


REFUSED = {
    "centred": (nn.Conv2d(1, 4, 3, padding=1), _same, "looks 1 step(s) ahead"),
    "same": (nn.Conv2d(1, 4, (5, 3), padding="same"), _same, "looks 2 step(s) ahead"),
    "time_stride": (
        nn.Conv2d(1, 4, (3, 3), padding=(2, 1), stride=(2, 1)),
        _same,
        "strides over time (stride 2)",
    ),
    "time_pool": (nn.MaxPool2d((2, 1)), lambda h: h.repeat(1, 4, 1, 1), "pools over time"),
    "pool_both": (nn.AvgPool2d(2), lambda h: _freq_pooled(h.repeat(1, 4, 1, 1)), "pools over"),
    "reflect_time": (
        nn.Conv2d(1, 4, 3, padding=(2, 1), padding_mode="reflect"),
        lambda h: h[:, :, :-2],
        "only zero padding streams",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_cannot_stream_is_refused_naming_the_module(tmp_path: Path, case: str) -> None:
    front, after, why = REFUSED[case]
    model = Front2d(front, after)
    message = refusal(model, tmp_path / "m.onnx", example=torch.randn(2, 3, BINS))
    assert "'front.0'" in message and why in message
    assert "whole-sequence use" in message  # the alternative


def test_a_conv3d_over_time_is_refused_naming_it(tmp_path: Path) -> None:
    class Video(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv3d(1, 2, (2, 1, 1), padding=(1, 0, 0))
            self.gru = nn.GRU(2 * 4, 4, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, 2, 2]
            h = self.conv(x.unsqueeze(1))[:, :, :-1].permute(0, 2, 1, 3, 4).flatten(2)
            return self.gru(h)[0]

    with pytest.raises(rnnstream.ExportError, match="Conv3d 'conv' slides over time"):
        export(Video(), tmp_path / "m.onnx", example=torch.randn(2, 3, 2, 2))


def test_without_an_example_a_conv2d_front_end_asks_for_one(tmp_path: Path) -> None:
    with pytest.raises(rnnstream.ExportError, match=r"Conv2d 'conv1'.*example="):
        export(TimeFreqKws(), tmp_path / "m.onnx")


# --- cell loops with a convolutional front-end ------------------------------------------------


class ConvLSTMCellLoop(nn.Module):
    """A causal Conv1d (``F.pad`` on the left) → ReLU, then an LSTMCell looped over time by hand
    (``for t in range(T)``, state from zeros), outputs stacked and sent through a head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(BINS, 8, 3, dilation=2)
        self.cell = nn.LSTMCell(8, 12)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, F]
        h = torch.relu(self.conv(F.pad(x.transpose(1, 2), (4, 0)))).transpose(1, 2)
        hx = cx = h.new_zeros(h.shape[0], 12)
        outputs = []
        for t in range(h.shape[1]):
            hx, cx = self.cell(h[:, t], (hx, cx))
            outputs.append(hx)
        return self.head(torch.stack(outputs, dim=1))


class Conv2dGRUCellLoop(nn.Module):
    """unsqueeze(1) → Conv2d over ``[time, freq]`` (trimmed) → BatchNorm2d → ReLU → flatten →
    a GRUCell over ``x.unbind(1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, (2, 3), stride=(1, 2), padding=(1, 1))
        self.norm = nn.BatchNorm2d(3)
        self.cell = nn.GRUCell(3 * 5, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.conv(x.unsqueeze(1))[:, :, :-1]))
        frames = h.transpose(1, 2).flatten(2)
        hx = frames.new_zeros(frames.shape[0], 6)
        outputs = []
        for frame in frames.unbind(1):
            hx = self.cell(frame, hx)
            outputs.append(hx)
        return torch.stack(outputs, dim=1)


@pytest.mark.parametrize("factory", [ConvLSTMCellLoop, Conv2dGRUCellLoop])
def test_a_cell_loop_with_a_conv_front_end_streams(tmp_path: Path, factory: type) -> None:
    model = prepared(factory, seed=6)
    example = sequence(2, 3, BINS, batch_first=True, seed=0)
    report = export(model, tmp_path / "loop.onnx", example=example, parity=FEW_STEPS)
    assert any(s.input == "conv_ctx0" for s in report.signature.states)
    x = sequence(batch=2, steps=17, features=BINS, batch_first=True, seed=21)
    stream = rnnstream.load(report.path).stream(batch=2)
    want = torch_batch_time(model, x, batch_first=True)
    assert_steps_and_chunks_match(stream, x.numpy(), want, chunk=6)
