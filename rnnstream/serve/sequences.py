"""Sequences by correlation id over one StreamPool: the logic of the Triton python model.

Triton's sequence batcher hands the model a list of requests, each the next step of one sequence
(its correlation id, START and END flags and one frame). :class:`PooledSequences` keeps one pool
stream per open sequence and steps every request of a call in one pool tick. It knows nothing of
Triton, so it is tested without a server; ``triton_model.py`` only converts to and from Triton.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rnnstream.errors import InputError, RnnStreamError
from rnnstream.runtime import Model
from rnnstream.runtime.layout import InputLayout

__all__ = ["PooledSequences", "StepRequest"]

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class StepRequest:
    """One step of one sequence, as a request carries it.

    ``frame`` has a leading batch axis of 1 (``[1, frame...]``), as Triton passes it.
    """

    sequence_id: int
    start: bool
    end: bool
    frame: np.ndarray


class PooledSequences:
    """Open sequences of one model, by correlation id, stepped together in a StreamPool.

    A START request opens the sequence at the zero state (a sequence already open under that id
    is replaced); an END request closes it after its step; a sequence with no request for
    ``idle_seconds`` is released at the next call. A request with a bad frame, or for a sequence
    that is not open, gets an error and changes no state; the other requests of the call step
    as usual.
    """

    def __init__(
        self, model: Model, idle_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.model = model
        self.pool = model.pool()
        self.idle_seconds = idle_seconds
        self._clock = clock
        sig = model.signature
        self._check = InputLayout(sig.input, True, sig.num_tokens)
        self._first_output = sig.outputs[0].name
        self._streams: dict[int, int] = {}  # sequence id -> pool stream id
        self._last_seen: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, sequence_id: int) -> bool:
        return sequence_id in self._streams

    def execute(self, requests: Sequence[StepRequest]) -> list[Outputs | RnnStreamError]:
        """Step every request; per request, its outputs (``{name: [1, ...]}``) or its error.

        Requests of different sequences step in one pool tick. Should one call hold several
        steps of a sequence, they run in order, one tick each.
        """
        self.release_idle()
        results: list[Outputs | RnnStreamError | None] = [None] * len(requests)
        rounds: list[list[int]] = []
        seen: dict[int, int] = {}
        for i, request in enumerate(requests):
            k = seen.get(request.sequence_id, 0)
            seen[request.sequence_id] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(i)
        for indices in rounds:
            self._tick([(i, requests[i]) for i in indices], results)
        return results  # type: ignore[return-value]  (every slot is filled by _tick)

    def release_idle(self) -> list[int]:
        """Close the sequences idle for longer than ``idle_seconds``; returns their ids."""
        deadline = self._clock() - self.idle_seconds
        idle = [s for s, seen in self._last_seen.items() if seen < deadline]
        for sequence_id in idle:
            self._close(sequence_id)
        return idle

    def _tick(
        self, batch: list[tuple[int, StepRequest]], results: list[Outputs | RnnStreamError | None]
    ) -> None:
        now = self._clock()
        frames: dict[int, np.ndarray] = {}  # pool stream id -> frame
        owners: dict[int, int] = {}  # pool stream id -> request index
        for i, request in batch:
            sid = request.sequence_id
            if request.start:
                if sid in self._streams:
                    self.pool.close(self._streams[sid])
                self._streams[sid] = self.pool.open()
            elif sid not in self._streams:
                results[i] = InputError(
                    f"sequence {sid} is not open: its first request must set START "
                    f"(a sequence idle for {self.idle_seconds:g} s is released)"
                )
                continue
            self._last_seen[sid] = now
            try:
                frame = self._frame(request.frame)
            except InputError as e:
                results[i] = InputError(f"sequence {sid}: {e}")
                continue
            frames[self._streams[sid]] = frame
            owners[self._streams[sid]] = i
        try:
            outputs = self.pool.step(frames)
        except RnnStreamError as e:  # the pool changed no state
            outputs = {}
            for stream_id in frames:
                results[owners[stream_id]] = e
        for stream_id, out in outputs.items():
            named = out if isinstance(out, dict) else {self._first_output: out}
            results[owners[stream_id]] = {name: y[None] for name, y in named.items()}
        for _, request in batch:
            if request.end and request.sequence_id in self._streams:
                self._close(request.sequence_id)

    def _frame(self, array: np.ndarray) -> np.ndarray:
        """One request's frame without its batch axis of 1, checked as a pool step would."""
        array = np.asarray(array)
        if array.ndim == 0 or array.shape[0] != 1:
            raise InputError(
                f"input {self._check.name!r}: a request carries one step of one sequence, "
                f"shaped [1, ...]; got {list(array.shape)}"
            )
        frame = array[0]
        self._check.convert_step(frame, 1, True)
        return frame

    def _close(self, sequence_id: int) -> None:
        self.pool.close(self._streams.pop(sequence_id))
        del self._last_seen[sequence_id]
