"""Step sessions: a stream's single steps run on a session of the same file with the step's
shapes pinned by dimension name (rnnstream.runtime.pinning). Real files, real onnxruntime: each
pinned stream is compared with the same file loaded with ``pin_steps=False`` (the general session)
or with a hand-written onnxruntime loop, over many steps."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

import rnnstream
from rnnstream.assets import CRNN_ONNX, DEMO_FP16_ONNX, DEMO_INT4_ONNX, DEMO_INT8_ONNX, DEMO_ONNX
from rnnstream.errors import InputError
from rnnstream.export import TOLERANCES, ParitySettings, export
from rnnstream.export.parity import measure_parity
from rnnstream.models import RecurrentNet, RecurrentNetConfig
from rnnstream.runtime.model import Model, session_options
from rnnstream.runtime.pinning import step_dims
from tests.runtime.third_party import (
    assert_steps_match,
    f32,
    ort_loop,
    outputs_by_name,
    save_graph,
    value_info,
)
from tests.tolerances import KERNELS, assert_close

F, H = 4, 6
_rng = np.random.default_rng(41)  # fixed weights (test data comes from per-test seeds)
_W = (0.4 * _rng.standard_normal((1, 3 * H, F))).astype(np.float32)
_R = (0.4 * _rng.standard_normal((1, 3 * H, H))).astype(np.float32)


def _assert_same(got: object, want: object, precision: str) -> None:
    """Pinned against general: the same operators on the same weights (folding shapes changes no
    arithmetic), so the same values up to kernel rounding (``KERNELS``), int8 and int4 included:
    their parity tolerance would hide a state mix-up. On x86 here every pair is bit-identical."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, precision
    assert_close(got.astype(np.float32), want.astype(np.float32), KERNELS)


def _pinned_graph_ops(path: Path, dims: dict[str, int], tmp_path: Path) -> list[str]:
    """The op types of the graph onnxruntime runs for ``path`` pinned to ``dims``."""
    optimized = tmp_path / "pinned.optimized.onnx"
    ort.InferenceSession(str(path), session_options(1, str(optimized), dims))
    return [node.op_type for node in onnx.load(optimized).graph.node]


# Shipped models ---------------------------------------------------------------------------------

DEMOS = {
    "float32": DEMO_ONNX,
    "float16": DEMO_FP16_ONNX,
    "int8": DEMO_INT8_ONNX,
    "int4": DEMO_INT4_ONNX,
}


@pytest.mark.parametrize("precision", list(DEMOS))
@pytest.mark.parametrize("batch", [None, 3])
def test_char_lm_steps_pinned_match_the_general_session(precision: str, batch: int | None) -> None:
    path = DEMOS[precision]
    model, general = rnnstream.load(path), rnnstream.load(path, pin_steps=False)
    rows = batch or 1
    assert step_dims(model.session.get_inputs(), model.signature, {}, rows) == {
        "batch": rows,
        "time": 1,
    }
    assert model.runner.step_session(rows) is not model.session
    assert general.runner.step_session(rows) is general.session
    vocab = model.signature.num_tokens
    tokens = np.random.default_rng(len(precision)).integers(0, vocab, (40, rows))
    pinned, unpinned = model.stream(batch), general.stream(batch)
    for t in tokens:
        ids = int(t[0]) if batch is None else t
        _assert_same(pinned.step(ids), unpinned.step(ids), precision)
    for name, value in unpinned.state.items():
        _assert_same(pinned.state[name], value, precision)


def test_crnn_with_a_conv_front_end_steps_pinned_like_the_general_session() -> None:
    model, general = rnnstream.load(CRNN_ONNX), rnnstream.load(CRNN_ONNX, pin_steps=False)
    assert model.runner.step_session(2) is not model.session
    frames = np.random.default_rng(5).standard_normal((30, 2, 1)).astype(np.float32)
    pinned, unpinned = model.stream(batch=2), general.stream(batch=2)
    for frame in frames:
        _assert_same(pinned.step(frame), unpinned.step(frame), "float32")
    # chunks still run on the general session, from the state the pinned steps left
    chunk = np.random.default_rng(6).standard_normal((2, 9, 1)).astype(np.float32)
    _assert_same(pinned.feed(chunk), unpinned.feed(chunk), "float32")


# Exported int8 step paths: the If folds away ---------------------------------------------------


def _net(cell: str, seed: int) -> RecurrentNet:
    torch.manual_seed(seed)
    config = RecurrentNetConfig(
        cell=cell, num_layers=2, input_size=5, hidden_size=24, output_size=3
    )
    return RecurrentNet(config).eval()


@pytest.fixture(scope="module")
def step_path_files(tmp_path_factory) -> dict[str, Path]:
    """int8 GRU and RNN exports with the step path, and another GRU (other weights)."""
    folder = tmp_path_factory.mktemp("step-path")
    files = {}
    for name, cell, seed in (("gru", "gru", 3), ("rnn_tanh", "rnn_tanh", 3), ("other", "gru", 4)):
        files[name] = folder / f"{name}.int8.onnx"
        export(_net(cell, seed), files[name], parity=ParitySettings(steps=20), precision="int8")
    return files


@pytest.mark.parametrize("cell", ["gru", "rnn_tanh"])
def test_int8_step_path_is_inlined_when_pinned_and_steps_match(cell, step_path_files, tmp_path):
    path = step_path_files[cell]
    assert "If" in [n.op_type for n in onnx.load(path).graph.node]
    for rows in (1, 3):
        ops = _pinned_graph_ops(path, {"batch": rows, "time": 1}, tmp_path)
        assert "If" not in ops and "Scan" not in ops and "GRU" not in ops, ops
    model, general = rnnstream.load(path), rnnstream.load(path, pin_steps=False)
    frames = np.random.default_rng(7).standard_normal((25, 3, 5)).astype(np.float32)
    for batch in (None, 3):
        pinned, unpinned = model.stream(batch), general.stream(batch)
        for frame in frames:
            x = frame[0] if batch is None else frame
            _assert_same(pinned.step(x), unpinned.step(x), "int8")


def test_streams_of_two_batch_sizes_share_one_session_per_size(step_path_files) -> None:
    path = step_path_files["gru"]
    model, general = rnnstream.load(path), rnnstream.load(path, pin_steps=False)
    ones = [model.stream(), model.stream(batch=1)]
    threes = [model.stream(batch=3), model.stream(batch=3)]
    sessions = model.runner.step_session
    assert sessions(1) is sessions(1) and sessions(3) is sessions(3)
    assert len({id(sessions(1)), id(sessions(3)), id(model.session)}) == 3
    refs = [general.stream(), general.stream(batch=1), general.stream(batch=3)]
    refs.append(general.stream(batch=3))
    rng = np.random.default_rng(8)
    for _ in range(12):  # interleaved: each stream keeps its own state on a shared session
        for stream, ref in zip(ones + threes, refs):
            x = rng.standard_normal((5,) if stream.batch is None else (stream.batch, 5))
            x = x.astype(np.float32)
            _assert_same(stream.step(x), ref.step(x), "int8")


def test_snapshots_state_and_reorder_carry_over_pinned_steps(step_path_files) -> None:
    """State set, restored and reordered between pinned steps and general chunks: the same
    outputs as a stream on the general session doing the same."""
    path = step_path_files["rnn_tanh"]
    model, general = rnnstream.load(path), rnnstream.load(path, pin_steps=False)
    rng = np.random.default_rng(9)
    frames = rng.standard_normal((12, 3, 5)).astype(np.float32)
    pinned, unpinned = model.stream(batch=3), general.stream(batch=3)
    for stream in (pinned, unpinned):
        for frame in frames[:4]:
            stream.step(frame)
    snapshot = pinned.state
    first = [pinned.step(frame) for frame in frames[4:8]]
    pinned.state = snapshot
    np.testing.assert_array_equal(np.stack(first), [pinned.step(f) for f in frames[4:8]])
    pinned.state = unpinned.state = snapshot
    for stream in (pinned, unpinned):
        stream.step(frames[4])  # a step on both, from the restored state
        stream.reorder([2, 0, 0])
        stream.feed(frames[8:10].transpose(1, 0, 2))  # a chunk, on the general session
    for frame in frames[10:]:
        _assert_same(pinned.step(frame), unpinned.step(frame), "int8")
    state = {name: rng.standard_normal(v.shape).astype(v.dtype) for name, v in snapshot.items()}
    pinned.state = unpinned.state = state
    _assert_same(pinned.step(frames[0]), unpinned.step(frames[0]), "int8")


def test_a_rejected_step_leaves_the_pinned_stream_as_it_was() -> None:
    path = DEMO_INT8_ONNX
    model, general = rnnstream.load(path), rnnstream.load(path, pin_steps=False)
    pinned, unpinned = model.stream(batch=2), general.stream(batch=2)
    for stream in (pinned, unpinned):
        stream.step([5, 6])
    before = pinned.state
    vocab = model.signature.num_tokens
    for bad in ([5], [5, vocab], [[5, 6]], [5.5, 6.0], "ab"):
        with pytest.raises(InputError):
            pinned.step(bad)
        for name, value in before.items():
            np.testing.assert_array_equal(pinned.state[name], value)
    np.testing.assert_array_equal(pinned.step([7, 8]), unpinned.step([7, 8]))


# Third-party files: dimensions named anything, or nothing ---------------------------------------


def _gru_file(path: Path, x_dims: list, h_dims: list) -> Path:
    """A GRU over ``x`` (``[batch, time, F]``, ``[batch, F]`` without a time axis), state ``h0``
    ``[1, batch, H]`` -> ``hn``, output ``y`` laid out as ``x``, dims as given."""
    timed = len(x_dims) == 3
    one, zero = np.array([1], np.int64), np.array([0], np.int64)
    if timed:
        into = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2])]
        out = [
            helper.make_node("Squeeze", ["y4", "one"], ["y3"]),
            helper.make_node("Transpose", ["y3"], ["y"], perm=[1, 0, 2]),
        ]
    else:
        into = [helper.make_node("Unsqueeze", ["x", "zero"], ["xt"])]
        out = [helper.make_node("Squeeze", ["y4", "both"], ["y"])]
    gru = helper.make_node("GRU", ["xt", "W", "R", "", "", "h0"], ["y4", "hn"], hidden_size=H)
    y_dims = [*x_dims[:-1], H]
    return save_graph(
        path,
        [*into, gru, *out],
        [value_info("x", f32, x_dims), value_info("h0", f32, h_dims)],
        [value_info("y", f32, y_dims), value_info("hn", f32, h_dims)],
        {"W": _W, "R": _R, "one": one, "zero": zero, "both": np.array([0, 1], np.int64)},
    )


NAMED = {  # x dims, h0 dims, the pinned dims for 1 and 3 rows (None: the general session)
    "N-seq": (["N", "seq", F], [1, "N", H], {"N": 1, "seq": 1}, {"N": 3, "seq": 1}),
    "batch_size-seq_len": (
        ["batch_size", "seq_len", F],
        [1, "batch_size", H],
        {"batch_size": 1, "seq_len": 1},
        {"batch_size": 3, "seq_len": 1},
    ),
    "dynamo-s0-s1": (["s0", "s1", F], [1, "s0", H], {"s0": 1, "s1": 1}, {"s0": 3, "s1": 1}),
    "unnamed": ([None, None, F], [1, None, H], None, None),
    "time-unnamed": (["N", None, F], [1, "N", H], None, None),
    "one-name-two-axes": (["s0", "s0", F], [1, "s0", H], {"s0": 1}, None),
    "time-fixed-1": (["N", 1, F], [1, "N", H], {"N": 1}, {"N": 3}),
    "no-time-axis": (["B", F], [1, "B", H], {"B": 1}, {"B": 3}),
    "frame-shares-batch-name": (["N", "T", "N"], [1, "N", H], None, None),
}


@pytest.mark.parametrize("case", list(NAMED))
def test_third_party_dims_are_pinned_by_their_own_names_or_not_at_all(case, tmp_path) -> None:
    x_dims, h_dims, *expected = NAMED[case]
    path = _gru_file(tmp_path / f"{case}.onnx", x_dims, h_dims)
    model = rnnstream.load(path)
    frame_shape = (F,)
    rng = np.random.default_rng(len(case))
    for rows, dims in zip((1, 3), expected):
        assert step_dims(model.session.get_inputs(), model.signature, {}, rows) == dims
        stream = model.stream(batch=rows)
        assert (model.runner.step_session(rows) is model.session) == (dims is None)
        frames = rng.standard_normal((8, rows, *frame_shape)).astype(np.float32)
        got = [outputs_by_name(stream.step(f), ["y", "hn"]) for f in frames]
        timed = len(x_dims) == 3
        feeds = [{"x": f[:, None] if timed else f} for f in frames]
        zero = {"h0": np.zeros((1, rows, H), np.float32)}
        want = ort_loop(path, feeds, zero, {"h0": "hn"})
        assert_steps_match(got, [{"y": w["y"]} for w in want])


def test_a_pinning_onnxruntime_refuses_leaves_steps_on_the_general_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A graph that cannot take one frame (a Reshape to 3 frames): pinned, onnxruntime refuses
    to load it; the stream is still made, chunks run, a step fails as it always did."""
    nodes = [
        helper.make_node("Reshape", ["x", "three"], ["x3"]),
        helper.make_node("Transpose", ["x3"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("GRU", ["xt", "W", "R", "", "", "h0"], ["y4", "hn"], hidden_size=H),
        helper.make_node("Squeeze", ["y4", "one"], ["y3"]),
        helper.make_node("Transpose", ["y3"], ["y"], perm=[1, 0, 2]),
    ]
    path = save_graph(
        tmp_path / "three.onnx",
        nodes,
        [value_info("x", f32, ["batch", "time", F]), value_info("h0", f32, [1, "batch", H])],
        [value_info("y", f32, ["batch", "time", H]), value_info("hn", f32, [1, "batch", H])],
        {"W": _W, "R": _R, "one": np.array([1], np.int64), "three": np.array([-1, 3, F])},
    )
    model = rnnstream.load(path, axes={"batch": 0, "time": 1})
    with caplog.at_level(logging.WARNING, logger="rnnstream.runtime.runner"):
        stream = model.stream()
    assert model.runner.step_session(1) is model.session
    assert "steps run unpinned" in caplog.text and "Reshape" in caplog.text
    x = np.random.default_rng(10).standard_normal((3, F)).astype(np.float32)
    assert stream.feed(x).shape == (3, H)
    with pytest.raises(InputError, match="onnxruntime rejected the run"):
        stream.step(x[0])


def test_a_file_changed_since_load_is_not_loaded_again(tmp_path, caplog) -> None:
    """The step session must be the same model: a file rewritten after load is refused (steps
    stay on the general session, which holds the file as it was loaded)."""
    path = _gru_file(tmp_path / "m.onnx", ["N", "seq", F], [1, "N", H])
    model = rnnstream.load(path)
    general = rnnstream.load(path, pin_steps=False)
    _gru_file(path, ["N", "seq", F], [1, "N", H])  # the same bytes, written again
    os.utime(path, ns=(0, 0))
    with caplog.at_level(logging.WARNING, logger="rnnstream.runtime.runner"):
        stream = model.stream()
    assert "changed since it was loaded" in caplog.text
    assert model.runner.step_session(1) is model.session
    x = np.random.default_rng(11).standard_normal(F).astype(np.float32)
    np.testing.assert_array_equal(stream.step(x), general.stream().step(x))


def test_a_model_loaded_from_bytes_pins_its_steps_too() -> None:
    data = DEMO_INT8_ONNX.read_bytes()
    model, general = rnnstream.load(data), rnnstream.load(data, pin_steps=False)
    assert model.runner.step_session(1) is not model.session
    pinned, unpinned = model.stream(), general.stream()
    for token in np.random.default_rng(12).integers(0, model.signature.num_tokens, 20):
        _assert_same(pinned.step(int(token)), unpinned.step(int(token)), "int8")


# Parity measures what users run ----------------------------------------------------------------


def test_parity_step_mode_runs_on_the_step_session(step_path_files) -> None:
    """Give the model the step session of *another* model's file (same shapes, other weights):
    the parity record's step mode fails and its chunk mode does not, so step parity is measured
    on the step session."""
    good = rnnstream.load(step_path_files["gru"])
    opened = []

    def open_other(dims):
        opened.append(dict(dims))
        options = session_options(1, pinned=dims)
        return ort.InferenceSession(str(step_path_files["other"]), options)

    model = Model(good.session, good.signature, good.name, good.constants, open_other)
    net = _net("gru", 3)
    x = torch.randn(2, 12, 5, generator=torch.Generator().manual_seed(13))
    tol = TOLERANCES["int8"]
    record = measure_parity(net, model, x, 4, tol.atol, tol.rtol)
    assert opened == [{"batch": 2, "time": 1}]
    assert all(e.within(tol.atol, tol.rtol) for e in record.errors["chunk"].values())
    assert not all(e.within(tol.atol, tol.rtol) for e in record.errors["step"].values())
    assert measure_parity(net, good, x, 4, tol.atol, tol.rtol).passed


@pytest.mark.parametrize("lens_dims", [["N"], ["batch_size"], []], ids=["N", "own-name", "scalar"])
def test_frame_counts_are_pinned_with_the_batch(lens_dims: list, tmp_path: Path) -> None:
    """A frame-count input (``x_lens``, filled by the runtime) is fed in a step too: its dim is
    pinned to the rows (whatever it is named), and its count output comes back per step."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("GRU", ["xt", "W", "R", "", "", "h"], ["y4", "next_h"], hidden_size=H),
        helper.make_node("Squeeze", ["y4", "one"], ["y3"]),
        helper.make_node("Transpose", ["y3"], ["encoder_out"], perm=[1, 0, 2]),
        helper.make_node("Identity", ["x_lens"], ["encoder_out_lens"]),
    ]
    i64 = onnx.TensorProto.INT64
    path = save_graph(
        tmp_path / "lens.onnx",
        nodes,
        [
            value_info("x", f32, ["N", "T", F]),
            value_info("x_lens", i64, lens_dims),
            value_info("h", f32, [1, "N", H]),
        ],
        [
            value_info("encoder_out", f32, ["N", "T", H]),
            value_info("encoder_out_lens", i64, lens_dims),
            value_info("next_h", f32, [1, "N", H]),
        ],
        {"W": _W, "R": _R, "one": np.array([1], np.int64)},
    )
    model = rnnstream.load(path)
    assert [s.name for s in model.signature.lengths] == ["x_lens"]
    for rows in (1, 3):
        dims = step_dims(model.session.get_inputs(), model.signature, {}, rows)
        assert dims == {
            "N": rows,
            "T": 1,
            **({"batch_size": rows} if "batch_size" in lens_dims else {}),
        }
        stream = model.stream(batch=rows)
        assert model.runner.step_session(rows) is not model.session
        frames = np.random.default_rng(rows).standard_normal((6, rows, F)).astype(np.float32)
        names = ["encoder_out", "encoder_out_lens"]
        got = [outputs_by_name(stream.step(f), names) for f in frames]
        counts = np.ones([rows] if lens_dims else [], np.int64)
        feeds = [{"x": f[:, None], "x_lens": counts} for f in frames]
        zero = {"h": np.zeros((1, rows, H), np.float32)}
        want = ort_loop(path, feeds, zero, {"h": "next_h"})
        for g, w in zip(got, want):
            assert_close(g["encoder_out"].reshape(-1), w["encoder_out"].reshape(-1), KERNELS)
            np.testing.assert_array_equal(g["encoder_out_lens"].reshape(-1), counts.reshape(-1))


def test_a_model_that_takes_at_least_three_frames_is_not_pinned_to_one(tmp_path, caplog) -> None:
    """A Conv of kernel 3 without padding before the GRU: the model refuses fewer than 3 frames
    (found at load), so streams take chunks only and no step session is tried."""
    kernel = (0.4 * np.random.default_rng(14).standard_normal((F, F, 3))).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["xc"], perm=[0, 2, 1]),
        helper.make_node("Conv", ["xc", "K"], ["yc"]),
        helper.make_node("Transpose", ["yc"], ["yt"], perm=[2, 0, 1]),
        helper.make_node("GRU", ["yt", "W", "R", "", "", "h0"], ["y4", "hn"], hidden_size=H),
        helper.make_node("Squeeze", ["y4", "one"], ["y3"]),
        helper.make_node("Transpose", ["y3"], ["y"], perm=[1, 0, 2]),
    ]
    path = save_graph(
        tmp_path / "conv3.onnx",
        nodes,
        [value_info("x", f32, ["N", "T", F]), value_info("h0", f32, [1, "N", H])],
        [value_info("y", f32, ["N", "T2", H]), value_info("hn", f32, [1, "N", H])],
        {"W": _W, "R": _R, "K": kernel, "one": np.array([1], np.int64)},
    )
    model = rnnstream.load(path)
    assert model.signature.source["axes"]["time"]["least"] == 3
    with caplog.at_level(logging.WARNING, logger="rnnstream.runtime.runner"):
        stream = model.stream()
    warned = [r for r in caplog.records if r.name == "rnnstream.runtime.runner"]
    assert model.runner.step_session(1) is model.session and not warned
    chunk = np.random.default_rng(15).standard_normal((5, F)).astype(np.float32)
    assert stream.feed(chunk).shape == (3, H)
    with pytest.raises(InputError, match="at least 3"):
        stream.step(chunk[0])


def test_the_optimized_cache_keeps_the_general_graph(step_path_files, tmp_path) -> None:
    """``optimized_cache`` is the general session's: making a step session does not overwrite it
    with the pinned graph (which would fail any chunk of a later load of the cache)."""
    cache = tmp_path / "gru.optimized.onnx"
    model = rnnstream.load(step_path_files["gru"], optimized_cache=cache)
    written = cache.read_bytes()
    stream = model.stream(batch=2)
    assert model.runner.step_session(2) is not model.session
    assert cache.read_bytes() == written
    assert "If" in [n.op_type for n in onnx.load(cache).graph.node]
    frames = np.random.default_rng(16).standard_normal((2, 6, 5)).astype(np.float32)
    cached = rnnstream.load(cache).stream(batch=2)
    _assert_same(cached.feed(frames), stream.feed(frames), "int8")
    _assert_same(cached.step(frames[:, 0]), stream.step(frames[:, 0]), "int8")
