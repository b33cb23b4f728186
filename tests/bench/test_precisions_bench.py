"""Smoke test of ``python -m rnnstream.bench.precisions``'s ``main``: a small reference model of
one cell and the demo model, few steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnnstream.bench import precisions
from rnnstream.bench.precisions import PRECISIONS


def test_precisions_bench_writes_every_cell_and_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # One reference cell: every cell takes the same path through the script (export, then
    # quantize_file at each precision); each cell's quantisation is tested in tests/export.
    monkeypatch.setattr(precisions, "CELLS", ("rnn_tanh",))
    out = tmp_path / "precisions.json"
    args = ["--hidden", "32", "--steps", "5", "--rounds", "1", "--bpc-tokens", "600"]
    precisions.main([*args, "--parity-steps", "30", "--json", str(out)])
    stdout = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == [f"{m} {p}" for m in ("rnn_tanh", "demo") for p in PRECISIONS]
    for name, row in rows.items():
        for key in ("step_median_us", "step_p99_us", "chunk_median_us"):
            assert row[key] > 0, (name, key)
        assert ("bpc" in row) == name.startswith("demo"), name
    for model in ("rnn_tanh", "demo"):
        sizes = [rows[f"{model} {p}"]["size_bytes"] for p in PRECISIONS]
        # float32 the largest, int4 the smallest (a tiny int8 RNN's Scan outweighs float16's saving)
        assert max(sizes) == sizes[0] and min(sizes) == sizes[-1], (model, sizes)
    demo = {p: rows[f"demo {p}"]["bpc"] for p in PRECISIONS}
    assert abs(demo["float16"] - demo["float32"]) < 0.01 and demo["int4"] < demo["float32"] + 0.2
    assert "| demo | int4 |" in stdout


def test_precisions_bench_times_the_unpinned_step_beside_the_pinned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "precisions.json"
    args = ["--models", "rnn_tanh", "--precisions", "int8", "--unpinned", "--hidden", "16"]
    args += ["--steps", "5", "--rounds", "1", "--parity-steps", "20", "--json", str(out)]
    precisions.main(args)
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == ["rnn_tanh float32", "rnn_tanh int8"]
    for name, row in rows.items():
        assert row["step_unpinned_median_us"] > 0 and row["step_median_us"] > 0, name
    assert "| pinned gain |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        precisions.main(["--models", "rnn_tanh,transformer"])
