"""Every failure of the command line is one line: a table of bad inputs, as an adversarial user
would give them, each of which must exit non-zero with exactly one line on stderr naming what was
wrong, and no traceback (issue 16.3)."""

from __future__ import annotations

import codecs
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
    (d / "ragged.csv").write_text("1,2\n3\n4,5\n")
    return {
        "lm": str(char_model.onnx),
        "lm_ckpt": str(char_model.checkpoint),
        "frames": str(frames_model.onnx),
        "frames_ckpt": str(frames_model.checkpoint),
        "tmp": str(d),
    }


DEEP_JSON = "[" * 50_000 + "]" * 50_000 + "\n"

# id | arguments | stdin (escaped bytes; empty: none) | a piece of the expected message
TABLE = r"""
# stream: what it reads
stdin-not-utf8 | stream {lm} - | ab\xff\xfecd | InputError: input stdin is not UTF-8
csv-not-utf8 | stream {frames} {tmp}/bad-utf8.csv |  | is not UTF-8 text
ragged-csv-chunk | stream {frames} - --chunk 4 | 1,2,3\n1,2\n | different shapes
ragged-json-chunk | stream {frames} - --chunk 2 | [1,2,3]\n[1]\n | different shapes
ragged-csv-step | stream {frames} - | 1,2,3\n1,2\n | expected shape [3], got [2]
0-d-npy | stream {frames} {tmp}/zero.npy |  | holds a single value
npz-archive | stream {frames} {tmp}/archive.npz --format npy |  | .npz archive
truncated-npy | stream {frames} {tmp}/truncated.npy |  | cannot read
pickled-npy | stream {frames} {tmp}/objects.npy |  | cannot read
npy-beyond-float32 | stream {frames} {tmp}/huge.npy |  | beyond float32
missing-source | stream {frames} {tmp}/missing.csv |  | does not exist
folder-source | stream {frames} {tmp} |  | is a folder
json-not-a-list | stream {frames} - --format jsonl | {"a": 1}\n | line 1
json-too-deep | stream {frames} - | <50,000 nested lists> | cannot read a frame
json-infinite | stream {frames} - | [1e999, 0, 0]\n | finite numbers
csv-nan | stream {frames} - | nan,1,2\n | finite numbers
csv-words | stream {frames} - | one,two,three\n | cannot read a frame
char-outside-vocab | stream {lm} - | \xc3\xa9 | not in the model's vocabulary
token-id-too-large | stream {lm} {tmp}/ids.npy |  | token ids must be in
frames-to-a-token-model | stream {lm} - --format csv | 1,2\n | expected int64
checkpoint-as-model | stream {lm_ckpt} - |  | ModelFileError
text-as-model | info {tmp}/text.txt |  | ModelFileError
folder-as-model | info {tmp} |  | is a directory
# --const and --state
const-not-a-number | stream {frames} - --const x=abc |  | x=abc
const-infinite | stream {frames} - --const x=inf |  | finite number
const-no-value | stream {frames} - --const x= |  | expected NAME=VALUE
const-wrong-shape | stream {frames} - --const h0=1 |  | constant 'h0'
const-not-an-input | stream {frames} - --const sr=16000 |  | not an input
threads-absurd | stream {frames} - --threads 100000 |  | --threads
state-no-pair | info {frames} --state h0 |  | expected IN=OUT
state-not-an-input | info {frames} --state a=b |  | SignatureError
state-mismatched | info {frames} --state x=y |  | differ in dtype or shape
# generate
negative-seed | generate {lm} --seed -1 |  | --seed
seed-too-large | generate {lm} --seed 18446744073709551616 |  | --seed
temperature-nan | generate {lm} --temperature nan |  | not a finite number
beams-and-top-k | generate --beams 2 --top-k 3 |  | beam search is deterministic
length-penalty-alone | generate --length-penalty 1 |  | give beams
not-a-language-model | generate {frames} |  | NotALanguageModelError
no-bos-no-prompt | generate {lm} |  | give a prompt
# export, quantize, verify, bench
verify-other-model | verify {lm} --against {frames_ckpt} |  | is not the model
verify-other-way | verify {frames} --against {lm_ckpt} |  | is not the model
verify-onnx-as-checkpoint | verify {lm} --against {lm} |  | not a safetensors
export-missing-folder | export {frames_ckpt} -o {tmp}/no/such/m.onnx |  | no/such
export-to-a-folder | export {frames_ckpt} -o {tmp} |  | is a directory
config-is-a-list | export {tmp}/list-config.safetensors |  | CheckpointError
config-mistyped | export {tmp}/typed-config.safetensors |  | CheckpointError
pickle-checkpoint | export {tmp}/pickled.pt |  | pickle
export-atol-nan | export {frames_ckpt} --atol nan |  | --atol
export-both-precisions | export {frames_ckpt} --fp16 --quantize int8 |  | exclude
quantize-no-precision | quantize {frames} |  | --int8, --int4 or --fp16
quantize-int4-odd-block | quantize {frames} --int4 --block-size 24 |  | int4 block size must be
quantize-int4-zero-block | quantize {frames} --int4 --block-size 0 |  | int4 block size must be
quantize-int8-block | quantize {frames} --int8 --block-size 32 |  | applies to int4 only
export-float32-block | export {frames_ckpt} --block-size 64 |  | applies to int4 only
quantize-other-model | quantize {frames} --int8 --against {lm_ckpt} |  | not the model
quantize-missing-folder | quantize {frames} --int8 -o {tmp}/no/q.onnx |  | does not
bench-other-model | bench {frames} --against {lm_ckpt} |  | is not the model
bench-json-missing-folder | bench {frames} --json {tmp}/no/b.json |  | does not
# train
train-missing-data | train charlm --data {tmp}/none.txt -o {tmp}/t.st |  | No such
train-data-not-utf8 | train charlm --data {tmp}/bad-utf8.csv -o {tmp}/t.st |  | utf-8
train-lr-nan | train charlm --lr nan -o {tmp}/t.st |  | --lr
train-resume-nothing | train forecaster --resume -o {tmp}/none.st |  | CheckpointError
train-ragged-series | train forecaster --data {tmp}/ragged.csv -o {tmp}/t.st |  | ragged.csv
# the command line itself
no-such-command | strem {lm} |  | No such command
no-such-option | stream {lm} --chunks 3 |  | No such option
missing-argument | verify {lm} |  | Missing option '--against'
"""


def _stdin(text: str) -> bytes | None:
    if text == "<50,000 nested lists>":
        return DEEP_JSON.encode()
    return codecs.escape_decode(text.encode())[0] if text else None


BAD_INPUTS = [
    (row[0], row[1], _stdin(row[2]), row[3])
    for row in (
        [field.strip() for field in line.split(" | ")]
        for line in TABLE.strip().splitlines()
        if not line.startswith("#")
    )
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


IN_A_REAL_PROCESS = {
    "stdin-not-utf8": ("stream {lm} -", b"ab\xff\xfecd", "not UTF-8"),
    "folder-source": ("stream {frames} {tmp}", None, "is a folder"),
    "verify-other-model": ("verify {lm} --against {frames_ckpt}", None, "is not the model"),
}


@pytest.mark.parametrize(
    ("args", "stdin", "expected"), IN_A_REAL_PROCESS.values(), ids=list(IN_A_REAL_PROCESS)
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
