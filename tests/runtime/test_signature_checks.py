"""A signature that contradicts its graph is refused at load, naming the field and the file."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import rnnstream
from rnnstream.runtime.signature import METADATA_KEY
from tests.runtime.graphs import H, save_two_heads, two_heads_graph, two_heads_signature


def _set(path: str, value: object) -> Callable[[dict], None]:
    """A corruption: set ``path`` (``"states.0.shape"``) in the signature dict to ``value``."""

    def corrupt(sig: dict) -> None:
        *parents, last = path.split(".")
        node = sig
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return corrupt


def _delete(path: str) -> Callable[[dict], None]:
    def corrupt(sig: dict) -> None:
        *parents, last = path.split(".")
        node = sig
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]

    return corrupt


def _second_state_on(output: str) -> Callable[[dict], None]:
    def corrupt(sig: dict) -> None:
        sig["states"].append({**sig["states"][0], "input": "h2_in", "output": output})

    return corrupt


# (id, corruption, the field the message must name, more of the message)
CORRUPTIONS = [
    ("state input unknown", _set("states.0.input", "nope"), "states[0].input", "not an input"),
    ("state output unknown", _set("states.0.output", "nope"), "states[0].output", "not an output"),
    ("state input is x", _set("states.0.input", "x"), "states[0].input", "model's input"),
    ("state output is an output", _set("states.0.output", "score"), "states[0].output", "also"),
    ("two states, one output", _second_state_on("h_out"), "states[1].output", "states[0].output"),
    ("state dtype", _set("states.0.dtype", "float64"), "states[0].dtype", "float32 in the graph"),
    ("state size", _set("states.0.shape", [2, "batch", H]), "states[0].shape", "size 1"),
    ("state rank", _set("states.0.shape", ["batch", H]), "states[0].shape", "shape"),
    ("state named dim", _set("states.0.shape", [1, "batch", "h"]), "states[0].shape", "fixed"),
    ("state negative dim", _set("states.0.shape", [-1, "batch", H]), "states[0].shape", "-1"),
    ("state huge dim", _set("states.0.shape", [1, "batch", 10**12]), "states[0].shape", "size"),
    ("state huge size", _set("states.0.shape", [2**15, "batch", 2**14]), "states[0].shape", "elem"),
    ("state axis range", _set("states.0.batch_axis", 3), "states[0].batch_axis", "axis"),
    ("state missing dtype", _delete("states.0.dtype"), "states[0].dtype", "missing"),
    ("state not an object", _set("states.0", "h_in"), "states[0]", "object"),
    ("input unknown", _set("input.name", "audio"), "input.name", "not an input"),
    ("input dtype", _set("input.dtype", "int64"), "input.dtype", "float32 in the graph"),
    ("input dtype bogus", _set("input.dtype", "float128"), "input.dtype", "float128"),
    ("input rank", _set("input.shape", ["time", "batch"]), "input.shape", "shape"),
    ("input axis range", _set("input.batch_axis", 5), "input.batch_axis", "5"),
    ("input axis bool", _set("input.batch_axis", True), "input.batch_axis", "True"),
    ("input time is batch", _set("input.time_axis", 1), "input.time_axis", "batch axis"),
    ("output unknown", _set("outputs.0.name", "logits"), "outputs[0].name", "not an output"),
    ("output twice", _set("outputs.1.name", "hidden"), "outputs[1].name", "outputs[0]"),
    ("output size", _set("outputs.1.shape", ["time", "batch", 2]), "outputs[1].shape", "2"),
    ("output zero dim", _set("outputs.1.shape", ["time", "batch", 0]), "outputs[1].shape", "0"),
    ("outputs empty", _set("outputs", []), "outputs", "non-empty"),
    ("streamable string", _set("streamable", "no"), "streamable", "true or false"),
    ("streamable number", _set("streamable", 0), "streamable", "true or false"),
    ("num_tokens negative", _set("num_tokens", -3), "num_tokens", "-3"),
    ("num_tokens string", _set("num_tokens", "10"), "num_tokens", "token count"),
    ("labels", _set("labels", "yes,no"), "labels", "list of strings"),
    ("kind", _set("kind", 7), "kind", "name"),
    ("source", _set("source", []), "source", "object"),
]


@pytest.mark.parametrize(
    ("corrupt", "field", "detail"),
    [case[1:] for case in CORRUPTIONS],
    ids=[case[0] for case in CORRUPTIONS],
)
def test_contradicting_signature_is_refused_naming_the_field(tmp_path, corrupt, field, detail):
    signature = copy.deepcopy(two_heads_signature())
    corrupt(signature)
    path = save_two_heads(tmp_path / "corrupt.onnx", signature)
    with pytest.raises(rnnstream.SignatureError) as info:
        rnnstream.load(path)
    message = str(info.value)
    assert str(path) in message
    assert f"signature field {field}" in message
    assert detail in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "detail"),
    [("{not json", "not valid JSON"), ("[1, 2]", "expected an object"), ('{"format": 9}', "9")],
)
def test_unreadable_signature_is_refused_naming_the_file(tmp_path, text, detail):
    path = save_two_heads(tmp_path / "bad.onnx", text)
    with pytest.raises(rnnstream.SignatureError, match=re.escape(detail)) as info:
        rnnstream.load(path)
    assert str(path) in str(info.value)


def test_a_graph_input_the_signature_leaves_out_needs_a_constant(tmp_path):
    """An extra graph input (like Silero's sample rate) must be pinned; pinned, the model runs."""
    model = two_heads_graph()
    model.graph.input.append(helper.make_tensor_value_info("gain", TensorProto.FLOAT, []))
    helper.set_model_props(model, {METADATA_KEY: json.dumps(two_heads_signature())})
    path = tmp_path / "extra.onnx"
    onnx.save(model, path)
    with pytest.raises(rnnstream.SignatureError, match=r"signature field input: .*\['gain'\]"):
        rnnstream.load(path)
    pinned = rnnstream.load(path, constants={"gain": 2.0})
    frame = np.random.default_rng(0).standard_normal(3).astype(np.float32)
    plain = rnnstream.load(save_two_heads(tmp_path / "plain.onnx", two_heads_signature()))
    np.testing.assert_array_equal(
        pinned.stream().step(frame)["hidden"], plain.stream().step(frame)["hidden"]
    )
