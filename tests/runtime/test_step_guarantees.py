"""What ``Stream.step``'s short path (a frame copied into a buffer bound once, outputs copied out
of views of the bound outputs) must keep, across the class of models it serves: frame and token
models, time-major, batch-first and a layout with the batch last, one and several outputs, one
number a step, one stream, a batch of one and of three.

- a returned output is the caller's: the next step does not change it, and changing it does not
  change the stream (a model giving one number a step returns a 0-d array, a copy as well);
- frames written the many ways projects write them (float64, lists, tuples, numpy scalars,
  Python ints, int32/uint8 ids) step exactly as the model's own dtype does;
- every rejected step raises an ``InputError`` naming the input and changes no state, and the
  next good step is exactly a twin stream's (a half-copied frame never leaks into it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from torch import nn

import rnnstream
from rnnstream.errors import InputError
from rnnstream.export import ParitySettings, export
from rnnstream.runtime.signature import METADATA_KEY
from tests.runtime import graphs
from tests.tolerances import KERNELS, assert_close

FEATURES, HIDDEN, VOCAB = 4, 6, 9


class BatchFirstGRU(nn.Module):
    """A batch-first GRU with a linear head: frames ``[B, T, F]``."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(FEATURES, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, 3)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> tuple:
        y, h = self.rnn(x, h)
        return self.head(y), h


class TokenLSTM(nn.Module):
    """Embedding -> batch-first LSTM -> logits: int64 token ids ``[B, T]``."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 5)
        self.rnn = nn.LSTM(5, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, VOCAB)

    def forward(self, x: torch.Tensor, state: tuple | None = None) -> tuple:
        y, state = self.rnn(self.emb(x), state)
        return self.head(y), state


def _batch_last(path: Path) -> Path:
    """``graphs.two_heads`` behind a Transpose: its input is ``[time, F, batch]``, batch last,
    so one step's frame ``[B, F]`` is the transpose of the model's ``[1, F, B]``."""
    model = graphs.two_heads_graph()
    graph = model.graph
    graph.node.insert(0, helper.make_node("Transpose", ["x_tfb"], ["x"], perm=[0, 2, 1]))
    graph.input[0].CopyFrom(
        helper.make_tensor_value_info("x_tfb", onnx.TensorProto.FLOAT, ["time", graphs.F, "batch"])
    )
    signature = graphs.two_heads_signature()
    signature["input"].update(name="x_tfb", shape=["time", graphs.F, "batch"], batch_axis=2)
    helper.set_model_props(model, {METADATA_KEY: json.dumps(signature)})
    onnx.save(model, path)
    return path


def _scalar_per_step(path: Path) -> Path:
    """``graphs.two_heads`` with its score squeezed to ``[time, batch]``: one stream's step gives
    a 0-d array, the case where an index of the bound output is no view unless kept one."""
    model = graphs.two_heads_graph()
    graph = model.graph
    graph.node.append(helper.make_node("Squeeze", ["score", "axis2"], ["p"]))
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([2], np.int64), "axis2"))
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("p", onnx.TensorProto.FLOAT, ["time", "batch"]),
            helper.make_tensor_value_info("h_out", onnx.TensorProto.FLOAT, [1, "batch", graphs.H]),
        ]
    )
    signature = graphs.two_heads_signature()
    signature["outputs"] = [{**signature["outputs"][1], "name": "p", "shape": ["time", "batch"]}]
    helper.set_model_props(model, {METADATA_KEY: json.dumps(signature)})
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, rnnstream.Model]:
    tmp = tmp_path_factory.mktemp("guarantees")
    torch.manual_seed(3)
    export(BatchFirstGRU(), tmp / "gru.onnx", parity=ParitySettings(steps=20))
    torch.manual_seed(4)
    export(TokenLSTM(), tmp / "tokens.onnx", parity=ParitySettings(steps=20))
    return {
        "batch-first frames": rnnstream.load(tmp / "gru.onnx"),
        "time-major, two outputs": rnnstream.load(
            graphs.save_two_heads(tmp / "two.onnx", graphs.two_heads_signature())
        ),
        "batch last, two outputs": rnnstream.load(_batch_last(tmp / "last.onnx")),
        "token ids": rnnstream.load(tmp / "tokens.onnx"),
        "one number a step": rnnstream.load(_scalar_per_step(tmp / "scalar.onnx")),
    }


KINDS = [
    "batch-first frames",
    "time-major, two outputs",
    "batch last, two outputs",
    "token ids",
    "one number a step",
]
BATCHES = [None, 1, 3]


def _steps(model: rnnstream.Model, batch: int | None, steps: int, seed: int) -> list[np.ndarray]:
    """``steps`` well-formed frames (or ids) in the caller's layout and the model's dtype."""
    rng = np.random.default_rng(seed)
    sig = model.signature
    lead = () if batch is None else (batch,)
    if sig.num_tokens is not None:
        return [rng.integers(0, sig.num_tokens, lead).astype(sig.input.dtype) for _ in range(steps)]
    axes = (sig.input.batch_axis, sig.input.time_axis)
    frame = [d for a, d in enumerate(sig.input.shape) if a not in axes]
    return [rng.standard_normal((*lead, *frame)).astype(np.float32) for _ in range(steps)]


def _as_dict(output: object) -> dict[str, np.ndarray]:
    return dict(output) if isinstance(output, dict) else {"y": output}


def _assert_same(a: object, b: object) -> None:
    a, b = _as_dict(a), _as_dict(b)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _assert_state_equal(stream: rnnstream.Stream, state: dict[str, np.ndarray]) -> None:
    now = stream.state
    assert now.keys() == state.keys()
    for name in state:
        np.testing.assert_array_equal(now[name], state[name], err_msg=name)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_returned_output_is_the_callers(models, kind, batch) -> None:
    model = models[kind]
    stream, twin = model.stream(batch=batch), model.stream(batch=batch)
    frames = _steps(model, batch, 6, seed=10)
    kept = []
    for frame in frames[:3]:
        out = stream.step(frame)
        twin.step(frame)
        kept.append((out, {k: v.copy() for k, v in _as_dict(out).items()}))
    for frame in frames[3:]:
        for array in _as_dict(stream.step(frame)).values():
            array.fill(1e6)  # the caller writes into what it got back
        twin.step(frame)
    for out, copy in kept:  # later steps changed no earlier result
        _assert_same(out, copy)
    _assert_state_equal(stream, twin.state)
    _assert_same(stream.step(frames[0]), twin.step(frames[0]))


def test_one_number_a_step_comes_back_as_its_own_0d_array(models) -> None:
    model = models["one number a step"]
    frames = _steps(model, None, 3, seed=16)
    stream = model.stream()
    first, second = stream.step(frames[0]), stream.step(frames[1])
    assert isinstance(first, np.ndarray) and first.shape == () and second.shape == ()
    _, score = graphs.two_heads_reference(np.stack(frames[:2]))
    assert_close(np.stack([first, second]), score[:, 0], KERNELS)
    assert model.stream(batch=3).step(np.stack(frames)).shape == (3,)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("kind", KINDS)
def test_steps_match_one_chunk(models, kind, batch) -> None:
    """The short path's copy-in (and its transpose for a batch-last model) runs the frames the
    chunk path runs."""
    model = models[kind]
    frames = _steps(model, batch, 5, seed=11)
    stream = model.stream(batch=batch)
    stepped = [_as_dict(stream.step(f)) for f in frames]
    axis = 0 if batch is None else 1
    chunk = _as_dict(model.stream(batch=batch).feed(np.stack(frames, axis=axis)))
    for name, value in chunk.items():
        steps = np.stack([s[name] for s in stepped], axis=axis)
        assert_close(steps, value, KERNELS)


def test_the_batch_last_layout_steps_the_reference_recurrence(models) -> None:
    model = models["batch last, two outputs"]
    frames = _steps(model, 3, 6, seed=12)
    stream = model.stream(batch=3)
    outs = [stream.step(f) for f in frames]
    for row in range(3):
        hidden, score = graphs.two_heads_reference(np.stack([f[row] for f in frames]))
        assert_close(np.stack([o["hidden"][row] for o in outs]), hidden, KERNELS)
        assert_close(np.stack([o["score"][row] for o in outs]), score, KERNELS)


def _written_other_ways(frame: np.ndarray) -> list[object]:
    """``frame`` (the model's dtype) as projects also write it."""
    if frame.dtype.kind in "iu":
        ways: list[object] = [frame.astype(np.int32), frame.astype(np.uint8), frame.tolist()]
        if frame.ndim == 0:
            ways += [int(frame), np.int32(frame), np.int64(frame)]
        return ways
    as64 = frame.astype(np.float64)
    ways = [as64, as64.tolist(), tuple(as64.tolist()), np.asfortranarray(as64)]
    if frame.ndim == 2:
        ways.append(frame.T.copy().T)  # a non-contiguous view
    return ways


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("kind", KINDS)
def test_frames_written_other_ways_step_exactly_the_same(models, kind, batch) -> None:
    model = models[kind]
    frames = _steps(model, batch, 3, seed=13)
    reference = model.stream(batch=batch)
    want = [reference.step(f) for f in frames]
    for way in range(len(_written_other_ways(frames[0]))):
        stream = model.stream(batch=batch)
        for frame, w in zip(frames, want):
            _assert_same(stream.step(_written_other_ways(frame)[way]), w)


def _bad_inputs(model: rnnstream.Model, batch: int | None) -> list[tuple[object, str]]:
    """Bad steps for ``model`` and what the error says (after the input's name)."""
    good = _steps(model, batch, 1, seed=14)[0]
    bad: list[tuple[object, str]] = [
        ({"x": good}, "dict"),
        (np.array(["a"] * max(good.size, 1)).reshape(good.shape), "expected"),
        (np.zeros((*good.shape, 2), good.dtype), "expected shape"),
        (np.zeros((7, *good.shape), good.dtype), "expected shape"),
        (good.astype(bool), "expected"),
    ]
    if batch == 3:
        bad.append(([good[0].tolist(), [good[1].tolist()], good[2].tolist()], "rectangular"))
    if good.dtype.kind in "iu":
        n = model.signature.num_tokens
        high, low = good.copy(), good.copy()
        high.reshape(-1)[-1] = n
        low.reshape(-1)[0] = -1
        bad += [(high, rf"\[0, {n}\)"), (low, rf"\[0, {n}\)"), (good + 0.5, "expected int64")]
    else:
        for value, says in ((np.nan, "NaN"), (np.inf, "infinity"), (1e39, "beyond float32")):
            worse = good.astype(np.float64)
            worse.reshape(-1)[-1] = value
            bad.append((worse, says))
    return bad


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_rejected_step_changes_nothing(models, kind, batch) -> None:
    model = models[kind]
    stream, twin = model.stream(batch=batch), model.stream(batch=batch)
    frames = _steps(model, batch, 2 + len(_bad_inputs(model, batch)), seed=15)
    _assert_same(stream.step(frames[0]), twin.step(frames[0]))
    name = model.signature.input.name
    for (bad, says), frame in zip(_bad_inputs(model, batch), frames[1:]):
        before = stream.state
        with pytest.raises(InputError, match=f"input '{name}'.*{says}"):
            stream.step(bad)
        _assert_state_equal(stream, before)
        _assert_same(stream.step(frame), twin.step(frame))  # no trace of the rejected frame
