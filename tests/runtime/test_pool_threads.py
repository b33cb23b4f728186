"""One StreamPool shared by two threads: each thread's streams get their own numbers."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import rnnstream
from tests.runtime.graphs import F, save_two_heads, two_heads_signature
from tests.tolerances import assert_close


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory) -> rnnstream.Model:
    path = tmp_path_factory.mktemp("threads") / "two_heads.onnx"
    return rnnstream.load(save_two_heads(path, two_heads_signature()))


def test_two_threads_sharing_a_pool_match_streams_run_alone(two_heads):
    """Thread A steps its two streams every tick; thread B keeps opening, stepping and closing
    short streams of its own. Every output of both equals the same stream run alone."""
    rng = np.random.default_rng(0)
    ticks, b_streams, b_length = 400, 100, 6
    a_inputs = rng.standard_normal((2, ticks, F)).astype(np.float32)
    b_inputs = rng.standard_normal((b_streams, b_length, F)).astype(np.float32)
    pool = two_heads.pool()
    a_ids = [pool.open(), pool.open()]
    a_out: list[list[dict]] = [[], []]
    b_out: list[list[dict]] = [[] for _ in range(b_streams)]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def thread_a() -> None:
        start.wait()
        for t in range(ticks):
            out = pool.step({pid: a_inputs[k, t] for k, pid in enumerate(a_ids)})
            for k, pid in enumerate(a_ids):
                a_out[k].append(out[pid])

    def thread_b() -> None:
        start.wait()
        for s in range(b_streams):
            pid = pool.open()
            for t in range(b_length):
                b_out[s].append(pool.step({pid: b_inputs[s, t]})[pid])
            assert pid in pool
            pool.close(pid)

    def guarded(body):
        def run() -> None:
            try:
                body()
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        return run

    threads = [threading.Thread(target=guarded(body)) for body in (thread_a, thread_b)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: interleave the calls
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    assert len(pool) == 2
    for inputs, outputs in [*zip(a_inputs, a_out), *zip(b_inputs, b_out)]:
        alone = two_heads.stream().feed(inputs)
        assert len(outputs) == len(inputs)
        for name in ("hidden", "score"):
            assert_close(np.stack([o[name] for o in outputs]), alone[name])
