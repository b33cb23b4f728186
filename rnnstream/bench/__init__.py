"""Benchmarks, in one home: per-step latency (``rnnstream bench``) and the precision comparison.

    python -m rnnstream.bench.latency [MODEL.onnx --against CHECKPOINT] [--json out.json]
    python -m rnnstream.bench.precision [CHECKPOINT]    # needs the export extra (torch)

(``make bench``, ``make bench-precision``.) :mod:`~rnnstream.bench.latency` needs only the
runtime; PyTorch is timed when a module is given.
"""

from rnnstream.bench.latency import BenchResult, measure, run_benchmark

__all__ = ["BenchResult", "measure", "run_benchmark"]
