"""Lean one-step GRU and RNN cells for the step path (:mod:`rnnstream.export.step_path`).

A cell runs one time step of an ONNX ``GRU`` / ``RNN`` operator on time-major ``[1, B, F]``
tensors: an RNN's one projection over ``concat[x, h]`` with ``[W; R]`` stacked, a GRU's one over
``x`` and one over ``h`` (stacked, a quarter of its ``[W; R]`` would be zeros: measured no faster,
README "Faster steps"), then the gate arithmetic, the update and reset gates one block under one
``Sigmoid``. The projections are com.microsoft ``DynamicQuantizeMatMul`` (int8; the activation
quantised once per projection) or float32 ``MatMul``.

int8 weights are symmetric per output column in 7 bits (±63), as ``quantize_dynamic``'s
``reduce_range`` stores them: onnxruntime's x86 kernels without VNNI sum uint8 x int8 products in
pairs into int16, which saturates at full range. The operator of the chunk path reads the same
int8 values dequantised by outer-graph nodes of initializers only, which onnxruntime folds into
constants when it loads the model. At float32 the operator keeps its own weights, and the
step's stacked ones are computed from them by such folded nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnstream.export.graph_walk import MS_DOMAIN
from rnnstream.export.layers import GraphBuilder

__all__ = [
    "LeanLayer",
    "LeanWeights",
    "emit_cell",
    "lean_layer",
    "lean_weights",
    "quantize_columns",
]

_INT8_LIMIT = 63  # 7-bit weights: see the module docstring
_DEFAULT_ACTIVATIONS = {"GRU": [["Sigmoid", "Tanh"]], "RNN": [["Tanh"], ["Relu"]]}


@dataclass(frozen=True)
class LeanLayer:
    """One recurrent operator's weights (ONNX's gate order) and its RNN activation."""

    op_type: str
    w: np.ndarray  # [G*H, I]
    r: np.ndarray  # [G*H, H]
    wb: np.ndarray  # [G*H]
    rb: np.ndarray  # [G*H]
    activation: str
    stored: tuple[str, str]  # the initializers of W [1, G*H, I] and R [1, G*H, H]

    @property
    def hidden(self) -> int:
        return self.r.shape[1]

    @property
    def inputs(self) -> int:
        return self.w.shape[1]

    def projections(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """The step's projections, each ``(reads, weights [K, N], bias [N])``: an RNN one over
        ``concat[x, h]`` (``[W; R]`` transposed), a GRU one over ``x`` and one over ``h`` (its
        ``[W; R]`` would be a quarter zeros: x has no part in ``n``'s h block nor h in x's)."""
        if self.op_type == "RNN":
            return [("xh", np.concatenate([self.w, self.r], axis=1).T, self.wb + self.rb)]
        return [("x", self.w.T, self.wb), ("h", self.r.T, self.rb)]


@dataclass(frozen=True)
class Projection:
    """Outer-graph tensor names of one int8 projection: weights [K, N], column scales, zero
    points, bias; ``reads`` is what it projects (``x``, ``h`` or ``xh``)."""

    reads: str
    q: str
    scale: str
    zero: str
    bias: str


@dataclass(frozen=True)
class LeanWeights:
    """The cell's projections and the operator's dequantised ``W`` and ``R`` ([1, G*H, I|H])."""

    projections: tuple[Projection, ...]
    w: str
    r: str


def lean_layer(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> LeanLayer | None:
    """The operator's weights when a lean cell can run its step, else ``None``.

    Not covered: bidirectional or reverse, ``sequence_lens``, ``layout=1``, ``clip``, other
    activations, GRU ``linear_before_reset=0``, weights that are not float32 initializers.
    """
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
    return LeanLayer(node.op_type, w[0], r[0], b[:gh], b[gh:], activation, (w_name, r_name))


def quantize_columns(w_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``w_t`` [K, N] as symmetric 7-bit int8 with one scale per output column."""
    scale = np.maximum(np.abs(w_t).max(axis=0), 1e-12) / _INT8_LIMIT
    q = np.clip(np.round(w_t / scale), -_INT8_LIMIT, _INT8_LIMIT).astype(np.int8)
    return q, scale.astype(np.float32)


def lean_weights(layer: LeanLayer, g: GraphBuilder, *, int8: bool = True) -> LeanWeights:
    """The cell's projections and the ``W`` and ``R`` the operator reads, each stored once.

    ``int8``: the projections quantised per column, the operator's weights dequantised from the
    same int8 values (an RNN's ``[W; R]`` stored once). Else float32: the operator keeps its own
    initializers and the projections are computed from them (nodes of initializers only, which
    onnxruntime folds at load), so :func:`~rnnstream.export.step_path.without_step_path` gives
    the float graph back as it was.
    """
    if not int8:
        return _float_weights(layer, g)
    projections, blocks = [], []
    for reads, weights, bias in layer.projections():
        q, scale = quantize_columns(weights)
        names = (g.const(f"{reads}_q", q), g.const(f"{reads}_scale", scale))
        zero = g.const(f"{reads}_zero", np.zeros_like(scale, dtype=np.int8))
        projections.append(Projection(reads, *names, zero, g.const(f"{reads}_bias", bias)))
        blocks.append(names)
    if layer.op_type == "RNN":
        q, scale = blocks[0]
        blocks = g.op("Split", [q, g.ints("rows", [layer.inputs, layer.hidden])], n_out=2)
        blocks = [(block, scale) for block in blocks]
    float_weights = []
    for q, scale in blocks:
        value = g.op("Mul", [g.op("Cast", [q], to=TensorProto.FLOAT)[0], scale])
        float_weights += g.op("Unsqueeze", [g.op("Transpose", value)[0], g.ints("axis", [0])])
    return LeanWeights(tuple(projections), *float_weights)


def _float_weights(layer: LeanLayer, g: GraphBuilder) -> LeanWeights:
    """Float32 projections read from the operator's ``W`` and ``R`` (transposed, an RNN's
    stacked) and its summed biases (the one new initializer, ``[G*H]``)."""
    w, r = layer.stored
    squeeze = g.ints("axis", [0])
    matrices = {"x": [w], "h": [r], "xh": [w, r]}
    projections = []
    for reads, _, bias in layer.projections():
        parts = [g.op("Squeeze", [m, squeeze])[0] for m in matrices[reads]]
        rows = g.op("Concat", parts, axis=1)[0] if len(parts) > 1 else parts[0]
        weights = g.op("Transpose", [rows])[0]
        projections.append(Projection(reads, weights, "", "", g.const(f"{reads}_bias", bias)))
    return LeanWeights(tuple(projections), w, r)


def emit_cell(g: GraphBuilder, layer: LeanLayer, weights: LeanWeights, x: str, h_prev: str) -> str:
    """One step from ``x`` [1, B, I] and ``h_prev`` [1, B, H]: the new ``h`` [1, B, H]."""
    operands = {"x": x, "h": h_prev}
    pre = []
    for p in weights.projections:
        a = operands.get(p.reads) or g.op("Concat", [x, h_prev], axis=2)[0]
        if p.scale:
            ins = [a, p.q, p.scale, p.zero, p.bias]
            pre += g.op("DynamicQuantizeMatMul", ins, domain=MS_DOMAIN)
        else:
            pre += g.op("Add", [g.op("MatMul", [a, p.q])[0], p.bias])
    if layer.op_type == "RNN":
        return g.op(layer.activation, pre)[0]
    # GRU: h' = n + z (h - n), n = tanh(xn + r hn); z|r are one block under one Sigmoid
    h = layer.hidden
    sizes = g.ints("sizes", [2 * h, h])
    (x_zr, x_n), (h_zr, h_n) = (g.op("Split", [p, sizes], n_out=2, axis=2) for p in pre)
    gates = g.op("Sigmoid", g.op("Add", [x_zr, h_zr]))[0]
    z, reset = g.op("Split", [gates], n_out=2, axis=2, num_outputs=2)
    n = g.op("Tanh", [g.op("Add", [x_n, g.op("Mul", [reset, h_n])[0]])[0]])[0]
    kept = g.op("Mul", [z, g.op("Sub", [h_prev, n])[0]])[0]
    return g.op("Add", [n, kept])[0]
