"""The runner: one onnxruntime session and everything needed to run it, shared by all streams.

``Stream`` and ``StreamPool`` only decide where the state lives between runs. Everything else is
here, once: the session with its input, output and state names, the pinned constants, the zero
state, the IOBinding state buffers, onnxruntime's errors as an ``InputError`` naming the model,
the inputs it fills itself (frame counts such as ``x_lens``: :meth:`Runner.length_feeds`),
and the one outputs layout of every streaming call (a model with one output gives an array, a
model with several gives ``{name: array}``).

The step session: a :class:`Stream`'s single steps run on a second session of the same model
bytes, loaded with every free dimension a step fixes pinned by name (the batch's to the stream's
rows, the time's to 1: :mod:`rnnstream.runtime.pinning`). With the shapes known onnxruntime folds
the shape arithmetic, and an int8 step path's ``If`` with it (its step branch becomes the graph):
int8 reference steps 1.1x (GRU) and 1.3x (RNN) faster, float32 and LSTM int8 a tie (README).
One is made per rows value when the first stream of that many rows is made (eagerly: the first
step then costs what every step costs), and shared by all of them; chunks, :meth:`Runner.run`
(``Model.run``) and pools run on the general session (a pool's batch changes as streams open and
close: one session per size seen would cost a load and the weights' memory each, for no
consistent gain). At most ``MAX_STEP_SESSIONS`` rows values get one: streams of further sizes
step on the general session (100 sizes pinned would hold 650 MB for the 3.6 MB demo LM). Where
nothing can be pinned (unnamed or ambiguous dimensions, no free ones), or the pinned graph does
not load, steps run on the general session.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

import numpy as np
import onnxruntime as ort

from rnnstream.errors import InputError, SignatureError
from rnnstream.runtime.binding import PingPongState
from rnnstream.runtime.layout import OutputLayout
from rnnstream.runtime.pinning import step_dims
from rnnstream.runtime.signature import Signature

__all__ = ["Output", "Runner", "SessionOpener"]

log = logging.getLogger(__name__)

Output = np.ndarray | dict[str, np.ndarray]
# Step sessions a runner keeps (one per rows value, each about the weights' size and onnxruntime's
# buffers in memory: 6.5 MB for the 3.6 MB demo LM): streams of further sizes step unpinned
MAX_STEP_SESSIONS = 8
# Loads the model again with free dimensions pinned ({name: size}): the step sessions
SessionOpener = Callable[[Mapping[str, int]], ort.InferenceSession]


class Runner:
    """Runs one model's session: plain runs (whole sequences, pools); bound state buffers for
    streams (their runs raise this runner's errors), whose steps run on a pinned step session
    when ``open_session`` can make one."""

    def __init__(
        self,
        session: ort.InferenceSession,
        signature: Signature,
        name: str,
        constants: Mapping[str, np.ndarray],
        open_session: SessionOpener | None = None,
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
        self._layouts = [OutputLayout(o, name) for o in signature.outputs]
        self._one_output = len(self._layouts) == 1
        self._open_session = open_session
        self._step_sessions: dict[int, ort.InferenceSession] = {}
        self._step_sessions_lock = threading.Lock()
        # The outputs' shapes one step of rows sequences gives ({rows: shapes}, None: the run
        # failed), found by the first stream of that many rows (binding.PingPongState)
        self.step_shapes_given: dict[int, list[tuple[int, ...]] | None] = {}

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

    def step_session(self, rows: int) -> ort.InferenceSession:
        """The session single steps of ``rows`` sequences run on: the step session pinned to
        ``rows`` (made on the first call for ``rows``, then shared), or the general session when
        nothing can be pinned, the pinned one cannot be loaded, or ``MAX_STEP_SESSIONS`` other
        rows values already have theirs."""
        with self._step_sessions_lock:
            if rows not in self._step_sessions:
                if len(self._step_sessions) >= MAX_STEP_SESSIONS:
                    return self.session
                self._step_sessions[rows] = self._pinned_session(rows)
            return self._step_sessions[rows]

    def _pinned_session(self, rows: int) -> ort.InferenceSession:
        dims = step_dims(self.session.get_inputs(), self.signature, self.constants, rows)
        if self._open_session is None or dims is None or self.signature.least_steps > 1:
            return self.session
        try:
            return self._open_session(dims)
        except Exception as e:  # onnxruntime's own errors, or the file changed since load
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            log.warning("%s: steps run unpinned (pinning %s failed: %s)", self.name, dims, first)
            return self.session

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
