"""Files in float16, float64 and bfloat16, and files mixing dtypes, load as a user would expect.

What onnxruntime's CPU kernels run streams, with frames converted to the input's declared dtype
and each state kept in its own (float16 GRU/LSTM exports, a float64 cell of plain operators, a
float32 input with a float16 state); what they cannot run is refused at load, naming the tensors
and their dtype (torch's float64 GRU and LSTM, a bfloat16 LSTM, a bfloat16 input), never at the
first step.
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
from rnnstream.errors import InputError, ModelFileError, SignatureError
from tests.runtime.third_party import save_graph, value_info
from tests.tolerances import KERNELS, assert_close

F, H = 6, 5
FLOAT16_ULPS = 10 * float(np.finfo(np.float16).eps)  # 9.8e-3
ONNX_TYPES = {
    np.float16: "tensor(float16)",
    np.float32: "tensor(float)",
    np.float64: "tensor(double)",
}


class Recurrent(nn.Module):
    """A batch-first LSTM or GRU: ``forward(x, h0[, c0]) -> (y, hn[, cn])``."""

    def __init__(self, cell: str) -> None:
        super().__init__()
        self.cell = cell
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(F, H, batch_first=True)

    def forward(self, x, *state):
        if self.cell == "lstm":
            y, (h, c) = self.rnn(x, state)
            return y, h, c
        y, h = self.rnn(x, state[0])
        return y, h


class HalfState(nn.Module):
    """float32 frames and outputs, the state kept in float16 (a half-converted export)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(F, H, batch_first=True)

    def forward(self, x, h0):
        y, h = self.rnn(x, h0.float())
        return y, h.half()


def _export(module: nn.Module, dtypes: tuple, path: Path) -> Path:
    """``module`` exported with the input ``[batch, T, F]`` and states ``[1, batch, H]``."""
    names = ["x", "h0", "c0"][: len(dtypes)]
    outs = ["y", "hn", "cn"][: len(dtypes)]
    states = [torch.zeros(1, 1, H, dtype=d) for d in dtypes[1:]]
    example = (torch.zeros(1, 3, F, dtype=dtypes[0]), *states)
    dynamic = {"x": {0: "batch", 1: "T"}, "y": {0: "batch", 1: "T"}}
    dynamic |= {n: {1: "batch"} for n in names[1:] + outs[1:]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            example,
            str(path),
            input_names=names,
            output_names=outs,
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    return path


def _ort_steps(path: Path, frames: list[np.ndarray], states: dict[str, np.ndarray]) -> list:
    """The hand-written loop: each frame cast to the file's input dtype, the states fed back."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = session.get_inputs()[0]
    dtype = next(t for t, name in ONNX_TYPES.items() if name == x.type)
    pairs = {"h0": "hn", "c0": "cn", "h_in": "h_out"}
    names = [o.name for o in session.get_outputs()]
    results = []
    for frame in frames:
        shape = [1] * (len(x.shape) - 1) + [frame.shape[-1]]
        out = dict(
            zip(names, session.run(None, {x.name: frame.astype(dtype).reshape(shape), **states}))
        )
        states = {i: out[o] for i, o in pairs.items() if i in states}
        results.append(out)
    return results


def _frames(steps: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, F).astype(np.float32) for _ in range(steps)]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_float16_files_stream_with_frames_cast_and_float16_state(cell, tmp_path):
    torch.manual_seed(0)
    module = Recurrent(cell).half()
    dtypes = (torch.float16,) * (3 if cell == "lstm" else 2)
    path = _export(module, dtypes, tmp_path / f"{cell}16.onnx")
    model = rnnstream.load(path)
    assert (model.signature.input.batch_axis, model.signature.input.time_axis) == (0, 1)
    assert {s.dtype for s in model.signature.states} == {"float16"}
    frames = _frames(6, seed=1)
    zeros = {s.input: np.zeros((1, 1, H), np.float16) for s in model.signature.states}
    want = _ort_steps(path, frames, zeros)

    stream = model.stream()
    for frame, w in zip(frames, want):  # float32 frames, cast to the file's float16
        y = stream.step(frame)
        assert y.dtype == np.float16
        assert_close(y.astype(np.float32), w["y"].reshape(H).astype(np.float32), KERNELS)
    assert all(v.dtype == np.float16 for v in stream.state.values())

    before = stream.state
    with pytest.raises(InputError, match="input 'x': contains values beyond float16's range"):
        stream.step(np.full(F, 1e5))
    for key, value in before.items():
        np.testing.assert_array_equal(stream.state[key], value)

    chunk = model.stream().feed(np.stack(frames))  # one run: float16 rounds in its order
    np.testing.assert_allclose(
        chunk.astype(np.float32),
        np.stack([w["y"].reshape(H) for w in want]).astype(np.float32),
        rtol=FLOAT16_ULPS,  # a chunk's kernel rounds in another order than 6 steps
        atol=FLOAT16_ULPS,
    )


def test_a_float16_state_beside_float32_frames_keeps_its_dtype(tmp_path):
    torch.manual_seed(0)
    path = _export(HalfState(), (torch.float32, torch.float16), tmp_path / "half_state.onnx")
    model = rnnstream.load(path)
    assert model.signature.input.dtype == "float32"
    assert [s.dtype for s in model.signature.states] == ["float16"]
    frames = _frames(5, seed=2)
    want = _ort_steps(path, frames, {"h0": np.zeros((1, 1, H), np.float16)})
    stream = model.stream()
    for frame, w in zip(frames, want):
        assert_close(stream.step(frame), w["y"].reshape(H), KERNELS)
    assert stream.state["h0"].dtype == np.float16
    np.testing.assert_array_equal(stream.state["h0"], want[-1]["hn"])
    with pytest.raises(InputError, match=r"state 'h0': expected float16\[1, 1, 5\], got float32"):
        stream.state = {"h0": np.zeros((1, 1, H), np.float32)}

    pool = model.pool()
    ids = [pool.open(), pool.open()]
    tick = pool.step({i: frames[0] for i in ids})
    for i in ids:
        assert_close(tick[i], want[0]["y"].reshape(H), KERNELS)
        assert pool.state(i)["h0"].dtype == np.float16


def _float64_cell(path: Path) -> Path:
    """An Elman cell of plain operators in float64 (MatMul, Add, Tanh run in double on CPU):
    ``x [batch, F]``, ``h_in -> h_out`` ``[batch, H]``, output ``y``."""
    rng = np.random.default_rng(3)
    w, r = rng.normal(0, 0.5, (F, H)), rng.normal(0, 0.5, (H, H))
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("MatMul", ["h_in", "R"], ["hr"]),
        helper.make_node("Add", ["xw", "hr"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["h_out"]),
        helper.make_node("Identity", ["h_out"], ["y"]),
    ]
    f64 = TensorProto.DOUBLE
    return save_graph(
        path,
        nodes,
        [value_info("x", f64, ["batch", F]), value_info("h_in", f64, ["batch", H])],
        [value_info("y", f64, ["batch", H]), value_info("h_out", f64, ["batch", H])],
        {"W": w, "R": r},
    )


def test_a_float64_file_onnxruntime_runs_streams_in_float64(tmp_path):
    path = _float64_cell(tmp_path / "cell64.onnx")
    model = rnnstream.load(path)
    assert model.signature.input.dtype == "float64"
    frames = _frames(5, seed=4)
    want = _ort_steps(path, frames, {"h_in": np.zeros((1, H))})
    stream = model.stream()
    for frame, w in zip(frames, want):
        y = stream.step(frame)  # float32 frames, converted to float64
        assert y.dtype == np.float64
        np.testing.assert_allclose(y, w["y"][0], rtol=1e-12, atol=1e-12)
    assert stream.state["h_in"].dtype == np.float64


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_float64_recurrent_operator_is_refused_at_load_naming_the_tensors(cell, tmp_path):
    module = Recurrent(cell).double()
    dtypes = (torch.float64,) * (3 if cell == "lstm" else 2)
    path = _export(module, dtypes, tmp_path / f"{cell}64.onnx")
    states = (
        "state 'h0' is float64, state 'c0' is float64"
        if cell == "lstm"
        else "state 'h0' is float64"
    )
    with pytest.raises(
        SignatureError,
        match=rf"{cell}64.onnx: input 'x' is float64, {states}, and onnxruntime cannot run the "
        rf"model in these types: {cell.upper()} operator does not support double.*float32",
    ):
        rnnstream.load(path)


def test_a_bfloat16_recurrent_operator_is_refused_at_load_naming_the_kernel(tmp_path):
    path = _export(Recurrent("lstm").bfloat16(), (torch.bfloat16,) * 3, tmp_path / "lstm_bf16.onnx")
    with pytest.raises(ModelFileError, match=r"onnxruntime has no LSTM kernel taking bfloat16"):
        rnnstream.load(path)


def test_a_bfloat16_input_is_refused_at_load_naming_it(tmp_path, cli):
    """The graph computes in float32 after a Cast, which onnxruntime runs; numpy cannot hold
    the bfloat16 frames the file asks for."""
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["xf", "h_in"], ["h_out"]),
        helper.make_node("Identity", ["h_out"], ["y"]),
    ]
    path = save_graph(
        tmp_path / "bf16_input.onnx",
        nodes,
        [
            value_info("x", TensorProto.BFLOAT16, ["batch", H]),
            value_info("h_in", TensorProto.FLOAT, ["batch", H]),
        ],
        [
            value_info("y", TensorProto.FLOAT, ["batch", H]),
            value_info("h_out", TensorProto.FLOAT, ["batch", H]),
        ],
        {},
    )
    with pytest.raises(
        SignatureError,
        match=r"input 'x' is tensor\(bfloat16\), a type this runtime does not stream",
    ):
        rnnstream.load(path)
    result = cli("info", str(path), ok=False)
    assert "input 'x' is tensor(bfloat16)" in result.output
    assert "Traceback" not in result.output
