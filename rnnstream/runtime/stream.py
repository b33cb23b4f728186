"""A stream: one sequence (or a fixed batch of them) stepped through a shared model."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rnnstream.errors import InputError, SignatureError

if TYPE_CHECKING:
    from rnnstream.runtime.model import Model

__all__ = ["Stream"]


class Stream:
    """Carries the recurrent state of one sequence (or ``batch`` of them) between calls.

    ``step`` consumes one time step, ``feed`` a chunk of them in one onnxruntime run; both update
    the state only when the run succeeds, so a rejected input leaves the stream as it was.
    """

    def __init__(self, model: Model, batch: int | None = None) -> None:
        sig = model.signature
        if not sig.streamable:
            raise SignatureError(
                f"{model.name} is not streamable (kind {sig.kind!r}: it needs the whole sequence, "
                "e.g. a bidirectional layer); run it on whole sequences instead"
            )
        if batch is not None and batch < 1:
            raise InputError(f"batch must be >= 1, got {batch}")
        self.model = model
        self.batch = batch
        self._rows = 1 if batch is None else batch
        spec = sig.input
        self._name = spec.name
        self._dtype = np.dtype(spec.dtype)
        self._time_major = spec.time_axis == 0
        # The feature dimensions of one frame: the input shape without batch and time.
        self._frame_shape = tuple(
            d for i, d in enumerate(spec.shape) if i not in (spec.batch_axis, spec.time_axis)
        )
        self._out_time_axis = sig.outputs[0].time_axis
        self._state = model.zero_state(self._rows)

    def reset(self) -> None:
        """Return to the zero state."""
        self._state = self.model.zero_state(self._rows)

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the current state, by state input name."""
        return {k: v.copy() for k, v in self._state.items()}

    @state.setter
    def state(self, value: dict[str, np.ndarray]) -> None:
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
        self._state = new

    def step(self, x: np.ndarray | int | float) -> np.ndarray:
        """One time step: a frame ``[F...]`` or token id (``[B, F...]``/``[B]`` when batched)."""
        x = self._coerce(x, time=False)
        x = np.expand_dims(x, 0 if self._time_major else 1)
        y = self._run(x)
        if self._out_time_axis is not None:
            y = y[0] if self._time_major else y[:, 0]
        return y[0] if self.batch is None else y

    def feed(self, chunk: np.ndarray) -> np.ndarray:
        """T time steps in one run: ``[T, F...]`` (``[B, T, F...]`` when batched) → ``[T, ...]``."""
        x = self._coerce(chunk, time=True)
        if x.shape[1] == 0:
            raise InputError("feed: the chunk is empty (T=0)")
        if self._time_major:
            x = np.ascontiguousarray(x.swapaxes(0, 1))
        y = self._run(x)
        if self._time_major and self._out_time_axis is not None:
            y = y.swapaxes(0, 1)
        return y[0] if self.batch is None else y

    def _coerce(self, x: np.ndarray | int | float, time: bool) -> np.ndarray:
        """Check dtype and shape; return ``x`` as ``[B, (T,) F...]`` in the model's dtype."""
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf" or (self._dtype.kind in "iu" and arr.dtype.kind == "f"):
            raise InputError(f"input {self._name!r}: expected {self._dtype}, got {arr.dtype}")
        if self.batch is None:
            arr = arr[None]
        lead = 2 if time else 1
        expected = ("batch", "time")[:lead] + self._frame_shape
        ok = arr.ndim == len(expected) and arr.shape[0] == self._rows
        ok = ok and all(a == e for a, e in zip(arr.shape[lead:], self._frame_shape))
        if not ok:
            got = list(arr.shape[1:] if self.batch is None else arr.shape)
            want = list(expected[1:] if self.batch is None else expected)
            if self.batch is not None:
                want[0] = self._rows
            raise InputError(f"input {self._name!r}: expected shape {want}, got {got}")
        return arr.astype(self._dtype, copy=False)

    def _run(self, x: np.ndarray) -> np.ndarray:
        model = self.model
        feeds = {model.signature.input.name: x, **self._state}
        results = model.session.run(model.output_names, feeds)
        n_out = len(model.signature.outputs)
        self._state = {s.input: r for s, r in zip(model.signature.states, results[n_out:])}
        return results[0]
