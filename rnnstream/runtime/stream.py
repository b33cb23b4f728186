"""A stream: one sequence (or a fixed batch of them) stepped through a shared model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rnnstream.errors import InputError, SignatureError
from rnnstream.runtime.binding import PingPongState
from rnnstream.runtime.layout import InputLayout, OutputLayout

if TYPE_CHECKING:
    from rnnstream.runtime.model import Model

__all__ = ["Stream"]

Output = np.ndarray | dict[str, np.ndarray]


def require_streamable(model: Model) -> None:
    sig = model.signature
    if not sig.streamable:
        raise SignatureError(
            f"{model.name} is not streamable (kind {sig.kind!r}): it needs the whole sequence, "
            "e.g. a bidirectional layer; use model.run(x) on whole sequences instead"
        )


def run_error(model: Model, error: Exception) -> InputError:
    """An onnxruntime failure as one readable line naming the model."""
    text = str(error).strip().splitlines()
    return InputError(f"{model.name}: onnxruntime rejected the run: {text[0] if text else error}")


class Stream:
    """Carries the recurrent state of one sequence (or ``batch`` of them) between calls.

    ``step`` consumes one time step, ``feed`` a chunk of them in one onnxruntime run. The state
    changes only when a call succeeds: after a rejected input the stream is exactly as before.
    Models with one output return an array; models with several return ``{name: array}``.
    """

    def __init__(self, model: Model, batch: int | None = None, check_finite: bool = True) -> None:
        require_streamable(model)
        if batch is not None and batch < 1:
            raise InputError(f"batch must be >= 1, got {batch}")
        sig = model.signature
        self.model = model
        self.batch = batch
        self._single = batch is None
        self._rows = 1 if batch is None else batch
        self._input = InputLayout(sig.input, check_finite, sig.num_tokens)
        self._outputs = [OutputLayout(o) for o in sig.outputs]
        self._n_out = len(sig.outputs)
        self._state = PingPongState(model, self._rows)

    def reset(self) -> None:
        """Return to the zero state."""
        for array in self._state.current.values():
            array.fill(0)

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the current state, by state input name."""
        return {name: array.copy() for name, array in self._state.current.items()}

    @state.setter
    def state(self, value: dict[str, np.ndarray]) -> None:
        for name, array in self._validated_state(value).items():
            np.copyto(self._state.current[name], array)

    def save_state(self, path: str | Path) -> None:
        """Write the state to an ``.npz`` file, with the state specs to check it on load."""
        specs = np.asarray(self._spec_fingerprint())
        np.savez(path, __rnnstream_states__=specs, **self.state)

    def load_state(self, path: str | Path) -> None:
        """Restore a state written by :meth:`save_state`, refusing one from another model."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read state file {path}: {e}") from e
        fingerprint = arrays.pop("__rnnstream_states__", None)
        if fingerprint is None or str(fingerprint) != self._spec_fingerprint():
            raise InputError(
                f"state file {path} was saved from a model with other states "
                f"({None if fingerprint is None else str(fingerprint)}); this model has "
                f"{self._spec_fingerprint()}"
            )
        self.state = arrays

    def reorder(self, rows: object) -> None:
        """Make row ``i`` of the state a copy of row ``rows[i]``, for all rows at once.

        ``rows`` holds one index in ``[0, batch)`` per row; indices may repeat or leave rows out
        (beam search keeps the surviving beams' states this way). Bad indices raise
        :class:`InputError` and leave the state as it was.
        """
        idx = np.asarray(rows)
        if idx.shape != (self._rows,) or idx.dtype.kind not in "iu":
            raise InputError(
                f"rows: expected {self._rows} integer indices, got {idx.dtype}{list(idx.shape)}"
            )
        if idx.min() < 0 or idx.max() >= self._rows:
            raise InputError(
                f"rows: indices must be in [0, {self._rows}), "
                f"got {int(idx.min())}..{int(idx.max())}"
            )
        self._state.reorder(idx)

    def step(self, x: object) -> Output:
        """One time step: a frame ``[F...]`` or token id (``[B, F...]``/``[B]`` when batched)."""
        return self._run(self._input.convert_step(x, self._rows, self._single), step=True)

    def feed(self, chunk: object) -> Output:
        """T time steps in one run: ``[T, F...]`` (``[B, T, F...]`` when batched) → ``[T, ...]``."""
        if not self._input.has_time:
            raise InputError(f"{self.model.name} has no time axis: use step() once per chunk")
        x = self._input.convert(chunk, self._rows, self._single, time=True)
        return self._run(x, step=False)

    def _run(self, x: np.ndarray, step: bool) -> Output:
        try:
            results = self._state.run(x, step)
        except Exception as e:  # onnxruntime's own error types; the state is untouched
            raise run_error(self.model, e) from e
        if self._n_out == 1:
            return self._outputs[0].convert(results[0], self._single, step=step)
        return {
            layout.spec.name: layout.convert(r, self._single, step)
            for layout, r in zip(self._outputs, results)
        }

    def _validated_state(self, value: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        expected = self.model.zero_state(self._rows)
        if set(value) != set(expected):
            raise InputError(f"state must have keys {sorted(expected)}, got {sorted(value)}")
        new = {}
        for name, zero in expected.items():
            arr = np.asarray(value[name])
            if arr.shape != zero.shape or arr.dtype != zero.dtype:
                raise InputError(
                    f"state {name!r}: expected {zero.dtype}{list(zero.shape)}, "
                    f"got {arr.dtype}{list(arr.shape)}"
                )
            new[name] = arr.copy()
        return new

    def _spec_fingerprint(self) -> str:
        return ";".join(
            f"{s.input}->{s.output}:{s.dtype}{list(s.shape)}" for s in self.model.signature.states
        )
