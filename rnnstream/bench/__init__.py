"""Benchmarks, in one home: per-step latency (``rnnstream bench``) and the precision comparison.

    python -m rnnstream.bench.latency [MODEL.onnx --against CHECKPOINT] [--json out.json]
    python -m rnnstream.bench.precision [CHECKPOINT]    # needs the export extra (torch)
    python -m rnnstream.bench.precisions    # every cell x float32/float16/int8/int4 (torch)

(``make bench``, ``make bench-precision``, ``make bench-precisions``.)
:mod:`~rnnstream.bench.latency` needs only the runtime; PyTorch is timed when a module is given.
"""

from rnnstream.bench.latency import BenchResult, measure, run_benchmark

__all__ = ["BenchResult", "measure", "run_benchmark"]
