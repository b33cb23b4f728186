"""StreamPool: many independent streams of one model, batched into one onnxruntime run per tick."""

from __future__ import annotations

import heapq
import itertools
import operator
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from rnnstream.errors import InputError, SignatureError
from rnnstream.runtime.layout import InputLayout
from rnnstream.runtime.runner import Output

if TYPE_CHECKING:
    from rnnstream.runtime.model import Model

__all__ = ["StreamPool"]


class StreamPool:
    """Independent streams that share one batched run per :meth:`step`.

    The states of all streams live in one array per state, one batch row per stream. A closed
    stream's row becomes a hole that the next :meth:`open` reuses, so streams joining and leaving
    copy no state. A tick where every row steps feeds the arrays as they are; any other tick
    gathers the stepping rows and scatters the results back, leaving the other rows untouched.

    One pool may be shared between threads: every method holds the pool's lock while it runs, so
    a tick and an open, close, reset or state read never interleave (ticks from several threads
    run one after another; for runs in parallel, give each thread a pool or a stream of its own).

    A model without a batch axis (states of one sequence, e.g. ``h`` fixed at ``[1, 1, H]``) has
    no rows to share, nor has one whose states were exported with a fixed batch (``[2, 1, H]``):
    the pool refuses both with a :class:`SignatureError` rather than running one call per stream
    per tick, which would hide the cost; use one :class:`Stream` per sequence.
    """

    def __init__(self, model: Model, check_finite: bool = True) -> None:
        runner = model.runner
        runner.require_streamable()
        sig = model.signature
        if sig.input.batch_axis is None or any(s.batch_axis is None for s in sig.states):
            raise SignatureError(
                f"{model.name} has no batch axis (its states hold one sequence): a pool cannot "
                "batch its streams; make one model.stream() per sequence instead"
            )
        least = sig.least_steps
        if least > 1:
            raise SignatureError(
                f"{model.name} runs on at least {least} time steps at once (it refused fewer "
                "when loaded): a pool steps one frame per stream; feed chunks to one "
                "model.stream() per sequence instead"
            )
        tensors = [("input", sig.input.name, sig.input.shape, sig.input.batch_axis)]
        tensors += [("state", s.input, s.shape, s.batch_axis) for s in sig.states]
        for what, name, shape, axis in tensors:
            if isinstance(shape[axis], int):
                raise SignatureError(
                    f"{model.name} has a fixed batch ({what} {name!r} {list(shape)} at axis "
                    f"{axis}): a pool cannot batch its streams; make one model.stream() per "
                    "sequence instead"
                )
        self.model = model
        self._runner = runner
        self._input = InputLayout(sig.input, check_finite, sig.num_tokens)
        self._specs = sig.states
        self._n_out = len(sig.outputs)
        self._ids = itertools.count()
        self._rows: dict[int, int] = {}  # stream id -> its row in the state arrays
        self._holes: list[int] = []  # rows of closed streams (a heap: lowest reused first)
        self._all_rows: list[int] = []  # [0, 1, ..., capacity-1]
        self._states = runner.zero_state(0)
        self._lock = threading.Lock()  # guards the rows, the holes and the state arrays

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def __contains__(self, stream_id: int) -> bool:
        with self._lock:
            return stream_id in self._rows

    def open(self) -> int:
        """Open a new stream at the zero state; returns its id."""
        with self._lock:
            return self._open()

    def close(self, stream_id: int) -> None:
        """Close a stream and forget its state."""
        with self._lock:
            self._close(stream_id)

    def reset(self, stream_id: int) -> None:
        """Put one stream back to the zero state."""
        with self._lock:
            self._zero_row(self._row(stream_id))

    def state(self, stream_id: int) -> dict[str, np.ndarray]:
        """A copy of one stream's state, shaped as a single stream's."""
        with self._lock:
            row = self._row(stream_id)
            return {
                spec.input: np.take(self._states[spec.input], [row], axis=spec.batch_axis)
                for spec in self._specs
            }

    def step(self, inputs: dict[int, object]) -> dict[int, Output]:
        """One step of each stream in ``inputs`` (``{id: frame}``) in one run; ``{id: output}``.

        Each stream's output is laid out as a single :class:`Stream`'s step: an array for a model
        with one output, ``{name: array}`` for a model with several. Streams not in ``inputs``
        keep their state. A bad frame or an unknown id rejects the whole tick before anything
        runs, naming the stream.
        """
        if not isinstance(inputs, Mapping):
            raise InputError(
                f"inputs must be a dict {{stream id: frame}}, got {type(inputs).__name__}"
            )
        if not inputs:
            return {}
        with self._lock:
            return self._step(inputs)

    def _open(self) -> int:
        stream_id = next(self._ids)
        if self._holes:
            row = heapq.heappop(self._holes)
            self._zero_row(row)
        else:
            row = len(self._all_rows)
            zero = self._runner.zero_state(1)
            for spec in self._specs:
                self._states[spec.input] = np.concatenate(
                    [self._states[spec.input], zero[spec.input]], axis=spec.batch_axis
                )
            self._all_rows.append(row)
        self._rows[stream_id] = row
        return stream_id

    def _close(self, stream_id: int) -> None:
        heapq.heappush(self._holes, self._row(stream_id))
        del self._rows[stream_id]
        if len(self._holes) > max(8, len(self._rows)):
            self._compact()

    def _step(self, inputs: dict[int, object]) -> dict[int, Output]:
        ids = list(inputs)
        try:
            rows = [self._rows[i] for i in ids]
        except (KeyError, TypeError):  # an unknown or unhashable id: named by _row
            rows = [self._row(i) for i in ids]
        everyone = len(rows) == len(self._all_rows)
        if everyone and rows != self._all_rows:
            ids.sort(key=self._rows.__getitem__)
            rows = self._all_rows
        x = self._batch_input(ids, inputs)
        feeds = {self._input.name: x}
        for spec in self._specs:
            state = self._states[spec.input]
            feeds[spec.input] = state if everyone else np.take(state, rows, axis=spec.batch_axis)
        results = self._runner.run(feeds)  # a rejected run has changed no state
        outputs = self._runner.outputs(results, single=False, step=True)  # nor a refused output
        for spec, new in zip(self._specs, results[self._n_out :]):
            if everyone:
                self._states[spec.input] = new
            else:
                self._states[spec.input][_index(new.ndim, spec.batch_axis, rows)] = new
        return self._runner.split_rows(outputs, ids)

    def _batch_input(self, ids: list[int], inputs: dict[int, object]) -> np.ndarray:
        """The frames of ``ids`` as one model input; a bad frame is named by its stream."""
        try:
            frames = [inputs[i] for i in ids]
            x = np.array(frames)  # frames of unequal shapes raise ValueError (~3x np.stack's speed)
            if x.dtype.kind != "b" and "b" in _kinds(frames):  # np.array cast a boolean frame
                raise TypeError("a boolean frame among numbers")
            return self._input.convert_step(x, len(ids), False)
        except (InputError, ValueError, TypeError):
            for stream_id in ids:  # find the culprit
                try:
                    self._input.convert_step(inputs[stream_id], 1, True)
                except InputError as e:
                    raise InputError(f"stream {stream_id}: {e}") from e
            shapes = ", ".join(f"{i}: {list(np.shape(inputs[i]))}" for i in ids)
            raise InputError(
                f"input {self._input.name!r}: the frames of streams {ids} do not stack into a "
                f"batch (shapes {shapes}); one tick takes frames of one length"
            ) from None

    def _zero_row(self, row: int) -> None:
        for spec in self._specs:
            self._states[spec.input][_index(len(spec.shape), spec.batch_axis, row)] = 0

    def _compact(self) -> None:
        """Drop the holes: live rows move to the front, in row order."""
        live = sorted(self._rows.items(), key=lambda item: item[1])
        keep = [row for _, row in live]
        for spec in self._specs:
            self._states[spec.input] = np.take(self._states[spec.input], keep, spec.batch_axis)
        self._rows = {stream_id: new for new, (stream_id, _) in enumerate(live)}
        self._holes = []
        self._all_rows = list(range(len(keep)))

    def _row(self, stream_id: int) -> int:
        try:
            return self._rows[stream_id]
        except (KeyError, TypeError):  # TypeError: an unhashable id
            raise InputError(f"stream {stream_id} is not open in this pool") from None


_DTYPE = operator.attrgetter("dtype")


def _kinds(frames: list[object]) -> set[str]:
    """The dtype kinds of ``frames``: one pass in C over arrays (their distinct dtypes), a
    conversion each only when lists or Python scalars are among them."""
    try:
        return {dtype.kind for dtype in set(map(_DTYPE, frames))}
    except AttributeError:
        return {np.asarray(frame).dtype.kind for frame in frames}


def _index(ndim: int, axis: int, rows: int | list[int]) -> tuple:
    index: list[object] = [slice(None)] * ndim
    index[axis] = rows
    return tuple(index)
