"""float32 / int8 / float16 side by side: per-step latency, size, peak RSS, import + load time.

    python -m rnnstream.bench.precision [CHECKPOINT] [--json FILE] [--steps N] [--rounds N]

CHECKPOINT defaults to the shipped demo model (rnnstream/assets/charlm-stdlib.safetensors). It is
exported at each precision (with parity, as `rnnstream export` and `rnnstream quantize` do), then:

* latency per stream-step, all methods interleaved in one run (rnnstream.bench.latency):
  Stream.step at 1 and 2 onnxruntime threads, StreamPool with 64 streams stepping together, and
  PyTorch eager at the same precision (float32; int8 through torch.ao dynamic quantisation;
  float16 by .half()) for one sequence and for a batch of 64, best of oneDNN on and off, on one
  thread;
* size on disk;
* in a fresh runtime-only process (torch and onnx blocked from importing): import time, load
  time, load time of the optimised-graph cache, and peak RSS after 300 steps of a stream and 100
  ticks of a 64-stream pool (medians of --processes processes; RSS: the largest).

The results go to --json (default: precision.json next to this module, the committed numbers).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

import rnnstream
from rnnstream.assets import DEMO_CHECKPOINT
from rnnstream.bench.latency import measure
from rnnstream.export import ParitySettings, export, quantize_file
from rnnstream.export.exporter import infer_input
from rnnstream.models import load_checkpoint

PRECISIONS = ("float32", "int8", "float16")

# Runs in a fresh interpreter: only the runtime may load (torch and onnx imports fail).
CHILD = r"""
import importlib.abc, json, resource, sys, time

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx"):
            raise ImportError(f"{name} is blocked: the runtime must not need it")

sys.meta_path.insert(0, Block())
path, cache = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
import numpy as np
import rnnstream
t1 = time.perf_counter()
model = rnnstream.load(path, optimized_cache=cache or None)
t2 = time.perf_counter()
sig = model.signature
if sig.num_tokens:
    frames = [t % sig.num_tokens for t in range(300)]
else:
    shape = [d for i, d in enumerate(sig.input.shape) if i not in (0, 1)]
    frames = [np.full(shape, t % 7 / 7, dtype=np.float32) for t in range(300)]
s = model.stream()
for frame in frames:
    s.step(frame)
pool = model.pool()
tick = {pool.open(): frames[1] for _ in range(64)}
for _ in range(100):
    pool.step(tick)
try:  # this process's own high-water mark (ru_maxrss would include the parent's, from the fork)
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    peak_kb = int(status.split()[0])
except OSError:
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "peak_rss_mb": peak_kb / 1024}))
"""


def runtime_process(path: Path, cache: Path | None = None) -> dict:
    """Import, load and stream ``path`` in a fresh runtime-only interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(cache or "")],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def process_stats(path: Path, workdir: Path, processes: int) -> dict:
    """Medians over fresh processes, without and with the optimised-graph cache."""
    runs = [runtime_process(path) for _ in range(processes)]
    cache = workdir / f"{path.stem}.optimized.onnx"
    runtime_process(path, cache)  # writes the cache
    cached = [runtime_process(cache) for _ in range(processes)]
    return {
        "import_s": round(statistics.median(r["import_s"] for r in runs), 3),
        "load_s": round(statistics.median(r["load_s"] for r in runs), 4),
        "load_cached_s": round(statistics.median(r["load_s"] for r in cached), 4),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
        "cache_size_bytes": cache.stat().st_size,
    }


def torch_at(module: nn.Module, precision: str) -> nn.Module:
    """PyTorch's own version of ``module`` at ``precision`` (eager, CPU)."""
    if precision == "int8":
        return torch.ao.quantization.quantize_dynamic(
            module, {nn.LSTM, nn.GRU, nn.Linear}, dtype=torch.qint8
        )
    if precision == "float16":
        return copy.deepcopy(module).half()
    return module


def torch_stepper(module: nn.Module, x: torch.Tensor, onednn: bool) -> Callable[[], None]:
    """PyTorch stepping ``module`` on one step ``x`` at a time with the state carried."""
    state = [None]

    def step() -> None:
        with torch.backends.mkldnn.flags(enabled=onednn), torch.inference_mode():
            _, state[0] = module(x, state[0])

    return step


def step_input(model: rnnstream.Model) -> object:
    """One step's input as Stream.step takes it: a token id, or a frame."""
    sig = model.signature
    if sig.num_tokens:
        return min(7, sig.num_tokens - 1)
    shape = [
        d
        for i, d in enumerate(sig.input.shape)
        if i not in (sig.input.batch_axis, sig.input.time_axis)
    ]
    return np.full(shape, 0.5, dtype=np.float32)


def latency(
    models: dict[str, dict[int, rnnstream.Model]], module: nn.Module, steps: int, rounds: int
) -> dict:
    methods = {}
    inputs = infer_input(module, None, None)
    for precision, by_threads in models.items():
        for threads, model in by_threads.items():
            x = step_input(model)
            s = model.stream()
            methods[f"{precision} stream.step t{threads}"] = (lambda s=s, x=x: s.step(x), 1)
            pool = model.pool()
            tick = {pool.open(): x for _ in range(64)}
            methods[f"{precision} pool x64 t{threads}"] = (lambda p=pool, t=tick: p.step(t), 64)
        torch_model = torch_at(module, precision)
        for batch, label in ((1, "torch eager"), (64, "torch eager batch 64")):
            x = inputs.sample(batch, 1, seed=0)
            if precision == "float16" and x.is_floating_point():
                x = x.half()
            for onednn in (True, False):
                step = torch_stepper(torch_model, x, onednn)
                methods[f"{precision} {label} onednn={onednn}"] = (step, batch)
    rows = measure(methods, steps, rounds)
    out: dict[str, dict] = {}
    for precision in models:
        row = {}
        for t in (1, 2):
            row[f"stream_step_us_t{t}"] = rows[f"{precision} stream.step t{t}"]
            row[f"pool64_us_per_stream_t{t}"] = rows[f"{precision} pool x64 t{t}"]
        for label, key in (("torch eager", "torch_us"), ("torch eager batch 64", "torch64_us")):
            row[key] = min(
                (rows[f"{precision} {label} onednn={o}"] for o in (True, False)),
                key=lambda r: r["median_us"],
            )
        out[precision] = {k: {m: round(v, 1) for m, v in r.items()} for k, r in row.items()}
    return out


def build(module: nn.Module, workdir: Path, eval_tokens: int) -> dict[str, tuple[Path, dict]]:
    """The model exported at every precision: path and parity record (as JSON)."""
    fp32 = workdir / "model.float32.onnx"
    # atol 1e-4 as `make demo-model`: a trained LSTM's cell state reaches values in the hundreds.
    report = export(module, fp32, parity=ParitySettings(atol=1e-4))
    files = {"float32": (fp32, report.parity.to_dict())}
    for precision in PRECISIONS[1:]:
        path = workdir / f"model.{precision}.onnx"
        settings = ParitySettings(eval_tokens=eval_tokens)
        report = quantize_file(fp32, path, precision, against=module, parity=settings)
        files[precision] = (path, report.parity.to_dict())
    return files


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def table(results: dict) -> str:
    """The README table (markdown)."""
    head = (
        "| precision | size | Stream.step 1 thread | 2 threads | StreamPool(64) per stream, 1 "
        "thread | 2 threads | torch eager | torch batch 64 per stream | import + load | "
        "load (cached graph) | peak RSS | max rel err | bpc (+ vs float32) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for precision, r in results.items():
        lat, proc, parity = r["latency"], r["process"], r["parity"]
        task = parity.get("task") or {}
        bpc = f"{task['value']:.4f} ({task['increase']:+.4f})" if task else "—"
        lines.append(
            f"| {precision} | {r['size_bytes'] / 1e6:.2f} MB "
            f"| {lat['stream_step_us_t1']['median_us']:.0f} µs "
            f"| {lat['stream_step_us_t2']['median_us']:.0f} µs "
            f"| {lat['pool64_us_per_stream_t1']['median_us']:.1f} µs "
            f"| {lat['pool64_us_per_stream_t2']['median_us']:.1f} µs "
            f"| {lat['torch_us']['median_us']:.0f} µs "
            f"| {lat['torch64_us']['median_us']:.1f} µs "
            f"| {proc['import_s'] * 1e3:.0f} + {proc['load_s'] * 1e3:.0f} ms "
            f"| {proc['load_cached_s'] * 1e3:.0f} ms "
            f"| {proc['peak_rss_mb']:.0f} MB "
            f"| {parity['max_rel_err']:.2g} | {bpc} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", nargs="?", type=Path, default=DEMO_CHECKPOINT)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("precision.json"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per file")
    parser.add_argument("--eval-tokens", type=int, default=100_000, help="bpc validation tokens")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # torch.ao's deprecation notices and oneDNN's TF32 note
    torch.set_num_threads(1)
    module = load_checkpoint(args.checkpoint).eval()
    with tempfile.TemporaryDirectory(prefix="rnnstream-precision-") as tmp:
        workdir = Path(tmp)
        files = build(module, workdir, args.eval_tokens)
        models = {
            p: {t: rnnstream.load(path, threads=t) for t in (1, 2)}
            for p, (path, _) in files.items()
        }
        lat = latency(models, module, args.steps, args.rounds)
        results = {
            p: {
                "size_bytes": path.stat().st_size,
                "latency": lat[p],
                "process": process_stats(path, workdir, args.processes),
                "parity": {
                    k: parity[k] for k in ("max_abs_err", "max_rel_err", "atol", "rtol", "passed")
                }
                | ({"task": parity["task"]} if "task" in parity else {}),
            }
            for p, (path, parity) in files.items()
        }
    report = {"checkpoint": str(args.checkpoint), "machine": machine(), "results": results}
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
