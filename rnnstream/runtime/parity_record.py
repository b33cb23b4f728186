"""The parity record: how closely an exported file reproduced its reference, kept in its signature.

Export (and ``quantize``) measure it; ``info``, ``verify`` and the torch-free runtime read it back.
Its JSON layout is the one files have always carried (``step``/``chunk``/``sequence`` tables of
per-tensor errors at the top level), so :meth:`ParityRecord.from_dict` reads every file written so
far, the shipped demo models included, and :meth:`ParityRecord.to_dict` writes the same layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rnnstream.errors import SignatureError

__all__ = ["MODES", "ParityRecord", "ReferenceParity", "TaskScore", "TensorError"]

MODES = ("step", "chunk", "sequence")  # step by step, in chunks, or one whole-sequence run


@dataclass(frozen=True)
class TensorError:
    """One tensor's largest absolute error and that error relative to its largest magnitude."""

    max_abs_err: float
    max_rel_err: float

    def within(self, atol: float, rtol: float) -> bool:
        """Whether the tensor is within ``atol`` absolutely or ``rtol`` relatively."""
        return bool(self.max_abs_err <= atol or self.max_rel_err <= rtol)


@dataclass(frozen=True)
class TaskScore:
    """A lower-precision model's task metric (e.g. bits per character) next to its reference's."""

    metric: str
    data: str
    tokens: int
    reference: float
    value: float
    increase: float
    max_increase: float
    passed: bool


@dataclass(frozen=True)
class ReferenceParity:
    """The float32 source file's own parity with PyTorch, kept when a file was quantised from it."""

    max_abs_err: float
    max_rel_err: float
    atol: float
    steps: int
    passed: bool

    @classmethod
    def of(cls, record: ParityRecord) -> ReferenceParity:
        """The summary of a full record."""
        return cls(**{f.name: getattr(record, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class ParityRecord:
    """What a parity run measured: the worst errors, per mode and tensor, and the verdict."""

    steps: int
    batch: int
    atol: float
    rtol: float
    reference: str  # "pytorch" or "onnxruntime float32"
    torch: str | None
    onnxruntime: str
    max_abs_err: float
    max_rel_err: float
    passed: bool
    precision: str = "float32"
    chunk_size: int | None = None
    errors: dict[str, dict[str, TensorError]] = field(default_factory=dict)  # mode -> tensor
    task: TaskScore | None = None
    reference_parity: ReferenceParity | None = None

    def failures(self) -> list[str]:
        """One line per tensor (and task metric) that missed the tolerance."""
        lines = [
            f"{tensor} ({mode}): max abs err {err.max_abs_err:.3g}, "
            f"max rel err {err.max_rel_err:.3g}"
            for mode, tensors in self.errors.items()
            for tensor, err in tensors.items()
            if not err.within(self.atol, self.rtol)
        ]
        task = self.task
        if task and not task.passed:
            lines.append(
                f"{task.metric} {task.value:.4f} vs {task.reference:.4f} "
                f"(+{task.increase:.4f} > {task.max_increase:g})"
            )
        return lines

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout stored in the signature (modes at the top level, no empty fields)."""
        d: dict[str, Any] = {
            "steps": self.steps,
            "batch": self.batch,
            "atol": self.atol,
            "rtol": self.rtol,
            "reference": self.reference,
            "torch": self.torch,
            "onnxruntime": self.onnxruntime,
            "chunk_size": self.chunk_size,
        }
        for mode, tensors in self.errors.items():
            d[mode] = {name: asdict(err) for name, err in tensors.items()}
        d |= {
            "max_abs_err": self.max_abs_err,
            "max_rel_err": self.max_rel_err,
            "passed": self.passed,
            "precision": self.precision,
            "task": asdict(self.task) if self.task else None,
            "reference_parity": asdict(self.reference_parity) if self.reference_parity else None,
        }
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ParityRecord:
        """Read a stored record; :class:`SignatureError` naming the field if it is malformed."""
        try:
            task, reference_parity = d.get("task"), d.get("reference_parity")
            return cls(
                steps=int(d["steps"]),
                batch=int(d["batch"]),
                atol=float(d["atol"]),
                rtol=float(d.get("rtol", 0.0)),
                reference=str(d.get("reference", "pytorch")),
                torch=d.get("torch"),
                onnxruntime=str(d["onnxruntime"]),
                max_abs_err=float(d["max_abs_err"]),
                max_rel_err=float(d["max_rel_err"]),
                passed=_bool(d["passed"], "passed"),
                precision=str(d.get("precision", "float32")),
                chunk_size=int(d["chunk_size"]) if d.get("chunk_size") is not None else None,
                errors={
                    mode: {name: TensorError(**err) for name, err in d[mode].items()}
                    for mode in MODES
                    if mode in d
                },
                task=TaskScore(**task) if task is not None else None,
                reference_parity=(
                    ReferenceParity(**reference_parity) if reference_parity is not None else None
                ),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SignatureError(f"malformed parity record: {type(e).__name__} {e}") from e


def _bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value
