"""An int8 step path for GRU and RNN layers: one time step runs a lean cell, chunks the operator.

Each forward ``GRU`` / ``RNN`` operator of an int8 graph becomes an ``If`` on the time length
(issues 12 and 17):

* ``T == 1`` (``Stream.step``): the cell once, as one com.microsoft ``DynamicQuantizeMatMul`` over
  ``concat[x, h]`` with the input and recurrent weights stacked (``[W; R]``: one pass over the
  weights, the activation quantised once per layer), then the gate arithmetic.
* ``T > 1`` (chunks, whole sequences): the float ``GRU`` / ``RNN`` operator over the *same* int8
  weights, dequantised by nodes that read only initializers, which onnxruntime folds into
  constants when it loads the model (as it assembles the step's ``[W; R]`` from the stored ``W``
  and ``R`` blocks): the file stores the weights once, in int8, and a chunk runs
  at float32's speed (onnxruntime has no quantised GRU or RNN operator; the Scan over MatMuls of
  :mod:`rnnstream.export.scan_cells` is slower per frame than float32 for a GRU).

Weights are symmetric int8 per output column in 7 bits (±63), as ``quantize_dynamic``'s
``reduce_range`` stores them: onnxruntime's x86 kernels without VNNI sum uint8 x int8 products in
pairs into int16, which saturates at full range.

LSTM layers keep ``DynamicQuantizeLSTM``: at one step it measured faster than this explicit cell
(README, "Faster steps"). Operators the rewrite does not cover (bidirectional or reverse,
``sequence_lens``, ``layout=1``, ``clip``, non-default activations, GRU
``linear_before_reset=0``, weights that are not initializers) are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnstream.export.layers import GraphBuilder

__all__ = ["add_step_paths", "quantize_columns", "step_path_nodes"]

MS_DOMAIN = "com.microsoft"
_INT8_LIMIT = 63  # 7-bit weights: see the module docstring
_DEFAULT_ACTIVATIONS = {"GRU": [["Sigmoid", "Tanh"]], "RNN": [["Tanh"], ["Relu"]]}


@dataclass(frozen=True)
class _Layer:
    """One recurrent operator's weights (ONNX's gate order) and its RNN activation."""

    op_type: str
    w: np.ndarray  # [G*H, I]
    r: np.ndarray  # [G*H, H]
    wb: np.ndarray  # [G*H]
    rb: np.ndarray  # [G*H]
    activation: str

    @property
    def hidden(self) -> int:
        return self.r.shape[1]

    @property
    def inputs(self) -> int:
        return self.w.shape[1]

    def stacked(self) -> tuple[np.ndarray, np.ndarray]:
        """The step's projection: ``[W; R]`` transposed ([I+H, N]) and its bias [N].

        A GRU's columns are ``z|r`` (x's and h's parts summed), ``n`` from x, then ``n`` from h
        (the reset gate scales only h's part): N = 4H.
        """
        if self.op_type == "RNN":
            return np.concatenate([self.w, self.r], axis=1).T, self.wb + self.rb
        h, i = self.hidden, self.inputs
        big = np.zeros((4 * h, i + h), np.float32)
        big[: 2 * h, :i], big[: 2 * h, i:] = self.w[: 2 * h], self.r[: 2 * h]
        big[2 * h : 3 * h, :i] = self.w[2 * h :]
        big[3 * h :, i:] = self.r[2 * h :]
        bias = np.concatenate([(self.wb + self.rb)[: 2 * h], self.wb[2 * h :], self.rb[2 * h :]])
        return big.T, bias


@dataclass(frozen=True)
class _Int8Weights:
    """Tensor names: the step's int8 ``[W; R]`` transposed, its per-column scales, zero points
    and bias; and the stored blocks it is assembled from, ``W`` and ``R`` transposed with their
    column scales (the chunk operator's weights)."""

    q: str
    scale: str
    zero: str
    bias: str
    w_t: str
    w_scale: str
    r_t: str
    r_scale: str


def step_path_nodes(model: onnx.ModelProto) -> list[str]:
    """The names of the top-level recurrent operators of ``model`` a step path covers."""
    initializers = {init.name: init for init in model.graph.initializer}
    return [n.name for n in model.graph.node if _eligible(n, initializers) is not None]


def add_step_paths(model: onnx.ModelProto) -> list[str]:
    """Give every covered top-level GRU/RNN operator of ``model`` an int8 step path (in place).

    Returns the names of the operators rewritten. Run it after ``quantize_dynamic``: the ``If``
    branches read the outer graph's tensors implicitly, which its re-sorting of nodes ignores.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    new_nodes: list[onnx.NodeProto] = []
    rewritten: list[str] = []
    replaced: set[str] = set()
    for index, node in enumerate(graph.node):
        layer = _eligible(node, initializers)
        if layer is None:
            new_nodes.append(node)
            continue
        g = GraphBuilder(prefix=f"{node.name or node.op_type}_step{index}")
        _emit(node, layer, g)
        new_nodes.extend(g.nodes)
        graph.initializer.extend(g.initializers)
        replaced.update(node.input[1:4])
        rewritten.append(node.name)
    del graph.node[:]
    graph.node.extend(new_nodes)
    still_read = _read_names(graph)
    for init in [i for i in graph.initializer if i.name in replaced - still_read]:
        graph.initializer.remove(init)
    if rewritten and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return rewritten


def _read_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node of ``graph`` or of its subgraphs reads."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                names |= _read_names(attr.g)
    return names


def _eligible(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> _Layer | None:
    """The operator's weights when the step path covers it, else ``None``."""
    if node.op_type not in _DEFAULT_ACTIVATIONS or node.domain not in ("", "ai.onnx"):
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    inputs = list(node.input) + [""] * (6 - len(node.input))
    w_name, r_name, b_name, seq_lens, initial_h = inputs[1:6]
    if w_name not in initializers or r_name not in initializers:
        return None
    if (b_name and b_name not in initializers) or seq_lens or not initial_h:
        return None
    if attrs.get("direction", b"forward") != b"forward" or attrs.get("layout", 0):
        return None
    if {"clip", "activation_alpha", "activation_beta"} & attrs.keys():
        return None
    if node.op_type == "GRU" and not attrs.get("linear_before_reset", 0):
        return None
    activations = [a.decode() for a in attrs.get("activations", [])]
    if activations and activations not in _DEFAULT_ACTIVATIONS[node.op_type]:
        return None
    w = numpy_helper.to_array(initializers[w_name])
    r = numpy_helper.to_array(initializers[r_name])
    if w.dtype != np.float32 or r.dtype != np.float32:
        return None
    gh = r.shape[1]
    b = numpy_helper.to_array(initializers[b_name])[0] if b_name else np.zeros(2 * gh, np.float32)
    activation = activations[0] if activations else "Tanh"
    return _Layer(node.op_type, w[0], r[0], b[:gh], b[gh:], activation)


def quantize_columns(w_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``w_t`` [K, N] as symmetric 7-bit int8 with one scale per output column."""
    scale = np.maximum(np.abs(w_t).max(axis=0), 1e-12) / _INT8_LIMIT
    q = np.clip(np.round(w_t / scale), -_INT8_LIMIT, _INT8_LIMIT).astype(np.int8)
    return q, scale.astype(np.float32)


def _emit(node: onnx.NodeProto, layer: _Layer, g: GraphBuilder) -> None:
    """``If(T == 1)``: the lean step, else the operator over the same (dequantised) weights."""
    weights = _int8_weights(layer, g)
    time = g.op("Shape", [node.input[0]], start=0, end=1)[0]
    is_step = g.op("Equal", [time, g.ints("one", [1])])[0]  # [1]: If takes one element
    chunk = _chunk_node(node, layer, g, weights)
    g.op(
        "If",
        [is_step],
        out=[name for name in node.output if name],
        then_branch=_step_branch(node, layer, g, weights),
        else_branch=_branch_graph(f"{g.prefix}_chunk", [chunk], [o for o in chunk.output if o]),
    )


def _int8_weights(layer: _Layer, g: GraphBuilder) -> _Int8Weights:
    """The stacked projection quantised, stored as its x and h blocks (``W`` and ``R``
    transposed, int8, with their column scales) and assembled by outer-graph nodes of
    initializers only, which onnxruntime folds when it loads the model: a GRU's zero blocks are
    not stored."""
    wr_t, bias = layer.stacked()
    q, scale = quantize_columns(wr_t)
    i, h = layer.inputs, layer.hidden
    columns = np.arange(q.shape[1])
    if layer.op_type == "GRU":  # x feeds z|r and x's n block, h feeds z|r and h's n block
        x_cols, h_cols = columns[: 3 * h], np.r_[columns[: 2 * h], columns[3 * h :]]
    else:
        x_cols = h_cols = columns
    wq, rq = g.const("Wq_t", q[:i, x_cols]), g.const("Rq_t", q[i:, h_cols])
    if layer.op_type == "GRU":
        zeros = {
            rows: g.op(
                "ConstantOfShape",
                [g.ints("shape", [rows, h])],
                value=helper.make_tensor("zero", TensorProto.INT8, [1], [0]),
            )[0]
            for rows in (i, h)
        }
        rq_zr, rq_n = g.op("Split", [rq, g.ints("sizes", [2 * h, h])], n_out=2, axis=1)
        top = g.op("Concat", [wq, zeros[i]], axis=1)[0]
        bottom = g.op("Concat", [rq_zr, zeros[h], rq_n], axis=1)[0]
        stacked = g.op("Concat", [top, bottom], axis=0)[0]
    else:
        stacked = g.op("Concat", [wq, rq], axis=0)[0]
    return _Int8Weights(
        q=stacked,
        scale=g.const("WR_scale", scale),
        zero=g.const("WR_zero", np.zeros_like(scale, dtype=np.int8)),
        bias=g.const("WR_bias", bias),
        w_t=wq,
        w_scale=g.const("W_scale", scale[x_cols]),
        r_t=rq,
        r_scale=g.const("R_scale", scale[h_cols]),
    )


def _branch_graph(name: str, nodes: list[onnx.NodeProto], outputs: list[str]) -> onnx.GraphProto:
    values = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    return helper.make_graph(nodes, name, [], values)


def _step_branch(
    node: onnx.NodeProto, layer: _Layer, g: GraphBuilder, weights: _Int8Weights
) -> onnx.GraphProto:
    """One step of ``X`` [1, B, I] from ``initial_h`` [1, B, H]: ``Y`` [1, 1, B, H], ``Y_h``."""
    body = GraphBuilder(prefix=f"{g.prefix}/step", _ids=g._ids)
    x, initial_h = node.input[0], node.input[5]
    h = layer.hidden
    xh = body.op("Concat", [x, initial_h], axis=2)[0]
    ins = [xh, weights.q, weights.scale, weights.zero, weights.bias]
    pre = body.op("DynamicQuantizeMatMul", ins, domain=MS_DOMAIN)[0]
    if layer.op_type == "GRU":  # h' = n + z (h - n), n = tanh(xn + r hn)
        zr, xn, hn = body.op("Split", [pre, g.ints("sizes", [2 * h, h, h])], n_out=3, axis=2)
        z, reset = body.op("Split", [body.op("Sigmoid", [zr])[0]], n_out=2, axis=2, num_outputs=2)
        n = body.op("Tanh", [body.op("Add", [xn, body.op("Mul", [reset, hn])[0]])[0]])[0]
        kept = body.op("Mul", [z, body.op("Sub", [initial_h, n])[0]])[0]
        h_new = body.op("Add", [n, kept])[0]
    else:
        h_new = body.op(layer.activation, [pre])[0]
    y = body.op("Unsqueeze", [h_new, g.ints("axis", [1])])[0]
    outputs = [value for value, name in zip((y, h_new), node.output) if name]
    return _branch_graph(f"{g.prefix}_step", body.nodes, outputs)


def _chunk_node(
    node: onnx.NodeProto, layer: _Layer, g: GraphBuilder, weights: _Int8Weights
) -> onnx.NodeProto:
    """The float operator, for the chunk branch, over the int8 weights dequantised by
    outer-graph nodes of initializers only (folded into constants at load)."""
    first = g.ints("axis", [0])
    float_weights = []
    for q, scale in ((weights.w_t, weights.w_scale), (weights.r_t, weights.r_scale)):
        value = g.op("Mul", [g.op("Cast", [q], to=TensorProto.FLOAT)[0], scale])[0]
        float_weights += g.op("Unsqueeze", [g.op("Transpose", [value])[0], first])
    outputs = [g.name(f"{tag}_chunk") if name else "" for tag, name in zip("yh", node.output)]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    inputs = [node.input[0], *float_weights, *node.input[3:6]]
    return helper.make_node(node.op_type, inputs, outputs, g.name("chunk"), **attrs)
