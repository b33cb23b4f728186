"""Why a model matches PyTorch on whole sequences but not step by step: it mixes time steps.

A stream runs the graph on one step (or one chunk) at a time, carrying only the recurrent state.
Code outside the recurrent layers that looks at several steps at once (attention or a softmax over
time, a mean or sum over time, ``cumsum``, ``flip``, a convolution over time that is not streamed)
sees only the current step or chunk, so its results differ from the whole-sequence run's. When
parity fails that way, the error says so and names the ONNX nodes that act across the time axis:
the time axis is followed through the graph by shape inference (the input's ``time`` dimension),
and a node is named when it reduces, normalises, accumulates, reverses, convolves or multiplies
along it.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from rnnstream.runtime import Signature
from rnnstream.runtime.parity_record import ParityRecord, TensorError

__all__ = ["nodes_across_time", "time_mixing_note"]

_SHOWN = 6  # nodes named in a message; the rest are counted


def time_mixing_note(
    record: ParityRecord,
    whole: dict[str, TensorError],
    model: onnx.ModelProto,
    sig: Signature,
) -> str | None:
    """Two lines for a failed parity ``record`` whose whole-sequence run (``whole``, errors per
    tensor) matched: the cause and the nodes acting across time; None when that is not the case."""
    streamed = [e for mode in ("step", "chunk") for e in record.errors.get(mode, {}).values()]
    missed = any(not e.within(record.atol, record.rtol) for e in streamed)
    matched = all(e.within(record.atol, record.rtol) for e in whole.values())
    if not (missed and whole and matched) or sig.input.time_axis is None:
        return None
    worst = max(e.max_abs_err for e in whole.values())
    nodes = nodes_across_time(model, sig.input.time_axis)
    listed = ", ".join(nodes[:_SHOWN])
    if len(nodes) > _SHOWN:
        listed += f" and {len(nodes) - _SHOWN} more"
    found = (
        f"ONNX nodes acting across the time axis: {listed}"
        if nodes
        else "no ONNX node was found acting across the time axis by shape inference"
    )
    return (
        f"One whole-sequence run matches PyTorch (max abs err {worst:.2g}) but steps and chunks do "
        "not: the model mixes time steps outside its recurrent layers, which a stream cannot do.\n"
        f"{found}; make them causal (per step) or keep them outside the exported model."
    )


def nodes_across_time(model: onnx.ModelProto, time_axis: int) -> list[str]:
    """``"<op> '<name>' (axis <k>)"`` for each node that acts across the input's time axis."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    time_dim = graph.input[0].type.tensor_type.shape.dim[time_axis].dim_param
    if not time_dim:
        return []
    shapes = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*graph.input, *graph.value_info, *graph.output]
    }
    constants = _constants(graph)
    found = []
    for node in graph.node:
        operands = node.input if node.op_type in ("MatMul", "Gemm", "Einsum") else node.input[:1]
        for operand, name in enumerate(operands):
            shape = shapes.get(name, [])
            timed = {axis for axis, dim in enumerate(shape) if dim == time_dim}
            across = timed & _combined_axes(node, operand, len(shape), constants)
            if across:
                found.append(f"{node.op_type} {node.name!r} (axis {min(across)})")
                break
    return found


def _combined_axes(node: onnx.NodeProto, operand: int, rank: int, constants: dict) -> set[int]:
    """The axes of input ``operand`` (``rank``-D) along which ``node`` combines values."""
    op = node.op_type
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def constant(index: int) -> list[int] | None:
        if index >= len(node.input) or node.input[index] not in constants:
            return None
        return [int(v) for v in constants[node.input[index]].reshape(-1)]

    if op.startswith("Reduce"):
        axes = attrs.get("axes", constant(1))
        if not axes:
            return set() if attrs.get("noop_with_empty_axes", 0) else set(range(rank))
        return {a % rank for a in axes}
    if op in ("ArgMax", "ArgMin"):
        return {attrs.get("axis", 0) % rank}
    if op in ("Softmax", "LogSoftmax", "Hardmax", "TopK", "LpNormalization"):
        return {attrs.get("axis", -1) % rank}
    if op == "CumSum":
        axis = constant(1)
        return {axis[0] % rank} if axis else set()
    if op == "MatMul":  # contracts A's last axis with B's second-to-last
        return {rank - 1} if operand == 0 else ({rank - 2} if rank >= 2 else set())
    if op == "Gemm":
        transposed = attrs.get("transA" if operand == 0 else "transB", 0)
        return {1 - transposed if operand == 0 else transposed}
    if op == "Einsum":  # an operand's subscripts missing from the output are summed over
        inputs, _, output = attrs["equation"].decode().replace(" ", "").partition("->")
        subscripts = inputs.split(",")[operand]
        if "..." in subscripts or not output:
            return set()
        return {i for i, letter in enumerate(subscripts) if letter not in output}
    if op in ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"):
        return set(range(2, rank))
    if op == "ReverseSequence":
        return {attrs.get("time_axis", 0)}
    if op == "Slice":  # a flip: a negative step along the axis
        steps = constant(4)
        axes = constant(3) or list(range(len(steps or [])))
        return {a % rank for a, s in zip(axes, steps or []) if s < 0}
    return set()


def _constants(graph: onnx.GraphProto) -> dict:
    """The graph's constant tensors by name (initializers and Constant nodes' values)."""
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values
