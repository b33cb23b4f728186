"""The batch-first copy for Triton's ONNX Runtime backend equals the original stream."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import rnnstream
from rnnstream.assets import DEMO_ONNX
from rnnstream.export.batch_first import write_batch_first
from tests.tolerances import Closeness, assert_close

SAME_GRAPH = Closeness(ulps=8)  # rtol 1e-6: the original graph between transposes


@pytest.mark.parametrize("which", ["gru", "demo"])
def test_copy_with_batch_first_state_equals_solo_streams(which, gru_path, tmp_path):
    source = gru_path if which == "gru" else DEMO_ONNX
    target = tmp_path / "first.onnx"
    report = write_batch_first(source, target)
    assert report["passed"] and report["max_abs_err"] <= 1e-6
    model = rnnstream.load(source)
    sig = model.signature
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    for s in sig.states:  # every state is [batch, rest...], in and out
        rest = [d for axis, d in enumerate(s.shape) if axis != s.batch_axis]
        assert inputs[s.input][1:] == rest and outputs[s.output][1:] == rest

    rng = np.random.default_rng(11)
    rows, steps = 4, 30
    if sig.num_tokens is not None:
        x = rng.integers(0, sig.num_tokens, (rows, steps))
    else:
        x = rng.standard_normal((rows, steps, 5)).astype(np.float32)
    state = {s.input: np.zeros([rows, *inputs[s.input][1:]], np.float32) for s in sig.states}
    names = [sig.outputs[0].name] + [s.output for s in sig.states]
    ys = []
    for t in range(steps):
        y, *new = session.run(names, {sig.input.name: x[:, t], **state})
        state = {s.input: v for s, v in zip(sig.states, new)}
        ys.append(y)
    for row in range(rows):
        solo = model.stream()
        expected = solo.feed(x[row])
        assert_close(np.stack([y[row] for y in ys]), expected, SAME_GRAPH)
        for s in sig.states:
            assert_close(
                state[s.input][row],
                np.moveaxis(solo.state[s.input], s.batch_axis, 0)[0],
                SAME_GRAPH,
            )


def test_copy_carries_a_batch_first_signature_the_runtime_streams(gru_path, tmp_path):
    target = tmp_path / "first.onnx"
    write_batch_first(gru_path, target)
    copy = rnnstream.load(target)
    assert copy.signature.input.shape == ("batch", 5)
    assert [s.shape for s in copy.signature.states] == [("batch", 2, 12)]
    rng = np.random.default_rng(12)
    x = rng.standard_normal((9, 5)).astype(np.float32)
    original, first = rnnstream.load(gru_path).stream(), copy.stream()
    assert_close(np.stack([first.step(frame) for frame in x]), original.feed(x), SAME_GRAPH)
