"""The typed parity record reads every file written so far and writes back the same JSON."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

import rnnstream
from rnnstream.assets import DEMO_ONNX
from rnnstream.errors import SignatureError
from rnnstream.export import ParitySettings, export
from rnnstream.runtime import METADATA_KEY
from rnnstream.runtime.parity_record import ParityRecord, TensorError

DEMO_FILES = [DEMO_ONNX, *sorted(Path(DEMO_ONNX).parent.glob("charlm-stdlib.*.onnx"))]


def _stored_parity(path: str | Path) -> dict:
    """The parity JSON exactly as the file carries it (read with onnx, not rnnstream)."""
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props[METADATA_KEY])["parity"]


@pytest.mark.parametrize("path", DEMO_FILES, ids=lambda p: Path(p).name)
def test_shipped_records_round_trip_unchanged(path: Path) -> None:
    stored = _stored_parity(path)
    record = rnnstream.load(path).signature.parity
    assert isinstance(record, ParityRecord)
    assert record.to_dict() == stored
    assert record.passed is True and record.steps == stored["steps"]
    assert set(record.errors) == {"step", "chunk"}
    assert record.errors["step"]["y"].max_abs_err == stored["step"]["y"]["max_abs_err"]


def test_quantised_demo_records_carry_the_task_score() -> None:
    for path in DEMO_FILES[1:]:
        task = rnnstream.load(path).signature.parity.task
        assert task is not None and task.metric == "bpc" and task.passed is True
        assert task.increase <= task.max_increase


def test_a_fresh_export_writes_what_it_reports(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(3)
    path = tmp_path / "gru.onnx"
    report = export(torch.nn.GRU(3, 5, batch_first=True), path, parity=ParitySettings(steps=40))
    assert report.parity is not None
    assert _stored_parity(path) == report.parity.to_dict()
    assert ParityRecord.from_dict(report.parity.to_dict()) == report.parity
    assert report.parity.chunk_size == 16 and report.parity.steps == 40


def _record(**overrides: object) -> dict:
    d = {
        "steps": 10,
        "batch": 2,
        "atol": 1e-5,
        "rtol": 1e-6,
        "reference": "pytorch",
        "torch": "2.13.0+cpu",
        "onnxruntime": "1.32.0",
        "step": {"y": {"max_abs_err": 2e-6, "max_rel_err": 1e-7}},
        "max_abs_err": 2e-6,
        "max_rel_err": 1e-7,
        "passed": True,
    }
    return {k: v for k, v in (d | overrides).items() if v is not None}


def test_an_older_record_without_rtol_or_precision_reads_with_defaults() -> None:
    record = ParityRecord.from_dict(_record(rtol=None))
    assert (record.rtol, record.precision, record.chunk_size, record.task) == (
        0.0,
        "float32",
        None,
        None,
    )
    assert record.errors == {"step": {"y": TensorError(2e-6, 1e-7)}}


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"steps": None}, "steps"),
        ({"passed": "yes"}, "passed"),
        ({"step": {"y": {"max_abs_err": 1.0}}}, "max_rel_err"),
        ({"task": {"metric": "bpc"}}, "TypeError"),
        ({"atol": "tight"}, "ValueError"),
        ({"step": ["y"]}, "AttributeError"),
    ],
)
def test_a_malformed_record_is_a_signature_error(overrides: dict, words: str) -> None:
    with pytest.raises(SignatureError, match="malformed parity record") as info:
        ParityRecord.from_dict(_record(**overrides))
    assert words in str(info.value)


def test_failures_name_each_tensor_beyond_the_tolerance() -> None:
    record = ParityRecord.from_dict(
        _record(
            step={
                "y": {"max_abs_err": 2e-6, "max_rel_err": 1e-7},
                "hn": {"max_abs_err": 0.5, "max_rel_err": 0.25},
            },
            passed=False,
        )
    )
    assert record.failures() == ["hn (step): max abs err 0.5, max rel err 0.25"]
