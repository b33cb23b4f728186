"""Replace the placeholder nodes left by :mod:`rnnstream.export.trace` with real ONNX layers."""

from __future__ import annotations

import onnx
from onnx import helper

from rnnstream.errors import ExportError
from rnnstream.export.layers import GraphBuilder, RecurrentModule, build_recurrent
from rnnstream.export.trace import PLACEHOLDER_DOMAIN

__all__ = ["splice_recurrent"]


def splice_recurrent(model: onnx.ModelProto, modules: dict[str, RecurrentModule]) -> None:
    """Swap each placeholder node of ``model`` (in place) for the layers of ``modules[key]``."""
    graph = model.graph
    new_nodes: list[onnx.NodeProto] = []
    seen = set()
    for node in graph.node:
        if node.domain != PLACEHOLDER_DOMAIN:
            new_nodes.append(node)
            continue
        key = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "key")
        key = key.decode() if isinstance(key, bytes) else key
        if key not in modules:
            raise ExportError(f"placeholder for unknown recurrent module {key!r}")
        if key in seen:
            raise ExportError(
                f"recurrent module {key or '<model>'!r} runs more than once per forward; each "
                "recurrent module must run exactly once per step to carry one state"
            )
        seen.add(key)
        builder = GraphBuilder(prefix=key or "rnn")
        build_recurrent(
            modules[key],
            builder,
            node.input[0],
            list(node.input[1:]),
            node.output[0],
            list(node.output[1:]),
        )
        new_nodes.extend(builder.nodes)
        graph.initializer.extend(builder.initializers)
    missing = set(modules) - seen
    if missing:
        raise ExportError(f"recurrent modules {sorted(missing)} did not appear in the traced graph")
    del graph.node[:]
    graph.node.extend(new_nodes)
    # Shapes the exporter guessed for placeholder outputs are re-inferred from the real layers.
    kept = [v for v in graph.value_info if v.name not in {o for n in new_nodes for o in n.output}]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    imports = [op for op in model.opset_import if op.domain != PLACEHOLDER_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(imports)
