"""How parity is measured: one frozen settings object shared by ``export``, ``verify`` and
``quantize_file`` (and by the CLI's options), instead of the same seven keywords on each."""

from __future__ import annotations

from dataclasses import dataclass

from rnnstream.errors import ExportError

__all__ = ["EVAL_TOKENS", "ParitySettings"]

EVAL_TOKENS = 100_000  # validation tokens scored by default


@dataclass(frozen=True)
class ParitySettings:
    """The random stream parity runs on, the tolerance override and the task-metric data.

    Parity steps the ONNX model ``steps`` times over ``batch`` random sequences (from ``seed``),
    and again in chunks of ``chunk`` steps, against one reference forward. ``atol`` replaces the
    absolute part of the precision's tolerance. Below float32, a model with a task metric (a
    character LM) is also scored on the first ``eval_tokens`` tokens of ``eval_data``'s validation
    text (``verify`` re-uses the data recorded in the file instead).
    """

    steps: int = 1000
    batch: int = 2
    chunk: int = 16
    atol: float | None = None
    seed: int = 0
    eval_data: str = "stdlib"
    eval_tokens: int = EVAL_TOKENS

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ExportError(f"parity {name} must be a whole number >= 1, got {value!r}")
        if isinstance(self.eval_tokens, bool) or not isinstance(self.eval_tokens, int):
            raise ExportError(f"parity eval_tokens must be an int, got {self.eval_tokens!r}")
        if self.eval_tokens < 2:
            raise ExportError(f"parity eval_tokens must be >= 2, got {self.eval_tokens}")
        if self.atol is not None and not self.atol >= 0:
            raise ExportError(f"parity atol must be >= 0, got {self.atol!r}")
