"""State snapshots on disk and the optimised-graph cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rnnstream
from rnnstream.export import ParitySettings, export
from tests.tolerances import assert_close


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("state")
    torch.manual_seed(0)
    export(
        torch.nn.LSTM(3, 5, 2, batch_first=True), d / "lstm.onnx", parity=ParitySettings(steps=50)
    )
    export(torch.nn.GRU(3, 5, 2, batch_first=True), d / "gru.onnx", parity=ParitySettings(steps=50))
    return d


def test_save_and_load_state_resumes_the_stream(paths, tmp_path):
    model = rnnstream.load(paths / "lstm.onnx")
    xs = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    s = model.stream()
    s.feed(xs[:10])
    s.save_state(tmp_path / "snap.npz")
    expected = s.feed(xs[10:])
    resumed = model.stream()
    resumed.load_state(tmp_path / "snap.npz")
    np.testing.assert_array_equal(resumed.feed(xs[10:]), expected)


def test_state_from_another_model_is_refused_and_changes_nothing(paths, tmp_path):
    gru = rnnstream.load(paths / "gru.onnx").stream()
    gru.step(np.ones(3, dtype=np.float32))
    gru.save_state(tmp_path / "gru.npz")
    lstm = rnnstream.load(paths / "lstm.onnx").stream()
    lstm.step(np.ones(3, dtype=np.float32))
    before = lstm.state
    with pytest.raises(rnnstream.InputError, match="saved from a model with other states"):
        lstm.load_state(tmp_path / "gru.npz")
    np.save(tmp_path / "junk.npy", np.zeros(3))
    with pytest.raises(rnnstream.InputError, match="cannot read state file"):
        lstm.load_state(tmp_path / "junk.npy.missing")
    for name, value in lstm.state.items():
        np.testing.assert_array_equal(value, before[name])


def test_optimized_cache_is_written_and_loads(paths, tmp_path):
    cache = tmp_path / "lstm.opt.onnx"
    first = rnnstream.load(paths / "lstm.onnx", optimized_cache=cache)
    assert cache.is_file() and cache.stat().st_size > 0
    x = np.ones(3, dtype=np.float32)
    again = rnnstream.load(cache)  # the cached graph keeps the signature
    assert_close(again.stream().step(x), first.stream().step(x))


def _external_data_model(folder, location: str):
    """A one-MatMul model whose weight lives in an external file named ``location``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, location="w.bin", size_threshold=0)
    if location != "w.bin":
        proto = onnx.load(path, load_external_data=False)
        for entry in proto.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        onnx.save(proto, path)
    return path


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    inside = _external_data_model(tmp_path / "ok", "w.bin")
    with pytest.raises(rnnstream.SignatureError, match="no state pairs"):
        rnnstream.load(inside)  # the weights load; it just isn't stateful
    (tmp_path / "secret.bin").write_bytes((tmp_path / "ok" / "w.bin").read_bytes())
    escaping = _external_data_model(tmp_path / "bad", "../secret.bin")
    with pytest.raises(rnnstream.ModelFileError, match="escapes"):
        rnnstream.load(escaping)
    with pytest.raises(rnnstream.ModelFileError, match="escapes"):
        rnnstream.load(escaping.read_bytes())
