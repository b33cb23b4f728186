"""Size and per-step compute of an ONNX graph: parameter count and multiply-adds per step.

Needs the ``onnx`` package (the export extra); the torch-free runtime reads the numbers that
export recorded in the signature instead.
"""

from __future__ import annotations

import math

import onnx
from onnx import numpy_helper

from rnnstream.export.graph_walk import all_graphs

__all__ = ["graph_cost"]

# Operators whose weight inputs cost one multiply-add per weight per step (batch 1). For the
# recurrent operators these are W and R (inputs 1 and 2), not the biases.
_WEIGHT_INPUTS = {
    "MatMul": (1,),
    "Gemm": (1,),
    "LSTM": (1, 2),
    "GRU": (1, 2),
    "RNN": (1, 2),
    "MatMulInteger": (1,),
    "DynamicQuantizeLSTM": (1, 2),
}
_CONVOLUTIONS = ("Conv", "ConvInteger")

Dims = list[int | str]


def graph_cost(model: onnx.ModelProto) -> dict[str, int]:
    """``{"parameters": ..., "macs_per_step": ...}`` for one step of one sequence.

    Parameters are the floating-point initializers' elements (subgraphs' too); multiply-adds
    count each weight of a matrix product or recurrent operator once (embedding lookups and
    elementwise ops are free), and each weight of a convolution once per output position of a
    step: once for a convolution over time (``Conv1d``), once per output frequency bin for one
    over time and frequency (``Conv2d``). A step's positions are the output's spatial sizes known
    as numbers (the time axis has a symbolic size and counts once).
    """
    graphs = list(all_graphs(model.graph))
    initializers = [init for graph in graphs for init in graph.initializer]
    sizes = {
        init.name: numpy_helper.to_array(init).size
        for init in initializers
        if init.data_type != onnx.TensorProto.INT64
    }
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    parameters = sum(
        numpy_helper.to_array(init).size for init in initializers if init.data_type in float_types
    )
    nodes = [node for graph in graphs for node in graph.node]
    shapes = _shapes(model) if any(n.op_type in _CONVOLUTIONS for n in nodes) else {}
    macs = 0
    for node in nodes:
        if node.op_type in _CONVOLUTIONS:
            macs += _conv_macs(node, sizes, shapes)
        for index in _WEIGHT_INPUTS.get(node.op_type, ()):
            if index < len(node.input):
                macs += sizes.get(node.input[index], 0)
    return {"parameters": int(parameters), "macs_per_step": int(macs)}


def _shapes(model: onnx.ModelProto) -> dict[str, Dims]:
    """Every tensor's inferred shape, subgraphs included (``[]`` where unknown)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        return {}
    return {
        value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        for graph in all_graphs(inferred.graph)
        for value in [*graph.input, *graph.value_info, *graph.output]
    }


def _conv_macs(node: onnx.NodeProto, sizes: dict[str, int], shapes: dict[str, Dims]) -> int:
    """One step's multiply-adds of a convolution: its weights times the output positions per
    step (the spatial output sizes that are numbers; a symbolic one is the time axis)."""
    weight = sizes.get(node.input[1])
    if weight is None:  # computed in the graph (weight_norm): its inferred shape
        dims = shapes.get(node.input[1], [])
        weight = math.prod(dims) if dims and all(isinstance(d, int) for d in dims) else 0
    output = shapes.get(node.output[0], [])
    positions = math.prod(d for d in output[2:] if isinstance(d, int) and d > 0)
    return weight * positions
