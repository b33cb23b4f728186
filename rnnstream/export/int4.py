"""Weight-only 4-bit models: every linear weight as com.microsoft ``MatMulNBits``.

The recurrent operators (LSTM, GRU, RNN), which take no 4-bit weights, are first rewritten as a
``Scan`` over an explicit cell (:mod:`rnnstream.export.scan_cells`): the input projection of all
steps is one MatMul outside the loop, the recurrent projection one MatMul inside it. Then every
MatMul (and Gemm) whose weight is a float32 initializer, in the graph and in the Scan bodies, the
linear heads included, becomes ``MatMulNBits``, and an embedding (a Gather of rows of a float32
table whose width is a whole number of blocks) ``GatherBlockQuantized``: weights in blocks of
``block_size`` along the input dimension, each block 4-bit (levels -8..7 around the default zero
point 8) with one float32 scale. Inputs, outputs, states and biases stay float32, as do
operators without a linear weight (convolutions); inside ``MatMulNBits`` the activations are
quantised to int8 per block (``accuracy_level`` 4: twice as fast as float32 compute on the demo
model, and the same bits per character).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnstream.errors import ExportError
from rnnstream.export.graph_walk import MS_DOMAIN, all_nodes, subgraphs
from rnnstream.export.scan_cells import rewrite_as_scan

__all__ = [
    "BLOCK_SIZES",
    "DEFAULT_BLOCK_SIZE",
    "check_block_size",
    "pack_nbits",
    "to_int4",
]

BLOCK_SIZES = (16, 32, 64, 128, 256)  # powers of two MatMulNBits accepts (>= 16)
DEFAULT_BLOCK_SIZE = 32
ACCURACY_LEVEL = 4  # activations int8 inside the kernel: 2x faster than 1 (float32), same bpc
_CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8)


def check_block_size(precision: str, block_size: int | None) -> None:
    """Refuse a block size that MatMulNBits does not take, or one given for another precision."""
    if block_size is None:
        return
    if precision != "int4":
        raise ExportError(f"a block size applies to int4 only, not to {precision}")
    is_int = isinstance(block_size, (int, np.integer)) and not isinstance(block_size, bool)
    if not is_int or block_size not in BLOCK_SIZES:
        raise ExportError(f"int4 block size must be one of {list(BLOCK_SIZES)}, got {block_size!r}")


def pack_nbits(w: np.ndarray, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``w`` [N, K] packed for ``MatMulNBits``: ``[N, ceil(K/block), block*bits/8]`` uint8 and
    ``[N * ceil(K/block)]`` float32 scales (symmetric, default zero point ``2^(bits-1)``).

    K is padded with zeros to a whole number of blocks, as the operator expects. Each block's
    scale is the one of a few clipping ratios of its largest magnitude with the least squared
    error (clipping the rare outlier makes the other levels finer).
    """
    n, k = w.shape
    n_blocks = -(-k // block_size)
    padded = np.zeros((n, n_blocks * block_size), np.float32)
    padded[:, :k] = w
    blocks = padded.reshape(n, n_blocks, block_size)
    levels = 2 ** (bits - 1)
    peak = np.abs(blocks).max(axis=2)
    best_scale, best_err = None, None
    for ratio in _CLIP_RATIOS:
        scale = np.where(peak > 0, peak * ratio / (levels - 1), 1.0).astype(np.float32)
        q = np.clip(np.round(blocks / scale[..., None]), -levels, levels - 1)
        err = ((q * scale[..., None] - blocks) ** 2).sum(axis=2)
        if best_err is None:
            best_scale, best_err = scale, err
        else:
            better = err < best_err
            best_scale = np.where(better, scale, best_scale)
            best_err = np.where(better, err, best_err)
    q = np.clip(np.round(blocks / best_scale[..., None]) + levels, 0, 2 * levels - 1)
    q = q.astype(np.uint8)
    if bits == 4:
        q = q[..., 0::2] | (q[..., 1::2] << 4)
    return q, best_scale.reshape(-1)


def to_int4(model: onnx.ModelProto, block_size: int) -> tuple[onnx.ModelProto, dict]:
    """``model`` (float32) with its linear weights in 4 bits, and the details to record."""
    check_block_size("int4", block_size)
    block_size = int(block_size)
    kept = rewrite_as_scan(model, op_types=("LSTM", "GRU", "RNN"))
    if kept:
        raise ExportError(
            f"int4 needs every recurrent layer as an explicit cell, and {', '.join(kept)} use "
            "options the rewrite does not cover (see the warning above); export at int8 instead"
        )
    rewriter = _Rewriter(model.graph, block_size)
    rewriter.rewrite(model.graph)
    if not rewriter.packed:
        raise ExportError("int4: the model has no MatMul or Gemm with a float32 weight to quantise")
    used = {name for node in all_nodes(model.graph) for name in node.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
    if all(o.domain != MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    details = {
        "method": "com.microsoft MatMulNBits (weight-only)",
        "weights": f"4-bit symmetric, blocks of {block_size} along the input dimension",
        "block_size": block_size,
        "accuracy_level": ACCURACY_LEVEL,
        "activations": "float32",
        "quantised_weights": sorted(rewriter.packed),
    }
    return model, details


class _Rewriter:
    """Replaces MatMul/Gemm nodes with a float32 initializer weight by ``MatMulNBits``, in a graph
    and its subgraphs; each weight is packed once however many nodes read it."""

    def __init__(self, main: onnx.GraphProto, block_size: int) -> None:
        self.main = main
        self.block_size = block_size
        self.initializers = {i.name: i for i in main.initializer}
        self.packed: dict[str, tuple[str, str, int, int]] = {}

    def rewrite(self, graph: onnx.GraphProto) -> None:
        nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            for sub in subgraphs(node):
                self.rewrite(sub)
            nodes.extend(self._replacement(node) or [node])
        del graph.node[:]
        graph.node.extend(nodes)

    def _weight(self, name: str, transposed: bool) -> tuple[str, str, int, int] | None:
        """The packed ``(B, scales, K, N)`` of a float32 [K, N] (or [N, K]) initializer."""
        init = self.initializers.get(name)
        if init is None or init.data_type != TensorProto.FLOAT or len(init.dims) != 2:
            return None
        key = f"{name}/T" if transposed else name
        if key not in self.packed:
            w = numpy_helper.to_array(init)
            w_nk = w if transposed else w.T
            q, scales = pack_nbits(np.ascontiguousarray(w_nk, np.float32), 4, self.block_size)
            b_name, s_name = f"{key}/int4", f"{key}/int4_scales"
            self.main.initializer.extend(
                [numpy_helper.from_array(q, b_name), numpy_helper.from_array(scales, s_name)]
            )
            self.packed[key] = (b_name, s_name, w_nk.shape[1], w_nk.shape[0])
        return self.packed[key]

    def _matmul_nbits(self, node: onnx.NodeProto, a: str, packed, out: str) -> onnx.NodeProto:
        b_name, s_name, k, n = packed
        return helper.make_node(
            "MatMulNBits",
            [a, b_name, s_name],
            [out],
            name=f"{node.name or node.op_type}/int4",
            domain=MS_DOMAIN,
            K=k,
            N=n,
            bits=4,
            block_size=self.block_size,
            accuracy_level=ACCURACY_LEVEL,
        )

    def _embedding(self, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        """A Gather of rows of a float32 [V, E] table (E whole blocks): ``GatherBlockQuantized``."""
        init = self.initializers.get(node.input[0])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if init is None or init.data_type != TensorProto.FLOAT or len(init.dims) != 2:
            return None
        if axis != 0 or init.dims[1] % self.block_size:
            return None
        key = f"{init.name}/rows"
        if key not in self.packed:
            rows, width = init.dims
            q, scales = pack_nbits(numpy_helper.to_array(init), 4, self.block_size)
            b_name, s_name = f"{key}/int4", f"{key}/int4_scales"
            self.main.initializer.extend(
                [
                    numpy_helper.from_array(q.reshape(rows, -1), b_name),
                    numpy_helper.from_array(scales.reshape(rows, -1), s_name),
                ]
            )
            self.packed[key] = (b_name, s_name, width, rows)
        b_name, s_name, _, _ = self.packed[key]
        gather = helper.make_node(
            "GatherBlockQuantized",
            [b_name, node.input[1], s_name],
            list(node.output),
            name=f"{node.name or node.op_type}/int4",
            domain=MS_DOMAIN,
            bits=4,
            block_size=self.block_size,
            gather_axis=0,
            quantize_axis=1,
        )
        return [gather]

    def _replacement(self, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        if node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            return None
        if node.op_type == "Gather":
            return self._embedding(node)
        if node.op_type == "MatMul":
            packed = self._weight(node.input[1], transposed=False)
            if packed is None:
                return None
            return [self._matmul_nbits(node, node.input[0], packed, node.output[0])]
        if node.op_type != "Gemm":
            return None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
            return None
        packed = self._weight(node.input[1], transposed=bool(attrs.get("transB", 0)))
        if packed is None:
            return None
        if len(node.input) < 3 or not node.input[2]:
            return [self._matmul_nbits(node, node.input[0], packed, node.output[0])]
        product = f"{node.output[0]}/int4_product"
        bias = node.input[2]
        nodes = [self._matmul_nbits(node, node.input[0], packed, product)]
        if attrs.get("beta", 1.0) != 1.0:
            beta = f"{node.output[0]}/int4_beta"
            self.main.initializer.append(
                numpy_helper.from_array(np.asarray(attrs["beta"], np.float32), beta)
            )
            nodes.append(helper.make_node("Mul", [bias, beta], [f"{beta}_bias"]))
            bias = f"{beta}_bias"
        nodes.append(helper.make_node("Add", [product, bias], [node.output[0]]))
        return nodes
