"""`make test-triton`, step 2: the repository on a real Triton server, checked and measured.

Runs in the Triton virtualenv (nvidia-pytriton's tritonserver 2.51 with the python backend,
tritonclient, and rnnstream's runtime: no torch, no onnx):

1. every ``config.pbtxt`` parses with Triton's own schema (tritonclient's ``model_config_pb2``);
2. each ``<name>_ort`` copy runs in onnxruntime with batch-first state and equals solo streams
   (the ONNX Runtime backend is not in the pip-installable server, so it is not served here);
3. tritonserver serves each python model on free loopback ports; hundreds of concurrent
   sequences over gRPC (random lengths, joining and leaving at different times, one of them
   sending a bad step mid-way) must each equal a solo ``Stream`` over the same input;
4. throughput, per-step latency and the batch sizes Triton formed (its statistics endpoint) are
   printed next to the same workload on an in-process ``StreamPool``.

The server runs in its own process group, stopped (and checked gone) whatever happens.

    python -m tests.triton.run_triton WORK_DIR
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytriton
import tritonclient.grpc as grpc_client
import tritonclient.grpc.aio as grpc_aio
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

import rnnstream
from tests.tolerances import Closeness, assert_close

MODELS = ("charlm", "frames")
SEQUENCES = 300  # per model
MIN_CONCURRENT = 200
LENGTHS = (10, 60)  # steps per sequence, uniform
SPREAD_S = 0.5  # sequences start over the first half second (the pool: over 20 ticks)
BAD_STEP = 3  # sequence 0 sends a bad frame at this step, then goes on
SAME = Closeness(ulps=8)  # rtol 1e-6 (and atol 1e-6 of the largest magnitude)
TRITON_TYPES = {"int64": "INT64", "float32": "FP32", "float16": "FP16", "int32": "INT32"}


@dataclass
class Run:
    """One workload's measurements."""

    steps: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    batches: dict[int, int] = field(default_factory=dict)  # batch size -> executions
    max_concurrent: int = 0
    call_ms: float = 0.0  # one model call (a Triton execute, a pool tick), mean
    queue_ms: float = 0.0  # a request's wait in Triton's queue, mean
    client_cpu_s: float = 0.0  # CPU time of this process during the run

    def row(self) -> dict:
        sizes = np.repeat(list(self.batches), list(self.batches.values()))
        return {
            "steps": self.steps,
            "max_concurrent": self.max_concurrent,
            "steps_per_s": self.steps / self.seconds,
            "p50_ms": 1e3 * float(np.percentile(self.latencies, 50)),
            "p99_ms": 1e3 * float(np.percentile(self.latencies, 99)),
            "executions": int(sizes.size),
            "batch_mean": float(sizes.mean()),
            "batch_p50": float(np.percentile(sizes, 50)),
            "batch_max": int(sizes.max()),
            "call_ms": self.call_ms,
            "queue_ms": self.queue_ms,
            "client_cpu_s": self.client_cpu_s,
            "seconds": self.seconds,
        }


def check_configs(repo: Path) -> int:
    for path in sorted(repo.glob("*/config.pbtxt")):
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        assert config.name == path.parent.name, path
        assert config.sequence_batching.HasField("oldest"), path
        if config.backend == "python":
            kinds = [c.control[0].kind for c in config.sequence_batching.control_input]
            assert len(kinds) == 3, path
        else:
            assert config.platform == "onnxruntime_onnx", path
            assert all(s.initial_state[0].zero_data for s in config.sequence_batching.state)
        print(f"[triton] {path.relative_to(repo)}: parsed with Triton's ModelConfig schema")
    return len(list(repo.glob("*/config.pbtxt")))


def check_ort_copy(repo: Path, name: str, seed: int) -> None:
    """The batch-first copy, its state fed back by hand as Triton does, against solo streams."""
    model = rnnstream.load(repo / name / "1" / "model.onnx")
    sig = model.signature
    session = ort.InferenceSession(str(repo / f"{name}_ort" / "1" / "model.onnx"))
    shapes = {i.name: i.shape for i in session.get_inputs()}
    rows, steps = 4, 40
    xs = [make_input(sig, steps, np.random.default_rng(seed + r)) for r in range(rows)]
    state = {s.input: np.zeros([rows, *shapes[s.input][1:]], s.dtype) for s in sig.states}
    names = [o.name for o in sig.outputs] + [s.output for s in sig.states]
    got = []
    for t in range(steps):
        results = session.run(names, {sig.input.name: np.stack([x[t] for x in xs]), **state})
        state = dict(zip([s.input for s in sig.states], results[len(sig.outputs) :]))
        got.append(results[0])
    for r in range(rows):
        assert_close(np.stack([y[r] for y in got]), model.stream().feed(xs[r]), SAME)
    print(f"[triton] {name}_ort: batch-first copy equals solo streams ({rows} x {steps} steps)")


def frame_shape(sig: rnnstream.Signature) -> list:
    """One step's frame: the input's shape without its batch and time axes."""
    spec = sig.input
    return [d for a, d in enumerate(spec.shape) if a not in (spec.batch_axis, spec.time_axis)]


def make_input(sig: rnnstream.Signature, steps: int, rng: np.random.Generator) -> np.ndarray:
    frame = frame_shape(sig)
    if sig.num_tokens is not None:
        return rng.integers(0, sig.num_tokens, steps).astype(sig.input.dtype)
    return rng.standard_normal((steps, *frame)).astype(sig.input.dtype)


def workload(sig: rnnstream.Signature, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(LENGTHS[0], LENGTHS[1] + 1, SEQUENCES)
    starts = rng.uniform(0, SPREAD_S, SEQUENCES)
    return [make_input(sig, int(n), rng) for n in lengths], starts


def bad_frame(sig: rnnstream.Signature) -> tuple[np.ndarray, str]:
    if sig.num_tokens is not None:
        return np.array(sig.num_tokens, sig.input.dtype), "token ids must be in"
    return np.full(frame_shape(sig), np.nan, sig.input.dtype), "contains NaN or infinity"


async def drive(url: str, name: str, sig: rnnstream.Signature, xs, starts) -> tuple[Run, list]:
    """Every sequence a task stepping in order; sequence 0 also sends one bad step."""
    client = grpc_aio.InferenceServerClient(url)
    run = Run()
    outputs: list[list[np.ndarray]] = [[] for _ in xs]
    open_now = 0
    names = [o.name for o in sig.outputs]
    bad, bad_message = bad_frame(sig)

    async def infer(sid: int, frame: np.ndarray, start: bool, end: bool):
        batched = frame.reshape(1, *(frame.shape or (1,)))
        tensor = grpc_aio.InferInput(
            sig.input.name, list(batched.shape), TRITON_TYPES[sig.input.dtype]
        )
        tensor.set_data_from_numpy(batched)
        wanted = [grpc_aio.InferRequestedOutput(n) for n in names]
        return await client.infer(
            name, [tensor], outputs=wanted, sequence_id=sid, sequence_start=start, sequence_end=end
        )

    async def sequence(s: int) -> None:
        nonlocal open_now
        await asyncio.sleep(float(starts[s]))
        open_now += 1
        run.max_concurrent = max(run.max_concurrent, open_now)
        x = xs[s]
        for t in range(len(x)):
            if s == 0 and t == BAD_STEP:
                try:
                    await infer(s + 1, bad, False, False)
                except InferenceServerException as e:
                    assert bad_message in str(e) and f"sequence {s + 1}" in str(e), e
                else:
                    raise AssertionError("a bad step was served")
            began = time.perf_counter()
            result = await infer(s + 1, x[t], t == 0, t == len(x) - 1)
            run.latencies.append(time.perf_counter() - began)
            outputs[s].append(result.as_numpy(names[0])[0])
        open_now -= 1

    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(sequence(s) for s in range(len(xs))))
    run.seconds = time.perf_counter() - began
    run.client_cpu_s = time.process_time() - cpu
    run.steps = len(run.latencies)
    await client.close()
    return run, outputs


def server_stats(url: str, name: str, run: Run) -> None:
    """Triton's statistics for the model: the batches it formed, call and queue times."""
    client = grpc_client.InferenceServerClient(url)
    stats = client.get_inference_statistics(name, as_json=True)["model_stats"][0]
    client.close()
    run.batches = {
        int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["batch_stats"]
    }
    calls = sum(run.batches.values())
    compute = sum(
        int(b[k].get("ns", 0))
        for b in stats["batch_stats"]
        for k in ("compute_input", "compute_infer", "compute_output")
    )
    run.call_ms = compute / calls / 1e6
    queue = stats["inference_stats"]["queue"]
    run.queue_ms = int(queue.get("ns", 0)) / max(1, int(queue.get("count", 0))) / 1e6


def pool_run(model: rnnstream.Model, xs, starts) -> tuple[Run, list]:
    """The same sequences on an in-process pool: one tick steps every open sequence."""
    run, pool = Run(), model.pool()
    join_tick = np.floor(starts / SPREAD_S * 20).astype(int)
    outputs: list[list[np.ndarray]] = [[] for _ in xs]
    open_ids: dict[int, int] = {}
    position = [0] * len(xs)
    tick = 0
    began = time.perf_counter()
    while any(p < len(x) for p, x in zip(position, xs)):
        for s in np.flatnonzero(join_tick == tick):
            open_ids[int(s)] = pool.open()
        tick_began = time.perf_counter()
        out = pool.step({pid: xs[s][position[s]] for s, pid in open_ids.items()})
        took = time.perf_counter() - tick_began
        run.batches[len(out)] = run.batches.get(len(out), 0) + 1
        run.latencies += [took] * len(out)
        run.max_concurrent = max(run.max_concurrent, len(out))
        for s, pid in list(open_ids.items()):
            y = out[pid]
            outputs[s].append(y if not isinstance(y, dict) else y[model.signature.outputs[0].name])
            position[s] += 1
            if position[s] == len(xs[s]):
                pool.close(pid)
                del open_ids[s]
        tick += 1
    run.seconds = time.perf_counter() - began
    run.steps = len(run.latencies)
    run.call_ms = 1e3 * run.seconds / tick
    return run, outputs


def check_outputs(model: rnnstream.Model, xs, outputs, where: str) -> None:
    for s, x in enumerate(xs):
        expected = model.stream().feed(x)
        expected = expected if not isinstance(expected, dict) else next(iter(expected.values()))
        try:
            assert_close(np.stack(outputs[s]), expected, SAME)
        except AssertionError as e:
            raise AssertionError(f"{where}: sequence {s} differs from a solo stream: {e}") from e


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Server:
    """tritonserver from the nvidia-pytriton wheel, on loopback ports, in its own process group."""

    def __init__(self, repo: Path, models: tuple[str, ...], log: Path) -> None:
        root = Path(pytriton.__file__).parent / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        shutil.copy2(stub, root / "backends" / "python" / stub.name)  # the stub for this Python
        libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
        env["LD_LIBRARY_PATH"] = f"{libs}:{env.get('LD_LIBRARY_PATH', '')}"
        http, grpc, metrics = free_ports(3)
        self.url = f"127.0.0.1:{grpc}"
        self.log = log
        command = [
            str(root / "bin" / "tritonserver"),
            f"--model-repository={repo}",
            f"--backend-directory={root / 'backends'}",
            "--model-control-mode=explicit",
            *[f"--load-model={m}" for m in models],
            "--http-address=127.0.0.1",
            f"--http-port={http}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={grpc}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={metrics}",
            "--exit-timeout-secs=5",
        ]
        with log.open("w") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def wait_ready(self, models: tuple[str, ...], timeout: float = 120) -> float:
        began = time.perf_counter()
        client = grpc_client.InferenceServerClient(self.url)
        while time.perf_counter() - began < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited ({self.process.returncode}):\n{self.tail()}"
                )
            try:
                if all(client.is_model_ready(m) for m in models):
                    return time.perf_counter() - began
            except InferenceServerException:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"models not ready after {timeout:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL if it lingers; then none is left."""
        group = self.process.pid
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(group):
                self.process.poll()
                time.sleep(0.1)
            if not _group_alive(group):
                break
        self.process.wait(timeout=5)
        if _group_alive(group):
            raise RuntimeError(f"processes of tritonserver's group {group} are still running")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'model':8} {'served by':26} {'seqs':>5} {'conc':>5} {'steps':>6} {'steps/s':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'batch mean/p50/max':>19} {'calls':>6} {'ms/call':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        batch = f"{r['batch_mean']:.0f}/{r['batch_p50']:.0f}/{r['batch_max']}"
        print(
            f"{r['model']:8} {r['served_by']:26} {SEQUENCES:>5} {r['max_concurrent']:>5} "
            f"{r['steps']:>6} {r['steps_per_s']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
            f"{batch:>19} {r['executions']:>6} {r['call_ms']:>8.2f}"
        )


def main(work: Path) -> int:
    repo = work / "repo"
    passed = check_configs(repo)
    for seed, name in enumerate(MODELS):
        check_ort_copy(repo, name, seed)
        passed += 1
    server = Server(repo, MODELS, work / "tritonserver.log")
    rows = []
    try:
        took = server.wait_ready(MODELS)
        print(
            f"[triton] tritonserver 2.51 up on {server.url}, models {MODELS} ready in {took:.1f} s"
        )
        for seed, name in enumerate(MODELS):
            model = rnnstream.load(repo / name / "1" / "model.onnx")
            xs, starts = workload(model.signature, 100 + seed)
            run, outputs = asyncio.run(drive(server.url, name, model.signature, xs, starts))
            server_stats(server.url, name, run)
            check_outputs(model, xs, outputs, f"{name} on Triton")
            assert run.max_concurrent >= MIN_CONCURRENT, run.max_concurrent
            print(
                f"[triton] {name}: {SEQUENCES} sequences ({run.max_concurrent} at once) equal "
                "solo streams to 1e-6; a bad step was answered with an error naming it"
            )
            passed += 2
            pooled, pool_outputs = pool_run(model, xs, starts)
            check_outputs(model, xs, pool_outputs, f"{name} on a StreamPool")
            rows.append({"model": name, "served_by": "Triton gRPC (python+pool)", **run.row()})
            rows.append({"model": name, "served_by": "in-process StreamPool", **pooled.row()})
    except BaseException:
        print(f"[triton] tritonserver log (last lines):\n{server.tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()
        print("[triton] tritonserver stopped; no process of it is left")
    print()
    print_table(rows)
    (work / "report.json").write_text(json.dumps(rows, indent=2))
    print("\n(latency per step: gRPC round trip of one request; pool: the tick that ran it)")
    print(f"triton: {passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the server
    sys.exit(main(Path(sys.argv[1])))
