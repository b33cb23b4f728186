"""State kept in onnxruntime-bound buffers between steps: two sets, read and written in turn.

Each run reads the state from one set of arrays and writes the new state into the other, through
IOBinding, so no state is copied or re-fed as a dict per step. A failed run leaves the current set
untouched (only the other set may be half written), which is what keeps a rejected step harmless.
Single steps are bound on the runner's step session for ``rows`` (pinned shapes, see
:mod:`rnnstream.runtime.runner`), chunks on its general session; both share the state buffers.
When a step's shapes are fixed, its outputs and (:meth:`PingPongState.keep_step_input`) its input
are buffers bound once as well: a step then binds nothing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

if TYPE_CHECKING:
    from rnnstream.runtime.runner import Runner

__all__ = ["PingPongState"]


class PingPongState:
    """Two state buffers for ``rows`` sequences with IOBindings for single steps and chunks."""

    def __init__(self, runner: Runner, rows: int) -> None:
        sig = runner.signature
        self._session = runner.session
        self._error = runner.error
        self._input_name = sig.input.name
        self._n_out = len(sig.outputs)
        self._output_names = [o.name for o in sig.outputs]
        self.names = [s.input for s in sig.states]
        self._batch_axes = [(s.input, s.batch_axis) for s in sig.states if s.batch_axis is not None]
        self.buffers = [runner.zero_state(rows), runner.zero_state(rows)]
        self.turn = 0
        declared = {o.name: o.shape for o in self._session.get_outputs()}
        step_shapes = [
            _step_shape(o.shape, declared.get(o.name), o.batch_axis, o.time_axis, rows)
            for o in sig.outputs
        ]
        self._step_outputs: list[np.ndarray] | None = None
        if all(shape is not None for shape in step_shapes):
            self._step_outputs = [
                np.zeros(shape, dtype=o.dtype) for shape, o in zip(step_shapes, sig.outputs)
            ]
        # Steps with outputs of a known shape run on the session pinned to that shape
        fixed_steps = self._step_outputs is not None
        self._step_session = runner.step_session(rows) if fixed_steps else self._session
        # Lengths inputs: bound once for steps when a step's count is fixed (a time axis: 1),
        # else bound on each run from the input
        self._length_feeds = runner.length_feeds if runner.lengths else None
        self._constants = runner.constants
        self._rows = rows
        self._step_shapes_given = runner.step_shapes_given
        x_spec = sig.input
        step_counts = [
            1 if s.counts == x_spec.time_axis else x_spec.shape[s.counts] for s in runner.lengths
        ]
        self._step_lengths_vary = not all(isinstance(n, int) for n in step_counts)
        self._bound_lengths: dict[str, np.ndarray] = {}  # kept alive: bound to the step runs
        self._step = [
            self._bind(runner, self._step_session, k, self._step_outputs) for k in range(2)
        ]
        if runner.lengths and not self._step_lengths_vary:
            rows_fed = 1 if x_spec.batch_axis is None else rows
            for s, count in zip(runner.lengths, step_counts):
                value = np.full((rows_fed,) if s.shape else (), count, s.dtype)
                self._bound_lengths[s.name] = value
                for io in self._step:
                    io.bind_cpu_input(s.name, value)
        self._chunk = [self._bind(runner, self._session, k, None) for k in range(2)]
        self._kept_input: np.ndarray | None = None

    def _bind(
        self,
        runner: Runner,
        session: ort.InferenceSession,
        k: int,
        outputs: list[np.ndarray] | None,
    ) -> ort.IOBinding:
        io = session.io_binding()
        for name, value in runner.constants.items():
            io.bind_cpu_input(name, value)
        # Outputs first: copy_outputs_to_cpu returns them in binding order.
        for i, spec in enumerate(runner.signature.outputs):
            if outputs is None:
                io.bind_output(spec.name)
            else:
                io.bind_ortvalue_output(spec.name, _wrap(outputs[i]))
        for spec in runner.signature.states:
            io.bind_ortvalue_input(spec.input, _wrap(self.buffers[k][spec.input]))
            io.bind_ortvalue_output(spec.output, _wrap(self.buffers[1 - k][spec.input]))
        return io

    @property
    def current(self) -> dict[str, np.ndarray]:
        """The live state arrays (not copies)."""
        return self.buffers[self.turn]

    def undo(self) -> None:
        """Go back to the state before the last run (its set is untouched until the next)."""
        self.turn ^= 1

    def reorder(self, rows: np.ndarray) -> None:
        """Row ``i`` of every state becomes row ``rows[i]``, in place (the bindings stay valid).

        ``rows`` must already be checked: one index in range per row.
        """
        current = self.current
        for name, axis in self._batch_axes:
            np.copyto(current[name], np.take(current[name], rows, axis=axis))

    @property
    def step_outputs(self) -> list[np.ndarray] | None:
        """The arrays every step writes its outputs into (live, not copies), or None when an
        output's step shape is not fixed (each step then gets fresh ones)."""
        return self._step_outputs

    def keep_step_input(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
        """A zeroed buffer for one step's input (``shape`` in the model's layout), bound once to
        both step runs: fill it, then :meth:`run_step`. None when a step's outputs or lengths
        are not fixed (then every step binds its own input through :meth:`run`)."""
        if self._step_outputs is None or self._step_lengths_vary:
            return None
        self._kept_input = np.zeros(shape, dtype)
        self._fit_step_outputs()
        if self._step_outputs is None:
            return None
        value = _wrap(self._kept_input)
        for io in self._step:
            io.bind_ortvalue_input(self._input_name, value)
        return self._kept_input

    def _fit_step_outputs(self) -> None:
        """Bind the outputs to what one step really gives, found by one run on zeros (once
        per rows value: kept in the runner's ``step_shapes_given``).

        A model may drop size-1 axes at one time step (a ``squeeze()`` in its forward): on a
        step session its output is then bound as it comes and :attr:`step_outputs` are views of
        it with the signature's axes. Any other difference leaves the outputs unbound (each step
        gets fresh ones on the general session, and the output layout refuses a wrong rank).
        A run that fails here is left to the real steps, whose error names the input.
        """
        shapes = self._step_shapes_given.get(self._rows, ())
        if shapes == ():  # not run yet for this many rows: the shapes only depend on them
            feeds = {self._input_name: self._kept_input, **self.current, **self._constants}
            feeds.update(self._bound_lengths)
            try:
                shapes = [y.shape for y in self._step_session.run(self._output_names, feeds)]
            except Exception:  # onnxruntime's own error types: the steps raise them, worded
                shapes = None
            self._step_shapes_given[self._rows] = shapes
        if shapes is None:
            return
        for i, (want, got) in enumerate(zip(self._step_outputs, shapes)):
            if got == want.shape:
                continue
            reshapes = math.prod(got) == want.size and _squeezed(got) == _squeezed(want.shape)
            # the general session refuses a bound output of another rank than the file declares
            if not reshapes or self._step_session is self._session:
                self._step_outputs = None  # steps run on the general session, unbound
                self._kept_input = None
                return
            buffer = np.zeros(got, want.dtype)
            for io in self._step:
                io.bind_ortvalue_output(self._output_names[i], _wrap(buffer))
            self._step_outputs[i] = buffer.reshape(want.shape)  # a view: sizes of 1 added

    def run_step(self) -> None:
        """One step on the kept input (:meth:`keep_step_input`): the state advances and the
        outputs are written into :attr:`step_outputs`.

        A failed run raises the runner's ``InputError`` and leaves the current state as it was.
        """
        try:
            self._step_session.run_with_iobinding(self._step[self.turn])
        except Exception as e:  # onnxruntime's own error types, worded by the runner
            raise self._error(e) from e
        self.turn ^= 1

    def run(self, x: np.ndarray, step: bool) -> list[np.ndarray]:
        """Run on ``x`` (model layout), advance the state, return copies of the outputs.

        A failed run raises the runner's ``InputError`` and leaves the current state as it was.
        """
        if step and self._kept_input is not None:
            np.copyto(self._kept_input, x)
            self.run_step()
            return [y.copy() for y in self._step_outputs]
        fixed = step and self._step_outputs is not None
        io = (self._step if fixed else self._chunk)[self.turn]
        io.bind_cpu_input(self._input_name, x)
        if self._length_feeds is not None and (not fixed or self._step_lengths_vary):
            for name, value in self._length_feeds(x).items():
                io.bind_cpu_input(name, value)
        if not fixed:  # a fresh output each run: chunk lengths differ
            for name in self._output_names:
                io.bind_output(name)
        try:
            (self._step_session if fixed else self._session).run_with_iobinding(io)
        except Exception as e:  # onnxruntime's own error types, worded by the runner
            raise self._error(e) from e
        self.turn ^= 1
        if fixed:
            return [y.copy() for y in self._step_outputs]
        return io.copy_outputs_to_cpu()[: self._n_out]


def _wrap(array: np.ndarray) -> ort.OrtValue:
    """An OrtValue sharing ``array``'s memory (the array must outlive it)."""
    return ort.OrtValue.ortvalue_from_numpy(array)


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _step_shape(
    shape: tuple,
    declared: list | None,
    batch_axis: int | None,
    time_axis: int | None,
    rows: int,
) -> tuple[int, ...] | None:
    """The output's shape for one step of ``rows`` sequences, or None if a dimension is unknown
    or the graph declares another fixed size there (an exporter's stale shape, such as
    ``[batch, 3, 3]`` from a 3-step example: onnxruntime refuses a bound output that contradicts
    it, but allocates a fresh one)."""
    concrete = []
    for axis, d in enumerate(shape):
        step = {batch_axis: rows, time_axis: 1}.get(axis, d)
        if not isinstance(step, int):
            return None
        concrete.append(step)
    if declared is not None and any(
        isinstance(d, int) and d != step for d, step in zip(declared, concrete)
    ):
        return None
    return tuple(concrete)
