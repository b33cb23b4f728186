"""Stateful ONNX files as projects write them with ``torch.onnx.export`` load without help.

Each file is exported at test time from a tiny PyTorch model with the names and axes a project
picked (or none): all sizes fixed at the example's ``[1, 1, F]``, only the batch dynamic, states
dynamic while the input is not, states exported with a fixed batch, time-major token ids,
channels-first ``[B, F, T]`` features, several heads, a bidirectional layer, and the dynamo
exporter's stale output shapes and external weights. Each is loaded with no state map and no
axes, streamed by ``step`` and ``feed`` (and a pool where the batch can grow) and compared with a
hand-written onnxruntime loop carrying the state; what cannot stream a single step is refused
naming the shape to pass.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import rnnstream
from rnnstream.errors import InputError, SignatureError
from tests.runtime.third_party import (
    assert_step_and_feed_match,
    assert_steps_match,
    exported_once,
    ort_loop,
    outputs_by_name,
    random_frames,
)
from tests.tolerances import KERNELS, assert_close

F, H, V = 6, 5, 13


class LstmHeads(nn.Module):
    """forward(x, h, c) -> (scores, value, h, c), batch first."""

    def __init__(self, layers: int = 2) -> None:
        super().__init__()
        self.rnn = nn.LSTM(F, H, layers, batch_first=True)
        self.scores, self.value = nn.Linear(H, 3), nn.Linear(H, 1)

    def forward(self, x, h, c):
        y, (h, c) = self.rnn(x, (h, c))
        return self.scores(y), self.value(y), h, c


class FoldedBatch(nn.Module):
    """A traced ``x.view(1, -1, F)``: rows of a larger batch become time steps."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.GRU(F, H, batch_first=True), nn.Linear(H, 2)

    def forward(self, x, h0):
        y, hn = self.rnn(x.view(1, -1, F), h0)
        return self.head(y), hn


class TokensTimeMajor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.rnn, self.out = nn.Embedding(V, F), nn.GRU(F, H, 2), nn.Linear(H, V)

    def forward(self, tokens, hidden):
        y, hidden = self.rnn(self.embed(tokens), hidden)
        return self.out(y), hidden


class ChannelsFirst(nn.Module):
    """Mel features ``[B, F, T]`` through a pointwise Conv1d and a GRU, logits ``[B, 2, T]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.rnn, self.head = (
            nn.Conv1d(F, F, 1),
            nn.GRU(F, H, batch_first=True),
            nn.Linear(H, 2),
        )

    def forward(self, mel, h):
        y, h = self.rnn(self.conv(mel).transpose(1, 2), h)
        return self.head(y).transpose(1, 2), h


class Bidirectional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(F, H, batch_first=True, bidirectional=True)

    def forward(self, x, h0):
        return self.rnn(x, h0)


def _dynamic(names: dict[str, dict[int, str]]) -> dict:
    return {"dynamic_axes": names}


LSTM_NAMES = {"input_names": ["x", "h0", "c0"], "output_names": ["scores", "value", "hn", "cn"]}
BATCH = {n: {1: "batch"} for n in ("h0", "c0", "hn", "cn")}


@dataclass(frozen=True)
class Case:
    """A model, how a project exported it, and what loading the file must decide."""

    module: Callable[[], nn.Module]
    example: Callable[[], tuple]
    export: dict
    layout: str  # the model's input axes: B batch, T time, F a feature
    axes: str  # what info shows for the stream input
    pairs: dict[str, str]
    pool: str = ""  # "" when a pool batches it, else the start of its refusal
    probe: str = "  probe   "  # what info's probe line says
    dynamo: bool = False
    tokens: bool = False


def _lstm_example(batch: int, time: int) -> Callable[[], tuple]:
    return lambda: (torch.randn(batch, time, F), torch.zeros(2, batch, H), torch.zeros(2, batch, H))


CASES = {
    # torch.onnx.export(model, (x, h, c), path) with the example [1, 1, F]: nothing dynamic
    "all_fixed": Case(
        LstmHeads,
        _lstm_example(1, 1),
        LSTM_NAMES,
        "BTF",
        "batch axis 0 (name), time axis 1 (shape, fixed at 1)",
        {"h0": "hn", "c0": "cn"},
        pool="has a fixed batch (input 'x' [1, 1, 6] at axis 0)",
        probe="no dynamic input axis to probe; sizes fixed at export: a step takes [6]",
    ),
    # dynamic_axes on the batch only: one time step per run, any number of rows
    "batch_only": Case(
        LstmHeads,
        _lstm_example(2, 1),
        {**LSTM_NAMES, **_dynamic({"x": {0: "batch"}, **BATCH})},
        "BTF",
        "batch axis 0 (probe), time axis 1 (shape, fixed at 1)",
        {"h0": "hn", "c0": "cn"},
    ),
    # the states' batch dynamic, the input's forgotten
    "states_dynamic_input_fixed": Case(
        LstmHeads,
        _lstm_example(1, 1),
        {**LSTM_NAMES, **_dynamic(BATCH)},
        "BTF",
        "batch axis 0 (name), time axis 1 (shape, fixed at 1)",
        {"h0": "hn", "c0": "cn"},
        pool="has a fixed batch (input 'x' [1, 1, 6] at axis 0)",
    ),
    # the input's batch and time dynamic, the states' forgotten: a batch of 1 only
    "states_fixed_input_dynamic": Case(
        LstmHeads,
        _lstm_example(1, 3),
        {**LSTM_NAMES, **_dynamic({"x": {0: "N", 1: "T"}, "scores": {0: "N", 1: "T"}})},
        "BTF",
        "batch axis 0 (name), time axis 1 (probe)",
        {"h0": "hn", "c0": "cn"},
        pool="has a fixed batch (state 'h0' [2, 1, 5] at axis 1)",
    ),
    # dynamic_axes name a batch the graph folds into time: held at 1, never silently mixed
    "batch_folded_into_time": Case(
        FoldedBatch,
        lambda: (torch.randn(1, 3, F), torch.zeros(1, 1, H)),
        {
            "input_names": ["x", "h0"],
            "output_names": ["y", "hn"],
            **_dynamic({"x": {0: "batch", 1: "time"}, "h0": {1: "batch"}, "hn": {1: "batch"}}),
        },
        "BTF",
        "batch axis 0 (name, held at 1: its rows fold into time steps), time axis 1 (probe)",
        {"h0": "hn"},
        pool="has a fixed batch (input 'x' [1, 'time', 6] at axis 0)",
    ),
    "tokens_time_major": Case(
        TokensTimeMajor,
        lambda: (torch.randint(0, V, (3, 2)), torch.zeros(2, 2, H)),
        {
            "input_names": ["tokens", "hidden"],
            "output_names": ["logits", "hidden_n"],
            **_dynamic({"tokens": {0: "seq", 1: "batch"}, "hidden": {1: "batch"}}),
        },
        "TB",
        "batch axis 1 (probe), time axis 0 (probe)",
        {"hidden": "hidden_n"},
        tokens=True,
    ),
    "channels_first": Case(
        ChannelsFirst,
        lambda: (torch.randn(2, F, 3), torch.zeros(1, 2, H)),
        {
            "input_names": ["mel", "h"],
            "output_names": ["logits", "h_out"],
            **_dynamic({"mel": {0: "batch", 2: "frames"}, "h": {1: "batch"}}),
        },
        "BFT",
        "batch axis 0 (probe), time axis 2 (probe)",
        {"h": "h_out"},
    ),
    # torch.onnx.export(dynamo=True): weights in model.onnx.data, outputs declared [batch, 3, 3]
    "dynamo_stale_output_shape": Case(
        LstmHeads,
        _lstm_example(2, 3),
        {**LSTM_NAMES, "dynamic_shapes": ({0: "batch", 1: "seq"}, {1: "batch"}, {1: "batch"})},
        "BTF",
        "batch axis 0 (probe), time axis 1 (probe)",
        {"h0": "hn", "c0": "cn"},
        dynamo=True,
    ),
}


def _export(case: Case, path: Path) -> Path:
    torch.manual_seed(0)
    module = case.module().eval()
    kwargs = dict(case.export)
    if case.dynamo:
        kwargs["dynamic_shapes"] = tuple(
            {axis: torch.export.Dim(name, min=1, max=64) for axis, name in dims.items()}
            for dims in kwargs["dynamic_shapes"]
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, case.example(), str(path), dynamo=case.dynamo, opset_version=18, **kwargs
        )
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Callable[[str], Path]:
    """Each case's file, exported once for the module."""
    folder = tmp_path_factory.mktemp("torch_exports")
    return exported_once(folder, lambda name, path: _export(CASES[name], path))


def _frames(case: Case, steps: int, seed: int) -> list[np.ndarray]:
    """One frame per step as a caller passes it (an int64 token id, or ``[F]``)."""
    return random_frames(steps, seed, (F,), V if case.tokens else None, np.int64)


def _model_step(case: Case, frame: np.ndarray) -> np.ndarray:
    """A frame in the model's layout for one sequence and one step (batch and time of 1)."""
    return np.asarray(frame).reshape([F if axis == "F" else 1 for axis in case.layout])


def _loop(path: Path, case: Case, frames: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The hand-written onnxruntime loop: one run per step, the new states fed back."""
    args = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()
    states = {
        a.name: np.zeros([d if isinstance(d, int) else 1 for d in a.shape], np.float32)
        for a in args[1:]
    }
    steps = [{args[0].name: _model_step(case, frame)} for frame in frames]
    outs = ort_loop(path, steps, states, case.pairs)
    return [{n: v for n, v in out.items() if n not in case.pairs.values()} for out in outs]


@pytest.mark.parametrize("name", sorted(CASES))
def test_loads_without_help_and_streams_like_an_onnxruntime_loop(name, exported, cli):
    case, path = CASES[name], exported(name)
    model = rnnstream.load(path)
    assert {s.input: s.output for s in model.signature.states} == case.pairs
    frames = _frames(case, 7, seed=1)
    want = _loop(path, case, frames)

    assert_step_and_feed_match(model, frames, want)

    text = cli("-q", "info", str(path)).output
    assert f"stream input {model.signature.input.name}: {case.axes}\n" in text
    assert "  size    " in text  # the graph's cost, external weights included
    assert case.probe in text


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_pool_batches_the_rows_or_says_why_not(name, exported):
    case, path = CASES[name], exported(name)
    model = rnnstream.load(path)
    if case.pool:
        with pytest.raises(SignatureError, match=re.escape(case.pool)):
            model.pool()
        with pytest.raises(SignatureError, match="fixed batch of 1; cannot hold 2 rows"):
            model.stream(batch=2)
        return
    names = [o.name for o in model.signature.outputs]
    rows = [_frames(case, 4, seed=2), _frames(case, 4, seed=3)]
    pool = model.pool()
    ids = [pool.open(), pool.open()]
    ticks = [pool.step(dict(zip(ids, step))) for step in zip(*rows)]
    for stream_id, frames in zip(ids, rows):
        assert_steps_match(
            [outputs_by_name(t[stream_id], names) for t in ticks], _loop(path, case, frames)
        )


def test_a_bidirectional_layer_takes_whole_chunks(tmp_path, cli):
    """One run over 2 steps differs from 2 runs of 1: the time axis is a chunk, never split,
    so a single frame is refused and a chunk gives what onnxruntime gives for that chunk."""
    case = Case(
        Bidirectional,
        lambda: (torch.randn(2, 3, F), torch.zeros(2, 2, H)),
        {
            "input_names": ["x", "h0"],
            "output_names": ["y", "hn"],
            **_dynamic({n: {0: "batch", 1: "time"} for n in ("x", "y")} | {"h0": {1: "batch"}}),
        },
        "BTF",
        "batch axis 0 (probe), time axis none (probe), "
        "frame axis 1 (probe, steps mixed: a step is a whole chunk)",
        {"h0": "hn"},
    )
    path = _export(case, tmp_path / "bigru.onnx")
    text = cli("-q", "info", str(path)).output
    assert f"stream input x: {case.axes}\n" in text
    stream = rnnstream.load(path).stream()
    chunks = [
        np.random.default_rng(seed).uniform(-1, 1, (n, F)).astype(np.float32)
        for seed, n in ((4, 3), (5, 2))
    ]
    stream.step(chunks[0])
    before = stream.state
    with pytest.raises(InputError, match=r"input 'x': expected shape \['time', 6\], got \[6\]"):
        stream.step(chunks[1][0])
    np.testing.assert_array_equal(stream.state["h0"], before["h0"])
    got = stream.step(chunks[1])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, H), np.float32)
    for chunk in chunks:
        y, state = session.run(None, {"x": chunk[None], "h0": state})
    assert_close(got, y[0], KERNELS)


class Gru(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.GRU(F, H, batch_first=True), nn.Linear(H, 2)

    def forward(self, x, h):
        y, h = self.rnn(x, h)
        return self.head(y), h


def test_an_example_batch_fixed_at_export_is_one_window_per_step(tmp_path, cli):
    """``torch.onnx.export(model, (x[2, 3, F], h))`` with no names and no dynamic axes: nothing
    can be probed, so a step is the whole fixed input, and info says so."""
    path = tmp_path / "gru.onnx"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Gru().eval(), (torch.randn(2, 3, F), torch.zeros(1, 2, H)), str(path))
    text = cli("-q", "info", str(path)).output
    assert "no dynamic input axis to probe; sizes fixed at export: a step takes [2, 3, 6]" in text
    assert "h -> getitem_1: float32 [1, 2, 5], batch axis None (paired by shape, a guess" in text
    model = rnnstream.load(path)
    stream = model.stream()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x_name, h_name = (a.name for a in session.get_inputs())
    state = np.zeros((1, 2, H), np.float32)
    rng = np.random.default_rng(6)
    for _ in range(3):
        x = rng.uniform(-1, 1, (2, 3, F)).astype(np.float32)
        y, state = session.run(None, {x_name: x, h_name: state})
        assert_close(stream.step(x), y, KERNELS)
    with pytest.raises(InputError, match=r"expected shape \[2, 3, 6\], got \[6\]"):
        stream.step(np.zeros(F, np.float32))
