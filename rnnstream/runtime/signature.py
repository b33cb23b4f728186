"""The signature: everything a stream needs to know about a model, stored in the ONNX file itself.

It lives as one JSON value under ``METADATA_KEY`` in the model's ``metadata_props``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from rnnstream.errors import SignatureError
from rnnstream.runtime.parity_record import ParityRecord

__all__ = ["METADATA_KEY", "Signature", "StateSpec", "TensorSpec"]

METADATA_KEY = "rnnstream.signature"
FORMAT_VERSION = 1

Dim = int | str  # a fixed size, or the name of a dynamic axis ("batch", "time")


def _axis(value: object) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: its name, dtype, shape and where batch and time are."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    batch_axis: int | None  # None: the tensor has no batch axis
    time_axis: int | None = None  # None: one call is one step (no time axis)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(
            name=d["name"],
            dtype=d["dtype"],
            shape=tuple(d["shape"]),
            batch_axis=_axis(d.get("batch_axis")),
            time_axis=_axis(d.get("time_axis")),
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
    def from_dict(cls, d: dict[str, Any]) -> StateSpec:
        return cls(
            input=d["input"],
            output=d["output"],
            dtype=d["dtype"],
            shape=tuple(d["shape"]),
            batch_axis=_axis(d.get("batch_axis")),
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
    source: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"format": FORMAT_VERSION, **asdict(self)}
        d["parity"] = self.parity.to_dict() if self.parity else None
        return {k: v for k, v in d.items() if v is not None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def with_parity(self, parity: ParityRecord) -> Signature:
        return replace(self, parity=parity)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Signature:
        if d.get("format") != FORMAT_VERSION:
            raise SignatureError(
                f"signature format {d.get('format')!r} is not supported (expected {FORMAT_VERSION})"
            )
        try:
            return cls(
                input=TensorSpec.from_dict(d["input"]),
                outputs=tuple(TensorSpec.from_dict(o) for o in d["outputs"]),
                states=tuple(StateSpec.from_dict(s) for s in d["states"]),
                kind=d.get("kind", "generic"),
                streamable=bool(d.get("streamable", True)),
                vocab=d.get("vocab"),
                num_tokens=d.get("num_tokens"),
                bos=d.get("bos"),
                eos=d.get("eos"),
                labels=tuple(d["labels"]) if d.get("labels") is not None else None,
                precision=d.get("precision", "float32"),
                parity=ParityRecord.from_dict(d["parity"]) if d.get("parity") else None,
                cost=d.get("cost"),
                source=d.get("source", {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SignatureError(f"malformed signature: {e!r}") from e

    @classmethod
    def from_json(cls, text: str) -> Signature:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise SignatureError(f"signature is not valid JSON: {e}") from e
