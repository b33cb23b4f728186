"""The command line, driven through click's CliRunner on real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import rnnstream
from rnnstream.cli import main
from rnnstream.models import load_checkpoint, save_checkpoint
from tests.tolerances import assert_close


def run(*args: str, input: str | None = None, ok: bool = True):
    result = CliRunner().invoke(main, ["-q", *args], input=input, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def char_model(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("char")
    ckpt, onnx_path = d / "lm.safetensors", d / "lm.onnx"
    run(
        "init",
        "--cell",
        "gru",
        "--layers",
        "2",
        "--hidden",
        "32",
        "--vocab",
        "printable",
        "-o",
        str(ckpt),
    )
    run("export", str(ckpt), "-o", str(onnx_path), "--steps", "200")
    return ckpt, onnx_path


def test_export_help_explains_parity_and_state():
    result = run("export", "--help")
    for words in ("parity", "h0, c0", "--atol", "--steps", "--chunk", "nothing is written"):
        assert words in result.output


def test_export_prints_parity_and_writes_signature(tmp_path):
    ckpt, out = tmp_path / "m.safetensors", tmp_path / "m.onnx"
    run(
        "init",
        "--cell",
        "lstm",
        "--hidden",
        "24",
        "--input-size",
        "5",
        "--output-size",
        "3",
        "-o",
        str(ckpt),
    )
    result = run("export", str(ckpt), "-o", str(out))
    assert "parity PASSED" in result.output
    assert "chunk (T=16)" in result.output
    sig = rnnstream.load(out).signature
    assert sig.parity.steps == 1000 and sig.parity.max_abs_err <= 1e-5
    assert [(s.input, s.output) for s in sig.states] == [("h0", "hn"), ("c0", "cn")]


def test_export_json_report(tmp_path):
    ckpt = tmp_path / "m.safetensors"
    run("init", "--cell", "rnn_relu", "--hidden", "8", "--input-size", "2", "-o", str(ckpt))
    result = run("export", str(ckpt), "--json", "--steps", "100")
    report = json.loads(result.output)
    assert report["path"] == str(tmp_path / "m.onnx")
    assert report["signature"]["parity"]["passed"] is True


def test_info_text_and_json(char_model):
    _, onnx_path = char_model
    text = run("info", str(onnx_path)).output
    assert "h0 -> hn" in text and "kind char_lm" in text and "100 characters" in text
    info = json.loads(run("info", str(onnx_path), "--json").output)
    assert info["signature"]["states"][0]["shape"] == [2, "batch", 32]
    assert [a["name"] for a in info["inputs"]] == ["x", "h0"]
    # 2-layer GRU, embedding 32 -> hidden 32, head 32 -> 100: weights of W, R and the head.
    assert info["cost"]["macs_per_step"] == 2 * (3 * 32 * 32 * 2) + 32 * 100
    assert "multiply-adds per step" in text
    assert "c0" not in text  # a GRU has no cell state


def test_verify_passes_then_fails_on_patched_weights(char_model, tmp_path):
    ckpt, onnx_path = char_model
    result = run("verify", str(onnx_path), "--against", str(ckpt), "--steps", "300")
    assert "parity PASSED" in result.output
    model = load_checkpoint(ckpt)
    with torch.no_grad():
        model.rnn.weight_hh_l1.add_(0.05)
    patched = tmp_path / "patched.safetensors"
    save_checkpoint(model, patched)
    result = run("verify", str(onnx_path), "--against", str(patched), "--steps", "300", ok=False)
    assert result.exit_code == 1
    assert "parity FAILED" in result.output
    assert "ParityError" in result.output and "max abs err" in result.output
    assert "Traceback" not in result.output


def test_stream_text_one_json_line_per_character(char_model):
    _, onnx_path = char_model
    result = run("stream", str(onnx_path), "-", input="ab\n")
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["token"] for line in lines] == ["a", "b", "\n"]
    assert all(len(line["next"]) == 3 for line in lines)
    # The streamed predictions are the runtime's own, step by step.
    model = rnnstream.load(onnx_path)
    s = model.stream()
    logits = [s.step(i) for i in rnnstream.Vocabulary(model.signature.vocab).encode("ab\n")]
    assert [line["next"][0][0] for line in lines] == [
        model.signature.vocab[int(np.argmax(v))] for v in logits
    ]


def test_stream_chunked_and_npy_match_stepping(tmp_path, char_model):
    _, onnx_path = char_model
    text = "for i in range(3):\n"
    stepped = run("stream", str(onnx_path), "-", input=text).output
    chunked = run("stream", str(onnx_path), "-", "--chunk", "7", input=text).output
    lines_a = [json.loads(x) for x in stepped.splitlines()]
    lines_b = [json.loads(x) for x in chunked.splitlines()]
    assert [x["token"] for x in lines_b] == list(text)
    assert [x["next"][0][0] for x in lines_a] == [x["next"][0][0] for x in lines_b]
    ckpt, out = tmp_path / "f.safetensors", tmp_path / "f.onnx"
    run("init", "--cell", "gru", "--hidden", "5", "--input-size", "2", "-o", str(ckpt))
    run("export", str(ckpt), "-o", str(out), "--steps", "20")
    frames = np.random.default_rng(0).standard_normal((6, 2)).astype(np.float32)
    np.save(tmp_path / "frames.npy", frames)
    lines = run("stream", str(out), str(tmp_path / "frames.npy"), "--max-steps", "4").output
    ys = [json.loads(x)["y"] for x in lines.splitlines()]
    expected = rnnstream.load(out).stream().feed(frames)[:4]
    assert_close(ys, expected)


def test_stream_frames_json_and_csv(tmp_path):
    ckpt, out = tmp_path / "f.safetensors", tmp_path / "f.onnx"
    run(
        "init",
        "--cell",
        "lstm",
        "--hidden",
        "6",
        "--input-size",
        "3",
        "--output-size",
        "2",
        "-o",
        str(ckpt),
    )
    run("export", str(ckpt), "-o", str(out), "--steps", "50")
    frames = tmp_path / "frames.txt"
    frames.write_text("[0.1, 0.2, 0.3]\n1,2,3\n\n[0, 0, 0]\n")
    lines = [json.loads(x) for x in run("stream", str(out), str(frames)).output.splitlines()]
    assert [x["t"] for x in lines] == [0, 1, 2]
    s = rnnstream.load(out).stream()
    expected = [
        s.step(np.array(f, dtype=np.float32)) for f in ([0.1, 0.2, 0.3], [1, 2, 3], [0] * 3)
    ]
    assert_close([x["y"] for x in lines], expected)


def test_stream_bad_frame_is_a_clear_error(tmp_path):
    ckpt, out = tmp_path / "f.safetensors", tmp_path / "f.onnx"
    run("init", "--cell", "gru", "--hidden", "4", "--input-size", "3", "-o", str(ckpt))
    run("export", str(ckpt), "-o", str(out), "--steps", "20")
    result = run("stream", str(out), "-", input="1,2\n", ok=False)
    assert result.exit_code == 1
    assert "InputError" in result.output and "'x'" in result.output and "[3]" in result.output


def test_pickle_checkpoint_is_refused(tmp_path):
    pickled = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2)}, pickled)
    result = run("export", str(pickled), ok=False)
    assert result.exit_code == 1
    assert "CheckpointError" in result.output and "pickle" in result.output


def test_init_rejects_projection_on_gru(tmp_path):
    result = run("init", "--cell", "gru", "--proj-size", "4", "-o", str(tmp_path / "x"), ok=False)
    assert result.exit_code == 2 and "proj_size" in result.output
