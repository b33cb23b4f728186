"""Bad calls to the Python API raise InputError / ModelFileError and change no state."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import rnnstream
from rnnstream.errors import InputError, ModelFileError
from rnnstream.runtime.signature import METADATA_KEY
from tests.runtime.graphs import (
    VOCAB,
    F,
    save_token_rnn,
    save_two_heads,
    two_heads_graph,
    two_heads_signature,
)


@pytest.fixture(scope="module")
def frames_model(tmp_path_factory) -> rnnstream.Model:
    path = tmp_path_factory.mktemp("api") / "two_heads.onnx"
    return rnnstream.load(save_two_heads(path, two_heads_signature()))


@pytest.fixture(scope="module")
def tokens_model(tmp_path_factory) -> rnnstream.Model:
    return rnnstream.load(save_token_rnn(tmp_path_factory.mktemp("api") / "tokens.onnx"))


def stepped(model: rnnstream.Model, batch: int | None = None) -> rnnstream.Stream:
    """A stream with a non-zero state (so a wrongly applied call would show)."""
    stream = model.stream(batch)
    rows = () if batch is None else (batch,)
    if model.signature.num_tokens:
        stream.step(np.full(rows, 3, dtype=np.int64))
    else:
        stream.step(np.random.default_rng(0).standard_normal((*rows, F)).astype(np.float32))
    return stream


def assert_same_state(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> None:
    assert before.keys() == after.keys()
    for name in before:
        assert before[name].tobytes() == after[name].tobytes(), name


@pytest.mark.parametrize(
    ("ids", "shown"), [([[0, -1, 2]], "-1..2"), ([[0, VOCAB, 1]], f"0..{VOCAB}")]
)
def test_run_checks_token_ids(tokens_model, ids, shown):
    with pytest.raises(InputError, match=rf"token ids must be in \[0, {VOCAB}\), got {shown}"):
        tokens_model.run(np.array(ids, dtype=np.int64))


@pytest.mark.parametrize(
    ("x", "message"),
    [
        ([[1, 2], [3]], "not a rectangular array"),
        (5, "expected shape"),
        (np.array([[True, False]]), "expected int64, got bool"),
        (np.array([[1.0, 2.0]]), "expected int64, got float64"),
    ],
)
def test_run_refuses_malformed_ids(tokens_model, x, message):
    with pytest.raises(InputError, match=message):
        tokens_model.run(x)


def test_run_refuses_nan_frames(frames_model):
    x = np.zeros((1, 4, F), np.float32)
    x[0, 2, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        frames_model.run(x)


@pytest.mark.parametrize("batch", [None, 2])
def test_ragged_lists_are_refused_by_step_and_feed(frames_model, batch):
    stream = stepped(frames_model, batch)
    before = stream.state
    ragged = [[0.1, 0.2, 0.3], [0.4]] if batch else [[0.1, 0.2, 0.3], [0.4, 0.5]]
    with pytest.raises(InputError, match="not a rectangular array"):
        stream.step(ragged if batch else [0.1, [0.2], 0.3])
    with pytest.raises(InputError, match="not a rectangular array"):
        stream.feed([ragged, ragged] if batch else ragged)
    assert_same_state(before, stream.state)


def test_pool_refuses_ragged_frames_and_non_dict_ticks(frames_model):
    pool = frames_model.pool()
    a, b = pool.open(), pool.open()
    frame = np.ones(F, np.float32)
    pool.step({a: frame, b: frame})
    before = {i: pool.state(i) for i in (a, b)}
    with pytest.raises(InputError, match=rf"stream {b}: .*not a rectangular array"):
        pool.step({a: frame, b: [0.1, [0.2, 0.3], 0.4]})
    with pytest.raises(InputError, match=rf"stream {a}: .*expected float32, got bool"):
        pool.step({a: np.ones(F, bool)})
    with pytest.raises(InputError, match="inputs must be a dict"):
        pool.step([frame, frame])
    with pytest.raises(InputError, match="is not open"):
        pool.step({"a": frame})
    for i in (a, b):
        assert_same_state(before[i], pool.state(i))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "state must be a dict"),
        ([np.zeros((1, 1, 5), np.float32)], "state must be a dict"),
        ({"h_in": [[[0.0] * 5], [0.0]]}, "not a rectangular array"),
        ({"h_in": np.full((1, 1, 5), np.nan, np.float32)}, "NaN or infinity"),
        ({"h_in": np.full((1, 1, 5), -np.inf, np.float32)}, "NaN or infinity"),
        ({"h_in": np.zeros((1, 1, 5), np.float64)}, r"expected float32\[1, 1, 5\]"),
        ({"h_out": np.zeros((1, 1, 5), np.float32)}, "keys"),
    ],
)
def test_bad_state_is_refused_and_changes_nothing(frames_model, value, message):
    stream = stepped(frames_model)
    before = stream.state
    with pytest.raises(InputError, match=message):
        stream.state = value
    assert_same_state(before, stream.state)


def test_save_state_writes_exactly_the_path_given(frames_model, tmp_path):
    stream = stepped(frames_model)
    path = tmp_path / "state.bin"
    stream.save_state(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]
    fresh = frames_model.stream()
    fresh.load_state(path)
    assert_same_state(stream.state, fresh.state)
    with pytest.raises(InputError, match="cannot write state file"):
        stream.save_state(tmp_path / "missing" / "state.npz")


def _empty(path):
    path.write_bytes(b"")


def _truncated(stream):
    def write(path):
        stream.save_state(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return write


def _npy(path):
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))


def _nan_state(stream):
    def write(path):
        stream.save_state(path)
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["h_in"][...] = np.nan
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    return write


@pytest.mark.parametrize("kind", ["empty", "truncated", "npy", "directory", "missing", "nan"])
def test_unreadable_state_file_is_refused_and_changes_nothing(frames_model, tmp_path, kind):
    stream = stepped(frames_model)
    before = stream.state
    path = tmp_path / "state.npz"
    writers = {
        "empty": _empty,
        "truncated": _truncated(stream),
        "npy": _npy,
        "directory": lambda p: p.mkdir(),
        "missing": lambda p: None,
        "nan": _nan_state(stepped(frames_model)),
    }
    writers[kind](path)
    message = "NaN or infinity" if kind == "nan" else f"state file {path}"
    with pytest.raises(InputError, match=message):
        stream.load_state(path)
    assert_same_state(before, stream.state)


@pytest.mark.parametrize("source", [42, None, 3.5, ["model.onnx"]])
def test_load_of_something_that_is_no_path_is_refused(source):
    with pytest.raises(ModelFileError, match="expected a path or the file's bytes"):
        rnnstream.load(source)


@pytest.mark.parametrize("batch", ["3", True, 2.5, 0, -1, np.float32(2)])
def test_stream_batch_must_be_a_positive_integer(frames_model, batch):
    with pytest.raises(InputError, match="batch must be"):
        frames_model.stream(batch=batch)


def test_numpy_integer_batch_is_accepted(frames_model):
    out = frames_model.stream(batch=np.int64(2)).step(np.zeros((2, F), np.float32))
    assert out["hidden"].shape == (2, 5)


@pytest.mark.parametrize("token", [True, np.bool_(False), np.array([True])])
def test_booleans_are_not_token_ids(tokens_model, token):
    stream = stepped(tokens_model)
    before = stream.state
    with pytest.raises(InputError, match="expected int64, got bool"):
        stream.step(token)
    assert_same_state(before, stream.state)


def test_booleans_are_not_frames(frames_model):
    stream = stepped(frames_model)
    before = stream.state
    with pytest.raises(InputError, match="expected float32, got bool"):
        stream.step(np.array([True, False, True]))
    assert_same_state(before, stream.state)


def test_out_of_range_uint64_id_shows_its_real_value(tokens_model):
    stream = stepped(tokens_model)
    before = stream.state
    with pytest.raises(InputError, match=str(2**64 - 1)):
        stream.step(np.uint64(2**64 - 1))
    with pytest.raises(InputError, match=str(2**63)):
        stream.feed(np.array([1, 2**63], dtype=np.uint64))
    assert_same_state(before, stream.state)


@pytest.mark.parametrize("rows", [[[0], [1, 0]], [0.0, 1.0], None, "01"])
def test_reorder_refuses_malformed_rows(frames_model, rows):
    stream = stepped(frames_model, batch=2)
    before = stream.state
    with pytest.raises(InputError, match="rows"):
        stream.reorder(rows)
    assert_same_state(before, stream.state)


def test_a_frame_beyond_float32_is_refused_as_such(frames_model):
    stream = stepped(frames_model)
    before = stream.state
    with pytest.raises(InputError, match="values beyond float32's range"):
        stream.step(np.array([1.0, 1e300, 0.0]))
    assert_same_state(before, stream.state)


@pytest.mark.parametrize("value", ["abc", [1.0, [2.0]], np.zeros(3)])
def test_a_constant_that_is_no_value_of_its_input_is_refused(tmp_path, value):
    model = two_heads_graph()
    model.graph.input.append(helper.make_tensor_value_info("gain", TensorProto.FLOAT, []))
    helper.set_model_props(model, {METADATA_KEY: json.dumps(two_heads_signature())})
    onnx.save(model, tmp_path / "gain.onnx")
    with pytest.raises(InputError, match="constant 'gain': not a float32"):
        rnnstream.load(tmp_path / "gain.onnx", constants={"gain": value})
