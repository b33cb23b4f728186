"""The worker side of the peers benchmark: check each method against PyTorch, then time it on
request. Standalone (numpy and the standard library only): it runs in the peers' virtualenvs,
where rnnstream is not installed.

A worker is started as ``python worker_<runtime>.py JOB.json`` and talks JSON lines: it writes one
``{"ready": {method: report}}`` line once its methods are built and checked, then answers each
``{"time": method, "steps": N}`` line read from stdin with ``{"samples_us": [...]}`` (one number
per ``step`` call) until ``{"quit": true}`` or end of input. Any other output of the runtime (C
libraries print to file descriptor 1) is sent to stderr so it cannot break the protocol.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

Step = Callable[[np.ndarray], np.ndarray]

__all__ = ["Job", "Method", "Reference", "attempt", "check", "serve"]


@dataclass
class Method:
    """One way to step a model: ``start()`` resets the state to zeros and returns ``step``, which
    takes one frame ``[input_size]`` float32 and returns the output ``[output_size]``; a method
    that could not be built has ``error`` instead."""

    label: str
    cell: str
    precision: str
    start: Callable[[], Step] | None = None
    detail: str = ""
    error: str = ""


@dataclass(frozen=True)
class Job:
    """What the orchestrator asks of a worker (``JOB.json``) and the protocol's output stream.

    ``references``: the reference npz of each cell; ``onnx``: rnnstream's exports by cell and
    precision; ``tolerances``: ``{"atol", "rtol"}`` by precision; ``warmup``: untimed steps per
    method before the first request; ``folder``: where the job file is, for a worker's own files.
    """

    references: dict[str, Reference]
    onnx: dict[str, dict[str, str]]
    threads: int
    warmup: int
    tolerances: dict[str, dict[str, float]]
    folder: Path
    out: TextIO

    @classmethod
    def from_argv(cls) -> Job:
        """The job named on the command line. From here on, anything written to file descriptor
        1 (by Python or by a runtime's C code) goes to stderr; the protocol has its own copy."""
        if len(sys.argv) != 2:
            raise SystemExit(f"usage: {sys.argv[0]} JOB.json")
        sys.stdout.flush()
        out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        with open(sys.argv[1]) as f:
            job = json.load(f)
        return cls(
            references={cell: Reference.load(p) for cell, p in job["references"].items()},
            onnx=job.get("onnx", {}),
            threads=int(job["threads"]),
            warmup=int(job["warmup"]),
            tolerances=job["tolerances"],
            folder=Path(sys.argv[1]).resolve().parent,
            out=out,
        )


@dataclass(frozen=True)
class Reference:
    """One cell's seeded reference model as the orchestrator wrote it (``reference-<cell>.npz``):
    its weights by PyTorch state-dict name, and ``xs`` [T, input] with PyTorch's outputs ``ys``."""

    cell: str
    num_layers: int
    input_size: int
    hidden_size: int
    output_size: int
    weights: dict[str, np.ndarray]
    xs: np.ndarray
    ys: np.ndarray

    @classmethod
    def load(cls, path: str) -> Reference:
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
        shape = arrays.pop("shape")
        return cls(
            cell=str(arrays.pop("cell")),
            num_layers=int(shape[0]),
            input_size=int(shape[1]),
            hidden_size=int(shape[2]),
            output_size=int(shape[3]),
            xs=arrays.pop("xs"),
            ys=arrays.pop("ys"),
            weights=arrays,
        )


def check(method: Method, reference: Reference, tolerance: dict[str, float]) -> dict:
    """Step ``method`` over the reference frames from zero state (state carried) and compare
    every output with PyTorch's: it passes within ``atol`` absolute or ``rtol`` of the largest
    expected magnitude (the project's parity rule)."""
    step = method.start()
    got = np.stack([np.asarray(step(frame), np.float32).reshape(-1) for frame in reference.xs])
    if got.shape != reference.ys.shape:
        return {
            "ok": False,
            "error": f"outputs of shape {got.shape}, expected {reference.ys.shape}",
        }
    max_abs = float(np.abs(got - reference.ys).max())
    max_rel = max_abs / max(float(np.abs(reference.ys).max()), 1e-30)
    ok = bool(max_abs <= tolerance["atol"] or max_rel <= tolerance["rtol"])
    report = {"ok": ok, "max_abs_err": max_abs, "max_rel_err": max_rel}
    if not ok:
        report["error"] = (
            f"max abs error {max_abs:.3g} > {tolerance['atol']:g} and max relative error "
            f"{max_rel:.3g} > {tolerance['rtol']:g} over {len(reference.xs)} steps"
        )
    return report


def attempt(method: Method, build: Callable[[], Callable[[], Step]]) -> Method:
    """``method`` with ``start = build()``, or with the error's last line if ``build`` raises (the
    worker goes on with its other methods; the traceback goes to stderr)."""
    try:
        method.start = build()
    except Exception as error:  # a peer's own failure is a result to report, not a crash
        method.error = _reported(error)
    return method


def _reported(error: Exception) -> str:
    """The traceback to stderr; the error's type and last line for the report."""
    traceback.print_exc(file=sys.stderr)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}".strip()


def _time(step: Step, frames: np.ndarray, steps: int) -> list[float]:
    clock = time.perf_counter_ns
    samples = []
    for i in range(steps):
        frame = frames[i % len(frames)]
        start = clock()
        step(frame)
        samples.append((clock() - start) / 1e3)
    return samples


def serve(job: Job, methods: dict[str, Method]) -> None:
    """Check every method, say ``ready``, then time methods on request (see the module doc)."""
    ready, steppers = {}, {}
    for name, method in methods.items():
        reference = job.references[method.cell]
        if method.error:
            report = {"ok": False, "error": method.error}
        else:
            report = _checked(method, reference, job.tolerances[method.precision])
        labels = {"label": method.label, "cell": method.cell, "precision": method.precision}
        ready[name] = labels | report | {"detail": method.detail}
        if report["ok"]:
            steppers[name] = method.start()
            _time(steppers[name], reference.xs, job.warmup)
    _send(job.out, {"ready": ready})
    frames = {name: job.references[methods[name].cell].xs for name in steppers}
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("quit"):
            break
        name = command["time"]
        if name not in steppers:
            _send(job.out, {"error": f"no checked method {name!r}"})
            continue
        _send(job.out, {"samples_us": _time(steppers[name], frames[name], int(command["steps"]))})


def _checked(method: Method, reference: Reference, tolerance: dict[str, float]) -> dict:
    try:
        return check(method, reference, tolerance)
    except Exception as error:  # a runtime that fails to step is reported like one that fails
        return {"ok": False, "error": _reported(error)}


def _send(out: TextIO, message: dict) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()
