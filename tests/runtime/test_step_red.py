"""Red-team cases for step sessions and the short step path, each checked against a plain
onnxruntime ``session.run`` loop or a twin stream on the general session (``pin_steps=False``):

- a model whose output drops a size-1 axis at one time step (``y.squeeze()`` in a forward): its
  pinned steps are the loop's, its general-session steps are refused by the output's name, and
  so are both of a ``torch.onnx.export`` of one (whose output keeps the traced ``[2, 3, H]``);
- frames as projects hold them: strided, Fortran-ordered, read-only, memmapped, masked, 0-d and
  numpy-scalar ids of every integer dtype, float64 frames into a float16 model (overflow refused);
- two streams of one model stepped in two threads; a stream kept after its model is collected;
  states set from strided views and reordered (uint8 indices, a tuple) between pinned steps;
- streams of many batch sizes: at most ``MAX_STEP_SESSIONS`` pinned sessions, the rest unpinned,
  all stepping the same values.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

import rnnstream
from rnnstream.assets import DEMO_INT8_ONNX, DEMO_ONNX
from rnnstream.errors import InputError
from rnnstream.runtime.runner import MAX_STEP_SESSIONS
from tests.runtime.third_party import f32, ort_loop, save_graph, value_info
from tests.tolerances import KERNELS, assert_close

F, H = 4, 6
_rng = np.random.default_rng(43)  # fixed weights (test data comes from per-test seeds)
_W = (0.4 * _rng.standard_normal((1, 3 * H, F))).astype(np.float32)
_R = (0.4 * _rng.standard_normal((1, 3 * H, H))).astype(np.float32)


def _gru(path: Path, out_nodes: list, x_type: int = f32) -> Path:
    """A batch-first GRU ``x [batch, time, F]``, ``h0 [1, batch, H] -> hn``, whose ``y`` is
    made by ``out_nodes`` from ``yb`` (``[batch, time, H]``)."""
    cast = x_type != f32
    nodes = [
        *([helper.make_node("Cast", ["x"], ["xf"], to=f32)] if cast else []),
        helper.make_node("Transpose", ["xf" if cast else "x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("GRU", ["xt", "W", "R", "", "", "h0"], ["y4", "hn"], hidden_size=H),
        helper.make_node("Squeeze", ["y4", "one"], ["y3"]),
        helper.make_node("Transpose", ["y3"], ["yb"], perm=[1, 0, 2]),
        *out_nodes,
    ]
    return save_graph(
        path,
        nodes,
        [value_info("x", x_type, ["batch", "time", F]), value_info("h0", f32, [1, "batch", H])],
        [value_info("y", f32, ["batch", "time", H]), value_info("hn", f32, [1, "batch", H])],
        {"W": _W, "R": _R, "one": np.array([1], np.int64)},
    )


def _loop(path: Path, frames: np.ndarray) -> list[np.ndarray]:
    """The plain loop's ``y`` for ``frames`` ``[steps, rows, F]``, one run per step."""
    rows = frames.shape[1]
    zero = {"h0": np.zeros((1, rows, H), np.float32)}
    return [w["y"] for w in ort_loop(path, [{"x": f[:, None]} for f in frames], zero, {"h0": "hn"})]


# A size-1 axis squeezed away at one step -------------------------------------------------------


@pytest.mark.parametrize("batch", [None, 1, 3])
def test_an_output_squeezed_at_one_step_is_handed_back_in_the_signatures_layout(tmp_path, batch):
    squeeze_all = [helper.make_node("Squeeze", ["yb"], ["y"])]  # torch's y.squeeze()
    path = _gru(tmp_path / "squeeze.onnx", squeeze_all)
    rows = batch or 1
    frames = np.random.default_rng(rows).standard_normal((6, rows, F)).astype(np.float32)
    want = _loop(path, frames)  # [rows, H], or [H] for one row: batch and time squeezed
    stream = rnnstream.load(path).stream(batch=batch)
    for frame, w in zip(frames, want):
        got = stream.step(frame[0] if batch is None else frame)
        assert got.shape == ((H,) if batch is None else (rows, H))
        assert_close(got.reshape(-1), w.reshape(-1), KERNELS)
    chunk = rnnstream.load(path).stream(batch=batch)
    fed_frames = frames[:, 0] if batch is None else frames.transpose(1, 0, 2)
    if rows > 1:  # a chunk keeps its time axis, and the batch
        assert_close(chunk.feed(fed_frames).reshape(-1), np.stack(want, 1).reshape(-1), KERNELS)
    else:  # one row squeezed away from a chunk: refused, never read along the wrong axis
        with pytest.raises(InputError, match=r"output 'y': the model gave shape \[6, 6\]"):
            chunk.feed(fed_frames)

    unpinned = rnnstream.load(path, pin_steps=False).stream(batch=batch)
    for _ in range(2):  # refused, and the state stays the zero state
        refused = r"squeeze\.onnx: output 'y': the model gave shape \[.*squeeze"
        with pytest.raises(InputError, match=refused):
            unpinned.step(frames[0, 0] if batch is None else frames[0])
        assert not any(value.any() for value in unpinned.state.values())
    pool = rnnstream.load(path).pool()  # a pool ticks on the general session: refused too
    ids = [pool.open() for _ in range(rows)]
    with pytest.raises(InputError, match=r"output 'y': the model gave shape"):
        pool.step(dict(zip(ids, frames[0])))
    assert not any(value.any() for i in ids for value in pool.state(i).values())


class _SqueezedGRU(nn.Module):
    """``y.squeeze()`` after a batch-first GRU: traced at batch 2, time 3, the export keeps a
    ``[2, 3, H]`` output that one step gives as ``[rows, H]`` (``[H]`` for one row)."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(F, H, batch_first=True)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, h = self.gru(x, h)
        return y.squeeze(), h


@pytest.mark.parametrize("pin_steps", [True, False])
def test_a_torch_squeeze_export_is_refused_by_name_not_read_along_the_wrong_axis(
    tmp_path, pin_steps
) -> None:
    torch.manual_seed(0)
    path = tmp_path / "squeezed.onnx"
    torch.onnx.export(
        _SqueezedGRU(),
        (torch.randn(2, 3, F), torch.zeros(1, 2, H)),
        path,
        input_names=["x", "h"],
        output_names=["y", "h_out"],
        dynamic_axes={"x": {0: "batch", 1: "time"}, "h": {1: "batch"}, "h_out": {1: "batch"}},
        dynamo=False,
    )
    model = rnnstream.load(path, pin_steps=pin_steps)
    frames = np.random.default_rng(3).standard_normal((3, F)).astype(np.float32)
    for batch, frame in ((None, frames[0]), (3, frames)):
        refused = r"squeezed\.onnx: output 'y': the model gave shape \[(3, )?6\]"
        with pytest.raises(InputError, match=refused):
            model.stream(batch=batch).step(frame)


# Frames as projects hold them ------------------------------------------------------------------


def _token_frames(rows: int) -> dict[str, object]:
    base = np.arange(2 * rows).reshape(rows, 2)  # column 0: a strided view
    read_only = np.arange(rows, dtype=np.int64)
    read_only.flags.writeable = False
    return {
        "strided": base[:, 0],
        "reversed": np.arange(rows)[::-1],
        "read-only": read_only,
        "masked": np.ma.masked_array(np.arange(rows), mask=False),
        "uint8": np.arange(rows, dtype=np.uint8),
        "int8": np.arange(rows, dtype=np.int8),
        "uint32": np.arange(rows, dtype=np.uint32),
    }


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("batch", [None, 3])
def test_token_ids_held_any_way_step_as_int64_lists(batch, tmp_path) -> None:
    pinned = rnnstream.load(DEMO_ONNX)
    general = rnnstream.load(DEMO_ONNX, pin_steps=False)
    vocab = pinned.signature.num_tokens
    rows = batch or 1
    a, b = pinned.stream(batch=batch), general.stream(batch=batch)
    memmap = np.memmap(tmp_path / "ids", dtype=np.int32, mode="w+", shape=(rows,))
    memmap[:] = vocab - 1  # the range's last id
    frames = {**_token_frames(rows), "memmap": memmap, "last id": np.full(rows, vocab - 1)}
    for name, ids in frames.items():
        x = ids[0] if batch is None else ids  # a 0-d element or numpy scalar when single
        plain = np.asarray(ids).astype(np.int64).tolist()
        got, want = a.step(x), b.step(plain[0] if batch is None else plain)
        np.testing.assert_array_equal(got, want, err_msg=name)
    before = a.state
    for bad in (np.uint64(2**63), np.full(rows, vocab, np.uint16), np.matrix(np.zeros(rows, int))):
        if batch is None and isinstance(bad, np.matrix):
            continue
        with pytest.raises(InputError, match="input 'x'"):
            a.step(bad if batch is not None or np.ndim(bad) == 0 else bad[0])
    for name, value in before.items():
        np.testing.assert_array_equal(a.state[name], value)


@pytest.mark.parametrize("batch", [None, 3])
def test_float64_frames_into_a_float16_model(tmp_path, batch) -> None:
    path = _gru(
        tmp_path / "half.onnx", [helper.make_node("Identity", ["yb"], ["y"])], TensorProto.FLOAT16
    )
    rows = batch or 1
    frames = np.random.default_rng(5).standard_normal((5, rows, F))
    want = _loop(path, frames.astype(np.float16))
    stream = rnnstream.load(path).stream(batch=batch)
    for t, (frame, w) in enumerate(zip(frames, want)):
        if t % 2:  # Fortran order and a transposed view: the same values
            frame = np.asfortranarray(frame) if t == 1 else np.ascontiguousarray(frame.T).T
        assert_close(
            np.asarray(stream.step(frame[0] if batch is None else frame)),
            w[:, 0].reshape(-1 if batch is None else (rows, H)),
            KERNELS,
        )
    before = stream.state
    beyond = np.full((rows, F), 1e6)  # finite in float64, infinite in float16
    with pytest.raises(InputError, match="values beyond float16's range"):
        stream.step(beyond[0] if batch is None else beyond)
    for name, value in before.items():
        np.testing.assert_array_equal(stream.state[name], value)


# Threads, lifetimes, many sizes ----------------------------------------------------------------


def test_two_streams_of_one_model_in_two_threads_step_as_one_alone() -> None:
    model = rnnstream.load(DEMO_ONNX)
    vocab = model.signature.num_tokens
    ids = np.random.default_rng(7).integers(0, vocab, 200)
    alone = rnnstream.load(DEMO_ONNX, pin_steps=False).stream()
    want = [alone.step(i) for i in ids]
    results: dict[int, list[np.ndarray]] = {}

    def run(k: int) -> None:
        stream = model.stream()
        results[k] = [stream.step(i) for i in ids]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in range(2):
        for got, w in zip(results[k], want):
            np.testing.assert_array_equal(got, w)


def test_a_stream_outlives_its_collected_model() -> None:
    model = rnnstream.load(DEMO_ONNX)
    stream = model.stream(batch=2)
    twin = rnnstream.load(DEMO_ONNX, pin_steps=False).stream(batch=2)
    del model
    gc.collect()
    for ids in ([1, 2], [3, 4], [5, 6]):
        np.testing.assert_array_equal(stream.step(ids), twin.step(ids))


def test_streams_of_many_sizes_pin_a_bounded_number_of_sessions() -> None:
    model = rnnstream.load(DEMO_ONNX)
    general = rnnstream.load(DEMO_ONNX, pin_steps=False)
    sizes = range(1, MAX_STEP_SESSIONS + 5)
    streams = {rows: model.stream(batch=rows) for rows in sizes}
    pinned = [rows for rows in sizes if model.runner.step_session(rows) is not model.session]
    assert pinned == list(range(1, MAX_STEP_SESSIONS + 1))
    rng = np.random.default_rng(11)
    twins = {rows: general.stream(batch=rows) for rows in sizes}
    for _ in range(3):  # interleaved, one step of every size in turn
        for rows in sizes:
            ids = rng.integers(0, model.signature.num_tokens, rows)
            np.testing.assert_array_equal(streams[rows].step(ids), twins[rows].step(ids))


def test_states_set_from_strided_views_and_reordered_between_pinned_steps() -> None:
    pinned = rnnstream.load(DEMO_INT8_ONNX).stream(batch=3)
    general = rnnstream.load(DEMO_INT8_ONNX, pin_steps=False).stream(batch=3)
    for t in range(3):
        pinned.step([t, t + 1, t + 2])
        general.step([t, t + 1, t + 2])
    state = general.state
    # every other element of a doubled array: the same values, no contiguous memory
    pinned.state = {name: np.stack([v, v], axis=-1)[..., 0] for name, v in state.items()}
    general.state = state
    pinned.reorder((2, 0, 0))
    general.reorder(np.array([2, 0, 0], np.uint8))
    for ids in ([4, 5, 6], [7, 8, 9]):
        np.testing.assert_array_equal(pinned.step(ids), general.step(ids))
