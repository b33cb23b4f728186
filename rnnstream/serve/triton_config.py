"""Triton model configurations (``config.pbtxt``) for a streamable model's signature.

Each configuration is built as plain data (dicts, lists, :class:`Enum` values) in the shape of
Triton's ``ModelConfig`` protobuf message, then rendered in protobuf text format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from rnnstream.errors import InputError, SignatureError
from rnnstream.runtime import Signature, TensorSpec

__all__ = [
    "CONTROL_INPUTS",
    "Batching",
    "Enum",
    "ort_config",
    "python_config",
    "render_pbtxt",
]

# The control inputs of the python model: sequence start and end flags, the correlation id.
CONTROL_INPUTS = ("START", "END", "CORRID")

TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}


@dataclass(frozen=True)
class Enum:
    """A protobuf enum value: rendered bare, not quoted."""

    name: str


@dataclass(frozen=True)
class Batching:
    """How Triton's sequence batcher groups the steps of many sequences (``oldest`` strategy).

    ``max_sequences`` sequences are candidates for batching at once (more wait in a backlog);
    one model call takes up to ``max_batch`` steps, formed as soon as a preferred size is
    reached or the oldest step has waited ``queue_delay_us``. A sequence idle for
    ``idle_seconds`` is released. ``instances`` model instances run side by side, each holding
    its own sequences.
    """

    max_sequences: int = 1024
    max_batch: int = 256
    preferred_batch: tuple[int, ...] = ()
    queue_delay_us: int = 1000
    idle_seconds: float = 60.0
    instances: int = 1

    def __post_init__(self) -> None:
        for field in ("max_sequences", "max_batch", "instances", "queue_delay_us"):
            if getattr(self, field) < (0 if field == "queue_delay_us" else 1):
                raise InputError(f"{field} must be positive, got {getattr(self, field)}")
        if self.idle_seconds <= 0:
            raise InputError(f"idle_seconds must be positive, got {self.idle_seconds}")
        too_big = [b for b in self.preferred_batch if not 1 <= b <= self.max_batch]
        if too_big:
            raise InputError(f"preferred batch sizes {too_big} are not in [1, {self.max_batch}]")


def python_config(name: str, sig: Signature, batching: Batching) -> dict:
    """The python-backend model: ``model.py`` over a StreamPool, control inputs, every output."""
    clashing = {sig.input.name, *(o.name for o in sig.outputs)} & set(CONTROL_INPUTS)
    if clashing:
        raise SignatureError(f"tensor names {sorted(clashing)} clash with Triton control inputs")
    controls = [
        _control("START", "CONTROL_SEQUENCE_START"),
        _control("END", "CONTROL_SEQUENCE_END"),
        {
            "name": "CORRID",
            "control": [
                {"kind": Enum("CONTROL_SEQUENCE_CORRID"), "data_type": Enum("TYPE_UINT64")}
            ],
        },
    ]
    return _model_config(name, {"backend": "python"}, sig, batching, {"control_input": controls})


def ort_config(name: str, sig: Signature, batching: Batching) -> dict:
    """The ONNX Runtime model over the batch-first copy, its states kept by Triton (zeros first).

    ``sig`` is the batch-first copy's signature (:func:`rnnstream.export.batch_first_signature`).
    """
    states = []
    for s in sig.states:
        dims = _dims(s.shape[1:])
        zeros = {"data_type": _type(s.dtype, s.input), "dims": dims, "zero_data": True}
        states.append(
            {
                "input_name": s.input,
                "output_name": s.output,
                "data_type": _type(s.dtype, s.input),
                "dims": dims,
                "initial_state": [zeros | {"name": f"{s.input}_zeros"}],
            }
        )
    return _model_config(name, {"platform": "onnxruntime_onnx"}, sig, batching, {"state": states})


def _model_config(
    name: str, runner: dict, sig: Signature, batching: Batching, sequences: dict
) -> dict:
    """A sequence-batched CPU model running on ``runner`` (its backend or platform), the
    sequence batcher's ``sequences`` part (controls or states) next to its scheduling."""
    return {
        "name": name,
        **runner,
        "max_batch_size": batching.max_batch,
        "sequence_batching": _sequence_batching(batching) | sequences,
        "input": [_tensor(sig.input)],
        "output": [_tensor(o) for o in sig.outputs],
        "instance_group": [{"count": batching.instances, "kind": Enum("KIND_CPU")}],
    }


def _sequence_batching(batching: Batching) -> dict:
    oldest = {
        "max_candidate_sequences": batching.max_sequences,
        "max_queue_delay_microseconds": batching.queue_delay_us,
    }
    if batching.preferred_batch:
        oldest["preferred_batch_size"] = list(batching.preferred_batch)
    return {
        "max_sequence_idle_microseconds": round(batching.idle_seconds * 1e6),
        "oldest": oldest,
    }


def _control(name: str, kind: str) -> dict:
    return {"name": name, "control": [{"kind": Enum(kind), "int32_false_true": [0, 1]}]}


def _tensor(spec: TensorSpec) -> dict:
    """One input or output of one step, without the batch axis (Triton adds it)."""
    dims = _dims(
        [d for a, d in enumerate(spec.shape) if a not in (spec.batch_axis, spec.time_axis)]
    )
    entry = {"name": spec.name, "data_type": _type(spec.dtype, spec.name), "dims": dims or [1]}
    if not dims:  # a scalar per sequence (a token id): sent as [1], seen as []
        entry["reshape"] = {"shape": []}
    return entry


def _dims(shape: tuple | list) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in shape]


def _type(dtype: str, name: str) -> Enum:
    key = np.dtype(dtype).name
    if key not in TRITON_TYPES:
        raise SignatureError(f"tensor {name!r}: dtype {dtype} has no Triton type")
    return Enum(TRITON_TYPES[key])


def render_pbtxt(message: dict, indent: int = 0) -> str:
    """``message`` in protobuf text format (the syntax of Triton's ``config.pbtxt``)."""
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", render_pbtxt(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:  # a repeated message: one block per element
                lines += [f"{pad}{key} {{", render_pbtxt(item, indent + 1), f"{pad}}}"]
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(line for line in lines if line)


def _scalar(value: object) -> str:
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)
