"""The file is checked, not trusted: a signature must agree with the session it describes.

Metadata that contradicts the graph (a state name that is no input, a dtype or a fixed dimension
that differs, two states writing one output) would otherwise load and step with wrong numbers, or
fail later with an unrelated traceback. Each inconsistency is a ``SignatureError`` naming the
signature field; the loader adds the file's name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import onnxruntime as ort

from rnnstream.errors import SignatureError
from rnnstream.runtime.dtypes import numpy_dtype
from rnnstream.runtime.signature import Dim, Signature

__all__ = ["check_signature"]


def check_signature(
    signature: Signature, session: ort.InferenceSession, constants: Iterable[str] = ()
) -> None:
    """Raise :class:`SignatureError` unless ``signature`` describes ``session``'s graph."""
    inputs = {a.name: a for a in session.get_inputs()}
    outputs = {a.name: a for a in session.get_outputs()}
    sig = signature
    _agree("input", "name", sig.input.name, sig.input.dtype, sig.input.shape, inputs, "an input")
    output_names: dict[str, str] = {}
    for i, spec in enumerate(sig.outputs):
        field = f"outputs[{i}]"
        if spec.name in output_names:
            raise _mismatch(f"{field}.name", f"{spec.name!r} is also {output_names[spec.name]}")
        output_names[spec.name] = f"{field}.name"
        _agree(field, "name", spec.name, spec.dtype, spec.shape, outputs, "an output")
    state_inputs: dict[str, str] = {}
    state_outputs: dict[str, str] = {}
    for i, state in enumerate(sig.states):
        field = f"states[{i}]"
        if state.input == sig.input.name:
            raise _mismatch(f"{field}.input", f"{state.input!r} is the model's input")
        for name, seen, key in (
            (state.input, state_inputs, "input"),
            (state.output, state_outputs, "output"),
        ):
            if name in seen:
                raise _mismatch(
                    f"{field}.{key}", f"{name!r} is also {seen[name]}: each state has its own"
                )
            seen[name] = f"{field}.{key}"
        if state.output in output_names:
            raise _mismatch(
                f"{field}.output",
                f"{state.output!r} is also a model output ({output_names[state.output]})",
            )
        _agree(field, "input", state.input, state.dtype, state.shape, inputs, "an input")
        _agree(field, "output", state.output, state.dtype, state.shape, outputs, "an output")
        for axis, d in enumerate(state.shape):
            if axis != state.batch_axis and not isinstance(d, int):
                raise _mismatch(
                    f"{field}.shape",
                    f"dimension {axis} is {d!r}: a state's dimensions other than its batch axis "
                    "must be fixed sizes",
                )
    for i, spec in enumerate(sig.lengths):
        field = f"lengths[{i}]"
        if spec.name == sig.input.name or spec.name in state_inputs or spec.name in constants:
            raise _mismatch(
                f"{field}.name", f"{spec.name!r} is also the input, a state or a constant"
            )
        _agree(field, "name", spec.name, spec.dtype, spec.shape, inputs, "an input")
    covered = {sig.input.name, *state_inputs, *constants, *(s.name for s in sig.lengths)}
    uncovered = sorted(set(inputs) - covered)
    if uncovered:
        raise _mismatch(
            "input",
            f"the graph also takes {uncovered}, which are neither the input nor a state; "
            "pin them with constants={name: value} (CLI: --const NAME=VALUE)",
        )


def _mismatch(field: str, problem: str) -> SignatureError:
    return SignatureError(f"signature field {field}: {problem}")


def _agree(
    field: str,
    key: str,
    name: str,
    dtype: str,
    shape: tuple[Dim, ...],
    args: Mapping[str, ort.NodeArg],
    what: str,
) -> None:
    """The graph has ``name`` (``field.key``) among ``args`` with ``dtype`` and the same fixed
    sizes; a mismatch names ``field.key``, ``field.dtype`` or ``field.shape``."""
    if name not in args:
        raise _mismatch(f"{field}.{key}", f"{name!r} is not {what} of the graph ({sorted(args)})")
    arg = args[name]
    graph_dtype = numpy_dtype(arg)
    if graph_dtype != dtype:
        raise _mismatch(
            f"{field}.dtype", f"{name!r} is {graph_dtype} in the graph, the signature says {dtype}"
        )
    graph_shape = arg.shape
    if graph_shape is None:  # the graph does not know the rank
        return
    if len(graph_shape) != len(shape):
        raise _mismatch(
            f"{field}.shape",
            f"{name!r} has shape {list(graph_shape)} in the graph, the signature says "
            f"{list(shape)}",
        )
    for axis, (ours, theirs) in enumerate(zip(shape, graph_shape)):
        if isinstance(ours, int) and isinstance(theirs, int) and ours != theirs:
            raise _mismatch(
                f"{field}.shape",
                f"{name!r} has size {theirs} at dimension {axis} in the graph, the signature "
                f"says {ours}",
            )
