"""State pairs the names do not give, decided by evidence: shapes, a run, the state carried.

A file whose state outputs have generated names (tf2onnx's ``Identity_1:0``, torch.export's
``getitem_1``) still shows which output is which state's next value:

- **shape**: a state's next value has the state's dtype and shape, both as the graph declares
  them and as one run at size 1 returns them (layers of other widths, a state of another rank
  than the outputs);
- **probe**: of the assignments that fit the shapes (``h`` and ``c`` alike), the one under
  which two steps with the state carried give the new states one run over both steps gives:
  this also shows the inputs are states, so it is no guess;
- **order**: when nothing tells them apart, the state inputs take the last outputs in order
  (exporters put the new states after the model's own outputs).

Pairs by shape alone and by order are recorded as guesses (``signature.source["guessed"]``:
the shape says which output an input would carry, not that it is a state at all).

Pairs found by name are checked by the same run: a named output whose run shape is not its
state's is a contradiction, refused with the names, never streamed.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from rnnstream.errors import SignatureError
from rnnstream.runtime.dtypes import numpy_dtype
from rnnstream.runtime.probe import Fill, nearly_equal

__all__ = ["Evidence", "compatible"]

_MAX_ASSIGNMENTS = 24  # assignments tried by carrying the state; more is left to order


def compatible(a: ort.NodeArg, b: ort.NodeArg) -> bool:
    """Same dtype and rank, and no fixed size that differs."""
    if numpy_dtype(a) != numpy_dtype(b) or len(a.shape) != len(b.shape):
        return False
    return all(
        not (isinstance(x, int) and isinstance(y, int)) or x == y for x, y in zip(a.shape, b.shape)
    )


class Evidence:
    """Runs ``session`` with the stream input ``x`` at size 1 (and 2 along a time axis) to tell
    which output carries which state."""

    def __init__(
        self,
        session: ort.InferenceSession,
        x: ort.NodeArg,
        constants: Mapping[str, np.ndarray],
        lengths: Fill | None,
    ) -> None:
        self.session = session
        self.x = x
        self.inputs = {a.name: a for a in session.get_inputs()}
        self.outputs = [o.name for o in session.get_outputs()]
        self.constants = dict(constants)
        self.lengths = lengths
        self.options = ort.RunOptions()
        self.options.log_severity_level = 4  # a refused run is evidence, not an error to log
        self.rng = np.random.default_rng(0)

    def _zeros(self, name: str) -> np.ndarray:
        arg = self.inputs[name]
        shape = [d if isinstance(d, int) else 1 for d in arg.shape]
        return np.zeros(shape, numpy_dtype(arg))

    def _frames(self, time_axis: int | None = None) -> np.ndarray:
        shape = [d if isinstance(d, int) else 1 for d in self.x.shape]
        if time_axis is not None:
            shape[time_axis] = 2
        dtype = np.dtype(numpy_dtype(self.x))
        if dtype.kind == "f":
            return self.rng.uniform(-1, 1, shape).astype(dtype)
        return np.zeros(shape, dtype)

    def run(self, x: np.ndarray, states: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        feeds = {self.x.name: x, **states, **self.constants}
        if self.lengths is not None:
            feeds.update(self.lengths(x))
        try:
            return dict(zip(self.outputs, self.session.run(None, feeds, self.options)))
        except Exception:  # onnxruntime's own error types: this run tells nothing
            return None

    def check_named(
        self, pairs: Mapping[str, str], states: list[str], time_axes: list[int]
    ) -> None:
        """Refuse name pairs the runs contradict: an output whose run shape or dtype is not
        its state's, or names whose states carried through two steps differ from one run of
        two while another assignment of the same outputs matches it."""
        if not pairs:
            return
        zeros = {n: self._zeros(n) for n in states}
        out = self.run(self._frames(), zeros)
        if out is None:
            return
        for name_in, name_out in pairs.items():
            want, got = zeros[name_in], out[name_out]
            if got.shape != want.shape or got.dtype != want.dtype:
                raise SignatureError(
                    f"state {name_in!r} pairs with output {name_out!r} by name, but a run gives "
                    f"{name_out!r} as {got.dtype}{list(got.shape)} where {name_in!r} is "
                    f"{want.dtype}{list(want.shape)}; give the pairs with state_map={{input: "
                    "output}} (CLI: --state IN=OUT)"
                )
        alike = {
            s: [
                o
                for o in pairs.values()
                if out[o].shape == zeros[s].shape and out[o].dtype == zeros[s].dtype
            ]
            for s in pairs
        }
        assignments = _assignments(list(pairs), alike)
        if len(assignments) < 2 or len(assignments) > _MAX_ASSIGNMENTS:
            return
        for axis in time_axes:
            carried = [a for a in assignments if self._carries(a, zeros, axis)]
            if not carried:
                continue  # this axis is no time axis (or the model mixes steps)
            if dict(pairs) not in carried and len(carried) == 1:
                said = ", ".join(f"{i} -> {o}" for i, o in pairs.items())
                shown = ", ".join(f"{i} -> {o}" for i, o in carried[0].items())
                raise SignatureError(
                    f"the names pair the states {said}, but carrying them through two steps "
                    f"matches one run of two only as {shown}; give the pairs with "
                    "state_map={input: output} (CLI: --state IN=OUT)"
                )
            return

    def pair(
        self, states: list[str], outputs: list[str], known: list[str], time_axes: list[int]
    ) -> tuple[dict[str, str], str]:
        """Pair ``states`` with ``outputs``; returns the pairs and how they were decided, or
        ``{}`` when no assignment fits: ``"probe"`` (carrying them reproduces a run of two
        steps: sure), ``"shape"`` (the one assignment that fits; that the inputs are states at
        all is still a guess) or ``"order"`` (a guess).
        ``known`` are state inputs already paired (fed zeros); ``time_axes`` are the input's
        axes worth trying as time, most likely first."""
        args = {o.name: o for o in self.session.get_outputs()}
        candidates = {
            s: [o for o in outputs if compatible(self.inputs[s], args[o])] for s in states
        }
        zeros = {n: self._zeros(n) for n in [*known, *states]}
        out = self.run(self._frames(), zeros)
        if out is not None:
            for s in states:
                want = zeros[s]
                candidates[s] = [
                    o
                    for o in candidates[s]
                    if out[o].shape == want.shape and out[o].dtype == want.dtype
                ]
        if len(outputs) <= len(states):  # the model keeps an output of its own
            return {}, ""
        assignments = _assignments(states, candidates)
        if not assignments:
            return {}, ""
        if len(assignments) <= _MAX_ASSIGNMENTS:
            for axis in time_axes:
                carried = [a for a in assignments if self._carries(a, zeros, axis)]
                if len(carried) == 1:
                    return carried[0], "probe"
        if len(assignments) == 1:
            return assignments[0], "shape"
        position = {o: i for i, o in enumerate(outputs)}  # the latest outputs, in order
        latest = max(assignments, key=lambda a: [position[a[s]] for s in states][::-1])
        by_order = dict(zip(states, outputs[-len(states) :]))
        return (by_order if by_order in assignments else latest), "order"

    def _carries(self, pairs: dict[str, str], zeros: dict[str, np.ndarray], axis: int) -> bool:
        """Two steps along ``axis`` with the state carried by ``pairs`` give the new states one
        run over both steps gives."""
        x = self._frames(axis)
        whole = self.run(x, zeros)
        first = self.run(np.take(x, [0], axis=axis), zeros)
        if whole is None or first is None:
            return False
        carried = {**zeros, **{s: first[o] for s, o in pairs.items()}}
        second = self.run(np.take(x, [1], axis=axis), carried)
        if second is None:
            return False
        return all(nearly_equal(whole[o], second[o]) for o in pairs.values())


def _assignments(states: list[str], candidates: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every way to give each state its own output among its candidates (at most a few dozen
    are listed: beyond that the first ones stand for the rest)."""
    found = []
    for outs in itertools.product(*(candidates[s] for s in states)):
        if len(set(outs)) == len(outs):
            found.append(dict(zip(states, outs)))
            if len(found) > _MAX_ASSIGNMENTS:
                break
    return found
