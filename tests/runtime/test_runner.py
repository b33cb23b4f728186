"""One runner under Stream and StreamPool: every output, in one layout, from both."""

from __future__ import annotations

import numpy as np
import pytest

import rnnstream
from tests.runtime.graphs import F, H, save_two_heads, two_heads_reference, two_heads_signature
from tests.tolerances import KERNELS, Closeness, assert_close

WITHIN_1E6 = Closeness(ulps=8)  # 9.5e-7 of each element and of the scale


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory) -> rnnstream.Model:
    path = tmp_path_factory.mktemp("two_heads") / "two_heads.onnx"
    return rnnstream.load(save_two_heads(path, two_heads_signature()))


def test_stream_step_and_feed_return_every_output(two_heads):
    xs = np.random.default_rng(0).standard_normal((12, F)).astype(np.float32)
    hidden, score = two_heads_reference(xs)
    stream = two_heads.stream()
    steps = [stream.step(x) for x in xs[:6]]
    assert all(set(out) == {"hidden", "score"} for out in steps)
    assert steps[0]["hidden"].shape == (H,) and steps[0]["score"].shape == (1,)
    chunk = stream.feed(xs[6:])
    assert set(chunk) == {"hidden", "score"} and chunk["hidden"].shape == (6, H)
    assert_close(np.concatenate([[o["hidden"] for o in steps], chunk["hidden"]]), hidden, KERNELS)
    assert_close(np.concatenate([[o["score"] for o in steps], chunk["score"]]), score, KERNELS)


def test_batched_stream_returns_every_output_per_row(two_heads):
    xs = np.random.default_rng(1).standard_normal((2, 4, F)).astype(np.float32)
    out = two_heads.stream(batch=2).feed(xs)
    for row in range(2):
        hidden, score = two_heads_reference(xs[row])
        assert_close(out["hidden"][row], hidden, KERNELS)
        assert_close(out["score"][row], score, KERNELS)


def test_pool_returns_every_output_equal_to_lone_streams(two_heads):
    """Streams join, skip ticks and leave; each one's outputs equal a lone Stream's to 1e-6."""
    rng = np.random.default_rng(2)
    n_streams, ticks = 6, 30
    starts = rng.integers(0, 10, n_streams)
    inputs = rng.standard_normal((n_streams, ticks, F)).astype(np.float32)
    pool = two_heads.pool()
    ids: dict[int, int] = {}
    pooled: list[list[dict]] = [[] for _ in range(n_streams)]
    for tick in range(ticks):
        for s in np.flatnonzero(starts == tick):
            ids[int(s)] = pool.open()
        active = {s: pid for s, pid in ids.items() if rng.random() < 0.7}
        out = pool.step({pid: inputs[s][len(pooled[s])] for s, pid in active.items()})
        assert set(out) == set(active.values())
        for s, pid in active.items():
            assert set(out[pid]) == {"hidden", "score"}
            pooled[s].append(out[pid])
        if tick == ticks // 2:  # one stream leaves half way
            pool.close(ids.pop(0))
    for s in range(n_streams):
        alone = two_heads.stream()
        for x, got in zip(inputs[s], pooled[s]):
            want = alone.step(x)
            assert got["hidden"].shape == want["hidden"].shape == (H,)
            assert got["score"].shape == want["score"].shape == (1,)
            assert_close(got["hidden"], want["hidden"], WITHIN_1E6)
            assert_close(got["score"], want["score"], WITHIN_1E6)


def test_run_returns_every_output_and_the_final_state(two_heads):
    xs = np.random.default_rng(3).standard_normal((1, 7, F)).astype(np.float32)
    hidden, score = two_heads_reference(xs[0])
    out = two_heads.run(xs)
    assert set(out) == {"hidden", "score", "h_out"}
    assert_close(out["hidden"][0], hidden, KERNELS)
    assert_close(out["score"][0], score, KERNELS)
    assert_close(out["h_out"][0, 0], hidden[-1], KERNELS)  # the model's [1, batch, H]
