"""A stream: one sequence (or a fixed batch of them) stepped through a shared model."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rnnstream.errors import InputError, SignatureError
from rnnstream.runtime.layout import InputLayout, StepFrame, as_array
from rnnstream.runtime.runner import Output

if TYPE_CHECKING:
    from rnnstream.runtime.model import Model

__all__ = ["Stream"]


class Stream:
    """Carries the recurrent state of one sequence (or ``batch`` of them) between calls.

    ``step`` consumes one time step, ``feed`` a chunk of them in one onnxruntime run. The state
    changes only when a call succeeds: after a rejected input the stream is exactly as before.
    Models with one output return an array; models with several return ``{name: array}``.
    """

    def __init__(self, model: Model, batch: int | None = None, check_finite: bool = True) -> None:
        runner = model.runner
        runner.require_streamable()
        if batch is not None:
            if not isinstance(batch, int | np.integer) or isinstance(batch, bool) or batch < 1:
                raise InputError(f"batch must be None or an integer >= 1, got {batch!r}")
            batch = int(batch)
        sig = model.signature
        rows = 1 if batch is None else batch
        fixed = None if sig.input.batch_axis is None else sig.input.shape[sig.input.batch_axis]
        if isinstance(fixed, int) and fixed != rows:
            raise SignatureError(
                f"input {sig.input.name!r} has a fixed batch of {fixed}; cannot hold {rows} rows"
            )
        self.model = model
        self.batch = batch
        self._runner = runner
        self._check_finite = check_finite
        self._single = batch is None
        self._rows = 1 if batch is None else batch
        self._input = InputLayout(sig.input, check_finite, sig.num_tokens)
        self._state = runner.state_buffers(self._rows)
        # The common step (fixed frame and output shapes): the frame is copied into a buffer
        # bound once, the outputs are copied out of views of the bound outputs in the caller's
        # layout (built here, once)
        self._frame: StepFrame | None = None
        self._step_views: Output | None = None
        # A model that refused one time step at load (a subsampling encoder) takes chunks only
        self._least = sig.least_steps
        shapes = self._input.step_shapes(self._rows, self._single)
        if shapes is not None and 0 not in shapes[1] and self._least == 1:
            kept = self._state.keep_step_input(shapes[1], self._input.dtype)
            if kept is not None:
                self._frame = self._input.step_frame(kept, self._rows, self._single)
                self._step_views = runner.outputs(self._state.step_outputs, self._single, True)
        if self._least > 1:
            self.step = self._refuse_step  # type: ignore[method-assign]

    def reset(self) -> None:
        """Return to the zero state."""
        for array in self._state.current.values():
            array.fill(0)

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the current state, by state input name."""
        return {name: array.copy() for name, array in self._state.current.items()}

    @state.setter
    def state(self, value: Mapping[str, np.ndarray]) -> None:
        """Set the state from ``{name: array}``: all states, exactly shaped, finite (when the
        stream checks for NaN); anything else is an :class:`InputError` and changes nothing."""
        for name, array in self._validated_state(value).items():
            np.copyto(self._state.current[name], array)

    def save_state(self, path: str | Path) -> None:
        """Write the state to ``path`` exactly (an ``.npz`` archive whatever the suffix), with the
        state specs to check it on load."""
        specs = np.asarray(self._spec_fingerprint())
        try:
            with open(path, "wb") as f:
                np.savez(f, __rnnstream_states__=specs, **self.state)
        except OSError as e:
            raise InputError(f"cannot write state file {path}: {e}") from e

    def load_state(self, path: str | Path) -> None:
        """Restore a state written by :meth:`save_state`, refusing one from another model."""
        arrays = _read_archive(path)
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
        idx = as_array(rows, "rows")
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
        frame = self._frame
        if frame is None:  # a free frame or output dimension: each step binds its own arrays
            return self._run(self._input.convert_step(x, self._rows, self._single), step=True)
        frame.fill(x)  # a rejected frame raises here, before anything runs
        self._state.run_step()
        views = self._step_views  # the bound outputs: copied, so no step changes a result
        if type(views) is dict:
            return {name: view.copy() for name, view in views.items()}
        return views.copy()

    def feed(self, chunk: object) -> Output:
        """T time steps in one run: ``[T, F...]`` (``[B, T, F...]`` when batched) → ``[T, ...]``.

        A model without a time axis (one window per run, like Silero VAD) or with one fixed at 1
        runs the T steps one after the other; every step is checked before the first runs, and a
        failing run puts the state back as it was before the chunk.
        """
        if not self._input.takes_chunks:
            return self._feed_steps(chunk)
        x = self._input.convert(chunk, self._rows, self._single, time=True)
        if self._least > 1:
            steps = x.shape[self.model.signature.input.time_axis]
            if steps < self._least:
                raise self._too_few(steps)
        return self._run(x, step=False)

    def _too_few(self, steps: int) -> InputError:
        return InputError(
            f"input {self._input.name!r}: the model runs on at least {self._least} time steps "
            f"at once (it refused fewer when loaded), got {steps}; feed() chunks of "
            f"{self._least} or more"
        )

    def _refuse_step(self, x: object) -> Output:
        raise self._too_few(1)

    def _feed_steps(self, chunk: object) -> Output:
        arr = as_array(chunk, f"input {self._input.name!r}")
        axis = 0 if self._single else 1  # the chunk's time axis
        if arr.ndim != axis + 1 + len(self._input.frame_shape) or arr.shape[:axis] != (
            (self._rows,) * axis
        ):
            want = self._input.describe(None if self._single else self._rows, time=True)
            raise InputError(
                f"input {self._input.name!r}: expected shape {want}, got {list(arr.shape)}"
            )
        if arr.shape[axis] == 0:
            raise InputError(f"input {self._input.name!r}: the chunk is empty (0 time steps)")
        steps = [
            self._input.convert_step(np.take(arr, t, axis=axis), self._rows, self._single)
            for t in range(arr.shape[axis])
        ]
        before = self.state
        try:
            outputs = [self._run(x, step=True) for x in steps]
        except InputError:
            self.state = before
            raise
        if isinstance(outputs[0], dict):
            return {k: np.stack([o[k] for o in outputs], axis=axis) for k in outputs[0]}
        return np.stack(outputs, axis=axis)

    def _run(self, x: np.ndarray, step: bool) -> Output:
        results = self._state.run(x, step)  # a rejected run leaves the state untouched
        try:
            return self._runner.outputs(results, self._single, step)
        except InputError:  # an output of another rank than the signature's
            self._state.undo()
            raise

    def _validated_state(self, value: object) -> dict[str, np.ndarray]:
        expected = self._runner.zero_state(self._rows)
        if not isinstance(value, Mapping):
            raise InputError(
                f"state must be a dict {{name: array}} with keys {sorted(expected)}, "
                f"got {type(value).__name__}"
            )
        if set(value) != set(expected):
            raise InputError(
                f"state must have keys {sorted(expected)}, got {sorted(map(str, value))}"
            )
        new = {}
        for name, zero in expected.items():
            arr = as_array(value[name], f"state {name!r}")
            if arr.shape != zero.shape or arr.dtype != zero.dtype:
                raise InputError(
                    f"state {name!r}: expected {zero.dtype}{list(zero.shape)}, "
                    f"got {arr.dtype}{list(arr.shape)}"
                )
            if self._check_finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise InputError(f"state {name!r}: contains NaN or infinity")
            new[name] = arr.copy()
        return new

    def _spec_fingerprint(self) -> str:
        return ";".join(
            f"{s.input}->{s.output}:{s.dtype}{list(s.shape)}" for s in self.model.signature.states
        )


def _read_archive(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` state file; anything unreadable is an :class:`InputError`."""
    try:
        with open(path, "rb") as f:
            data = np.load(f, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise InputError(f"state file {path} is not an .npz archive of states")
            with data:
                return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise InputError(f"cannot read state file {path}: {e}") from e
