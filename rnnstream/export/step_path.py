"""One step path per model: the graph branches once on T == 1 (issues 12 and 17).

``add_step_path`` wraps a streamable export's graph in one ``If`` on the input's time length:

* ``T == 1`` (``Stream.step``, a pool's tick): the whole model's lean step. Its nodes are the
  graph's own, rewritten for a time axis of one: every forward ``GRU`` / ``RNN`` operator (int8
  models) or ``RNN`` operator (float32) a lean cell (:mod:`rnnstream.export.lean_cells`),
  whose output feeds the next layer without the ``Unsqueeze``/``Squeeze`` around the operator; a
  ``Transpose`` that only moves the time axis (the batch-first edges, a conv front-end's
  ``[B, T, C]`` to ``[B, C, T]``) a ``Reshape``, which onnxruntime runs without a copy. Other
  nodes (embeddings, causal convolutions and their contexts, ``LSTM`` / ``DynamicQuantizeLSTM``
  operators, users' heads) run as they are.
* otherwise (chunks, whole sequences): the graph as it was, the operators over the same weights.

Nodes that read only initializers stay outside the ``If`` (onnxruntime folds them when it loads
the model): the assembly of the stacked step weights from the operator's ones, the dequantisation
of int8 weights. ``without_step_path`` undoes the wrapping (what the quantisers start from).

A stream's step session pins the batch and time dims (``T == 1``): onnxruntime then folds the
``If`` and inlines the step branch, whose weights are main-graph initializers it prepacks. The
general session (a pool's tick) runs the ``If``: ~6 µs a run, and the step's int8 products
repack their outer-scope weights at every run (README "Faster steps").
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from rnnstream.export.graph_walk import MS_DOMAIN, read_names
from rnnstream.export.layers import GraphBuilder
from rnnstream.export.lean_cells import emit_cell, lean_layer, lean_weights
from rnnstream.runtime import METADATA_KEY, Signature

__all__ = ["STEP_PATH_NODE", "add_step_path", "step_path_nodes", "step_shapes", "without_step_path"]

STEP_PATH_NODE = "rnnstream/step_path"
_STEP, _CHUNK = "step/", "chunk/"
_INT8_CELLS, _FLOAT_CELLS = ("GRU", "RNN"), ("RNN",)
Shapes = dict[str, list[int | str | None]]


def step_path_nodes(
    model: onnx.ModelProto, signature: Signature | None = None, *, int8: bool = True
) -> list[str]:
    """The top-level operators of ``model`` a step path would run as lean cells (none when the
    model does not stream or has a step path already): ``GRU`` and ``RNN`` at int8, ``RNN`` at
    float32 (onnxruntime's float ``GRU`` kernel beats the lean cell, README "Faster steps")."""
    graph = model.graph
    signature = signature or _signature(model)
    if signature is None or any(n.name == STEP_PATH_NODE for n in graph.node):
        return []
    if not signature.streamable or signature.input.time_axis is None:
        return []
    initializers = {init.name: init for init in graph.initializer}
    ops = _INT8_CELLS if int8 else _FLOAT_CELLS
    return [n.name for n in graph.node if n.op_type in ops and lean_layer(n, initializers)]


def add_step_path(
    model: onnx.ModelProto,
    signature: Signature | None = None,
    *,
    shapes: Shapes | None = None,
    int8: bool = True,
) -> list[str]:
    """Wrap ``model``'s graph (in place) in one ``If`` whose ``T == 1`` branch is the lean step.

    ``signature``: the model's (default: read from its metadata). ``int8``: the lean cells'
    projections are ``DynamicQuantizeMatMul`` over int8 weights (the operators read them
    dequantised); else float ``MatMul`` over the operators' own weights, for ``RNN`` operators
    only (:func:`step_path_nodes`). ``shapes``: tensor dims, to find the transposes that only
    move the time axis (default: onnxruntime's symbolic shape inference of ``model``). Returns
    the names of the operators that run as lean cells; when there are none (the model does not
    stream, has a step path already, or has no operator a cell covers) it is left as it is.
    """
    graph = model.graph
    signature = signature or _signature(model)
    initializers = {init.name: init for init in graph.initializer}
    layers = {
        name: lean_layer(_node(graph, name), initializers)
        for name in step_path_nodes(model, signature, int8=int8)
    }
    if not layers:
        return []
    if shapes is None:
        shapes = step_shapes(model)
    taken = (
        {i.name for i in graph.input}
        | set(initializers)
        | {o for n in graph.node for o in n.output}
    )
    outer = GraphBuilder(prefix=_fresh_prefix(taken, "step_path"))
    weights = {name: lean_weights(layer, outer, int8=int8) for name, layer in layers.items()}
    constant = _constant_nodes(graph, set(initializers) | {i.name for i in outer.initializers})
    moving = [n for n in graph.node if n not in constant]
    outer_names = (
        {i.name for i in graph.input}
        | set(initializers)
        | {i.name for i in outer.initializers}
        | {o for n in [*constant, *outer.nodes] for o in n.output}
    )
    x = signature.input.name
    time_param = _dims(next(i for i in graph.input if i.name == x))[signature.input.time_axis]
    if not isinstance(time_param, str):  # a fixed length: no dim can be told to be time's
        time_param = None
    step = _StepBranch(outer_names, shapes, time_param, initializers, outer, moving)
    for node in moving:
        if node.name in layers:
            step.cell(node, layers[node.name], weights[node.name])
        else:
            step.copy(node)
    outputs = [o.name for o in graph.output]
    then_branch = step.graph([step.output(o) for o in outputs], graph.output)
    else_branch = _chunk_branch(moving, weights, outputs, outer_names, graph.output)
    axis = signature.input.time_axis
    time = outer.op("Shape", [x], start=axis, end=axis + 1)[0]
    is_step = outer.op("Equal", [time, outer.ints("one", [1])])[0]
    wrap = helper.make_node(
        "If", [is_step], outputs, STEP_PATH_NODE, then_branch=then_branch, else_branch=else_branch
    )
    nodes = [*constant, *outer.nodes, wrap]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(outer.initializers)
    del graph.value_info[:]
    _drop_unread_initializers(graph)
    if int8 and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return list(layers)


def without_step_path(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (in place) with its step path removed: the chunk branch's nodes back at the top
    level, the step's weights and nodes dropped. A model without one is returned as it is."""
    graph = model.graph
    wrap = next((n for n in graph.node if n.name == STEP_PATH_NODE), None)
    if wrap is None:
        return model
    chunk = next(a.g for a in wrap.attribute if a.name == "else_branch")
    back = {inner.name: name for inner, name in zip(chunk.output, wrap.output)}
    nodes = [n for n in graph.node if n is not wrap]
    for node in chunk.node:
        node = onnx.NodeProto.FromString(node.SerializeToString())
        _rename(node, back)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(_prune(nodes, [o.name for o in graph.output]))
    _drop_unread_initializers(graph)
    return model


def _fresh_prefix(names: set[str], prefix: str) -> str:
    """``prefix``, lengthened until no tensor name starts with it: the cells' new tensors are
    named under it, next to the graph's own tensors renamed under ``step/``."""
    while any(name.startswith(prefix + "/") for name in names):
        prefix += "_"
    return prefix


class _StepBranch:
    """Builds the ``T == 1`` branch node by node, renaming its tensors under ``step/``."""

    def __init__(
        self,
        outer_names: set[str],
        shapes: Shapes,
        time_param: int | str | None,
        initializers: dict[str, onnx.TensorProto],
        outer: GraphBuilder,
        moving: list[onnx.NodeProto],
    ) -> None:
        taken = {o for n in moving for o in n.output}
        self.g = GraphBuilder(prefix=_STEP + _fresh_prefix(taken, "lean"), _ids=outer._ids)
        self.outer, self.outer_names = outer, outer_names
        self.shapes, self.time_param, self.initializers = shapes, time_param, initializers
        self.names: dict[str, str] = {}
        self.unsqueezed: dict[str, str] = {}  # a cell's Y [1, 1, B, H] -> its h [1, B, H]

    def read(self, name: str) -> str:
        if not name or name in self.outer_names:
            return name
        if name in self.unsqueezed and name not in self.names:
            h = self.unsqueezed[name]
            self.names[name] = self.g.op("Unsqueeze", [h, self.outer.ints("axis", [1])])[0]
        return self.names[name]

    def cell(self, node: onnx.NodeProto, layer, weights) -> None:
        h = emit_cell(self.g, layer, weights, self.read(node.input[0]), self.read(node.input[5]))
        y, y_h = [*node.output, ""][:2]
        if y:
            self.unsqueezed[y] = h
        if y_h:
            self.names[y_h] = h

    def copy(self, node: onnx.NodeProto) -> None:
        if node.op_type == "Squeeze" and node.input[0] in self.unsqueezed:
            axes = self._constant(node.input[1]) if len(node.input) > 1 else None
            if axes is not None and axes.tolist() == [1]:
                self.names[node.output[0]] = self.unsqueezed[node.input[0]]
                return
        if node.op_type == "Transpose":
            shape = self._time_only_transpose(node)
            if shape is not None:
                target = self.outer.ints("shape", shape)
                out = self.g.op("Reshape", [self.read(node.input[0]), target])[0]
                self.names[node.output[0]] = out
                return
        new = onnx.NodeProto.FromString(node.SerializeToString())
        del new.input[:]
        new.input.extend(self.read(i) for i in node.input)
        del new.output[:]
        for name in node.output:
            self.names[name] = _STEP + name if name else ""
            new.output.append(self.names[name])
        self.g.nodes.append(new)

    def output(self, name: str) -> str:
        read = self.read(name)
        if read in self.outer_names:  # a branch must compute its outputs
            return self.g.op("Identity", [read])[0]
        return read

    def graph(self, outputs: list[str], declared) -> onnx.GraphProto:
        """The branch. Its int8 matrices stay in the outer graph, stored once: a stream's step
        session pins the model's time dim to 1, which folds the ``If`` and inlines this branch,
        so onnxruntime prepacks them as main-graph initializers (unpinned, as a pool's tick runs
        it, the branch's integer products pack them again at every run: README "Faster steps")."""
        self.outer.initializers.extend(self.g.initializers)
        values = [_like(name, d) for name, d in zip(outputs, declared)]
        return helper.make_graph(self.g.nodes, "step", [], values)

    def _constant(self, name: str) -> np.ndarray | None:
        init = self.initializers.get(name)
        return None if init is None else numpy_helper.to_array(init)

    def _time_only_transpose(self, node: onnx.NodeProto) -> list[int] | None:
        """The ``Reshape`` target equal to this transpose at T == 1, if it only moves unit axes
        (time, sizes of 1) relative to the others and at most one of those is dynamic."""
        dims = self.shapes.get(node.input[0])
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        if not dims or perm is None or None in dims or self.time_param not in dims:
            return None
        unit = [d == 1 or d == self.time_param for d in dims]
        moved = [a for a in perm if not unit[a]]
        if moved != sorted(moved):
            return None
        target = [1 if unit[a] else dims[a] for a in perm]
        dynamic = [k for k, d in enumerate(target) if isinstance(d, str)]
        if len(dynamic) > 1:
            return None
        return [-1 if isinstance(d, str) else d for d in target]


def _chunk_branch(
    nodes: list[onnx.NodeProto],
    weights: dict,
    outputs: list[str],
    outer_names: set[str],
    declared,
) -> onnx.GraphProto:
    """The graph as it was, its outputs renamed under ``chunk/`` (the ``If`` outputs the names)
    and each lean-cell operator reading its weights as the step path stores them."""
    renamed = {o: _CHUNK + o for o in outputs if o not in outer_names}
    branch = []
    for node in nodes:
        node = onnx.NodeProto.FromString(node.SerializeToString())
        _rename(node, renamed)
        if node.name in weights:
            node.input[1], node.input[2] = weights[node.name].w, weights[node.name].r
        branch.append(node)
    names = []
    for name in outputs:
        if name in renamed:
            names.append(renamed[name])
        else:  # a graph input or constant passed through
            names.append(_CHUNK + name)
            branch.append(helper.make_node("Identity", [name], [names[-1]]))
    values = [_like(name, d) for name, d in zip(names, declared)]
    return helper.make_graph(branch, "chunk", [], values)


def _like(name: str, declared: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, declared.type.tensor_type.elem_type, None)


def _rename(node: onnx.NodeProto, names: dict[str, str]) -> None:
    for field in (node.input, node.output):
        for k, name in enumerate(field):
            field[k] = names.get(name, name)


def _signature(model: onnx.ModelProto) -> Signature | None:
    props = {p.key: p.value for p in model.metadata_props}
    return Signature.from_json(props[METADATA_KEY]) if METADATA_KEY in props else None


def _node(graph: onnx.GraphProto, name: str) -> onnx.NodeProto:
    return next(n for n in graph.node if n.name == name)


def _constant_nodes(graph: onnx.GraphProto, known: set[str]) -> list[onnx.NodeProto]:
    """The top-level nodes computed from initializers only (folded by onnxruntime at load)."""
    known = set(known)
    constant = []
    for node in graph.node:
        has_graph = any(a.type == onnx.AttributeProto.GRAPH for a in node.attribute)
        if not has_graph and all(i in known for i in node.input if i):
            constant.append(node)
            known.update(node.output)
    return constant


def _prune(nodes: list[onnx.NodeProto], outputs: list[str]) -> list[onnx.NodeProto]:
    """``nodes`` that the graph outputs depend on, in order."""
    needed = set(outputs)
    kept = []
    for node in reversed(nodes):
        if needed & set(node.output):
            kept.append(node)
            needed |= read_names(node)
    return kept[::-1]


def _drop_unread_initializers(graph: onnx.GraphProto) -> None:
    read = set().union(*(read_names(n) for n in graph.node)) | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    return [
        d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
        for d in value.type.tensor_type.shape.dim
    ]


def step_shapes(model: onnx.ModelProto) -> Shapes:
    """Every tensor's dims (unknown ones ``None``) by onnxruntime's symbolic shape inference, which
    keeps ``time`` through a convolution's context (onnx's own names that dim anew); by onnx's
    when the symbolic one fails (it raises whatever the graph trips it on)."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # whatever the graph trips it on: onnx's inference instead
        inferred = None
    if inferred is None:
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
            return {}
    graph = inferred.graph
    values = [*graph.input, *graph.value_info, *graph.output]
    return {v.name: _dims(v) for v in values if v.type.tensor_type.HasField("shape")}
