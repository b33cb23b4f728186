"""int4 from the command line: export -> verify -> stream, quantize with a block size, info."""

from __future__ import annotations

import json

import numpy as np

import rnnstream
from rnnstream.export import TOLERANCES

EVAL_TOKENS = "4000"


def test_export_int4_then_verify_then_stream(cli, tmp_path):
    ckpt = tmp_path / "lm.safetensors"
    cli("-q", "init", "--cell", "lstm", "--vocab", "printable", "--hidden", "40", "-o", str(ckpt))
    args = ["--steps", "300", "--eval-tokens", EVAL_TOKENS]
    cli("-q", "export", str(ckpt), "--quantize", "int4", *args)
    int4 = ckpt.with_suffix(".int4.onnx")
    sig = rnnstream.load(int4).signature
    assert sig.precision == "int4" and sig.source["quantization"]["block_size"] == 32
    result = cli("-q", "verify", str(int4), "--against", str(ckpt), "--steps", "300")
    tol = TOLERANCES["int4"]
    assert "parity PASSED (int4 vs pytorch)" in result.output
    assert f"atol {tol.atol:g}, rtol {tol.rtol:g}" in result.output
    assert f"(max +{tol.max_bpc_increase:g})" in result.output
    lines = [
        json.loads(line)
        for line in cli("-q", "stream", str(int4), "-", input="def f").output.splitlines()
    ]
    assert [line["token"] for line in lines] == list("def f")
    # The CLI streams what the library streams.
    model = rnnstream.load(int4)
    logits = model.stream().feed(np.array(rnnstream.Vocabulary(sig.vocab).encode("def f")))
    best = [sig.vocab[int(i)] for i in logits.argmax(axis=-1)]
    assert [line["next"][0][0] for line in lines] == best


def test_quantize_int4_with_a_block_size_and_info(cli, tmp_path):
    ckpt, fp32 = tmp_path / "m.safetensors", tmp_path / "m.onnx"
    cli(
        "-q",
        "init",
        "--cell",
        "gru",
        "--hidden",
        "64",
        "--input-size",
        "64",
        "--output-size",
        "8",
        "-o",
        str(ckpt),
    )
    cli("-q", "export", str(ckpt), "-o", str(fp32), "--steps", "50")
    result = cli(
        "-q", "quantize", str(fp32), "--int4", "--block-size", "64", "--steps", "200", "--json"
    )
    report = json.loads(result.output)
    out = fp32.with_suffix(".int4.onnx")
    assert report["path"] == str(out) and report["signature"]["precision"] == "int4"
    assert report["signature"]["source"]["quantization"]["block_size"] == 64
    assert "precision int4 (blocks of 64)" in cli("info", str(out)).output
    assert out.stat().st_size * 4 < fp32.stat().st_size  # a small model: the signature weighs
    result = cli("-q", "quantize", str(fp32), "--int4", "--block-size", "20", ok=False)
    assert "int4 block size must be one of [16, 32, 64, 128, 256], got 20" in result.output


def test_help_lists_int4(cli):
    assert (
        "int4" in cli("quantize", "--help").output
        and "--block-size" in cli("quantize", "--help").output
    )
    export_help = cli("export", "--help").output
    assert "int4" in export_help and "--block-size" in export_help
