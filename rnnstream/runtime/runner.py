"""The runner: one onnxruntime session and everything needed to run it, shared by all streams.

``Stream`` and ``StreamPool`` only decide where the state lives between runs. Everything else is
here, once: the session with its input, output and state names, the pinned constants, the zero
state, the IOBinding state buffers, onnxruntime's errors as an ``InputError`` naming the model,
the inputs it fills itself (frame counts such as ``x_lens``: :meth:`Runner.length_feeds`),
and the one outputs layout of every streaming call (a model with one output gives an array, a
model with several gives ``{name: array}``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from rnnstream.errors import InputError, SignatureError
from rnnstream.runtime.binding import PingPongState
from rnnstream.runtime.layout import OutputLayout
from rnnstream.runtime.signature import Signature

__all__ = ["Output", "Runner"]

Output = np.ndarray | dict[str, np.ndarray]


class Runner:
    """Runs one model's session: plain runs (whole sequences, pools); bound state buffers for
    streams (their runs raise this runner's errors)."""

    def __init__(
        self,
        session: ort.InferenceSession,
        signature: Signature,
        name: str,
        constants: Mapping[str, np.ndarray],
    ) -> None:
        self.session = session
        self.signature = signature
        self.name = name
        self.constants = dict(constants)
        self.input_name = signature.input.name
        self.output_names = [o.name for o in signature.outputs]
        self.state_names = [s.input for s in signature.states]
        # What every plain run fetches: the model's outputs, then the new states in state order.
        self.fetch_names = self.output_names + [s.output for s in signature.states]
        self.lengths = signature.lengths
        self._batch_axis = signature.input.batch_axis
        self._layouts = [OutputLayout(o) for o in signature.outputs]
        self._one_output = len(self._layouts) == 1

    def require_streamable(self) -> None:
        """Refuse to stream a model that needs whole sequences."""
        sig = self.signature
        if not sig.streamable:
            raise SignatureError(
                f"{self.name} is not streamable (kind {sig.kind!r}): it needs the whole sequence, "
                "e.g. a bidirectional layer; use model.run(x) on whole sequences instead"
            )

    def zero_state(self, rows: int) -> dict[str, np.ndarray]:
        """The initial state of every state input for ``rows`` sequences."""
        return {
            s.input: np.zeros(s.concrete_shape(rows), dtype=s.dtype) for s in self.signature.states
        }

    def state_buffers(self, rows: int) -> PingPongState:
        """Bound state buffers for ``rows`` sequences that run steps and chunks in place."""
        return PingPongState(self, rows)

    def length_feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The lengths inputs for ``x`` (in the model's layout): each the size of the axis it
        counts, once per batch row (or once, for a scalar lengths input)."""
        rows = 1 if self._batch_axis is None else x.shape[self._batch_axis]
        return {
            s.name: np.full((rows,) if s.shape else (), x.shape[s.counts], s.dtype)
            for s in self.lengths
        }

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One plain run: the outputs, then the new states (``fetch_names``' order); the lengths
        inputs are filled from the input in ``feeds``."""
        if self.lengths:
            feeds = {**feeds, **self.length_feeds(feeds[self.input_name])}
        try:
            return self.session.run(self.fetch_names, {**feeds, **self.constants})
        except Exception as e:  # onnxruntime's own error types
            raise self.error(e) from e

    def error(self, error: Exception) -> InputError:
        """An onnxruntime failure as one readable line naming the model."""
        lines = str(error).strip().splitlines()
        first = lines[0] if lines else type(error).__name__
        return InputError(f"{self.name}: onnxruntime rejected the run: {first}")

    def outputs(self, results: list[np.ndarray], single: bool, step: bool) -> Output:
        """The model's outputs (first in ``results``) in the caller's layout.

        One output gives an array, several give ``{name: array}``; ``single`` drops the batch
        axis and ``step`` the time axis (see :class:`OutputLayout`).
        """
        if self._one_output:
            return self._layouts[0].convert(results[0], single, step)
        return {
            layout.spec.name: layout.convert(y, single, step)
            for layout, y in zip(self._layouts, results)
        }

    def split_rows(self, output: Output, keys: list[int]) -> dict[int, Output]:
        """A batched output as one output per row, keyed by ``keys`` (row ``i`` → ``keys[i]``)."""
        if self._one_output:
            return dict(zip(keys, output))
        return {key: {name: y[i] for name, y in output.items()} for i, key in enumerate(keys)}
