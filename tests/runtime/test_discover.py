"""Streaming stateful ONNX models that rnnstream did not write (no signature in the file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

import rnnstream
from rnnstream.runtime.discover import state_output_candidates
from tests.runtime.third_party import ints, save_graph, value_info
from tests.tolerances import assert_close

F, H = 4, 6
# The accumulator's weights: fixed, drawn from their own seed (tests draw their data per test).
W = np.random.default_rng(7).standard_normal((F, H)).astype(np.float32)


def accumulator(path: Path, state_in: str, state_out: str, extra_const: str | None = None):
    """``s' = 0.5 s + x W`` (broadcast over 2 rows), ``y = sum over rows of s'`` (Silero-like).

    x: [batch, F]; state: [2, batch, H]; optional scalar int64 input ``extra_const`` (like
    Silero VAD's sample rate) that scales the input.
    """
    f32 = TensorProto.FLOAT
    inputs = [
        value_info("input", f32, ["batch", F]),
        value_info(state_in, f32, [2, "batch", H]),
    ]
    nodes = [helper.make_node("MatMul", ["input", "W"], ["xw"])]
    xw = "xw"
    if extra_const:
        inputs.append(value_info(extra_const, TensorProto.INT64, []))
        nodes += [
            helper.make_node("Cast", [extra_const], ["k"], to=f32),
            helper.make_node("Mul", ["xw", "k"], ["xwk"]),
        ]
        xw = "xwk"
    nodes += [
        helper.make_node("Mul", [state_in, "half"], ["decayed"]),
        helper.make_node("Add", ["decayed", xw], [state_out]),
        helper.make_node("ReduceSum", [state_out, "axis0"], ["output"], keepdims=0),
    ]
    return save_graph(
        path,
        nodes,
        inputs,
        [
            value_info("output", f32, ["batch", H]),
            value_info(state_out, f32, [2, "batch", H]),
        ],
        {"W": W, "half": np.array(0.5, np.float32), "axis0": ints(0)},
    )


def reference(xs: np.ndarray, scale: float = 1.0) -> np.ndarray:
    s = np.zeros((2, 1, H), np.float32)
    ys = []
    for x in xs:
        s = 0.5 * s + scale * (x[None] @ W)[None]
        ys.append(s.sum(axis=0)[0])
    return np.stack(ys)


@pytest.mark.parametrize(
    "state_in, state_out",
    [
        ("h0", "hn"),
        ("state", "stateN"),
        ("h", "h_out"),
        ("state_in", "state_out"),
        ("past_state", "present_state"),
        ("cached_len", "new_cached_len"),
        ("memory", "memory_next"),
    ],
)
def test_state_pair_found_by_name(tmp_path, state_in, state_out):
    path = accumulator(tmp_path / "m.onnx", state_in, state_out)
    model = rnnstream.load(path)
    (state,) = model.signature.states
    assert (state.input, state.output, state.batch_axis) == (state_in, state_out, 1)
    assert model.signature.input.name == "input"
    xs = np.random.default_rng(1).standard_normal((20, F)).astype(np.float32)
    s = model.stream()
    assert_close(np.stack([s.step(x) for x in xs]), reference(xs))


def test_constants_are_pinned_like_a_sample_rate(tmp_path):
    path = accumulator(tmp_path / "vad.onnx", "state", "stateN", extra_const="sr")
    guessed = rnnstream.load(path)  # a sample rate left out: 16000, recorded as a guess
    assert guessed.signature.source["guessed"] == {"constants": {"sr": 16000}}
    x = np.random.default_rng(4).standard_normal(F).astype(np.float32)
    assert_close(guessed.stream().step(x), reference(x[None], 16000.0)[0])
    model = rnnstream.load(path, constants={"sr": 3})
    assert "guessed" not in model.signature.source
    xs = np.random.default_rng(2).standard_normal((10, F)).astype(np.float32)
    s = model.stream()
    assert_close(np.stack([s.step(x) for x in xs]), reference(xs, 3.0))
    pool = model.pool()
    ids = [pool.open() for _ in range(3)]
    for x in xs:
        out = pool.step(dict.fromkeys(ids, x))
    assert_close(out[ids[2]], reference(xs, 3.0)[-1])


def test_unconventional_names_are_paired_by_order_as_a_guess(tmp_path):
    path = accumulator(tmp_path / "odd.onnx", "memory_a", "memory_b")
    guessed = rnnstream.load(path)
    assert guessed.signature.source["guessed"] == {"state_map": {"memory_a": "memory_b"}}
    model = rnnstream.load(path, state_map={"memory_a": "memory_b"})
    assert "guessed" not in model.signature.source
    xs = np.random.default_rng(3).standard_normal((5, F)).astype(np.float32)
    s = model.stream()
    assert_close(np.stack([s.step(x) for x in xs]), reference(xs))
    with pytest.raises(rnnstream.SignatureError, match="'nope' is not an output"):
        rnnstream.load(path, state_map={"memory_a": "nope"})


def rnn_time_major(path: Path) -> Path:
    """ONNX's own RNN operator: X [time, batch, F], state h [1, batch, H] -> Y, h_out."""
    f32 = TensorProto.FLOAT
    r = (np.random.default_rng(4).standard_normal((1, H, H)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("RNN", ["X", "W", "R", "", "", "h"], ["Y4", "h_out"], hidden_size=H),
        helper.make_node("Squeeze", ["Y4", "one"], ["Y"]),
    ]
    return save_graph(
        path,
        nodes,
        [
            value_info("X", f32, ["seq_len", "batch_size", F]),
            value_info("h", f32, [1, "batch_size", H]),
        ],
        [
            value_info("Y", f32, ["seq_len", "batch_size", H]),
            value_info("h_out", f32, [1, "batch_size", H]),
        ],
        {"W": W.T[None].copy(), "R": r, "one": ints(1)},
    )


def test_time_major_third_party_model_steps_and_feeds(tmp_path):
    model = rnnstream.load(rnn_time_major(tmp_path / "rnn.onnx"))
    sig = model.signature
    assert (sig.input.batch_axis, sig.input.time_axis) == (1, 0)
    assert (sig.outputs[0].batch_axis, sig.outputs[0].time_axis) == (1, 0)
    xs = np.random.default_rng(5).standard_normal((3, 12, F)).astype(np.float32)  # [batch, time, F]
    stepped = model.stream(batch=3)
    ys_step = np.stack([stepped.step(xs[:, t]) for t in range(12)], axis=1)
    chunked = model.stream(batch=3)
    ys_chunk = np.concatenate([chunked.feed(xs[:, :5]), chunked.feed(xs[:, 5:])], axis=1)
    assert_close(ys_step, ys_chunk)
    assert ys_step.shape == (3, 12, H)


def test_candidates_cover_the_common_conventions():
    assert state_output_candidates("h0")[0] == "hn"
    assert "stateN" in state_output_candidates("state")
    assert "present_key" in state_output_candidates("past_key")
    assert "h_out" in state_output_candidates("h")
