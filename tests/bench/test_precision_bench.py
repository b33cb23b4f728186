"""Smoke test of ``python -m rnnstream.bench.precision``: a tiny model through it all, quickly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from rnnstream.models import CharLM, CharLMConfig, save_checkpoint


def test_precision_bench_writes_every_row(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(
        CharLM(CharLMConfig(cell="gru", num_layers=1, hidden_size=16, embed_size=8)), ckpt
    )
    out = tmp_path / "precision.json"
    args = ["--steps", "20", "--rounds", "1", "--processes", "1", "--eval-tokens", "1000"]
    result = subprocess.run(
        [sys.executable, "-m", "rnnstream.bench.precision", str(ckpt), "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["machine"]["cores"] >= 1 and report["machine"]["onnxruntime"]
    results = report["results"]
    assert list(results) == ["float32", "int8", "float16"]
    for precision, row in results.items():
        assert row["parity"]["passed"] is True
        assert row["size_bytes"] > 0
        assert row["process"]["peak_rss_mb"] > 0 and row["process"]["load_cached_s"] > 0
        for key in ("stream_step_us_t2", "pool64_us_per_stream_t1", "torch_us", "torch64_us"):
            assert row["latency"][key]["median_us"] > 0, (precision, key)
    sizes = {p: row["size_bytes"] for p, row in results.items()}
    assert max(sizes["int8"], sizes["float16"]) < sizes["float32"]
    assert "| int8 |" in result.stdout
