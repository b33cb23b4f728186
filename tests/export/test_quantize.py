"""int8 and float16 models: conversion, parity within the documented tolerances, task metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import rnnstream
from rnnstream.errors import ExportError
from rnnstream.export import (
    TOLERANCES,
    ParitySettings,
    export,
    measure_parity,
    quantize,
    quantize_file,
)
from rnnstream.export.exporter import infer_input
from rnnstream.export.quality import char_lm_tokens, stream_bits_per_token
from rnnstream.export.scan_cells import rewrite_as_scan
from rnnstream.models import CharLM, CharLMConfig
from rnnstream.models.charlm import BOS
from rnnstream.models.scoring import bits_per_token
from rnnstream.runtime.parity_record import ParityRecord
from tests.tolerances import PARITY, assert_close

CELLS = ["lstm", "gru", "rnn_tanh"]
# PyTorch's own (reference) LSTM with proj_size warns that oneDNN does not support it.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")
EVAL_TOKENS = 4000  # enough to compare two models on the same text; the default is 100,000
STEPS = 500


def _charlm(cell: str) -> CharLM:
    torch.manual_seed(0)
    return CharLM(CharLMConfig(cell=cell, num_layers=2, hidden_size=32, embed_size=8)).eval()


def _export(model: CharLM, path: Path, **kw) -> rnnstream.Model:
    export(model, path, **kw)
    return rnnstream.load(path)


@pytest.fixture(scope="module", params=CELLS)
def lm(request, tmp_path_factory) -> tuple[CharLM, Path]:
    """A small character LM and its float32 export."""
    model = _charlm(request.param)
    path = tmp_path_factory.mktemp(request.param) / "lm.onnx"
    _export(model, path, parity=ParitySettings(steps=200))
    return model, path


def _assert_within_tolerance(parity: ParityRecord, precision: str) -> None:
    tol = TOLERANCES[precision]
    assert parity.precision == precision and parity.passed is True
    assert (parity.atol, parity.rtol) == (tol.atol, tol.rtol)
    for mode in ("step", "chunk"):
        for err in parity.errors[mode].values():
            assert err.within(tol.atol, tol.rtol), (mode, err)
    task = parity.task
    assert task.metric == "bpc" and task.max_increase == tol.max_bpc_increase
    assert task.increase <= tol.max_bpc_increase
    assert task.passed is True


@pytest.mark.parametrize("precision", ["int8", "float16"])
def test_export_at_lower_precision_streams_within_tolerance(lm, precision, tmp_path) -> None:
    torch_model, _ = lm
    path = tmp_path / f"lm.{precision}.onnx"
    model = _export(
        torch_model,
        path,
        precision=precision,
        parity=ParitySettings(steps=STEPS, eval_tokens=EVAL_TOKENS),
    )
    sig = model.signature
    assert sig.precision == precision and sig.kind == "char_lm"
    _assert_within_tolerance(sig.parity, precision)
    assert sig.parity.reference == "pytorch" and sig.parity.steps == STEPS
    # Streams as any model does: float32 state and logits; step and feed agree (int8 only up to
    # its tolerance: activations are quantised with the range of each run's values).
    tokens = np.array([0, 40, 41, 42, 1])
    s = model.stream()
    stepped = np.stack([s.step(t) for t in tokens])
    fed = model.stream().feed(tokens)
    assert stepped.dtype == np.float32 and stepped.shape == (5, torch_model.config.vocab_size)
    rtol = TOLERANCES[precision].rtol if precision == "int8" else 1e-6
    assert np.abs(stepped - fed).max() <= rtol * np.abs(fed).max()
    assert all(v.dtype == np.float32 for v in s.state.values())


def _op_types(graph: onnx.GraphProto) -> set[str]:
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                ops |= _op_types(attr.g)
    return ops


def test_int8_quantises_the_recurrent_weights_of_every_cell(lm) -> None:
    _, path = lm
    model = quantize(path, "int8")
    ops = _op_types(model.graph)
    # LSTMs quantise as DynamicQuantizeLSTM; GRU and RNN layers step with DynamicQuantizeMatMul
    # and run chunks through the float operator over their int8 weights dequantised at load.
    assert "LSTM" not in ops and "MatMul" not in ops, ops
    assert ops & {"DynamicQuantizeLSTM", "DynamicQuantizeMatMul"}
    floats = [i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT]
    assert max(numpy_helper.to_array(i).size for i in floats) < 1000  # biases and scales only
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    sig = rnnstream.Signature.from_json(
        next(p.value for p in model.metadata_props if p.key == rnnstream.runtime.METADATA_KEY)
    )
    assert sig.precision == "int8" and sig.parity is None
    assert sig.source["quantization"]["float_recurrent_nodes"] == []


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.LSTM(6, 16, num_layers=2, proj_size=8, batch_first=True),
        lambda: nn.GRU(5, 12, bidirectional=True),
        lambda: nn.RNN(5, 12, num_layers=2, nonlinearity="relu", bidirectional=True),
    ],
    ids=["lstm-proj", "gru-bidirectional", "rnn-relu-bidirectional"],
)
def test_int8_covers_projected_and_bidirectional_layers(make, tmp_path) -> None:
    torch.manual_seed(0)
    module = make()
    path = tmp_path / "m.onnx"
    parity = export(module, path, precision="int8", parity=ParitySettings(steps=300)).parity
    assert parity.passed and parity.task is None  # generic models have no task metric
    for mode in ("step", "chunk", "sequence"):
        for err in parity.errors.get(mode, {}).values():
            assert err.within(TOLERANCES["int8"].atol, TOLERANCES["int8"].rtol)
    ops = _op_types(onnx.load(path).graph)
    assert not ops & {"LSTM", "GRU", "RNN", "MatMul"} and "MatMulInteger" in ops, ops


def test_float16_stores_weights_as_float16_and_keeps_float32_io(lm) -> None:
    _, path = lm
    model = quantize(path, "float16")
    float32 = onnx.load(path)
    kinds = {i.data_type for i in model.graph.initializer}
    assert TensorProto.FLOAT not in kinds and TensorProto.FLOAT16 in kinds
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.INT64)
    weight_bytes = [sum(len(i.raw_data) for i in m.graph.initializer) for m in (float32, model)]
    assert weight_bytes[0] / weight_bytes[1] > 1.95


def test_float16_casts_are_folded_when_loaded(lm, tmp_path) -> None:
    """onnxruntime computes in float32 from weights cast once at load, not at every step."""
    _, path = lm
    half = tmp_path / "half.onnx"
    half.write_bytes(quantize(path, "float16").SerializeToString())
    cache = tmp_path / "half.optimized.onnx"
    rnnstream.load(half, optimized_cache=cache)
    optimized = onnx.load(cache)
    assert "Cast" not in _op_types(optimized.graph)
    assert {i.data_type for i in optimized.graph.initializer} <= {
        TensorProto.FLOAT,
        TensorProto.INT64,
    }


def test_quantize_refuses_what_it_cannot_convert(lm, tmp_path) -> None:
    _, path = lm
    with pytest.raises(ExportError, match="precision"):
        quantize(path, "int3")
    with pytest.raises(ExportError, match="already int8"):
        quantize(quantize(path, "int8"), "float16")
    bare = onnx.load(path)
    del bare.metadata_props[:]
    with pytest.raises(ExportError, match="no rnnstream signature"):
        quantize(bare, "int8")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ExportError, match="not an ONNX model"):
        quantize(junk, "int8")


def test_stream_bits_per_token_matches_pytorch(lm) -> None:
    torch_model, path = lm
    model = rnnstream.load(path)
    tokens = char_lm_tokens(model.signature, "stdlib", 3000)
    assert tokens[0] == BOS and len(tokens) == 3000
    ref = bits_per_token(torch_model, torch.from_numpy(tokens))[1]
    assert stream_bits_per_token(model, tokens) == pytest.approx(ref, abs=1e-4)


def test_quantize_file_against_the_float32_file(lm, tmp_path) -> None:
    _, path = lm
    out = tmp_path / "q.onnx"
    report = quantize_file(
        path, out, "int8", parity=ParitySettings(steps=STEPS, eval_tokens=EVAL_TOKENS)
    )
    parity = rnnstream.load(out).signature.parity
    assert parity == report.parity
    _assert_within_tolerance(parity, "int8")
    assert parity.reference == "onnxruntime float32"
    assert parity.reference_parity.passed is True


def test_a_quantised_model_misses_the_float32_tolerance(lm, tmp_path) -> None:
    torch_model, path = lm
    out = tmp_path / "q.onnx"
    quantize_file(path, out, "int8", parity=ParitySettings(steps=100, eval_tokens=EVAL_TOKENS))
    x = infer_input(torch_model, None, None).sample(2, 200, seed=0)
    report = measure_parity(torch_model, rnnstream.load(out), x, 16, TOLERANCES["float32"].atol)
    assert report.passed is False


# The Scan rewrite of GRU/RNN operators, checked against onnxruntime's own kernels.


def _recurrent_node_model(
    op: str, direction: str, *, lbr: int | None = None, activations=None, bias=True, h0=True
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    dirs, hidden, size = (2 if direction == "bidirectional" else 1), 5, 3
    gates = 3 if op == "GRU" else 1
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (dirs, gates * hidden, size)), "W"),
        numpy_helper.from_array(rng.normal(0, 0.5, (dirs, gates * hidden, hidden)), "R"),
    ]
    inputs = ["X", "W", "R", "B" if bias else "", ""]
    if bias:
        inits.append(numpy_helper.from_array(rng.normal(0, 1, (dirs, 2 * gates * hidden)), "B"))
    for init in inits:
        init.CopyFrom(
            numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name)
        )
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", size])]
    feeds = {"X": rng.standard_normal((7, 2, size)).astype(np.float32)}
    if h0:
        inputs.append("h0")
        graph_inputs.append(
            helper.make_tensor_value_info("h0", TensorProto.FLOAT, [dirs, "B", hidden])
        )
        feeds["h0"] = rng.standard_normal((dirs, 2, hidden)).astype(np.float32)
    attrs: dict = {"hidden_size": hidden, "direction": direction}
    if lbr is not None:
        attrs["linear_before_reset"] = lbr
    if activations:
        attrs["activations"] = activations
    node = helper.make_node(op, inputs, ["Y", "Y_h"], name="cell", **attrs)
    outputs = [
        helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", dirs, "B", hidden]),
        helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [dirs, "B", hidden]),
    ]
    graph = helper.make_graph([node], "g", graph_inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), feeds


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString()).run(None, feeds)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize(
    "op,kw",
    [
        ("GRU", {"lbr": 1}),
        ("GRU", {"lbr": 0}),
        ("RNN", {}),
        ("RNN", {"activations": ["Relu", "Relu"]}),
        ("GRU", {"lbr": 1, "bias": False, "h0": False}),
        ("RNN", {"bias": False, "h0": False}),
    ],
)
def test_scan_rewrite_computes_what_the_operator_computes(op, kw, direction) -> None:
    if "activations" in kw and direction != "bidirectional":
        kw = {**kw, "activations": kw["activations"][:1]}
    model, feeds = _recurrent_node_model(op, direction, **kw)
    expected = _run(model, feeds)
    assert rewrite_as_scan(model) == []
    onnx.checker.check_model(model, full_check=True)
    assert "Scan" in _op_types(model.graph) and op not in _op_types(model.graph)
    assert {i.name for i in model.graph.initializer}.isdisjoint({"W", "R", "B"})
    for got, want in zip(_run(model, feeds), expected):
        assert_close(got, want, PARITY)


def test_scan_rewrite_keeps_what_it_does_not_cover() -> None:
    model, feeds = _recurrent_node_model("GRU", "forward", activations=["Sigmoid", "Relu"])
    expected = _run(model, feeds)
    assert rewrite_as_scan(model) == ["cell"]
    assert [n.op_type for n in model.graph.node] == ["GRU"]
    np.testing.assert_array_equal(_run(model, feeds)[0], expected[0])
