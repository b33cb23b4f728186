"""`rnnstream train charlm` and `rnnstream generate` through click's CliRunner."""

from __future__ import annotations

import json

from click.testing import CliRunner

import rnnstream
from rnnstream.cli import main
from rnnstream.models import CharLM, load_checkpoint, read_checkpoint_extra


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_train_charlm_help_explains_the_options():
    out = run("train", "charlm", "--help").output
    for words in ("--data", "stdlib", "--seq-len", "--accumulate", "--clip", "--resume", "BOS"):
        assert words in out
    assert "charlm" in run("train", "--help").output


def test_train_export_generate(tmp_path, text_file):
    ckpt = tmp_path / "lm.safetensors"
    args = ["train", "charlm", "--data", str(text_file), "--layers", "1", "--hidden", "24"]
    args += ["--batch", "4", "--seq-len", "32", "--steps", "6", "--vocab", "data", "-o", str(ckpt)]
    result = run(*args)
    assert "bits per character" in result.output
    assert "training" in result.output  # the progress bar's label (stderr is mixed in)
    model = load_checkpoint(ckpt)
    assert isinstance(model, CharLM) and model.config.hidden_size == 24
    assert set(model.config.chars) <= set(text_file.read_text()) | {"\ufffd"}
    assert read_checkpoint_extra(ckpt)["step"] == 6

    run(*args[:-4], "--steps", "9", "--resume", "-o", str(ckpt))
    assert read_checkpoint_extra(ckpt)["step"] == 9

    onnx_path = tmp_path / "lm.onnx"
    run("-q", "export", str(ckpt), "-o", str(onnx_path), "--steps", "100")
    sig = rnnstream.load(onnx_path).signature
    assert (sig.kind, sig.bos, sig.eos, sig.vocab) == ("char_lm", 0, 1, model.config.vocab)

    gen = ["-q", "generate", str(onnx_path), "--prompt", "def", "--max-tokens", "20"]
    first = run(*gen, "--seed", "1")
    assert first.stdout.startswith("def") and first.stdout == run(*gen, "--seed", "1").stdout
    assert "ms/token" in first.stderr and "parity at export" in first.stderr


def test_generate_refuses_a_model_without_vocabulary(tmp_path):
    ckpt, onnx_path = tmp_path / "m.safetensors", tmp_path / "m.onnx"
    run("init", "--hidden", "8", "--input-size", "3", "-o", str(ckpt))
    run("-q", "export", str(ckpt), "-o", str(onnx_path), "--steps", "50")
    result = run("generate", str(onnx_path), ok=False)
    assert result.exit_code == 1 and "no vocabulary" in result.output
    assert json.loads(json.dumps(result.output))  # one readable line, no traceback
