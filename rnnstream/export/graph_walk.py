"""Walking an ONNX graph together with its subgraphs (the bodies of ``Scan``, ``Loop`` and ``If``),
and the operator domain of onnxruntime's contrib operators."""

from __future__ import annotations

from collections.abc import Iterator

import onnx

__all__ = ["MS_DOMAIN", "all_graphs", "all_nodes", "read_names", "subgraphs"]

MS_DOMAIN = "com.microsoft"  # MatMulNBits, DynamicQuantizeMatMul, DynamicQuantizeLSTM, ...


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs ``node`` holds as attributes (one or a list), not the ones nested in them."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        yield from attr.graphs


def all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph in it, depth first."""
    yield graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from all_graphs(sub)


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """The nodes of ``graph`` and of every subgraph in it, depth first."""
    for node in graph.node:
        yield node
        for sub in subgraphs(node):
            yield from all_nodes(sub)


def read_names(node: onnx.NodeProto) -> set[str]:
    """The tensor names ``node`` reads, its subgraphs' nodes' inputs included (a body reads the
    outer graph's tensors by name)."""
    names = set(node.input)
    for sub in subgraphs(node):
        names.update(name for inner in all_nodes(sub) for name in inner.input)
    return names
