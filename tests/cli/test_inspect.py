"""`rnnstream info` (rnnstream/cli/inspect.py)."""

from __future__ import annotations

import json


def test_info_text_and_json(cli, char_model):
    text = cli("-q", "info", str(char_model.onnx)).output
    assert "h0 -> hn" in text and "kind char_lm" in text and "100 characters" in text
    info = json.loads(cli("-q", "info", str(char_model.onnx), "--json").output)
    assert info["signature"]["states"][0]["shape"] == [2, "batch", 32]
    assert [a["name"] for a in info["inputs"]] == ["x", "h0"]
    # 2-layer GRU, embedding 32 -> hidden 32, head 32 -> 100: weights of W, R and the head.
    assert info["cost"]["macs_per_step"] == 2 * (3 * 32 * 32 * 2) + 32 * 100
    assert "multiply-adds per step" in text
    assert "c0" not in text  # a GRU has no cell state


def test_info_of_a_frames_model_and_a_state_given_by_hand(cli, frames_model):
    text = cli("-q", "info", str(frames_model.onnx), "--state", "h0=hn").output
    assert "state   h0 -> hn: float32 [1, 'batch', 6]" in text
    assert "state   c0 -> cn" in text and "kind discovered" in text  # the metadata set aside
    assert "parity" not in text


def test_info_shows_how_each_axis_was_decided(cli, tmp_path):
    from tests.runtime.test_probe import window_frames

    path = str(window_frames(tmp_path / "vad.onnx"))
    text = cli("-q", "info", path).output
    assert (
        "stream input input: batch axis 0 (probe), time axis none (probe), frame axis 1 (probe)"
        in text
    )
    assert "probe   probed 2 dynamic axes in " in text
    given = cli("-q", "info", path, "--axes", "batch=0,time=none").output
    assert "batch axis 0 (given), time axis none (given), frame axis 1 (given)" in given
    info = json.loads(cli("-q", "info", path, "--json").output)
    assert info["signature"]["source"]["axes"]["frame"] == [{"axis": 1, "by": "probe"}]


def test_info_of_an_exported_model_says_its_axes_come_from_metadata(cli, char_model):
    text = cli("-q", "info", str(char_model.onnx)).output
    assert "batch axis 0 (metadata), time axis 1 (metadata)" in text


def test_a_wrong_axes_option_is_one_line(cli, tmp_path):
    from tests.runtime.test_probe import window_frames

    path = str(window_frames(tmp_path / "vad.onnx"))
    usage = cli("-q", "info", path, "--axes", "batch:0", ok=False)
    assert usage.exit_code == 2 and "expected ROLE=AXIS" in usage.output
    wrong = cli("-q", "info", path, "--axes", "time=7", ok=False)
    assert "axes: time=7 is not an axis of input 'input'" in wrong.output
    assert "Traceback" not in wrong.output


def test_info_of_a_fixed_window_model_shows_the_window_and_the_guessed_rate(cli, tmp_path):
    from tests.runtime.third_party_audio import silero_v5

    path = str(silero_v5(tmp_path / "silero.onnx"))
    text = cli("-q", "info", path).output
    assert "batch axis 0 (probe), time axis none (probe), frame axis 1 (probe, fixed 512)" in text
    assert "const   sr = 16000 (a guess; --const sr=... says)" in text
    at_8k = cli("-q", "info", path, "--const", "sr=8000").output
    assert "frame axis 1 (probe, fixed 256)" in at_8k and "const   sr = 8000\n" in at_8k


def test_info_says_why_the_probe_failed(cli, tmp_path):
    from tests.runtime.test_probe import refusing_everything

    text = cli("-q", "info", str(refusing_everything(tmp_path / "refusing.onnx"))).output
    axes = "batch axis 0 (name, probe failed), time axis none (name, probe failed), frame axis 1"
    assert axes in text
    assert "probe   not probed: the model refuses size 1 and every size tried" in text
    assert "requested shape:{1,70001}" in text
