"""Every failure of the command line is one line: a table of bad inputs, as an adversarial user
would give them, each of which must exit non-zero with exactly one line on stderr naming what was
wrong, and no traceback (issue 16.3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rnnstream.cli import main


def _with_config(source: Path, target: Path, config: str) -> None:
    """A copy of checkpoint ``source`` whose config JSON is ``config``."""
    with safe_open(str(source), framework="pt") as f:
        metadata = f.metadata()
    save_file(load_file(str(source)), str(target), {**metadata, "rnnstream.config": config})


@pytest.fixture(scope="module")
def files(tmp_path_factory, char_model, frames_model) -> dict[str, str]:
    """The models and the bad files the table refers to, by name."""
    d = tmp_path_factory.mktemp("bad")
    (d / "bad-utf8.csv").write_bytes(b"1,2,3\n\xff\xfe,2,3\n")
    (d / "text.txt").write_text("some text\n")
    np.save(d / "zero.npy", np.array(3.0, dtype=np.float32))
    np.save(d / "huge.npy", np.full((2, 3), 1e300))
    np.save(d / "ids.npy", np.array([1, 2, 300]))
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(d / "archive.npz", a=np.ones((2, 3), dtype=np.float32))
    (d / "truncated.npy").write_bytes((d / "huge.npy").read_bytes()[:100])
    torch.save({"weight": torch.zeros(2)}, d / "pickled.pt")
    _with_config(frames_model.checkpoint, d / "list-config.safetensors", "[1, 2]")
    _with_config(frames_model.checkpoint, d / "typed-config.safetensors", '{"hidden_size": "6"}')
    (d / "ragged-series.csv").write_text("1,2\n3\n4,5\n")
    return {
        "lm": str(char_model.onnx),
        "lm_ckpt": str(char_model.checkpoint),
        "frames": str(frames_model.onnx),
        "frames_ckpt": str(frames_model.checkpoint),
        "tmp": str(d),
    }


DEEP_JSON = "[" * 50_000 + "]" * 50_000 + "\n"

# (id, arguments, stdin, a piece of the expected message)
BAD_INPUTS = [
    # stream: what it reads
    ("stdin-not-utf8", "stream {lm} -", b"ab\xff\xfecd", "InputError: input stdin is not UTF-8"),
    ("csv-not-utf8", "stream {frames} {tmp}/bad-utf8.csv", None, "is not UTF-8 text"),
    ("ragged-csv-chunk", "stream {frames} - --chunk 4", "1,2,3\n1,2\n", "different shapes"),
    ("ragged-json-chunk", "stream {frames} - --chunk 2", "[1,2,3]\n[1]\n", "different shapes"),
    ("ragged-csv-step", "stream {frames} -", "1,2,3\n1,2\n", "expected shape [3], got [2]"),
    ("0-d-npy", "stream {frames} {tmp}/zero.npy", None, "holds a single value"),
    ("npz-archive", "stream {frames} {tmp}/archive.npz --format npy", None, ".npz archive"),
    ("truncated-npy", "stream {frames} {tmp}/truncated.npy", None, "cannot read"),
    ("pickled-npy", "stream {frames} {tmp}/objects.npy", None, "cannot read"),
    ("npy-beyond-float32", "stream {frames} {tmp}/huge.npy", None, "beyond float32"),
    ("missing-source", "stream {frames} {tmp}/missing.csv", None, "does not exist"),
    ("folder-source", "stream {frames} {tmp}", None, "is a folder"),
    ("json-not-a-list", "stream {frames} - --format jsonl", '{"a": 1}\n', "line 1"),
    ("json-too-deep", "stream {frames} -", DEEP_JSON, "cannot read a frame"),
    ("json-infinite", "stream {frames} -", "[1e999, 0, 0]\n", "finite numbers"),
    ("csv-nan", "stream {frames} -", "nan,1,2\n", "finite numbers"),
    ("csv-words", "stream {frames} -", "one,two,three\n", "cannot read a frame"),
    ("char-outside-vocab", "stream {lm} -", "é", "not in the model's vocabulary"),
    ("token-id-too-large", "stream {lm} {tmp}/ids.npy", None, "token ids must be in"),
    ("frames-to-a-token-model", "stream {lm} - --format csv", "1,2\n", "expected int64"),
    ("checkpoint-as-model", "stream {lm_ckpt} -", None, "ModelFileError"),
    ("text-as-model", "info {tmp}/text.txt", None, "ModelFileError"),
    ("folder-as-model", "info {tmp}", None, "is a directory"),
    # --const and --state
    ("const-not-a-number", "stream {frames} - --const x=abc", None, "x=abc"),
    ("const-infinite", "stream {frames} - --const x=inf", None, "finite number"),
    ("const-no-value", "stream {frames} - --const x=", None, "expected NAME=VALUE"),
    ("const-wrong-shape", "stream {frames} - --const h0=1", None, "--const h0=1"),
    ("const-not-an-input", "stream {frames} - --const sr=16000", None, "not an input"),
    ("state-no-pair", "info {frames} --state h0", None, "expected IN=OUT"),
    ("state-not-an-input", "info {frames} --state a=b", None, "SignatureError"),
    ("state-mismatched", "info {frames} --state x=y", None, "differ in dtype or shape"),
    # generate
    ("negative-seed", "generate {lm} --seed -1", None, "--seed"),
    ("seed-too-large", "generate {lm} --seed 18446744073709551616", None, "--seed"),
    ("temperature-nan", "generate {lm} --temperature nan", None, "not a finite number"),
    ("beams-and-top-k", "generate --beams 2 --top-k 3", None, "beam search is deterministic"),
    ("length-penalty-alone", "generate --length-penalty 1", None, "give beams"),
    ("not-a-language-model", "generate {frames}", None, "NotALanguageModelError"),
    ("no-bos-no-prompt", "generate {lm}", None, "give a prompt"),
    # export, quantize, verify, bench
    ("verify-other-model", "verify {lm} --against {frames_ckpt}", None, "is not the model"),
    ("verify-other-way", "verify {frames} --against {lm_ckpt}", None, "is not the model"),
    ("verify-onnx-as-checkpoint", "verify {lm} --against {lm}", None, "not a safetensors"),
    ("export-missing-folder", "export {frames_ckpt} -o {tmp}/no/such/m.onnx", None, "no/such"),
    ("export-to-a-folder", "export {frames_ckpt} -o {tmp}", None, "is a directory"),
    ("config-is-a-list", "export {tmp}/list-config.safetensors", None, "CheckpointError"),
    ("config-mistyped", "export {tmp}/typed-config.safetensors", None, "CheckpointError"),
    ("pickle-checkpoint", "export {tmp}/pickled.pt", None, "pickle"),
    ("export-atol-nan", "export {frames_ckpt} --atol nan", None, "--atol"),
    ("export-both-precisions", "export {frames_ckpt} --fp16 --quantize int8", None, "exclude"),
    ("quantize-no-precision", "quantize {frames}", None, "--int8 or --fp16"),
    ("quantize-other-model", "quantize {frames} --int8 --against {lm_ckpt}", None, "not the model"),
    ("quantize-missing-folder", "quantize {frames} --int8 -o {tmp}/no/q.onnx", None, "does not"),
    ("bench-other-model", "bench {frames} --against {lm_ckpt}", None, "is not the model"),
    ("bench-json-missing-folder", "bench {frames} --json {tmp}/no/b.json", None, "does not"),
    # train
    ("train-missing-data", "train charlm --data {tmp}/none.txt -o {tmp}/t.st", None, "No such"),
    ("train-data-not-utf8", "train charlm --data {tmp}/bad-utf8.csv -o {tmp}/t.st", None, "utf-8"),
    ("train-lr-nan", "train charlm --lr nan -o {tmp}/t.st", None, "--lr"),
    ("train-resume-nothing", "train forecaster --resume -o {tmp}/none.st", None, "CheckpointError"),
    (
        "train-ragged-series",
        "train forecaster --data {tmp}/ragged-series.csv -o {tmp}/t.st",
        None,
        "ragged-series.csv",
    ),
    # the command line itself
    ("no-such-command", "strem {lm}", None, "No such command"),
    ("no-such-option", "stream {lm} --chunks 3", None, "No such option"),
    ("missing-argument", "verify {lm}", None, "Missing option '--against'"),
]


@pytest.mark.parametrize(
    ("args", "stdin", "expected"), [row[1:] for row in BAD_INPUTS], ids=[r[0] for r in BAD_INPUTS]
)
def test_bad_input_is_one_line_and_a_non_zero_exit(files, args, stdin, expected):
    argv = [a.format(**files) for a in args.split()]
    result = CliRunner().invoke(main, argv, input=stdin)
    assert isinstance(result.exception, SystemExit), result.exception  # no exception escaped
    assert result.exit_code != 0
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: "), result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        ("stream {lm} -", b"ab\xff\xfecd", "not UTF-8"),
        ("stream {frames} {tmp}", None, "is a folder"),
        ("verify {lm} --against {frames_ckpt}", None, "is not the model"),
    ],
    ids=["stdin-not-utf8", "folder-source", "verify-other-model"],
)
def test_bad_input_in_a_real_process(files, args, stdin, expected):
    argv = [a.format(**files) for a in args.split()]
    proc = subprocess.run(
        [sys.executable, "-m", "rnnstream.cli", *argv],
        input=stdin or b"",
        capture_output=True,
        timeout=120,
        check=False,
    )
    stderr = proc.stderr.decode()
    assert proc.returncode == 1 and proc.stdout == b""
    assert stderr.count("\n") == 1 and expected in stderr and "Traceback" not in stderr


def test_a_bug_is_one_line_too_and_shown_with_rnnstream_debug(files, monkeypatch):
    """An exception nobody planned for is reported as a bug in one line, not a traceback."""

    def broken(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr("rnnstream.cli.inspect.print_info", broken)
    result = CliRunner().invoke(main, ["info", files["frames"]])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "internal error, please report it: KeyError: 'oops'" in result.stderr
    monkeypatch.setenv("RNNSTREAM_DEBUG", "1")
    result = CliRunner().invoke(main, ["info", files["frames"]])
    assert isinstance(result.exception, KeyError)


def test_the_table_covers_every_command():
    commands = {row[1].split()[0] for row in BAD_INPUTS}
    assert commands >= {"stream", "info", "generate", "verify", "export", "quantize", "bench"}
    assert "train" in commands
