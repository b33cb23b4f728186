"""rnnstream against its peers, per step: ExecuTorch (XNNPACK) and OpenVINO next to PyTorch eager
and ``Stream.step``, on the reference shape (2 layers, input 64, hidden 256, head 256->64,
batch 1, one thread), float32 and int8.

    python -m rnnstream.bench.peers [--quick] [--json FILE] [--cells lstm,gru]
                                    [--peers executorch,openvino] [--steps N] [--rounds N]

(``make bench-peers``; from a source checkout.) The first run builds a virtualenv per peer under
``.peers/`` (``torch==2.13.0`` and the peer, pinned by ``bench/peers/constraints.txt``; several
minutes) and reuses it after. Seeded ``RecurrentNet`` LSTM and GRU are written once as weights and
100 frames with PyTorch's outputs, and exported by rnnstream at float32 and int8. Each runtime then
runs in its own process (``bench/peers/worker_*.py``; OpenVINO is slower with onnxruntime loaded
in the same process): it builds its models, steps each 100 times from zero state against
PyTorch's outputs (a method that misses the tolerance is reported, not timed), then times
``step`` calls on request. Rounds are interleaved across all methods and processes (A B C A B
C ...); the table gives medians and p99 per step and each median as a ratio to rnnstream's
float32 ``Stream.step`` on the same cell. Shared machines are noisy: read ratios within a run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rnnstream.bench.step_graphs import REFERENCE
from rnnstream.export import ParitySettings, export
from rnnstream.export.tolerance import TOLERANCES
from rnnstream.models import RecurrentNet, RecurrentNetConfig

__all__ = ["PEERS", "Worker", "aggregate", "main", "run", "table", "write_references"]

REPO = Path(__file__).resolve().parents[2]
WORKERS = REPO / "bench" / "peers"
CONSTRAINTS = WORKERS / "constraints.txt"
PEERS = {"executorch": ("torch", "executorch"), "openvino": ("torch", "openvino", "nncf")}
CHECK_STEPS = 100
READY_TIMEOUT_S = 1800  # building and quantising every model of a peer, on a loaded machine
TIME_TIMEOUT_S = 300

Say = Callable[[str], None]


class WorkerError(RuntimeError):
    """A worker process died, hung or broke the protocol."""


class Worker:
    """One runtime's worker process (``bench/peers/worker_<runtime>.py JOB``), spoken to in JSON
    lines: ``ready`` once (each method's check), then ``samples_us`` per ``time`` request."""

    def __init__(self, runtime: str, python: Path | str, job: dict, folder: Path) -> None:
        self.runtime = runtime
        job_path = folder / f"job-{runtime}.json"
        job_path.write_text(json.dumps(job, indent=2))
        self.log = folder / f"worker-{runtime}.log"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env |= {"OMP_NUM_THREADS": str(job["threads"]), "MKL_NUM_THREADS": str(job["threads"])}
        with self.log.open("w") as log:
            self._process = subprocess.Popen(
                [str(python), str(WORKERS / f"worker_{runtime}.py"), str(job_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
            )
        self._buffer = b""

    def ready(self) -> dict[str, dict]:
        """Each method's check report, by method name."""
        return self._receive(READY_TIMEOUT_S, "ready")["ready"]

    def time(self, method: str, steps: int) -> list[float]:
        """Microseconds of each of ``steps`` calls of ``method``'s step."""
        self._send({"time": method, "steps": steps})
        return self._receive(TIME_TIMEOUT_S, "samples_us")["samples_us"]

    def close(self) -> None:
        """Ask the worker to quit (kill it if it does not) and close its pipes."""
        if self._process.poll() is None:
            try:
                self._send({"quit": True})
                self._process.wait(timeout=30)
            except (WorkerError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        for pipe in (self._process.stdin, self._process.stdout):
            with contextlib.suppress(OSError):
                pipe.close()

    def _send(self, message: dict) -> None:
        try:
            self._process.stdin.write((json.dumps(message) + "\n").encode())
            self._process.stdin.flush()
        except OSError as error:  # the worker has gone
            raise WorkerError(f"{self.runtime} worker: {error}: {self._last_log_line()}") from None

    def _receive(self, timeout: float, key: str) -> dict:
        deadline = time.monotonic() + timeout
        fd = self._process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self._process.kill()
                raise WorkerError(f"{self.runtime} worker: no answer in {timeout:.0f} s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                self._process.wait()
                code = self._process.returncode
                raise WorkerError(f"{self.runtime} worker exited ({code}): {self._last_log_line()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return parse_message(line, key, self.runtime)

    def _last_log_line(self) -> str:
        lines = [x for x in self.log.read_text(errors="replace").splitlines() if x.strip()]
        return f"{lines[-1].strip()} (log: {self.log})" if lines else f"no output (log: {self.log})"


def parse_message(line: bytes | str, key: str, runtime: str) -> dict:
    """One protocol line as a dict holding ``key``; a worker's ``error`` or anything else is a
    WorkerError naming the runtime."""
    try:
        message = json.loads(line)
    except json.JSONDecodeError:
        raise WorkerError(f"{runtime} worker: not a protocol line: {line[:200]!r}") from None
    if not isinstance(message, dict) or key not in message:
        detail = message.get("error") if isinstance(message, dict) else None
        raise WorkerError(f"{runtime} worker: {detail or f'expected {key!r}, got {line[:200]!r}'}")
    return message


def aggregate(samples: list[float]) -> dict[str, float]:
    """Median and 99th percentile of per-step microseconds."""
    values = np.asarray(samples, np.float64)
    return {"median_us": float(np.median(values)), "p99_us": float(np.percentile(values, 99))}


def ensure_venv(peer: str, folder: Path, say: Say) -> Path | str:
    """The python of ``folder/peer`` with the peer installed (built when missing or when its
    pins changed, else reused); the pip error as a string when it cannot be installed."""
    venv, packages = folder / peer, PEERS[peer]
    python, stamp, log = venv / "bin" / "python", venv / ".installed", folder / f"{peer}.pip.log"
    wanted = _stamp(packages)
    if stamp.exists() and stamp.read_text() == wanted and python.exists():
        say(f"{peer}: reusing {venv}")
        return python
    say(f"{peer}: building {venv} ({', '.join(packages)}; minutes the first time; log {log})")
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    commands = [[sys.executable, "-m", "venv", str(venv)]] if not python.exists() else []
    commands.append([str(python), "-m", "pip", "install", "-c", str(CONSTRAINTS), *packages])
    with log.open("w") as out:
        failed = any(
            _run_logged(command, out, lambda line: _pip_progress(peer, line, say)) != 0
            for command in commands
        )
    if failed:
        return _pip_error(log)
    stamp.write_text(wanted)
    say(f"{peer}: ready in {time.monotonic() - started:.0f} s")
    return python


def _stamp(packages: tuple[str, ...]) -> str:
    """What a built virtualenv was built from: the Python, the packages and their pins."""
    text = f"{sys.version_info[:2]} {packages} {CONSTRAINTS.read_text()}"
    return hashlib.sha256(text.encode()).hexdigest()


def _run_logged(command: list[str], log, on_line: Callable[[str], None]) -> int:
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        for line in process.stdout:
            log.write(line)
            on_line(line.rstrip())
    return process.returncode


def _pip_progress(peer: str, line: str, say: Say) -> None:
    if line.startswith(("Collecting ", "Installing collected", "Successfully installed")):
        say(f"  {peer}: {line[:110]}")


def _pip_error(log: Path) -> str:
    lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("ERROR")]
    return (errors or lines or ["pip failed with no output"])[-1]


def write_references(
    cells: list[str], folder: Path, shape: dict[str, int], seed: int = 0
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """For each cell, a seeded ``RecurrentNet``'s weights with ``CHECK_STEPS`` frames and
    PyTorch's outputs (``reference-<cell>.npz``), and its rnnstream exports at float32 and int8
    (parity checked as ``rnnstream export`` does): the npz paths and the .onnx paths by cell."""
    references, exports = {}, {}
    for cell in cells:
        torch.manual_seed(seed)
        net = RecurrentNet(RecurrentNetConfig(cell=cell, **shape)).eval()
        xs = np.random.default_rng(seed + 1).standard_normal((CHECK_STEPS, shape["input_size"]))
        xs = xs.astype(np.float32)
        with torch.no_grad():
            ys = net(torch.from_numpy(xs)[None])[0][0].numpy()
        weights = {k: v.detach().numpy() for k, v in net.state_dict().items()}
        sizes = [shape[k] for k in ("num_layers", "input_size", "hidden_size", "output_size")]
        path = folder / f"reference-{cell}.npz"
        np.savez(path, cell=cell, shape=np.array(sizes), xs=xs, ys=ys, **weights)
        references[cell] = str(path)
        exports[cell] = {}
        for precision in ("float32", "int8"):
            onnx_path = folder / f"rnnstream-{cell}-{precision}.onnx"
            export(net, onnx_path, parity=ParitySettings(steps=CHECK_STEPS), precision=precision)
            exports[cell][precision] = str(onnx_path)
    return references, exports


def run(
    cells: list[str],
    peers: list[str],
    steps: int,
    rounds: int,
    folder: Path,
    venvs: Path,
    say: Say = print,
    shape: dict[str, int] | None = None,
    warmup: int = 50,
) -> dict:
    """Build, check and time every method (see the module doc); the report as a dict."""
    folder.mkdir(parents=True, exist_ok=True)
    shape = shape or REFERENCE
    pythons: dict[str, Path | str] = {"rnnstream": sys.executable, "torch": sys.executable}
    problems: dict[str, str] = {}
    for peer in peers:
        found = ensure_venv(peer, venvs, say)
        if isinstance(found, str):
            say(f"{peer}: cannot be installed: {found}")
            problems[peer] = f"not installed: {found}"
        else:
            pythons[peer] = found
    say(f"exporting the reference {', '.join(cells)} ({folder})")
    references, exports = write_references(cells, folder, shape)
    job = {
        "references": references,
        "onnx": exports,
        "threads": 1,
        "warmup": warmup,
        "tolerances": {
            p: {"atol": TOLERANCES[p].atol, "rtol": TOLERANCES[p].rtol} for p in TOLERANCES
        },
    }
    workers = {name: Worker(name, python, job, folder) for name, python in pythons.items()}
    methods: dict[str, dict] = {}
    try:
        for name, worker in workers.items():
            say(f"{name}: building and checking its models")
            try:
                ready = worker.ready()
            except WorkerError as error:
                problems[name] = str(error)
                say(f"{name}: {error}")
                continue
            for method, report in ready.items():
                methods[method] = {"runtime": name, **report}
                if not report["ok"]:
                    say(f"{name}: {method} not timed: {report['error']}")
        _time_rounds(workers, methods, steps, rounds, problems, say)
    finally:
        for worker in workers.values():
            worker.close()
    return {
        "machine": _machine(),
        "settings": {"steps": steps, "rounds": rounds, "threads": 1, "shape": shape},
        "problems": problems,
        "methods": methods,
    }


def _time_rounds(
    workers: dict[str, Worker],
    methods: dict[str, dict],
    steps: int,
    rounds: int,
    problems: dict[str, str],
    say: Say,
) -> None:
    """Time every checked method ``rounds`` times, interleaved; a worker that fails takes its
    methods out of the table (its error goes to ``problems``)."""
    timed = [m for m, r in methods.items() if r["ok"]]
    samples: dict[str, list[float]] = {m: [] for m in timed}
    failed: set[str] = set()
    for round_ in range(rounds):
        say(f"round {round_ + 1}/{rounds}: {len(timed)} methods x {steps} steps")
        for method in timed:
            runtime = methods[method]["runtime"]
            if runtime in failed:
                continue
            try:
                samples[method] += workers[runtime].time(method, steps)
            except WorkerError as error:
                problems[runtime] = str(error)
                failed.add(runtime)
    for method in timed:
        report = methods[method]
        if report["runtime"] in failed:
            report |= {"ok": False, "error": problems[report["runtime"]]}
        else:
            report |= aggregate(samples[method])


def _machine() -> dict[str, str]:
    import onnxruntime

    return {
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(report: dict) -> str:
    """The report as a Markdown table: one row per method, for each cell the median µs (p99) and
    the median as a ratio to rnnstream's float32 ``Stream.step`` on that cell."""
    methods = report["methods"]
    cells = list(dict.fromkeys(r["cell"] for r in methods.values() if "cell" in r))
    base = {
        r["cell"]: r["median_us"]
        for r in methods.values()
        if r.get("runtime") == "rnnstream" and r["precision"] == "float32" and "median_us" in r
    }
    rows: dict[str, dict[str, str]] = {}
    for report_row in methods.values():
        if "label" not in report_row:
            continue
        row = rows.setdefault(report_row["label"], {})
        row[report_row["cell"]] = _cell_text(report_row, base.get(report_row["cell"]))
    head = " | ".join(f"{c.upper()} µs (p99) | {c.upper()} ratio" for c in cells)
    lines = [f"| method | {head} |", "|---|" + "---|---|" * len(cells)]
    for label, row in rows.items():
        lines.append(f"| {label} | " + " | ".join(row.get(c, " | ") for c in cells) + " |")
    failed = [f"- {m}: {r['error']}" for m, r in methods.items() if not r["ok"]]
    failed += [f"- {name}: {text}" for name, text in report.get("problems", {}).items()]
    return "\n".join(lines + (["", "Not timed:", *failed] if failed else []))


def _cell_text(row: dict, base: float | None) -> str:
    if "median_us" not in row:
        return "not timed | -"
    ratio = f"{row['median_us'] / base:.2f}" if base else "-"
    return f"{row['median_us']:.1f} ({row['p99_us']:.0f}) | {ratio}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (few steps)")
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--steps", type=int, help="timed steps per method per round")
    parser.add_argument("--rounds", type=int, help="interleaved rounds")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--venvs", type=Path, default=REPO / ".peers")
    args = parser.parse_args(argv)
    peers = [p for p in args.peers.split(",") if p]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown peers {unknown}; known: {sorted(PEERS)}")
    if not WORKERS.is_dir():
        parser.error(f"the worker scripts are not at {WORKERS}: run from a source checkout")
    steps = args.steps or (100 if args.quick else 500)
    rounds = args.rounds or (2 if args.quick else 9)
    folder = args.venvs / "run"
    report = run(args.cells.split(","), peers, steps, rounds, folder, args.venvs)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(table(report))


if __name__ == "__main__":
    main()
