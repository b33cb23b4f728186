"""Per-step latency, side by side in one run: bare onnxruntime, Stream, StreamPool, PyTorch, and
generation (one sampled token per step) for a language model.

    python -m rnnstream.bench.latency [MODEL.onnx --against CHECKPOINT] [--json out.json]

is ``rnnstream bench``: without MODEL it builds the reference model (2-layer LSTM, input 64,
hidden 256, head 256->64), exports it and compares with PyTorch eager as well, and times the same
model with a causal convolutional front-end (a CRNN: two Conv1d 64->64, kernel 3, whose
contexts stream as state) next to it.

Machines are noisy, so every method is measured in interleaved rounds and reported as medians
and 99th percentiles with ratios between methods of the same run, never as absolute targets.
"""

from __future__ import annotations

import itertools
import platform
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from rnnstream.errors import NotALanguageModelError
from rnnstream.runtime import Model
from rnnstream.runtime.generate import sample_tokens

__all__ = ["BenchResult", "measure", "run_benchmark"]

Timed = Callable[[], object]


@dataclass
class BenchResult:
    """Medians and p99 in microseconds per stream-step, by method name."""

    model: str
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    machine: dict[str, str] = field(default_factory=dict)

    def ratio(self, a: str, b: str) -> float | None:
        if a in self.rows and b in self.rows:
            return self.rows[a]["median_us"] / self.rows[b]["median_us"]
        return None

    def ratios(self) -> dict[str, float]:
        pairs = [
            ("stream.step", "ort.run (numpy state)"),
            ("stream.step", "ort.iobinding (ping-pong)"),
            ("generate (sampling)", "stream.step"),
            ("torch eager (best)", "stream.step"),
        ] + [(f"pool x{n}", f"ort.run batch {n}") for n in (1, 8, 64)]
        pairs += [
            ("pool x64 join+leave", "ort.run batch 64"),
            ("pool x64 join+leave, ~3 rest", "ort.run batch 64"),
        ]
        pairs += [(name, "stream.step") for name in self.rows if name.endswith(" stream.step")]
        out = {}
        for a, b in pairs:
            r = self.ratio(a, b)
            if r is not None:
                out[f"{a} / {b}"] = round(r, 3)
        return out

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "machine": self.machine,
            "us_per_stream_step": self.rows,
            "ratios": self.ratios(),
        }

    def table(self) -> str:
        lines = [f"{'method':<28} {'median us':>10} {'p99 us':>10}"]
        for name, row in self.rows.items():
            lines.append(f"{name:<28} {row['median_us']:>10.1f} {row['p99_us']:>10.1f}")
        lines.append("")
        lines += [f"{k:<55} {v:>6.3f}" for k, v in self.ratios().items()]
        return "\n".join(lines)


def measure(methods: dict[str, tuple[Timed, int]], steps: int, rounds: int) -> dict:
    """Time each method ``steps`` calls per round, rounds interleaved; per-stream-step stats."""
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for fn, _ in methods.values():  # warm-up
        for _ in range(20):
            fn()
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, (fn, streams) in methods.items():
            out = samples[name]
            for _ in range(steps):
                start = clock()
                fn()
                out.append((clock() - start) / 1e3 / streams)
    return {
        name: {"median_us": float(np.median(v)), "p99_us": float(np.percentile(v, 99))}
        for name, v in samples.items()
    }


def _frame(model: Model, rows: int, rng: np.random.Generator) -> np.ndarray:
    """One step of input for ``rows`` streams in the model's own layout."""
    spec = model.signature.input
    shape = [
        rows if i == spec.batch_axis else 1 if i == spec.time_axis else d
        for i, d in enumerate(spec.shape)
    ]
    if np.dtype(spec.dtype).kind in "iu":
        return rng.integers(0, model.signature.num_tokens or 2, shape).astype(spec.dtype)
    return rng.standard_normal(shape).astype(spec.dtype)


def _bare_run(model: Model, x: np.ndarray, rows: int) -> Timed:
    session, names = model.session, model.runner.fetch_names
    feeds = {model.signature.input.name: x, **model.runner.zero_state(rows), **model.constants}
    state_pairs = [(s.input, names.index(s.output)) for s in model.signature.states]

    def step() -> None:
        results = session.run(names, feeds)
        for name, index in state_pairs:
            feeds[name] = results[index]

    return step


def _iobinding(model: Model, x: np.ndarray) -> Timed:
    """The same graph with state kept in two sets of onnxruntime buffers, swapped each step."""
    session, sig = model.session, model.signature
    zero = model.runner.zero_state(1)
    buffers = [
        {s.input: ort.OrtValue.ortvalue_from_numpy(zero[s.input].copy()) for s in sig.states}
        for _ in range(2)
    ]
    bindings = []
    for k in range(2):
        io = session.io_binding()
        io.bind_cpu_input(sig.input.name, x)
        for name, value in model.constants.items():
            io.bind_cpu_input(name, value)
        for s in sig.states:
            io.bind_ortvalue_input(s.input, buffers[k][s.input])
            io.bind_ortvalue_output(s.output, buffers[1 - k][s.input])
        for o in sig.outputs:
            io.bind_output(o.name)
        bindings.append(io)
    turn = [0]

    def step() -> None:
        io = bindings[turn[0]]
        session.run_with_iobinding(io)
        io.copy_outputs_to_cpu()
        turn[0] ^= 1

    return step


def _generating(model: Model, seed: int) -> Timed:
    """One token of sampling at temperature 1 per call (a step and a draw); a generation that
    ends at EOS is followed by a new one from BOS."""
    seeds = itertools.count(seed)
    tokens = sample_tokens(model, max_tokens=1_000_000, seed=next(seeds))

    def step() -> None:
        nonlocal tokens
        if next(tokens, None) is None:
            tokens = sample_tokens(model, max_tokens=1_000_000, seed=next(seeds))
            next(tokens)

    return step


def _churning_pool(
    model: Model, frame: np.ndarray, n: int, skip: int, rng: np.random.Generator
) -> Timed:
    """A pool of ``n`` streams where each tick one stream leaves and one joins, and all but
    ``skip`` of them step (a gather/scatter tick); timed per stream-step."""
    pool = model.pool()
    ids = [pool.open() for _ in range(n)]

    def step() -> None:
        pool.close(ids.pop(int(rng.integers(len(ids)))))
        ids.append(pool.open())
        resting = set(rng.permutation(n)[:skip].tolist())
        pool.step({stream: frame for i, stream in enumerate(ids) if i not in resting})

    return step


def _torch_eager(module: object, x: np.ndarray, mkldnn: bool) -> Timed:
    """PyTorch stepping ``module`` (``forward(x, state) -> (y, state)``), state carried."""
    import torch

    xt = torch.from_numpy(x)
    state = [None]

    def step() -> None:
        with torch.backends.mkldnn.flags(enabled=mkldnn), torch.inference_mode():
            _, state[0] = module(xt, state[0])

    return step


def run_benchmark(
    model: Model,
    torch_module: object | None = None,
    steps: int = 300,
    rounds: int = 5,
    pool_sizes: tuple[int, ...] = (1, 8, 64),
    seed: int = 0,
    companions: dict[str, Model] | None = None,
) -> BenchResult:
    """Measure one model's per-step latency every way, in one interleaved run.

    Each of ``companions`` (by label) is timed in the same rounds as ``<label> ort.run`` and
    ``<label> stream.step``, with its ratio to the model's ``stream.step``.
    """
    rng = np.random.default_rng(seed)
    x1 = _frame(model, 1, rng)
    stream = model.stream()
    caller_frame = _caller_frame(model, x1)
    methods: dict[str, tuple[Timed, int]] = {
        "ort.run (numpy state)": (_bare_run(model, x1, 1), 1),
        "ort.iobinding (ping-pong)": (_iobinding(model, x1), 1),
        "stream.step": (lambda: stream.step(caller_frame), 1),
    }
    for label, other in (companions or {}).items():
        other_x1 = _frame(other, 1, rng)
        other_stream, other_frame = other.stream(), _caller_frame(other, other_x1)
        methods[f"{label} ort.run"] = (_bare_run(other, other_x1, 1), 1)
        methods[f"{label} stream.step"] = (
            lambda s=other_stream, f=other_frame: s.step(f),
            1,
        )
    with suppress(NotALanguageModelError):  # only a language model generates
        methods["generate (sampling)"] = (_generating(model, seed), 1)
    if torch_module is not None:
        import torch

        torch.set_num_threads(model.session.get_session_options().intra_op_num_threads or 1)
        methods["torch eager (oneDNN on)"] = (_torch_eager(torch_module, x1, True), 1)
        methods["torch eager (oneDNN off)"] = (_torch_eager(torch_module, x1, False), 1)
    for n in pool_sizes:
        pool = model.pool()
        ids = [pool.open() for _ in range(n)]
        tick = dict.fromkeys(ids, caller_frame)
        methods[f"ort.run batch {n}"] = (_bare_run(model, _frame(model, n, rng), n), n)
        methods[f"pool x{n}"] = (lambda pool=pool, tick=tick: pool.step(tick), n)
        if torch_module is not None and n > 1:
            methods[f"torch eager batch {n}"] = (
                _torch_eager(torch_module, _frame(model, n, rng), False),
                n,
            )
    if 64 in pool_sizes:
        methods["pool x64 join+leave"] = (_churning_pool(model, caller_frame, 64, 0, rng), 64)
        methods["pool x64 join+leave, ~3 rest"] = (
            _churning_pool(model, caller_frame, 64, 3, rng),
            61,
        )
    rows = measure(methods, steps, rounds)
    torch_rows = [k for k in rows if k.startswith("torch eager (")]
    if torch_rows:
        rows["torch eager (best)"] = min(
            (rows[k] for k in torch_rows), key=lambda r: r["median_us"]
        )
    machine = {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }
    return BenchResult(model.name, rows, machine)


def _caller_frame(model: Model, x_model: np.ndarray) -> np.ndarray:
    """One frame as ``Stream.step`` takes it (no batch, no time axis)."""
    spec = model.signature.input
    drop = sorted(a for a in (spec.batch_axis, spec.time_axis) if a is not None)
    for axis in reversed(drop):
        x_model = np.take(x_model, 0, axis=axis)
    return x_model


if __name__ == "__main__":
    import sys

    from rnnstream.cli import main

    main(["bench", *sys.argv[1:]])
