"""Which input axis is batch, time or frame length, decided by running the model a few times.

Names lie and shapes are ambiguous (``[N, F]``: N batches or N time steps?), so a model with no
rnnstream signature is run at load on small random inputs, each dynamic input axis at sizes 1, 2
and 3 while the others stay at 1, and watched:

- **batch**: the states take the same size, and each row run alone gives that row's outputs and
  new state (rows are independent);
- **time**: one run over 2 units equals two runs of 1 with the state carried, and some output
  follows the axis (one output per step), or the model outputs only its states, or every output
  is the last step's (a classifier returning ``y[:, -1]``: ``Probe.last_only``, run one step at a
  time);
- **frame**: the model takes sizes 1, 2 and 3 and no output or state changes shape (one step
  consumes a window of any length); or an output follows the axis but one run over 2 units
  differs from two runs of 1 (a bidirectional or look-ahead layer mixes the steps): one step is
  then a whole chunk (``Probe.mixed``), never split.

Integer inputs are token ids when the model refuses ids from some value up (an embedding of that
many rows): that count is found by doubling and halving (``Probe.num_tokens``, about 2 log2 V
runs), so out-of-range ids are refused before the run; it is skipped when it would overrun
the budget.

A model that refuses size-1 inputs (a fixed window: 512 samples at 16 kHz, 49 frames of 40 mel
bins) is probed at the sizes it accepts, found from its own hints: the sizes onnxruntime names
when it refuses a run (a Reshape's requested shape), numbers in the axis's dim_param, windows of
the pinned sample rate (32, 16, 10, 20, 30 ms), the fixed sizes of the model's inputs and
outputs, and common window sizes, each tried until one runs.
An axis that only runs at one size (or at its multiples but not one more: a Reshape traced at
that size) is a **frame** axis of that fixed size (``Probe.windows``);
one whose sizes change the output shapes takes at least some units a run (a time axis an
encoder subsamples: ``Probe.least``, the fewest, bisected).
When no size runs, ``Probe.failed`` says why and the names decide; when onnxruntime has no
kernel for the model's types (a float64 GRU), ``Probe.unsupported`` says so and loading fails.

An axis that fits none stays undecided and the names decide. Pinned constants (a sample rate)
are fed in every run, and lengths inputs (``x_lens``) hold the size of the axis they count. A
model whose probe would take more than the budget (100 ms) is not probed,
and the probe's note says so.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from rnnstream.runtime.dtypes import numpy_dtype

__all__ = ["BUDGET_SECONDS", "Fill", "Probe", "nearly_equal", "probe_axes"]

BUDGET_SECONDS = 0.1  # extra load time the probe may plan to take
_RUNS_PER_AXIS = 9  # at most: batch 3, time 4, frame 2
_HARD_STOP = 10  # a probe slowed down by a busy machine stops at 10 budgets
_TOKEN_RUNS = 64  # at most, to find a token count below 2**31
_MAX_SIZE_TRIES = 48  # runs spent looking for the sizes a model that refuses size 1 accepts
_MAX_WINDOW = 1 << 16  # the largest window size tried
_COMMON_WINDOWS = (512, 256, 576, 288, 160, 320, 400, 480, 640, 1024, 1280, 1536, 1600)
_COMMON_WINDOWS += (2, 3, 4, 8, 16, 32, 40, 49, 64, 80, 98, 100, 101, 128)
_RATE_NAMES = re.compile(r"^(sr|fs|sample_?rate|sampling_?rate|rate)$", re.IGNORECASE)
_RATE_WINDOWS_MS = (32, 16, 10, 20, 30, 36, 64)  # 32 ms = Silero's 512 samples at 16 kHz

Run = tuple[list[np.ndarray], dict[str, np.ndarray]]  # outputs, new states by state input
Fill = Callable[[np.ndarray], dict[str, np.ndarray]]  # the lengths inputs for an input


@dataclass
class Probe:
    """What probing decided: a role per input axis, and which output/state axes follow them."""

    roles: dict[int, str] = field(default_factory=dict)  # input axis -> batch | time | frame
    follows: dict[str, dict[int, int]] = field(default_factory=dict)  # output -> {input: axis}
    state_batch: dict[str, int] = field(default_factory=dict)  # state input -> its batch axis
    windows: dict[int, int] = field(default_factory=dict)  # frame axis -> the one size it takes
    mixed: set[int] = field(default_factory=set)  # frame axes whose steps the model mixes
    least: dict[int, int] = field(default_factory=dict)  # refused size 1: the fewest it runs
    last_only: set[int] = field(default_factory=set)  # time axes whose outputs are the last step's
    num_tokens: int | None = None  # integer input: the first id the model refuses
    failed: str = ""  # why no run succeeded (then the names decide)
    unsupported: str = ""  # onnxruntime has no kernel for the model's types (float64 GRU)
    note: str = ""


def _reason(error: str) -> str:
    """onnxruntime's refusal in one short clause (its source path and check dropped)."""
    text = error.strip().splitlines()[0] if error.strip() else "no reason given"
    text = text.split("Status Message:", 1)[-1]
    text = re.sub(r"^\s*\S+\.(h|cc|cpp):\d+ .*? was false\.\s*", "", text)
    text = text.strip()
    return text if len(text) <= 160 else text[:157] + "..."


_NO_KERNEL = re.compile(
    r"does not support|not supported|NOT_IMPLEMENTED|Could not find an implementation", re.I
)


def _message_sizes(error: str) -> list[int]:
    """Sizes the refusal names: a Reshape's requested shape over the size it got (so a window of
    512 read from ``requested shape:{1,16,32}``), then the numbers after "Expected"."""
    sizes = []
    got = re.search(r"Input shape:\s*\{([-\d,\s]*)\}", error)
    want = re.search(r"requested shape:\s*\{([-\d,\s]*)\}", error)
    if got and want:
        have = math.prod(int(v) for v in got.group(1).split(",") if v.strip()) or 1
        requested = [int(v) for v in want.group(1).split(",") if v.strip()]
        positive = math.prod(v for v in requested if v > 0)
        if -1 in requested:
            sizes.append(positive // math.gcd(positive, have))
        elif positive % have == 0:
            sizes.append(positive // have)
        sizes += [v for v in requested if v > 1]
    sizes += [int(v) for v in re.findall(r"Expected:?\s*(\d+)", error)]
    return sizes


def size_hints(
    error: str,
    dim_names: list[str],
    constants: Mapping[str, np.ndarray],
    fixed_sizes: list[int],
) -> list[int]:
    """Sizes worth trying for a model that refused size-1 inputs, most likely first: the
    refusal's own sizes, numbers in the dynamic axes' names, windows of a pinned sample rate,
    the fixed sizes of the model's inputs and outputs (a state holding the last window), then
    common window sizes."""
    sizes = _message_sizes(error)
    sizes += [int(v) for name in dim_names for v in re.findall(r"\d+", name)]
    for name, value in constants.items():
        if _RATE_NAMES.match(name) and value.size == 1 and value.dtype.kind in "iuf":
            rate = float(value.reshape(-1)[0])
            sizes += [round(rate * ms / 1000) for ms in _RATE_WINDOWS_MS]
    sizes += fixed_sizes
    sizes += _COMMON_WINDOWS
    return list(dict.fromkeys(v for v in sizes if 1 < v <= _MAX_WINDOW))


def nearly_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes and dtypes, and values equal up to rounding: 1e-4 relative for float32/64,
    16 ulps (1.6e-2) for float16, whose one-step and two-step kernels round differently;
    integers exactly."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if b.dtype.kind != "f":
        return bool(np.array_equal(a, b))
    scale = max(1.0, float(np.abs(b).max())) if b.size else 1.0
    rtol = 16 * float(np.finfo(np.float16).eps) if b.dtype == np.float16 else 1e-4
    return bool(np.allclose(a, b, rtol=rtol, atol=rtol * 0.1 * scale))


def _grown_axis(big: tuple[int, ...], small: tuple[int, ...], size: int) -> int | None:
    """The one axis where ``big`` has ``size`` and ``small`` has 1 (all else equal)."""
    if len(big) != len(small):
        return None
    diff = [i for i, (b, s) in enumerate(zip(big, small)) if b != s]
    if len(diff) == 1 and big[diff[0]] == size and small[diff[0]] == 1:
        return diff[0]
    return None


class _Prober:
    def __init__(
        self,
        session: ort.InferenceSession,
        input_name: str,
        pairs: Mapping[str, str],
        constants: Mapping[str, np.ndarray],
        lengths: Fill | None,
    ) -> None:
        args = {a.name: a for a in session.get_inputs()}
        self.lengths = lengths
        self.session = session
        self.input = args[input_name]
        self.pairs = dict(pairs)
        self.states = {name: args[name] for name in pairs}
        self.constants = dict(constants)
        self.outputs = [o.name for o in session.get_outputs() if o.name not in self.pairs.values()]
        self.fetch = self.outputs + list(self.pairs.values())
        self.options = ort.RunOptions()
        self.options.log_severity_level = 4  # a rejected size is an answer, not an error to log
        self.rng = np.random.default_rng(0)
        self.deadline = float("inf")
        self.base: dict[int, int] = {}  # sizes of dynamic axes in every run (1 unless refused)
        self.last_error = ""

    def dtype(self, arg: ort.NodeArg) -> np.dtype:
        return np.dtype(numpy_dtype(arg))

    def frames(self, sizes: Mapping[int, int]) -> np.ndarray:
        """Random input with each dynamic axis at its base size (or ``sizes[axis]``)."""
        shape = [
            d if isinstance(d, int) else sizes.get(axis, self.base.get(axis, 1))
            for axis, d in enumerate(self.input.shape)
        ]
        dtype = self.dtype(self.input)
        if dtype.kind == "f":
            return self.rng.uniform(-1, 1, shape).astype(dtype)
        if dtype.kind in "iu":
            return self.rng.integers(0, 2, shape).astype(dtype)
        return np.zeros(shape, dtype)

    def zero_states(self, rows: int) -> dict[str, np.ndarray]:
        return {
            name: np.zeros([d if isinstance(d, int) else rows for d in arg.shape], self.dtype(arg))
            for name, arg in self.states.items()
        }

    def run(self, x: np.ndarray, states: dict[str, np.ndarray]) -> Run | None:
        if time.perf_counter() > self.deadline:
            raise TimeoutError
        feeds = {self.input.name: x, **states, **self.constants}
        if self.lengths is not None:
            feeds.update(self.lengths(x))
        try:
            results = self.session.run(self.fetch, feeds, self.options)
        except Exception as e:  # onnxruntime's own error types: the model refuses these sizes
            self.last_error = str(e)
            return None
        n = len(self.outputs)
        return results[:n], dict(zip(self.pairs, results[n:]))

    def run_seconds(self) -> float:
        """One warm run's time: the fastest of 3 (the first run also allocates, and a busy
        machine delays some runs)."""
        x, states, times = self.frames({}), self.zero_states(1), []
        for _ in range(3):
            start = time.perf_counter()
            self.run(x, states)
            times.append(time.perf_counter() - start)
        return min(times)

    def is_batch(self, axis: int, x: np.ndarray, probe: Probe) -> bool:
        """Rows of ``axis`` are independent sequences, and the states have a row each."""
        together = self.run(x, self.zero_states(2))
        if together is None:
            return False
        rows = [self.run(np.take(x, [i], axis=axis), self.zero_states(1)) for i in range(2)]
        if any(r is None for r in rows):
            return False
        state_axes, output_axes = {}, {}
        for name, new in together[1].items():
            k = _grown_axis(new.shape, rows[0][1][name].shape, 2)
            if k is None:
                return False
            if not all(
                nearly_equal(np.take(new, [i], axis=k), r[1][name]) for i, r in enumerate(rows)
            ):
                return False
            state_axes[name] = k
        for j, (name, y) in enumerate(zip(self.outputs, together[0])):
            k = _grown_axis(y.shape, rows[0][0][j].shape, 2)
            if k is None:
                return False
            if not all(nearly_equal(np.take(y, [i], axis=k), r[0][j]) for i, r in enumerate(rows)):
                return False
            output_axes[name] = k
        probe.state_batch.update(state_axes)
        for name, k in output_axes.items():
            probe.follows.setdefault(name, {})[axis] = k
        return True

    def time_verdict(self, axis: int, x: np.ndarray, probe: Probe) -> str:
        """ "time" when one run over 2 units equals two runs of 1 with the state carried and some
        output follows the axis, or the model outputs only its states; "last" when they are
        equal but every output is the last step's (a classifier's ``y[:, -1]``); "mixed" when an
        output follows it but the two differ (the model mixes its steps: bidirectional,
        look-ahead); "" otherwise."""
        whole = self.run(x, self.zero_states(1))
        first = self.run(np.take(x, [0], axis=axis), self.zero_states(1))
        if whole is None or first is None:
            return ""
        second = self.run(np.take(x, [1], axis=axis), first[1])
        if second is None:
            return ""
        same = all(nearly_equal(whole[1][n], second[1][n]) for n in self.pairs)
        output_axes = {}
        for name, y, y0, y1 in zip(self.outputs, whole[0], first[0], second[0]):
            k = _grown_axis(y.shape, y0.shape, 2)
            if k is not None:
                same = same and nearly_equal(y, np.concatenate([y0, y1], axis=k))
                output_axes[name] = k
        if not output_axes:
            if not same or not self.pairs:
                return ""
            if not self.outputs:
                return "time"
            last = all(nearly_equal(y, y1) for y, y1 in zip(whole[0], second[0]))
            return "last" if last else ""
        if not same:
            return "mixed"
        for name, k in output_axes.items():
            probe.follows.setdefault(name, {})[axis] = k
        return "time"

    def find_sizes(self, dynamic: list[int], hints: list[int]) -> Run | None:
        """The first run that succeeds with one dynamic axis at a hinted size (the last axes
        first: windows of samples usually close the shape); ``self.base`` keeps that size."""
        tries = 0
        for size in hints:
            for axis in reversed(dynamic):
                if tries == _MAX_SIZE_TRIES:
                    return None
                tries += 1
                self.base = {axis: size}
                run = self.run(self.frames({}), self.zero_states(1))
                if run is not None:
                    return run
        self.base = {}
        return None

    def window(self, axis: int, base: Run) -> int | None:
        """For an axis that refused size 1: its fixed window (twice the size, or one more, is
        refused too: a traced Reshape can take multiples of the size it was exported at), 0 when
        larger sizes run with every shape unchanged (a frame of at least that length), None when
        they change shapes (not a frame)."""
        size = self.base[axis]
        run = self.run(self.frames({axis: 2 * size}), self.zero_states(1))
        if run is None or self.run(self.frames({axis: size + 1}), self.zero_states(1)) is None:
            return size
        shapes = [y.shape for y in run[0]] + [s.shape for s in run[1].values()]
        same = shapes == [y.shape for y in base[0]] + [s.shape for s in base[1].values()]
        return 0 if same else None

    def least_size(self, axis: int) -> int:
        """The fewest units of ``axis`` a run takes, below the size it ran at (bisected: a
        model that runs on n units runs on more)."""
        good, bad = self.base[axis], 1
        while good - bad > 1:
            middle = (good + bad) // 2
            run = self.run(self.frames({axis: middle}), self.zero_states(1))
            good, bad = (middle, bad) if run is not None else (good, middle)
        return good

    def num_tokens(self) -> int | None:
        """For integer inputs: the smallest id the model refuses (an embedding's row count),
        by doubling then halving; None when every id up to the dtype's limit runs."""
        if self.dtype(self.input).kind not in "iu":
            return None
        shape = self.frames({}).shape
        dtype = self.dtype(self.input)
        top = int(min(np.iinfo(dtype).max, 2**31 - 1))

        def runs(token: int) -> bool:
            return self.run(np.full(shape, token, dtype), self.zero_states(1)) is not None

        good, bad = 1, 2
        while runs(bad):
            if bad == top:
                return None
            good, bad = bad, min(2 * bad, top)
        while bad - good > 1:
            middle = (good + bad) // 2
            good, bad = (middle, bad) if runs(middle) else (good, middle)
        return bad

    def is_frame(self, axis: int, base: Run) -> bool:
        """Sizes 2 and 3 run and change no output's or state's shape."""
        for size in (2, 3):
            run = self.run(self.frames({axis: size}), self.zero_states(1))
            if run is None:
                return False
            shapes = [y.shape for y in run[0]] + [s.shape for s in run[1].values()]
            if shapes != [y.shape for y in base[0]] + [s.shape for s in base[1].values()]:
                return False
        return True


def probe_axes(
    session: ort.InferenceSession,
    input_name: str,
    pairs: Mapping[str, str],
    constants: Mapping[str, np.ndarray],
    budget: float = BUDGET_SECONDS,
    lengths: Fill | None = None,
) -> Probe:
    """Decide the role of each dynamic axis of ``input_name`` by running ``session``
    (``lengths`` gives the lengths inputs for each input tried)."""
    prober = _Prober(session, input_name, pairs, constants, lengths)
    dynamic = [a for a, d in enumerate(prober.input.shape) if not isinstance(d, int)]
    probe = Probe()
    if not dynamic:
        probe.note = "no dynamic input axis to probe"
        return probe
    start = time.perf_counter()
    base = prober.run(prober.frames({}), prober.zero_states(1))
    if base is None and _NO_KERNEL.search(prober.last_error):
        probe.unsupported = _reason(prober.last_error)
        probe.note = f"not probed: {probe.unsupported}"
        return probe
    if base is None:
        prober.deadline = start + _HARD_STOP * budget
        first_error = prober.last_error
        names = [str(prober.input.shape[a]) for a in dynamic]
        try:
            args = [*session.get_inputs(), *session.get_outputs()]
            fixed = [d for arg in args for d in (arg.shape or []) if isinstance(d, int)]
            hints = size_hints(first_error, names, constants, fixed)
            base = prober.find_sizes(dynamic, hints)
        except TimeoutError:
            base = None
        if base is None:
            probe.failed = (
                "the model refuses size 1 and every size tried on its dynamic axes: "
                + _reason(first_error)
            )
            probe.note = f"not probed: {probe.failed}"
            return probe
        prober.deadline = float("inf")
    one_run = prober.run_seconds()
    planned = _RUNS_PER_AXIS * len(dynamic) * one_run
    if planned > budget:
        probe.note = (
            f"not probed: it would take about {planned * 1e3:.0f} ms (budget {budget * 1e3:g} ms)"
        )
        return probe
    prober.deadline = start + _HARD_STOP * budget
    states_grow = any(not isinstance(d, int) for arg in prober.states.values() for d in arg.shape)
    try:
        for axis in list(prober.base):
            window = prober.window(axis, base)
            if window is not None:
                probe.roles[axis] = "frame"
                if window:
                    probe.windows[axis] = window
            else:  # sizes change the shapes: time a run needs several units of (subsampling)
                probe.least[axis] = prober.least_size(axis)
        for axis in (a for a in dynamic if a not in prober.base):
            x = prober.frames({axis: 2})
            if states_grow and prober.is_batch(axis, x, probe):
                probe.roles[axis] = "batch"
            elif (verdict := prober.time_verdict(axis, x, probe)) in ("time", "last"):
                probe.roles[axis] = "time"
                if verdict == "last":  # one step a run, or the outputs of the others are lost
                    probe.last_only.add(axis)
            elif verdict == "mixed":  # not time: one step takes a whole chunk of any length
                probe.roles[axis] = "frame"
                probe.mixed.add(axis)
            elif prober.is_frame(axis, base):
                probe.roles[axis] = "frame"
        if time.perf_counter() - start + _TOKEN_RUNS * one_run <= budget:
            probe.num_tokens = prober.num_tokens()
    except TimeoutError:
        probe.note = f"probe stopped after {_HARD_STOP * budget * 1e3:g} ms (a busy machine?); "
    elapsed = (time.perf_counter() - start) * 1e3
    probe.note += f"probed {len(dynamic)} dynamic axes in {elapsed:.1f} ms"
    if prober.base:
        sizes = ", ".join(f"axis {a} at {n}" for a, n in prober.base.items())
        probe.note += f" (size 1 refused; ran with {sizes})"
    return probe
