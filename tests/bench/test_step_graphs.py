"""The hand-built step graphs of ``rnnstream.bench.step_graphs``: real PyTorch against real
onnxruntime, and the bench script run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnstream.bench.step_graphs import _session, lean_step_graph, main, step_lean
from rnnstream.export.tolerance import TOLERANCES
from rnnstream.models import RecurrentNet, RecurrentNetConfig
from tests.tolerances import PARITY, assert_close

CELLS = ("lstm", "gru", "rnn_tanh")


def _net_and_reference(cell: str, steps: int = 40) -> tuple[RecurrentNet, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    config = RecurrentNetConfig(
        cell=cell, num_layers=2, input_size=32, hidden_size=64, output_size=32
    )
    net = RecurrentNet(config).eval()
    xs = np.random.default_rng(1).standard_normal((steps, 32)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(xs)[None])[0].numpy()[0]
    return net, xs, expected


@pytest.mark.parametrize("kind", ["float32", "native"])
@pytest.mark.parametrize("cell", CELLS)
def test_lean_float32_step_matches_pytorch(cell: str, kind: str) -> None:
    net, xs, expected = _net_and_reference(cell)
    session = _session(lean_step_graph(net, kind).SerializeToString())
    assert_close(step_lean(session, xs), expected, PARITY)


@pytest.mark.parametrize("kind", ["dqmm", "mmint", "nbits8"])
@pytest.mark.parametrize("cell", CELLS)
def test_int8_lean_steps_stay_within_the_int8_bound(cell: str, kind: str) -> None:
    net, xs, expected = _net_and_reference(cell)
    session = _session(lean_step_graph(net, kind).SerializeToString())
    error = np.abs(step_lean(session, xs) - expected).max()
    assert error / np.abs(expected).max() <= TOLERANCES["int8"].rtol


def test_bench_script_writes_every_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "steps.json"
    argv = ["--cells", "rnn_tanh", "--steps", "5", "--rounds", "1", "--without-step-path"]
    main([*argv, "--json", str(out)])
    stdout = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    kinds = ["float32", "native", "dqmm", "mmint", "nbits8", "nbits4"]
    exports = [
        f"rnn_tanh export {precision}{without}"
        for precision in ("float32", "int8")
        for without in ("", " without step path")
    ]
    assert list(rows) == exports + [f"rnn_tanh lean {k}" for k in kinds]
    for name, row in rows.items():
        assert row["size_bytes"] > 0 and row["pinned_median_us"] > 0, name
    for name in exports:  # a general and a pinned session, the stream, chunks
        for what in ("step", "pinned", "stream", "chunk"):
            assert rows[name][f"{what}_median_us"] > 0, (name, what)
    assert rows["rnn_tanh lean nbits4"]["size_bytes"] < rows["rnn_tanh lean nbits8"]["size_bytes"]
    assert rows["rnn_tanh lean float32"]["max_abs_error"] < 1e-5
    assert rows["rnn_tanh lean native"]["max_abs_error"] < 1e-5
    assert (
        "| rnn_tanh lean nbits4 |" in stdout
        and "| rnn_tanh export int8 without step path |" in stdout
    )
