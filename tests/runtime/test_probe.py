"""Batch, time and frame axes of models rnnstream did not write, decided by probing at load.

Each graph is built by hand with onnx.helper and streamed against a hand-written onnxruntime loop
(the session run directly, state carried by the test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import rnnstream
from tests.runtime.graphs import save_token_rnn
from tests.runtime.test_discover import accumulator, reference, rnn_time_major
from tests.runtime.third_party import ints, ort_loop, save_graph, value_info
from tests.runtime.third_party_audio import KWS_H, SILERO_H, kws_mel, silero_v5
from tests.tolerances import assert_close

F, H = 5, 4
_rng = np.random.default_rng(21)
W = (0.5 * _rng.standard_normal((1, 4 * H, F))).astype(np.float32)  # LSTM input weights
R = (0.5 * _rng.standard_normal((1, 4 * H, H))).astype(np.float32)
V = _rng.standard_normal((H, 1)).astype(np.float32)
WIN = _rng.standard_normal(H).astype(np.float32)
f32 = TensorProto.FLOAT


def windows_lstm(path: Path) -> Path:
    """Class 1 (VAD/KWS exports): x ``[N, F]`` is N windows in order, h/c fixed ``[1, 1, H]``
    (no batch axis), prob ``[N, 1]``."""
    nodes = [
        helper.make_node("Unsqueeze", ["x", "one"], ["x3"]),
        helper.make_node(
            "LSTM", ["x3", "W", "R", "", "", "h", "c"], ["y", "hn", "cn"], hidden_size=H
        ),
        helper.make_node("Squeeze", ["y", "one2"], ["y2"]),  # [N, H]
        helper.make_node("MatMul", ["y2", "V"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
    ]
    return save_graph(
        path,
        nodes,
        [
            value_info("x", f32, ["N", F]),
            value_info("h", f32, [1, 1, H]),
            value_info("c", f32, [1, 1, H]),
        ],
        [
            value_info("prob", f32, ["N", 1]),
            value_info("hn", f32, [1, 1, H]),
            value_info("cn", f32, [1, 1, H]),
        ],
        {"W": W, "R": R, "V": V, "one": ints(1), "one2": ints(1, 2)},
    )


def window_frames(path: Path, sample_rate: bool = False) -> Path:
    """Class 2 (Silero-like): x ``['batch', 'sequence']`` is one window of any length per step,
    ``s' = tanh(0.5 s + mean(x) w)``, out ``[batch, 1]``, state ``[2, batch, H]``; optionally
    an int64 ``sr`` that scales the window."""
    inputs = [
        value_info("input", f32, ["batch", "sequence"]),
        value_info("state", f32, [2, "batch", H]),
    ]
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], axes=[1], keepdims=1)]
    mean = "m"
    if sample_rate:
        inputs.append(value_info("sr", TensorProto.INT64, []))
        nodes += [
            helper.make_node("Cast", ["sr"], ["k"], to=f32),
            helper.make_node("Mul", ["m", "k"], ["mk"]),
        ]
        mean = "mk"
    nodes += [
        helper.make_node("Mul", [mean, "w"], ["drive"]),  # [batch, H]
        helper.make_node("Mul", ["state", "half"], ["decayed"]),
        helper.make_node("Add", ["decayed", "drive"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["stateN"]),
        helper.make_node("ReduceMean", ["stateN"], ["o"], axes=[0, 2], keepdims=0),
        helper.make_node("Unsqueeze", ["o", "one"], ["output"]),
    ]
    return save_graph(
        path,
        nodes,
        inputs,
        [
            value_info("output", f32, ["batch", 1]),
            value_info("stateN", f32, [2, "batch", H]),
        ],
        {"w": WIN, "half": np.array(0.5, np.float32), "one": ints(1)},
    )


def lying_names(path: Path) -> Path:
    """Batch-first RNN whose names lie: x ``['time', 'batch', F]`` is really [batch, time, F];
    y ``['time', 'batch', H]`` likewise; state h ``[1, 'b', H]``."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("RNN", ["xt", "W", "R", "", "", "h"], ["y4", "h_out"], hidden_size=H),
        helper.make_node("Squeeze", ["y4", "one"], ["y3"]),
        helper.make_node("Transpose", ["y3"], ["y"], perm=[1, 0, 2]),
    ]
    return save_graph(
        path,
        nodes,
        [
            value_info("x", f32, ["time", "batch", F]),
            value_info("h", f32, [1, "b", H]),
        ],
        [
            value_info("y", f32, ["time", "batch", H]),
            value_info("h_out", f32, [1, "b", H]),
        ],
        {"W": W[:, :H], "R": R[:, :H], "one": ints(1)},
    )


def axes_of(model: rnnstream.Model) -> tuple[dict, dict, list]:
    axes = model.signature.source["axes"]
    return axes["batch"], axes["time"], axes["frame"]


def test_windows_without_batch_axis_stream_by_step_and_feed(tmp_path):
    path = windows_lstm(tmp_path / "kws.onnx")
    model = rnnstream.load(path)
    sig = model.signature
    assert (sig.input.batch_axis, sig.input.time_axis) == (None, 0)
    assert [s.batch_axis for s in sig.states] == [None, None]
    assert axes_of(model) == (
        {"axis": None, "by": "probe"},
        {"axis": 0, "by": "probe"},
        [],
    )
    assert sig.least_steps == 1  # it ran one step when probed
    xs = np.random.default_rng(1).standard_normal((9, F)).astype(np.float32)
    zeros = {"h": np.zeros((1, 1, H), np.float32), "c": np.zeros((1, 1, H), np.float32)}
    steps = [{"x": xs[t : t + 1]} for t in range(9)]
    want = np.concatenate([r["prob"] for r in ort_loop(path, steps, zeros, {"h": "hn", "c": "cn"})])
    fed = model.stream()
    assert_close(np.concatenate([fed.feed(xs[:4]), fed.feed(xs[4:])]), want)
    stepped = model.stream()
    assert_close(np.stack([stepped.step(x) for x in xs]), want)
    with pytest.raises(rnnstream.SignatureError, match="no batch axis"):
        model.stream(batch=2)


def test_windows_without_batch_axis_refuse_a_pool(tmp_path):
    model = rnnstream.load(windows_lstm(tmp_path / "kws.onnx"))
    with pytest.raises(rnnstream.SignatureError, match=r"no batch axis.*one sequence"):
        model.pool()


def test_variable_length_frames_step_by_window(tmp_path):
    path = window_frames(tmp_path / "vad.onnx")
    model = rnnstream.load(path)
    sig = model.signature
    assert (sig.input.batch_axis, sig.input.time_axis) == (0, None)
    assert (sig.outputs[0].batch_axis, sig.outputs[0].time_axis) == (0, None)
    assert axes_of(model) == (
        {"axis": 0, "by": "probe"},
        {"axis": None, "by": "probe"},
        [{"axis": 1, "by": "probe"}],
    )
    rng = np.random.default_rng(2)
    windows = [rng.standard_normal(n).astype(np.float32) for n in (7, 3, 12, 1, 5)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    state, want = np.zeros((2, 1, H), np.float32), []
    for w in windows:
        y, state = session.run(None, {"input": w[None], "state": state})
        want.append(y[0])
    s = model.stream()
    assert_close(np.stack([s.step(w) for w in windows]), np.stack(want))
    pool = model.pool()
    a, b = pool.open(), pool.open()
    for w in windows:
        out = pool.step({a: w, b: w})
    assert_close(out[b], want[-1])


def test_a_sample_rate_constant_does_not_fool_the_probe(tmp_path):
    path = window_frames(tmp_path / "vad_sr.onnx", sample_rate=True)
    model = rnnstream.load(path, constants={"sr": 2})
    assert (model.signature.input.batch_axis, model.signature.input.time_axis) == (0, None)
    assert axes_of(model)[2] == [{"axis": 1, "by": "probe"}]
    w = np.random.default_rng(3).standard_normal(6).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    zero = np.zeros((2, 1, H), np.float32)
    (want, _) = session.run(None, {"input": w[None], "state": zero, "sr": np.array(2)})
    assert_close(model.stream().step(w), want[0])


def test_names_that_lie_are_overruled_by_the_probe(tmp_path):
    model = rnnstream.load(lying_names(tmp_path / "lying.onnx"))
    sig = model.signature
    assert (sig.input.batch_axis, sig.input.time_axis) == (0, 1)
    assert (sig.outputs[0].batch_axis, sig.outputs[0].time_axis) == (0, 1)
    assert sig.states[0].batch_axis == 1
    xs = np.random.default_rng(4).standard_normal((3, 8, F)).astype(np.float32)
    stepped = model.stream(batch=3)
    ys_step = np.stack([stepped.step(xs[:, t]) for t in range(8)], axis=1)
    session = ort.InferenceSession(str(tmp_path / "lying.onnx"), providers=["CPUExecutionProvider"])
    want, _ = session.run(None, {"x": xs, "h": np.zeros((1, 3, H), np.float32)})
    assert_close(ys_step, want)
    fed = model.stream(batch=3)
    assert_close(np.concatenate([fed.feed(xs[:, :3]), fed.feed(xs[:, 3:])], axis=1), want)


@pytest.mark.parametrize("names", [("h0", "hn"), ("state", "stateN"), ("memory", "memory_next")])
def test_name_rule_cases_are_confirmed_by_the_probe(tmp_path, names):
    model = rnnstream.load(accumulator(tmp_path / "m.onnx", *names))
    assert axes_of(model) == ({"axis": 0, "by": "probe"}, {"axis": None, "by": "probe"}, [])
    assert model.signature.states[0].batch_axis == 1
    xs = np.random.default_rng(5).standard_normal((6, F - 1)).astype(np.float32)
    s = model.stream()
    assert_close(np.stack([s.step(x) for x in xs]), reference(xs))


def test_time_major_models_are_confirmed_by_the_probe(tmp_path):
    rnn = rnnstream.load(rnn_time_major(tmp_path / "rnn.onnx"))
    assert axes_of(rnn)[:2] == ({"axis": 1, "by": "probe"}, {"axis": 0, "by": "probe"})
    tokens = rnnstream.load(save_token_rnn(tmp_path / "lm.onnx"), state_map={"h_in": "h_out"})
    sig = tokens.signature
    assert sig.kind == "discovered"  # the metadata set aside
    assert (sig.input.batch_axis, sig.input.time_axis) == (1, 0)
    assert (sig.outputs[0].batch_axis, sig.outputs[0].time_axis) == (1, 0)


def test_probing_is_cheap_on_small_models(tmp_path):
    model = rnnstream.load(rnn_time_major(tmp_path / "rnn.onnx"))
    note = model.signature.source["probe"]
    assert note.startswith("probed 2 dynamic axes in ")
    assert float(note.split(" in ")[1].removesuffix(" ms")) < 100


def test_axes_given_at_load_replace_the_probe(tmp_path):
    path = rnn_time_major(tmp_path / "rnn.onnx")
    model = rnnstream.load(path, axes={"batch": 1, "time": 0})
    assert axes_of(model)[:2] == ({"axis": 1, "by": "given"}, {"axis": 0, "by": "given"})
    assert model.signature.source["probe"] == "not probed: batch and time axes given"
    frames = rnnstream.load(window_frames(tmp_path / "vad.onnx"), axes={"frame": [1]})
    assert axes_of(frames) == (
        {"axis": 0, "by": "probe"},
        {"axis": None, "by": "probe"},
        [{"axis": 1, "by": "given"}],
    )


@pytest.mark.parametrize(
    "axes, message",
    [
        ({"batch": 3}, r"axes: batch=3 is not an axis of input 'X' \['seq_len', 'batch_size', 4\]"),
        ({"time": 2}, "time=2: .* has the fixed size 4 there"),
        ({"batch": 0, "time": 0}, "puts one axis .* in two roles"),
        ({"frame": [1], "batch": 1}, "puts one axis .* in two roles"),
        ({"channels": 1}, "unknown role 'channels'"),
        ({"batch": "0"}, "batch='0' is not an axis"),
    ],
)
def test_a_wrong_axes_override_is_a_signature_error(tmp_path, axes, message):
    path = rnn_time_major(tmp_path / "rnn.onnx")
    with pytest.raises(rnnstream.SignatureError, match=message):
        rnnstream.load(path, axes=axes)


def refusing_everything(path: Path) -> Path:
    """Silero-like, but the window must be 70001 samples (more than the probe tries): no run
    succeeds, so the names decide."""
    nodes = [
        helper.make_node("Reshape", ["input", "window"], ["w"]),
        helper.make_node("ReduceMean", ["w"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["state", "half"], ["decayed"]),
        helper.make_node("Add", ["decayed", "m"], ["stateN"]),
        helper.make_node("ReduceMean", ["stateN"], ["output"], axes=[1], keepdims=1),
    ]
    return save_graph(
        path,
        nodes,
        [
            value_info("input", f32, ["batch", "samples"]),
            value_info("state", f32, ["batch", H]),
        ],
        [
            value_info("output", f32, ["batch", 1]),
            value_info("stateN", f32, ["batch", H]),
        ],
        {"window": ints(0, 70001), "half": np.array(0.5, np.float32)},
    )


@pytest.mark.parametrize("rate, window", [(16000, 512), (8000, 256)])
def test_a_fixed_window_is_probed_at_the_size_the_model_takes(tmp_path, rate, window):
    path = silero_v5(tmp_path / "silero.onnx")
    model = rnnstream.load(path, constants={"sr": rate})
    assert model.signature.input.shape[1] == window
    assert axes_of(model) == (
        {"axis": 0, "by": "probe"},
        {"axis": None, "by": "probe"},
        [{"axis": 1, "by": "probe", "size": window}],
    )
    assert f"size 1 refused; ran with axis 1 at {window}" in model.signature.source["probe"]
    rng = np.random.default_rng(rate)
    windows = rng.uniform(-1, 1, (4, window)).astype(np.float32)
    state = np.zeros((2, 1, SILERO_H), np.float32)
    steps = [{"input": w[None], "sr": np.array(rate)} for w in windows]
    want = [r["output"][0] for r in ort_loop(path, steps, {"state": state}, {"state": "stateN"})]
    stream = model.stream()
    assert_close(np.stack([stream.step(w) for w in windows]), np.stack(want))
    batched = model.stream(batch=2)
    out = [batched.step(np.stack([w, w])) for w in windows]
    assert_close(np.stack([o[1] for o in out]), np.stack(want))


def test_a_window_of_frames_flattened_by_a_reshape_is_found(tmp_path):
    path = kws_mel(tmp_path / "kws.onnx")
    model = rnnstream.load(path)
    assert model.signature.input.shape == ("batch", 49, 40)
    assert axes_of(model)[2] == [{"axis": 1, "by": "probe", "size": 49}]
    features = np.random.default_rng(6).standard_normal((3, 49, 40)).astype(np.float32)
    steps = [{"features": f[None]} for f in features]
    zero = {"h0": np.zeros((1, 1, KWS_H), np.float32)}
    want = [r["logits"][0] for r in ort_loop(path, steps, zero, {"h0": "hn"})]
    stream = model.stream()
    assert_close(np.stack([stream.step(f) for f in features]), np.stack(want))


def test_when_no_size_runs_the_names_decide_and_say_why(tmp_path):
    model = rnnstream.load(refusing_everything(tmp_path / "refusing.onnx"))
    batch, time_axis, frames = axes_of(model)
    failed = "name (probe failed: the model refuses size 1 and every size tried on its dynamic"
    assert batch["axis"] == 0 and batch["by"].startswith(failed)
    assert "requested shape:{1,70001}" in batch["by"]  # onnxruntime's reason, one short clause
    assert "/onnxruntime_src/" not in batch["by"]
    assert time_axis["axis"] is None and frames == [{"axis": 1, "by": batch["by"]}]
    assert model.signature.source["probe"].startswith("not probed: the model refuses size 1")


def overlapping_windows(path: Path) -> Path:
    """A window of 300 samples scored with the previous one: ``concat[window_prev, audio] @ W``
    (W is [600, 4]), ``window_next = audio``. onnxruntime's refusal ("MatMul dimension
    mismatch") names no size: the state's fixed 300 is the hint that runs."""
    nodes = [
        helper.make_node("Concat", ["window_prev", "audio"], ["both"], axis=1),
        helper.make_node("MatMul", ["both", "W"], ["mixed"]),
        helper.make_node("Tanh", ["mixed"], ["score"]),
        helper.make_node("Identity", ["audio"], ["window_next"]),
    ]
    return save_graph(
        path,
        nodes,
        [
            value_info("audio", f32, ["batch", "samples"]),
            value_info("window_prev", f32, ["batch", 300]),
        ],
        [
            value_info("score", f32, ["batch", 4]),
            value_info("window_next", f32, ["batch", 300]),
        ],
        {"W": 0.1 * np.random.default_rng(22).standard_normal((600, 4)).astype(np.float32)},
    )


def test_a_window_is_found_from_the_fixed_sizes_of_the_other_tensors(tmp_path):
    path = overlapping_windows(tmp_path / "overlap.onnx")
    model = rnnstream.load(path)
    assert model.signature.input.shape == ("batch", 300)
    assert axes_of(model)[2] == [{"axis": 1, "by": "probe", "size": 300}]
    windows = np.random.default_rng(9).standard_normal((3, 300)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    prev, want = np.zeros((1, 300), np.float32), []
    for w in windows:
        score, prev = session.run(None, {"audio": w[None], "window_prev": prev})
        want.append(score[0])
    stream = model.stream()
    assert_close(stream.feed(windows), np.stack(want))
