"""A signature for an ONNX model that has none: state pairs found from names and shapes.

Stateful models from elsewhere (Silero VAD, sherpa-onnx, hand-made exports) name their state
inputs and outputs by a handful of conventions; a pair must also agree in dtype and shape. What the
names cannot tell, the caller gives as ``state_map={"state": "stateN"}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import onnxruntime as ort

from rnnstream.errors import SignatureError
from rnnstream.runtime.signature import Dim, Signature, StateSpec, TensorSpec

__all__ = ["discover_signature", "numpy_dtype", "state_output_candidates"]

_ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}

# (pattern on the input name, replacement giving the output name), tried in order.
_PAIR_RULES: list[tuple[str, str]] = [
    (r"^(.*)0$", r"\1n"),  # h0 -> hn, c0 -> cn, rnn_h0 -> rnn_hn
    (r"^(.*)_in$", r"\1_out"),  # state_in -> state_out
    (r"^in_(.*)$", r"out_\1"),
    (r"^(.*)_prev$", r"\1_next"),
    (r"^past_(.*)$", r"present_\1"),  # past_key -> present_key
    (r"^past$", r"present"),
    (r"^cached_(.*)$", r"new_cached_\1"),  # sherpa-onnx streaming encoders
    (r"^(.*)$", r"\1N"),  # state -> stateN (Silero VAD)
    (r"^(.*)$", r"\1n"),  # h -> hn
    (r"^(.*)$", r"\1_out"),  # h -> h_out
    (r"^(.*)$", r"\1_new"),
    (r"^(.*)$", r"\1_next"),
    (r"^(.*)$", r"new_\1"),
    (r"^(.*)$", r"next_\1"),
]


def state_output_candidates(name: str) -> list[str]:
    """Output names that would pair with state input ``name``, most specific first."""
    out = []
    for pattern, repl in _PAIR_RULES:
        if re.match(pattern, name):
            candidate = re.sub(pattern, repl, name)
            if candidate != name and candidate not in out:
                out.append(candidate)
    return out


def numpy_dtype(arg: ort.NodeArg) -> str:
    """The numpy dtype name of an onnxruntime input or output."""
    return _ONNX_TYPES.get(arg.type, arg.type)


def _dims(arg: ort.NodeArg) -> tuple[Dim, ...]:
    return tuple(d if isinstance(d, int) else (d or "?") for d in arg.shape)


def _compatible(a: ort.NodeArg, b: ort.NodeArg) -> bool:
    if numpy_dtype(a) != numpy_dtype(b) or len(a.shape) != len(b.shape):
        return False
    return all(
        not (isinstance(x, int) and isinstance(y, int)) or x == y for x, y in zip(a.shape, b.shape)
    )


_TIME_NAMES = re.compile(r"time|seq|len|frame|step|^t$|^T$", re.IGNORECASE)


def _batch_axis(dims: tuple[Dim, ...], prefer: int) -> int | None:
    """The first dynamic axis; for fully static shapes a size-1 axis (``prefer`` first)."""
    for axis, d in enumerate(dims):
        if isinstance(d, str):
            return axis
    if len(dims) > prefer and dims[prefer] == 1:
        return prefer
    return 0 if dims and dims[0] == 1 else None


def _input_axes(dims: tuple[Dim, ...], state_dims: set[str]) -> tuple[int | None, int | None]:
    """Batch and time axes of the main input.

    Batch is the dynamic axis that shares its name with a state's dynamic axis, else one named
    like "batch", else the first dynamic axis. Time is another dynamic axis when the input has
    three or more axes or that axis is named like a time axis ("time", "seq", "len", ...).
    """
    dynamic = [i for i, d in enumerate(dims) if isinstance(d, str)]
    shared = [i for i in dynamic if dims[i] in state_dims and dims[i] != "?"]
    named = [i for i in dynamic if "batch" in str(dims[i]).lower()]
    batch = (shared or named or [_batch_axis(dims, prefer=0)])[0]
    rest = [i for i in dynamic if i != batch]
    timeish = [i for i in rest if _TIME_NAMES.search(str(dims[i]))]
    if timeish:
        return batch, timeish[0]
    return batch, (rest[0] if rest and len(dims) >= 3 else None)


def _same_dim(dims: tuple[Dim, ...], x_dims: tuple[Dim, ...], x_axis: int) -> int | None:
    """The axis of ``dims`` named like the input's axis ``x_axis`` (symbolic names only)."""
    name = x_dims[x_axis]
    if isinstance(name, str) and name != "?" and name in dims:
        return dims.index(name)
    return x_axis if x_axis < len(dims) and dims[x_axis] == name else None


def discover_signature(
    session: ort.InferenceSession,
    state_map: Mapping[str, str] | None = None,
    constants: Mapping[str, object] | None = None,
) -> Signature:
    """Pair state inputs with outputs (``state_map`` first, then names and shapes)."""
    inputs = {a.name: a for a in session.get_inputs()}
    outputs = {a.name: a for a in session.get_outputs()}
    constants = constants or {}
    pairs: dict[str, str] = {}
    for name_in, name_out in (state_map or {}).items():
        if name_in not in inputs:
            raise SignatureError(f"state_map: {name_in!r} is not an input ({sorted(inputs)})")
        if name_out not in outputs:
            raise SignatureError(f"state_map: {name_out!r} is not an output ({sorted(outputs)})")
        a, b = inputs[name_in], outputs[name_out]
        if not _compatible(a, b):
            raise SignatureError(
                f"state_map: {name_in!r} ({numpy_dtype(a)} {a.shape}) and "
                f"{name_out!r} ({numpy_dtype(b)} {b.shape}) differ in dtype or shape"
            )
        pairs[name_in] = name_out
    for name_in, arg in inputs.items():
        if name_in in pairs or name_in in constants:
            continue
        for candidate in state_output_candidates(name_in):
            if (
                candidate in outputs
                and candidate not in pairs.values()
                and _compatible(arg, outputs[candidate])
            ):
                pairs[name_in] = candidate
                break
    rest = [n for n in inputs if n not in pairs and n not in constants]
    if len(rest) != 1:
        raise SignatureError(
            f"cannot tell the model's input: after state pairs {pairs} and constants "
            f"{sorted(constants)}, the inputs left are {rest} (expected exactly one); give "
            "state_map={input: output} / --state IN=OUT, or pin extra inputs with constants"
        )
    if not pairs:
        raise SignatureError(
            f"no state pairs found among inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
            "give them with state_map={input: output} (CLI: --state IN=OUT)"
        )
    x = inputs[rest[0]]
    x_dims = _dims(x)
    state_dims = {d for name in pairs for d in _dims(inputs[name]) if isinstance(d, str)}
    x_batch, time_axis = _input_axes(x_dims, state_dims)
    states = tuple(
        StateSpec(
            input=name_in,
            output=name_out,
            dtype=numpy_dtype(inputs[name_in]),
            shape=_dims(inputs[name_in]),
            batch_axis=_batch_axis(_dims(inputs[name_in]), prefer=1),
        )
        for name_in, name_out in pairs.items()
    )
    state_outputs = set(pairs.values())
    output_specs = []
    for name, arg in outputs.items():
        if name in state_outputs:
            continue
        dims = _dims(arg)
        output_specs.append(
            TensorSpec(
                name,
                numpy_dtype(arg),
                dims,
                _same_dim(dims, x_dims, x_batch) if x_batch is not None else None,
                _same_dim(dims, x_dims, time_axis) if time_axis is not None else None,
            )
        )
    return Signature(
        input=TensorSpec(x.name, numpy_dtype(x), x_dims, x_batch, time_axis),
        outputs=tuple(output_specs),
        states=states,
        kind="discovered",
        source={"discovered": True, "state_map": dict(pairs), "constants": sorted(constants)},
    )
