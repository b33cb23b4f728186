"""A pool tick whose frames stack into one array: a boolean frame among numbers is refused
(np.stack would cast it silently), numbers of other dtypes are not."""

from __future__ import annotations

import numpy as np
import pytest

import rnnstream
from rnnstream.errors import InputError
from tests.runtime import third_party as tp
from tests.tolerances import KERNELS, assert_close


@pytest.fixture
def gru(tmp_path) -> rnnstream.Model:
    return rnnstream.load(tp.torch_gru(tmp_path / "gru.onnx"))


def _frames(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, tp.F).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize(
    "boolean",
    [np.ones(tp.F, bool), [True] * tp.F, np.array([False] * tp.F, np.bool_)],
    ids=["array", "list", "numpy-bools"],
)
@pytest.mark.parametrize("where", [0, 2, 4])
def test_one_boolean_frame_among_floats_is_refused_by_stream(gru, boolean, where):
    pool = gru.pool()
    ids = [pool.open() for _ in range(5)]
    pool.step(dict(zip(ids, _frames(1, 5))))
    before = {i: pool.state(i) for i in ids}
    frames = dict(zip(ids, _frames(2, 5)))
    frames[ids[where]] = boolean
    with pytest.raises(InputError, match=rf"stream {ids[where]}: .*expected float32, got bool"):
        pool.step(frames)
    for i in ids:
        np.testing.assert_array_equal(pool.state(i)["hidden_in"], before[i]["hidden_in"])


def test_a_boolean_token_among_ids_is_refused(tmp_path):
    pool = rnnstream.load(tp.token_gru(tmp_path / "tokens.onnx")).pool()
    a, b, c = pool.open(), pool.open(), pool.open()
    with pytest.raises(InputError, match=rf"stream {b}: .*expected int64, got bool"):
        pool.step({a: np.int64(3), b: True, c: 4})


def test_integer_and_float64_frames_still_stack_with_float32_ones(gru):
    frames = _frames(3, 3)
    mixed = [frames[0], frames[1].astype(np.float64), np.round(frames[2] * 4).astype(np.int32)]
    pool = gru.pool()
    ids = [pool.open() for _ in range(3)]
    out = pool.step(dict(zip(ids, mixed)))
    for i, frame in zip(ids, mixed):
        assert_close(out[i], gru.stream().step(frame.astype(np.float32)), KERNELS)
