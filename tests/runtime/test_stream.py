"""Stream behaviour on real exported models: step / feed / reset / state, and input checking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import rnnstream
from rnnstream.export import ParitySettings, export
from tests.tolerances import PARITY, assert_close

INPUT, HIDDEN, LAYERS, VOCAB = 3, 5, 2, 10


class TokenLSTM(nn.Module):
    """Embedding -> LSTM -> Linear: takes int64 token ids."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 4)
        self.rnn = nn.LSTM(4, 8, batch_first=True)
        self.head = nn.Linear(8, VOCAB)

    def forward(self, x: torch.Tensor, state: tuple | None = None) -> tuple:
        y, state = self.rnn(self.emb(x), state)
        return self.head(y), state


@pytest.fixture(scope="module")
def lstm(tmp_path_factory) -> tuple[nn.LSTM, Path]:
    """A small time-major 2-layer LSTM and its exported file."""
    torch.manual_seed(0)
    module = nn.LSTM(INPUT, HIDDEN, LAYERS).eval()
    path = tmp_path_factory.mktemp("lstm") / "lstm.onnx"
    export(module, path, parity=ParitySettings(steps=100))
    return module, path


@pytest.fixture(scope="module")
def model(lstm) -> rnnstream.Model:
    return rnnstream.load(lstm[1])


@pytest.fixture(scope="module")
def token_model(tmp_path_factory) -> rnnstream.Model:
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("tok") / "tok.onnx"
    export(TokenLSTM(), path, parity=ParitySettings(steps=100))
    return rnnstream.load(path)


def frames(steps: int, seed: int = 0, batch: int | None = None) -> np.ndarray:
    shape = (steps, INPUT) if batch is None else (batch, steps, INPUT)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def torch_forward(module: nn.LSTM, x_bt: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``x_bt`` is ``[B, T, F]``; returns ``y`` as ``[B, T, H]`` and the final states."""
    with torch.no_grad():
        y, (h, c) = module(torch.from_numpy(x_bt).transpose(0, 1))
    return y.transpose(0, 1).numpy(), {"h0": h.numpy(), "c0": c.numpy()}


def assert_state_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# --- step / feed ----------------------------------------------------------------------------


def test_single_stream_step_takes_a_frame(lstm, model) -> None:
    module, _ = lstm
    stream = model.stream()
    assert stream.batch is None
    xs = frames(6)
    ys = []
    for frame in xs:
        y = stream.step(frame)
        assert y.shape == (HIDDEN,)
        assert y.dtype == np.float32
        ys.append(y)
    y_ref, state_ref = torch_forward(module, xs[None])
    assert_close(np.stack(ys), y_ref[0], PARITY)
    for name, value in stream.state.items():
        assert value.shape == (LAYERS, 1, HIDDEN)
        assert_close(value, state_ref[name], PARITY)


def test_batched_stream_step_takes_batch_of_frames(lstm, model) -> None:
    module, _ = lstm
    stream = model.stream(batch=3)
    xs = frames(5, seed=1, batch=3)
    ys = []
    for t in range(5):
        y = stream.step(xs[:, t])
        assert y.shape == (3, HIDDEN)
        ys.append(y)
    y_ref, state_ref = torch_forward(module, xs)
    assert_close(np.stack(ys, axis=1), y_ref, PARITY)
    for name, value in stream.state.items():
        assert value.shape == (LAYERS, 3, HIDDEN)
        assert_close(value, state_ref[name], PARITY)


def test_feed_equals_steps(model) -> None:
    xs = frames(9, seed=2)
    stepped = model.stream()
    ys_step = np.stack([stepped.step(f) for f in xs])
    fed = model.stream()
    ys_feed = np.concatenate([fed.feed(xs[:4]), fed.feed(xs[4:5]), fed.feed(xs[5:])])
    assert ys_feed.shape == (9, HIDDEN)
    assert_close(ys_feed, ys_step)
    for name, value in fed.state.items():
        assert_close(value, stepped.state[name])


def test_batched_feed_equals_steps(model) -> None:
    xs = frames(6, seed=3, batch=2)
    stepped = model.stream(batch=2)
    ys_step = np.stack([stepped.step(xs[:, t]) for t in range(6)], axis=1)
    fed = model.stream(batch=2)
    ys_feed = fed.feed(xs)
    assert ys_feed.shape == (2, 6, HIDDEN)
    assert_close(ys_feed, ys_step)
    for name, value in fed.state.items():
        assert_close(value, stepped.state[name])


def test_streams_of_one_model_are_independent(model) -> None:
    a, b = model.stream(), model.stream()
    xs = frames(4, seed=4)
    for f in xs:
        a.step(f)
    fresh = model.stream()
    np.testing.assert_array_equal(b.step(xs[0]), fresh.step(xs[0]))


def test_token_stream_takes_ids(token_model) -> None:
    single = token_model.stream()
    y = single.step(3)
    assert y.shape == (VOCAB,)
    assert single.feed(np.array([1, 2, 3])).shape == (3, VOCAB)
    batched = token_model.stream(batch=2)
    assert batched.step(np.array([1, 4])).shape == (2, VOCAB)
    assert batched.feed(np.array([[1, 2], [3, 4]])).shape == (2, 2, VOCAB)


# --- reset / state --------------------------------------------------------------------------


def test_reset_returns_to_zero_state(model) -> None:
    xs = frames(5, seed=5)
    stream = model.stream()
    for f in xs:
        stream.step(f)
    assert any(v.any() for v in stream.state.values())
    stream.reset()
    for value in stream.state.values():
        assert value.shape == (LAYERS, 1, HIDDEN)
        assert not value.any()
    new = model.stream()
    for f in xs:
        np.testing.assert_array_equal(stream.step(f), new.step(f))
    assert_state_equal(stream.state, new.state)


def test_state_get_returns_copies(model) -> None:
    xs = frames(4, seed=6)
    stream, twin = model.stream(), model.stream()
    stream.step(xs[0])
    twin.step(xs[0])
    snapshot = stream.state
    for value in snapshot.values():
        value[...] = 123.0
    snapshot["extra"] = np.zeros(1)
    assert_state_equal(stream.state, twin.state)
    np.testing.assert_array_equal(stream.step(xs[1]), twin.step(xs[1]))


def test_state_set_restores_a_snapshot(model) -> None:
    xs = frames(6, seed=7)
    stream = model.stream()
    for f in xs[:3]:
        stream.step(f)
    snapshot = stream.state
    first = [stream.step(f) for f in xs[3:]]
    stream.state = snapshot
    # The setter copies: changing the dict given to it afterwards has no effect.
    for value in snapshot.values():
        value[...] = 0.0
    again = [stream.step(f) for f in xs[3:]]
    np.testing.assert_array_equal(np.stack(again), np.stack(first))


@pytest.mark.parametrize(
    ("bad", "names"),
    [
        (lambda s: {"h0": s["h0"]}, ["c0", "h0"]),
        (lambda s: {**s, "x0": s["h0"]}, ["x0"]),
        (lambda s: {"h0": s["h0"], "h1": s["c0"]}, ["h1"]),
        (lambda s: {**s, "c0": np.zeros((LAYERS, 2, HIDDEN), np.float32)}, ["'c0'", "[2, 2, 5]"]),
        (lambda s: {**s, "h0": np.zeros((HIDDEN,), np.float32)}, ["'h0'", "[5]"]),
        (lambda s: {**s, "h0": s["h0"].astype(np.float64)}, ["'h0'", "float64"]),
    ],
    ids=["missing", "extra", "renamed", "shape-c0", "rank-h0", "dtype-h0"],
)
def test_state_set_validates(model, bad, names) -> None:
    stream = model.stream()
    stream.step(frames(1, seed=8)[0])
    before = stream.state
    with pytest.raises(rnnstream.InputError) as info:
        stream.state = bad(before)
    for name in names:
        assert name in str(info.value)
    assert_state_equal(stream.state, before)


# --- rejected inputs ------------------------------------------------------------------------


def _assert_rejected_keeps_state(stream: rnnstream.Stream, call, match: str) -> None:
    before = stream.state
    with pytest.raises(rnnstream.InputError, match=match):
        call()
    assert_state_equal(stream.state, before)


def test_wrong_frame_shape(model) -> None:
    stream = model.stream()
    stream.step(frames(1, seed=9)[0])
    with pytest.raises(rnnstream.InputError) as info:
        stream.step(np.zeros(INPUT + 1, np.float32))
    message = str(info.value)
    assert "'x'" in message
    assert "expected shape [3]" in message
    assert "got [4]" in message
    _assert_rejected_keeps_state(
        stream, lambda: stream.step(np.zeros((1, INPUT), np.float32)), r"'x'.*\[3\].*\[1, 3\]"
    )
    _assert_rejected_keeps_state(
        stream, lambda: stream.feed(np.zeros((4, 2), np.float32)), r"'x'.*\[4, 2\]"
    )


def test_wrong_batch(model) -> None:
    stream = model.stream(batch=2)
    _assert_rejected_keeps_state(
        stream, lambda: stream.step(np.zeros((3, INPUT), np.float32)), r"'x'.*\[2, 3\].*\[3, 3\]"
    )
    _assert_rejected_keeps_state(
        stream, lambda: stream.step(np.zeros(INPUT, np.float32)), r"'x'.*\[2, 3\].*got \[3\]"
    )


def test_rejected_input_leaves_outputs_unchanged(model) -> None:
    xs = frames(3, seed=10)
    stream, twin = model.stream(), model.stream()
    stream.step(xs[0])
    twin.step(xs[0])
    with pytest.raises(rnnstream.InputError):
        stream.step(np.zeros(INPUT + 2, np.float32))
    with pytest.raises(rnnstream.InputError):
        stream.feed(np.zeros((0, INPUT), np.float32))
    np.testing.assert_array_equal(stream.feed(xs[1:]), twin.feed(xs[1:]))


def test_float_into_token_model(token_model) -> None:
    stream = token_model.stream()
    stream.step(2)
    _assert_rejected_keeps_state(stream, lambda: stream.step(2.0), r"'x'.*int64.*float64")
    _assert_rejected_keeps_state(
        stream, lambda: stream.feed(np.array([1.0, 2.0], np.float32)), r"'x'.*int64.*float32"
    )


def test_non_numeric_input(model) -> None:
    stream = model.stream()
    _assert_rejected_keeps_state(stream, lambda: stream.step(np.array(["a", "b", "c"])), "'x'")


@pytest.mark.parametrize("batch", [None, 2])
def test_empty_chunk(model, batch) -> None:
    stream = model.stream(batch=batch)
    chunk = frames(0) if batch is None else frames(0, batch=batch)
    _assert_rejected_keeps_state(stream, lambda: stream.feed(chunk), "empty")


def test_invalid_batch_size(model) -> None:
    with pytest.raises(rnnstream.InputError, match="batch"):
        model.stream(batch=0)


def test_out_of_range_token_id(token_model) -> None:
    stream = token_model.stream()
    stream.step(1)
    _assert_rejected_keeps_state(stream, lambda: stream.step(VOCAB + 5), r"'x'.*\[0, 10\)")
    _assert_rejected_keeps_state(stream, lambda: stream.feed(np.array([1, -1])), r"'x'.*\[0, 10\)")


def test_non_finite_frame(model) -> None:
    stream = model.stream()
    stream.step(frames(1, seed=12)[0])
    bad = np.array([0.0, np.nan, 1.0], np.float32)
    _assert_rejected_keeps_state(stream, lambda: stream.step(bad), r"'x'.*NaN")
    chunk = frames(3, seed=13)
    chunk[2, 0] = np.inf
    _assert_rejected_keeps_state(stream, lambda: stream.feed(chunk), r"'x'.*infinity")


# --- loading --------------------------------------------------------------------------------


def test_load_truncated_file(lstm, tmp_path: Path) -> None:
    data = lstm[1].read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(rnnstream.ModelFileError) as info:
        rnnstream.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"this is not an onnx model\n"], ids=["empty", "text"])
def test_load_non_onnx_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(content)
    with pytest.raises(rnnstream.ModelFileError) as info:
        rnnstream.load(path)
    assert str(path) in str(info.value)


def test_load_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "model.onnx"
    with pytest.raises(rnnstream.ModelFileError) as info:
        rnnstream.load(path)
    assert str(path) in str(info.value)


def _save_plain_relu(path: Path) -> None:
    """A valid ONNX model with no rnnstream metadata and no state: y = relu(x)."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        "plain",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", "time", 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", "time", 3])],
    )
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)])
    proto.ir_version = 10
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


def test_load_without_signature_or_state(tmp_path: Path) -> None:
    path = tmp_path / "plain.onnx"
    _save_plain_relu(path)
    with pytest.raises(rnnstream.SignatureError, match="state"):
        rnnstream.load(path)


def test_load_without_signature_finds_state_pairs_by_name(lstm, tmp_path: Path) -> None:
    proto = onnx.load(lstm[1])
    del proto.metadata_props[:]
    path = tmp_path / "stripped.onnx"
    onnx.save(proto, path)
    stripped = rnnstream.load(path)
    sig = stripped.signature
    assert sig.parity is None
    assert [(s.input, s.output) for s in sig.states] == [("h0", "hn"), ("c0", "cn")]
    original = rnnstream.load(lstm[1])
    xs = frames(6, seed=14, batch=2)
    a, b = original.stream(batch=2), stripped.stream(batch=2)
    np.testing.assert_array_equal(b.step(xs[:, 0]), a.step(xs[:, 0]))
    np.testing.assert_array_equal(b.feed(xs[:, 1:]), a.feed(xs[:, 1:]))
    assert_state_equal(b.state, a.state)


@pytest.mark.parametrize(
    "value",
    ["{not json", '{"format": 99}', '{"format": 1, "input": {}}'],
    ids=["not-json", "future-format", "missing-fields"],
)
def test_load_with_malformed_signature(lstm, tmp_path: Path, value: str) -> None:
    proto = onnx.load(lstm[1])
    onnx.helper.set_model_props(proto, {rnnstream.runtime.METADATA_KEY: value})
    path = tmp_path / "bad_signature.onnx"
    onnx.save(proto, path)
    with pytest.raises(rnnstream.SignatureError):
        rnnstream.load(path)


def test_load_from_bytes(lstm) -> None:
    path = lstm[1]
    model = rnnstream.load(path.read_bytes())
    xs = frames(3, seed=11)
    from_file = rnnstream.load(path).stream()
    from_bytes = model.stream()
    np.testing.assert_array_equal(from_bytes.feed(xs), from_file.feed(xs))
