"""StreamPool: many streams batched into one run per tick, each as if it ran alone."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnstream
from rnnstream.export import ParitySettings, export
from tests.tolerances import assert_close


def _exported(folder: Path, make: Callable[[], torch.nn.Module], seed: int) -> rnnstream.Model:
    torch.manual_seed(seed)
    path = folder / "model.onnx"
    export(make(), path, parity=ParitySettings(steps=100))
    return rnnstream.load(path)


@pytest.fixture(scope="module")
def gru_model(tmp_path_factory) -> rnnstream.Model:
    gru = partial(torch.nn.GRU, 5, 12, num_layers=2, batch_first=False)
    return _exported(tmp_path_factory.mktemp("pool"), gru, seed=3)


@pytest.fixture(scope="module")
def lstm_model(tmp_path_factory) -> rnnstream.Model:
    lstm = partial(torch.nn.LSTM, 3, 8, num_layers=1, batch_first=True)
    return _exported(tmp_path_factory.mktemp("pool"), lstm, seed=4)


@pytest.mark.parametrize("fixture", ["gru_model", "lstm_model"])
def test_random_interleaving_matches_streams_run_alone(fixture, request):
    """Hundreds of streams of different lengths join and leave at random ticks."""
    model = request.getfixturevalue(fixture)
    rng = np.random.default_rng(0)
    features = model.signature.input.shape[-1]
    n_streams = 300
    lengths = rng.integers(1, 40, n_streams)
    starts = rng.integers(0, 120, n_streams)
    inputs = [rng.standard_normal((n, features)).astype(np.float32) for n in lengths]
    pool = model.pool()
    pooled: list[list[np.ndarray]] = [[] for _ in range(n_streams)]
    ids: dict[int, int] = {}  # stream index -> pool id
    position = [0] * n_streams
    tick = 0
    max_open = 0
    while any(p < n for p, n in zip(position, lengths)):
        for s in np.flatnonzero(starts == tick):
            ids[int(s)] = pool.open()
        # Some open streams skip this tick: their state must stay untouched.
        active = {s: pid for s, pid in ids.items() if rng.random() < 0.8}
        out = pool.step({pid: inputs[s][position[s]] for s, pid in active.items()})
        for s, pid in active.items():
            pooled[s].append(out[pid])
            position[s] += 1
            if position[s] == lengths[s]:
                pool.close(pid)
                del ids[s]
        max_open = max(max_open, len(pool))
        tick += 1
    assert len(pool) == 0
    assert max_open > 20  # the pool really batched many streams at once
    for s in range(n_streams):
        alone = model.stream().feed(inputs[s])
        assert_close(np.stack(pooled[s]), alone)


def test_state_reset_and_errors_leave_other_streams_alone(lstm_model):
    pool = lstm_model.pool()
    a, b = pool.open(), pool.open()
    frame = np.ones(3, dtype=np.float32)
    pool.step({a: frame, b: frame})
    before = {k: v.copy() for k, v in pool.state(b).items()}
    with pytest.raises(rnnstream.InputError, match=rf"stream {a}: input 'x'.*\[3\].*\[4\]"):
        pool.step({a: np.ones(4, dtype=np.float32), b: frame})
    with pytest.raises(rnnstream.InputError, match="NaN"):
        pool.step({b: np.full(3, np.nan, dtype=np.float32)})
    for k, v in pool.state(b).items():
        np.testing.assert_array_equal(v, before[k])
    pool.reset(a)
    assert all(not v.any() for v in pool.state(a).values())
    assert any(v.any() for v in pool.state(b).values())
    pool.close(a)
    with pytest.raises(rnnstream.InputError, match=f"stream {a} is not open"):
        pool.step({a: frame})
    alone = lstm_model.stream()
    alone.step(frame)
    assert_close(pool.step({b: frame})[b], alone.step(frame))


def test_pool_refuses_a_whole_sequence_model(tmp_path):
    path = tmp_path / "bi.onnx"
    export(torch.nn.GRU(2, 4, bidirectional=True), path, parity=ParitySettings(steps=20))
    with pytest.raises(rnnstream.SignatureError, match="not streamable"):
        rnnstream.load(path).pool()
