"""CRNN (rnnstream/models/crnn.py): causal convolutions + GRU/LSTM, trained by `rnnstream train
crnn`, exported with its convolution contexts as state and streamed against PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import rnnstream
from rnnstream.export import ParitySettings, export, quantize_file
from rnnstream.models import CRNN, CRNNConfig, Forecaster, load_checkpoint
from rnnstream.runtime import Model
from tests.conftest import invoke
from tests.tolerances import PARITY, assert_close

FEW_STEPS = ParitySettings(steps=64, chunk=5)


def _crnn(cell: str, batch_first: bool, seed: int = 2) -> CRNN:
    torch.manual_seed(seed)
    config = CRNNConfig(
        features=2,
        cell=cell,
        hidden_size=8,
        conv_channels=4,
        conv_layers=2,
        kernel_size=3,
        mean=(0.5, -1.0),
        scale=(2.0, 0.5),
        batch_first=batch_first,
    )
    return CRNN(config).eval()


@pytest.mark.parametrize(("cell", "batch_first"), [("gru", True), ("lstm", False)])
def test_a_crnn_streams_step_by_step_and_in_chunks_like_pytorch(
    tmp_path: Path, cell: str, batch_first: bool
) -> None:
    model = _crnn(cell, batch_first)
    report = export(model, tmp_path / "crnn.onnx", parity=FEW_STEPS)
    contexts = {s.input: s.shape for s in report.signature.states if "ctx" in s.input}
    # kernel 3, dilations 1 and 2: 2 and 4 past frames of each convolution's input.
    assert contexts == {"convs_0_ctx0": ("batch", 2, 2), "convs_1_ctx0": ("batch", 4, 4)}

    gen = torch.Generator().manual_seed(9)
    x = torch.randn(3, 21, 2, generator=gen)  # [batch, time, features]
    with torch.no_grad():
        if batch_first:
            want = model(x)[0].numpy()
        else:
            want = model(x.transpose(0, 1))[0].transpose(0, 1).numpy()
    stream = rnnstream.load(report.path).stream(batch=3)
    stepped = np.stack([stream.step(x[:, t].numpy()) for t in range(21)], axis=1)
    assert_close(stepped, want, PARITY)
    stream.reset()
    chunked = np.concatenate([stream.feed(x[:, t : t + 6].numpy()) for t in range(0, 21, 6)], 1)
    assert_close(chunked, want, PARITY)


def test_int8_crnn_keeps_parity_at_the_int8_tolerance(tmp_path: Path) -> None:
    model = _crnn("gru", batch_first=True)
    source = export(model, tmp_path / "crnn.onnx", parity=FEW_STEPS).path
    report = quantize_file(source, tmp_path / "crnn.int8.onnx", "int8", against=model)
    assert report.parity is not None and report.parity.passed
    assert report.signature.precision == "int8"
    names = [s.input for s in report.signature.states]
    assert names == ["h0", "convs_0_ctx0", "convs_1_ctx0"]
    # The int8 stream still reads its context: a frame fed after a spike differs from one fed
    # after silence for as many steps as the convolutions reach back (1 + 2 + 4 frames).
    stream = rnnstream.load(report.path).stream()
    after_spike = stream.feed(np.r_[np.full((1, 2), 50.0), np.zeros((3, 2))].astype(np.float32))
    stream.reset()
    after_zeros = stream.feed(np.zeros((4, 2), np.float32))
    assert np.abs(after_spike[-1] - after_zeros[-1]).max() > 1e-3


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("crnn")
    ckpt = folder / "crnn.safetensors"
    args = ["train", "crnn", "--conv-layers", "3", "--conv-channels", "6", "--kernel", "2"]
    args += ["--cell", "gru", "--hidden", "8", "--steps", "4", "--batch", "4", "-o", str(ckpt)]
    result = invoke(*args)
    assert "MAE" in result.output
    onnx_path = folder / "crnn.onnx"
    invoke("-q", "export", str(ckpt), "-o", str(onnx_path), "--steps", "100")
    return ckpt, onnx_path


def test_train_crnn_writes_a_crnn_that_exports_and_streams(trained: tuple[Path, Path]) -> None:
    ckpt, onnx_path = trained
    model = load_checkpoint(ckpt)
    assert isinstance(model, CRNN)
    assert (model.config.conv_layers, model.config.conv_channels) == (3, 6)
    assert model.config.receptive_field == 8  # 1 + 1 + 2 + 4
    loaded: Model = rnnstream.load(onnx_path)
    assert loaded.signature.kind == "forecaster"
    series = np.sin(np.arange(40, dtype=np.float32) / 5)[:, None]  # [time, 1]
    with torch.no_grad():
        want = model(torch.from_numpy(series)[None])[0][0].numpy()
    stream = loaded.stream()
    assert_close(np.stack([stream.step(frame) for frame in series]), want, PARITY)


def test_info_lists_the_context_states_with_their_sizes(trained: tuple[Path, Path], cli) -> None:
    out = cli("info", str(trained[1])).output
    assert "state   convs_0_ctx0 -> convs_0_ctxn: float32 ['batch', 1, 1], batch axis 0" in out
    assert "state   convs_1_ctx0 -> convs_1_ctxn: float32 ['batch', 6, 2], batch axis 0" in out
    assert "state   convs_2_ctx0 -> convs_2_ctxn: float32 ['batch', 6, 4], batch axis 0" in out


def test_train_crnn_help_and_a_forecaster_checkpoint_is_not_resumed(
    trained: tuple[Path, Path], cli, tmp_path: Path
) -> None:
    out = cli("train", "crnn", "--help").output
    for words in ("--conv-layers", "--kernel", "mackey-glass", "context state"):
        assert words in out
    forecaster = tmp_path / "f.safetensors"
    cli("-q", "train", "forecaster", "--hidden", "8", "--steps", "2", "-o", str(forecaster))
    assert isinstance(load_checkpoint(forecaster), Forecaster)
    result = cli("-q", "train", "crnn", "--steps", "4", "--resume", "-o", str(forecaster), ok=False)
    assert "the checkpoint holds a Forecaster, not a CRNN" in result.output


def test_config_round_trips_and_refuses_an_empty_front_end() -> None:
    config = CRNNConfig(features=3, conv_layers=1, conv_channels=5, kernel_size=4)
    assert CRNNConfig.from_json(config.to_json()) == config
    assert config.dilations == (1,) and config.receptive_field == 4
    with pytest.raises(ValueError, match="conv_layers"):
        CRNNConfig(conv_layers=0)


def test_the_shipped_crnn_verifies_and_streams_a_forecast_better_than_repeating() -> None:
    from rnnstream.assets import CRNN_CHECKPOINT, CRNN_ONNX
    from rnnstream.export import verify
    from rnnstream.train import load_series

    assert CRNN_ONNX.stat().st_size < 1_000_000 and CRNN_CHECKPOINT.stat().st_size < 1_000_000
    model = load_checkpoint(CRNN_CHECKPOINT)
    assert isinstance(model, CRNN)
    assert verify(CRNN_ONNX, model).passed
    loaded = rnnstream.load(CRNN_ONNX)
    assert [s.input for s in loaded.signature.states] == ["h0", "convs_0_ctx0", "convs_1_ctx0"]
    series = load_series("mackey-glass").validation  # [time, 1], after the training part
    stream = loaded.stream()
    predicted = np.concatenate([stream.feed(series[t : t + 50]) for t in range(0, 1000, 50)])
    errors = np.abs(predicted[50:-1] - series[51:1000])  # after a warm-up of 50 steps
    naive = np.abs(series[50:999] - series[51:1000])
    assert errors.mean() < naive.mean() / 4


def test_a_state_file_and_a_pool_row_carry_the_contexts(tmp_path: Path) -> None:
    from rnnstream.assets import CRNN_ONNX

    loaded = rnnstream.load(CRNN_ONNX)
    series = (np.sin(np.arange(60, dtype=np.float32) / 4) * 0.3 + 0.9)[:, None]
    stream = loaded.stream()
    stream.feed(series[:30])
    stream.save_state(tmp_path / "s.npz")
    after = stream.feed(series[30:])
    restored = loaded.stream()
    restored.load_state(tmp_path / "s.npz")
    assert_close(restored.feed(series[30:]), after)
    # A bad state (a context of the wrong size) is refused by name and changes nothing.
    before = restored.state
    bad = {**before, "convs_1_ctx0": np.zeros((1, 16, 3), np.float32)}
    with pytest.raises(rnnstream.InputError, match="convs_1_ctx0"):
        restored.state = bad
    for name, array in restored.state.items():
        np.testing.assert_array_equal(array, before[name])

    pool = loaded.pool()
    other, sid = pool.open(), pool.open()
    for t in range(30):
        pool.step({sid: series[t], other: series[59 - t]})
    stream.reset()
    stream.feed(series[:30])
    for name, array in stream.state.items():
        assert_close(pool.state(sid)[name], array)
