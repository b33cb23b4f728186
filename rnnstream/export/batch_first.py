"""A batch-first copy of a streamable model: what Triton's ONNX Runtime backend needs.

Triton batches along the first axis of every input, output and implicit state, and feeds one
step per request. The copy takes one step ``[batch, frame...]``, states ``[batch, rest...]``
and returns outputs ``[batch, ...]``: the original graph, untouched, sits between transposes
(and an unsqueeze/squeeze of the time axis) at its edges, under the original tensor names.
Its signature is rewritten to match, and its parity with the original is checked before it is
written.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from rnnstream.errors import ExportError, ParityError
from rnnstream.export.graph_walk import all_nodes
from rnnstream.export.tolerance import tolerance_for
from rnnstream.runtime import METADATA_KEY, Model, Signature, StateSpec, TensorSpec, load

__all__ = ["batch_first_signature", "write_batch_first"]

INNER = "__model"  # suffix of the original graph's renamed edge tensors
AXIS_ONE = "__axis_one"  # the constant [1]: the time axis of a step, unsqueezed and squeezed


def batch_first_signature(sig: Signature) -> Signature:
    """The signature of the batch-first copy: every tensor ``[batch, ...]``, one step per call."""
    frame = [d for axis, d in enumerate(sig.input.shape) if axis not in _batch_time(sig.input)]
    return replace(
        sig,
        input=TensorSpec(sig.input.name, sig.input.dtype, ("batch", *frame), 0, None),
        outputs=tuple(
            TensorSpec(
                o.name,
                o.dtype,
                ("batch", *[d for a, d in enumerate(o.shape) if a not in _batch_time(o)]),
                0,
                None,
            )
            for o in sig.outputs
        ),
        states=tuple(
            StateSpec(
                s.input,
                s.output,
                s.dtype,
                ("batch", *[d for a, d in enumerate(s.shape) if a != s.batch_axis]),
                0,
            )
            for s in sig.states
        ),
    )


def write_batch_first(
    source: str | Path, target: str | Path, steps: int = 24, rows: int = 3
) -> dict:
    """Write the batch-first copy of ``source`` to ``target`` after checking its parity.

    Parity: ``rows`` random sequences of ``steps`` steps through the copy (states fed back by
    hand, as Triton does) against a batched :class:`~rnnstream.Stream` of the original; every
    output and final state must be within the model's precision tolerance. Returns the parity
    report; raises :class:`ParityError` (nothing written) when it fails.
    """
    model = load(source)
    _require_batchable(model)
    proto = onnx.load(str(source))
    copy = _rewrite(proto, model.signature)
    report = _parity(model, copy.SerializeToString(), steps, rows)
    if not report["passed"]:
        raise ParityError(
            f"the batch-first copy of {source} differs from it by {report['max_abs_err']:.3g} "
            f"(tolerance {report['atol']:g} absolute or {report['rtol']:g} relative)",
            report,
        )
    onnx.save(copy, str(target))
    return report


def _batch_time(spec: TensorSpec) -> set[int]:
    return {a for a in (spec.batch_axis, spec.time_axis) if a is not None}


def _require_batchable(model: Model) -> None:
    sig = model.signature
    if not sig.streamable:
        raise ExportError(f"{model.name} is not streamable (kind {sig.kind!r})")
    unbatched = [t.name for t in (sig.input, *sig.outputs) if t.batch_axis is None]
    unbatched += [s.input for s in sig.states if s.batch_axis is None]
    if unbatched:
        raise ExportError(f"{model.name}: {', '.join(unbatched)} have no batch axis to put first")
    extra = (
        {i.name for i in model.session.get_inputs()}
        - {sig.input.name}
        - {s.input for s in sig.states}
    )
    if extra:
        raise ExportError(f"{model.name} has inputs besides its input and states: {sorted(extra)}")


def _labels(shape: tuple, batch_axis: int, time_axis: int | None) -> list[str]:
    """Axis labels in the model's order: "b", "t", and "f0", "f1", ... for the others."""
    labels, others = [], 0
    for axis in range(len(shape)):
        if axis == batch_axis:
            labels.append("b")
        elif axis == time_axis:
            labels.append("t")
        else:
            labels.append(f"f{others}")
            others += 1
    return labels


def _rewrite(proto: onnx.ModelProto, sig: Signature) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    graph = copy.graph
    opset = next(o.version for o in copy.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        raise ExportError(f"opset {opset}: the batch-first copy needs opset 13 or newer")
    edge_inputs = [(sig.input.name, sig.input.batch_axis, sig.input.time_axis)]
    edge_inputs += [(s.input, s.batch_axis, None) for s in sig.states]
    edge_outputs = [(o.name, o.batch_axis, o.time_axis) for o in sig.outputs]
    edge_outputs += [(s.output, s.batch_axis, None) for s in sig.states]
    renames = {name: name + INNER for name, _, _ in edge_inputs + edge_outputs}
    _rename(graph, renames)
    before, after, new_inputs, new_outputs = [], [], [], []
    inputs = {v.name: v for v in graph.input}
    for name, batch_axis, time_axis in edge_inputs:
        inner = inputs[renames[name]]
        shape = _dims(inner)
        labels = _labels(shape, batch_axis, time_axis)
        outer = _outer(labels)
        source = name
        if time_axis is not None:
            before.append(_node("Unsqueeze", [name, AXIS_ONE], name + "__t"))
            source = name + "__t"
        before.append(_node("Transpose", [source], inner.name, perm=_perm(outer, labels)))
        new_inputs.append(
            _value_info(name, inner, [shape[labels.index(x)] for x in outer if x != "t"])
        )
    outputs = {v.name: v for v in graph.output}
    for name, batch_axis, time_axis in edge_outputs:
        inner = outputs[renames[name]]
        shape = _dims(inner)
        labels = _labels(shape, batch_axis, time_axis)
        outer = _outer(labels)
        if time_axis is None:
            after.append(_node("Transpose", [inner.name], name, perm=_perm(labels, outer)))
        else:
            after.append(_node("Transpose", [inner.name], name + "__t", perm=_perm(labels, outer)))
            after.append(_node("Squeeze", [name + "__t", AXIS_ONE], name))
        new_outputs.append(
            _value_info(name, inner, [shape[labels.index(x)] for x in outer if x != "t"])
        )
    if any(n.op_type in ("Unsqueeze", "Squeeze") for n in before + after):
        graph.initializer.append(helper.make_tensor(AXIS_ONE, onnx.TensorProto.INT64, [1], [1]))
    kept = list(graph.node)
    del graph.node[:]
    graph.node.extend([*before, *kept, *after])
    del graph.input[:]
    graph.input.extend(new_inputs)
    del graph.output[:]
    graph.output.extend(new_outputs)
    props = {p.key: p.value for p in copy.metadata_props}
    props[METADATA_KEY] = batch_first_signature(sig).to_json()
    del copy.metadata_props[:]
    for key, value in props.items():
        copy.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(copy)
    return copy


def _rename(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    """Rename tensors everywhere in ``graph``, subgraphs (loop and scan bodies) included."""
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = renames.get(value.name, value.name)
    for node in all_nodes(graph):
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in value.type.tensor_type.shape.dim
    ]


def _value_info(
    name: str, like: onnx.ValueInfoProto, shape: list[int | str]
) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, like.type.tensor_type.elem_type, shape)


def _outer(labels: list[str]) -> list[str]:
    """The caller's order of the same axes: batch, time, then the others in the model's order."""
    return ["b", *(["t"] if "t" in labels else []), *[x for x in labels if x[0] == "f"]]


def _perm(source: list[str], target: list[str]) -> list[int]:
    """The Transpose perm that turns axes labelled ``source`` into the order ``target``."""
    return [source.index(x) for x in target]


def _node(op: str, inputs: list[str], output: str, **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=f"{output}__{op.lower()}", **attrs)


def _parity(model: Model, copy: bytes, steps: int, rows: int) -> dict:
    sig = model.signature
    tolerance = tolerance_for(sig.precision, sig.parity)
    rng = np.random.default_rng(0)
    frame = [d if isinstance(d, int) else 2 for d in batch_first_signature(sig).input.shape[1:]]
    if sig.num_tokens is not None:
        x = rng.integers(0, sig.num_tokens, (steps, rows, *frame)).astype(sig.input.dtype)
    else:
        x = rng.standard_normal((steps, rows, *frame)).astype(sig.input.dtype)
    session = ort.InferenceSession(copy, providers=["CPUExecutionProvider"])
    first = batch_first_signature(sig)
    state = {s.input: np.zeros(s.concrete_shape(rows), s.dtype) for s in first.states}
    stream = model.stream(batch=rows)
    names = [o.name for o in sig.outputs] + [s.output for s in sig.states]
    worst = {"max_abs_err": 0.0, "max_rel_err": 0.0}
    passed = True
    for t in range(steps):
        results = dict(zip(names, session.run(names, {sig.input.name: x[t], **state})))
        state = {s.input: results[s.output] for s in sig.states}
        expected = stream.step(x[t])
        expected = expected if isinstance(expected, dict) else {sig.outputs[0].name: expected}
        got = {name: results[name] for name in expected}
        if t == steps - 1:
            final = stream.state
            for s in sig.states:
                expected[s.output] = np.moveaxis(final[s.input], s.batch_axis, 0)
                got[s.output] = results[s.output]
        for name, ref in expected.items():
            diff = float(np.max(np.abs(got[name].astype(np.float64) - ref))) if ref.size else 0.0
            scale = float(np.max(np.abs(ref))) if ref.size else 0.0
            rel = diff / max(scale, 1e-30)
            passed = passed and (diff <= tolerance.atol or rel <= tolerance.rtol)
            worst = {
                "max_abs_err": max(worst["max_abs_err"], diff),
                "max_rel_err": max(worst["max_rel_err"], rel),
            }
    return {
        "steps": steps,
        "batch": rows,
        "atol": tolerance.atol,
        "rtol": tolerance.rtol,
        **worst,
        "passed": passed,
    }
