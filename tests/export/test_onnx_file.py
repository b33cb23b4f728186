"""The written .onnx file itself: valid ONNX, explicit state I/O, dynamic axes, the signature."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import rnnstream
from rnnstream.export import ParitySettings, export
from rnnstream.runtime import METADATA_KEY
from tests.tolerances import PARITY, assert_close

ATOL = 1e-5
PARITY_STEPS = 200


class Exported:
    """A torch module and the file it was exported to."""

    def __init__(self, module: nn.RNNBase, path: Path, report) -> None:
        self.module = module
        self.path = path
        self.report = report
        self.has_c = isinstance(module, nn.LSTM)
        self.layers = module.num_layers
        self.hidden = module.hidden_size
        self.input_size = module.input_size
        self.batch_first = module.batch_first

    def torch_run(self, x: np.ndarray, h0: np.ndarray, c0: np.ndarray | None) -> list[np.ndarray]:
        state = torch.from_numpy(h0) if c0 is None else (torch.from_numpy(h0), torch.from_numpy(c0))
        with torch.no_grad():
            y, final = self.module(torch.from_numpy(x), state)
        finals = final if isinstance(final, tuple) else (final,)
        return [y.numpy(), *(t.numpy() for t in finals)]

    def x(self, batch: int, steps: int, seed: int) -> np.ndarray:
        shape = (batch, steps) if self.batch_first else (steps, batch)
        rng = np.random.default_rng(seed)
        return rng.standard_normal((*shape, self.input_size)).astype(np.float32)


@pytest.fixture(scope="module", params=["lstm-timemajor", "gru-batchfirst"])
def exported(request, tmp_path_factory) -> Exported:
    torch.manual_seed(0)
    if request.param == "lstm-timemajor":
        module = nn.LSTM(3, 5, num_layers=2)
    else:
        module = nn.GRU(4, 6, num_layers=3, batch_first=True)
    module.eval()
    path = tmp_path_factory.mktemp(request.param) / "model.onnx"
    report = export(module, path, parity=ParitySettings(steps=PARITY_STEPS, batch=2))
    return Exported(module, path, report)


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_full_check_passes(exported: Exported) -> None:
    onnx.checker.check_model(str(exported.path), full_check=True)
    model = onnx.load(exported.path)
    onnx.checker.check_model(model, full_check=True)
    assert model.producer_name == "rnnstream"
    # No leftover placeholder domain from the tracing step.
    assert all(op.domain in ("", "ai.onnx") for op in model.opset_import)
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)


def test_graph_inputs_and_outputs_are_x_and_state(exported: Exported) -> None:
    graph = onnx.load(exported.path).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    outputs = [o.name for o in graph.output]
    if exported.has_c:
        assert inputs == ["x", "h0", "c0"]
        assert outputs == ["y", "hn", "cn"]
    else:
        assert inputs == ["x", "h0"]
        assert outputs == ["y", "hn"]
    for value in [*graph.input, *graph.output]:
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_batch_and_time_are_symbolic(exported: Exported) -> None:
    graph = onnx.load(exported.path).graph
    by_name = {v.name: v for v in [*graph.input, *graph.output]}
    x_dims = _dims(by_name["x"])
    y_dims = _dims(by_name["y"])
    if exported.batch_first:
        assert x_dims == ["batch", "time", exported.input_size]
        assert y_dims == ["batch", "time", exported.hidden]
    else:
        assert x_dims == ["time", "batch", exported.input_size]
        assert y_dims == ["time", "batch", exported.hidden]
    x_raw = by_name["x"].type.tensor_type.shape.dim
    batch_axis, time_axis = (0, 1) if exported.batch_first else (1, 0)
    assert x_raw[batch_axis].dim_param and not x_raw[batch_axis].HasField("dim_value")
    assert x_raw[time_axis].dim_param and not x_raw[time_axis].HasField("dim_value")
    for name in ("h0", "hn", "c0", "cn") if exported.has_c else ("h0", "hn"):
        assert _dims(by_name[name]) == [exported.layers, "batch", exported.hidden], name


def test_signature_metadata(exported: Exported) -> None:
    props = {p.key: p.value for p in onnx.load(exported.path).metadata_props}
    assert METADATA_KEY == "rnnstream.signature"
    sig = json.loads(props[METADATA_KEY])
    assert sig["format"] == 1
    assert sig["streamable"] is True
    assert sig["input"]["name"] == "x"
    assert sig["input"]["dtype"] == "float32"
    assert sig["input"]["batch_axis"] == (0 if exported.batch_first else 1)
    assert sig["input"]["time_axis"] == (1 if exported.batch_first else 0)
    expected_states = [
        {
            "input": "h0",
            "output": "hn",
            "dtype": "float32",
            "shape": [exported.layers, "batch", exported.hidden],
            "batch_axis": 1,
        }
    ]
    if exported.has_c:
        expected_states.append({**expected_states[0], "input": "c0", "output": "cn"})
    assert sig["states"] == expected_states

    parity = sig["parity"]  # the JSON stored in the file
    assert parity["passed"] is True
    assert parity["steps"] == PARITY_STEPS
    assert parity["batch"] == 2
    assert parity["atol"] == ATOL
    assert parity["torch"] == torch.__version__
    assert parity["onnxruntime"] == ort.__version__
    assert 0.0 <= parity["max_abs_err"] <= ATOL
    for mode in ("step", "chunk"):
        for err in parity[mode].values():
            assert 0.0 <= err["max_abs_err"] <= parity["max_abs_err"]
    # The runtime reads the same signature back.
    loaded = rnnstream.load(exported.path).signature
    assert loaded == exported.report.signature
    assert json.loads(loaded.to_json()) == sig


def _zeros(exported: Exported, batch: int) -> dict[str, np.ndarray]:
    shape = (exported.layers, batch, exported.hidden)
    feeds = {"h0": np.zeros(shape, np.float32)}
    if exported.has_c:
        feeds["c0"] = np.zeros(shape, np.float32)
    return feeds


def _random_state(exported: Exported, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (exported.layers, batch, exported.hidden)
    names = ("h0", "c0") if exported.has_c else ("h0",)
    return {n: (0.5 * rng.standard_normal(shape)).astype(np.float32) for n in names}


@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("steps", [1, 7])
def test_one_file_serves_any_time_and_batch(exported: Exported, batch: int, steps: int) -> None:
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    x = exported.x(batch, steps, seed=batch * 10 + steps)
    state = _random_state(exported, batch, seed=batch)
    outputs = session.run(None, {"x": x, **state})
    expected = exported.torch_run(x, state["h0"], state.get("c0"))
    assert len(outputs) == len(expected)
    for got, ref in zip(outputs, expected):
        assert got.shape == ref.shape
        assert_close(got, ref, PARITY)


def test_chunks_with_carried_state_equal_one_run(exported: Exported) -> None:
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    x = exported.x(3, 10, seed=1)
    whole = session.run(None, {"x": x, **_zeros(exported, 3)})
    time_axis = 1 if exported.batch_first else 0
    first, second = np.split(x, [4], axis=time_axis)
    out1 = dict(zip(names, session.run(None, {"x": first, **_zeros(exported, 3)})))
    carried = {"h0": out1["hn"], **({"c0": out1["cn"]} if exported.has_c else {})}
    out2 = dict(zip(names, session.run(None, {"x": second, **carried})))
    y = np.concatenate([out1["y"], out2["y"]], axis=time_axis)
    assert_close(y, whole[0])
    for i, name in enumerate(names[1:], start=1):
        assert_close(out2[name], whole[i])


def test_stream_from_zero_state_equals_explicit_zero_state(exported: Exported) -> None:
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    stream = rnnstream.load(exported.path).stream(batch=2)
    assert set(stream.state) == set(_zeros(exported, 2))
    for value in stream.state.values():
        assert value.shape == (exported.layers, 2, exported.hidden)
        assert not value.any()
    x = exported.x(2, 1, seed=3)
    frame = x[:, 0] if exported.batch_first else x[0]
    y_stream = stream.step(frame)
    raw = session.run(None, {"x": x, **_zeros(exported, 2)})
    y_raw = raw[0][:, 0] if exported.batch_first else raw[0][0]
    np.testing.assert_array_equal(y_stream, y_raw)
    state = stream.state
    np.testing.assert_array_equal(state["h0"], raw[1])
    if exported.has_c:
        np.testing.assert_array_equal(state["c0"], raw[2])
