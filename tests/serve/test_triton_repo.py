"""`rnnstream triton`: the repository's files and the content of both configs.

The configs are parsed with Triton's own protobuf schema in `make test-triton` (tritonclient's
protobuf pin conflicts with onnx's here); these tests check their structure.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import rnnstream
from rnnstream.assets import DEMO_ONNX
from rnnstream.cli import main
from rnnstream.export.batch_first import batch_first_signature
from rnnstream.serve import Batching, write_triton_repository
from rnnstream.serve.triton_config import Enum, ort_config, python_config, render_pbtxt


def test_cli_writes_both_models(tmp_path):
    repo = tmp_path / "repo"
    args = ["triton", str(DEMO_ONNX), "-o", str(repo), "--name", "lm", "--instances", "2"]
    args += ["--preferred-batch", "32", "--preferred-batch", "64", "--idle-seconds", "5"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "lm_ort: batch-first copy max abs err 0" in result.output
    assert (repo / "lm/1/model.onnx").read_bytes() == DEMO_ONNX.read_bytes()
    model_py = (repo / "lm/1/model.py").read_text()
    assert "class TritonPythonModel" in model_py and "PooledSequences" in model_py
    python_text = (repo / "lm/config.pbtxt").read_text()
    assert 'name: "lm"' in python_text and 'backend: "python"' in python_text
    assert "preferred_batch_size: [32, 64]" in python_text
    assert "max_sequence_idle_microseconds: 5000000" in python_text
    assert "count: 2" in python_text
    ort_text = (repo / "lm_ort/config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in ort_text and "zero_data: true" in ort_text
    session = ort.InferenceSession(str(repo / "lm_ort/1/model.onnx"))
    shapes = [i.shape for i in session.get_inputs()]
    assert shapes == [["batch"], ["batch", 2, 256], ["batch", 2, 256]]


def test_python_config_has_control_inputs_and_every_output():
    sig = rnnstream.load(DEMO_ONNX).signature
    config = python_config("lm", sig, Batching(max_sequences=300, max_batch=64))
    batching = config["sequence_batching"]
    assert batching["oldest"]["max_candidate_sequences"] == 300
    assert config["max_batch_size"] == 64
    controls = {c["name"]: c["control"][0]["kind"] for c in batching["control_input"]}
    assert controls == {
        "START": Enum("CONTROL_SEQUENCE_START"),
        "END": Enum("CONTROL_SEQUENCE_END"),
        "CORRID": Enum("CONTROL_SEQUENCE_CORRID"),
    }
    # A token id per request: sent as [1], reshaped to a scalar for the model.
    assert config["input"] == [
        {"name": "x", "data_type": Enum("TYPE_INT64"), "dims": [1], "reshape": {"shape": []}}
    ]
    assert [o["name"] for o in config["output"]] == [o.name for o in sig.outputs]
    assert config["output"][0]["dims"] == [103]


def test_ort_config_keeps_states_batch_free_with_zero_start(gru_path):
    sig = batch_first_signature(rnnstream.load(gru_path).signature)
    config = ort_config("gru_ort", sig, Batching())
    (state,) = config["sequence_batching"]["state"]
    assert (state["input_name"], state["output_name"], state["dims"]) == ("h0", "hn", [2, 12])
    assert state["initial_state"][0]["zero_data"] is True
    assert config["input"][0]["dims"] == [5] and config["output"][0]["dims"] == [12]
    assert "control_input" not in config["sequence_batching"]


def test_render_pbtxt_nests_messages_and_lists():
    text = render_pbtxt(
        {"a": 1, "b": {"c": "x", "d": [1, 2]}, "e": [{"f": Enum("G")}, {"f": True}]}
    )
    assert text.splitlines() == [
        "a: 1",
        "b {",
        '  c: "x"',
        "  d: [1, 2]",
        "}",
        "e {",
        "  f: G",
        "}",
        "e {",
        "  f: true",
        "}",
    ]


def test_bad_options_and_names_are_refused(tmp_path):
    with pytest.raises(rnnstream.InputError, match=r"preferred batch sizes \[512\]"):
        Batching(max_batch=256, preferred_batch=(512,))
    with pytest.raises(rnnstream.InputError, match="model name 'a/b'"):
        write_triton_repository(DEMO_ONNX, tmp_path, name="a/b")
    result = CliRunner().invoke(
        main, ["triton", str(DEMO_ONNX), "-o", str(tmp_path), "--name", "x y"]
    )
    assert result.exit_code == 1 and "InputError: model name 'x y'" in result.output
    assert not any(tmp_path.iterdir())


def test_without_ort_needs_no_onnx_copy(tmp_path):
    repo = write_triton_repository(DEMO_ONNX, tmp_path, name="lm", ort=False)
    assert repo.ort is None and not (tmp_path / "lm_ort").exists()
    assert np.array_equal(
        np.frombuffer((tmp_path / "lm/1/model.onnx").read_bytes(), np.uint8),
        np.frombuffer(DEMO_ONNX.read_bytes(), np.uint8),
    )
