"""Soak: a long run of one stream and of a 64-stream pool, so a leak or a drift shows.

    python -m rnnstream.bench.soak [MODEL] [--steps N] [--window N] [--pool-size N] [--json PATH]

MODEL defaults to the shipped demo model (rnnstream/assets/charlm-stdlib.onnx); the runtime alone
is used (no torch). Each part runs ``--steps`` stream-steps (default a million):

* one stream, replaced by a new Stream after a random number of steps (1..2000), as a client
  that starts a new sequence would;
* a pool of ``--pool-size`` streams (default 64); each tick one random stream leaves and a new
  one joins with probability 1/4, and about one in eight streams rests (a gather/scatter tick).

Per window of ``--window`` stream-steps (default 100,000) it prints the process's resident memory
at the window's end and the median and p99 latency of a call (a step, or a tick of the pool), and
per stream-step. Not run in CI: a million steps take minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np

import rnnstream
from rnnstream.assets import DEMO_ONNX


def rss_mib() -> float:
    """The resident set size now (Linux /proc), else the peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def frames(model: rnnstream.Model, rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` random frames (or token ids) in the caller's layout, for one stream each."""
    spec = model.signature.input
    shape = [
        d for axis, d in enumerate(spec.shape) if axis not in (spec.batch_axis, spec.time_axis)
    ]
    if model.signature.num_tokens:
        return rng.integers(0, model.signature.num_tokens, (count, *shape)).astype(spec.dtype)
    return rng.standard_normal((count, *shape)).astype(spec.dtype)


def _step(stream: rnnstream.Stream, x: np.ndarray) -> int:
    stream.step(x)
    return 1


def _tick(pool: rnnstream.StreamPool, tick: dict[int, np.ndarray]) -> int:
    pool.step(tick)
    return len(tick)


def single_stream(model: rnnstream.Model, rng: np.random.Generator) -> Iterator[Callable[[], int]]:
    """Calls of one step each; the stream is replaced after a random number of steps."""
    inputs = frames(model, rng, 4096)
    stream, left, k = model.stream(), int(rng.integers(1, 2001)), 0
    while True:
        yield partial(_step, stream, inputs[k % len(inputs)])
        k += 1
        left -= 1
        if left == 0:
            stream, left = model.stream(), int(rng.integers(1, 2001))


def churning_pool(
    model: rnnstream.Model, rng: np.random.Generator, size: int
) -> Iterator[Callable[[], int]]:
    """Ticks of a pool of ``size`` streams that join, leave and rest at random."""
    inputs = frames(model, rng, 4096)
    pool = model.pool()
    ids = [pool.open() for _ in range(size)]
    k = 0
    while True:
        if rng.random() < 0.25:
            pool.close(ids.pop(int(rng.integers(len(ids)))))
            ids.append(pool.open())
        resting = rng.random(size) < 0.125
        tick = {sid: inputs[(k + i) % len(inputs)] for i, sid in enumerate(ids) if not resting[i]}
        yield partial(_tick, pool, tick)
        k += size


def soak(calls: Iterator[Callable[[], int]], steps: int, window: int) -> list[dict]:
    """Run calls until ``steps`` stream-steps; one record per window of ``window`` of them."""
    records, latencies, per_step, done, window_end = [], [], [], 0, window
    while done < steps:
        call = next(calls)
        start = time.perf_counter()
        n = call()
        elapsed = time.perf_counter() - start
        latencies.append(elapsed)
        per_step.append(elapsed / max(n, 1))
        done += n
        if done >= window_end or done >= steps:
            records.append(
                {
                    "steps": done,
                    "rss_mib": round(rss_mib(), 1),
                    "calls": len(latencies),
                    "median_us": round(statistics.median(latencies) * 1e6, 1),
                    "p99_us": round(float(np.percentile(latencies, 99)) * 1e6, 1),
                    "median_us_per_step": round(statistics.median(per_step) * 1e6, 2),
                }
            )
            latencies, per_step = [], []
            window_end += window
    return records


def print_table(title: str, records: list[dict]) -> None:
    print(f"\n{title}")
    print(
        f"{'steps':>10} {'RSS MiB':>9} {'calls':>8} {'median us':>10} {'p99 us':>10} {'us/step':>8}"
    )
    for r in records:
        print(
            f"{r['steps']:>10} {r['rss_mib']:>9.1f} {r['calls']:>8} {r['median_us']:>10.1f} "
            f"{r['p99_us']:>10.1f} {r['median_us_per_step']:>8.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default=str(DEMO_ONNX))
    parser.add_argument("--steps", type=int, default=1_000_000, help="stream-steps per part")
    parser.add_argument("--window", type=int, default=100_000, help="stream-steps per window")
    parser.add_argument("--pool-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_path", help="also write the records here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.window < 1 or args.pool_size < 1:
        parser.error("--steps, --window and --pool-size must be positive")
    model = rnnstream.load(args.model)
    rng = np.random.default_rng(args.seed)
    print(f"{args.model}: {args.steps} stream-steps per part, windows of {args.window}")
    result = {"model": args.model, "steps": args.steps, "window": args.window}
    result["stream"] = soak(single_stream(model, rng), args.steps, args.window)
    print_table("one stream (replaced every 1..2000 steps)", result["stream"])
    result["pool"] = soak(churning_pool(model, rng, args.pool_size), args.steps, args.window)
    print_table(f"pool of {args.pool_size} (joins, leaves, ~1/8 resting)", result["pool"])
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
