"""The peers benchmark without the peers: the orchestrator's parsing, aggregation and table on
canned worker output, and the real rnnstream and PyTorch workers (they run in the project's own
virtualenv) spoken to over the protocol. Nothing here builds a peer's virtualenv or downloads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnstream.bench import peers
from rnnstream.bench.peers import Worker, WorkerError, aggregate, parse_message, table
from rnnstream.export.tolerance import TOLERANCES

SMALL = {"num_layers": 2, "input_size": 8, "hidden_size": 16, "output_size": 4}


def _method(runtime: str, label: str, cell: str, precision: str, median: float | None) -> dict:
    row = {"runtime": runtime, "label": label, "cell": cell, "precision": precision, "ok": True}
    if median is None:
        return row | {"ok": False, "error": "max abs error 0.3 > 1e-05"}
    return row | {"median_us": median, "p99_us": median * 3}


CANNED = {
    "problems": {"openvino": "not installed: ERROR: No matching distribution found for openvino"},
    "methods": {
        "rnnstream-float32-lstm": _method("rnnstream", "rnnstream f32", "lstm", "float32", 50.0),
        "rnnstream-float32-gru": _method("rnnstream", "rnnstream f32", "gru", "float32", 40.0),
        "rnnstream-int8-lstm": _method("rnnstream", "rnnstream int8", "lstm", "int8", 75.0),
        "et-lstm": _method("executorch", "ExecuTorch f32", "lstm", "float32", 40.0),
        "et-gru": _method("executorch", "ExecuTorch f32", "gru", "float32", 44.0),
        "et-int8-lstm": _method("executorch", "ExecuTorch int8", "lstm", "int8", None),
    },
}


def test_table_gives_each_median_as_a_ratio_to_rnnstream_float32_of_its_cell() -> None:
    lines = table(CANNED).splitlines()
    assert lines[0] == "| method | LSTM µs (p99) | LSTM ratio | GRU µs (p99) | GRU ratio |"
    rows = {line.split(" | ")[0][2:]: line for line in lines[2:] if line.startswith("| ")}
    assert rows["rnnstream f32"] == "| rnnstream f32 | 50.0 (150) | 1.00 | 40.0 (120) | 1.00 |"
    assert rows["ExecuTorch f32"] == "| ExecuTorch f32 | 40.0 (120) | 0.80 | 44.0 (132) | 1.10 |"
    assert rows["rnnstream int8"].startswith("| rnnstream int8 | 75.0 (225) | 1.50 |")
    assert rows["ExecuTorch int8"].startswith("| ExecuTorch int8 | not timed | - |")
    notes = lines[lines.index("Not timed:") + 1 :]
    assert "- et-int8-lstm: max abs error 0.3 > 1e-05" in notes
    assert any("openvino: not installed: ERROR: No matching distribution" in n for n in notes)


def test_aggregate_is_the_median_and_99th_percentile() -> None:
    samples = np.random.default_rng(0).permutation(np.arange(1, 101, dtype=float)).tolist()
    assert aggregate(samples) == {"median_us": 50.5, "p99_us": pytest.approx(99.01)}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"error": "no checked method \'x\'"}', "openvino worker: no checked method 'x'"),
        (b"Segmentation fault", "openvino worker: not a protocol line: b'Segmentation fault'"),
        (b"[1, 2]", "openvino worker: expected 'ready', got b'[1, 2]'"),
        (b'{"samples_us": []}', "openvino worker: expected 'ready'"),
    ],
)
def test_a_line_that_is_not_the_expected_answer_names_the_worker(line, message) -> None:
    with pytest.raises(WorkerError) as caught:
        parse_message(line, "ready", "openvino")
    assert str(caught.value).startswith(message)


def test_the_expected_answer_is_parsed() -> None:
    assert parse_message(b'{"samples_us": [1.5, 2.0]}\n', "samples_us", "torch") == {
        "samples_us": [1.5, 2.0]
    }


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, dict[str, str]]]:
    folder = tmp_path_factory.mktemp("peers")
    return folder, *peers.write_references(["lstm", "gru"], folder, SMALL)


def _job(references: dict, exports: dict) -> dict:
    tolerances = {p: {"atol": t.atol, "rtol": t.rtol} for p, t in TOLERANCES.items()}
    return {
        "references": references,
        "onnx": exports,
        "threads": 1,
        "warmup": 3,
        "tolerances": tolerances,
    }


def test_the_rnnstream_worker_checks_each_export_then_times_it_on_request(references) -> None:
    folder, refs, exports = references
    worker = Worker("rnnstream", sys.executable, _job(refs, exports), folder)
    try:
        ready = worker.ready()
        assert set(ready) == {
            f"rnnstream-{p}-{c}" for c in ("gru", "lstm") for p in ("float32", "int8")
        }
        for name, report in ready.items():
            assert report["ok"], report
            tolerance = TOLERANCES[report["precision"]]
            assert (
                report["max_abs_err"] <= tolerance.atol or report["max_rel_err"] <= tolerance.rtol
            )
            assert name.endswith(report["cell"]) and report["label"].startswith("rnnstream ")
        assert ready["rnnstream-float32-lstm"]["max_abs_err"] <= TOLERANCES["float32"].atol
        samples = worker.time("rnnstream-int8-gru", 25)
        assert len(samples) == 25 and all(s > 0 for s in samples)
        with pytest.raises(WorkerError, match="no checked method 'tflite'"):
            worker.time("tflite", 5)
    finally:
        worker.close()
    assert worker._process.returncode == 0


def test_a_method_off_pytorch_is_reported_and_not_timed(references, tmp_path) -> None:
    _, refs, exports = references
    with np.load(refs["lstm"]) as data:
        arrays = dict(data)
    arrays["ys"] = arrays["ys"] + 0.01  # PyTorch "said" something else
    np.savez(tmp_path / "off.npz", **arrays)
    job = _job(
        {"lstm": str(tmp_path / "off.npz")}, {"lstm": {"float32": exports["lstm"]["float32"]}}
    )
    worker = Worker("rnnstream", sys.executable, job, tmp_path)
    try:
        report = worker.ready()["rnnstream-float32-lstm"]
        assert not report["ok"]
        assert report["max_abs_err"] == pytest.approx(0.01, rel=1e-3)
        assert "max abs error 0.01 > 1e-05" in report["error"]
        with pytest.raises(WorkerError, match="no checked method"):
            worker.time("rnnstream-float32-lstm", 5)
    finally:
        worker.close()


def test_a_method_that_cannot_be_built_is_reported_with_its_error(references, tmp_path) -> None:
    _, refs, _ = references
    (tmp_path / "broken.onnx").write_bytes(b"not an onnx file")
    job = _job({"gru": refs["gru"]}, {"gru": {"float32": str(tmp_path / "broken.onnx")}})
    worker = Worker("rnnstream", sys.executable, job, tmp_path)
    try:
        report = worker.ready()["rnnstream-float32-gru"]
    finally:
        worker.close()
    assert not report["ok"] and "broken.onnx" in report["error"], report


def test_a_worker_that_dies_is_named_with_the_last_line_of_its_log(references, tmp_path) -> None:
    _, _, exports = references
    job = _job({"lstm": str(tmp_path / "missing.npz")}, {"lstm": exports["lstm"]})
    worker = Worker("torch", sys.executable, job, tmp_path)
    with pytest.raises(WorkerError) as caught:
        worker.ready()
    worker.close()
    assert "torch worker exited (1): FileNotFoundError" in str(caught.value)
    assert str(tmp_path / "worker-torch.log") in str(caught.value)


def test_a_worker_that_dies_between_rounds_takes_its_methods_out(references) -> None:
    folder, refs, exports = references
    job = _job({"gru": refs["gru"]}, {"gru": {"float32": exports["gru"]["float32"]}})
    worker = Worker("rnnstream", sys.executable, job, folder)
    methods = {m: {"runtime": "rnnstream", **r} for m, r in worker.ready().items()}
    worker._process.kill()
    worker._process.wait()
    problems: dict[str, str] = {}
    peers._time_rounds({"rnnstream": worker}, methods, 5, 2, problems, lambda _: None)
    worker.close()
    report = methods["rnnstream-float32-gru"]
    assert not report["ok"] and "median_us" not in report
    assert report["error"] == problems["rnnstream"]
    assert problems["rnnstream"].startswith("rnnstream worker")


def test_run_without_peers_checks_times_and_tabulates_rnnstream_and_pytorch(tmp_path) -> None:
    said = []
    report = peers.run(["gru"], [], 20, 2, tmp_path, tmp_path / "venvs", said.append, SMALL, 3)
    methods = report["methods"]
    assert {m["runtime"] for m in methods.values()} == {"rnnstream", "torch"}
    for report_row in methods.values():
        assert report_row["ok"], report_row
        assert 0 < report_row["median_us"] <= report_row["p99_us"]
    assert report["problems"] == {} and "round 2/2: 4 methods x 20 steps" in said
    rows = [line for line in table(report).splitlines() if line.startswith("| PyTorch")]
    assert len(rows) == 2  # oneDNN on and off
    json.dumps(report)  # the --json report is plain JSON


def test_a_venv_with_current_pins_is_reused_without_pip(tmp_path, monkeypatch) -> None:
    python = tmp_path / "openvino" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    (tmp_path / "openvino" / ".installed").write_text(peers._stamp(peers.PEERS["openvino"]))
    monkeypatch.setattr(peers, "_run_logged", lambda *a: pytest.fail("pip was run"))
    said = []
    assert peers.ensure_venv("openvino", tmp_path, said.append) == python
    assert said == [f"openvino: reusing {tmp_path / 'openvino'}"]


def test_a_failed_install_is_the_pip_error_line(tmp_path, monkeypatch) -> None:
    def failing_pip(command, log, on_line):
        if "pip" not in command:
            return 0  # python -m venv
        log.write("Collecting openvino\nERROR: No matching distribution found for openvino\n")
        on_line("Collecting openvino")
        return 1

    monkeypatch.setattr(peers, "_run_logged", failing_pip)
    said = []
    found = peers.ensure_venv("openvino", tmp_path, said.append)
    assert found == "ERROR: No matching distribution found for openvino"
    assert said[-1] == "  openvino: Collecting openvino"
    assert not (tmp_path / "openvino" / ".installed").exists()


def test_unknown_peers_are_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        peers.main(["--peers", "tflite,openvino"])
    assert caught.value.code == 2
    assert "unknown peers ['tflite']" in capsys.readouterr().err
