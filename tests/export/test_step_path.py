"""The step path (one If on T == 1 per model) of int8 GRU and RNN models and of float32 RNN models:
real torch against real onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import rnnstream
from rnnstream.export import TOLERANCES, ParitySettings, export, quantize, quantize_file
from rnnstream.export.lean_cells import lean_layer
from rnnstream.export.parity import measure_parity
from rnnstream.export.step_path import STEP_PATH_NODE, without_step_path
from rnnstream.models import CRNN, CharLM, CharLMConfig, CRNNConfig
from tests.tolerances import PARITY, assert_close

INT8 = TOLERANCES["int8"]


@dataclass(frozen=True)
class Case:
    cell: str
    input_size: int
    hidden: int
    layers: int
    bias: bool
    batch_first: bool
    batch: int

    @property
    def id(self) -> str:
        layout = "bf" if self.batch_first else "tm"
        return (
            f"{self.cell}-i{self.input_size}-h{self.hidden}-l{self.layers}-{layout}-b{self.batch}"
        )


CASES = [
    Case("gru", 3, 7, 1, True, True, 1),
    Case("gru", 5, 33, 2, False, False, 3),
    Case("gru", 16, 64, 2, True, True, 2),
    Case("rnn_tanh", 4, 17, 2, True, True, 3),
    Case("rnn_tanh", 1, 1, 1, False, False, 1),
    Case("rnn_relu", 2, 9, 1, True, False, 1),
    Case("rnn_relu", 8, 31, 3, True, True, 2),
]


class Net(nn.Module):
    """A recurrent layer and a linear head, as many real models are."""

    def __init__(self, case: Case) -> None:
        super().__init__()
        kw = dict(
            input_size=case.input_size,
            hidden_size=case.hidden,
            num_layers=case.layers,
            bias=case.bias,
            batch_first=case.batch_first,
        )
        if case.cell == "gru":
            self.rnn = nn.GRU(**kw)
        else:
            self.rnn = nn.RNN(**kw, nonlinearity=case.cell.removeprefix("rnn_"))
        self.head = nn.Linear(case.hidden, 3)

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, hn = self.rnn(x, h0)
        return self.head(y), hn


def _op_types(graph: onnx.GraphProto) -> list[str]:
    ops = []
    for node in graph.node:
        ops.append(node.op_type)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                ops += _op_types(attr.g)
    return ops


def _branch(model: onnx.ModelProto, branch: str) -> onnx.GraphProto:
    wrap = next(n for n in model.graph.node if n.name == STEP_PATH_NODE)
    return next(a.g for a in wrap.attribute if a.name == branch)


def _one_branch(model: onnx.ModelProto, branch: str) -> onnx.ModelProto:
    """``model`` with every ``If`` replaced by the nodes of its ``branch``."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = []
    for node in model.graph.node:
        if node.op_type != "If":
            nodes.append(node)
            continue
        body = next(a.g for a in node.attribute if a.name == branch)
        nodes += body.node
        model.graph.initializer.extend(body.initializer)
        nodes += [
            helper.make_node("Identity", [o.name], [n]) for o, n in zip(body.output, node.output)
        ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _assert_int8_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Within the int8 parity tolerance: atol, or rtol of the expected tensor's largest value."""
    error = float(np.abs(actual - expected).max())
    assert error <= max(INT8.atol, INT8.rtol * float(np.abs(expected).max())), error


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_int8_steps_and_chunks_match_pytorch(case: Case, tmp_path: Path) -> None:
    torch.manual_seed(CASES.index(case))
    net = Net(case).eval()
    path = tmp_path / "m.onnx"
    report = export(net, path, precision="int8", parity=ParitySettings(steps=200, batch=case.batch))
    parity = report.parity
    assert parity.passed is True and parity.precision == "int8"
    for mode in ("step", "chunk"):
        assert set(parity.errors[mode]) == {"y", "hn"}
        for err in parity.errors[mode].values():
            assert err.within(INT8.atol, INT8.rtol), (mode, err)
    proto = onnx.load(path)
    assert [n.op_type for n in proto.graph.node if n.op_type == "If"] == ["If"]
    products = 2 if case.cell == "gru" else 1  # a GRU projects x and h apart
    step_ops = _op_types(_branch(proto, "then_branch"))
    assert step_ops.count("DynamicQuantizeMatMul") == products * case.layers
    assert {"GRU", "RNN", "Transpose", "Unsqueeze", "Squeeze"}.isdisjoint(step_ops)
    assert _op_types(_branch(proto, "else_branch")).count(case.cell[:3].upper()) == case.layers
    # The int8 matrices are stored once, in the outer graph (no branch-owned copies).
    assert not _branch(proto, "then_branch").initializer
    stored = [i for i in proto.graph.initializer if i.data_type == TensorProto.INT8 and i.dims[1:]]
    assert len(stored) == len({i.name for i in stored}) == products * case.layers + 1  # + head
    quantization = report.signature.source["quantization"]
    assert len(quantization["step_paths"]) == case.layers
    assert quantization["float_recurrent_nodes"] == []

    # Streams, independently of the parity machinery: a batch stepped, and fed in chunks of 7.
    rng = np.random.default_rng(CASES.index(case))
    frames = rng.standard_normal((case.batch, 40, case.input_size)).astype(np.float32)
    x = torch.from_numpy(frames if case.batch_first else frames.transpose(1, 0, 2).copy())
    with torch.no_grad():
        y, _ = net(x, torch.zeros(case.layers, case.batch, case.hidden))
    expected = y.numpy() if case.batch_first else y.numpy().transpose(1, 0, 2)  # [B, T, 3]
    model = rnnstream.load(path)
    stream = model.stream(batch=case.batch)
    stepped = np.stack([stream.step(frames[:, t]) for t in range(40)], axis=1)
    _assert_int8_close(stepped, expected)
    chunked = model.stream(batch=case.batch)
    fed = np.concatenate([chunked.feed(frames[:, t : t + 7]) for t in range(0, 40, 7)], axis=1)
    _assert_int8_close(fed, expected)


def test_one_step_runs_the_step_branch_and_a_chunk_the_operator(tmp_path: Path) -> None:
    """The parity record's step mode measures the lean cell: at T == 1 the model computes what
    its then-branch alone computes, at T > 1 what its else-branch (the GRU operator) computes."""
    case = CASES[1]
    torch.manual_seed(0)
    export(Net(case).eval(), tmp_path / "m.onnx", precision="int8", parity=ParitySettings(steps=20))
    proto = onnx.load(tmp_path / "m.onnx")
    step_only, chunk_only = _one_branch(proto, "then_branch"), _one_branch(proto, "else_branch")
    assert "GRU" not in _op_types(step_only.graph) and "GRU" in _op_types(chunk_only.graph)
    rng = np.random.default_rng(0)
    h0 = rng.standard_normal((case.layers, 3, case.hidden)).astype(np.float32)
    for steps, alone in ((1, step_only), (5, chunk_only)):
        feeds = {"x": rng.standard_normal((steps, 3, case.input_size)).astype(np.float32), "h0": h0}
        for got, want in zip(_run(proto, feeds), _run(alone, feeds)):
            np.testing.assert_array_equal(got, want)


def _node_model(op: str, **attrs) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    hidden, size = 4, 3
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    gates = 3 if op == "GRU" else 1
    inits = [
        numpy_helper.from_array(
            rng.standard_normal((dirs, gates * hidden, n)).astype(np.float32), name
        )
        for name, n in (("W", size), ("R", hidden))
    ]
    node = helper.make_node(
        op, ["X", "W", "R", "", "", "h0"], ["Y", "Y_h"], name="cell", hidden_size=hidden, **attrs
    )
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("X", f32, ["T", "B", size]),
            helper.make_tensor_value_info("h0", f32, [dirs, "B", hidden]),
        ],
        [
            helper.make_tensor_value_info("Y", f32, ["T", dirs, "B", hidden]),
            helper.make_tensor_value_info("Y_h", f32, [dirs, "B", hidden]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


@pytest.mark.parametrize(
    "op,attrs",
    [
        ("GRU", {"linear_before_reset": 1, "direction": "reverse"}),
        ("GRU", {"linear_before_reset": 1, "direction": "bidirectional"}),
        ("GRU", {"linear_before_reset": 0}),
        ("GRU", {"linear_before_reset": 1, "activations": ["Sigmoid", "Relu"]}),
        ("RNN", {"activations": ["Sigmoid"]}),
        ("RNN", {"clip": 2.0}),
        ("RNN", {"layout": 1}),
        ("LSTM", {}),
    ],
)
def test_operators_a_lean_cell_does_not_cover(op, attrs) -> None:
    if op == "LSTM":
        model = _node_model("RNN")
        model.graph.node[0].op_type = "LSTM"
    else:
        model = _node_model(op, **attrs)
    initializers = {i.name: i for i in model.graph.initializer}
    assert lean_layer(model.graph.node[0], initializers) is None


@pytest.mark.parametrize("op,attrs", [("GRU", {"linear_before_reset": 1}), ("RNN", {})])
def test_a_bare_forward_operator_without_bias_is_covered(op, attrs) -> None:
    model = _node_model(op, **attrs)
    initializers = {i.name: i for i in model.graph.initializer}
    layer = lean_layer(model.graph.node[0], initializers)
    assert layer is not None and not layer.wb.any() and not layer.rb.any()


def _broken(proto: onnx.ModelProto, branch: str) -> onnx.ModelProto:
    """``proto`` with the recurrent weights one branch reads negated inside that branch: the step
    cells' int8 matrices or float projections (outer tensors named ``step_path/...``, stored or
    folded once) or the chunk operators' ``W`` and ``R`` (the same values, as they read them)."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    outer = {i.name: i for i in proto.graph.initializer}
    body = _branch(proto, "then_branch" if branch == "step" else "else_branch")
    negations = []
    for node in body.node:
        if branch == "step" and node.op_type == "DynamicQuantizeMatMul":
            name = node.input[1]
            if outer[name].data_type == TensorProto.INT8 and name.startswith("step_path/"):
                negated = -numpy_helper.to_array(outer[name])
                body.initializer.append(numpy_helper.from_array(negated, f"broken/{name}"))
                node.input[1] = f"broken/{name}"
        if branch == "step" and node.op_type == "MatMul" and node.input[1].startswith("step_path/"):
            negations.append(helper.make_node("Neg", [node.input[1]], [f"broken/{node.name}"]))
            node.input[1] = negations[-1].output[0]
        if branch == "chunk" and node.op_type in ("GRU", "RNN"):
            for k in (1, 2):
                negated = f"broken/{k}/{node.name}"
                negations.append(helper.make_node("Neg", [node.input[k]], [negated]))
                node.input[k] = negated
    nodes = negations + list(body.node)  # they read outer tensors: negate them first thing
    del body.node[:]
    body.node.extend(nodes)
    return proto


@pytest.mark.parametrize(
    "cell,precision", [("gru", "int8"), ("rnn_tanh", "int8"), ("rnn_relu", "float32")]
)
def test_step_parity_measures_the_step_branch_and_chunk_parity_the_operator(
    cell, precision, tmp_path
) -> None:
    """Break one branch's weights on purpose: only the parity mode that runs it fails."""
    case = Case(cell, 6, 19, 2, True, True, 2)
    torch.manual_seed(5)
    net = Net(case).eval()
    export(net, tmp_path / "m.onnx", precision=precision, parity=ParitySettings(steps=20))
    proto = onnx.load(tmp_path / "m.onnx")
    bound = TOLERANCES[precision]
    x = torch.randn(2, 30, case.input_size, generator=torch.Generator().manual_seed(5))
    for broken in ("step", "chunk"):
        model = rnnstream.load(_broken(proto, broken).SerializeToString())
        record = measure_parity(net, model, x, 8, bound.atol, bound.rtol)
        fine = "chunk" if broken == "step" else "step"
        assert all(e.within(bound.atol, bound.rtol) for e in record.errors[fine].values())
        assert not all(e.within(bound.atol, bound.rtol) for e in record.errors[broken].values())


def test_without_step_path_gives_back_the_chunk_graph(tmp_path: Path) -> None:
    case = CASES[2]
    torch.manual_seed(2)
    export(Net(case).eval(), tmp_path / "m.onnx", precision="int8", parity=ParitySettings(steps=20))
    proto = onnx.load(tmp_path / "m.onnx")
    chunk_graph = without_step_path(onnx.load(tmp_path / "m.onnx"))
    onnx.checker.check_model(chunk_graph, full_check=True)
    assert "If" not in _op_types(chunk_graph.graph)
    assert [n.op_type for n in chunk_graph.graph.node].count("GRU") == case.layers
    rng = np.random.default_rng(2)
    feeds = {
        "x": rng.standard_normal((2, 5, case.input_size)).astype(np.float32),
        "h0": rng.standard_normal((case.layers, 2, case.hidden)).astype(np.float32),
    }
    for got, want in zip(_run(chunk_graph, feeds), _run(proto, feeds)):
        np.testing.assert_array_equal(got, want)


class TwoHeads(nn.Module):
    """A GRU under two heads, one returned flattened over time and batch (``view(-1, V)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(5, 13, num_layers=2, batch_first=True)
        self.logits = nn.Linear(13, 7)
        self.value = nn.Linear(13, 1)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None):
        y, h = self.rnn(x, h)
        return self.logits(y).reshape(-1, 7), self.value(y), h


class ConvGRU(nn.Module):
    """A causal Conv1d front-end over ``[B, T, F]`` (transposed to channels first) and an RNN."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 8, kernel_size=3, padding=2)
        self.rnn = nn.RNN(8, 11, batch_first=True, nonlinearity="relu")
        self.head = nn.Linear(11, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)
        return self.head(self.rnn(torch.relu(features))[0])


def _around_the_layers():
    torch.manual_seed(7)
    return {
        "char-lm": CharLM(CharLMConfig(cell="gru", num_layers=2, hidden_size=24, embed_size=8)),
        "crnn": CRNN(CRNNConfig(features=2, cell="gru", num_layers=2, hidden_size=17)),
        "two-heads-flattened": TwoHeads(),
        "conv-rnn": ConvGRU(),
    }


@pytest.mark.parametrize("name", list(_around_the_layers()))
def test_models_around_the_layers_step_through_the_step_path(name: str, tmp_path: Path) -> None:
    """Embeddings (token input), causal convolutions and their contexts, several and flattened
    heads run inside the step branch: parity (step and chunk) within the int8 tolerance."""
    net = _around_the_layers()[name].eval()
    report = export(net, tmp_path / "m.onnx", precision="int8", parity=ParitySettings(steps=40))
    assert report.parity.passed and len(report.signature.source["quantization"]["step_paths"]) >= 1
    for mode in ("step", "chunk"):
        for err in report.parity.errors[mode].values():
            assert err.within(INT8.atol, INT8.rtol), (mode, err)
    step_ops = _op_types(_branch(onnx.load(tmp_path / "m.onnx"), "then_branch"))
    assert {"GRU", "RNN", "Transpose"}.isdisjoint(step_ops)


def test_lstm_and_bidirectional_models_keep_their_int8_graphs(tmp_path: Path) -> None:
    """No step path: an LSTM keeps DynamicQuantizeLSTM (faster than the lean cell, README), a
    bidirectional GRU (whole sequences only) a Scan over int8 MatMuls."""
    torch.manual_seed(8)
    lstm = nn.LSTM(5, 9, num_layers=2, batch_first=True)
    export(lstm, tmp_path / "lstm.onnx", precision="int8", parity=ParitySettings(steps=20))
    ops = _op_types(onnx.load(tmp_path / "lstm.onnx").graph)
    assert "If" not in ops and ops.count("DynamicQuantizeLSTM") == 2
    bi = nn.GRU(5, 9, batch_first=True, bidirectional=True)
    report = export(bi, tmp_path / "bi.onnx", precision="int8", parity=ParitySettings(steps=20))
    ops = _op_types(onnx.load(tmp_path / "bi.onnx").graph)
    assert "If" not in ops and "Scan" in ops
    assert report.signature.source["quantization"]["step_paths"] == []


def test_state_snapshots_and_pool_rows_behave_as_before(tmp_path: Path) -> None:
    """A restored state replays exactly; pool rows that join late match lone streams (up to the
    int8 tolerance: activations are quantised with the range of the whole batch's run)."""
    case = CASES[3]
    torch.manual_seed(3)
    export(Net(case).eval(), tmp_path / "m.onnx", precision="int8", parity=ParitySettings(steps=20))
    model = rnnstream.load(tmp_path / "m.onnx")
    rng = np.random.default_rng(3)
    frames = rng.standard_normal((3, 12, case.input_size)).astype(np.float32)
    stream = model.stream()
    for t in range(5):
        stream.step(frames[0, t])
    snapshot = stream.state
    first = [stream.step(frames[0, t]) for t in range(5, 12)]
    stream.state = snapshot
    np.testing.assert_array_equal(
        np.stack(first), [stream.step(frames[0, t]) for t in range(5, 12)]
    )

    alone = []
    for row in range(3):
        s = model.stream()
        alone.append(np.stack([s.step(frames[row, t]) for t in range(12)]))
    pool = model.pool()
    ids, outputs = {}, {row: [] for row in range(3)}
    for t in range(12 + 4):
        for row in range(3):
            if t == 2 * row:
                ids[row] = pool.open()
        tick = {ids[r]: frames[r, t - 2 * r] for r in ids if 0 <= t - 2 * r < 12}
        for stream_id, y in pool.step(tick).items():
            row = next(r for r, i in ids.items() if i == stream_id)
            outputs[row].append(y)
    for row in range(3):
        _assert_int8_close(np.stack(outputs[row]), alone[row])


def test_char_lm_embedding_is_stored_int8_and_gathers_float_rows(tmp_path: Path) -> None:
    torch.manual_seed(0)
    lm = CharLM(CharLMConfig(cell="gru", num_layers=2, hidden_size=24, embed_size=8)).eval()
    float32 = tmp_path / "lm.onnx"
    export(lm, float32, parity=ParitySettings(steps=20))
    proto = quantize(float32, "int8")
    tables = [i for i in proto.graph.initializer if i.name.endswith("/int8")]
    assert [t.data_type for t in tables] == [TensorProto.INT8]
    assert list(tables[0].dims) == [lm.config.vocab_size, 8]
    assert "DequantizeLinear" not in _op_types(proto.graph)


class NamedLikeTheStepPath(nn.Module):
    """Modules named as the step path names its own tensors (``step_path/...``, ``lean/...``)."""

    def __init__(self) -> None:
        super().__init__()
        self.step_path = nn.GRU(3, 8, num_layers=2, batch_first=True)
        self.lean = nn.RNN(8, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lean(self.step_path(x)[0])[0])


def test_tensor_names_like_the_step_paths_own_do_not_clash(tmp_path: Path) -> None:
    torch.manual_seed(9)
    net = NamedLikeTheStepPath().eval()
    source = export(net, tmp_path / "m.onnx", parity=ParitySettings(steps=20)).path
    names = {o for n in without_step_path(onnx.load(source)).graph.node for o in n.output}
    assert any(name.startswith("step_path/") for name in names)
    report = quantize_file(source, tmp_path / "m.int8.onnx", "int8", against=net)
    assert report.parity.passed and len(report.signature.source["quantization"]["step_paths"]) == 3
    onnx.checker.check_model(onnx.load(report.path), full_check=True)


@pytest.mark.parametrize("case", [CASES[1], CASES[3]], ids=[CASES[1].id, CASES[3].id])
def test_a_session_pinned_to_one_step_inlines_the_step_branch(case: Case, tmp_path: Path) -> None:
    """With the batch and time dims pinned (as a stream's step session pins them) onnxruntime
    folds the ``If`` and runs the step branch inline, over the outer int8 weights: the same
    outputs, step after step, as the general session."""
    torch.manual_seed(4)
    path = tmp_path / "m.onnx"
    export(Net(case).eval(), path, precision="int8", parity=ParitySettings(steps=20))
    options = ort.SessionOptions()
    options.add_free_dimension_override_by_name("batch", case.batch)
    options.add_free_dimension_override_by_name("time", 1)
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    pinned = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert "If" not in _op_types(onnx.load(tmp_path / "optimized.onnx").graph)
    general = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(4)
    shape = (
        (case.batch, 1, case.input_size) if case.batch_first else (1, case.batch, case.input_size)
    )
    h = {"pinned": np.zeros((case.layers, case.batch, case.hidden), np.float32)}
    h["general"] = h["pinned"]
    for _ in range(10):
        x = rng.standard_normal(shape).astype(np.float32)
        y_pinned, h["pinned"] = pinned.run(None, {"x": x, "h0": h["pinned"]})
        y_general, h["general"] = general.run(None, {"x": x, "h0": h["general"]})
        np.testing.assert_array_equal(y_pinned, y_general)
        np.testing.assert_array_equal(h["pinned"], h["general"])


RNN_CASES = [c for c in CASES if c.cell.startswith("rnn_")]


@pytest.mark.parametrize("case", RNN_CASES, ids=[c.id for c in RNN_CASES])
def test_float32_rnn_steps_through_float_cells_and_chunks_through_the_operator(
    case: Case, tmp_path: Path
) -> None:
    torch.manual_seed(10 + CASES.index(case))
    net = Net(case).eval()
    path = tmp_path / "m.onnx"
    report = export(net, path, parity=ParitySettings(steps=100, batch=case.batch))
    assert report.parity.passed and set(report.parity.errors) == {"step", "chunk"}
    proto = onnx.load(path)
    assert [n.op_type for n in proto.graph.node if n.op_type == "If"] == ["If"]
    step_ops = _op_types(_branch(proto, "then_branch"))
    assert step_ops.count("MatMul") == case.layers + 1  # a cell per layer, the head
    assert {"RNN", "Transpose", "Squeeze", "DynamicQuantizeMatMul"}.isdisjoint(step_ops)
    assert _op_types(_branch(proto, "else_branch")).count("RNN") == case.layers
    assert "com.microsoft" not in {o.domain for o in proto.opset_import}

    # The weights are the operators' own, stored once (the step's stacked ones are folded at
    # load; the summed biases are the one new tensor), and the plain graph comes back as it was.
    plain = without_step_path(onnx.load(path))
    initializers = {i.name: i for i in plain.graph.initializer}
    for node in (n for n in plain.graph.node if n.op_type == "RNN"):
        assert all(initializers[name].data_type == TensorProto.FLOAT for name in node.input[1:3])

    def float_elements(model: onnx.ModelProto) -> int:
        sizes = [np.prod(i.dims) for i in model.graph.initializer if i.data_type == 1]
        return int(sum(sizes))

    assert float_elements(proto) - float_elements(plain) == case.layers * case.hidden
    int8 = quantize(path, "int8")  # starts from the plain graph: gets its own step path
    assert len(int8.metadata_props) and _op_types(int8.graph).count("If") == 1
    assert _op_types(_branch(int8, "then_branch")).count("DynamicQuantizeMatMul") == case.layers

    rng = np.random.default_rng(CASES.index(case))
    frames = rng.standard_normal((case.batch, 40, case.input_size)).astype(np.float32)
    x = torch.from_numpy(frames if case.batch_first else frames.transpose(1, 0, 2).copy())
    with torch.no_grad():
        y, _ = net(x, torch.zeros(case.layers, case.batch, case.hidden))
    expected = y.numpy() if case.batch_first else y.numpy().transpose(1, 0, 2)
    model = rnnstream.load(path)
    stream = model.stream(batch=case.batch)
    stepped = np.stack([stream.step(frames[:, t]) for t in range(40)], axis=1)
    assert_close(stepped, expected, PARITY)
    chunked = model.stream(batch=case.batch)
    fed = np.concatenate([chunked.feed(frames[:, t : t + 7]) for t in range(0, 40, 7)], axis=1)
    assert_close(fed, expected, PARITY)
    pool = model.pool()  # its ticks run the general session's step branch, one row a stream
    ids = [pool.open() for _ in range(case.batch)]
    ticked = [pool.step({i: frames[row, t] for row, i in enumerate(ids)}) for t in range(40)]
    for row, stream_id in enumerate(ids):
        assert_close(np.stack([tick[stream_id] for tick in ticked]), expected[row], PARITY)


def test_float32_gru_and_lstm_models_keep_their_graphs(tmp_path: Path) -> None:
    """No float32 step path where onnxruntime's kernel beats the lean cell (README)."""
    torch.manual_seed(11)
    for name, net in (("gru", nn.GRU(5, 9, 2)), ("lstm", nn.LSTM(5, 9, batch_first=True))):
        export(net, tmp_path / f"{name}.onnx", parity=ParitySettings(steps=20))
        assert "If" not in _op_types(onnx.load(tmp_path / f"{name}.onnx").graph)


def _float32_rnn_models() -> dict[str, nn.Module]:
    torch.manual_seed(12)
    heads = TwoHeads()
    heads.rnn = nn.RNN(5, 13, num_layers=2, batch_first=True)
    return {
        "conv-rnn": ConvGRU(),
        "gru-then-rnn": NamedLikeTheStepPath(),
        "char-lm": CharLM(
            CharLMConfig(cell="rnn_tanh", num_layers=2, hidden_size=24, embed_size=8)
        ),
        "two-heads-flattened": heads,
    }


@pytest.mark.parametrize("name", list(_float32_rnn_models()))
def test_float32_models_around_rnn_layers_step_through_the_step_path(name, tmp_path) -> None:
    """A conv front-end (its transposes become reshapes), a GRU under an RNN (the GRU layers run
    as their operators inside the step branch, the RNN as a float cell), an embedding (token
    input), a flattened and a second head: step and chunk parity within float32's tolerance."""
    net = _float32_rnn_models()[name].eval()
    report = export(net, tmp_path / "m.onnx", parity=ParitySettings(steps=40, batch=2))
    assert report.parity.passed and set(report.parity.errors) == {"step", "chunk"}
    step_ops = _op_types(_branch(onnx.load(tmp_path / "m.onnx"), "then_branch"))
    assert {"RNN", "Transpose"}.isdisjoint(step_ops)
    assert step_ops.count("GRU") == (2 if name == "gru-then-rnn" else 0)
