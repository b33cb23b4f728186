"""StreamPool: many independent streams of one model, batched into one onnxruntime run per tick."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

from rnnstream.errors import InputError, SignatureError
from rnnstream.runtime.layout import InputLayout, OutputLayout
from rnnstream.runtime.stream import require_streamable, run_error

if TYPE_CHECKING:
    from rnnstream.runtime.model import Model

__all__ = ["StreamPool"]


class StreamPool:
    """Independent streams that share one batched run per :meth:`step`.

    The states of all open streams live in one array per state, one batch row per stream, in
    opening order. A tick where every open stream steps feeds those arrays as they are; a tick
    with a subset gathers its rows and scatters the results back, leaving the others untouched.
    """

    def __init__(self, model: Model, check_finite: bool = True) -> None:
        require_streamable(model)
        sig = model.signature
        if sig.input.batch_axis is None or any(s.batch_axis is None for s in sig.states):
            raise SignatureError(f"{model.name} has no batch axis: a pool needs one")
        self.model = model
        self._input = InputLayout(sig.input, check_finite, sig.num_tokens)
        self._output = OutputLayout(sig.outputs[0])
        self._in_axis = sig.input.batch_axis
        self._state_specs = sig.states
        self._n_out = len(sig.outputs)
        self._ids = itertools.count()
        self._rows: dict[int, int] = {}  # stream id -> row in the state arrays
        self._order: list[int] = []  # stream ids by row
        self._states = model.zero_state(0)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, stream_id: int) -> bool:
        return stream_id in self._rows

    def open(self) -> int:
        """Open a new stream at the zero state; returns its id."""
        stream_id = next(self._ids)
        zero = self.model.zero_state(1)
        for spec in self._state_specs:
            name = spec.input
            self._states[name] = np.concatenate(
                [self._states[name], zero[name]], axis=spec.batch_axis
            )
        self._rows[stream_id] = len(self._order)
        self._order.append(stream_id)
        return stream_id

    def close(self, stream_id: int) -> None:
        """Close a stream and forget its state."""
        row = self._row(stream_id)
        for spec in self._state_specs:
            self._states[spec.input] = np.delete(
                self._states[spec.input], row, axis=spec.batch_axis
            )
        del self._rows[stream_id]
        self._order.pop(row)
        for moved in self._order[row:]:
            self._rows[moved] -= 1

    def reset(self, stream_id: int) -> None:
        """Put one stream back to the zero state."""
        row = self._row(stream_id)
        for spec in self._state_specs:
            index = [slice(None)] * len(spec.shape)
            index[spec.batch_axis] = row
            self._states[spec.input][tuple(index)] = 0

    def state(self, stream_id: int) -> dict[str, np.ndarray]:
        """A copy of one stream's state, shaped as a single stream's."""
        row = self._row(stream_id)
        return {
            spec.input: np.take(self._states[spec.input], [row], axis=spec.batch_axis)
            for spec in self._state_specs
        }

    def step(self, inputs: dict[int, object]) -> dict[int, np.ndarray]:
        """One step of each stream in ``inputs`` (``{id: frame}``) in one run; ``{id: output}``.

        Streams not in ``inputs`` keep their state. A bad frame or an unknown id rejects the whole
        tick before anything runs, naming the stream.
        """
        if not inputs:
            return {}
        ids = sorted(inputs, key=self._row)
        rows = [self._rows[i] for i in ids]
        frames = []
        for stream_id in ids:
            try:
                frames.append(self._input.convert(inputs[stream_id], 1, True, time=False))
            except InputError as e:
                raise InputError(f"stream {stream_id}: {e}") from e
        x = np.concatenate(frames, axis=self._in_axis) if len(frames) > 1 else frames[0]
        everyone = rows == list(range(len(self._order)))
        feeds = {self._input.name: x, **self.model.constants}
        for spec in self._state_specs:
            state = self._states[spec.input]
            feeds[spec.input] = state if everyone else np.take(state, rows, axis=spec.batch_axis)
        try:
            results = self.model.session.run(self.model.output_names, feeds)
        except Exception as e:  # onnxruntime's own error types; no state has changed
            raise run_error(self.model, e) from e
        for spec, new in zip(self._state_specs, results[self._n_out :]):
            if everyone:
                self._states[spec.input] = new
            else:
                index = [slice(None)] * new.ndim
                index[spec.batch_axis] = rows
                self._states[spec.input][tuple(index)] = new
        y = self._output.convert(results[0], single=False, step=True)
        return dict(zip(ids, y))

    def _row(self, stream_id: int) -> int:
        try:
            return self._rows[stream_id]
        except KeyError:
            raise InputError(f"stream {stream_id} is not open in this pool") from None
