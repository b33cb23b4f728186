"""State pairs from evidence: files whose names do not pair their states, or pair them wrongly.

Exported at test time with ``torch.onnx.export`` under the names projects give (or generated
ones), with the new states returned in another order than the states were taken: tf2onnx-style
``Identity_*:0`` outputs with ``c`` before ``h``, a projected LSTM (``h`` narrower than ``c``),
two GRU layers whose states come back last-layer first, and every naming convention of
:mod:`rnnstream.runtime.discover` with the outputs reversed. Each loads without help and streams
like a hand-written onnxruntime loop; a file whose names contradict its runs is refused naming
the pairs, and one where nothing tells the states apart is paired in order and marked a guess.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

import rnnstream
from rnnstream.errors import SignatureError
from tests.runtime.third_party import save_graph, value_info
from tests.tolerances import KERNELS, assert_close

F, H, P = 6, 5, 3


class LstmReturnsCFirst(nn.Module):
    """``forward(x, h, c) -> (y, c, h)``: the new states in the other order."""

    def __init__(self, proj_size: int = 0) -> None:
        super().__init__()
        self.rnn = nn.LSTM(F, H, batch_first=True, proj_size=proj_size)

    def forward(self, x, h, c):
        y, (h, c) = self.rnn(x, (h, c))
        return y, c, h


class TwoGrus(nn.Module):
    """Two stacked GRU layers, each with its own state; the new states come back reversed."""

    def __init__(self, second: int = H) -> None:
        super().__init__()
        self.first = nn.GRU(F, H, batch_first=True)
        self.second = nn.GRU(H, second, batch_first=True)

    def forward(self, x, a, b):
        y, a = self.first(x, a)
        y, b = self.second(y, b)
        return y, b, a


class GruStateFirst(nn.Module):
    """``forward(x, h) -> (h, y)``: the new state before the sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(F, H, batch_first=True)

    def forward(self, x, h):
        y, h = self.rnn(x, h)
        return h, y


def _export(module: nn.Module, states: list, names: tuple, path: Path, sequence: int = 0) -> Path:
    """``module`` exported batch-first; ``outputs[sequence]`` is the sequence output."""
    inputs, outputs = names
    dynamic = {inputs[0]: {0: "batch", 1: "time"}, outputs[sequence]: {0: "batch", 1: "time"}}
    dynamic |= {n: {1: "batch"} for n in [*inputs[1:], *outputs] if n not in dynamic}
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (torch.zeros(1, 3, F), *states),
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    return path


def _loop(path: Path, frames: np.ndarray, pairs: dict[str, str]) -> list[np.ndarray]:
    """One onnxruntime run per frame, the states fed back by ``pairs`` (the truth)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    args = session.get_inputs()
    names = [o.name for o in session.get_outputs()]
    states = {
        a.name: np.zeros([1 if isinstance(d, str) else d for d in a.shape], np.float32)
        for a in args[1:]
    }
    sequence = next(n for n in names if n not in pairs.values())
    ys = []
    for frame in frames:
        out = dict(zip(names, session.run(None, {args[0].name: frame[None, None], **states})))
        states = {i: out[o] for i, o in pairs.items()}
        ys.append(out[sequence].reshape(-1))
    return ys


def _frames(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (6, F)).astype(np.float32)


def _streams_like_the_loop(path: Path, pairs: dict[str, str], **load) -> rnnstream.Model:
    model = rnnstream.load(path, **load)
    assert {s.input: s.output for s in model.signature.states} == pairs
    frames = _frames(seed=1)
    stream = model.stream()
    for frame, want in zip(frames, _loop(path, frames, pairs)):
        assert_close(np.asarray(stream.step(frame)).reshape(-1), want, KERNELS)
    chunk = model.stream().feed(frames)
    assert_close(np.asarray(chunk).reshape(len(frames), -1), np.stack(_loop(path, frames, pairs)))
    return model


EVIDENCE = {
    # tf2onnx-style generated names, c returned before h: same shapes, so carried to decide
    "identity_c_before_h": (
        lambda: LstmReturnsCFirst(),
        [torch.zeros(1, 1, H), torch.zeros(1, 1, H)],
        (["input_1:0", "state_h:0", "state_c:0"], ["Identity:0", "Identity_1:0", "Identity_2:0"]),
        {"state_h:0": "Identity_2:0", "state_c:0": "Identity_1:0"},
        "probe",
    ),
    # the state returned first: at one step the sequence has its shape too, carrying tells
    "state_returned_first": (
        GruStateFirst,
        [torch.zeros(1, 1, H)],
        (["x", "hidden"], ["output_0", "output_1"]),
        {"hidden": "output_0"},
        "probe",
    ),
    # layers of two widths: a is [1, B, 5], b is [1, B, 3]; the run confirms they are states
    "layers_of_two_widths": (
        lambda: TwoGrus(second=P),
        [torch.zeros(1, 1, H), torch.zeros(1, 1, P)],
        (["x", "onnx::GRU_1", "onnx::GRU_2"], ["output_0", "output_1", "output_2"]),
        {"onnx::GRU_1": "output_2", "onnx::GRU_2": "output_1"},
        "probe",
    ),
    # two layers' states of one shape, returned last layer first
    "two_layers_reversed": (
        TwoGrus,
        [torch.zeros(1, 1, H), torch.zeros(1, 1, H)],
        (["x", "a", "b"], ["y", "out1", "out2"]),
        {"a": "out2", "b": "out1"},
        "probe",
    ),
}


@pytest.mark.parametrize("name", sorted(EVIDENCE))
def test_states_the_names_miss_are_paired_by_evidence(name, tmp_path, cli):
    module, states, names, pairs, how = EVIDENCE[name]
    assert how == "probe"
    sequence = names[1].index(next(o for o in names[1] if o not in pairs.values()))
    path = _export(module(), states, names, tmp_path / f"{name}.onnx", sequence)
    model = _streams_like_the_loop(path, pairs)
    assert model.signature.source["paired"] == dict.fromkeys(pairs, how)
    assert "guessed" not in model.signature.source
    text = cli("-q", "info", str(path)).output
    for state_in, state_out in pairs.items():
        assert f"state   {state_in} -> {state_out}: " in text
    assert "(paired by a probe: carried, two steps equal one run of two)" in text


NAMED = [
    (("cache_a", "cache_b"), ("new_cache_b", "new_cache_a")),
    (("cached_a", "cached_b"), ("new_cached_b", "new_cached_a")),
    (("a_prev", "b_prev"), ("b_next", "a_next")),
    (("in_a", "in_b"), ("out_b", "out_a")),
    (("a_in", "b_in"), ("b_out", "a_out")),
    (("past_a", "past_b"), ("present_b", "present_a")),
    (("h0", "g0"), ("gn", "hn")),
    (("state", "memory"), ("memoryN", "stateN")),
    (("h", "g"), ("next_g", "next_h")),
]


@pytest.mark.parametrize("state_names, output_names", NAMED, ids=[n[0][0] for n in NAMED])
def test_names_pair_states_whatever_the_output_order(state_names, output_names, tmp_path):
    """TwoGrus returns (y, b's new state, a's new state): the names follow that order."""
    path = _export(
        TwoGrus(),
        [torch.zeros(1, 1, H), torch.zeros(1, 1, H)],
        (["x", *state_names], ["y", *output_names]),
        tmp_path / "named.onnx",
    )
    a, b = state_names
    model = _streams_like_the_loop(path, {a: output_names[1], b: output_names[0]})
    assert "paired" not in model.signature.source and "guessed" not in model.signature.source


def test_names_the_runs_contradict_are_refused_naming_the_pairs(tmp_path):
    """The file names b's new state ``hn`` and a's ``gn`` (h0 -> hn, g0 -> gn by name): carried
    that way, two steps differ from one run of two; the other way they match."""
    path = _export(
        TwoGrus(),
        [torch.zeros(1, 1, H), torch.zeros(1, 1, H)],
        (["x", "h0", "g0"], ["y", "hn", "gn"]),
        tmp_path / "lying_names.onnx",
    )
    with pytest.raises(
        SignatureError,
        match=r"names pair the states h0 -> hn, g0 -> gn, but carrying them through two steps "
        r"matches one run of two only as h0 -> gn, g0 -> hn; .*--state IN=OUT",
    ):
        rnnstream.load(path)
    _streams_like_the_loop(path, {"h0": "gn", "g0": "hn"}, state_map={"h0": "gn", "g0": "hn"})


def test_a_named_output_of_another_shape_at_run_time_is_refused(tmp_path):
    """``hn`` tiled to twice ``h``'s width by a repeat count computed at run time, so neither
    the graph nor onnxruntime's inference declares its width: the name pairs it with ``h``, the
    run contradicts it."""
    nodes = [
        helper.make_node("Add", ["x", "h"], ["h_new"]),
        helper.make_node("Shape", ["x"], ["x_shape"], start=0, end=1),
        helper.make_node("Add", ["x_shape", "x_shape"], ["twice"]),  # 2 at batch 1
        helper.make_node("Concat", ["one", "twice"], ["repeats"], axis=0),
        helper.make_node("Tile", ["h_new", "repeats"], ["hn"]),
        helper.make_node("Identity", ["h_new"], ["y"]),
    ]
    f32 = TensorProto.FLOAT
    path = save_graph(
        tmp_path / "wide_hn.onnx",
        nodes,
        [value_info("x", f32, ["batch", H]), value_info("h", f32, ["batch", H])],
        [value_info("y", f32, ["batch", H]), value_info("hn", f32, ["batch", None])],
        {"one": np.array([1], np.int64)},
    )
    assert ort.InferenceSession(str(path)).get_outputs()[1].shape[1] != H
    with pytest.raises(
        SignatureError,
        match=r"state 'h' pairs with output 'hn' by name, but a run gives 'hn' as "
        r"float32\[1, 10\] where 'h' is float32\[1, 5\]",
    ):
        rnnstream.load(path)


def _window_cell(path: Path, reverse: bool, width: int = H) -> Path:
    """A cell with no time axis (one window per run), states ``s1`` ``[batch, 5]`` and ``s2``
    ``[batch, width]``, generated output names: with one width nothing tells ``s1`` from ``s2``
    but the order of the outputs."""
    f32 = TensorProto.FLOAT
    first, second = ("o2", "o1") if reverse else ("o1", "o2")
    nodes = [
        helper.make_node("Add", ["x", "s1"], [first]),
        helper.make_node("Tanh", ["s2"], [second]),
        helper.make_node("ReduceSum", [first, "axis1"], ["y"], keepdims=1),
    ]
    shapes = {"x": H, "s1": H, "s2": width, "y": 1, first: H, second: width}
    return save_graph(
        path,
        nodes,
        [value_info(n, f32, ["batch", shapes[n]]) for n in ("x", "s1", "s2")],
        [value_info(n, f32, ["batch", shapes[n]]) for n in ("y", "o1", "o2")],
        {"axis1": np.array([1], np.int64)},
    )


def test_states_told_apart_by_shape_only_are_a_marked_guess(tmp_path, cli):
    """Without a time axis no run shows the inputs are states: shape says which output."""
    path = _window_cell(tmp_path / "widths.onnx", reverse=True, width=P)
    model = rnnstream.load(path)
    assert {s.input: s.output for s in model.signature.states} == {"s1": "o2", "s2": "o1"}
    assert model.signature.source["paired"] == {"s1": "shape", "s2": "shape"}
    assert model.signature.source["guessed"]["state_map"] == {"s1": "o2", "s2": "o1"}
    assert "(paired by shape, a guess: the one output" in cli("info", str(path)).output


def test_states_nothing_tells_apart_are_paired_in_order_as_a_marked_guess(tmp_path, cli):
    path = _window_cell(tmp_path / "cell.onnx", reverse=False)
    model = rnnstream.load(path)
    assert model.signature.source["guessed"]["state_map"] == {"s1": "o1", "s2": "o2"}
    assert "(paired by order: a guess; --state IN=OUT says)" in cli("info", str(path)).output

    # the same file with the outputs the other way round: the user says it
    path = _window_cell(tmp_path / "reversed.onnx", reverse=True)
    text = cli("info", str(path), "--state", "s1=o2", "--state", "s2=o1").output
    assert "state   s1 -> o2: " in text and "guess" not in text
    model = rnnstream.load(path, state_map={"s1": "o2", "s2": "o1"})
    stream, rng = model.stream(), np.random.default_rng(3)
    s1, s2 = np.zeros(H, np.float32), np.zeros(H, np.float32)
    for _ in range(3):
        x = rng.uniform(-1, 1, H).astype(np.float32)
        s1, s2 = x + s1, np.tanh(s2)
        assert_close(stream.step(x), s1.sum(keepdims=True), KERNELS)
