"""ONNX ``LSTM``, ``GRU`` and ``RNN`` operators rewritten as a ``Scan`` over an explicit cell.

onnxruntime's dynamic quantisation handles ``MatMul`` (and ``LSTM``, as ``DynamicQuantizeLSTM``)
but leaves the ``GRU`` and ``RNN`` operators in float32, and no recurrent operator takes 4-bit
weights. Rewritten this way (the input projection of every step hoisted out of the loop into one
MatMul, the recurrent projection a MatMul inside the Scan body), their weights quantise like any
linear layer. In float32 the rewrite computes what the operator computes, to rounding.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnstream.export.layers import GraphBuilder

__all__ = ["rewrite_as_scan"]

log = logging.getLogger(__name__)

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_RNN_ACTIVATIONS = {"Tanh", "Relu", "Sigmoid"}
_MIN_OPSET = 13  # Split and Unsqueeze take their sizes and axes as inputs


def rewrite_as_scan(
    model: onnx.ModelProto,
    op_types: tuple[str, ...] = ("GRU", "RNN"),
    skip: Collection[str] = (),
) -> list[str]:
    """Replace (in place) every top-level node of ``op_types`` (of LSTM, GRU, RNN) of ``model`` by
    a Scan over MatMuls.

    Nodes named in ``skip`` are left alone (another rewrite takes them). Nodes whose weights are
    not initializers or that use options the rewrite does not cover (``sequence_lens``,
    ``layout=1``, ``clip``, other activations, LSTM's ``input_forget``) are kept as they are, with
    a warning. Returns the names of the nodes that were kept.
    """
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < _MIN_OPSET:
        log.warning("opset %d < %d: recurrent operators stay float operators", opset, _MIN_OPSET)
        return [n.name for n in graph.node if n.op_type in op_types]
    initializers = {init.name: init for init in graph.initializer}
    new_nodes: list[onnx.NodeProto] = []
    kept: list[str] = []
    used: set[str] = set()
    for index, node in enumerate(graph.node):
        if node.op_type not in op_types or node.domain not in ("", "ai.onnx") or node.name in skip:
            new_nodes.append(node)
            continue
        reason = _unsupported(node, initializers)
        if reason:
            log.warning("%s %r stays a float %s operator: %s", node.op_type, node.name, *reason)
            new_nodes.append(node)
            kept.append(node.name)
            continue
        g = GraphBuilder(prefix=f"{node.name or node.op_type}_scan{index}")
        _emit(node, initializers, g)
        new_nodes.extend(g.nodes)
        graph.initializer.extend(g.initializers)
        used.update(node.input[1:4])
        used.update(node.input[7:8])  # LSTM's peepholes
    del graph.node[:]
    graph.node.extend(new_nodes)
    still_read = {name for n in new_nodes for name in n.input}
    unused = [init for init in graph.initializer if init.name in used - still_read]
    for init in unused:
        graph.initializer.remove(init)
    return kept


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _unsupported(
    node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]
) -> tuple[str, str] | None:
    attrs = _attrs(node)
    inputs = list(node.input) + [""] * (8 - len(node.input))
    if inputs[1] not in initializers or inputs[2] not in initializers:
        return node.op_type, "W and R are not initializers"
    if initializers[inputs[1]].data_type != TensorProto.FLOAT:
        return node.op_type, "its weights are not float32"
    if inputs[3] and inputs[3] not in initializers:
        return node.op_type, "B is not an initializer"
    if inputs[4]:
        return node.op_type, "it has sequence_lens"
    if attrs.get("layout", 0) != 0 or "clip" in attrs:
        return node.op_type, "layout=1 and clip are not covered"
    if "activation_alpha" in attrs or "activation_beta" in attrs:
        return node.op_type, "activation parameters are not covered"
    if attrs.get("input_forget", 0):
        return node.op_type, "input_forget is not covered"
    if inputs[7] and inputs[7] not in initializers:
        return node.op_type, "P is not an initializer"
    dirs = 2 if attrs.get("direction", b"forward") == b"bidirectional" else 1
    activations = [a.decode() for a in attrs.get("activations", [])]
    if node.op_type == "LSTM" and activations not in ([], ["Sigmoid", "Tanh", "Tanh"] * dirs):
        return node.op_type, f"activations {activations} are not covered"
    if node.op_type == "GRU" and activations not in ([], ["Sigmoid", "Tanh"] * dirs):
        return node.op_type, f"activations {activations} are not covered"
    if node.op_type == "RNN" and not set(activations) <= _RNN_ACTIVATIONS:
        return node.op_type, f"activations {activations} are not covered"
    return None


def _emit(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto], g: GraphBuilder) -> None:
    """The nodes computing ``node``'s outputs ``Y [T, D, B, H]``, ``Y_h [D, B, H]`` (and, for an
    LSTM, ``Y_c [D, B, H]``)."""
    attrs = _attrs(node)
    inputs = list(node.input) + [""] * (8 - len(node.input))
    x = inputs[0]
    w = numpy_helper.to_array(initializers[inputs[1]])  # [D, G*H, I]
    r = numpy_helper.to_array(initializers[inputs[2]])  # [D, G*H, H]
    dirs, gh, hidden = r.shape
    b = (
        numpy_helper.to_array(initializers[inputs[3]])
        if inputs[3]
        else np.zeros((dirs, 2 * gh), dtype=w.dtype)
    )
    peepholes = numpy_helper.to_array(initializers[inputs[7]]) if inputs[7] else None
    direction = attrs.get("direction", b"forward").decode()
    default = ["Tanh"] * dirs if node.op_type == "RNN" else []
    activations = [a.decode() for a in attrs.get("activations", [])] or default
    n_states = 2 if node.op_type == "LSTM" else 1
    initial = [inputs[5 + k] or _zero_state(g, x, dirs, hidden) for k in range(n_states)]
    seqs: list[str] = []
    finals: list[list[str]] = [[] for _ in range(n_states)]
    for d in range(dirs):
        tag = f"d{d}"
        wb, rb = b[d, :gh], b[d, gh:]
        hoisted = wb + rb
        if node.op_type == "LSTM":
            p_d = peepholes[d] if peepholes is not None else None
            body = _lstm_body(g, tag, r[d], p_d, hidden)
        elif node.op_type == "GRU":
            lbr = attrs.get("linear_before_reset", 0)
            # Biases that are added outside the reset gate move into the hoisted projection.
            if lbr:
                hoisted[2 * hidden :] = wb[2 * hidden :]
            body = _gru_body(g, tag, r[d], rb[2 * hidden :], hidden, bool(lbr))
        else:
            body = _rnn_body(g, tag, r[d], activations[d], hidden)
        xw = g.op("MatMul", [x, g.const(f"Wt_{tag}", w[d].T)])[0]
        xw = g.op("Add", [xw, g.const(f"b_{tag}", hoisted)])[0]
        index = g.const("dir", np.asarray(d, dtype=np.int64))
        states0 = [g.op("Gather", [s, index], axis=0)[0] for s in initial]
        scan_attrs: dict = {"body": body, "num_scan_inputs": 1}
        if direction == "reverse" or d == 1:
            scan_attrs |= {"scan_input_directions": [1], "scan_output_directions": [1]}
        *states_t, seq = g.op("Scan", [*states0, xw], n_out=n_states + 1, **scan_attrs)
        seqs.append(seq)
        for acc, state in zip(finals, states_t):
            acc.append(state)
    outputs = list(node.output) + [""] * (1 + n_states - len(node.output))
    for per_dir, axis, out in (
        (seqs, 1, outputs[0]),
        *((f, 0, o) for f, o in zip(finals, outputs[1:])),
    ):
        if out:
            axes = g.ints("axis", [axis])
            g.op("Concat", [g.op("Unsqueeze", [t, axes])[0] for t in per_dir], axis=axis, out=[out])


def _zero_state(g: GraphBuilder, x: str, dirs: int, hidden: int) -> str:
    batch = g.op("Shape", [x], start=1, end=2)[0]
    shape = g.op("Concat", [g.ints("dirs", [dirs]), batch, g.ints("hidden", [hidden])], axis=0)
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    return g.op("ConstantOfShape", shape, value=zero)[0]


def _lstm_body(
    g: GraphBuilder, tag: str, r: np.ndarray, peepholes: np.ndarray | None, hidden: int
) -> onnx.GraphProto:
    """One LSTM step (gates i, o, f, c in ONNX's order; peepholes ``P`` as i, o, f)."""
    body = GraphBuilder(prefix=f"{g.prefix}/{tag}_cell", _ids=g._ids)
    h_prev, c_prev, xw_t = body.name("h_prev"), body.name("c_prev"), body.name("xw_t")
    gates = body.op("Add", [xw_t, body.op("MatMul", [h_prev, g.const(f"Rt_{tag}", r.T)])[0]])[0]
    i, o, f, c_hat = body.op("Split", [gates, g.ints("split", [hidden] * 4)], n_out=4, axis=-1)
    if peepholes is not None:
        p_i, p_o, p_f = (g.const(f"P{k}_{tag}", v) for k, v in zip("iof", peepholes.reshape(3, -1)))
        i = body.op("Add", [i, body.op("Mul", [p_i, c_prev])[0]])[0]
        f = body.op("Add", [f, body.op("Mul", [p_f, c_prev])[0]])[0]
    i, f = body.op("Sigmoid", [i])[0], body.op("Sigmoid", [f])[0]
    c_hat = body.op("Tanh", [c_hat])[0]
    c_new = body.op("Add", [body.op("Mul", [f, c_prev])[0], body.op("Mul", [i, c_hat])[0]])[0]
    if peepholes is not None:
        o = body.op("Add", [o, body.op("Mul", [p_o, c_new])[0]])[0]
    h_new = body.op("Mul", [body.op("Sigmoid", [o])[0], body.op("Tanh", [c_new])[0]])[0]
    h_seq = body.op("Identity", [h_new])[0]
    f32 = TensorProto.FLOAT
    return helper.make_graph(
        body.nodes,
        f"{tag}_cell",
        [
            helper.make_tensor_value_info(h_prev, f32, ["batch", hidden]),
            helper.make_tensor_value_info(c_prev, f32, ["batch", hidden]),
            helper.make_tensor_value_info(xw_t, f32, ["batch", 4 * hidden]),
        ],
        [
            helper.make_tensor_value_info(h_new, f32, ["batch", hidden]),
            helper.make_tensor_value_info(c_new, f32, ["batch", hidden]),
            helper.make_tensor_value_info(h_seq, f32, ["batch", hidden]),
        ],
    )


def _gru_body(
    g: GraphBuilder, tag: str, r: np.ndarray, rb_h: np.ndarray, hidden: int, lbr: bool
) -> onnx.GraphProto:
    """One GRU step (gates z, r, h): ``h = n + z * (h_prev - n)``."""
    body = GraphBuilder(prefix=f"{g.prefix}/{tag}_cell", _ids=g._ids)
    h_prev, xw_t = body.name("h_prev"), body.name("xw_t")
    thirds = g.ints("split", [hidden] * 3)
    xz, xr, xh = body.op("Split", [xw_t, thirds], n_out=3, axis=-1)
    if lbr:  # n = tanh(xh + r * (h_prev R_h^T + Rb_h))
        hr_all = body.op("MatMul", [h_prev, g.const(f"Rt_{tag}", r.T)])[0]
        hz, hr, hh = body.op("Split", [hr_all, thirds], n_out=3, axis=-1)
        z = body.op("Sigmoid", [body.op("Add", [xz, hz])[0]])[0]
        reset = body.op("Sigmoid", [body.op("Add", [xr, hr])[0]])[0]
        hh = body.op("Add", [hh, g.const(f"Rbh_{tag}", rb_h)])[0]
        n_in = body.op("Mul", [reset, hh])[0]
    else:  # n = tanh(xh + (r * h_prev) R_h^T)
        hzr = body.op("MatMul", [h_prev, g.const(f"Rt_zr_{tag}", r[: 2 * hidden].T)])[0]
        hz, hr = body.op("Split", [hzr, g.ints("split", [hidden] * 2)], n_out=2, axis=-1)
        z = body.op("Sigmoid", [body.op("Add", [xz, hz])[0]])[0]
        reset = body.op("Sigmoid", [body.op("Add", [xr, hr])[0]])[0]
        gated = body.op("Mul", [reset, h_prev])[0]
        n_in = body.op("MatMul", [gated, g.const(f"Rt_h_{tag}", r[2 * hidden :].T)])[0]
    n = body.op("Tanh", [body.op("Add", [xh, n_in])[0]])[0]
    h_new = body.op("Add", [n, body.op("Mul", [z, body.op("Sub", [h_prev, n])[0]])[0]])[0]
    return _body_graph(body, tag, h_prev, xw_t, h_new, hidden, 3)


def _rnn_body(
    g: GraphBuilder, tag: str, r: np.ndarray, activation: str, hidden: int
) -> onnx.GraphProto:
    """One RNN step: ``h = f(xw_t + h_prev R^T)``."""
    body = GraphBuilder(prefix=f"{g.prefix}/{tag}_cell", _ids=g._ids)
    h_prev, xw_t = body.name("h_prev"), body.name("xw_t")
    hr = body.op("MatMul", [h_prev, g.const(f"Rt_{tag}", r.T)])[0]
    h_new = body.op(activation, [body.op("Add", [xw_t, hr])[0]])[0]
    return _body_graph(body, tag, h_prev, xw_t, h_new, hidden, 1)


def _body_graph(
    body: GraphBuilder, tag: str, h_prev: str, xw_t: str, h_new: str, hidden: int, gates: int
) -> onnx.GraphProto:
    h_seq = body.op("Identity", [h_new])[0]
    f32 = TensorProto.FLOAT
    return helper.make_graph(
        body.nodes,
        f"{tag}_cell",
        [
            helper.make_tensor_value_info(h_prev, f32, ["batch", hidden]),
            helper.make_tensor_value_info(xw_t, f32, ["batch", gates * hidden]),
        ],
        [
            helper.make_tensor_value_info(h_new, f32, ["batch", hidden]),
            helper.make_tensor_value_info(h_seq, f32, ["batch", hidden]),
        ],
    )
