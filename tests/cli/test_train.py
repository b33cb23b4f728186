"""`rnnstream train charlm | classifier | tagger | forecaster` (rnnstream/cli/train.py), then
export, info, stream and generate on what they wrote."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rnnstream
from rnnstream.models import CharLM, Forecaster, load_checkpoint, read_checkpoint_extra


def test_train_charlm_help_explains_the_options(cli):
    out = cli("train", "charlm", "--help").output
    for words in ("--data", "stdlib", "--seq-len", "--accumulate", "--clip", "--resume", "BOS"):
        assert words in out
    assert "charlm" in cli("train", "--help").output


def test_train_export_generate(cli, tmp_path, text_file):
    ckpt = tmp_path / "lm.safetensors"
    args = ["train", "charlm", "--data", str(text_file), "--layers", "1", "--hidden", "24"]
    args += ["--batch", "4", "--seq-len", "32", "--steps", "6", "--vocab", "data", "-o", str(ckpt)]
    result = cli(*args)
    assert "bits per character" in result.output
    assert "training" in result.output  # the progress bar's label (stderr is mixed in)
    model = load_checkpoint(ckpt)
    assert isinstance(model, CharLM) and model.config.hidden_size == 24
    assert set(model.config.chars) <= set(text_file.read_text()) | {"\ufffd"}
    assert read_checkpoint_extra(ckpt)["step"] == 6

    cli(*args[:-4], "--steps", "9", "--resume", "-o", str(ckpt))
    assert read_checkpoint_extra(ckpt)["step"] == 9

    onnx_path = tmp_path / "lm.onnx"
    cli("-q", "export", str(ckpt), "-o", str(onnx_path), "--steps", "100")
    sig = rnnstream.load(onnx_path).signature
    assert (sig.kind, sig.bos, sig.eos, sig.vocab) == ("char_lm", 0, 1, model.config.vocab)

    gen = ["-q", "generate", str(onnx_path), "--prompt", "def", "--max-tokens", "20"]
    first = cli(*gen, "--seed", "1")
    assert first.stdout.startswith("def") and first.stdout == cli(*gen, "--seed", "1").stdout
    assert "ms/token" in first.stderr and "parity at export" in first.stderr


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("classifier", ("--kinds", "--max-len", "--bidirectional", "python", "shebang")),
        ("tagger", ("tokenize", "comment", "--max-len")),
        ("forecaster", ("mackey-glass", "CSV", "absolute error", "--resume")),
    ],
)
def test_help(cli, kind, words):
    out = cli("train", kind, "--help").output
    for word in words:
        assert word in out
    assert kind in cli("train", "--help").output


SMALL = ["--hidden", "8", "--steps", "4", "--batch", "4"]


def export_kind(cli, ckpt, tmp_path) -> rnnstream.Model:
    onnx_path = tmp_path / "m.onnx"
    cli("-q", "export", str(ckpt), "-o", str(onnx_path), "--steps", "100")
    return rnnstream.load(onnx_path)


def test_train_classifier_then_export(cli, tmp_path):
    ckpt = tmp_path / "c.safetensors"
    args = ["--kinds", "python,c_header", "--max-files", "20", "--max-len", "32"]
    result = cli("train", "classifier", *args, *SMALL, "-o", str(ckpt))
    assert "accuracy" in result.output and "training" in result.output
    model = load_checkpoint(ckpt)
    assert model.config.labels == ("python", "c_header")
    sig = export_kind(cli, ckpt, tmp_path).signature
    assert (sig.kind, sig.streamable, sig.num_tokens) == ("sequence_classifier", True, 256)
    assert sig.labels == ("python", "c_header")
    assert "python, c_header" in cli("info", str(tmp_path / "m.onnx")).output
    # Streamed as text: one line per byte with the most likely kinds so far.
    lines = cli("-q", "stream", str(tmp_path / "m.onnx"), "-", "--top", "2", input="#!").output
    records = [json.loads(line) for line in lines.splitlines()]
    assert [r["token"] for r in records] == ["#", "!"]
    assert {name for name, _ in records[-1]["labels"]} == {"python", "c_header"}


def test_train_classifier_rejects_a_missing_kind(cli, tmp_path):
    result = cli(
        "train", "classifier", "--kinds", "python,cobol", "-o", str(tmp_path / "x"), ok=False
    )
    assert result.exit_code == 2 and "unknown file kinds" in result.output


def test_train_tagger_then_export(cli, tmp_path):
    ckpt = tmp_path / "t.safetensors"
    result = cli(
        "train",
        "tagger",
        "--max-files",
        "4",
        "--min-len",
        "8",
        "--max-len",
        "32",
        *SMALL,
        "-o",
        str(ckpt),
    )
    assert "accuracy" in result.output
    assert export_kind(cli, ckpt, tmp_path).signature.kind == "frame_tagger"


def test_train_forecaster_on_a_csv_resume_and_export(cli, tmp_path):
    t = np.arange(300, dtype=np.float32)
    csv = tmp_path / "series.csv"
    rows = "\n".join(f"{np.sin(v / 9):.5f},{np.cos(v / 5) + 3:.5f}" for v in t)
    csv.write_text("a,b\n" + rows + "\n")
    ckpt = tmp_path / "f.safetensors"
    args = ["train", "forecaster", "--data", str(csv), "--min-len", "8", "--max-len", "20", *SMALL]
    result = cli(*args, "-o", str(ckpt))
    assert "mae" in result.output and "naive_mae" in result.output
    model = load_checkpoint(ckpt)
    assert isinstance(model, Forecaster) and model.config.features == 2
    assert model.config.mean[1] == pytest.approx(3, abs=0.1)
    cli(*args, "--steps", "6", "--resume", "-o", str(ckpt))  # the last --steps counts
    assert read_checkpoint_extra(ckpt)["step"] == 6
    sig = export_kind(cli, ckpt, tmp_path).signature
    assert sig.kind == "forecaster" and sig.outputs[0].shape == ("batch", "time", 2)


def test_resuming_another_kinds_checkpoint_is_refused(cli, frames_model, tmp_path):
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(frames_model.checkpoint.read_bytes())
    result = cli("-q", "train", "forecaster", *SMALL, "--resume", "-o", str(ckpt), ok=False)
    assert result.exit_code == 1
    assert (
        result.stderr
        == "Error: CheckpointError: the checkpoint holds a RecurrentNet, not a Forecaster\n"
    )
