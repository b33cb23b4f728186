"""Small stateful ONNX graphs written by hand with onnx.helper, for runtime tests without torch.

``two_heads``: a time-major ONNX ``RNN`` (``h' = tanh(x W + h U)``) with two outputs per step,
``hidden = h'`` ``[time, batch, H]`` and ``score = h' v`` ``[time, batch, 1]``, and the state pair
``h_in`` -> ``h_out`` ``[1, batch, H]``. It is the multi-output model an export cannot write yet;
its rnnstream signature is written into the file (and corrupted) by the tests.

``token_rnn``: the same recurrence over an embedding of int64 token ids, one output (logits).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnstream.runtime.signature import METADATA_KEY, Signature, StateSpec, TensorSpec

F, H = 3, 5
# Fixed weights from their own seed (tests draw their data from per-test seeds).
_rng = np.random.default_rng(11)
W = _rng.standard_normal((F, H)).astype(np.float32)
U = (0.5 * _rng.standard_normal((H, H))).astype(np.float32)
V = _rng.standard_normal((H, 1)).astype(np.float32)


def two_heads_graph() -> onnx.ModelProto:
    f32 = TensorProto.FLOAT
    nodes = [
        helper.make_node("RNN", ["x", "Wt", "Ut", "", "", "h_in"], ["y", "h_out"], hidden_size=H),
        helper.make_node("Squeeze", ["y", "axis1"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "V"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_heads",
        [
            helper.make_tensor_value_info("x", f32, ["time", "batch", F]),
            helper.make_tensor_value_info("h_in", f32, [1, "batch", H]),
        ],
        [
            helper.make_tensor_value_info("hidden", f32, ["time", "batch", H]),
            helper.make_tensor_value_info("score", f32, ["time", "batch", 1]),
            helper.make_tensor_value_info("h_out", f32, [1, "batch", H]),
        ],
        initializer=[
            numpy_helper.from_array(W.T[None].copy(), "Wt"),
            numpy_helper.from_array(U.T[None].copy(), "Ut"),
            numpy_helper.from_array(V, "V"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def two_heads_signature() -> dict:
    """The signature an exporter would write for ``two_heads`` (a dict, to corrupt in tests)."""
    signature = Signature(
        input=TensorSpec("x", "float32", ("time", "batch", F), batch_axis=1, time_axis=0),
        outputs=(
            TensorSpec("hidden", "float32", ("time", "batch", H), batch_axis=1, time_axis=0),
            TensorSpec("score", "float32", ("time", "batch", 1), batch_axis=1, time_axis=0),
        ),
        states=(StateSpec("h_in", "h_out", "float32", (1, "batch", H), batch_axis=1),),
    )
    return json.loads(signature.to_json())


def save_two_heads(path: Path, signature: dict | str | None = None) -> Path:
    """Write ``two_heads`` to ``path``, with ``signature`` (a dict or raw JSON text) as metadata."""
    model = two_heads_graph()
    if signature is not None:
        text = signature if isinstance(signature, str) else json.dumps(signature)
        helper.set_model_props(model, {METADATA_KEY: text})
    onnx.save(model, path)
    return path


def two_heads_reference(xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``hidden`` ``[T, H]`` and ``score`` ``[T, 1]`` for frames ``xs`` ``[T, F]`` from zero."""
    h = np.zeros((1, H), np.float64)
    hidden, score = [], []
    for x in xs.astype(np.float64):
        h = np.tanh(x[None] @ W + h @ U)
        hidden.append(h[0])
        score.append((h @ V)[0])
    return np.stack(hidden), np.stack(score)


VOCAB, EMBED = 7, 4
E = _rng.standard_normal((VOCAB, EMBED)).astype(np.float32)
WE = _rng.standard_normal((EMBED, H)).astype(np.float32)
OUT = _rng.standard_normal((H, VOCAB)).astype(np.float32)


def save_token_rnn(path: Path) -> Path:
    """A token language model: ids ``[time, batch]`` int64 -> embedding -> RNN -> logits
    ``[time, batch, VOCAB]``, state ``h_in`` -> ``h_out`` ``[1, batch, H]``, with its signature."""
    f32 = TensorProto.FLOAT
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["emb"]),
        helper.make_node("RNN", ["emb", "Wt", "Ut", "", "", "h_in"], ["y", "h_out"], hidden_size=H),
        helper.make_node("Squeeze", ["y", "axis1"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "OUT"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "token_rnn",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["time", "batch"]),
            helper.make_tensor_value_info("h_in", f32, [1, "batch", H]),
        ],
        [
            helper.make_tensor_value_info("logits", f32, ["time", "batch", VOCAB]),
            helper.make_tensor_value_info("h_out", f32, [1, "batch", H]),
        ],
        initializer=[
            numpy_helper.from_array(E, "E"),
            numpy_helper.from_array(WE.T[None].copy(), "Wt"),
            numpy_helper.from_array(U.T[None].copy(), "Ut"),
            numpy_helper.from_array(OUT, "OUT"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    signature = Signature(
        input=TensorSpec("ids", "int64", ("time", "batch"), batch_axis=1, time_axis=0),
        outputs=(
            TensorSpec("logits", "float32", ("time", "batch", VOCAB), batch_axis=1, time_axis=0),
        ),
        states=(StateSpec("h_in", "h_out", "float32", (1, "batch", H), batch_axis=1),),
        kind="lm",
        num_tokens=VOCAB,
    )
    helper.set_model_props(model, {METADATA_KEY: signature.to_json()})
    onnx.save(model, path)
    return path
