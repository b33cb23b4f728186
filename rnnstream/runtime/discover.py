"""A signature for an ONNX model that has none: state pairs from names, axes from probing.

Stateful models from elsewhere (Silero VAD, sherpa-onnx, hand-made exports) name their state
inputs and outputs by a handful of conventions; a pair must also agree in dtype and shape, and
a run must return the output in the state's shape (else the load is refused). Where the names
tell nothing (tf2onnx's ``state_h:0 -> Identity_1:0``), the inputs after the first are paired by
evidence (:mod:`pairing`): shapes, then which assignment carries the state through two steps
(``signature.source["paired"]``), then the order, recorded as a guess
(``signature.source["guessed"]``); ``state_map={"state": "stateN"}`` says it for sure.

Frame counts (sherpa-onnx's ``x_lens``; ``lengths``, ``seq_lens``, ``input_lengths``,
``speech_lengths``, ``ilens``): an int32/int64 input of shape ``[rows]`` or ``[]`` named so is
filled by the runtime with the size of the stream input's axis it counts (the time axis: 1 per
step, T per chunk), per batch row (``signature.lengths``); pinning it is refused.

Scalar inputs are settings, never the stream's input: they are pinned with ``constants``; a
sample rate left out (``sr``, ``sample_rate``) is pinned to 16000 and recorded as a guess
(:func:`guessed_constants`), any other is an error naming it.

The input's batch, time and frame axes are decided by running the model (:mod:`probe`); names
only break ties and decide what probing cannot. ``axes={"batch": 0, "time": None}`` overrides.
Each decision is recorded in ``signature.source["axes"]`` with how it was made: ``probe``,
``name`` (or shape) or ``given``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from rnnstream.errors import SignatureError
from rnnstream.runtime.dtypes import arg_dims, numpy_dtype
from rnnstream.runtime.lengths import check_lengths, lengths_fill, lengths_inputs, place_lengths
from rnnstream.runtime.pairing import Evidence, compatible
from rnnstream.runtime.probe import Fill, Probe, probe_axes
from rnnstream.runtime.signature import DTYPES, Dim, LengthsSpec, Signature, StateSpec, TensorSpec

__all__ = ["AXIS_ROLES", "discover_signature", "guessed_constants", "state_output_candidates"]

AXIS_ROLES = ("batch", "time", "frame")
DEFAULT_SAMPLE_RATE = 16000
_RATE_NAMES = re.compile(r"^(sr|sample_?rate|sampling_?rate)$", re.IGNORECASE)

# (pattern on the input name, replacement giving the output name), tried in order.
_PAIR_RULES: list[tuple[str, str]] = [
    (r"^(.*)0$", r"\1n"),  # h0 -> hn, c0 -> cn, rnn_h0 -> rnn_hn
    (r"^(.*)_in$", r"\1_out"),  # state_in -> state_out
    (r"^in_(.*)$", r"out_\1"),
    (r"^(.*)_prev$", r"\1_next"),
    (r"^past_(.*)$", r"present_\1"),  # past_key -> present_key
    (r"^past$", r"present"),
    (r"^cached_(.*)$", r"new_cached_\1"),  # sherpa-onnx streaming encoders
    (r"^cache_(.*)$", r"new_cache_\1"),
    (r"^(.*)_len$", r"\1_next_len"),  # NeMo: cache_last_channel_len -> ..._next_len
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


def _is_setting(arg: ort.NodeArg) -> bool:
    """A scalar input (``[]``, ``[1]``): a setting such as a sample rate, never streamed."""
    return arg.shape is not None and all(d == 1 for d in arg.shape)


def guessed_constants(
    session: ort.InferenceSession, constants: Mapping[str, object]
) -> dict[str, np.ndarray]:
    """Values for the integer sample-rate settings (``sr``, ``sample_rate``) not in ``constants``:
    16000, the rate such models are trained for first (Silero VAD takes 8000 too)."""
    return {
        arg.name: np.full([1] * len(arg.shape), DEFAULT_SAMPLE_RATE, numpy_dtype(arg))
        for arg in session.get_inputs()
        if arg.name not in constants
        and _is_setting(arg)
        and _RATE_NAMES.match(arg.name)
        and np.dtype(numpy_dtype(arg)).kind in "iu"
    }


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


AxesSpec = Mapping[str, int | list[int] | None]


def _given_axes(axes: AxesSpec, x: TensorSpec) -> dict[str, object]:
    """``axes`` checked against the input: known roles, real axes, no axis in two roles."""
    rank, given = len(x.shape), {}
    where = f"input {x.name!r} {list(x.shape)}"
    for role, value in axes.items():
        if role not in AXIS_ROLES:
            raise SignatureError(f"axes: unknown role {role!r} (expected one of {AXIS_ROLES})")
        values = list(value) if role == "frame" and isinstance(value, list | tuple) else [value]
        for v in values:
            if v is None and role != "frame":
                continue
            if not isinstance(v, int | np.integer) or isinstance(v, bool) or not 0 <= v < rank:
                raise SignatureError(
                    f"axes: {role}={v!r} is not an axis of {where} (expected 0..{rank - 1}"
                    f"{'' if role == 'frame' else ' or none'})"
                )
            if role != "frame" and isinstance(x.shape[v], int) and x.shape[v] != 1:
                raise SignatureError(
                    f"axes: {role}={v}: {where} has the fixed size {x.shape[v]} there; a {role} "
                    "axis must be dynamic (or of size 1)"
                )
        given[role] = [int(v) for v in values] if role == "frame" else value
    used = [given.get("batch"), given.get("time"), *given.get("frame", [])]
    used = [v for v in used if v is not None]
    if len(used) != len(set(used)):
        raise SignatureError(f"axes: {dict(axes)} puts one axis of {where} in two roles")
    return given


def _decide_axes(
    x: TensorSpec, state_dims: set[str], probe: Probe, given: dict[str, object]
) -> tuple[int | None, int | None, dict[str, object]]:
    """Batch and time axes of the input (given, else probed, else by name) and how each was
    decided, as recorded in ``signature.source["axes"]``."""
    name_batch, name_time = _input_axes(x.shape, state_dims)
    given_frames = set(given.get("frame", []))  # type: ignore[arg-type]

    def pick(role: str, by_name: int | None, exclude: set) -> tuple[int | None, str]:
        if role in given:
            return given[role], "given"  # type: ignore[return-value]
        found = [a for a, r in probe.roles.items() if r == role and a not in exclude]
        if found:
            return (by_name if by_name in found else found[0]), "probe"
        if by_name is not None and by_name not in exclude and by_name not in probe.roles:
            return by_name, by_names
        if role == "batch" and x.shape[:1] == (1,) and 0 not in exclude:
            return 0, by_names  # a leading axis fixed at 1 ([1, samples]): a batch of one
        return None, "probe" if probe.roles else by_names

    by_names = f"name (probe failed: {probe.failed})" if probe.failed else "name"

    batch, batch_by = pick("batch", name_batch, given_frames | {given.get("time")})
    time_axis, time_by = pick("time", name_time, given_frames | {batch})
    folded = [a for a, r in probe.roles.items() if r == "time" and a != time_axis]
    if batch is None and time_by == "probe" and name_batch in folded:
        # the model folds these rows into time steps (a traced view(1, -1, F)): held at 1
        batch, batch_by = name_batch, "name, held at 1: its rows fold into time steps"
    if time_axis is None and time_by != "given" and len(x.shape) >= 3:
        # [1, 1, F] or [batch, 1, F]: exported with one time step fixed; a step is one run
        ones = [a for a, d in enumerate(x.shape) if d == 1 and a != batch and a not in given_frames]
        time_axis, time_by = (ones[0], "shape, fixed at 1") if ones else (None, time_by)
    all_given = "batch" in given and "time" in given  # the other axes can only be frames
    frames = []
    for axis, d in enumerate(x.shape):
        if isinstance(d, int) or axis in (batch, time_axis):
            continue
        by = "probe" if axis in probe.roles else by_names
        by = "given" if all_given or axis in given_frames else by
        window = probe.windows.get(axis) if by == "probe" else None
        frame: dict[str, object] = {"axis": axis, "by": by}
        if window:
            frame["size"] = window
        if by == "probe" and axis in probe.mixed:
            frame["mixed"] = True
        frames.append(frame)
    origins = {
        "batch": {"axis": batch, "by": batch_by},
        "time": {"axis": time_axis, "by": time_by},
        "frame": frames,
    }
    if time_axis in probe.least:  # a run takes at least that many steps (subsampling encoders)
        origins["time"]["least"] = probe.least[time_axis]
    if time_axis in probe.last_only and time_by == "probe":
        origins["time"]["last"] = True  # outputs are the last step's: one step a run
    return batch, time_axis, origins


def _output_axis(probe: Probe, name: str, dims: tuple[Dim, ...], x_dims, x_axis) -> int | None:
    """The output's axis following the input's ``x_axis``: as probed, else by name."""
    if x_axis is None:
        return None
    if any(x_axis in follows for follows in probe.follows.values()):
        return probe.follows.get(name, {}).get(x_axis)
    return _same_dim(dims, x_dims, x_axis)


def _state_batch_axis(dims: tuple[Dim, ...], probed: int | None, x_batch: int | None) -> int | None:
    """A state's batch axis: none when the input has none, else as probed, else by shape."""
    if x_batch is None:
        return None
    return probed if probed is not None else _batch_axis(dims, prefer=1)


def discover_signature(
    session: ort.InferenceSession,
    state_map: Mapping[str, str] | None = None,
    constants: Mapping[str, np.ndarray] | None = None,
    axes: AxesSpec | None = None,
    guessed: Mapping[str, np.ndarray] | None = None,
) -> Signature:
    """Pair state inputs with outputs (``state_map`` first, then names, then the evidence of
    shapes and runs, then order: :mod:`pairing`),
    and decide the input's axes (``axes`` first, then probing with ``constants`` fed, then
    names). ``guessed`` are the constants among ``constants`` that were guessed, to record."""
    inputs = {a.name: a for a in session.get_inputs()}
    outputs = {a.name: a for a in session.get_outputs()}
    _check_dtypes(inputs, outputs)
    constants = constants or {}
    pairs = _state_pairs(inputs, outputs, state_map or {}, constants)
    length_args = lengths_inputs(inputs, pairs, constants)
    set_aside = {**constants, **dict.fromkeys(a.name for a in length_args)}

    unpaired = [
        n for n, a in inputs.items() if n not in pairs and n not in set_aside and not _is_setting(a)
    ]

    found, how = {}, ""
    if len(unpaired) > 1:  # the first is the stream input, the others states the names miss
        x_arg = inputs[unpaired[0]]
        evidence = Evidence(session, x_arg, constants, _placed(x_arg, axes, length_args)[2])
        free = [o for o in outputs if o not in pairs.values()]
        states = [*pairs, *unpaired[1:]]
        found, how = evidence.pair(
            unpaired[1:], free, list(pairs), _time_axes(x_arg, [inputs[n] for n in states])
        )
        pairs.update(found)
    x_arg = inputs[_model_input(inputs, outputs, pairs, set_aside)]
    x_dims = arg_dims(x_arg)
    x_named = TensorSpec(x_arg.name, numpy_dtype(x_arg), x_dims, None)
    given, lengths, fill = _placed(x_arg, axes, length_args)
    if not state_map:  # the user's pairs are the user's word
        Evidence(session, x_arg, constants, fill).check_named(
            {n: o for n, o in pairs.items() if n not in found},
            list(pairs),
            _time_axes(x_arg, [inputs[n] for n in pairs]),
        )
    if "batch" in given and "time" in given:
        probe = Probe(note="not probed: batch and time axes given")
    else:
        probe = probe_axes(session, x_arg.name, pairs, constants, lengths=fill)
        if probe.unsupported:
            raise SignatureError(_unsupported(x_arg, [inputs[n] for n in pairs], probe.unsupported))
    state_dims = {d for name in pairs for d in arg_dims(inputs[name]) if isinstance(d, str)}
    x_batch, time_axis, origins = _decide_axes(x_named, state_dims, probe, given)
    for spec, rows in lengths:
        check_lengths(spec, rows, x_named, x_batch, time_axis)
    if origins["time"]["by"] == "probe":  # type: ignore[index]
        for axis, role in probe.roles.items():  # a second axis acting as time is held at 1
            if role == "time" and axis != time_axis:
                x_dims = tuple(1 if a == axis else d for a, d in enumerate(x_dims))
                for follows in probe.follows.values():
                    follows.pop(axis, None)
    if origins["time"].get("last"):  # type: ignore[union-attr]
        x_dims = tuple(1 if a == time_axis else d for a, d in enumerate(x_dims))
    for frame in origins["frame"]:  # type: ignore[union-attr]
        if "size" in frame:  # a fixed window: a step takes exactly that many
            x_dims = tuple(frame["size"] if a == frame["axis"] else d for a, d in enumerate(x_dims))
    probed = probe.state_batch if origins["batch"]["by"] == "probe" else {}  # type: ignore[index]
    states = tuple(
        StateSpec(
            input=name_in,
            output=name_out,
            dtype=numpy_dtype(inputs[name_in]),
            shape=arg_dims(inputs[name_in]),
            batch_axis=_state_batch_axis(arg_dims(inputs[name_in]), probed.get(name_in), x_batch),
        )
        for name_in, name_out in pairs.items()
    )
    output_specs = []
    for name, arg in outputs.items():
        if name in pairs.values():
            continue
        dims = arg_dims(arg)
        out_batch = _output_axis(probe, name, dims, x_dims, x_batch)
        out_time = _output_axis(probe, name, dims, x_dims, time_axis)
        if out_batch is not None and out_batch == out_time:
            raise SignatureError(
                f"output {name!r} puts batch and time on one axis (axis {out_batch} follows both: "
                "a flattened [T*B, ...] or [B*T, ...], e.g. out.reshape(-1, H) before a head); "
                "rnnstream cannot split it into steps and rows. Export the model returning "
                "[B, T, ...] (reshape back after the head), or pass axes= if the probe is wrong"
            )
        # An axis seen following the input's is as dynamic as it, whatever size the graph
        # declares there (torch.onnx.export(dynamo=True) keeps the example's [batch, 3, 3])
        follows = {out_batch: x_batch, out_time: time_axis}
        dims = tuple(x_dims[follows[a]] if a in follows else d for a, d in enumerate(dims))
        output_specs.append(TensorSpec(name, numpy_dtype(arg), dims, out_batch, out_time))
    if all(isinstance(d, int) for d in x_arg.shape):  # nothing probed: say what a step is
        frame = [d for a, d in enumerate(x_dims) if a not in (x_batch, time_axis)]
        probe.note += f"; sizes fixed at export: a step takes {frame}"
    return Signature(
        input=TensorSpec(x_arg.name, numpy_dtype(x_arg), x_dims, x_batch, time_axis),
        outputs=tuple(output_specs),
        states=states,
        kind="discovered",
        num_tokens=probe.num_tokens,
        lengths=tuple(spec for spec, _ in lengths),
        source={
            "discovered": True,
            "state_map": dict(pairs),
            "constants": sorted(constants),
            "axes": origins,
            "probe": probe.note,
            **({"paired": dict.fromkeys(found, how)} if found else {}),
            **_guesses(found if how != "probe" else {}, guessed or {}),
        },
    )


def _check_dtypes(inputs: dict[str, ort.NodeArg], outputs: dict[str, ort.NodeArg]) -> None:
    """Every input and output has a dtype numpy holds (bfloat16 and float8 do not)."""
    for what, args in (("input", inputs), ("output", outputs)):
        for name, arg in args.items():
            if numpy_dtype(arg) not in DTYPES:
                raise SignatureError(
                    f"{what} {name!r} is {arg.type}, a type this runtime does not stream "
                    f"(numpy has no bfloat16 or float8); export the model with inputs and "
                    f"outputs of {sorted(DTYPES)}"
                )


def _unsupported(x: ort.NodeArg, states: list[ort.NodeArg], reason: str) -> str:
    """Why a model whose types onnxruntime has no kernel for is refused, naming its tensors."""
    tensors = [f"input {x.name!r} is {numpy_dtype(x)}"]
    tensors += [f"state {a.name!r} is {numpy_dtype(a)}" for a in states]
    return (
        f"{', '.join(tensors)}, and onnxruntime cannot run the model in these types: {reason}; "
        "export it in float32"
    )


def _placed(
    x_arg: ort.NodeArg, axes: AxesSpec | None, length_args: list[ort.NodeArg]
) -> tuple[dict[str, object], list[tuple[LengthsSpec, int | None]], Fill | None]:
    """The given axes of stream input ``x_arg``, the lengths inputs placed on it (with the axis
    giving their rows), and what fills them for a probe's run."""
    x_dims = arg_dims(x_arg)
    given = _given_axes(axes or {}, TensorSpec(x_arg.name, numpy_dtype(x_arg), x_dims, None))
    name_batch = _input_axes(x_dims, set())[0]
    lengths = [place_lengths(a, x_dims, given, name_batch, _TIME_NAMES) for a in length_args]
    return given, lengths, (lengths_fill(lengths) if lengths else None)


def _time_axes(x_arg: ort.NodeArg, states: list[ort.NodeArg]) -> list[int]:
    """The axes of ``x_arg`` worth trying as time: the one the names give, then the dynamic."""
    x_dims = arg_dims(x_arg)
    state_dims = {d for arg in states for d in arg_dims(arg) if isinstance(d, str)}
    by_name = _input_axes(x_dims, state_dims)[1]
    dynamic = [a for a, d in enumerate(x_dims) if isinstance(d, str)]
    return list(dict.fromkeys(a for a in [by_name, *dynamic] if a is not None))


def _state_pairs(
    inputs: dict[str, ort.NodeArg],
    outputs: dict[str, ort.NodeArg],
    state_map: Mapping[str, str],
    constants: Mapping[str, object],
) -> dict[str, str]:
    """State input -> output: ``state_map`` first, then the naming conventions."""
    pairs: dict[str, str] = {}
    for name_in, name_out in state_map.items():
        if name_in not in inputs:
            raise SignatureError(f"state_map: {name_in!r} is not an input ({sorted(inputs)})")
        if name_out not in outputs:
            raise SignatureError(f"state_map: {name_out!r} is not an output ({sorted(outputs)})")
        a, b = inputs[name_in], outputs[name_out]
        if not compatible(a, b):
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
                and compatible(arg, outputs[candidate])
            ):
                pairs[name_in] = candidate
                break
    return pairs


def _guesses(by_order: dict[str, str], constants: Mapping[str, np.ndarray]) -> dict:
    """What was guessed, for ``signature.source["guessed"]`` (nothing when nothing was)."""
    guessed: dict[str, object] = {}
    if by_order:
        guessed["state_map"] = dict(by_order)
    if constants:
        guessed["constants"] = {name: value.tolist() for name, value in constants.items()}
    return {"guessed": guessed} if guessed else {}


def _model_input(
    inputs: dict[str, ort.NodeArg],
    outputs: dict[str, ort.NodeArg],
    pairs: dict[str, str],
    constants: Mapping[str, object],
) -> str:
    """The one input left once states and constants are set aside."""
    rest = [n for n in inputs if n not in pairs and n not in constants]
    settings = [n for n in rest if _is_setting(inputs[n])]
    if settings and len(rest) - len(settings) == 1:
        described = " and ".join(
            f"input {n!r} ({numpy_dtype(inputs[n])} {inputs[n].shape})" for n in settings
        )
        example = ", ".join(f"{n!r}: ..." for n in settings)
        flags = " ".join(f"--const {n}=..." for n in settings)
        raise SignatureError(
            f"{described}: a setting (scalar input) the model needs a value for; pin it with "
            f"constants={{{example}}} (CLI: {flags})"
        )
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
    return rest[0]
