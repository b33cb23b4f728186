"""Size and per-step compute of an ONNX graph: parameter count and multiply-adds per step.

Needs the ``onnx`` package (the export extra); the torch-free runtime reads the numbers that
export recorded in the signature instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from onnx import numpy_helper

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


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            for sub in attr.graphs:
                yield from _nodes(sub)


def graph_cost(model: onnx.ModelProto) -> dict[str, int]:
    """``{"parameters": ..., "macs_per_step": ...}`` for one step of one sequence.

    Parameters are the floating-point initializers' elements; multiply-adds count each weight of
    a matrix product or recurrent operator once (embedding lookups and elementwise ops are free).
    """
    sizes = {
        init.name: numpy_helper.to_array(init).size
        for init in model.graph.initializer
        if init.data_type != onnx.TensorProto.INT64
    }
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    parameters = sum(
        numpy_helper.to_array(init).size
        for init in model.graph.initializer
        if init.data_type in float_types
    )
    macs = 0
    for node in _nodes(model.graph):
        for index in _WEIGHT_INPUTS.get(node.op_type, ()):
            if index < len(node.input):
                macs += sizes.get(node.input[index], 0)
    return {"parameters": int(parameters), "macs_per_step": int(macs)}
