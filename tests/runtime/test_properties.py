"""Property-based: whatever is thrown at a stream or a pool, a failure is an RnnStreamError and the
state is bit-identical afterwards (hypothesis draws the shapes, dtypes and values)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import rnnstream
from rnnstream.errors import RnnStreamError
from rnnstream.export import ParitySettings, export
from tests.runtime.graphs import save_token_rnn

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.int8, np.uint64, np.uint8]
DTYPES += [np.bool_, np.complex64]


@pytest.fixture(scope="module")
def gru(tmp_path_factory) -> rnnstream.Model:
    """A tiny exported batch-first GRU (4 features, 3 hidden)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("props") / "gru.onnx"
    export(torch.nn.GRU(4, 3, batch_first=True), path, parity=ParitySettings(steps=20))
    return rnnstream.load(path)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> rnnstream.Model:
    return rnnstream.load(save_token_rnn(tmp_path_factory.mktemp("props") / "tokens.onnx"))


@pytest.fixture(scope="module", params=["gru", "tokens"])
def model(request) -> rnnstream.Model:
    return request.getfixturevalue(request.param)


def frame_shape(model: rnnstream.Model) -> tuple[int, ...]:
    spec = model.signature.input
    axes = (spec.batch_axis, spec.time_axis)
    return tuple(d for axis, d in enumerate(spec.shape) if axis not in axes)


def anything(valid_shape: tuple[int, ...], valid_dtype: np.dtype) -> st.SearchStrategy:
    """Arrays of the right or a random shape and dtype, with any values; or no array at all."""
    shapes = st.one_of(st.just(valid_shape), hnp.array_shapes(min_dims=0, max_dims=4, max_side=4))
    dtypes = st.one_of(st.just(valid_dtype), st.sampled_from(DTYPES))
    arrays = hnp.arrays(dtypes, shapes)
    small_ids = hnp.arrays(np.int64, st.just(valid_shape), elements=st.integers(-2, 10))
    others = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=3),
        st.recursive(
            st.floats() | st.integers(), lambda xs: st.lists(xs, max_size=3), max_leaves=6
        ),
    )
    return st.one_of(arrays, small_ids, others)


def stepped_stream(model: rnnstream.Model, batch: int | None) -> rnnstream.Stream:
    stream = model.stream(batch)
    rows = () if batch is None else (batch,)
    if model.signature.num_tokens:
        stream.step(np.full(rows, 2, dtype=np.int64))
    else:
        stream.step(np.full((*rows, *frame_shape(model)), 0.5, dtype=np.float32))
    return stream


def bits(state: dict[str, np.ndarray]) -> dict[str, bytes]:
    return {name: array.tobytes() for name, array in state.items()}


@pytest.mark.parametrize("batch", [None, 2])
def test_step_and_feed_fail_cleanly_or_work(model, batch):
    dtype = np.dtype(model.signature.input.dtype)
    lead = () if batch is None else (batch,)

    @SETTINGS
    @given(x=anything((*lead, *frame_shape(model)), dtype), chunk=st.booleans())
    def check(x, chunk):
        stream = stepped_stream(model, batch)
        before = bits(stream.state)
        try:
            (stream.feed if chunk else stream.step)(x)
        except RnnStreamError:
            assert bits(stream.state) == before
        else:
            assert bits(stream.state) != before or not np.size(x)

    check()


def test_state_setter_fails_cleanly_or_sets_exactly(model):
    zero = model.stream().state

    def values(name: str, array: np.ndarray) -> st.SearchStrategy:
        return anything(array.shape, array.dtype)

    @SETTINGS
    @given(
        value=st.one_of(
            st.fixed_dictionaries({n: values(n, a) for n, a in zero.items()}),
            st.dictionaries(st.text(max_size=4), st.none(), max_size=2),
            st.none(),
            st.lists(st.integers(), max_size=2),
        )
    )
    def check(value):
        stream = stepped_stream(model, None)
        before = bits(stream.state)
        try:
            stream.state = value
        except RnnStreamError:
            assert bits(stream.state) == before
        else:
            assert bits(stream.state) == bits({n: np.asarray(v) for n, v in value.items()})

    check()


def test_pool_step_fails_cleanly_or_works(model):
    dtype = np.dtype(model.signature.input.dtype)
    pool = model.pool()
    ids = [pool.open() for _ in range(3)]

    @SETTINGS
    @given(
        inputs=st.dictionaries(
            st.sampled_from([*ids, 99, -1, "a"]),
            anything(frame_shape(model), dtype),
            max_size=4,
        )
    )
    def check(inputs):
        before = {i: bits(pool.state(i)) for i in ids}
        try:
            out = pool.step(inputs)
        except RnnStreamError:
            assert {i: bits(pool.state(i)) for i in ids} == before
        else:
            assert set(out) == set(inputs)
            for i in ids:
                assert (bits(pool.state(i)) == before[i]) == (i not in inputs)

    check()
