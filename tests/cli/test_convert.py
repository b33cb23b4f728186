"""`rnnstream init | export | quantize | verify` (rnnstream/cli/convert.py) on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import rnnstream
from rnnstream.export import TOLERANCES
from rnnstream.models import CharLM, CharLMConfig, load_checkpoint, save_checkpoint

EVAL_TOKENS = "4000"  # enough to compare two models on the same text; the default is 100,000


@pytest.fixture(scope="module")
def charlm_checkpoint(tmp_path_factory) -> Path:
    """A small untrained CharLM (with BOS and EOS, so its bits per character are scored)."""
    torch.manual_seed(0)
    model = CharLM(CharLMConfig(cell="gru", num_layers=2, hidden_size=32, embed_size=8))
    path = tmp_path_factory.mktemp("charlm") / "lm.safetensors"
    save_checkpoint(model, path)
    return path


def test_export_help_explains_parity_and_state(cli):
    result = cli("export", "--help")
    for words in ("parity", "h0, c0", "--atol", "--steps", "--chunk", "nothing is written"):
        assert words in result.output


def test_export_prints_parity_and_writes_signature(cli, tmp_path):
    ckpt, out = tmp_path / "m.safetensors", tmp_path / "m.onnx"
    cli("-q", "init", "--hidden", "24", "--input-size", "5", "--output-size", "3", "-o", str(ckpt))
    result = cli("-q", "export", str(ckpt), "-o", str(out))
    assert "parity PASSED" in result.output
    assert "chunk (T=16)" in result.output
    sig = rnnstream.load(out).signature
    assert sig.parity.steps == 1000 and sig.parity.max_abs_err <= 1e-5
    assert [(s.input, s.output) for s in sig.states] == [("h0", "hn"), ("c0", "cn")]


def test_export_json_report(cli, tmp_path):
    ckpt = tmp_path / "m.safetensors"
    cli("-q", "init", "--cell", "rnn_relu", "--hidden", "8", "--input-size", "2", "-o", str(ckpt))
    report = json.loads(cli("-q", "export", str(ckpt), "--json", "--steps", "100").output)
    assert report["path"] == str(tmp_path / "m.onnx")
    assert report["signature"]["parity"]["passed"] is True


def test_verify_passes_then_fails_on_patched_weights(cli, char_model, tmp_path):
    result = cli("-q", "verify", str(char_model.onnx), "--against", str(char_model.checkpoint))
    assert "parity PASSED" in result.output
    model = load_checkpoint(char_model.checkpoint)
    with torch.no_grad():
        model.rnn.weight_hh_l1.add_(0.05)
    patched = tmp_path / "patched.safetensors"
    save_checkpoint(model, patched)
    args = ["-q", "verify", str(char_model.onnx), "--against", str(patched), "--steps", "300"]
    result = cli(*args, ok=False)
    assert result.exit_code == 1
    assert "parity FAILED" in result.stdout and "max abs err" in result.stdout
    assert result.stderr.startswith("Error: ParityError") and result.stderr.count("\n") == 1


def test_verify_refuses_another_models_checkpoint_before_measuring(cli, char_model, frames_model):
    for onnx_path, ckpt in [
        (char_model.onnx, frames_model.checkpoint),
        (frames_model.onnx, char_model.checkpoint),
    ]:
        result = cli("verify", str(onnx_path), "--against", str(ckpt), ok=False)
        assert result.exit_code == 1 and result.stdout == ""
        assert result.stderr.count("\n") == 1  # the error alone: no parity measured
        assert f"CheckpointError: {ckpt} is not the model exported as {onnx_path}" in result.stderr


def test_verify_refuses_a_checkpoint_of_other_sizes(cli, frames_model, tmp_path):
    other = tmp_path / "other.safetensors"
    cli("-q", "init", "--hidden", "7", "--input-size", "3", "--output-size", "2", "-o", str(other))
    result = cli("-q", "verify", str(frames_model.onnx), "--against", str(other), ok=False)
    assert "CheckpointError" in result.stderr
    assert "[(1, 2, 2), (1, 1, 7), (1, 1, 7)], the file's [(1, 2, 2), (1, 1, 6), (1, 1, 6)]" in (
        result.stderr
    )


def test_pickle_checkpoint_is_refused(cli, tmp_path):
    pickled = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2)}, pickled)
    result = cli("-q", "export", str(pickled), ok=False)
    assert result.exit_code == 1
    assert "CheckpointError" in result.output and "pickle" in result.output


def test_init_rejects_projection_on_gru(cli, tmp_path):
    result = cli("init", "--cell", "gru", "--proj-size", "4", "-o", str(tmp_path / "x"), ok=False)
    assert result.exit_code == 2 and "proj_size" in result.output


def test_quantize_command(cli, charlm_checkpoint, tmp_path):
    path = tmp_path / "lm.onnx"
    cli("-q", "export", str(charlm_checkpoint), "-o", str(path), "--steps", "200")
    out = tmp_path / "lm.int8.onnx"
    args = ["--steps", "300", "--eval-tokens", EVAL_TOKENS]
    result = cli("-q", "quantize", str(path), "--int8", "-o", str(out), *args, "--json")
    report = json.loads(result.output)
    assert report["path"] == str(out) and report["signature"]["precision"] == "int8"
    parity = rnnstream.load(out).signature.parity
    assert parity.passed is True and parity.atol == TOLERANCES["int8"].atol
    result = cli("-q", "quantize", str(path), "--fp16", *args)
    default_out = path.with_suffix(".fp16.onnx")
    assert f"wrote {default_out}" in result.output and "parity PASSED (float16" in result.output
    assert rnnstream.load(default_out).signature.precision == "float16"
    assert "--int8, --int4 or --fp16" in cli("-q", "quantize", str(path), ok=False).output


def test_export_and_verify_commands_use_the_precision_tolerance(cli, charlm_checkpoint, tmp_path):
    ckpt = tmp_path / "lm.safetensors"
    ckpt.write_bytes(charlm_checkpoint.read_bytes())
    args = ["--steps", "300", "--eval-tokens", EVAL_TOKENS]
    cli("-q", "export", str(ckpt), "--quantize", "int8", *args)
    int8 = ckpt.with_suffix(".int8.onnx")
    assert rnnstream.load(int8).signature.precision == "int8"
    result = cli("-q", "verify", str(int8), "--against", str(ckpt), "--steps", "300")
    tol = TOLERANCES["int8"]
    assert "parity PASSED (int8 vs pytorch)" in result.output
    assert f"atol {tol.atol:g}, rtol {tol.rtol:g}" in result.output
    assert "bpc on stdlib" in result.output
    cli("-q", "export", str(ckpt), "--fp16", "-o", str(tmp_path / "h.onnx"), *args)
    assert rnnstream.load(tmp_path / "h.onnx").signature.precision == "float16"
    result = cli("-q", "export", str(ckpt), "--fp16", "--quantize", "int8", ok=False)
    assert "exclude each other" in result.output
