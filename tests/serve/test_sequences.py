"""PooledSequences: the Triton python model's logic (START/END/idle/errors) without a server."""

from __future__ import annotations

import numpy as np
import pytest

import rnnstream
from rnnstream.serve import PooledSequences, StepRequest
from tests.tolerances import assert_close


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gru(gru_path) -> rnnstream.Model:
    return rnnstream.load(gru_path)


def step(sid: int, frame: np.ndarray, start: bool = False, end: bool = False) -> StepRequest:
    return StepRequest(sid, start, end, frame[None])


def test_interleaved_sequences_equal_solo_streams(gru):
    """Sequences start and end at different calls, a call steps several of them at once."""
    rng = np.random.default_rng(21)
    n = 40
    lengths = rng.integers(1, 15, n)
    starts = rng.integers(0, 20, n)
    inputs = [rng.standard_normal((k, 5)).astype(np.float32) for k in lengths]
    ids = np.unique(rng.integers(0, 2**63 - 1, n, dtype=np.uint64))  # any uint64 id
    assert len(ids) == n
    sequences = PooledSequences(gru, idle_seconds=60)
    got: list[list[np.ndarray]] = [[] for _ in range(n)]
    position = [0] * n
    call, biggest = 0, 0
    while any(p < k for p, k in zip(position, lengths)):
        due = [s for s in range(n) if starts[s] <= call and position[s] < lengths[s]]
        due = [s for s in due if rng.random() < 0.7]  # some open sequences skip this call
        rng.shuffle(due)
        requests = [
            step(
                int(ids[s]), inputs[s][position[s]], position[s] == 0, position[s] == lengths[s] - 1
            )
            for s in due
        ]
        for s, result in zip(due, sequences.execute(requests)):
            assert set(result) == {"y"} and result["y"].shape == (1, 12)
            got[s].append(result["y"][0])
            position[s] += 1
        biggest = max(biggest, len(due))
        call += 1
    assert len(sequences) == 0 and len(sequences.pool) == 0  # every END closed its stream
    assert biggest > 5
    for s in range(n):
        assert_close(np.stack(got[s]), gru.stream().feed(inputs[s]))


def test_bad_requests_get_errors_and_change_no_other_sequence(gru):
    rng = np.random.default_rng(22)
    frames = rng.standard_normal((3, 5)).astype(np.float32)
    sequences = PooledSequences(gru, idle_seconds=60)
    sequences.execute([step(1, frames[0], start=True), step(2, frames[0], start=True)])
    nan = np.full(5, np.nan, np.float32)
    results = sequences.execute(
        [
            step(1, nan),
            step(2, frames[1]),
            step(3, frames[1]),  # never started
            StepRequest(1, False, False, frames[:2]),  # two steps in one request
            step(1, np.ones(4, np.float32)),
        ]
    )
    assert isinstance(results[0], rnnstream.InputError) and "sequence 1" in str(results[0])
    assert "NaN" in str(results[0])
    assert isinstance(results[2], rnnstream.InputError)
    assert "sequence 3 is not open" in str(results[2]) and "START" in str(results[2])
    assert "shaped [1, ...]; got [2, 5]" in str(results[3])
    assert "expected shape [5], got [4]" in str(results[4])
    # Sequence 2 stepped as if alone; sequence 1 is still at its first step's state.
    solo = gru.stream()
    solo.step(frames[0])
    assert_close(results[1]["y"][0], solo.step(frames[1]))
    one = gru.stream()
    one.step(frames[0])
    assert_close(sequences.execute([step(1, frames[2])])[0]["y"][0], one.step(frames[2]))


def test_start_restarts_and_end_closes(gru):
    rng = np.random.default_rng(23)
    frames = rng.standard_normal((3, 5)).astype(np.float32)
    sequences = PooledSequences(gru, idle_seconds=60)
    sequences.execute([step(9, frames[0], start=True), step(9, frames[1])])  # in order
    restarted = sequences.execute([step(9, frames[2], start=True)])[0]["y"][0]
    assert_close(restarted, gru.stream().step(frames[2]))
    sequences.execute([step(9, frames[0], end=True)])
    assert 9 not in sequences and len(sequences.pool) == 0
    assert isinstance(sequences.execute([step(9, frames[0])])[0], rnnstream.InputError)


def test_idle_sequences_are_released(gru):
    clock = Clock()
    frame = np.ones(5, np.float32)
    sequences = PooledSequences(gru, idle_seconds=2.0, clock=clock)
    sequences.execute([step(1, frame, start=True), step(2, frame, start=True)])
    clock.now = 1.5
    sequences.execute([step(2, frame)])
    clock.now = 3.0  # sequence 1 idle for 3 s, sequence 2 for 1.5 s
    results = sequences.execute([step(1, frame), step(2, frame)])
    assert 1 not in sequences and 2 in sequences and len(sequences.pool) == 1
    assert "sequence 1 is not open" in str(results[0]) and "idle for 2 s" in str(results[0])
    assert results[1]["y"].shape == (1, 12)
