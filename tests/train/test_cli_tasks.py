"""`rnnstream train classifier|tagger|forecaster` through click's CliRunner, then export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import rnnstream
from rnnstream.cli import main
from rnnstream.models import Forecaster, load_checkpoint, read_checkpoint_extra


def run(*args: str, ok: bool = True, input: str | None = None):
    result = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("classifier", ("--kinds", "--max-len", "--bidirectional", "python", "shebang")),
        ("tagger", ("tokenize", "comment", "--max-len")),
        ("forecaster", ("mackey-glass", "CSV", "absolute error", "--resume")),
    ],
)
def test_help(kind, words):
    out = run("train", kind, "--help").output
    for word in words:
        assert word in out
    assert kind in run("train", "--help").output


SMALL = ["--hidden", "8", "--steps", "4", "--batch", "4"]


def export_kind(ckpt, tmp_path) -> rnnstream.Model:
    onnx_path = tmp_path / "m.onnx"
    run("-q", "export", str(ckpt), "-o", str(onnx_path), "--steps", "100")
    return rnnstream.load(onnx_path)


def test_train_classifier_then_export(tmp_path):
    ckpt = tmp_path / "c.safetensors"
    args = ["--kinds", "python,c_header", "--max-files", "20", "--max-len", "32"]
    result = run("train", "classifier", *args, *SMALL, "-o", str(ckpt))
    assert "accuracy" in result.output and "training" in result.output
    model = load_checkpoint(ckpt)
    assert model.config.labels == ("python", "c_header")
    sig = export_kind(ckpt, tmp_path).signature
    assert (sig.kind, sig.streamable, sig.num_tokens) == ("sequence_classifier", True, 256)
    assert sig.labels == ("python", "c_header")
    assert "python, c_header" in run("info", str(tmp_path / "m.onnx")).output
    # Streamed as text: one line per byte with the most likely kinds so far.
    lines = run("-q", "stream", str(tmp_path / "m.onnx"), "-", "--top", "2", input="#!").output
    records = [json.loads(line) for line in lines.splitlines()]
    assert [r["token"] for r in records] == ["#", "!"]
    assert {name for name, _ in records[-1]["labels"]} == {"python", "c_header"}


def test_train_classifier_rejects_a_missing_kind(tmp_path):
    result = run(
        "train", "classifier", "--kinds", "python,cobol", "-o", str(tmp_path / "x"), ok=False
    )
    assert result.exit_code == 2 and "unknown file kinds" in result.output


def test_train_tagger_then_export(tmp_path):
    ckpt = tmp_path / "t.safetensors"
    result = run(
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
    assert export_kind(ckpt, tmp_path).signature.kind == "frame_tagger"


def test_train_forecaster_on_a_csv_resume_and_export(tmp_path):
    t = np.arange(300, dtype=np.float32)
    csv = tmp_path / "series.csv"
    rows = "\n".join(f"{np.sin(v / 9):.5f},{np.cos(v / 5) + 3:.5f}" for v in t)
    csv.write_text("a,b\n" + rows + "\n")
    ckpt = tmp_path / "f.safetensors"
    args = ["train", "forecaster", "--data", str(csv), "--min-len", "8", "--max-len", "20", *SMALL]
    result = run(*args, "-o", str(ckpt))
    assert "mae" in result.output and "naive_mae" in result.output
    model = load_checkpoint(ckpt)
    assert isinstance(model, Forecaster) and model.config.features == 2
    assert model.config.mean[1] == pytest.approx(3, abs=0.1)
    run(*args, "--steps", "6", "--resume", "-o", str(ckpt))  # the last --steps counts
    assert read_checkpoint_extra(ckpt)["step"] == 6
    sig = export_kind(ckpt, tmp_path).signature
    assert sig.kind == "forecaster" and sig.outputs[0].shape == ("batch", "time", 2)
