"""The signature: everything a stream needs to know about a model, stored in the ONNX file itself.

It lives as one JSON value under ``METADATA_KEY`` in the model's ``metadata_props``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from rnnstream.errors import SignatureError
from rnnstream.runtime.parity_record import ParityRecord

__all__ = ["METADATA_KEY", "LengthsSpec", "Signature", "StateSpec", "TensorSpec"]

METADATA_KEY = "rnnstream.signature"
FORMAT_VERSION = 1

Dim = int | str  # a fixed size, or the name of a dynamic axis ("batch", "time")

DTYPES = frozenset({"float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool"})
MAX_DIM = 2**31 - 1  # one fixed dimension
MAX_ELEMENTS = 2**28  # the fixed dimensions of one tensor for one sequence (1 GiB of float32)


def _malformed(field_name: str, problem: str) -> SignatureError:
    return SignatureError(f"signature field {field_name}: {problem}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _name(value: object, field_name: str) -> str:
    if not isinstance(value, str) or not value:
        raise _malformed(field_name, f"expected a name (a non-empty string), got {value!r}")
    return value


def _dtype(value: object, field_name: str) -> str:
    if value not in DTYPES:
        raise _malformed(field_name, f"expected one of {sorted(DTYPES)}, got {value!r}")
    return value  # type: ignore[return-value]


def _shape(value: object, field_name: str) -> tuple[Dim, ...]:
    """A list of dimensions, each a size in [1, MAX_DIM] or an axis name; not absurdly large."""
    if not isinstance(value, list | tuple):
        raise _malformed(field_name, f"expected a list of dimensions, got {value!r}")
    elements = 1
    for axis, d in enumerate(value):
        if _is_int(d) and 1 <= d <= MAX_DIM:
            elements *= d
        elif not (isinstance(d, str) and d):
            raise _malformed(
                field_name,
                f"dimension {axis} is {d!r}: expected a size in [1, {MAX_DIM}] or an axis name",
            )
    if elements > MAX_ELEMENTS:
        raise _malformed(
            field_name,
            f"{list(value)} holds {elements} elements per sequence (at most {MAX_ELEMENTS})",
        )
    return tuple(value)


def _axis(value: object, field_name: str, rank: int) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or not 0 <= value < rank:
        raise _malformed(field_name, f"expected an axis in [0, {rank}) or null, got {value!r}")
    return value


def _optional(value: object, field_name: str, kind: type, what: str) -> Any:
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise _malformed(field_name, f"expected {what} or null, got {value!r}")
    return value


def _object(value: object, field_name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _malformed(field_name, f"expected an object, got {value!r}")
    return value


def _required(d: dict[str, Any], key: str, field_name: str) -> Any:
    if key not in d:
        raise _malformed(field_name, "missing")
    return d[key]


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: its name, dtype, shape and where batch and time are."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    batch_axis: int | None  # None: the tensor has no batch axis
    time_axis: int | None = None  # None: one call is one step (no time axis)

    @classmethod
    def from_dict(cls, d: object, field_name: str = "input") -> TensorSpec:
        """Parse ``d``; a malformed value is a :class:`SignatureError` naming ``field_name.key``."""
        d = _object(d, field_name)
        shape = _shape(_required(d, "shape", f"{field_name}.shape"), f"{field_name}.shape")
        batch_axis = _axis(d.get("batch_axis"), f"{field_name}.batch_axis", len(shape))
        time_axis = _axis(d.get("time_axis"), f"{field_name}.time_axis", len(shape))
        if time_axis is not None and time_axis == batch_axis:
            raise _malformed(f"{field_name}.time_axis", f"{time_axis} is also the batch axis")
        return cls(
            name=_name(_required(d, "name", f"{field_name}.name"), f"{field_name}.name"),
            dtype=_dtype(_required(d, "dtype", f"{field_name}.dtype"), f"{field_name}.dtype"),
            shape=shape,
            batch_axis=batch_axis,
            time_axis=time_axis,
        )


@dataclass(frozen=True)
class StateSpec:
    """One recurrent state: fed as ``input``, returned as ``output``, zero at the start."""

    input: str
    output: str
    dtype: str
    shape: tuple[Dim, ...]
    batch_axis: int | None  # None: a fixed-size state shared by no batch (batch 1 only)

    @classmethod
    def from_dict(cls, d: object, field_name: str = "states[0]") -> StateSpec:
        """Parse ``d``; a malformed value is a :class:`SignatureError` naming ``field_name.key``."""
        d = _object(d, field_name)
        shape = _shape(_required(d, "shape", f"{field_name}.shape"), f"{field_name}.shape")
        return cls(
            input=_name(_required(d, "input", f"{field_name}.input"), f"{field_name}.input"),
            output=_name(_required(d, "output", f"{field_name}.output"), f"{field_name}.output"),
            dtype=_dtype(_required(d, "dtype", f"{field_name}.dtype"), f"{field_name}.dtype"),
            shape=shape,
            batch_axis=_axis(d.get("batch_axis"), f"{field_name}.batch_axis", len(shape)),
        )

    def concrete_shape(self, batch: int) -> tuple[int, ...]:
        """The state's shape for ``batch`` rows."""
        shape = list(self.shape)
        if self.batch_axis is not None:
            fixed = shape[self.batch_axis]
            if isinstance(fixed, int) and fixed != batch:
                raise SignatureError(
                    f"state {self.input!r} has a fixed batch of {fixed}; cannot hold {batch} rows"
                )
            shape[self.batch_axis] = batch
        elif batch != 1:
            raise SignatureError(f"state {self.input!r} has no batch axis; it holds one stream")
        if not all(isinstance(d, int) for d in shape):
            raise SignatureError(f"state {self.input!r} has an unknown dimension: {list(shape)}")
        return tuple(shape)


@dataclass(frozen=True)
class LengthsSpec:
    """An input the runtime fills with how many frames each row of a call holds (sherpa-onnx's
    ``x_lens``): the size of the stream input's axis ``counts`` (1 per step, T per chunk),
    one value per batch row (``shape`` ``[rows]``) or one in all (``shape`` ``[]``)."""

    name: str
    dtype: str  # int32 or int64
    shape: tuple[Dim, ...]
    counts: int  # the axis of the stream input whose size it carries

    @classmethod
    def from_dict(cls, d: object, field_name: str = "lengths[0]") -> LengthsSpec:
        """Parse ``d``; a malformed value is a :class:`SignatureError` naming ``field_name.key``."""
        d = _object(d, field_name)
        dtype = _dtype(_required(d, "dtype", f"{field_name}.dtype"), f"{field_name}.dtype")
        if dtype not in ("int32", "int64"):
            raise _malformed(f"{field_name}.dtype", f"expected int32 or int64, got {dtype!r}")
        shape = _shape(_required(d, "shape", f"{field_name}.shape"), f"{field_name}.shape")
        if len(shape) > 1:
            raise _malformed(f"{field_name}.shape", f"expected [] or [rows], got {list(shape)}")
        counts = _required(d, "counts", f"{field_name}.counts")
        if not _is_int(counts) or counts < 0:
            raise _malformed(f"{field_name}.counts", f"expected an axis, got {counts!r}")
        return cls(
            name=_name(_required(d, "name", f"{field_name}.name"), f"{field_name}.name"),
            dtype=dtype,
            shape=shape,
            counts=counts,
        )


@dataclass(frozen=True)
class Signature:
    """What a model takes and returns, which inputs and outputs pair up as state, and extras."""

    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    states: tuple[StateSpec, ...]
    kind: str = "generic"
    streamable: bool = True
    vocab: str | None = None
    num_tokens: int | None = None  # token-id inputs: ids must be in [0, num_tokens)
    bos: int | None = None
    eos: int | None = None
    labels: tuple[str, ...] | None = None  # classifiers and taggers: the name of each class
    precision: str = "float32"
    parity: ParityRecord | None = None
    cost: dict[str, int] | None = None  # parameters and multiply-adds per step (batch 1)
    lengths: tuple[LengthsSpec, ...] = ()  # inputs the runtime fills with frame counts
    source: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"format": FORMAT_VERSION, **asdict(self)}
        d["parity"] = self.parity.to_dict() if self.parity else None
        if not self.lengths:
            del d["lengths"]
        return {k: v for k, v in d.items() if v is not None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def with_parity(self, parity: ParityRecord) -> Signature:
        return replace(self, parity=parity)

    @property
    def least_steps(self) -> int:
        """The fewest time steps one run takes: 1, or more for a model that refused fewer when it
        was probed at load (a subsampling encoder; recorded in ``source["axes"]["time"]``)."""
        return self.source.get("axes", {}).get("time", {}).get("least", 1)

    @classmethod
    def from_dict(cls, d: object) -> Signature:
        """Parse ``d`` strictly: any malformed field is a :class:`SignatureError` naming it."""
        d = _object(d, "(the signature)")
        if d.get("format") != FORMAT_VERSION:
            raise SignatureError(
                f"signature format {d.get('format')!r} is not supported (expected {FORMAT_VERSION})"
            )
        outputs = _required(d, "outputs", "outputs")
        if not isinstance(outputs, list) or not outputs:
            raise _malformed("outputs", f"expected a non-empty list, got {outputs!r}")
        states = _required(d, "states", "states")
        if not isinstance(states, list):
            raise _malformed("states", f"expected a list, got {states!r}")
        streamable = d.get("streamable", True)
        if not isinstance(streamable, bool):
            raise _malformed("streamable", f"expected true or false, got {streamable!r}")
        num_tokens = _optional(d.get("num_tokens"), "num_tokens", int, "a token count")
        if num_tokens is not None and not 1 <= num_tokens <= MAX_DIM:
            raise _malformed("num_tokens", f"expected a count in [1, {MAX_DIM}], got {num_tokens}")
        parity = _optional(d.get("parity"), "parity", dict, "an object")
        labels = d.get("labels")
        if labels is not None and (
            not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)
        ):
            raise _malformed("labels", f"expected a list of strings or null, got {labels!r}")
        lengths = d.get("lengths", [])
        if not isinstance(lengths, list):
            raise _malformed("lengths", f"expected a list, got {lengths!r}")
        x = TensorSpec.from_dict(_required(d, "input", "input"), "input")
        parsed = [LengthsSpec.from_dict(v, f"lengths[{i}]") for i, v in enumerate(lengths)]
        for i, spec in enumerate(parsed):
            if spec.counts >= len(x.shape):
                raise _malformed(
                    f"lengths[{i}].counts",
                    f"{spec.counts} is not an axis of input {x.name!r} {list(x.shape)}",
                )
        return cls(
            input=x,
            outputs=tuple(TensorSpec.from_dict(o, f"outputs[{i}]") for i, o in enumerate(outputs)),
            states=tuple(StateSpec.from_dict(s, f"states[{i}]") for i, s in enumerate(states)),
            kind=_name(d.get("kind", "generic"), "kind"),
            streamable=streamable,
            vocab=_optional(d.get("vocab"), "vocab", str, "a string"),
            num_tokens=num_tokens,
            bos=_optional(d.get("bos"), "bos", int, "a token id"),
            eos=_optional(d.get("eos"), "eos", int, "a token id"),
            labels=tuple(labels) if labels is not None else None,
            precision=_name(d.get("precision", "float32"), "precision"),
            parity=ParityRecord.from_dict(parity) if parity else None,
            cost=_optional(d.get("cost"), "cost", dict, "an object"),
            lengths=tuple(parsed),
            source=_object(d.get("source", {}), "source"),
        )

    @classmethod
    def from_json(cls, text: str) -> Signature:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise SignatureError(f"signature is not valid JSON: {e}") from e
